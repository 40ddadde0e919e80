"""The evaluation cadence (engines/eval_cadence.py): the CPU budget stretches it, an explicit eval_every wins,
smoke runs evaluate fewer samples; the trainer records it in run.json and metrics.jsonl."""
import pytest

import engines.metrics
from engines import trainer as trainer_mod
from engines.config import TrainConfig, apply_overrides
from engines.eval_cadence import SMOKE_EVAL_N, EvalCadence, explicit_from_info, replay
from engines.generate.dcgan import DCGAN
from engines.runs.folder import read_info, read_metrics
from engines.trainer import Trainer

TINY = {"g_width": 8, "d_width": 8, "z_dim": 16}


def simulate(cadence: EvalCadence, epochs: int, epoch_seconds: float, eval_seconds: float):
    """A run whose epochs take ``epoch_seconds`` of training and whose evaluations take ``eval_seconds``."""
    return replay(cadence, [epoch_seconds] * epochs, eval_seconds)


def test_modes():
    cpu = EvalCadence.plan(TrainConfig(), DCGAN, "cpu")
    assert cpu.mode == "budget" and cpu.eval_n == 2000 and not cpu.smoke
    assert EvalCadence.plan(TrainConfig(), DCGAN, "cuda").mode == "protocol"
    assert EvalCadence.plan(TrainConfig(), DCGAN, "cpu", world=2).mode == "protocol"
    assert EvalCadence.plan(TrainConfig(eval_budget=0.0), DCGAN, "cpu").mode == "protocol"
    assert EvalCadence.plan(TrainConfig(eval_every=0), DCGAN, "cpu").mode == "off"
    # explicit: set with --set (even to the protocol's own value), or differing from the protocol
    same = apply_overrides(TrainConfig(), ["eval_every=10"])
    assert EvalCadence.plan(same, DCGAN, "cpu").mode == "explicit"
    assert EvalCadence.plan(TrainConfig(eval_every=3), DCGAN, "cpu").mode == "explicit"
    assert EvalCadence.plan(TrainConfig(), DCGAN, "cpu", explicit={"eval_every"}).mode == "explicit"
    with pytest.raises(ValueError, match="eval_budget"):
        TrainConfig(eval_budget=1.0).validate()


def test_smoke_runs_evaluate_fewer_samples_unless_eval_n_is_explicit():
    smoke = EvalCadence.plan(TrainConfig(epochs=3), DCGAN, "cuda")
    assert smoke.smoke and smoke.eval_n == SMOKE_EVAL_N
    notes = smoke.record(3, 5.0, 10.0)
    assert any("smoke run" in n and str(SMOKE_EVAL_N) in n for n in notes)
    assert smoke.summary(10.0, 3)["smoke"] is True and smoke.summary(10.0, 3)["eval_n"] == SMOKE_EVAL_N
    assert not smoke.record(3, 5.0, 10.0)  # said once
    assert EvalCadence.plan(apply_overrides(TrainConfig(epochs=3), ["eval_n=2000"]), DCGAN, "cpu").eval_n == 2000
    assert EvalCadence.plan(TrainConfig(epochs=3, eval_n=100), DCGAN, "cpu").eval_n == 100
    assert not EvalCadence.plan(TrainConfig(epochs=6), DCGAN, "cpu").smoke


def test_budget_stretches_the_cadence_under_a_slow_evaluator():
    # 1000 epochs of 2 s, evaluations of 60 s: the protocol (100 evaluations) would spend 6000 of 8000 s evaluating
    cfg = TrainConfig(epochs=1000)
    evaluated, share = simulate(EvalCadence.plan(cfg, DCGAN, "cpu"), 1000, 2.0, 60.0)
    assert share <= 0.15 + 1e-9
    assert share > 0.10  # the budget is used, not wasted
    assert evaluated[-1] == 1000 and all(e % 10 == 0 for e in evaluated)
    # the first (at 10: no probe here) costs 75 % of the time so far; then one every 170 epochs (~ 60 s per 340 s of
    # training), the last gap kept for the final evaluation
    assert evaluated == [10, 340, 510, 680, 1000]
    # the protocol, explicit and CUDA cadences ignore the cost
    explicit, share_x = simulate(EvalCadence.plan(apply_overrides(TrainConfig(epochs=1000), ["eval_every=10"]),
                                                  DCGAN, "cpu"), 1000, 2.0, 60.0)
    assert explicit == list(range(10, 1001, 10)) and share_x > 0.7
    assert simulate(EvalCadence.plan(cfg, DCGAN, "cuda"), 1000, 2.0, 60.0)[0] == explicit
    # cheap evaluations keep the protocol cadence under the budget too
    assert simulate(EvalCadence.plan(cfg, DCGAN, "cpu"), 1000, 2.0, 2.0)[0] == explicit


def test_budget_uses_the_probe_before_the_first_evaluation_and_keeps_room_for_the_last():
    probes = []
    c = EvalCadence.plan(TrainConfig(epochs=100), DCGAN, "cpu", probe=lambda: probes.append(1) or 500.0)
    evaluated, share = simulate(c, 100, 10.0, 500.0)
    assert probes == [1]            # probed once, at the first protocol epoch
    assert evaluated == [100]       # one 500 s evaluation is already 33 % of a 1000 s run: only the final one
    assert c.summary(1000.0, 100)["effective_every"] == 100
    # the same run without a probe (e.g. a translation engine) learns the cost at its first evaluation
    evaluated, _ = simulate(EvalCadence.plan(TrainConfig(epochs=100), DCGAN, "cpu"), 100, 10.0, 500.0)
    assert evaluated == [10, 100]


def test_cadence_state_survives_a_checkpoint():
    a = EvalCadence.plan(TrainConfig(epochs=1000), DCGAN, "cpu")
    simulate(a, 300, 2.0, 60.0)
    b = EvalCadence.plan(TrainConfig(epochs=1000), DCGAN, "cpu")
    b.load_state_dict(a.state_dict())
    assert b.evaluated == a.evaluated and b.eval_seconds == a.eval_seconds
    assert b.next_epoch(300, 600.0) == a.next_epoch(300, 600.0)
    b.load_state_dict(None)  # a checkpoint from before the cadence existed: nothing to restore
    assert explicit_from_info({"eval_cadence": {"explicit": ["eval_every", "bogus"]}}) == ["eval_every"]
    assert explicit_from_info({"eval_cadence": "garbage"}) == []


@pytest.fixture
def fake_eval(monkeypatch):
    """A slow evaluator without the wait: it reports 1000 s per evaluation (and records what it was asked)."""
    calls = []

    def evaluate_generator(sample_fn, real, n=2000, metrics=(), device=None, seed=0, **kw):
        calls.append(n)
        return {"fid": 100.0, "eval_n": float(n), "eval_seconds": 1000.0}

    monkeypatch.setattr(engines.metrics, "evaluate_generator", evaluate_generator, raising=False)
    monkeypatch.setattr(trainer_mod, "probe_eval_seconds", lambda *a, **k: 1000.0)
    monkeypatch.setattr(DCGAN, "protocol_defaults", {"eval_every": 2}, raising=False)  # a short protocol cadence
    return calls


def _cfg(**kw):
    base = dict(image_size=32, batch_size=8, epochs=8, sample_every=0, eval_every=2, grid_n=4, engine=dict(TINY),
                device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_trainer_stretches_on_cpu_and_records_the_cadence(tmp_path, tiny_dataset, fake_eval):
    t = Trainer("dcgan", tiny_dataset, tmp_path, _cfg(), progress=False)
    t.fit()
    m = read_metrics(t.run_dir)
    assert [e["epoch"] for e in m.eval] == [8]  # a 1000 s evaluation never fits 15 % of a few seconds' training
    assert fake_eval == [2000]
    cad = read_info(t.run_dir)["eval_cadence"]
    assert cad["mode"] == "budget" and cad["evaluated"] == [8] and cad["effective_every"] == 8
    assert cad["eval_seconds"] == 1000.0 and cad["eval_share"] > 0.9 and cad["every"] == 2
    assert any(e.get("event") == "eval_cadence" and "should take about 1000 s" in e["message"] for e in m.events)


def test_trainer_explicit_eval_every_wins_and_survives_resume(tmp_path, tiny_dataset, fake_eval):
    # eval_every: the protocol's own value, but given explicitly; eval_n too, so the 4-epoch start is no smoke run
    c = apply_overrides(_cfg(epochs=4), ["eval_every=2", "eval_n=2000"])
    t = Trainer("dcgan", tiny_dataset, tmp_path, c, progress=False)
    t.fit()
    assert [e["epoch"] for e in read_metrics(t.run_dir).eval] == [2, 4]
    info = read_info(t.run_dir)
    assert info["eval_cadence"]["mode"] == "explicit" and info["eval_cadence"]["explicit"] == ["eval_every", "eval_n"]
    r = Trainer.resume(t.run_dir, dataset=tiny_dataset, epochs=8, progress=False)
    assert r.eval_plan.mode == "explicit" and r.eval_plan.evaluated == [2, 4]
    r.fit()
    assert [e["epoch"] for e in read_metrics(t.run_dir).eval] == [2, 4, 6, 8]
    assert fake_eval == [2000] * 4
    assert read_info(t.run_dir)["eval_cadence"]["evaluated"] == [2, 4, 6, 8]


def test_trainer_smoke_run_says_so(tmp_path, tiny_dataset, fake_eval):
    t = Trainer("dcgan", tiny_dataset, tmp_path, _cfg(epochs=3, eval_budget=0.0), progress=False)
    t.fit()
    assert fake_eval == [SMOKE_EVAL_N, SMOKE_EVAL_N]  # epochs 2 and 3 (the last)
    m = read_metrics(t.run_dir)
    assert [e["eval_n"] for e in m.eval] == [float(SMOKE_EVAL_N)] * len(m.eval)
    assert any(e.get("event") == "eval_cadence" and "smoke run" in e["message"] for e in m.events)
    cad = read_info(t.run_dir)["eval_cadence"]
    assert cad["smoke"] is True and cad["eval_n"] == SMOKE_EVAL_N and cad["mode"] == "protocol"


def test_probe_times_a_real_generator_and_a_failed_probe_does_not_stop_training(tmp_path, tiny_dataset,
                                                                                monkeypatch):
    from engines.eval_cadence import probe_eval_seconds

    monkeypatch.setenv("POKELAB_CACHE", str(tmp_path / "cache"))
    t = Trainer("dcgan", tiny_dataset, tmp_path, _cfg(epochs=1, eval_every=0), progress=False)
    with_real = probe_eval_seconds(t.engine, tiny_dataset, 100, t.device, 0)
    t.close()
    assert with_real > 0  # 100 samples + the 40 real images (their statistics are not cached here)
    notes = []
    c = EvalCadence.plan(TrainConfig(epochs=100), DCGAN, "cpu", probe=lambda: 1 / 0,
                         note=lambda e, m: notes.append(m))
    assert c.due(10, False, 100.0) is True  # no estimate: evaluate and learn the cost
    assert "could not time an evaluation" in notes[0]

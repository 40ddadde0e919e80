"""RUN/best/: the export of the evaluation lowest in best_metric, replaced as a whole, kept across resume."""
import json
import os

import pytest
import torch

from engines.config import TrainConfig, apply_overrides, apply_resume_overrides
from engines.runs.export import load_export, read_export_config
from engines.runs.folder import (RunFormatError, best_dir, check_run_files, clean_orphans, read_info, read_metrics,
                                 replace_best)
from engines.trainer import Trainer
from helpers import Killed, kill_at_step

TINY = {"g_width": 8, "d_width": 8, "z_dim": 16}


def cfg(**kw):
    # eval_budget 0: the protocol cadence (every eval_every epochs), whatever the evaluation costs
    base = dict(image_size=32, batch_size=8, epochs=4, sample_every=0, eval_every=1, eval_budget=0.0, grid_n=9,
                engine=dict(TINY))
    base.update(kw)
    return TrainConfig(**base)


def scripted_evaluation(monkeypatch, by_epoch, seen=None):
    """Trainer.evaluate returns the numbers scripted for each epoch (KID, FID, collapse flag) instead of
    measuring; ``seen`` collects each evaluated epoch's samples (seed 7) to compare best/ with."""
    def evaluate(self, epoch):
        kid, collapse = by_epoch[epoch]
        res = {"kid": kid, "fid": 1000 * kid, "collapse": collapse, "eval_n": 12}
        if seen is not None:
            with torch.random.fork_rng():
                seen[epoch] = self.engine.sample(n=4, seed=7)
        self.writer.log("eval", epoch, self.step, **res)
        return res

    monkeypatch.setattr(Trainer, "evaluate", evaluate)


def best_record(run):
    return read_export_config(best_dir(run))["trained"]["best"]


def test_best_export_follows_the_lowest_kid_and_skips_collapsed(tmp_path, tiny_dataset, monkeypatch):
    seen = {}
    # epoch 3 is lower still but flagged collapsed; epoch 4 is worse than epoch 2
    scripted_evaluation(monkeypatch, {1: (0.5, 0.0), 2: (0.3, 0.0), 3: (0.1, 1.0), 4: (0.35, 0.0)}, seen)
    t = Trainer("dcgan", tiny_dataset, tmp_path, cfg(), progress=False)
    run = t.fit()
    rec = best_record(run)
    assert (rec["metric"], rec["value"], rec["epoch"], rec["step"], rec["eval_n"]) == ("kid", 0.3, 2, 10, 12)
    assert rec["kimg"] == pytest.approx(0.08) and rec["hours"] >= 0
    assert read_info(run)["best"] == rec
    # best/ holds the epoch-2 weights (the run went on for two more epochs), loadable like any export
    best = load_export(best_dir(run))
    assert torch.equal(best.sample(n=4, seed=7), seen[2])
    assert not torch.equal(seen[2], seen[4])
    assert torch.equal(load_export(run).sample(n=4, seed=7), seen[4])  # export/ stays the last epoch
    events = [e for e in read_metrics(run).events if e.get("event") == "best"]
    assert [e["epoch"] for e in events] == [1, 2] and "was 0.5 at epoch 1" in events[1]["message"]
    assert "written to best/" in (run / "log.txt").read_text()
    assert not any(n.startswith(".best") for n in os.listdir(run))


def test_best_export_off_and_checked(tmp_path, tiny_dataset, monkeypatch):
    scripted_evaluation(monkeypatch, {1: (0.5, 0.0), 2: (0.3, 0.0)})
    off = apply_overrides(cfg(epochs=2), ["best_metric=none"]).validate()
    assert off.best_metric == ""
    run = Trainer("dcgan", tiny_dataset, tmp_path, off, progress=False).fit()
    assert not best_dir(run).exists() and "best" not in read_info(run)
    with pytest.raises(ValueError, match="best_metric must be one of 'kid', 'fid'"):
        apply_overrides(cfg(), ["best_metric=psnr"]).validate()


def test_resume_keeps_the_recorded_best_and_may_change_the_metric(tmp_path, tiny_dataset, monkeypatch):
    scripted_evaluation(monkeypatch, {1: (0.5, 0.0), 2: (0.3, 0.0), 3: (0.4, 0.0), 4: (0.45, 0.0),
                                      5: (0.25, 0.0), 6: (0.2, 0.0)})
    run = Trainer("dcgan", tiny_dataset, tmp_path, cfg(epochs=2), progress=False).fit()
    assert best_record(run)["epoch"] == 2
    # a later sitting: epochs 3 and 4 are worse than best/'s record, so best/ is left as it is
    Trainer.resume(run, dataset=tiny_dataset, epochs=4, progress=False).fit()
    assert best_record(run)["epoch"] == 2
    # following FID instead: the KID record is no FID record, so the next evaluation takes best/
    Trainer.resume(run, dataset=tiny_dataset, epochs=5, progress=False, overrides=["best_metric=fid"]).fit()
    rec = best_record(run)
    assert (rec["metric"], rec["epoch"], rec["value"]) == ("fid", 5, 250.0)
    with pytest.raises(ValueError, match="best_metric must be"):
        apply_resume_overrides(cfg(), ["best_metric=lpips"])


def test_a_killed_run_resumes_to_the_same_best_export(tmp_path, tiny_dataset, monkeypatch):
    script = {1: (0.5, 0.0), 2: (0.3, 0.0), 3: (0.2, 0.0), 4: (0.25, 0.0)}
    scripted_evaluation(monkeypatch, script)
    ref = Trainer("dcgan", tiny_dataset, tmp_path / "ref", cfg(seed=3), progress=False).fit()
    t = Trainer("dcgan", tiny_dataset, tmp_path / "cut", cfg(seed=3, checkpoint_every=1), progress=False)
    kill_at_step(t.engine, 13)  # in epoch 3, after best/ took epoch 2
    with pytest.raises(Killed):
        t.fit()
    assert best_record(t.run_dir)["epoch"] == 2
    Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False).fit()
    assert best_record(t.run_dir)["epoch"] == best_record(ref)["epoch"] == 3
    a, b = (load_export(best_dir(r)).sample(n=4, seed=1) for r in (ref, t.run_dir))
    assert torch.equal(a, b)


def _export(folder, tag):
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights " + tag.encode())
    (folder / "config.json").write_text(json.dumps({"tag": tag}))


def test_replace_best_swaps_the_whole_folder(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    replace_best(tmp_path, lambda d: _export(d, "first"))
    replace_best(tmp_path, lambda d: _export(d, "second"))
    assert sorted(os.listdir(tmp_path)) == ["best", "run.json"]
    assert json.loads((best_dir(tmp_path) / "config.json").read_text()) == {"tag": "second"}

    def half_written(d):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"torn")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_best(tmp_path, half_written)
    assert json.loads((best_dir(tmp_path) / "config.json").read_text()) == {"tag": "second"}
    clean_orphans(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["best", "run.json"]


@pytest.mark.parametrize("left, expect", [
    ({".best.new": "new"}, "new"),                      # killed between the two renames: the new one is complete
    ({".best.new": None, ".best.old": "old"}, "old"),   # new one torn (no config): the old one goes back
    ({"best": "kept", ".best.new": None}, "kept"),      # killed while writing the new one: best/ untouched
    ({"best": "kept", ".best.old": "older"}, "kept"),   # killed before removing the old one
])
def test_an_interrupted_replacement_is_finished_or_undone(tmp_path, left, expect):
    for name, tag in left.items():
        if tag is None:
            (tmp_path / name).mkdir()
            (tmp_path / name / "model.safetensors").write_bytes(b"torn")
        else:
            _export(tmp_path / name, tag)
    clean_orphans(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["best"]
    assert json.loads((best_dir(tmp_path) / "config.json").read_text()) == {"tag": expect}


def test_best_links_are_refused_and_never_followed(tmp_path):
    outside = tmp_path / "outside"
    _export(outside, "outside")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".best.new").symlink_to(outside)
    clean_orphans(run)  # the link is removed, its target left alone
    assert not os.path.lexists(run / ".best.new") and (outside / "config.json").is_file()
    assert not os.path.lexists(run / "best")
    (run / "best").symlink_to(outside)
    with pytest.raises(RunFormatError, match="best/ is a symbolic link"):
        check_run_files(run)


def test_the_app_lists_best_beside_the_run_with_its_own_quality(tmp_path, tiny_dataset, monkeypatch):
    from app.exports import ExportCatalog
    from engines.runs.folder import RunWriter

    scripted_evaluation(monkeypatch, {1: (0.5, 0.0), 2: (0.3, 0.0), 3: (0.4, 0.0), 4: (0.35, 0.0)})
    run = Trainer("dcgan", tiny_dataset, tmp_path / "runs", cfg(), progress=False).fit()
    cat = ExportCatalog([tmp_path])
    main, best = cat.entries[run.name], cat.entries[f"{run.name}-best"]
    assert best.path == best_dir(run).resolve()
    assert (main.quality.epoch, main.quality.kid) == (4, 0.35)   # the run's last evaluation, as before
    assert (best.quality.epoch, best.quality.kid) == (2, 0.3)    # the evaluation that chose best/
    assert [e.key for e in cat.listed()] == [best.key, main.key]  # lowest KID first
    # `pokelab eval RUN/best --log` (2000 samples, at best/'s epoch) becomes best/'s quality, not the run's
    RunWriter(run).log("eval", 2, 10, kid=0.28, fid=61.0, eval_n=2000, collapse=0.0, eval_by="pokelab eval",
                       export="best")
    m = read_metrics(run)
    assert [r["epoch"] for r in m.eval] == [1, 2, 3, 4] and [r["kid"] for r in m.best_eval] == [0.28]
    cat.scan()
    main, best = cat.entries[run.name], cat.entries[f"{run.name}-best"]
    assert (best.quality.kid, best.quality.eval_n) == (0.28, 2000) and main.quality.kid == 0.35


def test_the_app_lists_best_once_when_it_is_the_last_epoch(tmp_path, tiny_dataset, monkeypatch):
    from app.exports import ExportCatalog

    scripted_evaluation(monkeypatch, {1: (0.5, 0.0), 2: (0.3, 0.0)})
    run = Trainer("dcgan", tiny_dataset, tmp_path / "runs", cfg(epochs=2, sample_every=1), progress=False).fit()
    assert best_record(run)["epoch"] == 2
    assert list(ExportCatalog([tmp_path]).entries) == [run.name]  # the same weights as export/: one entry

"""The checkpoint cadence: by time by default (checkpoint_minutes), by epochs when checkpoint_every is set;
always at epoch 0, at the end and on SIGINT/SIGTERM; resume stays exact. A fake clock drives the time."""
import os
import signal

import pytest
import torch

from engines.config import TrainConfig
from engines.runs.folder import checkpoint_path, read_info, read_metrics
from engines.trainer import PROGRESS_SECONDS, Trainer
from helpers import Killed, kill_at_step, on_nth_step

TINY = {"g_width": 8, "d_width": 8, "z_dim": 16}


def cfg(**kw):
    base = dict(image_size=32, batch_size=8, epochs=6, sample_every=0, eval_every=0, grid_n=4, engine=dict(TINY))
    base.update(kw)
    return TrainConfig(**base)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def trainer(tmp_path, dataset, name="run", seconds_per_step=0.0, **kw):
    """A trainer whose clock advances ``seconds_per_step`` per training step (5 steps per epoch), recording
    the epoch (and batch within it) of every checkpoint it writes."""
    t = Trainer("dcgan", dataset, tmp_path / name, cfg(**kw), progress=False)
    clock = FakeClock()
    t._clock = clock
    real_step, real_save = t.engine.train_step, t.save_checkpoint
    t.saved = []

    def step(batch):
        clock.now += seconds_per_step
        return real_step(batch)

    def save():
        t.saved.append(t.epoch if not t.batch_in_epoch else (t.epoch, t.batch_in_epoch))
        real_save()

    t.engine.train_step, t.save_checkpoint = step, save
    return t


def test_default_cadence_is_time_based():
    c = TrainConfig()
    assert c.checkpoint_every == 0 and c.checkpoint_minutes == 5


def test_checkpoints_are_written_by_time_not_every_epoch(tmp_path, tiny_dataset):
    # 40 s per step, 200 s per epoch: 5 minutes pass during epochs 2 and 4; epoch 6 is the end
    t = trainer(tmp_path, tiny_dataset, seconds_per_step=40.0)
    t.fit()
    assert t.saved == [0, 2, 4, 6]
    assert torch.load(checkpoint_path(t.run_dir), weights_only=True)["epoch"] == 6
    assert read_info(t.run_dir)["status"] == "finished"


def test_fast_epochs_checkpoint_at_start_and_end_only(tmp_path, tiny_dataset):
    t = trainer(tmp_path, tiny_dataset, seconds_per_step=1.0)  # 30 s in all: never 5 minutes
    t.fit()
    assert t.saved == [0, 6]


def test_minutes_setting_and_zero(tmp_path, tiny_dataset):
    t = trainer(tmp_path, tiny_dataset, "one-minute", seconds_per_step=5.0, checkpoint_minutes=1)  # 25 s per epoch
    t.fit()
    assert t.saved == [0, 3, 6]
    t = trainer(tmp_path, tiny_dataset, "zero", seconds_per_step=1e6, checkpoint_minutes=0)
    t.fit()
    assert t.saved == [0, 6]


def test_explicit_epoch_cadence_ignores_the_clock(tmp_path, tiny_dataset):
    t = trainer(tmp_path, tiny_dataset, "every2", seconds_per_step=0.0, checkpoint_every=2)
    t.fit()
    assert t.saved == [0, 2, 4, 6]
    t = trainer(tmp_path, tiny_dataset, "every4", seconds_per_step=1e6, checkpoint_every=4)
    t.fit()
    assert t.saved == [0, 4, 6]


def test_old_run_config_keeps_its_cadence():
    """run.json written before checkpoint_minutes existed: checkpoint_every=1 (the old default) stays per epoch,
    the missing field takes its default, unknown keys are ignored."""
    old = {k: v for k, v in cfg().to_dict().items() if k != "checkpoint_minutes"}
    old.update(checkpoint_every=1, some_future_key=3)
    c = TrainConfig.from_dict(old).validate()
    assert c.checkpoint_every == 1 and c.checkpoint_minutes == 5.0


def test_validation():
    with pytest.raises(ValueError, match="checkpoint_minutes"):
        cfg(checkpoint_minutes=-1).validate()


def test_budget_end_checkpoints(tmp_path, tiny_dataset):
    """A run stopped by max_hours checkpoints at its last epoch, so --resume with more hours continues there."""
    t = trainer(tmp_path, tiny_dataset, seconds_per_step=0.0, max_hours=1e-9)
    t.fit()
    assert t.saved == [0, 1]
    assert torch.load(checkpoint_path(t.run_dir), weights_only=True)["epoch"] == 1


def test_sigterm_checkpoints_mid_epoch_and_resumes_exactly(tmp_path, tiny_dataset):
    ref = Trainer("dcgan", tiny_dataset, tmp_path / "ref", cfg(epochs=4), progress=False)
    ref.fit()
    t = trainer(tmp_path, tiny_dataset, "term", seconds_per_step=1.0, epochs=4)
    on_nth_step(t.engine, 12, before=lambda: os.kill(os.getpid(), signal.SIGTERM))  # epoch 3, batch 2
    t.fit()
    assert t.saved == [0, (2, 2)]  # epoch 0, then the signal's: nothing by time in between
    assert read_info(t.run_dir)["status"] == "interrupted"
    ck = torch.load(checkpoint_path(t.run_dir), weights_only=True)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["step"]) == (2, 2, 12)
    r = Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False)
    r.fit()
    for k, v in ref.engine.state_dict().items():
        assert torch.equal(v, r.engine.state_dict()[k]), k
    a, b = read_metrics(ref.run_dir).train, read_metrics(r.run_dir).train
    assert [x["loss/D"] for x in a] == [x["loss/D"] for x in b]


def test_kill_resumes_exactly_from_the_last_timed_checkpoint(tmp_path, tiny_dataset):
    ref = Trainer("dcgan", tiny_dataset, tmp_path / "ref", cfg(), progress=False)
    ref.fit()
    t = trainer(tmp_path, tiny_dataset, "cut", seconds_per_step=40.0)
    kill_at_step(t.engine, 28)  # epoch 6, batch 3: the last checkpoint is epoch 4's
    with pytest.raises(Killed):
        t.fit()
    assert t.saved == [0, 2, 4]
    r = Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False)
    assert (r.epoch, r.step) == (4, 20)
    r.fit()
    for k, v in ref.engine.state_dict().items():
        assert torch.equal(v, r.engine.state_dict()[k]), k
    got = read_metrics(r.run_dir)
    assert [x["epoch"] for x in got.train] == [1, 2, 3, 4, 5, 6] and not got.warnings
    assert [x["loss/G"] for x in read_metrics(ref.run_dir).train] == [x["loss/G"] for x in got.train]


def test_run_json_progress_is_rate_limited(tmp_path, tiny_dataset):
    """run.json's epoch/step are rewritten at checkpoints, grids and at most every PROGRESS_SECONDS, not every
    epoch; at the end they are exact."""
    per_epoch = PROGRESS_SECONDS * 0.4
    t = trainer(tmp_path, tiny_dataset, seconds_per_step=per_epoch / 5, checkpoint_minutes=0)
    updates = []
    real = t.writer.update_info

    def update_info(**kw):
        updates.append(kw.get("status", kw.get("epoch")))
        return real(**kw)

    t.writer.update_info = update_info
    t.fit()
    assert updates == [3, 6, "finished"]  # 1.2 and 2.4 PROGRESS_SECONDS in; epoch 6 is also the end
    info = read_info(t.run_dir)
    assert (info["epoch"], info["step"], info["status"]) == (6, 30, "finished")


def test_an_epoch_interrupted_by_a_signal_logs_its_whole_training_time(tmp_path, tiny_dataset):
    """epoch_seconds of an epoch cut by SIGINT and finished after --resume counts both parts, so the summed
    epoch times (the studio's training-hours axis) equal run.json's wall_seconds."""
    from engines.config import TrainConfig
    from engines.runs.folder import read_info, read_metrics
    from engines.trainer import Trainer
    from helpers import on_nth_step

    cfg = TrainConfig(image_size=32, batch_size=8, epochs=2, sample_every=0, eval_every=0, grid_n=4,
                      engine={"g_width": 8, "d_width": 8, "z_dim": 16})
    t = Trainer("dcgan", tiny_dataset, tmp_path, cfg, progress=False)
    on_nth_step(t.engine, 8, before=t.request_stop)  # during epoch 2 (5 steps per epoch)
    t.fit()
    before = t.epoch_partial_seconds
    assert before > 0
    r = Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False)
    assert r.epoch_partial_seconds == before
    r.fit()
    total = sum(x["epoch_seconds"] for x in read_metrics(r.run_dir).train)
    assert total == pytest.approx(read_info(r.run_dir)["wall_seconds"], abs=0.02)


def test_resume_may_change_the_cadence_and_stays_exact(tmp_path, tiny_dataset):
    """`pokelab train --resume RUN --set sample_every=2`: what the run records changes, what it trains does not."""
    ref = Trainer("dcgan", tiny_dataset, tmp_path / "ref", cfg(epochs=4), progress=False)
    ref.fit()
    t = Trainer("dcgan", tiny_dataset, tmp_path / "cut", cfg(epochs=2), progress=False)
    t.fit()
    r = Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False, epochs=4,
                       overrides=["sample_every=2", "checkpoint_every=1"])
    assert (r.cfg.sample_every, r.cfg.checkpoint_every) == (2, 1)
    r.fit()
    for k, v in ref.engine.state_dict().items():
        assert torch.equal(v, r.engine.state_dict()[k]), k
    info = read_info(r.run_dir)
    assert info["config"]["sample_every"] == 2
    assert sorted(p.name for p in (r.run_dir / "samples").glob("*.png")) == \
        ["epoch_000004.png"]  # none in the first run (sample_every 0)
    resumed = [e for e in read_metrics(r.run_dir).events if e.get("event") == "resumed"]
    assert "settings changed: sample_every 0 -> 2, checkpoint_every 0 -> 1" in resumed[-1]["message"]


@pytest.mark.parametrize("pair, match", [("lr=1", "lr cannot change on --resume"),
                                         ("batch_size=4", "batch_size cannot change on --resume"),
                                         ("eval_every", "key=value"), ("eval_every=-1", "eval_every must be >= 0")])
def test_resume_refuses_settings_that_train(tmp_path, tiny_dataset, pair, match):
    t = Trainer("dcgan", tiny_dataset, tmp_path / "run", cfg(epochs=1), progress=False)
    t.fit()
    before = (t.run_dir / "run.json").read_bytes()
    with pytest.raises(ValueError, match=match):
        Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False, overrides=[pair])
    assert (t.run_dir / "run.json").read_bytes() == before  # nothing written, and the lock is free again:
    Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False).close()

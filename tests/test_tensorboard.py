"""Logging sinks (engines.logsinks): TensorBoard event files from a tiny training run and from `pokelab export-tb`,
read back with TensorBoard's own event reader; resume purges replayed epochs; a missing package is a clear error;
rank 0 only (torchrun, slow); Weights & Biases through a fake module and, when installed, for real in WANDB_MODE=offline."""
from __future__ import annotations

import importlib.machinery
import io
import json
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engines import logsinks
from engines.cli import main as cli
from engines.config import TrainConfig, apply_overrides
from engines.runs.folder import read_metrics
from engines.trainer import Trainer
from helpers import Killed, kill_at_step, on_nth_step
from test_distributed import data, ok, only_run, torchrun, train_args  # noqa: F401 (data: a fixture)

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TINY = {"g_width": 8, "d_width": 8, "z_dim": 16}
TRAIN_TAGS = {"loss/D", "loss/G", "acc/D_real", "acc/D_fake", "img_per_s", "lr"}


def cfg(**kw):
    base = dict(image_size=32, batch_size=8, epochs=2, sample_every=1, eval_every=0, grid_n=9, engine=dict(TINY),
                checkpoint_every=1, tensorboard=True)
    base.update(kw)
    return TrainConfig(**base)


def events(d: Path) -> EventAccumulator:
    ea = EventAccumulator(str(d), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def series(ea, tag):
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def assert_mirrors_metrics(ea, run: Path):
    """Every training and evaluation value of metrics.jsonl is in the event files, at its epoch."""
    m = read_metrics(run)
    for rec in m.train:
        for k in TRAIN_TAGS:
            assert (rec["epoch"], pytest.approx(rec[k], rel=1e-6)) in series(ea, k), (k, rec["epoch"])
    for rec in m.eval:
        for k, v in rec.items():
            if k.startswith("ms_ssim"):
                assert series(ea, f"eval/{k}") == [(rec["epoch"], pytest.approx(v, rel=1e-6))]


def assert_grids(ea, run: Path, epochs):
    imgs = ea.Images("samples")
    assert [i.step for i in imgs] == list(epochs)
    for i in imgs:
        png = np.asarray(Image.open(run / "samples" / f"epoch_{i.step:06d}.png").convert("RGB"))
        shown = np.asarray(Image.open(io.BytesIO(i.encoded_image_string)).convert("RGB"))
        assert (i.height, i.width) == png.shape[:2] and np.array_equal(shown, png)


def test_training_writes_tfevents_scalars_eval_and_grids(tmp_path, tiny_dataset):
    t = Trainer("dcgan", tiny_dataset, tmp_path, cfg(eval_every=2, eval_metrics="ms_ssim", eval_n=16), progress=False)
    run = t.fit()
    tb = run / "tensorboard"
    assert any(p.name.startswith("events.out.tfevents.") for p in tb.iterdir())
    ea = events(tb)
    tags = ea.Tags()
    assert TRAIN_TAGS <= set(tags["scalars"]) and {"eval/ms_ssim/fake", "eval/ms_ssim/real"} <= set(tags["scalars"])
    assert not {"epoch", "step", "time", "eval/epoch"} & set(tags["scalars"])  # bookkeeping is the axis, not a value
    assert [s for s, _ in series(ea, "loss/D")] == [1, 2]
    assert_mirrors_metrics(ea, run)
    assert tags["images"] == ["samples"]
    assert_grids(ea, run, [1, 2])
    assert "config/text_summary" in tags["tensors"]  # the run's resolved config, as text


def test_export_tb_of_a_run_with_a_partial_line_and_unknown_keys(tmp_path, tiny_dataset, capsys):
    run = Trainer("dcgan", tiny_dataset, tmp_path, cfg(tensorboard=False), progress=False).fit()
    assert not (run / "tensorboard").exists()  # off by default: nothing written
    with open(run / "metrics.jsonl", "a") as f:  # a reader must cope: unknown keys, text, lists, a torn last line
        f.write(json.dumps({"kind": "eval", "epoch": 2, "step": 10, "time": 1.0, "fid": 42.5, "surprise": [1, 2],
                            "eval_by": "someone", "new_metric": 0.25, "inf_metric": 1e308}) + "\n")
        f.write('{"kind": "train", "epoch": 3, "loss/D"')
    (run / "samples" / "recon_epoch_000002.png").write_bytes((run / "samples" / "epoch_000002.png").read_bytes())
    (run / "samples" / "notes.png").write_bytes(b"not a grid")  # not a grid name: ignored
    out = tmp_path / "tb"
    assert cli(["export-tb", str(run), "--out", str(out)]) == 0
    msg = capsys.readouterr()
    assert "partial last line" in msg.err and f"to {out}" in msg.out
    ea = events(out)
    assert_mirrors_metrics(ea, run)
    assert [s for s, _ in series(ea, "loss/D")] == [1, 2]  # the torn epoch-3 line is not there
    assert series(ea, "eval/fid") == [(2, 42.5)] and series(ea, "eval/new_metric") == [(2, 0.25)]
    assert series(ea, "eval/inf_metric") == [(2, float("inf"))]
    assert not [t for t in ea.Tags()["scalars"] if "surprise" in t or "eval_by" in t]
    assert sorted(ea.Tags()["images"]) == ["samples", "samples/recon"]
    assert_grids(ea, run, [1, 2])
    # the default folder: a second export over existing event files is refused (every point would show twice)
    assert cli(["export-tb", str(run)]) == 0 and cli(["export-tb", str(run)]) == 2
    assert "already holds TensorBoard event files" in capsys.readouterr().err
    assert cli(["export-tb", str(tmp_path / "nope")]) == 2


def test_export_tb_skips_linked_and_broken_grids(tmp_path, tiny_dataset):
    run = Trainer("dcgan", tiny_dataset, tmp_path, cfg(tensorboard=False, epochs=1), progress=False).fit()
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(secret)
    (run / "samples" / "epoch_000005.png").symlink_to(secret)
    whole = (run / "samples" / "epoch_000001.png").read_bytes()
    (run / "samples" / "epoch_000006.png").write_bytes(whole[: len(whole) // 2])  # cut short
    res = logsinks.export_tensorboard(run, tmp_path / "tb")
    assert res["images"] == 1 and any("symbolic link" in w for w in res["warnings"])
    assert any("epoch_000006.png: not a readable image" in w for w in res["warnings"])
    assert [i.step for i in events(tmp_path / "tb").Images("samples")] == [1]


def test_resume_purges_the_epochs_it_replays(tmp_path, tiny_dataset):
    t = Trainer("dcgan", tiny_dataset, tmp_path, cfg(epochs=4, seed=3, checkpoint_every=2), progress=False)
    kill_at_step(t.engine, 18)  # mid epoch 4: epochs 1-3 are in the event file, the checkpoint is epoch 2's
    with pytest.raises(Killed):
        t.fit()
    ea = events(t.run_dir / "tensorboard")
    assert [s for s, _ in series(ea, "loss/D")] == [1, 2, 3]
    Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False).fit()
    ea = events(t.run_dir / "tensorboard")
    assert [s for s, _ in series(ea, "loss/D")] == [1, 2, 3, 4]  # each epoch once
    assert_mirrors_metrics(ea, t.run_dir)
    assert [i.step for i in ea.Images("samples")] == [1, 2, 3, 4]


def test_nan_rollback_replaces_the_rolled_back_epochs(tmp_path, tiny_dataset):
    t = Trainer("dcgan", tiny_dataset, tmp_path, cfg(epochs=4, checkpoint_every=2), progress=False)
    # a NaN in epoch 4 rolls back to epoch 2's checkpoint: epoch 3 (already mirrored) is trained again at a lower lr
    on_nth_step(t.engine, 18, after=lambda out: {**out, "loss/D": torch.tensor(float("nan"))})
    run = t.fit()
    assert [e["event"] for e in read_metrics(run).events] == ["nan_rollback"]
    ea = events(run / "tensorboard")
    m = read_metrics(run).train
    assert series(ea, "lr") == [(r["epoch"], pytest.approx(r["lr"])) for r in m]  # epoch 3 once, the new value
    assert series(ea, "lr")[2][1] == pytest.approx(series(ea, "lr")[1][1] / 2)


def test_missing_package_is_a_clear_error_and_off_needs_nothing(tmp_path, tiny_dataset, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(logsinks.SinkUnavailable, match=r"'tensorboard' package.*pip install tensorboard"):
        Trainer("dcgan", tiny_dataset, tmp_path / "a", cfg(), progress=False)
    assert not (tmp_path / "a").exists()  # refused before a run folder was made
    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(8):
        Image.fromarray(np.full((32, 32, 3), i * 30, np.uint8)).save(data / f"{i}.png")
    assert cli(["train", "dcgan", "--data", str(data), "--runs", str(tmp_path / "b"), "--epochs", "1",
                "--image-size", "32", "--batch-size", "8", "--set", "tensorboard=true", "--no-progress"]) == 2
    assert "pip install tensorboard" in capsys.readouterr().err
    run = Trainer("dcgan", tiny_dataset, tmp_path / "c", cfg(tensorboard=False, epochs=1), progress=False).fit()
    assert not (run / "tensorboard").exists() and read_metrics(run).train


def test_settings_parse_and_validate():
    c = apply_overrides(TrainConfig(), ["tensorboard=true", "wandb_project=my-gans"])
    assert c.tensorboard is True and c.wandb_project == "my-gans"
    with pytest.raises(ValueError, match="true/false"):
        apply_overrides(TrainConfig(), ["tensorboard=yes"])
    for bad in ("", "a/b", "x" * 200):
        with pytest.raises(logsinks.SinkUnavailable, match="wandb_project"):
            logsinks.check_available(TrainConfig(wandb_project=bad))


def test_scalars_of_a_line():
    rec = {"kind": "eval", "epoch": 3, "step": 9, "time": 5.0, "fid": 10, "ok": True, "nan": None, "txt": "x",
           "big": -1e308, "eval_seed": 7}
    assert logsinks.scalars(rec) == {"eval/fid": 10.0, "eval/big": float("-inf")}
    assert logsinks.grid_tag("epoch_000010.png") == ("samples", 10)
    assert logsinks.grid_tag("recon_epoch_000002.png") == ("samples/recon", 2)
    assert logsinks.grid_tag("epoch_10.gif") is None and logsinks.grid_tag("progress.png") is None


# ---- Weights & Biases ------------------------------------------------------------------------
class FakeRun:
    def __init__(self, calls, fail_log=False):
        self.calls, self.fail_log = calls, fail_log

    def define_metric(self, name, **kw):
        self.calls.append(("define_metric", name, kw))

    def log(self, data):
        if self.fail_log:
            raise ConnectionError("W&B is unreachable")
        self.calls.append(("log", data))

    def finish(self, exit_code=0):
        self.calls.append(("finish", exit_code))


def fake_wandb(monkeypatch, fail_log=False):
    calls: list = []
    mod = types.ModuleType("wandb")
    mod.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # importlib.util.find_spec finds it
    mod.init = lambda **kw: calls.append(("init", kw)) or FakeRun(calls, fail_log)
    mod.Image = lambda data, caption=None: ("Image", data, caption)
    monkeypatch.setitem(sys.modules, "wandb", mod)
    return calls


def test_wandb_through_a_fake_module(tmp_path, tiny_dataset, monkeypatch):
    calls = fake_wandb(monkeypatch)
    run = Trainer("dcgan", tiny_dataset, tmp_path, cfg(tensorboard=False, wandb_project="pokelab-test"),
                  progress=False).fit()
    (_, init), *rest = calls
    assert init["project"] == "pokelab-test" and init["id"] == run.name and init["resume"] == "allow"
    assert init["dir"] == str(run) and init["config"]["engine"] == "dcgan" and init["config"]["epochs"] == 2
    assert init["config"]["engine_config"]["g_width"] == 8
    assert ("define_metric", "*", {"step_metric": "epoch"}) in rest
    logs = [c[1] for c in rest if c[0] == "log"]
    train = [d for d in logs if "loss/D" in d]
    m = read_metrics(run).train
    assert [d["epoch"] for d in train] == [1, 2]
    assert [d["loss/D"] for d in train] == pytest.approx([r["loss/D"] for r in m])
    grids = [d for d in logs if "samples" in d]
    assert [(d["epoch"], d["samples"][2]) for d in grids] == [(1, "epoch 1"), (2, "epoch 2")]
    assert grids[1]["samples"][1] == str(run / "samples" / "epoch_000002.png")  # the PNG itself, not re-encoded
    assert rest[-1] == ("finish", 0)


def test_a_failing_sink_never_stops_training(tmp_path, tiny_dataset, monkeypatch):
    calls = fake_wandb(monkeypatch, fail_log=True)
    with pytest.warns(RuntimeWarning, match="Weights & Biases logging stopped: ConnectionError"):
        t = Trainer("dcgan", tiny_dataset, tmp_path, cfg(wandb_project="p"), progress=False)
        run = t.fit()
    assert [r["epoch"] for r in read_metrics(run).train] == [1, 2]
    assert ("finish", 1) in calls  # closed at the failure, not logged to again
    assert "W&B is unreachable" in (run / "log.txt").read_text()
    assert [s for s, _ in series(events(run / "tensorboard"), "loss/D")] == [1, 2]  # the other sink goes on


@pytest.mark.slow
def test_only_rank_zero_logs_under_torchrun(tmp_path, data):
    """Two processes train one run (engines/distributed.py): one event file, every epoch once."""
    ok(torchrun(data, train_args("dcgan", data, tmp_path, 2, 8, "--set", "tensorboard=true")))
    run = only_run(tmp_path)
    files = list((run / "tensorboard").iterdir())
    assert len(files) == 1 and files[0].name.startswith("events.out.tfevents."), files
    ea = events(run / "tensorboard")
    assert [s for s, _ in series(ea, "loss/D")] == [1, 2]
    assert_mirrors_metrics(ea, run)


def _wandb_records(path: Path):
    """Records of a W&B offline run file (.wandb: a 7-byte header, then LevelDB-log blocks of 32 KiB whose
    chunks carry a 7-byte header: crc32c, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:  # zero padding up to the block end
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec
            buf = b""


def test_wandb_offline_for_real(tmp_path, tiny_dataset, monkeypatch):
    pytest.importorskip("wandb")
    for k, v in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                 "WANDB_CONFIG_DIR": str(tmp_path / "cfg"), "WANDB_CACHE_DIR": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(k, v)
    run = Trainer("dcgan", tiny_dataset, tmp_path, cfg(tensorboard=False, wandb_project="pokelab-test"),
                  progress=False).fit()
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1 and files[0].name == f"run-{run.name}.wandb"
    rows = []
    for rec in _wandb_records(files[0]):
        if rec.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
    train = [r for r in rows if "loss/D" in r]
    m = read_metrics(run).train
    assert [r["epoch"] for r in train] == [1, 2]
    assert [r["loss/D"] for r in train] == pytest.approx([x["loss/D"] for x in m], rel=1e-6)
    assert [r["epoch"] for r in rows if "samples/_type" in r] == [1, 2]
    assert len(list(files[0].parent.glob("files/media/images/samples_*.png"))) == 2

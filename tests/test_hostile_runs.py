"""Hostile run folders and parallel runs (the trainer and the run format): no writes through links, no hangs on
FIFOs, one owner per run (a lock naming its PID), unique run ids, clear errors for odd JSON, bounded exports
and studio reads, orphaned temp files cleaned and runs killed before their first checkpoint resumable.
Tiny DCGANs on CPU: seconds each."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from engines.config import TrainConfig
from engines.runs.folder import (RunFormatError, RunWriter, checkpoint_path, read_info, read_jsonl, read_metrics)
from engines.trainer import Trainer, TrainingError
from helpers import Killed, kill_at_step, on_nth_step

TINY = {"g_width": 8, "d_width": 8, "z_dim": 16}
ROOT = Path(__file__).resolve().parents[1]


def cfg(**kw):
    base = dict(image_size=32, batch_size=8, epochs=2, sample_every=0, eval_every=0, grid_n=4, engine=dict(TINY))
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def run(tmp_path, tiny_dataset):
    """A finished one-epoch run (its export written: sample_every=1)."""
    t = Trainer("dcgan", tiny_dataset, tmp_path / "runs", cfg(epochs=1, sample_every=1), progress=False)
    return t.fit()


def no_hang(fn, timeout=20.0, fifos=()):
    """Run ``fn`` in a thread; fail if it is still blocked after ``timeout`` s (then unblock the FIFOs it may be
    waiting on, so the test process does not hang). Returns fn's result or raises its exception."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        for f in fifos:  # a writer end lets a blocked open()/read() return
            try:
                os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        th.join(5)
        pytest.fail(f"{getattr(fn, '__name__', fn)} blocked for more than {timeout} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


# ---- 1. no writes through links ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["log.txt", "metrics.jsonl"])
def test_resume_refuses_a_dangling_link_and_creates_nothing(run, tiny_dataset, tmp_path, name):
    target = tmp_path / "elsewhere" / f"planted-{name}"
    target.parent.mkdir()
    (run / name).unlink()
    os.symlink(target, run / name)
    with pytest.raises(RunFormatError, match=rf"{name}.*symbolic link"):
        Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False)
    assert not target.exists()


@pytest.mark.parametrize("name", ["log.txt", "metrics.jsonl"])
def test_resume_refuses_a_link_to_a_file_and_leaves_it_alone(run, tiny_dataset, tmp_path, name):
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    (run / name).unlink()
    os.symlink(target, run / name)
    with pytest.raises(RunFormatError, match=rf"{name}.*symbolic link"):
        Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False)
    assert target.read_text() == "precious\n"


def test_a_linked_folder_is_refused(run, tiny_dataset, tmp_path):
    outside = tmp_path / "outside-checkpoints"
    (run / "checkpoints").rename(outside)
    os.symlink(outside, run / "checkpoints")
    with pytest.raises(RunFormatError, match=r"checkpoints/ is a symbolic link"):
        Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False)


def test_writer_never_appends_through_a_link_planted_later(tmp_path):
    """The check at start is not the only guard: every append opens with O_NOFOLLOW."""
    w = RunWriter(tmp_path / "r")
    w.log("train", 1, 1, x=1)
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    for name, write in (("metrics.jsonl", lambda: w.log("train", 2, 2, x=2)),
                        ("log.txt", lambda: w.append_log("hello"))):
        p = w.dir / name
        p.unlink(missing_ok=True)
        os.symlink(target, p)
        with pytest.raises(RunFormatError, match=f"{name}.*symbolic link"):
            write()
        (tmp_path / "dangling").unlink(missing_ok=True)
        p.unlink()
        os.symlink(tmp_path / "dangling", p)
        with pytest.raises(RunFormatError, match="symbolic link"):
            write()
        assert not (tmp_path / "dangling").exists()
        p.unlink()
    assert target.read_text() == "precious\n"


def test_metrics_lines_are_flushed_per_line_and_synced_at_checkpoints(tmp_path, tiny_dataset, monkeypatch):
    """Per-line appends reach the OS at once (a crash keeps them); fsync happens before each checkpoint only."""
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    t = Trainer("dcgan", tiny_dataset, tmp_path, cfg(epochs=6, checkpoint_every=4), progress=False)
    t.fit()
    metrics_syncs = [p for p in synced if p.endswith("metrics.jsonl")]
    # before the epoch-4 and the last (epoch-6) checkpoints and at the end, not once per line (6 lines; there
    # is no metrics.jsonl yet at the epoch-0 checkpoint)
    assert len(metrics_syncs) == 3
    assert [r["epoch"] for r in read_metrics(t.run_dir).train] == [1, 2, 3, 4, 5, 6]


# ---- 3. FIFOs are never waited on --------------------------------------------------------------------
def test_fifo_metrics_is_reported_by_readers_and_refused_by_resume(run, tiny_dataset):
    fifo = run / "metrics.jsonl"
    fifo.unlink()
    os.mkfifo(fifo)
    m = no_hang(lambda: read_metrics(run), fifos=[fifo])
    assert not m.train and any("metrics.jsonl" in w and "FIFO" in w for w in m.warnings)
    recs, warns = no_hang(lambda: read_jsonl(fifo), fifos=[fifo])
    assert recs == [] and "FIFO" in warns[0]
    with pytest.raises(RunFormatError, match=r"metrics.jsonl is a FIFO"):
        no_hang(lambda: Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False), fifos=[fifo])


def test_fifo_run_json_and_log_do_not_hang(run, tiny_dataset):
    log = run / "log.txt"
    log.unlink()
    os.mkfifo(log)
    with pytest.raises(RunFormatError, match=r"log.txt is a FIFO"):
        no_hang(lambda: Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False), fifos=[log])
    with pytest.raises(RunFormatError, match=r"FIFO"):
        no_hang(lambda: RunWriter(run).append_log("x"), fifos=[log])
    info = run / "run.json"
    info.unlink()
    os.mkfifo(info)
    with pytest.raises(RunFormatError, match=r"run.json: is a FIFO"):
        no_hang(lambda: read_info(run), fifos=[info])


def test_studio_reports_a_fifo_metrics_file(run):
    import studio.data as D

    fifo = run / "metrics.jsonl"
    fifo.unlink()
    os.mkfifo(fifo)
    r = no_hang(lambda: D.load_run(run, "pokelab"), fifos=[fifo])
    assert any("metrics.jsonl" in w and "FIFO" in w for w in r.warnings)


# ---- 4. one run per folder ----------------------------------------------------------------------------
def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, tiny_dataset, monkeypatch):
    import engines.trainer as T

    monkeypatch.setattr(T, "make_run_id", lambda engine, dataset: "20260101-000000-dcgan-tiny")
    a = Trainer("dcgan", tiny_dataset, tmp_path, cfg(epochs=1), progress=False)
    b = Trainer("dcgan", tiny_dataset, tmp_path, cfg(epochs=1), progress=False)
    assert a.run_dir != b.run_dir
    assert {a.run_dir.name, b.run_dir.name} == {"20260101-000000-dcgan-tiny", "20260101-000000-dcgan-tiny-2"}
    a.fit(), b.fit()
    assert read_info(a.run_dir)["run_id"] == a.run_dir.name and read_info(b.run_dir)["run_id"] == b.run_dir.name
    assert len(read_metrics(a.run_dir).train) == 1 and len(read_metrics(b.run_dir).train) == 1


def test_a_second_resume_of_the_same_run_is_refused_with_the_holders_pid(run, tiny_dataset):
    first = Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False)
    with pytest.raises(RunFormatError, match=rf"owned by another trainer \(PID {os.getpid()}\)"):
        Trainer.resume(run, dataset=tiny_dataset, epochs=3, progress=False)
    first.fit()
    info = read_info(run)
    assert info["status"] == "finished" and info["config"]["epochs"] == 2
    assert [r["epoch"] for r in read_metrics(run).train] == [1, 2]
    again = Trainer.resume(run, dataset=tiny_dataset, epochs=3, progress=False)  # released: next owner welcome
    again.fit()
    assert [r["epoch"] for r in read_metrics(run).train] == [1, 2, 3]


def test_the_lock_names_another_process(run, tiny_dataset):
    code = ("import sys, time; from engines.runs.folder import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(RunFormatError, match=rf"PID {p.pid}\)"):
            Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False)
    finally:
        p.kill()
        p.wait()
    Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False).fit()  # the kernel dropped the lock


def test_the_lock_is_released_on_every_way_out(tmp_path, tiny_dataset):
    from engines.runs.folder import RunLock

    def free(d):
        with RunLock(d):
            return True

    # a crash inside a step
    t = Trainer("dcgan", tiny_dataset, tmp_path / "a", cfg(), progress=False)
    with pytest.raises(RunFormatError):
        RunLock(t.run_dir).acquire()  # held from construction on
    kill_at_step(t.engine, 3)
    with pytest.raises(Killed):
        t.fit()
    assert free(t.run_dir)
    # a NaN stop
    t = Trainer("dcgan", tiny_dataset, tmp_path / "b", cfg(nan_policy="stop"), progress=False)
    on_nth_step(t.engine, 2, after=lambda out: {**out, "loss/D": torch.tensor(float("nan"))})
    with pytest.raises(TrainingError):
        t.fit()
    assert free(t.run_dir)
    # a stop request (SIGINT/SIGTERM), then a finished resume
    t = Trainer("dcgan", tiny_dataset, tmp_path / "c", cfg(), progress=False)
    on_nth_step(t.engine, 2, before=t.request_stop)
    t.fit()
    assert read_info(t.run_dir)["status"] == "interrupted" and free(t.run_dir)
    r = Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False)
    r.fit()
    assert read_info(t.run_dir)["status"] == "finished" and free(t.run_dir)
    # a resume that fails after taking the lock (the dataset changed)
    other = type(tiny_dataset)(**{**vars(tiny_dataset), "key": "changed"})
    with pytest.raises(TrainingError, match="changed"):
        Trainer.resume(t.run_dir, dataset=other, epochs=3, progress=False)
    assert free(t.run_dir)


# ---- 6. odd JSON: clear errors, never tracebacks -----------------------------------------------------------
def _edit_info(run, **changes):
    info = json.loads((run / "run.json").read_text())
    info.update(changes)
    (run / "run.json").write_text(json.dumps(info))


@pytest.mark.parametrize("changes, match", [
    ({"config": "oops"}, r"'config' must be an object"),
    ({"config": None}, r"'config' must be an object"),
    ({"dataset": 5}, r"'dataset' must be an object"),
    ({"dataset": {"name": "tiny", "key": ["x"], "size": 32, "source": "/nowhere"}}, r"'dataset.key' must be text"),
    ({"engine": 3}, r"'engine' must be text"),
    ({"epoch": 1e400}, r"'epoch' must be a whole number"),
])
def test_resume_names_the_wrong_field(run, tiny_dataset, changes, match):
    _edit_info(run, **changes)
    with pytest.raises(RunFormatError, match=match):
        Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False)


@pytest.mark.parametrize("field, value, match", [
    ("image_size", "big", r"config.image_size = 'big' is not int"),
    ("epochs", 1e400, r"config.epochs = inf is not int"),
    ("batch_size", 0, r"config.batch_size = 0 is outside"),
    ("engine", [1, 2], r"config.engine = \[1, 2\] is not dict"),
    ("max_hours", -1, r"config.max_hours = -1 is outside"),
])
def test_resume_names_the_wrong_config_setting(run, tiny_dataset, field, value, match):
    info = json.loads((run / "run.json").read_text())
    info["config"][field] = value
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunFormatError, match=match):
        Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False)


def test_resume_refuses_an_engine_config_asking_for_terabytes(run, tiny_dataset):
    info = json.loads((run / "run.json").read_text())
    info["config"]["engine"].update(g_width=10**6, max_channels=10**6)
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunFormatError, match=r"parameters"):
        Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False)


def test_deeply_nested_json_is_a_format_error(run):
    deep = "[" * 100_000 + "]" * 100_000
    (run / "run.json").write_text('{"config": ' + deep + "}")
    with pytest.raises(RunFormatError, match="nested too deeply"):
        read_info(run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "x": ' + deep + "}\n")
    m = read_metrics(run)
    assert len(m.train) == 1 and any("line 2: malformed" in w for w in m.warnings)


def test_an_infinite_epoch_line_is_dropped_on_resume_and_named(run, tiny_dataset):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "epoch": 1e400, "step": 5, "loss/D": 1}\n')
        f.write('{"kind": "train", "epoch": "two", "step": 5, "loss/D": 1}\n')
    r = Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False)
    r.fit()
    m = read_metrics(run)
    assert [x["epoch"] for x in m.train] == [1, 2] and not m.warnings
    (ev,) = [e for e in m.events if e.get("event") == "resumed"]
    assert "line 2: epoch inf is not a whole number" in ev["message"]
    assert "line 3: epoch 'two'" in ev["message"]


# ---- 7. bounded exports and studio reads -------------------------------------------------------------------
def _export_config(run):
    return json.loads((run / "export" / "config.json").read_text())


@pytest.mark.parametrize("change, match", [
    ({"engine_config": {"g_width": 10**6, "max_channels": 10**6}}, r"M parameters .* more than"),
    ({"engine_config": {"z_dim": 10**9}}, r"z_dim = 1000000000 is larger than"),
    ({"engine_config": {"g_width": float("inf")}}, r"not a finite number"),
    ({"image_size": 10**6}, r"'image_size' must be a whole number of pixels"),
    ({"image_size": "32"}, r"'image_size' must be a whole number of pixels"),
    ({"engine_config": "wide"}, r"'engine_config' must be an object"),
])
def test_an_export_config_asking_for_too_much_is_refused_before_allocating(run, change, match):
    from engines.runs.export import ExportError, load_export

    cfg_ = _export_config(run)
    for k, v in change.items():
        if k == "engine_config" and isinstance(v, dict):
            cfg_[k] = {**cfg_[k], **v}
        else:
            cfg_[k] = v
    (run / "export" / "config.json").write_text(json.dumps(cfg_))
    t0 = time.perf_counter()
    with pytest.raises(ExportError, match=match):
        load_export(run)
    assert time.perf_counter() - t0 < 10  # refused from the config, nothing allocated


def test_a_sound_export_still_loads(run):
    from engines.runs.export import check_engine_size, load_export
    from engines.generate.dcgan import DCGAN

    eng = load_export(run)
    n = sum(p.numel() for p in eng.parameters()) + sum(b.numel() for b in eng.buffers())
    assert check_engine_size(DCGAN, _export_config(run)["engine_config"], 32) == n


def test_studio_reads_a_capped_amount_of_a_huge_metrics_file(run, monkeypatch):
    import studio.data as D

    monkeypatch.setattr(D, "METRICS_MAX_BYTES", 20_000)
    line = json.dumps({"kind": "train", "epoch": 1, "step": 5, "loss/D": 1.0, "pad": "x" * 200}) + "\n"
    with open(run / "metrics.jsonl", "a") as f:
        f.write(line * 1000)  # ~250 KB
    r = D.load_run(run, "pokelab")
    assert any("only its first" in w and "cap" in w for w in r.warnings)


def test_an_overlong_line_is_skipped_without_being_held(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_bytes(b'{"epoch": 1}\n' + b'{"x": "' + b"y" * (3 * 2**20) + b'"}\n{"epoch": 2}\n')
    recs, warns = read_jsonl(p)
    assert [r["epoch"] for r in recs] == [1, 2] and "line 2: longer than" in warns[0]


# ---- 8. left-overs ---------------------------------------------------------------------------------------
def test_temp_files_orphaned_by_kill_9_are_removed_when_a_trainer_opens_the_run(run, tiny_dataset):
    orphans = [run / "checkpoints" / ".last.pt.k3j9x_2a.tmp", run / "export" / ".model.safetensors.a1b2c3d4.tmp",
               run / ".run.json.zz99yy88.tmp", run / "samples" / ".epoch_000001.png.q1w2e3r4.tmp"]
    for p in orphans:
        p.write_bytes(b"half a file")
    keep = run / "checkpoints" / "notes.tmp"
    keep.write_text("mine")
    r = Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False)
    assert not any(p.exists() for p in orphans) and keep.exists()
    assert sorted(r.orphans_removed) == sorted(str(p.relative_to(run)) for p in orphans)
    r.fit()
    ev = [e for e in read_metrics(run).events if e.get("event") == "resumed"]
    assert "removed 4 temp file(s)" in ev[-1]["message"]


def test_a_run_killed_before_its_first_checkpoint_restarts_in_place(tmp_path, tiny_dataset):
    ref = Trainer("dcgan", tiny_dataset, tmp_path / "ref", cfg(seed=3), progress=False)
    ref.fit()
    t = Trainer("dcgan", tiny_dataset, tmp_path / "cut", cfg(seed=3), progress=False)

    def die():
        raise Killed()

    t.save_checkpoint = die  # kill -9 between run.json and the epoch-0 checkpoint
    with pytest.raises(Killed):
        t.fit()
    assert read_info(t.run_dir)["status"] == "running" and not checkpoint_path(t.run_dir).exists()
    r = Trainer.resume(t.run_dir, dataset=tiny_dataset, progress=False)
    assert (r.epoch, r.step) == (0, 0)
    r.fit()
    info = read_info(t.run_dir)
    assert info["status"] == "finished" and info["epoch"] == 2
    for k, v in ref.engine.state_dict().items():
        assert torch.equal(v, r.engine.state_dict()[k]), k
    assert any(e.get("event") == "restarted" for e in read_metrics(t.run_dir).events)


def test_a_run_that_trained_but_lost_its_checkpoint_is_not_restarted(run, tiny_dataset):
    checkpoint_path(run).unlink()
    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        Trainer.resume(run, dataset=tiny_dataset, epochs=2, progress=False)
    assert [r["epoch"] for r in read_metrics(run).train] == [1]  # nothing dropped


def test_the_cli_says_what_is_wrong_without_a_traceback(run, capsys):
    """`pokelab train --resume` on a locked run and on a run.json whose config is text: one line, exit 2."""
    from engines.cli import main
    from engines.runs.folder import RunLock

    with RunLock(run):
        assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "pokelab train: error:" in err and f"PID {os.getpid()}" in err and "Traceback" not in err
    _edit_info(run, config="oops")
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "'config' must be an object" in err and "Traceback" not in err


def test_a_real_kill_9_leaves_a_run_the_next_trainer_can_take(tmp_path, tiny_dataset):
    """kill -9 of a training process: the kernel drops its lock, and --resume finishes the run."""
    code = (
        "import sys, time, types, torch\n"
        "torch.set_num_threads(1)\n"
        "from engines.config import TrainConfig\n"
        "from engines.trainer import Trainer\n"
        "g = torch.Generator().manual_seed(0)\n"
        "imgs = torch.randint(0, 256, (40, 3, 32, 32), generator=g, dtype=torch.uint8)\n"
        "ds = types.SimpleNamespace(images=imgs, key='tiny-key', name='tiny', source='/nowhere', skipped=[],\n"
        "                           background='white')\n"
        "cfg = TrainConfig(image_size=32, batch_size=8, epochs=4, sample_every=0, eval_every=0, grid_n=4,\n"
        "                  checkpoint_every=1, engine={'g_width': 8, 'd_width': 8, 'z_dim': 16})\n"
        "t = Trainer('dcgan', ds, sys.argv[1], cfg, progress=False)\n"
        "real, n = t.engine.train_step, [0]\n"
        "def step(b):\n"
        "    n[0] += 1\n"
        "    if n[0] == 13:\n"
        "        print('RUN', t.run_dir, flush=True)\n"
        "        time.sleep(120)\n"
        "    return real(b)\n"
        "t.engine.train_step = step\n"
        "t.fit()\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("RUN"), line
        run_dir = Path(line.split(" ", 1)[1].strip())
        with pytest.raises(RunFormatError, match=rf"PID {p.pid}\)"):
            Trainer.resume(run_dir, dataset=tiny_dataset, progress=False)
        p.kill()
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert read_info(run_dir)["status"] == "running"
    (run_dir / "checkpoints" / ".last.pt.abcd1234.tmp").write_bytes(b"torn")  # as a kill mid-write leaves
    r = Trainer.resume(run_dir, dataset=tiny_dataset, progress=False)
    assert (r.epoch, r.step) == (2, 10) and r.orphans_removed == ["checkpoints/.last.pt.abcd1234.tmp"]
    r.fit()
    assert read_info(run_dir)["status"] == "finished"
    assert [x["epoch"] for x in read_metrics(run_dir).train] == [1, 2, 3, 4]

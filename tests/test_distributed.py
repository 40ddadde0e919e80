"""Data-parallel training under torchrun on CPUs with Gloo (engines/distributed.py, docs/training.md).

Every test starts real torchrun jobs of two processes on tiny nets (16 px) and checks their run folders, or runs
the one-process counterpart in this process; the worker is tests/dist_worker.py (its test hooks: a random stream
shared by the ranks, a rank killing itself at a given step). Ports come from binding port 0.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engines.config import TrainConfig
from engines.runs.folder import checkpoint_path, read_info, read_metrics
from engines.trainer import Trainer, TrainingError, check_batch_split, epoch_indices

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(Path(__file__).with_name("dist_worker.py"))
TINY = ["--image-size", "16", "--set", "eval_every=0", "--set", "sample_every=1", "--set", "checkpoint_every=1",
        "--no-progress"]
SMALL_NETS = {"dcgan": ["--set", "g_width=8", "--set", "d_width=8", "--set", "z_dim=8"],
              "wgan_gp": ["--set", "g_width=8", "--set", "d_width=8", "--set", "z_dim=8", "--set", "n_critic=2",
                          "--set", 'augment="none"'],  # quoted: a bare none means the default
              "stylegan2_ada": ["--set", "z_dim=8", "--set", "w_dim=8", "--set", "mapping_layers=1",
                                "--set", "channel_base=64", "--set", "channel_max=8", "--set", "r1_interval=2",
                                "--set", "pl_interval=2"],
              "cyclegan": ["--image-size", "32", "--set", "ngf=4", "--set", "ndf=4", "--set", "n_blocks=1"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_images(folder: Path, n: int = 32, size: int = 16, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-data")
    return {"A": write_images(root / "a", seed=0), "B": write_images(root / "b", seed=1), "cache": root / "cache"}


def env_for(data, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", POKELAB_CACHE=str(data["cache"]), PYTHONPATH=str(ROOT), **extra)
    return env


def torchrun(data, args: list[str], nproc: int = 2, worker: bool = False, timeout: float = 240,
             rdzv: list[str] | None = None, **env) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=N -m engines ARGS`` (or the test worker), its output captured."""
    launch = rdzv or ["--standalone", "--master_port", str(free_port())]
    target = [WORKER, "cli"] if worker else ["-m", "engines"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, f"--nproc_per_node={nproc}", *target, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env_for(data, **env), capture_output=True, text=True, timeout=timeout)


def single(data, args: list[str], worker: bool = True, **env) -> subprocess.CompletedProcess:
    target = [WORKER, "cli"] if worker else ["-m", "engines"]
    return subprocess.run([sys.executable, *target, *args], cwd=ROOT, env=env_for(data, **env), capture_output=True,
                          text=True, timeout=240)


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    return p


def train_args(engine: str, data, runs: Path, epochs: int = 2, batch: int = 8, *extra: str) -> list[str]:
    src = ["--source", str(data["A"]), "--target", str(data["B"])] if engine == "cyclegan" else ["--data", str(data["A"])]
    return ["train", engine, *src, "--runs", str(runs), "--epochs", str(epochs), "--batch-size", str(batch),
            *TINY, *SMALL_NETS[engine], *extra]


def only_run(runs: Path) -> Path:
    found = [p for p in runs.iterdir() if p.is_dir()]
    assert len(found) == 1, found  # one run folder for the whole job, written by rank 0
    return found[0]


def load(run: Path) -> dict:
    return torch.load(checkpoint_path(run), map_location="cpu", weights_only=True)


def assert_close_state(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0), (k, (a[k].float() - b[k].float()).abs().max())


# ---- without processes ---------------------------------------------------------------------------------
def test_rank_slices_rebuild_the_one_process_batches():
    one = epoch_indices(50, seed=3, epoch=2, batch_size=8)
    r0 = epoch_indices(50, seed=3, epoch=2, batch_size=8, rank=0, world=2)
    r1 = epoch_indices(50, seed=3, epoch=2, batch_size=8, rank=1, world=2)
    assert len(one) == len(r0) == len(r1) == 6
    for b, x, y in zip(one, r0, r1):  # global batch i = rank 0's rows then rank 1's, in the one-process order
        assert torch.equal(b, torch.cat([x, y]))
    with pytest.raises(ValueError, match="does not divide"):
        epoch_indices(50, 3, 2, 9, rank=0, world=2)


def test_batch_split_errors_name_the_numbers():
    from engines.registry import get_engine

    sg, dc = get_engine("stylegan2_ada"), get_engine("dcgan")
    assert check_batch_split(64, 4, 0, dc) == 1 and check_batch_split(64, 4, 8, sg) == 2
    assert check_batch_split(64, 4, 16, dc) == 1  # batch_gpu = the whole share: no accumulation, any engine
    with pytest.raises(TrainingError, match="does not divide over 3 processes"):
        check_batch_split(64, 3, 0, sg)
    with pytest.raises(TrainingError, match="choose a divisor of 16"):
        check_batch_split(64, 4, 6, sg)
    with pytest.raises(TrainingError, match="'dcgan' cannot split .*stylegan2_ada"):
        check_batch_split(64, 4, 8, dc)


class PieceRNG:
    """torch.randn/rand for the accumulation test: a draw made inside a micro-batch of ``accumulate`` is a slice of
    one draw for the whole batch (made by the first micro-batch), so splitting the batch changes no random
    number; draws outside micro-batches come from the same private generator in both runs."""

    def __init__(self, seed: int = 9):
        self.gen = torch.Generator().manual_seed(seed)
        self.piece, self.calls, self.cache = None, 0, []

    def patch(self, monkeypatch):
        for name in ("randn", "rand"):
            f = getattr(torch, name)
            monkeypatch.setattr(torch, name, lambda *size, _f=f, generator=None, device=None, dtype=None, **kw:
                                _f(*size, generator=generator, device=device, dtype=dtype, **kw) if generator is not None
                                else self.draw(_f, size, dtype, device))
        randn = torch.randn
        monkeypatch.setattr(torch, "randn_like", lambda t, **kw: randn(*t.shape, device=t.device, dtype=t.dtype))

    def draw(self, f, size, dtype, device):
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else tuple(size)
        if self.piece is None:
            return f(shape, generator=self.gen, dtype=dtype).to(device or "cpu")
        j, k = self.piece
        c, self.calls = self.calls, self.calls + 1
        if j == 0:
            self.cache.append(f((shape[0] * k, *shape[1:]) if shape else (), generator=self.gen, dtype=dtype))
        full = self.cache[c]
        return (full[j * shape[0]:(j + 1) * shape[0]] if shape else full).to(device or "cpu")

    def watch(self, engine):
        accumulate = engine.accumulate

        def acc(name, loss_fn, *inputs, **kw):
            k = max(1, min(engine.batch_rounds, *(int(x.shape[0]) for x in inputs)))
            j, self.cache = [0], []

            def piece(*xs):
                self.piece, self.calls = (j[0], k), 0
                try:
                    return loss_fn(*xs)
                finally:
                    self.piece, j[0] = None, j[0] + 1
            return accumulate(name, piece, *inputs, **kw)
        engine.accumulate = acc


def test_batch_gpu_accumulation_equals_one_batch(tmp_path, monkeypatch):
    """stylegan2_ada, batch 8 in micro-batches of 2 (4 rounds per optimiser step: Gmain, Dmain, R1) = batch 8 at
    once, after 8 steps, to 1e-5 (the same random numbers: PieceRNG; minibatch std per sample: its groups are strided)."""
    import types

    imgs = torch.randint(0, 256, (32, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    ds = types.SimpleNamespace(images=imgs, key="k", name="acc", source="/nowhere", skipped=[], background="white")
    sg = {"z_dim": 8, "w_dim": 8, "mapping_layers": 1, "channel_base": 64, "channel_max": 8, "r1_interval": 2,
          "pl_weight": 0, "style_mixing_prob": 0, "mbstd_group": 1}
    states = []
    for batch_gpu in (0, 2):
        cfg = TrainConfig(image_size=16, batch_size=8, epochs=2, eval_every=0, sample_every=0, grid_n=4, seed=4,
                          augment="none", batch_gpu=batch_gpu, engine=dict(sg))
        t = Trainer("stylegan2_ada", ds, tmp_path / str(batch_gpu), cfg, progress=False)
        assert t.engine.batch_rounds == (4 if batch_gpu else 1)
        with monkeypatch.context() as m:
            rng = PieceRNG()
            rng.patch(m)
            rng.watch(t.engine)
            t.fit()
        states.append((load(t.run_dir), read_metrics(t.run_dir).train))
    (a, la), (b, lb) = states
    weights = [k for k in a["engine"]["modules"] if k.startswith(("G.", "D.", "G_ema.")) and "w_avg" not in k]
    assert_close_state({k: a["engine"]["modules"][k] for k in weights},
                       {k: b["engine"]["modules"][k] for k in weights}, atol=1e-5)
    for x, y in zip(la, lb):
        for k in ("loss/D", "loss/G", "loss/r1", "acc/D_real"):
            assert x[k] == pytest.approx(y[k], abs=1e-5), k
    # engines whose steps share forward passes, or that hold BatchNorm, refuse micro-batches
    dc = TrainConfig(image_size=16, batch_size=8, batch_gpu=2, engine={"g_width": 8, "d_width": 8, "z_dim": 8})
    with pytest.raises(TrainingError, match="cannot split"):
        Trainer("dcgan", ds, tmp_path / "no", dc)
    from engines.generate.dcgan import DCGAN

    monkeypatch.setattr(DCGAN, "supports_batch_gpu", True)
    with pytest.raises(TrainingError, match="dcgan.s D, G use BatchNorm"):
        Trainer("dcgan", ds, tmp_path / "no", dc)


def test_resume_under_another_world_size_is_refused(tmp_path, tiny_dataset, monkeypatch):
    cfg = TrainConfig(image_size=32, batch_size=8, epochs=1, eval_every=0, sample_every=0, grid_n=4,
                      engine={"g_width": 8, "d_width": 8, "z_dim": 8})
    run = Trainer("dcgan", tiny_dataset, tmp_path, cfg, progress=False).fit()
    assert read_info(run)["world_size"] == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainingError, match=r"trained by 1 process\(es\) and this launch has 2.*pokelab train --resume"):
        Trainer.resume(run, dataset=tiny_dataset)


# ---- torchrun jobs -----------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("engine,extra", [
    ("dcgan", []),
    ("stylegan2_ada", ["--set", "batch_gpu=2", "--set", "augment_options.p=0.5", "--set", "augment_options.target=1",
                       "--set", "augment_options.kimg=1", "--set", "augment_options.interval=1"]),
    ("cyclegan", [])])
def test_two_processes_train_one_run(tmp_path, data, engine, extra):
    p = ok(torchrun(data, train_args(engine, data, tmp_path, 2, 8, *extra)))
    run = only_run(tmp_path)
    info = read_info(run)
    assert info["status"] == "finished" and info["world_size"] == 2 and info["epoch"] == 2
    assert info["distributed"]["batch_per_process"] == 4 and info["config"]["batch_size"] == 8
    assert (info["distributed"]["synced_batchnorms"] > 0) == (engine == "dcgan")  # cyclegan: InstanceNorm
    assert info["distributed"]["micro_batches"] == (2 if engine == "stylegan2_ada" else 1)
    m = read_metrics(run)
    assert [r["epoch"] for r in m.train] == [1, 2] and all(math.isfinite(r["loss/D"]) for r in m.train)
    ck = load(run)
    assert ck["world_size"] == 2 and len(ck["ranks"]) == 2
    # each rank has its own random stream: their states differ
    assert not torch.equal(ck["ranks"][0]["rng"]["torch"], ck["ranks"][1]["rng"]["torch"])
    if engine == "stylegan2_ada":  # ADA's p moves on r_t of the global batch: by 8 images a step, on both ranks
        ps = [r["engine"]["augment"]["p"] for r in ck["ranks"]]
        assert ps[0] == ps[1] == ck["engine"]["augment"]["p"] == pytest.approx(0.5 - 8 * 8 / 1000)
    assert p.stdout.count("run directory:") == 1  # rank 0 speaks for the job


@pytest.mark.slow
def test_world_2_equals_world_1_with_twice_the_batch(tmp_path, data):
    """wgan_gp (its G has BatchNorm: synchronised) for 8 steps: 2 processes x batch 4 = 1 process x batch 8, the
    same data order and the same random numbers (the worker's shared stream), to 1e-5."""
    args = lambda runs: train_args("wgan_gp", data, runs, 2, 8, "--seed", "5")  # noqa: E731
    ok(torchrun(data, args(tmp_path / "w2"), worker=True, DIST_TEST_SHARED_RNG="1"))
    ok(single(data, args(tmp_path / "w1"), DIST_TEST_SHARED_RNG="1"))
    a, b = load(only_run(tmp_path / "w2")), load(only_run(tmp_path / "w1"))
    nets = lambda st: {k: v for k, v in st["engine"]["modules"].items() if k.startswith(("G.", "D."))}  # noqa: E731
    assert_close_state(nets(a), nets(b), atol=1e-5)  # weights and BatchNorm running statistics (synchronised)
    assert int(a["engine"]["modules"]["critic_steps"]) == int(b["engine"]["modules"]["critic_steps"]) == 8
    for (k, sa), sb in zip(a["engine"]["optimizers"]["G"]["state"].items(), b["engine"]["optimizers"]["G"]["state"].values()):
        assert torch.allclose(sa["exp_avg_sq"], sb["exp_avg_sq"], atol=1e-6, rtol=1e-4), k
    la, lb = read_metrics(only_run(tmp_path / "w2")).train, read_metrics(only_run(tmp_path / "w1")).train
    for x, y in zip(la, lb):  # epoch scalars: means over every rank's steps
        for k in ("loss/D", "loss/G", "loss/gp", "wasserstein"):
            assert x[k] == pytest.approx(y[k], abs=1e-5), k


@pytest.mark.slow
def test_kill_one_rank_then_resume_is_bit_identical(tmp_path, data):
    args = lambda runs: train_args("dcgan", data, runs, 3, 8, "--seed", "2")  # noqa: E731
    ok(torchrun(data, args(tmp_path / "ref")))
    # rank 1 dies (kill -9) just before its 6th step, in epoch 2: torchrun ends the job
    cut = torchrun(data, args(tmp_path / "cut"), worker=True, DIST_TEST_KILL="1:6")
    assert cut.returncode != 0
    run = only_run(tmp_path / "cut")
    # rank 0 saw its peer vanish inside a collective (or was stopped by torchrun): the run is not finished and
    # its last checkpoint is the epoch-1 one
    assert read_info(run)["status"] in ("failed", "running", "interrupted") and load(run)["epoch"] == 1
    ok(torchrun(data, ["train", "--resume", str(run), "--no-progress"]))
    ref, got = load(only_run(tmp_path / "ref")), load(run)
    for k in ref["engine"]["modules"]:
        assert torch.equal(ref["engine"]["modules"][k], got["engine"]["modules"][k]), k
    for r in range(2):
        assert torch.equal(ref["ranks"][r]["rng"]["torch"], got["ranks"][r]["rng"]["torch"])
    strip = lambda rows: [{k: v for k, v in x.items() if k not in ("time", "img_per_s", "epoch_seconds")}  # noqa: E731
                          for x in rows]  # (the clock's figures differ, nothing else may)
    assert strip(read_metrics(run).train) == strip(read_metrics(only_run(tmp_path / "ref")).train)
    assert read_info(run)["status"] == "finished"


@pytest.mark.slow
def test_sigterm_on_one_rank_stops_both_after_the_same_step(tmp_path, data):
    args = train_args("wgan_gp", data, tmp_path, 2, 8)
    p = torchrun(data, args, worker=True, DIST_TEST_KILL="1:3:SIGTERM")
    run = only_run(tmp_path)
    info = read_info(run)
    assert info["status"] == "interrupted", p.stderr[-3000:]
    ck = load(run)
    assert ck["epoch"] == 0 and ck["batch_in_epoch"] == 3 and len(ck["ranks"]) == 2  # both stopped after step 3
    events = [e["event"] for e in read_metrics(run).events]
    assert "interrupted" in events
    ok(torchrun(data, ["train", "--resume", str(run), "--no-progress"]))
    assert read_info(run)["status"] == "finished"


@pytest.mark.slow
def test_ctrl_c_on_the_job_checkpoints_and_resumes(tmp_path, data):
    """SIGINT to torchrun and its workers (a Ctrl-C in the terminal; torchrun then also sends them SIGTERM):
    every rank stops after the same step, the run is 'interrupted' with a checkpoint, and --resume finishes it."""
    import signal
    import time

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--master_port", str(free_port()),
           "--nproc_per_node=2", "-m", "engines", *train_args("dcgan", data, tmp_path, 200, 8)]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env_for(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and p.poll() is None:
        runs = [d for d in tmp_path.iterdir() if d.is_dir()]
        if runs and len(read_metrics(runs[0]).train) >= 2:
            break
        time.sleep(0.5)
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    run = only_run(tmp_path)
    info = read_info(run)
    assert info["status"] == "interrupted", err[-3000:]
    ck = load(run)
    assert 2 <= ck["epoch"] < 200 and len(ck["ranks"]) == 2
    ok(torchrun(data, ["train", "--resume", str(run), "--epochs", str(ck["epoch"] + 1), "--no-progress"]))
    assert read_info(run)["status"] == "finished" and read_info(run)["epoch"] == ck["epoch"] + 1


@pytest.mark.slow
def test_nan_on_one_rank_rolls_back_every_rank(tmp_path, data):
    """Rank 1 alone reports a NaN loss in epoch 2: the epoch scalars are reduced, so both ranks take the NaN
    guard's verdict, roll back to the epoch-1 checkpoint together, and finish."""
    p = ok(torchrun(data, train_args("dcgan", data, tmp_path, 3, 8), worker=True, DIST_TEST_NAN="1:6"))
    run = only_run(tmp_path)
    m = read_metrics(run)
    assert [e["event"] for e in m.events if e["event"] == "nan_rollback"] == ["nan_rollback"], p.stderr[-2000:]
    assert [r["epoch"] for r in m.train] == [1, 2, 3] and read_info(run)["nan_rollbacks"] == 1
    ck = load(run)
    lrs = [g["lr"] for g in ck["engine"]["optimizers"]["D"]["param_groups"]]
    assert lrs == [pytest.approx(1e-4)]  # halved once, on every rank (the weights are rank 0's, identical)


@pytest.mark.slow
def test_two_nodes_on_localhost(tmp_path, data):
    """--nnodes 2 with a c10d rendezvous on 127.0.0.1: two torchrun processes, one worker each."""
    port = free_port()
    rdzv = ["--nnodes", "2", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "pokelab"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *rdzv, "--nproc_per_node=1", "-m", "engines",
           *train_args("dcgan", data, tmp_path, 1, 8)]
    env = env_for(data)
    procs = [subprocess.Popen(cmd + [], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-3000:] for o in outs]
    info = read_info(only_run(tmp_path))
    assert info["status"] == "finished" and info["world_size"] == 2


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:FID from 24 real images")
def test_distributed_evaluation_equals_one_process(tmp_path, data, monkeypatch):
    sys.path.insert(0, str(Path(WORKER).parent))
    import dist_worker

    from engines.metrics import evaluate_generator

    out = tmp_path / "res.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--master_port", str(free_port()),
           "--nproc_per_node=2", WORKER, "fid", str(out)]
    ok(subprocess.run(cmd, cwd=ROOT, env=env_for(data), capture_output=True, text=True, timeout=240))
    got = json.loads(out.read_text())
    monkeypatch.setenv("POKELAB_CACHE", str(data["cache"]))
    want = evaluate_generator(dist_worker.fake_sampler, dist_worker.real_set(), device="cpu", **dist_worker.EVAL)
    assert got["eval_n"] == want["eval_n"] == 36
    for k in ("fid", "kid", "ms_ssim/fake", "memorisation", "novelty/median_distance"):
        assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-9), k

"""End to end through the real CLI in subprocesses: prepare real Pokémon images, train, kill -9, resume."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

ARGS = ["--image-size", "16", "--batch-size", "8", "--epochs", "30", "--seed", "3", "--no-progress",
        "--set", "g_width=8", "--set", "d_width=8", "--set", "z_dim=8", "--set", "eval_every=0",
        "--set", "sample_every=20", "--set", "grid_n=4"]


def pokelab(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "engines", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


def only_run(runs):
    (run,) = list(runs.iterdir())
    return run


def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path, pokemon_dir):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(1, 17):
        shutil.copy(pokemon_dir / f"{i}.png", src / f"{i}.png")
    prep = subprocess.run([sys.executable, "-m", "engines", "data", "prepare", str(src), str(tmp_path / "prep"),
                           "--size", "16", "--no-progress"], capture_output=True, text=True)
    assert prep.returncode == 0, prep.stdout + prep.stderr

    ref = pokelab("train", "dcgan", "--data", str(tmp_path / "prep"), "--runs", str(tmp_path / "ref"), *ARGS)
    assert ref.wait(300) == 0, ref.stdout.read()

    cut = pokelab("train", "dcgan", "--data", str(tmp_path / "prep"), "--runs", str(tmp_path / "cut"), *ARGS)
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = list((tmp_path / "cut").glob("*/metrics.jsonl"))
        if runs and runs[0].read_text().count('"train"') >= 4:
            break
        time.sleep(0.01)
    cut.send_signal(signal.SIGKILL)
    cut.wait(30)
    run = only_run(tmp_path / "cut")
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # nothing got to say otherwise

    res = pokelab("train", "--resume", str(run))
    out = res.communicate(timeout=300)[0]
    assert res.returncode == 0, out
    assert json.loads((run / "run.json").read_text())["status"] == "finished"

    a = load_file(only_run(tmp_path / "ref") / "export" / "model.safetensors")
    b = load_file(run / "export" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if x["kind"] == "train"] == list(range(1, 31))

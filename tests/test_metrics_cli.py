"""`pokelab eval` and the image-folder reader; the FID agreement with the pytorch-fid CLI (slow)."""
import argparse
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from engines.metrics import fid as fidmod
from engines.metrics.cli import add_eval_command
from engines.metrics.evaluate import evaluate_images
from engines.metrics.sources import load_image_folder

SHARED_POKEMON = "/work/shared/datasets/pokemon/dreamworld-256"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("POKELAB_CACHE", str(tmp_path_factory.getbasetemp() / "metrics-cli-cache"))


def _write_pokemon(folder, ids, size, mode="RGB"):
    if not os.path.isdir(SHARED_POKEMON):
        pytest.skip("shared Pokémon images not available")
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        im = Image.open(f"{SHARED_POKEMON}/{i}.png").convert("RGBA").resize((size, size), Image.BICUBIC)
        (im if mode == "RGBA" else im.convert("RGB")).save(folder / f"{i}.png")
    return folder


def _eval(argv):
    p = argparse.ArgumentParser()
    add_eval_command(p.add_subparsers(dest="command"))
    args = p.parse_args(["eval", *argv])
    return args.func(args)


def test_folder_reader_flattens_alpha_and_resizes_mixed_sizes(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[5:15, 5:15] = (255, 0, 0, 255)  # opaque red square, the rest fully transparent black
    Image.fromarray(rgba, "RGBA").save(d / "a.png")
    Image.fromarray(np.full((20, 20, 3), 7, np.uint8)).save(d / "b.png")
    Image.fromarray(np.full((30, 30), 200, np.uint8), "L").save(d / "c.jpg")
    (d / "notes.txt").write_text("not an image")
    (d / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.warns(RuntimeWarning) as rec:
        s = load_image_folder(d)
    msgs = " ".join(str(w.message) for w in rec)
    assert "skipped 1 unreadable" in msgs and "broken.png" in msgs and "resized 1 of 3" in msgs
    assert s.files == ["a.png", "b.png", "c.jpg"] and s.images.shape == (3, 3, 20, 20)
    assert s.images.dtype == torch.uint8
    assert s.images[0, :, 0, 0].tolist() == [255, 255, 255]  # transparent -> white, not black
    assert s.images[0, :, 10, 10].tolist() == [255, 0, 0]
    assert s.images[1].unique().tolist() == [7]
    assert abs(int(s.images[2, 0, 10, 10]) - 200) <= 1


def test_eval_cli_folder_vs_folder_json(tmp_path, capsys):
    real = _write_pokemon(tmp_path / "real", range(1, 13), 32, mode="RGBA")
    fake = _write_pokemon(tmp_path / "fake", range(13, 23), 32)
    assert _eval([str(fake), "--against", str(real), "--metrics", "ms_ssim", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "images" and out["images"] == 10 and out["real_images"] == 12
    m = out["metrics"]
    assert set(m) == {"ms_ssim/fake", "ms_ssim/real", "collapse", "eval_n", "eval_seconds"}
    assert m["eval_n"] == 10 and 0 < m["ms_ssim/fake"] < 1 and m["collapse"] == 0.0
    # the table form
    assert _eval([str(fake), "--against", str(real), "--metrics", "ms_ssim", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"ms_ssim/fake\s+0\.\d+", text) and re.search(r"collapse\s+no", text)


def test_eval_cli_errors_are_clear(tmp_path, capsys):
    from engines.cli import main

    real = _write_pokemon(tmp_path / "real", range(1, 5), 32)
    empty = tmp_path / "empty"
    empty.mkdir()
    one = _write_pokemon(tmp_path / "one", [7], 32)
    cases = [
        ([str(empty), "--against", str(real)], "neither a run, an export, nor a folder of images"),
        ([str(one), "--against", str(real)], "1 readable image(s); evaluation needs at least 2"),
        ([str(tmp_path / "missing"), "--against", str(real)], "no such file or folder"),
        ([str(real), "--against", str(real), "--metrics", "fid,bogus"], "unknown metric 'bogus'"),
        ([str(real), "--against", str(real), "--metrics", "is"], "Inception Score unavailable"),
    ]
    for argv, msg in cases:
        assert main(["eval", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, err


def test_eval_cli_on_an_export(tmp_path, capsys):
    from engines.runs.export import save_export
    from engines.registry import get_engine

    torch.manual_seed(0)
    engine = get_engine("dcgan")({"z_dim": 8, "g_width": 8, "d_width": 8}, image_size=32, training=False)
    save_export(engine, tmp_path / "export")
    real = _write_pokemon(tmp_path / "real", range(1, 9), 32)
    argv = [str(tmp_path / "export"), "--against", str(real), "--metrics", "ms_ssim", "--n", "6",
            "--batch-size", "4", "--json", "--device", "cpu"]
    assert _eval(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "generator" and out["engine"] == "dcgan" and out["image_size"] == 32
    assert out["metrics"]["eval_n"] == 6 and np.isfinite(out["metrics"]["ms_ssim/fake"])


@pytest.mark.slow
def test_fid_matches_pytorch_fid_cli(tmp_path, capsys):
    """The pytorch-fid CLI on two folders of 40 real 64 px Pokémon vs our in-memory route and `pokelab eval`."""
    a = _write_pokemon(tmp_path / "a", range(1, 41), 64)
    b = _write_pokemon(tmp_path / "b", range(41, 81), 64)
    env = dict(os.environ, TORCH_HOME=os.environ.get("TORCH_HOME", "/work/shared/torch-home"))
    proc = subprocess.run([sys.executable, "-m", "pytorch_fid", str(a), str(b), "--batch-size", "40",
                           "--device", "cpu", "--num-workers", "0"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    ref = float(re.search(r"FID:\s+([0-9.eE+-]+)", proc.stdout).group(1))
    fidmod.clear_memory_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fidmod.SmallSampleWarning)
        ours = evaluate_images(a, b, metrics="fid")["fid"]
    assert ours == pytest.approx(ref, rel=1e-3)
    assert ref > 50  # two different sets of Pokémon: a real distance, not ~0
    # `pokelab eval A --against B` (real statistics now from the cache) gives the same number
    assert _eval([str(a), "--against", str(b), "--metrics", "fid", "--json", "--batch-size", "40"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["fid"] == pytest.approx(ref, rel=1e-3)
    assert any("fewer than the 2048" in w for w in out["warnings"])


def test_eval_log_appends_an_evaluation_to_a_stopped_run(tmp_path, capsys):
    import types

    from engines.config import TrainConfig
    from engines.runs.folder import RunWriter, read_info, read_metrics
    from engines.trainer import Trainer

    real = _write_pokemon(tmp_path / "real", range(1, 17), 32)
    from engines.data.prepare import load_dataset

    ds = load_dataset(real, size=32, progress=False)
    cfg = TrainConfig(image_size=32, batch_size=8, epochs=1, sample_every=1, eval_every=0, grid_n=4,
                      engine={"g_width": 8, "d_width": 8, "z_dim": 16})
    run = Trainer("dcgan", ds, tmp_path / "runs", cfg, progress=False).fit()
    assert _eval([str(run), "--n", "20", "--metrics", "kid", "--log"]) == 0
    evals = read_metrics(run).eval
    assert len(evals) == 1 and evals[0]["eval_n"] == 20 and evals[0]["eval_by"] == "pokelab eval"
    assert evals[0]["epoch"] == read_info(run)["epoch"] == 1 and "kid" in evals[0]
    assert "pokelab eval (n=20" in (run / "log.txt").read_text()
    # a run that is still training, or a folder of images, is refused with a clear message
    RunWriter(run).update_info(status="running")
    with pytest.raises(ValueError, match="still training"):
        _eval([str(run), "--n", "20", "--metrics", "kid", "--log"])
    with pytest.raises(ValueError, match="needs a run folder"):
        _eval([str(real), "--against", str(real), "--metrics", "kid", "--log"])
    assert len(read_metrics(run).eval) == 1


def test_eval_of_a_run_measures_what_the_trainer_measured(tmp_path, capsys):
    """`pokelab eval RUN` on a run trained on black backgrounds with its own seed reproduces the trainer's last
    logged FID/KID: the recorded background, the trainer's evaluation seed, the run's device, its final export."""
    from engines.cli import main
    from engines.runs.folder import read_info, read_metrics

    real = _write_pokemon(tmp_path / "real", range(1, 17), 32, mode="RGBA")  # transparent: the background matters
    argv = ["train", "dcgan", "--data", str(real), "--runs", str(tmp_path / "runs"), "--image-size", "32",
            "--epochs", "1", "--batch-size", "8", "--seed", "3", "--no-progress",
            "--set", "background=black", "--set", "eval_every=1", "--set", "eval_n=10",
            "--set", "eval_metrics=fid,kid", "--set", "sample_every=1", "--set", "grid_n=4",
            "--set", "g_width=8", "--set", "d_width=8", "--set", "z_dim=16"]
    assert main(argv) == 0
    run = next((tmp_path / "runs").iterdir())
    assert read_info(run)["dataset"]["background"] == "black"
    logged = read_metrics(run).eval[-1]
    capsys.readouterr()
    assert _eval([str(run), "--n", "10", "--metrics", "fid,kid", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seed"] == 3 + 1_000_000 and out["background"] == "black" and out["device"] == "cpu"
    assert out["export_epoch"] == 1
    assert out["metrics"]["fid"] == pytest.approx(logged["fid"], rel=1e-6)
    assert out["metrics"]["kid"] == pytest.approx(logged["kid"], rel=1e-6, abs=1e-9)
    # what the command measured before: white backgrounds and seed 0 give other numbers
    assert _eval([str(run), "--n", "10", "--metrics", "fid", "--json", "--background", "white", "--seed", "0"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["background"] == "white" and other["metrics"]["fid"] != pytest.approx(logged["fid"], rel=1e-3)
    # the run's best/ (here the one evaluation, epoch 1) is measured as its run measures: its seed, its data
    assert read_info(run)["best"]["epoch"] == 1
    assert _eval([str(run / "best"), "--n", "10", "--metrics", "fid,kid", "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["seed"] == 3 + 1_000_000 and best["background"] == "black" and best["export_epoch"] == 1
    assert best["metrics"]["fid"] == pytest.approx(logged["fid"], rel=1e-6)
    # --log on best/: a line of its own at best/'s epoch, kept out of the run's own evaluations
    assert _eval([str(run / "best"), "--n", "10", "--metrics", "fid,kid", "--json", "--log"]) == 0
    capsys.readouterr()
    m = read_metrics(run)
    assert m.eval[-1] == logged and len(m.best_eval) == 1
    assert (m.best_eval[0]["export"], m.best_eval[0]["epoch"]) == ("best", 1)
    assert "pokelab eval of best/" in (run / "log.txt").read_text()

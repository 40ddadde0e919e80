"""Studio data layer: loading the three run formats tolerantly, the runs table, verdicts, grids, paths."""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio import data as D
from studio import grids as G
from studio import paths as PA
from studio.demo import make_grid, write_lightweight_run, write_stylegan_run


# ---- fixture builders ------------------------------------------------------------------------------
def write_run(root: Path, run_id: str, *, status="finished", epochs=30, planned=30, evals=None, extra_lines="",
              info_extra=None, tail="", grid_epochs=(), tile=16, samples=None) -> Path:
    d = root / run_id
    (d / "samples").mkdir(parents=True)
    info = {"run_id": run_id, "engine": run_id.split("-")[2], "status": status,
            "config": {"epochs": planned, "image_size": tile, "batch_size": 8},
            "dataset": {"name": "pokemon", "key": "k", "count": 40, "size": tile},
            "device": "cpu", "created": "2025-01-01T00:00:00Z", "updated": "2025-01-01T00:00:00Z",
            "epoch": epochs, "wall_seconds": 3725.0, "mystery_key": {"nested": [1, 2]}}
    info.update(info_extra or {})
    (d / "run.json").write_text(json.dumps(info))
    lines = []
    for e in range(1, epochs + 1):
        lines.append({"kind": "train", "epoch": e, "step": e * 5, "time": 0.0, "loss/D": 1.0 + 0.01 * e,
                      "loss/G": 2.0 - 0.01 * e, "loss/cycle_A": 0.5, "acc/D_real": 0.55, "acc/D_fake": 0.5,
                      "img_per_s": 100.0 + e, "augment_p": 0.0, "unknown_text": "hello"})
    for rec in evals or []:
        lines.append({"kind": "eval", "step": 0, "time": 0.0, **rec})
    text = "".join(json.dumps(x) + "\n" for x in lines) + extra_lines + tail
    (d / "metrics.jsonl").write_text(text)
    rng = np.random.default_rng(0)
    for e in grid_epochs:
        tiles = [rng.integers(0, 256, (tile, tile, 3), dtype=np.uint8) for _ in range(samples or 9)]
        Image.fromarray(make_grid(tiles)).save(d / "samples" / f"epoch_{e:06d}.png")
    return d


EVALS = [{"epoch": 10, "fid": 120.0, "kid": 0.12, "kid_std": 0.01, "ms_ssim/fake": 0.2, "ms_ssim/real": 0.2,
          "collapse": 0},
         {"epoch": 20, "fid": 80.0, "kid": 0.08, "kid_std": 0.01, "ms_ssim/fake": 0.35, "ms_ssim/real": 0.2,
          "collapse": 1},
         {"epoch": 30, "fid": 95.0, "kid": 0.09, "kid_std": 0.02, "ms_ssim/fake": 0.22, "ms_ssim/real": 0.2,
          "collapse": 0}]


# ---- pokelab runs ------------------------------------------------------------------------------------
def test_finished_run_summary_and_verdict(tmp_path):
    d = write_run(tmp_path, "20250101-000000-dcgan-pokemon", evals=EVALS)
    r = D.load_run(d)
    assert r.tool == "pokelab" and r.status == "finished" and r.warnings == []
    s = D.summarize(r)
    assert s["best FID"] == 80.0 and s["best FID at"] == 20.0
    assert s["last KID"] == pytest.approx(0.09) and s["last KID std"] == pytest.approx(0.02)
    assert s["done"] == 30 and s["planned"] == 30 and s["progress"] == "30 / 30 epoch"
    assert s["img/s"] == pytest.approx(np.mean([100.0 + e for e in range(21, 31)]))  # last 10 points
    assert s["wall time"] == "1:02:05"
    assert "loss/cycle_A" in D.loss_keys([r]) and D.loss_keys([r])[:2] == ["loss/D", "loss/G"]
    v = {x["topic"]: x for x in D.verdict(r)}
    assert v["FID"]["text"].startswith("best FID 80.00 at epoch 20; last 95.00 at epoch 30 (+19%")
    assert v["FID"]["level"] == "warn"  # rose more than 10% after its best
    assert v["collapse"]["level"] == "warn" and "first at epoch 20" in v["collapse"]["text"]
    assert "not flagged at the end" in v["collapse"]["text"]
    assert v["D balance"]["level"] == "ok"


def test_best_export_from_run_json_and_its_own_measurement(tmp_path):
    best = {"metric": "kid", "value": 0.08, "epoch": 20, "step": 100, "hours": 0.5, "kimg": 1.6, "eval_n": 500}
    d = write_run(tmp_path, "20250101-000000-projected_gan-pokemon", evals=EVALS, info_extra={"best": best})
    r = D.load_run(d)
    assert D.best_export(r)["present"] is False  # run.json names it, this copy of the run lacks the folder
    assert D.best_export_text(r).endswith("The folder is not in this copy of the run.")
    assert D.summarize(r)["best/"] == "epoch 20 · KID 0.08 (500)"
    (d / "best").mkdir()
    text = D.best_export_text(D.load_run(d))
    assert text.startswith("best/: the export of epoch 20, 0.50 h of training, the lowest KID of the run's "
                           "evaluations (0.08 at 500 samples).")
    assert f"pokelab eval {d / 'best'} --n 2000 --log" in text
    # a `pokelab eval RUN/best --log` line of an earlier best/ (epoch 10) does not describe today's best/
    def log_best_eval(epoch, fid, kid):
        with open(d / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"kind": "eval", "epoch": epoch, "fid": fid, "kid": kid, "eval_n": 2000,
                                "export": "best"}) + "\n")

    log_best_eval(10, 70.0, 0.07)
    r = D.load_run(d)
    assert D.best_export(r)["measured"] is None and "Not measured on its own yet" in D.best_export_text(r)
    assert D.summarize(r)["best/"] == "epoch 20 · KID 0.08 (500)"
    log_best_eval(20, 52.25, 0.0312)
    r = D.load_run(d)
    assert D.best_export(r)["measured"]["fid"] == 52.25
    assert D.best_export_text(r).endswith("Measured on its own: FID 52.25, KID 0.0312 at 2000 samples.")
    s = D.summarize(r)
    assert s["best/"] == "epoch 20 · KID 0.0312 (2000)" and s["best FID"] == 80.0  # its lines stay out of the trend


@pytest.mark.parametrize("best", [None, "kid", {"metric": "kid"}, {"metric": 3, "value": 0.1, "epoch": 2},
                                  {"metric": "kid", "value": "x", "epoch": 2}])
def test_best_export_absent_or_malformed_is_none(tmp_path, best):
    d = write_run(tmp_path, "20250101-000000-dcgan-pokemon", evals=EVALS,
                  info_extra={} if best is None else {"best": best})
    r = D.load_run(d)
    assert D.best_export(r) is None and D.best_export_text(r) is None and D.summarize(r)["best/"] == ""


def test_best_export_link_is_not_the_folder(tmp_path):
    d = write_run(tmp_path, "20250101-000000-dcgan-pokemon", evals=EVALS,
                  info_extra={"best": {"metric": "fid", "value": 80.0, "epoch": 20, "eval_n": 500}})
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", d / "best")
    assert D.best_export(D.load_run(d))["present"] is False


def test_running_run_with_partial_last_line_is_a_note_not_a_warning(tmp_path):
    d = write_run(tmp_path, "20250101-000000-wgan_gp-pokemon", status="running", epochs=5, planned=50,
                  tail='{"kind": "train", "epoch": 6, "loss/D": 0.7')
    r = D.refresh_status(D.load_run(d))
    assert r.status == "running" and r.warnings == []
    assert any("partial last line" in n for n in r.notes)
    assert len(r.train) == 5 and r.done == 5 and r.planned == 50


def test_partial_line_of_a_finished_run_is_a_warning(tmp_path):
    d = write_run(tmp_path, "20250101-000000-dcgan-pokemon", tail='{"kind": "tr')
    r = D.load_run(d)
    assert any("partial last line" in w for w in r.warnings)


def test_malformed_lines_unknown_keys_and_duplicates(tmp_path):
    extra = ('not json\n[1, 2]\n{"kind": "train", "epoch": "oops", "loss/D": 3}\n'
             '{"kind": "train", "epoch": 3, "step": 1, "loss/D": 9.0, "brand_new": {"a": 1}}\n'
             '{"kind": "train", "epoch": 4, "loss/D": 1e308}\n'
             '{"kind": "event", "epoch": 2, "event": "nan_rollback", "message": "rolled back"}\n')
    d = write_run(tmp_path, "20250101-000000-dcgan-pokemon", epochs=4, planned=4, extra_lines=extra)
    r = D.load_run(d)
    joined = " | ".join(r.warnings)
    assert "malformed" in joined and "without a usable 'epoch'" in joined
    # the re-logged epoch 3 (as after a resume) replaces the first one; 1e308 (the writer's inf) is blanked
    loss = r.column("train", "loss/D")
    assert loss[3.0] == 9.0 and 4.0 not in loss.index
    assert list(r.train["x"]) == [1.0, 2.0, 3.0, 4.0]
    assert r.events == [{"x": 2.0, "event": "nan_rollback", "message": "rolled back"}]


def test_broken_run_json_still_listed_with_warning(tmp_path):
    d = tmp_path / "20250101-000000-dcgan-pokemon"
    d.mkdir()
    (d / "run.json").write_text('{"run_id": "x", "status": "runn')
    (d / "metrics.jsonl").write_text(json.dumps({"kind": "train", "epoch": 1, "loss/D": 1.0}) + "\n")
    r = D.load_run(d)
    assert r.status == "broken" and r.engine == "dcgan"  # engine from the run id
    assert any(w.startswith("run.json: malformed JSON") for w in r.warnings)
    assert len(r.train) == 1
    row = D.runs_table([r]).iloc[0]
    assert row["warnings"] >= 1 and row["progress"] == "1 / ? epoch"


def test_run_json_not_an_object_and_missing_metrics(tmp_path):
    d = tmp_path / "run-a"
    d.mkdir()
    (d / "run.json").write_text("[1, 2, 3]")
    r = D.load_run(d)
    assert r.status == "broken"
    assert any("expected a JSON object" in w for w in r.warnings)
    assert any("no metrics.jsonl" in w for w in r.warnings)


def test_failed_run_and_stale_running_run(tmp_path):
    write_run(tmp_path, "20250101-000000-dcgan-a", status="failed", epochs=3, planned=10)
    s = write_run(tmp_path, "20250101-000000-dcgan-b", status="running", epochs=3, planned=10)
    old = time.time() - 3 * 3600
    for p in [s, *s.iterdir()]:
        os.utime(p, (old, old))
    runs = D.load_runs([tmp_path])
    by = {r.label: r for r in runs}
    assert by["20250101-000000-dcgan-a"].status == "failed"
    stale = by["20250101-000000-dcgan-b"]
    assert any("nothing was written for" in w for w in stale.warnings)
    assert D.summarize(stale)["status"] == "running?"
    # idempotent: refreshing again does not add the warning twice
    assert sum("nothing was written" in w for w in D.refresh_status(stale).warnings) == 1


def test_signature_changes_when_a_run_grows(tmp_path):
    d = write_run(tmp_path, "20250101-000000-dcgan-pokemon", epochs=2)
    before = D.signature(d, "pokelab")
    with open(d / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "train", "epoch": 3, "loss/D": 1.0}) + "\n")
    assert D.signature(d, "pokelab") != before


def test_discover_all_formats_and_labels(tmp_path):
    write_run(tmp_path / "runs", "20250101-000000-dcgan-pokemon")
    write_run(tmp_path / "other", "20250101-000000-dcgan-pokemon")  # same name: labels disambiguated
    write_stylegan_run(tmp_path / "sg", "00000-pk", total_kimg=20, done_kimg=20, art=None, snapshot_kimg=4)
    write_lightweight_run(tmp_path / "lw", "pk", steps=3000, art=None)
    (tmp_path / ".hidden").mkdir()
    write_run(tmp_path / ".hidden", "20250101-000000-dcgan-hidden")
    found = D.discover([tmp_path])
    tools = sorted(t for _, t, _ in found)
    assert tools == ["lightweight-gan", "pokelab", "pokelab", "stylegan2-ada"]
    labels = sorted(D.unique_labels([p for p, _, _ in found]).values())
    assert "runs/20250101-000000-dcgan-pokemon" in labels and "other/20250101-000000-dcgan-pokemon" in labels


def test_discover_skips_symlink_escaping_roots(tmp_path):
    outside = tmp_path / "outside"
    write_run(outside, "20250101-000000-dcgan-secret")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    assert D.discover([root]) == []


def test_symlinked_files_pointing_outside_are_not_read(tmp_path):
    root = tmp_path / "root"
    d = write_run(root, "20250101-000000-dcgan-pokemon", grid_epochs=(10,))
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"kind": "train", "epoch": 1, "loss/D": 42.0}) + "\n")
    (d / "samples" / "epoch_000020.png").symlink_to(d.parent.parent / "outside.png")
    (tmp_path / "outside.png").write_bytes((d / "samples" / "epoch_000010.png").read_bytes())
    r = D.load_run(d, "pokelab", root)
    assert [x for x, _ in r.samples] == [10.0] and any("outside the configured" in w for w in r.warnings)
    (d / "metrics.jsonl").unlink()
    (d / "metrics.jsonl").symlink_to(secret)
    r = D.load_run(d, "pokelab", root)
    assert r.status == "unreadable" and len(r.train) == 0
    assert "metrics.jsonl point(s) outside the configured folders" in r.warnings[0]


# ---- other tools ----------------------------------------------------------------------------------------
def test_stylegan_folder_mapped_onto_the_same_fields(tmp_path):
    d = tmp_path / "00001-pk"
    d.mkdir()
    (d / "training_options.json").write_text(json.dumps({
        "total_kimg": 100, "training_set_kwargs": {"path": "/data/pokemon.zip", "resolution": 32}}))
    stats = [{"Loss/G/loss": {"num": 4, "mean": 1.5, "std": 0.1}, "Loss/D/loss": {"num": 4, "mean": 0.9},
              "Loss/signs/real": {"num": 4, "mean": 0.6}, "Loss/signs/fake": {"num": 4, "mean": -0.2},
              "Loss/r1_penalty": {"mean": 0.05}, "Loss/D/reg": {"mean": 0.01}, "Loss/scores/real": {"mean": 2.0},
              "Progress/kimg": {"num": 1, "mean": k}, "Progress/augment": {"mean": 0.1},
              "Timing/sec_per_kimg": {"mean": 4.0}, "Timing/total_sec": {"mean": 10.0 * k}, "timestamp": 1.0,
              "Custom/thing": {"mean": 3}} for k in (0.0, 40.0, 80.0)]
    (d / "stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats) + '{"Loss/G/lo')
    (d / "metric-fid50k_full.jsonl").write_text(
        json.dumps({"results": {"fid50k_full": 50.0}, "snapshot_pkl": "network-snapshot-000040.pkl"}) + "\n" +
        json.dumps({"results": {"fid50k_full": 42.5}, "snapshot_pkl": "network-snapshot-000080.pkl"}) + "\n")
    (d / "metric-kid50k_full.jsonl").write_text(
        json.dumps({"results": {"kid50k_full": 0.01}, "snapshot_pkl": "network-snapshot-000080.pkl"}) + "\n" +
        '{"results": 3}\n')
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(d / "fakes000080.png")
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(d / "fakes_init.png")
    r = D.load_run(d)
    assert r.tool == "stylegan2-ada" and r.x_unit == "kimg" and r.dataset == "pokemon"
    assert r.planned == 100 and r.done == 80 and r.status == "running"  # not done: running while fresh
    assert list(r.train["x"]) == [0.0, 40.0, 80.0]
    row = r.train.iloc[-1]
    assert row["loss/G"] == 1.5 and row["loss/D"] == 0.9 and row["loss/r1_penalty"] == 0.05
    assert row["loss/D_reg"] == 0.01 and "loss/scores_real" not in r.train.columns
    assert row["acc/D_real"] == pytest.approx(0.8) and row["acc/D_fake"] == pytest.approx(0.6)
    assert row["img_per_s"] == pytest.approx(250.0) and r.wall_seconds == 800.0
    assert D.best_fid(r) == (42.5, 80.0)
    assert D.last_value(r, "evals", "kid") == (0.01, 80.0)
    assert [x for x, _ in r.samples] == [80.0]  # fakes_init is left out
    assert r.layout.tile == 32 and r.layout.padding == 0
    assert any("without snapshot_pkl/results" in w for w in r.warnings)
    assert any("partial last line" in n for n in r.notes)
    old = time.time() - 7200
    os.utime(d, (old, old))
    for p in d.iterdir():
        os.utime(p, (old, old))
    assert D.refresh_status(D.load_run(d)).status == "stopped"


def test_lightweight_gan_fid_scores(tmp_path):
    d = tmp_path / "pk"
    d.mkdir()
    (d / "fid_scores.txt").write_text("1000,210.5\n2000,150.25, G: 1.00 | D: 0.5\nbad line\n3000,160.0\n")
    Image.fromarray(np.zeros((34, 34, 3), np.uint8)).save(d / "2.jpg")
    Image.fromarray(np.zeros((34, 34, 3), np.uint8)).save(d / "2-ema.jpg")
    Image.fromarray(np.zeros((34, 34, 3), np.uint8)).save(d / "3-ema.jpg")
    r = D.load_run(d)
    assert r.tool == "lightweight-gan" and r.x_unit == "step"
    assert D.best_fid(r) == (150.25, 2000.0)
    assert [x for x, _ in r.samples] == [2000.0, 3000.0] and all("-ema" in p.name for _, p in r.samples)
    assert any("line 3" in w for w in r.warnings)


def test_unreadable_run_never_raises(tmp_path, monkeypatch):
    d = write_run(tmp_path, "20250101-000000-dcgan-pokemon")

    def boom(*a, **k):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(D.R, "read_metrics", boom)
    r = D.load_run(d)
    assert r.status == "unreadable" and "disk on fire" in r.warnings[0]


# ---- verdict rules ------------------------------------------------------------------------------------------
def _acc_run(tmp_path, name, real, fake, n=40):
    d = write_run(tmp_path, name, epochs=n, planned=n)
    r = D.load_run(d)
    r.train["acc/D_real"] = real
    r.train["acc/D_fake"] = fake
    return r


@pytest.mark.parametrize("real,fake,state", [
    (0.55, 0.5, "balanced"), (0.9, 0.8, "D winning"), (0.2, 0.3, "D losing"), (0.95, 0.1, "D one-sided")])
def test_d_balance_rule(tmp_path, real, fake, state):
    r = _acc_run(tmp_path, f"20250101-000000-dcgan-{state.replace(' ', '_')}", real, fake)
    b = D.d_balance(r)
    assert b["state"] == state
    assert b["points"] == 5  # 10% of 40 points, at least 5
    assert b["from"] == 36.0 and b["to"] == 40.0


def test_d_balance_window_uses_only_the_end(tmp_path):
    r = _acc_run(tmp_path, "20250101-000000-dcgan-x", 0.5, 0.5, n=100)
    r.train.loc[r.train["x"] <= 90, ["acc/D_real", "acc/D_fake"]] = 0.99  # drifted early, fine at the end
    assert D.d_balance(r)["state"] == "balanced"
    r.train.loc[r.train["x"] > 90, ["acc/D_real", "acc/D_fake"]] = 0.9
    assert D.d_balance(r)["state"] == "D winning"


def test_collapse_derived_from_ms_ssim_when_no_flag_logged(tmp_path):
    ev = [{k: v for k, v in e.items() if k != "collapse"} for e in EVALS]
    r = D.load_run(write_run(tmp_path, "20250101-000000-dcgan-pokemon", evals=ev))
    pts, src = D.collapse_points(r)
    assert pts == [20.0] and src == "derived"


def test_fid_still_improving_and_missing(tmp_path):
    ev = [{"epoch": 10, "fid": 90.0}, {"epoch": 20, "fid": 70.0}]
    r = D.load_run(write_run(tmp_path, "20250101-000000-dcgan-a", epochs=20, evals=ev))
    assert "the latest evaluation" in D.verdict(r)[0]["text"]
    r2 = D.load_run(write_run(tmp_path, "20250101-000000-dcgan-b"))
    assert D.verdict(r2)[0]["text"] == "no FID logged"


def test_ema_bias_corrected():
    v = D.ema([1.0, 1.0, 1.0], 0.9)
    assert np.allclose(v, 1.0)  # bias correction: a constant stays constant from the first point
    v = D.ema([0.0, 10.0], 0.5)
    assert v[1] == pytest.approx((0.5 * 0.5 * 0 + 0.5 * 10) / (0.5 * 0.5 + 0.5))
    assert np.array_equal(D.ema([1.0, 2.0], 0.0), [1.0, 2.0])
    with pytest.raises(ValueError):
        D.ema([1.0], 1.0)


# ---- grids ----------------------------------------------------------------------------------------------------
def test_split_grid_detects_tiles_and_skips_empty_slots():
    rng = np.random.default_rng(1)
    tiles = [rng.integers(0, 200, (24, 24, 3), dtype=np.uint8) for _ in range(7)]
    grid = make_grid(tiles)  # 3x3 layout, 2 empty slots
    out = G.split_grid(grid, D.GridLayout(tile=None))
    assert out.shape == (7, 24, 24, 3) and np.array_equal(out, np.stack(tiles))
    out2 = G.split_grid(grid, D.GridLayout(tile=24))
    assert np.array_equal(out, out2)


def test_split_grid_white_background_tiles_and_no_padding_layout():
    # art on white with white margins must not be mistaken for padding
    tiles = []
    for k in range(16):
        t = np.full((32, 32, 3), 255, np.uint8)
        t[6:26, 6 + k % 5:26] = (k * 15, 100, 200 - k * 10)
        tiles.append(t)
    assert G.split_grid(make_grid(tiles), D.GridLayout(tile=None)).shape == (16, 32, 32, 3)
    nopad = make_grid(tiles, nrow=4, padding=0)
    assert G.split_grid(nopad, D.GridLayout(tile=32, padding=0)).shape == (16, 32, 32, 3)
    with pytest.raises(G.GridError):
        G.split_grid(nopad, D.GridLayout(tile=None, padding=0))
    black = make_grid(tiles, nrow=8, padding=2, pad_value=0)
    assert G.split_grid(black, D.GridLayout(tile=None, padding=2, pad_value=0, nrow=8)).shape == (16, 32, 32, 3)


def test_ssim_identical_and_matches_reference_formula():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 24, 24, 3)).astype(np.uint8)
    assert np.allclose(G.ssim_pairs(a, a), 1.0)
    # constant images: mu = c, var = cov = 0 -> SSIM = (2 m1 m2 + c1) / (m1^2 + m2^2 + c1)
    x = np.full((1, 16, 16, 3), 100, np.uint8)
    y = np.full((1, 16, 16, 3), 150, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert G.ssim_pairs(x, y)[0] == pytest.approx((2 * 100 * 150 + c1) / (100 ** 2 + 150 ** 2 + c1), rel=1e-5)
    same = np.stack([a[0]] * 5)
    assert G.mean_pairwise_ssim(same) == pytest.approx(1.0)
    assert G.mean_pairwise_ssim(a) < 0.2  # independent noise


def test_pair_indices_cap():
    i, j = G.pair_indices(10, 1000)
    assert len(i) == 45 and (i < j).all()
    i, j = G.pair_indices(100, 300, seed=3)
    assert len(i) == 300 and len(set(zip(i, j))) == 300


def test_grid_diversity_reads_only_inside_roots(tmp_path):
    rng = np.random.default_rng(2)
    grid = make_grid([rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(4)])
    p = tmp_path / "inside" / "g.png"
    p.parent.mkdir()
    Image.fromarray(grid).save(p)
    res = G.grid_diversity(p, [tmp_path / "inside"], D.GridLayout(tile=16))
    assert res["tiles"] == 4 and res["tile"] == 16 and -1 <= res["ssim"] < 0.3
    with pytest.raises(PA.OutsideRootsError):
        G.grid_diversity(p, [tmp_path / "elsewhere"], D.GridLayout(tile=16))


def test_timeline_gif_in_memory(tmp_path):
    frames = []
    for k in range(3):
        p = tmp_path / f"epoch_{k:06d}.png"
        Image.fromarray(np.full((40, 60, 3), 80 * k, np.uint8)).save(p)
        frames.append((f"epoch {k}", p))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    gif, skipped = G.timeline_gif(frames + [("epoch 9", tmp_path / "bad.png")], [tmp_path], fps=5)
    im = Image.open(io.BytesIO(gif))
    assert im.format == "GIF" and im.n_frames == 3 and len(skipped) == 1
    assert im.size[0] == 60 and im.size[1] > 40  # label band under the grid
    im.seek(2)
    assert im.info["duration"] >= 1500  # the last frame is held
    with pytest.raises(G.GridError):
        G.timeline_gif([("x", tmp_path / "bad.png")], [tmp_path])


def test_nearest_sample(tmp_path):
    r = D.load_run(write_run(tmp_path, "20250101-000000-dcgan-pokemon", grid_epochs=(10, 20, 40)))
    assert D.nearest_sample(r, 26)[0] == 20.0
    assert D.nearest_sample(r, 30)[0] == 20.0  # tie: the earlier one
    assert D.nearest_sample(r, 1000)[0] == 40.0


# ---- paths ------------------------------------------------------------------------------------------------------
def test_paths_inside_roots(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f.txt").write_text("x" * 50 + "\nlast line\n")
    (tmp_path / "secret.txt").write_text("no")
    (root / "a" / "escape.txt").symlink_to(tmp_path / "secret.txt")
    assert PA.is_inside(root / "a" / "f.txt", [root])
    assert not PA.is_inside(root / "a" / ".." / ".." / "secret.txt", [root])
    assert not PA.is_inside(root / "a" / "escape.txt", [root])  # a symlink pointing out
    with pytest.raises(PA.OutsideRootsError, match="outside the folders"):
        PA.read_bytes_inside(root / "a" / "escape.txt", [root])
    assert PA.read_bytes_inside(root / "a" / "f.txt", [root]).endswith(b"last line\n")
    assert PA.tail_text(root / "a" / "f.txt", [root], max_bytes=15) == "last line\n"
    with pytest.raises(ValueError, match="MiB"):
        PA.read_bytes_inside(root / "a" / "f.txt", [root], max_bytes=10)


def test_parse_roots(tmp_path):
    roots = PA.parse_roots(f"runs\n\n{tmp_path}{os.pathsep}{tmp_path}/x\n{tmp_path}", base=tmp_path)
    assert roots == [(tmp_path / "runs").resolve(), tmp_path.resolve(), (tmp_path / "x").resolve()]


def test_studio_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, studio.data, studio.grids, studio.plots, studio.review_stats, studio.paths, studio.demo; "
            "bad = [m for m in ('torch', 'engines.base', 'engines.trainer', 'engines.data.images') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=str(Path(__file__).resolve().parents[1]),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr

"""The trend figures' x axes beside epochs: training hours (cumulative epoch_seconds, evaluation excluded) and
images seen (step x batch size), on constructed runs: a plain one, resumed runs (truncated after a kill -9,
re-logged without truncation, resumed mid-epoch), runs without the fields, stylegan2-ada and lightweight-gan
folders, and the figures drawn from them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engines.runs.folder import RunWriter
from studio import data as D
from studio import plots as P
from studio.demo import write_lightweight_run, write_stylegan_run

H = 3600.0


def timed_run(root: Path, run_id: str = "20250101-000000-dcgan-pokemon", *, secs=(10, 20, 30, 40, 50, 60),
              steps_per_epoch: int = 5, batch_size: int | None = 16, evals=(3, 6), wall: float | None = None,
              kind: str = "generate", info_epoch: int | None = None, drop=("",), lines=None) -> Path:
    """A pokelab run whose epoch e trained ``secs[e-1]`` seconds over ``steps_per_epoch`` batches; ``drop``: keys
    left out of the train lines; ``lines``: metrics lines written as given instead."""
    d = root / run_id
    d.mkdir(parents=True)
    cfg = {"epochs": 100, "image_size": 32, "eval_n": 200}
    if batch_size is not None:
        cfg["batch_size"] = batch_size
    n = len(secs)
    info = {"run_id": run_id, "engine": run_id.split("-")[2], "kind": kind, "status": "finished", "config": cfg,
            "dataset": {"name": "pokemon"} if kind == "generate" else [{"name": "a"}, {"name": "b"}],
            "epoch": n if info_epoch is None else info_epoch, "step": n * steps_per_epoch,
            "wall_seconds": float(sum(secs)) if wall is None else wall}
    (d / "run.json").write_text(json.dumps(info))
    if lines is None:
        lines = []
        for e in range(1, n + 1):
            rec = {"kind": "train", "epoch": e, "step": e * steps_per_epoch, "time": 0, "loss/D": 1.0 / e,
                   "epoch_seconds": secs[e - 1],
                   "img_per_s": steps_per_epoch * (batch_size or 1) / secs[e - 1] if secs[e - 1] else 0.0}
            lines.append({k: v for k, v in rec.items() if k not in drop})
            if e in evals:
                lines.append({"kind": "eval", "epoch": e, "step": e * steps_per_epoch, "time": 0, "fid": 100.0 / e,
                              "kid": 0.1 / e, "eval_n": 200, "eval_seconds": 999.0})
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


# ---- training hours ---------------------------------------------------------------------------------
def test_hours_are_cumulative_epoch_seconds_at_each_epoch_end(tmp_path):
    r = D.load_run(timed_run(tmp_path))
    m, why = D.x_map(r, "hours")
    assert why == "" and m.unit == "hours" and m.notes == []
    cum = np.cumsum([10, 20, 30, 40, 50, 60]) / H
    assert m(np.arange(1, 7)) == pytest.approx(cum)
    assert m.at(0) == 0.0 and m.at(7) is None  # epoch 0 = 0 h; beyond the last epoch: not placed
    assert m.end == pytest.approx(210 / H)
    s, why = D.on_axis(r, "hours")
    assert why == "" and s is not r and s.x_unit == "hours" and s.key == r.key
    assert list(s.train["x"]) == pytest.approx(list(cum))
    # evaluations sit at the end of their epoch's training; eval_seconds is not training time
    assert list(s.evals["x"]) == pytest.approx([60 / H, 210 / H])
    assert s.column("evals", "fid").to_numpy() == pytest.approx([100 / 3, 100 / 6])
    assert r.x_unit == "epoch" and list(r.evals["x"]) == [3.0, 6.0]  # the loaded run is left alone
    assert D.training_hours(r) == pytest.approx(210 / H)
    assert D.on_axis(r, "epoch") == (r, "")


def test_resumed_after_kill_counts_the_kept_epochs_once(tmp_path):
    """A kill -9 after epoch 8 with the checkpoint at epoch 5: on resume the trainer drops the lines after epoch 5
    (RunWriter.truncate_after) and restores wall_seconds from the checkpoint, so epochs 6-8 are timed once, by
    their second run."""
    d = tmp_path / "20250101-000000-dcgan-pokemon"
    w = RunWriter(d)
    w.write_info({"run_id": d.name, "engine": "dcgan", "kind": "generate", "status": "running",
                  "config": {"batch_size": 16, "epochs": 10}, "dataset": {"name": "pokemon"}})
    for e in range(1, 9):  # the first process: 10 s per epoch, killed after epoch 8
        w.log("train", e, e * 5, **{"loss/D": 1.0, "epoch_seconds": 10.0, "img_per_s": 8.0})
        if e % 5 == 0:
            w.log("eval", e, e * 5, fid=50.0)
    with open(w.metrics_path, "a") as f:
        f.write('{"kind": "train", "epoch": 9, "ste')  # torn by the kill
    assert w.truncate_after(5) == 4
    w.log("event", 5, 25, event="resumed", message="resumed at epoch 5")
    for e in range(6, 11):  # the resumed process: 12 s per epoch
        w.log("train", e, e * 5, **{"loss/D": 1.0, "epoch_seconds": 12.0, "img_per_s": 80 / 12})
        if e % 5 == 0:
            w.log("eval", e, e * 5, fid=40.0)
    w.update_info(status="finished", epoch=10, step=50, wall_seconds=5 * 10.0 + 5 * 12.0)
    r = D.load_run(d)
    assert r.warnings == []
    s, why = D.on_axis(r, "hours")
    assert why == "" and s.notes == []
    assert s.column("train", "loss/D").index.to_numpy() == pytest.approx(
        (np.cumsum([10.0] * 5 + [12.0] * 5)) / H)
    assert list(s.evals["x"]) == pytest.approx([50 / H, 110 / H])
    assert [e["x"] for e in s.events] == pytest.approx([50 / H])  # the resume mark at epoch 5's end
    assert D.training_hours(r) == pytest.approx(110 / H)


def test_relogged_epochs_without_truncation_keep_the_last_line(tmp_path):
    """A log where a resume appended epochs again instead of truncating (a foreign or older writer): the studio
    keeps the last line of each epoch, so nothing is counted twice."""
    lines = [{"kind": "train", "epoch": e, "step": e * 5, "epoch_seconds": 10.0} for e in (1, 2, 3, 4)]
    lines += [{"kind": "train", "epoch": e, "step": e * 5, "epoch_seconds": 12.0} for e in (3, 4, 5)]
    r = D.load_run(timed_run(tmp_path, lines=lines, wall=56.0, secs=(0,) * 5))
    m, why = D.x_map(r, "hours")
    assert m(np.arange(1, 6)) == pytest.approx(np.cumsum([10, 10, 12, 12, 12]) / H) and m.notes == []


def test_epoch_resumed_mid_way_gets_its_time_before_the_interruption(tmp_path):
    """SIGTERM after 1 of epoch 3's 3 batches: the trainer saved the 2 s of that batch in wall_seconds, and epoch 3's
    epoch_seconds times only the 2 batches after the resume (img_per_s x epoch_seconds = 20 images, not 30)."""
    secs = (6.0, 6.0, 4.0, 6.0)
    lines = []
    for e, s in enumerate(secs, 1):
        timed = 20 if e == 3 else 30
        lines.append({"kind": "train", "epoch": e, "step": 3 * e, "epoch_seconds": s, "img_per_s": timed / s})
    lines.insert(2, {"kind": "event", "epoch": 2, "step": 7, "event": "interrupted", "message": "+1 batch"})
    lines.insert(3, {"kind": "event", "epoch": 2, "step": 7, "event": "resumed", "message": "resumed"})
    r = D.load_run(timed_run(tmp_path, lines=lines, batch_size=10, wall=24.0, secs=secs))
    m, _ = D.x_map(r, "hours")
    assert m(np.arange(1, 5)) == pytest.approx(np.array([6, 12, 18, 24]) / H)
    assert len(m.notes) == 1 and "epoch(s) 3 resumed mid-epoch" in m.notes[0] and "2 s" in m.notes[0]
    assert D.training_hours(r) == pytest.approx(24 / H)
    # time in run.json that no logged epoch can account for (interrupted, not resumed yet): said, not spread
    lines = [{"kind": "train", "epoch": e, "step": 3 * e, "epoch_seconds": 6.0, "img_per_s": 5.0} for e in (1, 2)]
    r = D.load_run(timed_run(tmp_path / "b", lines=lines, batch_size=10, wall=15.0, secs=(6.0, 6.0)))
    m, _ = D.x_map(r, "hours")
    assert m.end == pytest.approx(12 / H) and "3 s more than the logged epoch times" in m.notes[0]
    assert D.training_hours(r) == pytest.approx(15 / H)  # the run's total does include it


def test_run_json_lagging_the_log_while_the_run_trains(tmp_path):
    """The trainer rewrites run.json's progress fields every 30 s or so, and at an interruption writes the last
    complete epoch with the time of the cut-short one: run.json may say epoch 2 while the log has 4 epochs."""
    secs = (6.0, 6.0, 4.0, 6.0)
    lines = [{"kind": "train", "epoch": e, "step": 3 * e, "epoch_seconds": s, "img_per_s": (20 if e == 3 else 30) / s}
             for e, s in enumerate(secs, 1)]
    # interrupted after 1 batch (2 s) of epoch 3: run.json = epoch 2, 6 + 6 + 2 s; not rewritten since the resume
    d = timed_run(tmp_path, lines=lines, batch_size=10, wall=14.0, secs=secs, info_epoch=2)
    r = D.load_run(d)
    m, _ = D.x_map(r, "hours")
    assert m(np.arange(1, 5)) == pytest.approx(np.array([6, 12, 18, 24]) / H) and "epoch(s) 3" in m.notes[0]
    assert D.training_hours(r) == pytest.approx(24 / H)  # the log is ahead of run.json
    # no interruption, run.json just behind: nothing to add, nothing to say
    lines = [{"kind": "train", "epoch": e, "step": 3 * e, "epoch_seconds": 6.0, "img_per_s": 5.0} for e in (1, 2, 3, 4)]
    r = D.load_run(timed_run(tmp_path / "b", lines=lines, batch_size=10, wall=12.0, secs=(6.0,) * 4, info_epoch=2))
    m, _ = D.x_map(r, "hours")
    assert m.end == pytest.approx(24 / H) and m.notes == [] and D.training_hours(r) == pytest.approx(24 / H)


def test_run_without_epoch_seconds_falls_back_to_epochs(tmp_path):
    r = D.load_run(timed_run(tmp_path, drop=("epoch_seconds",)))
    m, why = D.x_map(r, "hours")
    assert m is None and "no epoch_seconds" in why
    s, why2 = D.on_axis(r, "hours")
    assert s is r and why2 == why and s.x_unit == "epoch"
    assert D.training_hours(r) == pytest.approx(210 / H)  # run.json's wall_seconds is still the total
    assert D.points_on_axis(r, "hours", [(3.0, 0.5)]) == [(3.0, 0.5)]


def test_some_epochs_without_epoch_seconds_are_estimated_and_said(tmp_path):
    lines = [{"kind": "train", "epoch": e, "step": 5 * e, **({} if e in (2, 3) else {"epoch_seconds": 10.0})}
             for e in range(1, 6)]
    r = D.load_run(timed_run(tmp_path, lines=lines, secs=(10.0,) * 5, wall=None))
    m, _ = D.x_map(r, "hours")
    assert m(np.arange(1, 6)) == pytest.approx(np.arange(10, 60, 10) / H)
    assert "2 epoch(s) without epoch_seconds" in m.notes[0]


# ---- images seen ---------------------------------------------------------------------------------------
def test_kimg_is_step_times_batch_size(tmp_path):
    r = D.load_run(timed_run(tmp_path, batch_size=16, steps_per_epoch=5))
    s, why = D.on_axis(r, "kimg")
    assert why == "" and s.x_unit == "kimg" and s.notes == []
    assert list(s.train["x"]) == pytest.approx([e * 5 * 16 / 1000 for e in range(1, 7)])
    assert list(s.evals["x"]) == pytest.approx([0.24, 0.48])
    m, _ = D.x_map(r, "kimg")
    assert m.end == pytest.approx(0.48)


def test_kimg_of_translation_runs_counts_source_images_and_says_so(tmp_path):
    r = D.load_run(timed_run(tmp_path, "20250101-000000-cyclegan-a-to-b", kind="translate", batch_size=4))
    assert r.translate
    m, why = D.x_map(r, "kimg")
    assert why == "" and m.end == pytest.approx(6 * 5 * 4 / 1000)
    assert "source domain" in m.notes[0]


def test_kimg_needs_a_batch_size(tmp_path):
    r = D.load_run(timed_run(tmp_path, batch_size=None))
    m, why = D.x_map(r, "kimg")
    assert m is None and "batch_size" in why
    assert D.on_axis(r, "kimg") == (r, why)


# ---- other tools ----------------------------------------------------------------------------------------
def test_stylegan_hours_from_tick_times_and_its_own_kimg(tmp_path):
    d = write_stylegan_run(tmp_path, total_kimg=40, done_kimg=40, snapshot_kimg=20)
    r = D.load_run(d)
    assert r.tool == "stylegan2-ada"
    assert D.on_axis(r, "kimg") == (r, "")  # already kimg
    # the demo logs Timing/sec_per_kimg only: a tick's time is sec_per_kimg x its kimg
    spk = r.column("train", "img_per_s")
    ticks = (1000 / spk.to_numpy()) * np.diff(np.concatenate([[0.0], spk.index.to_numpy()]))
    s, why = D.on_axis(r, "hours")
    assert why == "" and s.x_unit == "hours"
    assert s.train["x"].to_numpy() == pytest.approx(np.cumsum(ticks) / H)
    at20 = list(spk.index).index(20.0)  # snapshots at 0, 20 and 40 kimg, on tick boundaries
    assert list(s.evals["x"]) == pytest.approx([0.0, np.cumsum(ticks)[at20] / H, np.cumsum(ticks)[-1] / H])
    # Timing/sec_per_tick, where logged, is taken as it is (it leaves the snapshot and metric time out)
    lines = [json.loads(x) for x in (d / "stats.jsonl").read_text().splitlines()]
    for rec in lines:
        rec["Timing/sec_per_tick"] = {"num": 1, "mean": 100.0, "std": 0.0}
    (d / "stats.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    m, _ = D.x_map(D.load_run(d), "hours")
    assert m.end == pytest.approx(100 * len(lines) / H)
    assert D.training_hours(D.load_run(d)) == pytest.approx(100 * len(lines) / H)


def test_stylegan_without_timing_and_lightweight_fall_back(tmp_path):
    d = write_stylegan_run(tmp_path, total_kimg=8, done_kimg=8, snapshot_kimg=4)
    lines = [json.loads(x) for x in (d / "stats.jsonl").read_text().splitlines()]
    (d / "stats.jsonl").write_text("".join(json.dumps({k: v for k, v in x.items() if not k.startswith("Timing/")})
                                           + "\n" for x in lines))
    r = D.load_run(d)
    s, why = D.on_axis(r, "hours")
    assert s is r and "sec_per_tick" in why
    lw = D.load_run(write_lightweight_run(tmp_path, steps=3000))
    for axis, words in (("hours", "no training time"), ("kimg", "batch size")):
        s, why = D.on_axis(lw, axis)
        assert s is lw and words in why


# ---- figures --------------------------------------------------------------------------------------------
def test_figures_put_the_chosen_axis_at_the_bottom_and_fallbacks_on_top(tmp_path):
    timed = D.load_run(timed_run(tmp_path))
    old = D.load_run(timed_run(tmp_path, "20250102-000000-wgan_gp-pokemon", drop=("epoch_seconds",)))
    sg = D.load_run(write_stylegan_run(tmp_path / "sg", total_kimg=40, done_kimg=40, snapshot_kimg=20))
    runs = [D.on_axis(r, "hours")[0] for r in (old, timed, sg)]
    colours = P.colour_map(runs)
    fig = P.fid_figure(runs, colours, axis="hours")
    assert fig.layout.xaxis.title.text == "training hours (pokelab, stylegan2-ada)"
    assert fig.layout.xaxis2.title.text == "epoch (pokelab)" and fig.layout.xaxis2.side == "top"
    by_name = {t.name: t for t in fig.data}
    assert by_name[old.label].xaxis == "x2" and list(by_name[old.label].x) == [3.0, 6.0]
    assert by_name[timed.label].xaxis == "x" and by_name[sg.label].xaxis == "x"
    assert list(by_name[timed.label].x) == pytest.approx([60 / H, 210 / H])
    assert "hours %{x:.3f}" in by_name[timed.label].hovertemplate
    # losses follow the run onto the axis
    loss = P.loss_figure(runs, colours, ["loss/D"], axis="hours")
    t = next(t for t in loss.data if t.xaxis == "x" and len(t.x) == 6)
    assert list(t.x) == pytest.approx(list(np.cumsum([10, 20, 30, 40, 50, 60]) / H))
    # the same runs on epochs: as before (pokelab epochs at the bottom, stylegan2-ada kimg on top)
    fig = P.fid_figure([old, timed, sg], colours, axis="epoch")
    assert fig.layout.xaxis.title.text == "epoch (pokelab)" and fig.layout.xaxis2.title.text == "kimg (stylegan2-ada)"
    # images seen: pokelab runs and the stylegan2-ada folder share one kimg axis
    fig = P.fid_figure([D.on_axis(r, "kimg")[0] for r in (old, timed, sg)], colours, axis="kimg")
    assert {t.xaxis for t in fig.data} == {"x"} and fig.layout.xaxis.title.text == "kimg"


def test_grid_points_follow_the_run(tmp_path):
    r = D.load_run(timed_run(tmp_path))
    assert D.points_on_axis(r, "hours", [(3.0, 0.2), (6.0, 0.3), (9.0, 0.4)]) == [
        (pytest.approx(60 / H), 0.2), (pytest.approx(210 / H), 0.3)]  # epoch 9 is beyond the run: left out
    assert D.points_on_axis(r, "epoch", [(3.0, 0.2)]) == [(3.0, 0.2)]

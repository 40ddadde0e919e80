"""The studio on translation runs (run.json "kind": "translate"): loading, grid columns, the input-kept test,
the cycle rule, the per-direction figures, tolerance to malformed runs, the demo run and the page."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines.runs.folder import RunWriter, sample_path
from studio import data as D
from studio import grids as G
from studio import plots as P
from studio.demo import _translation_pairs, make_grid, write_translation_run

TILE = 16
COLUMNS = D.TRANSLATE_COLUMNS


# ---- fixture builders ------------------------------------------------------------------------------
def _art(rng: np.random.Generator, n: int, tile: int = TILE) -> list[np.ndarray]:
    """n clearly different pictures: a coloured rectangle at a random place on white, plus noise."""
    out = []
    for _ in range(n):
        a = np.full((tile, tile, 3), 255, np.uint8)
        y, x = rng.integers(0, tile // 2, 2)
        a[y:y + tile // 2, x:x + tile // 2] = rng.integers(0, 200, 3)
        a = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
        out.append(a)
    return out


def translation_grid(engine: str, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> np.ndarray:
    """A grid as the trainer writes it: one row per input, the engine's columns, 2 px white padding."""
    tiles = []
    for inp, out in zip(inputs, outputs):
        row = {"input": inp, "output": out, "reconstruction": inp, "attention": np.full_like(inp, 128)}
        tiles += [row[c] for c in COLUMNS[engine]]
    return make_grid(tiles, nrow=len(COLUMNS[engine]))


def write_translation(root: Path, run_id: str = "20250401-000000-cyclegan-sprites", *, engine: str = "cyclegan",
                      epochs: int = 20, dataset=None, cycle=None, init_epochs: int = 0, grids: dict | None = None,
                      lpips_content=(0.2, 0.25), status: str = "finished", extra_lines: str = "") -> Path:
    """A translation run written with the run writer: per-direction losses every epoch, evaluations every 10."""
    d = root / run_id
    w = RunWriter(d)
    w.write_info({"run_id": run_id, "engine": engine, "kind": "translate", "status": status,
                  "config": {"image_size": TILE, "batch_size": 1, "epochs": epochs, "sample_every": 5,
                             "eval_every": 10},
                  "dataset": dataset if dataset is not None else [
                      {"name": "sprites", "key": "ka", "count": 40, "size": TILE, "source": "/a"},
                      {"name": "art", "key": "kb", "count": 40, "size": TILE, "source": "/b"}],
                  "epoch": epochs, "wall_seconds": 60.0})
    cycle = cycle or (lambda e: 0.5 / e)
    for e in range(1, epochs + 1):
        rec = {"loss/G": 3.0, "loss/D": 0.25, "acc/D_real": 0.55, "acc/D_fake": 0.5, "lr": 2e-4,
               "img_per_s": 40.0}
        if engine == "cartoongan":
            rec.update({"loss/content": 1.0 / e, "loss/D_edge": 0.2, "init_phase": float(e <= init_epochs)})
        else:
            rec.update({"loss/D_A": 0.2 + e / 1000, "loss/D_B": 0.3 + e / 1000, "loss/G_AB": 0.4, "loss/G_BA": 0.6,
                        "loss/cycle_A": cycle(e), "loss/cycle_B": 2 * cycle(e), "loss/idt_A": 0.1, "loss/idt_B": 0.2})
        if engine == "ugatit":
            rec.update({"loss/cam_G": 0.05, "loss/cam_D": 0.1})
        w.log("train", e, e * 40, **rec)
        if e % 10 == 0:
            k = e // 10 - 1
            ev = {"fid": 200.0 - e, "kid": 0.2, "kid_std": 0.01, "lpips/content": lpips_content[k % len(lpips_content)],
                  "lpips/target": 0.5 - e / 100, "paired_n": 40, "eval_n": 40, "eval_seconds": 3.0}
            if engine != "cartoongan":
                ev["cycle/A"] = 0.05 + e / 1000
            w.log("eval", e, e * 40, **ev)
    if extra_lines:
        with open(d / "metrics.jsonl", "a") as f:
            f.write(extra_lines)
    for e, grid in (grids or {}).items():
        Image.fromarray(grid).save(sample_path(d, e))
    return d


def _load(d: Path) -> D.Run:
    return D.load_run(d, "pokelab", d.parent)


# ---- loading -----------------------------------------------------------------------------------------
def test_translation_run_loads_with_kind_label_layout_and_series(tmp_path):
    r = _load(write_translation(tmp_path))
    assert r.warnings == [] and r.kind == "translate" and r.translate and r.engine == "cyclegan"
    assert r.dataset == "sprites → art"
    assert r.layout.columns == ("input", "output", "reconstruction") and r.layout.nrow == 3 and r.layout.tile == TILE
    row = D.runs_table([r]).iloc[0]
    assert row["kind"] == "translate" and row["dataset"] == "sprites → art" and row["best FID"] == 180.0
    series = D.translation_series(r)
    disc = series["Discriminators: D_B (A→B) vs D_A (B→A)"]
    assert list(disc) == ["D_B (judges A→B)", "D_A (judges B→A)"]  # A→B first: D_B judges G_AB's outputs
    assert disc["D_A (judges B→A)"][5.0] == pytest.approx(0.205) and disc["D_B (judges A→B)"][5.0] == pytest.approx(0.305)
    assert list(series[D.TRANSLATION_PAIRS[3].title]) == ["idt_B (G_AB on B)", "idt_A (G_BA on A)"]
    cyc = series[D.TRANSLATION_PAIRS[2].title]
    assert list(cyc) == ["cycle_A (A→B→A)", "cycle_B (B→A→B)", "eval cycle/A (A→B→A)"]
    assert cyc["cycle_B (B→A→B)"][4.0] == pytest.approx(2 * 0.5 / 4)
    assert list(cyc["eval cycle/A (A→B→A)"].index) == [10.0, 20.0]
    assert list(series[D.TRANSLATION_PAIRS[1].title]) == ["G_AB (A→B)", "G_BA (B→A)"]
    assert r.column("evals", "lpips/target")[20.0] == pytest.approx(0.3)
    # loss keys: the per-direction ones are among them (the page moves them to their own figures)
    assert D.pair_keys() <= set(D.loss_keys([r]))


def test_generation_run_is_not_a_translation_run(tmp_path):
    d = tmp_path / "20250401-000000-dcgan-pokemon"
    RunWriter(d).write_info({"engine": "dcgan", "kind": "generate", "status": "finished",
                             "dataset": {"name": "pokemon"}, "config": {"image_size": TILE, "epochs": 1}})
    r = _load(d)
    assert r.kind == "generate" and not r.layout.columns and r.dataset == "pokemon"
    assert [v["topic"] for v in D.verdict(r)] == ["FID", "collapse", "D balance"]


@pytest.mark.parametrize("dataset,label,warned", [
    ([{"name": "sprites"}], "sprites → ?", True),
    ([{"name": "sprites"}, None], "sprites → ?", True),
    ([{"name": "sprites"}, {"count": 3}], "sprites → ?", True),
    ([], "? → ?", True),
    ({"name": "sprites"}, "sprites", True),
    ("just text", "just text", True),
    ([{"name": "a"}, {"key": "kb"}], "a → kb", False),
])
def test_malformed_dataset_lists_load_with_warnings(tmp_path, dataset, label, warned):
    r = _load(write_translation(tmp_path, dataset=dataset, epochs=10))
    assert r.dataset == label and r.status == "finished" and len(r.train) == 10
    assert any("lists two datasets" in w for w in r.warnings) == warned
    D.verdict(r)  # never raises


def test_metrics_lines_with_strings_load_with_warnings(tmp_path):
    extra = ('{"kind": "train", "epoch": 21, "step": 1, "loss/cycle_A": "0.1", "loss/cycle_B": "oops", '
             '"loss/D_A": [1, 2], "acc/D_real": "high"}\n'
             '{"kind": "eval", "epoch": 30, "step": 1, "lpips/content": "n/a", "cycle/A": null, "fid": "bad"}\n'
             '{"kind": "train", "epoch": "twenty-two", "loss/G": 1}\n')
    r = _load(write_translation(tmp_path, epochs=20, extra_lines=extra))
    joined = " | ".join(r.warnings)
    assert "1 non-numeric value(s) of 'loss/cycle_B' ignored" in joined
    assert "'loss/D_A' ignored" in joined and "'acc/D_real' ignored" in joined
    assert "'lpips/content' ignored" in joined and "'fid' ignored" in joined
    assert "without a usable 'epoch'" in joined
    assert r.column("train", "loss/cycle_A")[21.0] == pytest.approx(0.1)  # a number written as text is read
    assert 21.0 not in r.column("train", "loss/cycle_B").index
    assert D.best_fid(r) == (180.0, 20.0)
    figs = [P.translation_figure([r], P.colour_map([r]), pair) for pair in D.translation_pairs([r])]
    assert len(figs) == 4 and all(f.data for f in figs)
    assert {v["topic"] for v in D.verdict(r)} >= {"cycle", "LPIPS", "input kept"}


def test_unreadable_run_json_of_a_translation_engine(tmp_path):
    d = tmp_path / "20250401-000000-ugatit-bw-sprites-96-to-dreamworld-256"  # <engine>-<source>-to-<target>
    d.mkdir()
    (d / "run.json").write_text('{"engine": "ugatit", "kind": "transl')
    (d / "metrics.jsonl").write_text(json.dumps({"kind": "train", "epoch": 1, "loss/cycle_A": 0.3}) + "\n")
    r = _load(d)
    assert r.status == "broken" and r.engine == "ugatit" and r.kind == "translate"  # from the run id
    assert r.layout.columns == COLUMNS["ugatit"]
    assert any("malformed JSON" in w for w in r.warnings)


def test_unknown_kind_and_unknown_translation_engine(tmp_path):
    d = tmp_path / "20250401-000000-munit-x"  # an engine pokelab does not have (pix2pix is known since it has)
    RunWriter(d).write_info({"engine": "munit", "kind": "translate", "status": "running",
                             "dataset": [{"name": "a"}, {"name": "b"}], "config": {"image_size": TILE}})
    r = _load(d)
    assert r.translate and r.layout.columns == () and r.layout.nrow is None
    assert any("not known to the studio" in n for n in r.notes)
    RunWriter(d).write_info({"engine": "dcgan", "kind": "dream", "status": "finished", "dataset": {"name": "a"}})
    r = _load(d)
    assert r.kind == "generate" and any("unknown kind 'dream'" in w for w in r.warnings)


# ---- grids -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["cyclegan", "ugatit", "cartoongan"])
@pytest.mark.parametrize("known_tile", [True, False])
def test_grid_layout_splits_translation_columns(engine, known_tile):
    rng = np.random.default_rng(3)
    inputs, outputs = _art(rng, 8), _art(rng, 8)
    grid = translation_grid(engine, inputs, outputs)
    ncol = len(COLUMNS[engine])
    assert grid.shape == (8 * (TILE + 2) + 2, ncol * (TILE + 2) + 2, 3)
    layout = D.GridLayout(tile=TILE if known_tile else None, nrow=ncol, columns=COLUMNS[engine])
    assert G.detect_layout(grid, layout) == (TILE, TILE, 8, ncol)
    cols = G.split_columns(grid, layout)
    assert list(cols) == list(COLUMNS[engine])
    assert np.array_equal(cols["input"], np.stack(inputs)) and np.array_equal(cols["output"], np.stack(outputs))
    if "attention" in cols:  # a plain tile is kept (split_grid would drop it as an empty slot)
        assert cols["attention"].shape == (8, TILE, TILE, 3) and (cols["attention"] == 128).all()
    assert G.split_grid(grid, layout).shape[0] == 8 * ncol - (8 if engine == "ugatit" else 0)


def test_split_columns_refuses_a_grid_of_another_engine():
    rng = np.random.default_rng(4)
    grid = translation_grid("ugatit", _art(rng, 8), _art(rng, 8))
    with pytest.raises(G.GridError, match=r"4 columns of 16 px tiles; expected 3 \(input \| output \| reconstruction\)"):
        G.split_columns(grid, D.GridLayout(tile=TILE, nrow=3, columns=COLUMNS["cyclegan"]))
    with pytest.raises(G.GridError, match="columns are unknown"):
        G.split_columns(grid, D.GridLayout(tile=TILE))


def test_permutation_pvalue_exact_and_sampled():
    assert G.permutation_pvalue(np.eye(3)) == pytest.approx(1 / 6)     # only the identity reaches the diagonal
    assert G.permutation_pvalue(np.eye(8)) == pytest.approx(1 / 40320)
    assert G.permutation_pvalue(np.ones((8, 8))) == 1.0                 # all pairings tie: no evidence
    m = np.eye(4)
    m[0, 1] = m[1, 0] = 1.0  # swapping rows 0 and 1 scores as high as the identity: 2 of 24 pairings
    assert G.permutation_pvalue(m) == pytest.approx(2 / 24)
    assert G.permutation_pvalue(np.eye(10), draws=999) == pytest.approx(1 / 1000)  # sampled: (1 + 0) / (1 + 999)
    with pytest.raises(ValueError):
        G.permutation_pvalue(np.ones((2, 3)))


def _grid_run(tmp_path, outputs_of, name):
    rng = np.random.default_rng(5)
    inputs = _art(rng, 8)
    d = write_translation(tmp_path, f"20250401-000000-cyclegan-{name}",
                          grids={20: translation_grid("cyclegan", inputs, outputs_of(inputs, rng))})
    return _load(d), inputs


def _check(r, tmp_path):
    x, p = r.samples[-1]
    return {**G.translation_check(p, [tmp_path], r.layout), "x": x}


def test_outputs_like_their_inputs_are_not_flagged(tmp_path):
    # an output that looks like its input (here: a lightly noised copy) is what translation should keep
    def near_copy(inputs, rng):
        return [np.clip(a.astype(int) + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8) for a in inputs]
    r, inputs = _grid_run(tmp_path, near_copy, "kept")
    check = _check(r, tmp_path)
    assert check["rows"] == 8 and check["p"] == pytest.approx(1 / 40320) and check["matched"] > check["mismatched"]
    v = {x["topic"]: x for x in D.verdict(r, check)}
    assert "collapse" not in v and v["input kept"]["level"] == "ok"
    assert v["input kept"]["text"].startswith("outputs follow their inputs (epoch 20 grid)")
    # diversity from the grid: among the outputs only, not among inputs/outputs/reconstructions
    div = G.grid_diversity(r.samples[-1][1], [tmp_path], r.layout)
    assert div["tiles"] == 8 and div["ssim"] < 0.5
    whole = G.mean_pairwise_ssim(G.split_grid(np.asarray(Image.open(r.samples[-1][1]).convert("RGB")),
                                              D.GridLayout(tile=TILE)))
    assert whole > div["ssim"] + 0.05  # all tiles together: the copies make the grid look "collapsed"
    assert div["ssim_inputs"] == pytest.approx(G.mean_pairwise_ssim(np.stack(inputs)))


def test_outputs_ignoring_their_inputs_are_flagged(tmp_path):
    r, _ = _grid_run(tmp_path, lambda inputs, rng: [inputs[0]] * 8, "collapsed")  # one picture for everything
    check = _check(r, tmp_path)
    assert check["p"] == 1.0 and check["matched"] == pytest.approx(check["mismatched"])
    v = {x["topic"]: x for x in D.verdict(r, check)}
    assert v["input kept"]["level"] == "warn" and "may ignore its input" in v["input kept"]["text"]
    assert G.grid_diversity(r.samples[-1][1], [tmp_path], r.layout)["ssim"] == pytest.approx(1.0)


def test_input_kept_not_checked_reasons(tmp_path):
    r = _load(write_translation(tmp_path))
    assert {x["topic"]: x for x in D.verdict(r)}["input kept"]["text"] == "not checked (no sample grid)"
    v = {x["topic"]: x for x in D.verdict(r, {"error": "epoch_000020.png: not a readable image"})}
    assert v["input kept"]["level"] == "info" and "not a readable image" in v["input kept"]["text"]
    few = {"rows": 3.0, "matched": 0.9, "mismatched": 0.1, "p": 1 / 6, "x": 5.0}
    assert "too few rows" in {x["topic"]: x for x in D.verdict(r, few)}["input kept"]["text"]


# ---- cycle rule ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cycle,state,level", [
    (lambda e: 0.5 / e + 0.05, "falling", "ok"),
    (lambda e: 0.3 + 0.001 * e, "not falling", "warn"),
    (lambda e: 0.6 / e + (0.004 * (e - 30) if e > 30 else 0.0), "rising again", "warn"),
])
def test_cycle_rule(tmp_path, cycle, state, level):
    r = _load(write_translation(tmp_path, epochs=60, cycle=cycle))
    t = D.cycle_trend(r, "loss/cycle_A")
    assert t["state"] == state and t["k"] == 6  # 10% of 60 points
    assert t["early"] == pytest.approx(np.mean([cycle(e) for e in range(1, 7)]))
    assert t["late"] == pytest.approx(np.mean([cycle(e) for e in range(55, 61)]))
    v = {x["topic"]: x for x in D.verdict(r)}["cycle"]
    assert v["level"] == level and state in v["text"] and "eval cycle/A 0.11 at epoch 60" in v["text"]


def test_cycle_rule_needs_two_windows(tmp_path):
    r = _load(write_translation(tmp_path, epochs=8))
    assert D.cycle_trend(r, "loss/cycle_A") == {"key": "loss/cycle_A", "points": 8, "state": "too short"}
    assert {x["topic"]: x for x in D.verdict(r)}["cycle"]["level"] == "info"


def test_cartoongan_init_phase_and_no_cycle(tmp_path):
    r = _load(write_translation(tmp_path, "20250401-000000-cartoongan-photos", engine="cartoongan", epochs=12,
                                init_epochs=3))
    assert r.layout.columns == ("input", "output")
    assert D.init_phase_end(r) == 4.0
    assert {"x": 4.0, "event": "init_done"}.items() <= r.events[-1].items()
    topics = [v["topic"] for v in D.verdict(r)]
    assert "cycle" not in topics and "LPIPS" in topics
    assert D.translation_pairs([r]) == [] and D.translation_series(r) == {}
    fig = P.loss_figure([r], P.colour_map([r]))
    assert {t.name for t in fig.data} == {"G", "D", "content", "D_edge"}
    assert any(a.text == "init phase over" for a in fig.layout.annotations)


# ---- plots -------------------------------------------------------------------------------------------
def test_per_direction_figures(tmp_path):
    a = _load(write_translation(tmp_path, "20250401-000000-cyclegan-a"))
    b = _load(write_translation(tmp_path, "20250402-000000-ugatit-b", engine="ugatit", cycle=lambda e: 0.2))
    colours = P.colour_map([a, b])
    pairs = D.translation_pairs([a, b])
    assert [p.title for p in pairs] == [p.title for p in D.TRANSLATION_PAIRS]
    fig = P.translation_figure([a, b], colours, pairs[0])
    assert fig.layout.title.text == "Discriminators: D_B (A→B) vs D_A (B→A)"
    assert [(t.name, t.line.dash, t.line.color) for t in fig.data] == [
        ("D_B (judges A→B)", "solid", colours[a.key]), ("D_A (judges B→A)", "dash", colours[a.key]),
        ("D_B (judges A→B)", "solid", colours[b.key]), ("D_A (judges B→A)", "dash", colours[b.key])]
    assert list(fig.data[0].y[:2]) == pytest.approx([0.301, 0.302]) and list(fig.data[0].x[:2]) == [1.0, 2.0]
    assert list(fig.data[1].y[:2]) == pytest.approx([0.201, 0.202])
    cyc = P.translation_figure([a, b], colours, pairs[2])
    names = [t.name for t in cyc.data]
    assert names == ["cycle_A (A→B→A)", "cycle_B (B→A→B)", "eval cycle/A (A→B→A)"] * 2
    ev = cyc.data[2]
    assert ev.mode == "lines+markers" and ev.line.dash == "dot" and list(ev.x) == [10.0, 20.0]
    assert list(ev.y) == pytest.approx([0.06, 0.07])
    assert list(cyc.data[4].y[:3]) == pytest.approx([0.4, 0.4, 0.4])  # b's cycle_B = 2 x 0.2
    # smoothing: a faint raw trace under each smoothed train curve; eval series are never smoothed
    sm = P.translation_figure([a], colours, pairs[2], smoothing=0.5)
    assert [t.name for t in sm.data] == [f"{a.label} · cycle_A (A→B→A) (raw)", "cycle_A (A→B→A)",
                                         f"{a.label} · cycle_B (B→A→B) (raw)", "cycle_B (B→A→B)",
                                         "eval cycle/A (A→B→A)"]
    assert list(sm.data[4].y) == pytest.approx([0.06, 0.07])
    # translation eval metrics over epochs, one line per run
    for key, title in D.TRANSLATION_EVALS:
        f = P.scalar_figure([a, b], colours, key, "evals", title=title)
        assert f.layout.title.text == title and [t.name for t in f.data] == [a.label, b.label]
        assert f.data[0].mode == "lines+markers" and list(f.data[0].x) == [10.0, 20.0]
    f = P.scalar_figure([a, b], colours, "lpips/content", "evals")
    assert list(f.data[0].y) == pytest.approx([0.2, 0.25])


def test_generation_figures_keep_their_traces(tmp_path):
    # the shared curves helper must leave the existing figures as they were
    r = _load(write_translation(tmp_path))
    colours = P.colour_map([r])
    dacc = P.dacc_figure([r], colours, smoothing=0.5)
    assert [(t.name, t.line.dash) for t in dacc.data] == [("real", "solid"), ("fake", "dash")]
    assert dacc.layout.yaxis.range == (-0.02, 1.02)
    loss = P.loss_figure([r], colours, ["loss/D", "loss/G"])
    assert [(t.name, t.line.dash) for t in loss.data] == [("D", "solid"), ("G", "dash")]


def test_diversity_figure_draws_the_inputs_reference(tmp_path):
    r = _load(write_translation(tmp_path))
    fig = P.diversity_figure([r], P.colour_map([r]), {r.key: [(5.0, 0.3), (10.0, 0.4)]},
                             {r.key: [(5.0, 0.2), (10.0, 0.2)]})
    ref = next(t for t in fig.data if t.name == "grid SSIM of the inputs")
    assert list(ref.y) == [0.2, 0.2] and ref.line.dash == "longdash"


# ---- demo --------------------------------------------------------------------------------------------
def test_demo_translation_run(tmp_path):
    rng = np.random.default_rng(7)
    art = _art(rng, 8, tile=24)
    pairs = _translation_pairs(art, [], None, 24)  # inputs: the art pixelated (no source folder)
    assert np.array_equal(pairs[0][1], art[0]) and not np.array_equal(pairs[0][0], art[0])
    d = write_translation_run(tmp_path, epochs_planned=40, epochs_done=40, tile=24, pairs=pairs)
    r = _load(d)
    assert r.warnings == [] and r.kind == "translate" and r.dataset == "bw-sprites-96 → dreamworld-256"
    assert [x for x, _ in r.samples] == [float(e) for e in range(5, 41, 5)]
    assert {"loss/D_A", "loss/D_B", "loss/G_AB", "loss/G_BA", "loss/cycle_A", "loss/cycle_B", "loss/idt_A",
            "loss/idt_B", "acc/D_real", "acc/D_fake", "lr", "img_per_s"} <= set(r.train.columns)
    assert {"fid", "kid", "kid_std", "lpips/content", "lpips/target", "paired_n", "cycle/A", "eval_n"} <= set(r.evals.columns)
    assert D.cycle_trend(r, "loss/cycle_A")["state"] == "falling"
    cols = G.split_columns(np.asarray(Image.open(r.samples[-1][1]).convert("RGB")), r.layout)
    assert np.array_equal(cols["input"], np.stack([i for i, _ in pairs]))
    assert G.translation_check(r.samples[-1][1], [tmp_path], r.layout)["p"] < D.CORRESPONDENCE_ALPHA
    v = {x["topic"]: x["level"] for x in D.verdict(r)}
    assert v["cycle"] == "ok" and v["D balance"] == "ok"


# ---- the page ----------------------------------------------------------------------------------------
def _decode(v):
    if isinstance(v, dict) and "bdata" in v and "dtype" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return (a.reshape([int(x) for x in str(v["shape"]).split(",")]) if "shape" in v else a).tolist()
    if isinstance(v, dict):
        return {k: _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def _figures(at) -> dict[str, dict]:
    return {el.proto.id.rsplit("-", 1)[-1]: _decode(json.loads(el.proto.spec)) for el in at.get("plotly_chart")}


def _title(fig: dict) -> str:
    return fig["layout"]["title"]["text"]


def test_page_with_a_translation_run(tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parents[1] / "studio" / "streamlit_app.py")
    rng = np.random.default_rng(8)
    inputs = _art(rng, 8)
    grid = translation_grid("cyclegan", inputs, [np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8) for a in inputs])
    tr = write_translation(tmp_path, "20250402-000000-cyclegan-sprites", grids={10: grid, 20: grid})
    d = tmp_path / "20250401-000000-dcgan-pokemon"
    w = RunWriter(d)
    w.write_info({"engine": "dcgan", "kind": "generate", "status": "finished", "dataset": {"name": "pokemon"},
                  "config": {"image_size": TILE, "epochs": 2}, "epoch": 2})
    for e in (1, 2):
        w.log("train", e, e, **{"loss/D": 1.0, "loss/G": 2.0, "acc/D_real": 0.5, "acc/D_fake": 0.5})
    monkeypatch.setenv("POKELAB_STUDIO_RUNS", str(tmp_path))
    monkeypatch.setenv("POKELAB_STUDIO_NO_DEFAULTS", "1")
    at = AppTest.from_file(app, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]

    # Runs: the kind column, and the translation run's details with its verdict
    table = next(x.value for x in at.dataframe if "completion" in x.value.columns).set_index("run")
    assert table.loc[tr.name, "kind"] == "translate" and table.loc[tr.name, "dataset"] == "sprites → art"
    assert table.loc[d.name, "kind"] == "generate"
    assert at.selectbox(key="detail_run").value == str(tr)  # newest first
    text = " ".join(m.value for m in at.markdown)
    assert "engine **cyclegan** (translate)" in text
    assert "**input kept** — outputs follow their inputs (epoch 20 grid)" in text
    assert "**cycle** — cycle_A" in text and "**LPIPS** — input↔output 0.250" in text

    # Trends: the per-direction figures and the translation metrics, for the translation run only
    at.sidebar.radio(key="view").set_value("Trends").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(s.value == "Translation" for s in at.subheader)
    assert str(tr) in at.multiselect(key="trend_runs_w").value
    assert not D.pair_keys() & set(at.multiselect(key="loss_keys").value)  # they have their own figures
    figs = _figures(at)
    titles = {k: _title(f) for k, f in figs.items() if k.startswith("fig_tr_")}
    assert titles == {"fig_tr_0": "Discriminators: D_B (A→B) vs D_A (B→A) — EMA 0.60",
                      "fig_tr_1": "Generators (adversarial): A→B vs B→A — EMA 0.60",
                      "fig_tr_2": "Cycle consistency (round-trip L1) — EMA 0.60",
                      "fig_tr_3": "Identity (L1): G_AB on B vs G_BA on A — EMA 0.60",
                      "fig_tr_lpips_content": D.TRANSLATION_EVALS[0][1],
                      "fig_tr_lpips_target": D.TRANSLATION_EVALS[1][1]}
    ev = next(t for t in figs["fig_tr_2"]["data"] if t["name"] == "eval cycle/A (A→B→A)")
    assert ev["x"] == [10.0, 20.0] and ev["y"] == pytest.approx([0.06, 0.07])
    lp = figs["fig_tr_lpips_content"]["data"]
    assert [t["name"] for t in lp] == [tr.name] and lp[0]["y"] == [0.2, 0.25]
    # the diversity estimate is offered for the translation run (on its output column)
    at.button(key="div_from_trends").click().run()
    assert not at.exception
    assert [x for x, _ in at.session_state["computed_div"][str(tr)]] == [10.0, 20.0]
    assert str(tr) in at.session_state["computed_div_ref"]

    # Samples: the columns and the input-kept test under the grid
    at.sidebar.radio(key="view").set_value("Samples").run()
    assert not at.exception
    caps = " ".join(c.value for c in at.caption)
    assert "Columns: input | output | reconstruction." in caps and "p = 2.5e-05" in caps
    assert "measured on the **output** column only" in caps

    # Compare: the translation figures again, next to the generation run
    at.sidebar.radio(key="view").set_value("Compare").run()
    at.multiselect(key="cmp_runs").set_value([str(tr), str(d)]).run()
    assert not at.exception
    figs = _figures(at)
    assert _title(figs["cmp_tr_0"]).startswith("Discriminators: D_B (A→B) vs D_A (B→A)")
    assert [t["name"] for t in figs["cmp_tr_lpips_target"]["data"]] == [tr.name]
    assert "kind" in next(x.value for x in at.dataframe if "best FID at" in x.value.index).index


# ---- the engines' own output (imports torch here, in the test only) ----------------------------------------
def test_studio_reads_what_the_translation_engines_write(tmp_path):
    """The contract end to end: a tiny CycleGAN run written by the real trainer, and the real U-GAT-IT and
    CartoonGAN grids, read by the studio (columns, per-direction series, the input-kept test)."""
    torch = pytest.importorskip("torch")
    import types

    from engines.config import TrainConfig
    from engines.data.images import save_grid
    from engines.registry import get_engine
    from engines.trainer import Trainer

    def dom(seed, name):
        g = torch.Generator().manual_seed(seed)
        return types.SimpleNamespace(images=torch.randint(0, 256, (8, 3, 32, 32), generator=g, dtype=torch.uint8),
                                     key=f"key-{name}", name=name, source="/nowhere", skipped=[], background="white",
                                     files=[f"{i + 1}.png" for i in range(8)])
    a, b = dom(0, "sprites"), dom(1, "art")
    cfg = TrainConfig.for_engine(get_engine("cyclegan"))
    cfg.image_size, cfg.epochs, cfg.eval_every, cfg.sample_every, cfg.batch_size = 32, 2, 0, 1, 4
    cfg.engine = {"ngf": 8, "ndf": 8, "n_blocks": 1}
    t = Trainer("cyclegan", (a, b), tmp_path / "runs", cfg, progress=False)
    t.fit()
    r = D.load_run(t.run_dir, "pokelab", tmp_path)
    assert r.warnings == [] and r.kind == "translate" and r.engine == "cyclegan" and r.dataset == "sprites → art"
    assert [p.title for p in D.translation_pairs([r])] == [p.title for p in D.TRANSLATION_PAIRS]
    assert all(len(s) == 2 for pair in D.translation_series(r).values() for s in pair.values())
    assert [x for x, _ in r.samples] == [1.0, 2.0]
    cols = G.split_columns(np.asarray(Image.open(r.samples[-1][1]).convert("RGB")), r.layout)
    assert np.array_equal(cols["input"], a.images.permute(0, 2, 3, 1).numpy())  # the first 8 source pictures
    check = G.translation_check(r.samples[-1][1], [tmp_path], r.layout)
    assert check["rows"] == 8 and 0 < check["p"] <= 1
    assert {v["topic"] for v in D.verdict(r, check)} == {"FID", "input kept", "D balance", "cycle"}

    x = a.images
    for name, conf in (("ugatit", {"ngf": 8, "ndf": 8, "n_res": 1}), ("cartoongan", {"ngf": 8, "ndf": 8, "n_blocks": 1})):
        e = get_engine(name)(conf, 32, training=False)
        grid = e.sample_grid(x)
        p = save_grid(grid["images"], tmp_path / name / "epoch_000005.png", nrow=grid["nrow"])
        cols = G.split_columns(np.asarray(Image.open(p).convert("RGB")), D.GridLayout(tile=32, columns=COLUMNS[name]))
        assert list(cols) == list(COLUMNS[name]) and all(c.shape == (8, 32, 32, 3) for c in cols.values())
        assert np.array_equal(cols["input"], x.permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("baseline, level, phrase", [(0.35, "ok", "closer to the true targets"),
                                                     (0.25, "warn", "no closer to the true targets")])
def test_lpips_to_target_is_judged_against_the_untranslated_inputs(tmp_path, baseline, level, phrase):
    line = json.dumps({"kind": "eval", "epoch": 21, "step": 1, "lpips/content": 0.2, "lpips/target": 0.3,
                       "lpips/target_input": baseline, "paired_n": 40}) + "\n"
    r = _load(write_translation(tmp_path, epochs=20, extra_lines=line))
    (v,) = [v for v in D.verdict(r) if v["topic"] == "LPIPS"]
    assert v["level"] == level and phrase in v["text"] and f"untranslated inputs score {baseline:.3f}" in v["text"]


@pytest.mark.parametrize("fid_input, level", [(250.0, "ok"), (120.0, "warn")])
def test_fid_is_judged_against_the_untranslated_inputs(tmp_path, fid_input, level):
    line = json.dumps({"kind": "eval", "epoch": 21, "step": 1, "fid": 150.0, "fid_input": fid_input}) + "\n"
    r = _load(write_translation(tmp_path, epochs=20, extra_lines=line))
    (v,) = [v for v in D.verdict(r) if v["topic"] == "vs. doing nothing"]
    assert v["level"] == level and f"untranslated inputs {fid_input:.1f}" in v["text"]
    assert ("look less like the target set" in v["text"]) == (level == "warn")

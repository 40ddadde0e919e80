"""pokelab studio - judge training runs and review results (Streamlit page code only).

    streamlit run studio                                  # the shipped checkpoints/ and ./runs
    streamlit run studio -- --runs DIR [DIR ...] --review-db runs/review.sqlite [--lock-roots]

Data loading and statistics live in plain modules (studio.data, studio.grids, studio.plots,
studio.review_stats); this file lays them out. It never imports torch or the training code.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # `streamlit run studio` puts studio/ (not the repo) on sys.path
    sys.path.insert(0, str(_REPO))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
from streamlit.errors import StreamlitAPIException  # noqa: E402

from engines import review as RV  # noqa: E402
from studio import agreement as AG  # noqa: E402
from studio import data as D  # noqa: E402
from studio import grids as G  # noqa: E402
from studio import paths as PA  # noqa: E402
from studio import per_label as PL  # noqa: E402
from studio import plots as P  # noqa: E402
from studio import review_stats as RS  # noqa: E402
from studio import sweeps as SW  # noqa: E402

VIEWS = ("Runs", "Trends", "Samples", "Compare", "Sweeps", "Review")
# plain symbols rather than emoji: they render in any font (emoji fonts are often missing on servers)
STATUS_ICON = {"finished": "✓", "running": "●", "running?": "?", "failed": "✗", "interrupted": "‖",
               "broken": "⚠", "unreadable": "⚠", "stopped": "■", "unknown": "·"}
LEVEL_ICON = {"ok": ":green[✓]", "warn": ":orange[⚠]", "info": ":gray[ℹ]"}


# ---- configuration ---------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="streamlit run studio --", add_help=False)
    ap.add_argument("--runs", nargs="+", action="extend", default=[], help="run folders (roots) to read")
    ap.add_argument("--review-db", default=None,
                    help="review database (default: $POKELAB_REVIEW_DB, else the repository's runs/review.sqlite, "
                         "as the app)")
    ap.add_argument("--lock-roots", action="store_true", help="hide the sidebar field that adds folders")
    ap.add_argument("--refresh", type=float, default=10.0, help="auto-refresh period in seconds")
    ap.add_argument("--no-defaults", action="store_true", help="do not add checkpoints/ and ./runs")
    args, _ = ap.parse_known_args(argv)  # unknown arguments (a test runner's) are ignored
    env_runs = os.environ.get("POKELAB_STUDIO_RUNS")
    if env_runs:
        args.runs += [p for p in env_runs.split(os.pathsep) if p]
    args.review_db = args.review_db or os.environ.get("POKELAB_REVIEW_DB")
    args.no_defaults = args.no_defaults or os.environ.get("POKELAB_STUDIO_NO_DEFAULTS") == "1"
    return args


def init_state(args: argparse.Namespace) -> None:
    ss = st.session_state
    if "roots_text" not in ss:
        roots = PA.parse_roots(args.runs) + ([] if args.no_defaults else PA.default_roots())
        seen: list[Path] = []
        for r in roots:
            if r not in seen:
                seen.append(r)
        ss.roots_text = "\n".join(str(r) for r in seen)
        ss.cli_roots = [str(r) for r in PA.parse_roots(args.runs)]
    if "review_db" not in ss:
        ss.review_db = str(default_review_db(args.review_db))
        # the folder of the database given (or of the default one) may be read besides the roots
        ss.cli_review_dir = str(Path(ss.review_db).parent)
    ss.setdefault("computed_div", {})
    ss.setdefault("computed_div_ref", {})  # translation runs: SSIM among the grid's inputs (reference)
    ss.setdefault("gif", {})


def default_review_db(given: str | None = None) -> Path:
    """The review database: ``--review-db``, else $POKELAB_REVIEW_DB (relative paths from the working directory),
    else the repository's ``runs/review.sqlite`` — the file the app writes by default (app.appconfig's
    DEFAULT_REVIEW_DB), wherever the studio is started from."""
    p = given or os.environ.get("POKELAB_REVIEW_DB")
    return Path(p).expanduser().resolve() if p else (_REPO / RV.DEFAULT_PATH).resolve()


# ---- cached loading ----------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=2000)
def _cached_run(path: str, tool: str, root: str, sig: tuple) -> D.Run:
    return D.load_run(path, tool, root)


def load_all(roots: list[Path]) -> list[D.Run]:
    """Every run under the roots; each is re-read only when its files changed (signature)."""
    found = D.discover(roots)
    labels = D.unique_labels([p for p, _, _ in found])
    now = time.time()
    out = []
    for p, tool, root in found:
        r = _cached_run(str(p), tool, str(root), D.signature(p, tool))
        r.label = labels[p]
        out.append(D.refresh_status(r, now))
    return D.sort_runs(out)


@st.cache_data(show_spinner=False, max_entries=5000)
def _cached_diversity(path: str, roots: tuple[str, ...], mtime: float, layout: D.GridLayout) -> dict:
    return G.grid_diversity(path, roots, layout)


@st.cache_data(show_spinner=False, max_entries=5000)
def _cached_translation_check(path: str, roots: tuple[str, ...], mtime: float, layout: D.GridLayout) -> dict:
    return G.translation_check(path, roots, layout)


@st.cache_data(show_spinner=False, max_entries=50)
def _cached_gif(frames: tuple[tuple[str, str], ...], roots: tuple[str, ...], mtimes: tuple, fps: float,
                max_side: int) -> tuple[bytes, list[str]]:
    return G.timeline_gif(list(frames), roots, fps=fps, max_side=max_side)


@st.cache_data(show_spinner=False, max_entries=20)
def _cached_reviews(path: str, mtime: float, size: int) -> list[dict]:
    return RV.load(path)


@st.cache_data(show_spinner="Bootstrapping Kendall's τ…", max_entries=20)
def _cached_agreement(path: str, mtime: float, size: int, metrics: pd.DataFrame, questions: tuple[str, ...],
                      n_boot: int) -> pd.DataFrame:
    return AG.all_questions(_cached_reviews(path, mtime, size), metrics, list(questions), n_boot=n_boot)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


# ---- small helpers ------------------------------------------------------------------------------------
def _image(data, caption: str, width) -> None:
    """st.image with an int or "stretch" width (older Streamlit: use_container_width instead)."""
    try:
        st.image(data, caption=caption, width=width)
    except (TypeError, ValueError, StreamlitAPIException):
        if width == "stretch":
            st.image(data, caption=caption, use_container_width=True)
        else:
            st.image(data, caption=caption, width=int(width))


def _dataframe(df, **kw) -> None:
    """st.dataframe; the ``placeholder`` for missing values is dropped on Streamlit versions without it."""
    try:
        st.dataframe(df, **kw)
    except TypeError:
        kw.pop("placeholder", None)
        st.dataframe(df, **kw)


#: the runs table's columns, in order: the judging columns (best FID and what it compares with) come first, so
#: they are on screen at any window width (tests/test_studio_honesty.py)
RUNS_COLUMNS = ["run", "engine", "kind", "best FID", "best FID at", "size", "eval n", "collapse", "status", "progress",
                "completion", "last KID", "best/", "dataset", "img/s", "wall time", "samples", "warnings"]
#: fixed pixel widths. The run id is pinned (it stays while the table scrolls sideways; a longer id ends in "…", the
#: whole id is in Run details). At a 1500 px window the table is about 1040 px wide (sidebar ~300 px, page
#: padding), so the columns up to "collapse" must fit in RUNS_TABLE_BUDGET
RUNS_WIDTHS = {"run": 400, "engine": 110, "kind": 80, "best FID": 80, "best FID at": 90, "size": 60, "eval n": 70,
               "collapse": 90, "status": 110, "progress": 130, "completion": 90}
RUNS_TABLE_BUDGET = 1000


def collapse_text(v) -> str:
    """The runs table's collapse cell: the latest evaluation's flag."""
    return "" if v is None or v != v else ("⚠ yes" if v else "no")


def runs_column_config() -> dict:
    w = RUNS_WIDTHS
    cfg = {
        "run": st.column_config.TextColumn("run", width=w["run"], help="run id (the whole id is in Run details)"),
        "engine": st.column_config.TextColumn("engine", width=w["engine"]),
        "kind": st.column_config.TextColumn("kind", width=w["kind"]),
        "best FID": st.column_config.NumberColumn("best FID", format="%.2f", width=w["best FID"],
                                                  help="lowest FID logged; compare only within one kind, size and "
                                                       "eval n"),
        "best FID at": st.column_config.NumberColumn("best FID at", format="%g", width=w["best FID at"]),
        "size": st.column_config.NumberColumn("size", format="%d px", width=w["size"], help="training image size"),
        "eval n": st.column_config.NumberColumn("eval n", format="%d", width=w["eval n"],
                                                help="samples in the evaluation that gave the best FID"),
        "collapse": st.column_config.TextColumn("collapse", width=w["collapse"],
                                                help="mode collapse flagged at the latest evaluation that measured it "
                                                     "(MS-SSIM of samples above the real images'); blank: not "
                                                     "measured (translation runs: the input-kept verdict)"),
        "status": st.column_config.TextColumn("status", width=w["status"]),
        "progress": st.column_config.TextColumn("progress", width=w["progress"]),
        "last KID": st.column_config.NumberColumn(format="%.4f"),
        "best/": st.column_config.TextColumn("best/", help="the run's best/ export (the evaluation lowest in its "
                                             "best_metric): where it is from and its score (samples); measured on "
                                             "its own when `pokelab eval RUN/best --log` has run"),
        "img/s": st.column_config.NumberColumn(format="%.0f"),
        "completion": st.column_config.ProgressColumn("done", min_value=0.0, max_value=1.0, format="percent",
                                                      width=w["completion"]),
        "warnings": st.column_config.NumberColumn("⚠", help="problems found while reading the run", width="small"),
        "samples": st.column_config.NumberColumn("grids", width="small"),
    }
    try:  # pinned columns: Streamlit >= 1.42
        cfg["run"] = st.column_config.TextColumn("run", width=w["run"], help=cfg["run"]["help"], pinned=True)
    except TypeError:
        pass
    return cfg


def run_label(runs_by_key: dict[str, D.Run]):
    return lambda k: runs_by_key[k].label if k in runs_by_key else k


def show_image(run: D.Run, path: Path, roots: list[Path], caption: str, max_width: int | None = None) -> bool:
    """A sample grid, read only after the roots check; a warning (not a crash) when unreadable.
    ``max_width``: show at most this wide (small grids are not blown up to the page width)."""
    try:
        data = PA.read_bytes_inside(path, roots)
        im = G.load_image(path, roots)  # validates the image (a half-written PNG raises here)
    except (OSError, ValueError) as e:
        st.warning(f"{run.label}: cannot show {path.name}: {e}")
        return False
    if max_width:  # small grids shown at twice their size at most, never wider than max_width
        _image(data, caption, int(min(max_width, 2 * im.width if im.width < 320 else im.width)))
    else:
        _image(data, caption, "stretch")
    return True


def unit_note(runs: list[D.Run]) -> None:
    tools = P.unit_tools(runs)
    if len(tools) > 1:
        st.caption("x axes: " + ", ".join(f"**{P.UNIT_TITLE.get(u, u)}** for {', '.join(t)} runs"
                                          for u, t in tools.items())
                   + " — each unit has its own axis (bottom / top); the scales are not comparable.")


AXIS_HELP = ("epochs: each run's own unit (epochs; kimg for stylegan2-ada folders, steps for lightweight-gan). "
             "Training hours: the training wall clock, evaluation excluded (the cumulative epoch_seconds). "
             "Images seen: step × batch size / 1000. Runs that did not log what an axis needs stay on their own "
             "unit, along the top.")
AXIS_CAPTION = {
    "hours": "x: **training hours** — each epoch's training time (`epoch_seconds`) summed, so evaluation, sample "
             "grids and checkpoints are left out; stylegan2-ada folders: their tick times (`Timing/sec_per_tick`). "
             "Equal hours are equal compute only on the same hardware.",
    "kimg": "x: **images seen** (kimg) — step × batch size / 1000, the training images drawn (translation runs: "
            "source images; each step draws as many target images too); stylegan2-ada folders: their own kimg.",
}


def x_axis_choice(key: str, container=None) -> str:
    """The x axis of the trend figures: "epoch", "hours" or "kimg" (studio.data.X_AXES)."""
    return (container or st).radio("x axis", list(D.X_AXES), format_func=D.X_AXES.get, horizontal=True, key=key,
                                   help=AXIS_HELP)


def runs_on_axis(chosen: list[D.Run], axis: str) -> list[D.Run]:
    """The chosen runs put on the x axis (studio.data.on_axis); what the axis is, which runs stay on their own
    unit and why, and how a run's time was made up, as captions."""
    shown, lines = [], []
    for r in chosen:
        s, why = D.on_axis(r, axis)
        shown.append(s)
        if why:
            lines.append(f"⚠ **{r.label}** stays on its own x axis ({P.UNIT_TITLE.get(r.x_unit, r.x_unit)}, "
                         f"drawn along the top): {why}.")
        elif s is not r:
            lines += [f"{r.label}: {n}." for n in s.notes[len(r.notes):]]
    if axis in AXIS_CAPTION:
        st.caption(AXIS_CAPTION[axis])
    for line in lines:
        st.caption(line)
    return shown


def loss_scale_choice(key: str, container=None) -> str:
    """The y scale of the loss figures (studio.plots.LOSS_SCALES)."""
    return (container or st).radio(
        "Loss scale", list(P.LOSS_SCALES), format_func=P.LOSS_SCALES.get, horizontal=True, key=key,
        help="As logged; a log axis (values ≤ 0 cannot be drawn there); or each run's curve divided by its own "
             "median |value|, so a run whose losses sit at 2500 does not flatten the others (the hover shows the "
             "logged value).")


def loss_scale_hint(runs: list[D.Run], keys: list[str], yscale: str) -> None:
    """A caption when the runs' losses differ so much in size that the linear scale flattens some of them."""
    spread, big = P.loss_spread(runs, keys)
    if yscale == "linear" and big is not None and spread >= P.LOSS_SPREAD_HINT:
        st.caption(f"⚠ The runs' losses differ in size by about {spread:,.0f}× (largest: **{big.label}**): on this "
                   "scale the others look flat — pick **per run** or **log scale** above.")


FID_HELP = ("FID and KID are drawn in one panel per **kind · image size · samples per evaluation** ({n} panels): FID "
            "is biased upwards with fewer samples (by an amount that depends on the set) and changes with the image "
            "size, and a translation run's FID scores its outputs against the target set, not generated samples — "
            "values from different panels are not comparable. KID is unbiased in the sample count but still depends "
            "on the kind and the size, so it is split the same way.")


def fid_kid_panels(shown: list[D.Run], colours: dict[str, str], axis: str, fid_key: str, kid_key: str) -> None:
    """FID and KID side by side, one row per FidGroup (studio.data.fid_panels); keys ``fid_key``, ``kid_key`` for
    the first group, then ``_2``, ``_3``, ... A caption says why there are several."""
    panels = D.fid_panels(shown)
    if len(panels) > 1:
        st.caption(FID_HELP.format(n=len(panels)))
        counts: dict[str, list[str]] = {}
        for g, rs in panels:
            for r in rs:
                counts.setdefault(r.key, []).append(f"{g.n:,}" if g.n else "unknown")
        for r in shown:
            if len(counts.get(r.key, [])) > 1:
                st.caption(f"⚠ **{r.label}** was evaluated with several sample counts ({', '.join(counts[r.key])}): "
                           "each panel shows its evaluations with that count.")
    for i, (g, rs) in enumerate(panels or [(None, shown)]):
        sfx = "" if i == 0 else f"_{i + 1}"
        tail = f" — {g.label}" if g is not None else ""
        a, b = st.columns(2)
        with a:
            st.plotly_chart(P.fid_figure(rs, colours, axis=axis, title="FID (lower is better)" + tail),
                            key=fid_key + sfx)
        with b:
            st.plotly_chart(P.kid_figure(rs, colours, axis=axis,
                                         title="KID (lower is better; band: 95% interval, else ± 1 std)" + tail),
                            key=kid_key + sfx)
    if any(r.column("evals", k) is not None for r in shown for k in ("fid_lo", "kid_lo")):
        st.caption("Bands: 95% intervals from resampling the generated images (how far FID or KID would move with "
                   "another draw of as many images; runs logged before the intervals existed: KID ± 1 std over its "
                   "subsets). Overlapping bands: the runs are not told apart at this sample count.")
    quality_panels(shown, colours, axis, fid_key)


def quality_panels(shown: list[D.Run], colours: dict[str, str], axis: str, prefix: str) -> None:
    """FID∞, precision/recall and density/coverage (studio.plots.QUALITY_FIGURES), two per row, for the runs that
    logged them (keys ``{prefix}_q_<name>``)."""
    figs = list(P.quality_figures(shown, colours, axis=axis).items())
    if not figs:
        return
    st.caption("FID∞ extrapolates FID to infinitely many samples, so it compares runs evaluated with different "
               "sample counts (same real set and image size). Precision: share of samples on the real images' "
               "manifold (fidelity); recall: share of real images the samples reach (diversity); density and "
               "coverage: their versions robust to outliers. docs/metrics.md says when to read which.")
    for k in range(0, len(figs), 2):
        cols = st.columns(2)
        for col, (name, fig) in zip(cols, figs[k:k + 2]):
            col.plotly_chart(fig, key=f"{prefix}_q_{name}")


def grid_check(run: D.Run, roots: list[Path], sample: tuple[float, Path] | None = None) -> dict | None:
    """The input-kept test (studio.grids.translation_check) of a translation run's latest grid, or of
    ``sample``; {"error": why} when the grid cannot be used; None for other runs or without grids."""
    if not run.translate or not (sample or run.samples):
        return None
    x, p = sample or run.samples[-1]
    try:
        res = dict(_cached_translation_check(str(p), tuple(str(r) for r in roots), _mtime(p), run.layout))
    except (OSError, ValueError) as e:
        return {"error": f"{p.name}: {e}", "x": x}
    res["x"] = x
    return res


def verdict_block(run: D.Run, roots: list[Path]) -> None:
    for v in D.verdict(run, grid_check(run, roots)):
        st.markdown(f"{LEVEL_ICON[v['level']]} **{v['topic']}** — {v['text']}")


def translation_section(chosen: list[D.Run], colours: dict[str, str], smoothing: float, prefix: str,
                        axis: str | None = None, yscale: str = "linear") -> None:
    """Per-direction losses, cycle consistency and the translation eval metrics of the chosen translation runs
    (nothing when none is one). Figures two by two, keys ``{prefix}_tr_<n>`` and ``{prefix}_tr_<metric>``."""
    runs = [r for r in chosen if r.translate]
    if not runs:
        return
    st.subheader("Translation")
    st.caption("Per direction: solid = A→B (G_AB, D_B judging its outputs, cycle_A: A→B→A, idt_B: G_AB on B "
               "pictures), dashed = B→A (G_BA, D_A, cycle_B, idt_A); eval series dotted with markers. "
               "LPIPS input ↔ output: lower = more of the input kept (it rises as the style changes more); "
               "LPIPS output ↔ target only when both sets share file ids.")
    figs = [(f"{prefix}_tr_{i}", P.translation_figure(runs, colours, pair, smoothing, axis=axis, yscale=yscale))
            for i, pair in enumerate(D.translation_pairs(runs))]
    figs += [(f"{prefix}_tr_{key.replace('/', '_')}", P.scalar_figure(runs, colours, key, "evals", title=title,
                                                                       axis=axis))
             for key, title in D.TRANSLATION_EVALS if any(r.column("evals", key) is not None for r in runs)]
    for k in range(0, len(figs), 2):
        cols = st.columns(2)
        for col, (key, fig) in zip(cols, figs[k:k + 2]):
            col.plotly_chart(fig, key=key)
    if not figs:
        st.info("The translation runs logged no per-direction losses or translation metrics yet.")


# ---- views ---------------------------------------------------------------------------------------------
def per_label_section(run: D.Run) -> None:
    """Conditional runs: per-label KID (intra-FID where measured) over the evaluations, and label consistency."""
    if not PL.has_per_label(run):
        return
    st.markdown("**Per label** — samples asked for each label against the real images of that label")
    metrics = [m for m in PL.METRICS if PL.labels_of(run, m)]
    if metrics:
        metric = st.radio("Per-label metric", metrics, format_func=lambda m: PL.METRICS[m][1], horizontal=True,
                          key="per_label_metric") if len(metrics) > 1 else metrics[0]
        table = PL.per_label_table(run, metric)
        st.plotly_chart(PL.heatmap(table, run, metric), key="fig_per_label")
        _dataframe(PL.table_for_display(table, run), key="per_label_table")
        st.caption("Blank cells: too few real or generated images of the label in that evaluation (docs/metrics.md).")
    cons = PL.consistency(run).dropna(subset=["label_consistency"])
    if len(cons):
        last = cons.iloc[-1]
        ceiling = last["label_consistency/real"]
        real = f" (the real images themselves: {ceiling:.0%})" if ceiling == ceiling else ""  # NaN: not logged
        st.caption(f"Label consistency at {run.x_unit} {D.fmt_x(last['x'])}: "
                   f"{last['label_consistency']:.0%} of samples are nearest (Inception features) to the real images "
                   f"of a label they were asked for{real}.")


def view_runs(roots: list[Path]) -> None:
    runs = load_all(roots)
    if not runs:
        st.info("No runs found in the configured folders. Train one with `pokelab train ...`, add a folder in "
                "the sidebar, or write demo runs with `python -m studio.demo DIR`.")
        return
    table = D.runs_table(runs)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Runs", len(runs))
    c2.metric("Running", int((table["status"].isin(["running", "running?"])).sum()))
    c3.metric("Finished", int((table["status"] == "finished").sum()))
    c4.metric("With problems", int((table["warnings"] > 0).sum()))
    shown = table.copy()
    shown["status"] = [f"{STATUS_ICON.get(s, '·')} {s}" for s in shown["status"]]
    shown["completion"] = [(d / p if (d == d and p == p and p) else None) for d, p in zip(table["done"], table["planned"])]
    shown["collapse"] = [collapse_text(v) for v in table["collapse"]]
    groups = list(dict.fromkeys(table["FID group"][table["best FID"].notna()]))
    if len(groups) > 1:
        pick = st.selectbox("Runs", ["all runs"] + groups, key="runs_group",
                            format_func=lambda g: g if g == "all runs" else f"only {g} (best FID comparable)",
                            help="Best FID ranks runs only within one kind, image size and samples per evaluation.")
        if pick != "all runs":
            shown = shown[table["FID group"] == pick]
    shown = shown[RUNS_COLUMNS]
    _dataframe(shown, hide_index=True, key="runs_table", placeholder="", column_config=runs_column_config())
    st.caption("Best FID compares runs only within one **kind, image size (size) and samples per evaluation "
               "(eval n)** — the FID of fewer samples is biased upwards" +
               (": pick a group above to rank them. " if len(groups) > 1 else ". ") +
               "Collapse: the latest evaluation's mode-collapse flag (blank: not measured). "
               "Progress in epochs for pokelab runs, kimg for stylegan2-ada, steps for lightweight-gan. "
               "img/s: mean of the last 10 logged values. ⚠: problems found while reading the run (listed below).")

    problems = [r for r in runs if r.warnings]
    if problems:
        st.subheader("Problems")
        for r in problems:
            for w in r.warnings:
                st.warning(f"**{r.label}** — {w}")
    notes = [(r, n) for r in runs for n in r.notes]
    if notes:
        with st.expander(f"Notes ({len(notes)})"):
            for r, n in notes:
                st.caption(f"{r.label}: {n}")

    st.subheader("Run details")
    by_key = {r.key: r for r in runs}
    healthy = [k for k, r in by_key.items() if r.status not in ("broken", "unreadable")]
    key = st.selectbox("Run", list(by_key), index=list(by_key).index(healthy[0]) if healthy else 0,
                       format_func=run_label(by_key), key="detail_run")
    r = by_key[key]
    left, right = st.columns([3, 2])
    with left:
        st.markdown(f"`{r.path}`  \n**{r.tool}** · engine **{r.engine}** ({r.kind}) · dataset **{r.dataset}** · "
                    f"status **{r.status}** · {r.info.get('device', '')}")
        cadence = D.eval_cadence_text(r)
        if cadence:
            st.caption(cadence)
        best = D.best_export_text(r)
        if best:
            st.caption(best)
        verdict_block(r, roots)
        per_label_section(r)
        if r.events:
            st.markdown("**Events**")
            st.dataframe(pd.DataFrame(r.events), hide_index=True)
        log = r.path / "log.txt"
        if log.is_file():
            with st.expander("log.txt (end)"):
                try:
                    st.code(PA.tail_text(log, roots)[-6000:], language=None)
                except (OSError, ValueError) as e:
                    st.warning(f"cannot read log.txt: {e}")
    with right:
        if r.info:
            with st.expander("run.json" if r.tool == "pokelab" else "training options", expanded=False):
                st.json(r.info, expanded=1)
        if r.samples:
            x, p = r.samples[-1]
            show_image(r, p, roots, f"latest samples: {r.x_unit} {D.fmt_x(x)}")


def view_trends(roots: list[Path]) -> None:
    runs = load_all(roots)
    if not runs:
        st.info("No runs found.")
        return
    by_key = {r.key: r for r in runs}
    colours = P.colour_map(runs)
    default = [r.key for r in runs if (len(r.train) or len(r.evals)) and r.status not in ("broken", "unreadable")][:6]
    keep = [k for k in st.session_state.get("trend_runs", default) if k in by_key]
    sel = st.multiselect("Runs", list(by_key), default=keep, format_func=run_label(by_key), key="trend_runs_w")
    st.session_state.trend_runs = sel
    chosen = [by_key[k] for k in sel]
    if not chosen:
        st.info("Pick one or more runs.")
        return
    c1, c2 = st.columns([1, 2])
    smoothing = c1.slider("Smoothing (EMA) of losses and D accuracy", 0.0, 0.99, 0.6, 0.01, key="smoothing",
                          help="Exponential moving average with bias correction; 0 = raw values.")
    keys = D.loss_keys(chosen)
    # translation runs: the per-direction losses have their own figures below; left out of this one by default
    shown_below = D.pair_keys() if any(r.translate for r in chosen) else set()
    loss_sel = c2.multiselect("Losses", keys, default=[k for k in keys if k not in shown_below], key="loss_keys")
    x1, x2 = st.columns([2, 1])
    axis = x_axis_choice("trend_x", x1)
    yscale = loss_scale_choice("loss_scale", x2)
    shown = runs_on_axis(chosen, axis)
    st.markdown(P.colour_key_html(chosen, colours), unsafe_allow_html=True)
    unit_note(shown)
    fid_kid_panels(shown, colours, axis, "fig_fid", "fig_kid")
    loss_scale_hint(shown, loss_sel, yscale)
    a, b = st.columns(2)
    with a:
        st.plotly_chart(P.loss_figure(shown, colours, loss_sel, smoothing, axis=axis, yscale=yscale), key="fig_loss")
    with b:
        st.plotly_chart(P.dacc_figure(shown, colours, smoothing, axis=axis), key="fig_dacc")
    a, b = st.columns(2)
    with a:
        computed, reference = diversity_points(chosen, axis)
        st.plotly_chart(P.diversity_figure(shown, colours, computed, reference, axis=axis), key="fig_div")
        missing = [r for r in chosen if D.collapse_points(r)[1] == "" and r.samples and r.key not in computed
                   and (not r.translate or "output" in r.layout.columns)]
        if missing and st.button(f"Estimate diversity from sample grids for {len(missing)} run(s) without MS-SSIM",
                                 key="div_from_trends"):
            for r in missing:
                compute_diversity(r, roots)
            st.rerun()
    with b:
        others = sorted({c for r in chosen for c in r.train.columns
                         if c not in ("x", "epoch", "step", "time", "wall") and not c.startswith(("loss/", "acc/D_"))
                         and pd.api.types.is_numeric_dtype(r.train[c])})
        if others:
            key = st.selectbox("Other scalar", others, index=others.index("img_per_s") if "img_per_s" in others else 0,
                               key="other_scalar")
            st.plotly_chart(P.scalar_figure(shown, colours, key, axis=axis), key="fig_other")
    translation_section(shown, colours, smoothing, "fig", axis, yscale)


def diversity_points(chosen: list[D.Run], axis: str) -> tuple[dict, dict]:
    """The grid-diversity estimates computed so far for the chosen runs (by their own x), put on the x axis."""
    ss = st.session_state
    by_key = {r.key: r for r in chosen}
    computed = {k: D.points_on_axis(by_key[k], axis, v) for k, v in ss.computed_div.items() if k in by_key}
    reference = {k: D.points_on_axis(by_key[k], axis, v) for k, v in ss.computed_div_ref.items() if k in by_key}
    return computed, reference


def compute_diversity(run: D.Run, roots: list[Path], max_grids: int = 12) -> list[tuple[float, float]]:
    """Mean pairwise SSIM of the tiles of up to ``max_grids`` grids (evenly spread), cached per file; for
    translation runs among the output tiles, with the inputs' figure kept as a reference."""
    pts, ref, errors = [], [], []
    picks = G.spread(run.samples, max_grids)
    bar = st.progress(0.0, text=f"{run.label}: SSIM among tiles")
    for i, (x, p) in enumerate(picks):
        try:
            res = _cached_diversity(str(p), tuple(str(r) for r in roots), _mtime(p), run.layout)
            pts.append((x, res["ssim"]))
            if "ssim_inputs" in res:
                ref.append((x, res["ssim_inputs"]))
        except (OSError, ValueError) as e:
            errors.append(f"{p.name}: {e}")
        bar.progress((i + 1) / len(picks), text=f"{run.label}: SSIM among tiles ({i + 1}/{len(picks)})")
    bar.empty()
    for e in errors[:5]:
        st.warning(f"{run.label}: {e}")
    if pts:
        st.session_state.computed_div[run.key] = pts
    if ref:
        st.session_state.computed_div_ref[run.key] = ref
    return pts


def view_samples(roots: list[Path]) -> None:
    runs = [r for r in load_all(roots) if r.samples]
    if not runs:
        st.info("No run with sample grids yet.")
        return
    by_key = {r.key: r for r in runs}
    c1, c2 = st.columns(2)
    # default: the finished run with the most grids (the most to look at)
    best = max(by_key.values(), key=lambda r: (r.status == "finished", len(r.samples)))
    ka = c1.selectbox("Run", list(by_key), index=list(by_key).index(best.key),
                      format_func=run_label(by_key), key="sample_run")
    ra = by_key[ka]
    xs = [x for x, _ in ra.samples]
    x = st.select_slider(f"{ra.x_unit}", options=xs, value=xs[-1], format_func=D.fmt_x, key=f"sample_x::{ka}")
    others = [k for k in by_key if k != ka]
    kb = c2.selectbox("Side by side with", [None] + others,
                      format_func=lambda k: "—" if k is None else by_key[k].label, key="sample_run_b")
    cols = st.columns(2) if kb else [st.container()]
    _, pa = next(s for s in ra.samples if s[0] == x)
    with cols[0]:
        show_image(ra, pa, roots, f"{ra.label} — {ra.x_unit} {D.fmt_x(x)}", max_width=640)
        translation_grid_note(ra, (x, pa), roots)
    if kb:
        rb = by_key[kb]
        if rb.x_unit == ra.x_unit:
            xb, pb = D.nearest_sample(rb, x)
            how = f"nearest {rb.x_unit}" if xb != x else f"same {rb.x_unit}"
        else:  # different units: match the same fraction of each run's sampled range
            frac = x / max(xs[-1], 1e-9)
            xb, pb = D.nearest_sample(rb, frac * rb.samples[-1][0])
            how = f"same fraction ({frac:.0%}) of the run"
        with cols[1]:
            show_image(rb, pb, roots, f"{rb.label} — {rb.x_unit} {D.fmt_x(xb)} ({how})", max_width=640)
            translation_grid_note(rb, (xb, pb), roots)

    st.subheader("Timeline GIF")
    g1, g2, g3 = st.columns(3)
    fps = g1.slider("frames per second", 1, 12, 4, key="gif_fps")
    max_frames = g2.slider("at most frames", 5, 200, 60, key="gif_frames")
    side = g3.select_slider("size (px)", [256, 384, 512, 768], value=512, key="gif_side")
    if st.button("Build GIF", key="gif_build"):
        picks = G.spread(ra.samples, max_frames)
        frames = tuple((f"{ra.x_unit} {D.fmt_x(xx)}", str(pp)) for xx, pp in picks)
        try:
            with st.spinner("building the GIF"):
                gif, skipped = _cached_gif(frames, tuple(str(r) for r in roots),
                                           tuple(_mtime(Path(p)) for _, p in frames), float(fps), int(side))
            st.session_state.gif = {"key": ka, "bytes": gif, "skipped": skipped, "n": len(frames)}
        except (OSError, ValueError) as e:
            st.warning(f"{ra.label}: no GIF: {e}")
    gif = st.session_state.gif
    if gif.get("key") == ka:
        for s in gif["skipped"]:
            st.warning(f"{ra.label}: left out of the GIF: {s}")
        st.image(gif["bytes"], caption=f"{ra.label}: {gif['n']} grids", width=min(side, 512))
        st.download_button("Download GIF", gif["bytes"], file_name=f"{ra.path.name}-timeline.gif",
                           mime="image/gif", key="gif_download")

    st.subheader("Diversity from the grids")
    st.caption("Mean pairwise SSIM among the tiles of each saved grid (single-scale SSIM, an approximation of "
               "the MS-SSIM the trainer logs; higher = samples look more alike). Computed on demand and cached.")
    if ra.translate:
        if "output" not in ra.layout.columns:
            st.info(f"Not computed: the columns of this translation grid (engine {ra.engine!r}) are unknown, so its "
                    "output column cannot be told from its inputs and reconstructions — and similarity between "
                    "those says nothing about diversity.")
            return
        st.caption("Translation grid: measured on the **output** column only (inputs and reconstructions look like "
                   "the outputs by design); the inputs' own figure is drawn as a reference (long dash).")
    n = st.slider("grids to measure", 2, 40, 12, key="div_grids")
    if st.button("Compute", key="div_compute"):
        compute_diversity(ra, roots, n)
    pts = st.session_state.computed_div.get(ka)
    if pts:
        colours = P.colour_map(runs)
        ref = st.session_state.computed_div_ref.get(ka)
        st.plotly_chart(P.diversity_figure([ra], colours, {ka: pts}, {ka: ref} if ref else None),
                        key="fig_div_samples")


def translation_grid_note(run: D.Run, sample: tuple[float, Path], roots: list[Path]) -> None:
    """Under a translation grid: what its columns are and the input-kept test on it."""
    if not run.translate:
        return
    cols = " | ".join(run.layout.columns) if run.layout.columns else "unknown columns"
    res = grid_check(run, roots, sample)
    if res is None or res.get("error"):
        st.caption(f"Columns: {cols}." + (f" Input-kept test not possible: {res['error']}" if res else ""))
        return
    st.caption(f"Columns: {cols}. Outputs vs their own input: SSIM {res['matched']:.3f}; vs the other inputs "
               f"{res['mismatched']:.3f}; permutation test over {res['rows']:.0f} rows p = {res['p']:.2g} "
               f"(small: the outputs follow their inputs).")


def view_compare(roots: list[Path]) -> None:
    runs = load_all(roots)
    if not runs:
        st.info("No runs found.")
        return
    by_key = {r.key: r for r in runs}
    # best FID ranks runs only within a kind, image size and sample count: the default is the three best of the
    # largest such group, and the page says so
    ranking = D.fid_ranking(runs)
    default = [r.key for r in (ranking[0][1] if ranking else runs)[:3]]
    sel = st.multiselect("Runs to compare", list(by_key), default=default, format_func=run_label(by_key),
                         key="cmp_runs")
    if ranking:
        st.caption(f"Default: the three best by FID among **{ranking[0][0].label}** runs (the largest group) — best "
                   f"FID ranks runs only within one kind, image size and sample count.")
    chosen = [by_key[k] for k in sel]
    if not chosen:
        st.info("Pick runs to compare.")
        return
    table = D.runs_table(chosen).set_index("run")
    rows = ["tool", "engine", "kind", "dataset", "status", "progress", "best FID", "best FID at", "size", "eval n",
            "collapse", "last KID", "img/s", "wall time", "warnings"]
    # FID∞ and precision/recall/density/coverage: rows only when some chosen run logged them
    rows[rows.index("last KID") + 1:rows.index("last KID") + 1] = [
        f"last {label}" for _, label in D.QUALITY_KEYS if table[f"last {label}"].notna().any()]
    shown = table[rows].T.astype(object)
    for c in shown.columns:
        for rname, fmt in (("best FID", "{:.2f}"), ("last KID", "{:.4f}"), ("img/s", "{:.0f}"), ("best FID at", "{:g}"),
                           ("size", "{:.0f} px"), ("eval n", "{:,.0f}"),
                           *((f"last {label}", "{:.2f}" if key == "fid_inf" else "{:.3f}")
                             for key, label in D.QUALITY_KEYS if f"last {label}" in rows)):
            v = shown.at[rname, c]
            shown.at[rname, c] = "" if v is None or v != v else fmt.format(v)
        shown.at["collapse", c] = collapse_text(shown.at["collapse", c])
    st.dataframe(shown.astype(str), key="cmp_table", height=35 * (len(shown) + 1) + 3)
    groups = list(dict.fromkeys(g for g in table["FID group"][table["best FID"].notna()]))
    if len(groups) > 1:
        st.caption(f"⚠ These runs fall into {len(groups)} groups of kind · image size · samples per evaluation "
                   f"({'; '.join(groups)}): their best FIDs are not comparable across groups (FID is biased upwards "
                   f"with fewer samples and changes with the image size and the kind). The figures below draw one "
                   f"panel per group.")
    cols = st.columns(len(chosen))
    for col, r in zip(cols, chosen):
        with col:
            st.markdown(f"#### {r.label}")
            verdict_block(r, roots)
            if r.samples:
                x, p = r.samples[-1]
                show_image(r, p, roots, f"{r.x_unit} {D.fmt_x(x)}")
    colours = P.colour_map(runs)
    c1, c2, c3 = st.columns([2, 3, 2])
    smoothing = c1.slider("Smoothing (EMA) of losses and D accuracy", 0.0, 0.99, 0.6, 0.01, key="cmp_smoothing")
    axis = x_axis_choice("cmp_x", c2)
    yscale = loss_scale_choice("cmp_loss_scale", c3)
    shown = runs_on_axis(chosen, axis)
    st.markdown(P.colour_key_html(chosen, colours), unsafe_allow_html=True)
    unit_note(shown)
    fid_kid_panels(shown, colours, axis, "cmp_fid", "cmp_kid")
    loss_scale_hint(shown, D.loss_keys(shown), yscale)
    a, b = st.columns(2)
    a.plotly_chart(P.loss_figure(shown, colours, None, smoothing, axis=axis, yscale=yscale), key="cmp_loss")
    b.plotly_chart(P.dacc_figure(shown, colours, smoothing, axis=axis), key="cmp_dacc")
    computed, reference = diversity_points(chosen, axis)
    st.plotly_chart(P.diversity_figure(shown, colours, computed, reference, axis=axis), key="cmp_div")
    translation_section(shown, colours, smoothing, "cmp", axis, yscale)
    st.caption(f"Verdict rules: FID — best value and where; a rise of more than 10% after the best is flagged, "
               f"and so is a run with mode collapse flagged at its best or latest evaluation (never ✓); translation "
               f"runs: against the untranslated inputs' FID (fid_input), \"baseline unknown\" without it. "
               f"Collapse — the trainer's collapse flag (MS-SSIM of samples above the real images' by more than "
               f"{D.COLLAPSE_MARGIN}). D balance — mean D accuracy over the last 10% of logged points (5 to 50 "
               f"points): flagged when (real + fake)/2 is further than {D.DRIFT_TOL} from 0.5, or real and fake "
               f"differ by more than {D.SPLIT_TOL}. Translation runs: input kept — each output is more like its own "
               f"input than like the grid's other inputs (SSIM permutation test, p < {D.CORRESPONDENCE_ALPHA}); cycle "
               f"— the cycle loss's last-window mean below its first-window mean and at most {D.CYCLE_RISE}× its "
               f"lowest. Details in docs/studio.md.")


def view_review(review_db: str, roots: list[Path], extra_dirs: list[str]) -> None:
    path = Path(review_db).expanduser()
    allowed = [*roots, Path.cwd(), *[Path(d) for d in extra_dirs if d]]
    if not PA.is_inside(path, allowed):
        st.error(f"{path} is outside the folders the studio may read (the run folders, the working directory"
                 f"{' and the folder of the review database it was started with' if extra_dirs else ''}).")
        return
    if not path.exists():
        st.info(f"No review database at `{path}` yet: ratings are written by the app's blind review "
                "(or pass `--review-db PATH`).")
        return
    try:
        st_ = path.stat()
        rows = _cached_reviews(str(path.resolve()), st_.st_mtime, st_.st_size)
    except (RV.ReviewDBError, OSError) as e:
        st.error(f"Cannot read the review database: {e}")
        return
    if not rows:
        st.info("The review database holds no ratings yet.")
        return
    questions = [q for q in RV.QUESTIONS if any(r["question"] == q for r in rows)]
    questions += sorted({r["question"] for r in rows} - set(questions))
    q = st.selectbox("Question", questions, format_func=lambda k: f"{k}: {RV.QUESTIONS.get(k, k)}", key="review_q")
    qrows = RS.for_question(rows, q)
    s = RS.summary(qrows)
    c = st.columns(5)
    c[0].metric("Ratings", s["ratings"])
    c[1].metric("Raters", s["raters"])
    c[2].metric("Sessions", s["sessions"])
    c[3].metric("Ties", s["ties"])
    c[4].metric("Sources", s["sources"])
    if s["self_pairs"]:
        st.caption(f"{s['self_pairs']} rating(s) compared a source with itself: left out of win rates and ranking.")

    method = st.radio("Bradley–Terry intervals", ["fisher", "bootstrap"], horizontal=True, key="bt_ci",
                      format_func=lambda m: {"fisher": "Fisher information", "bootstrap": "bootstrap over ratings (200×)"}[m])
    table, info = RS.rank_sources(qrows, ci=method)
    order = list(table["source"]) if len(table) else None  # strongest first, in the matrix too
    rates, games = RS.win_rate_matrix(qrows, order)
    a, b = st.columns(2)
    with a:
        st.plotly_chart(P.win_rate_heatmap(rates, games), key="fig_winrate")
    with b:
        if len(table):
            st.plotly_chart(P.bt_figure(table), key="fig_bt")
    for n in info["notes"]:
        st.caption(n)
    if len(table):
        shown = table.rename(columns={"theta": "strength", "lo": "95% low", "hi": "95% high"})
        st.dataframe(shown, hide_index=True, key="bt_table",
                     column_config={k: st.column_config.NumberColumn(format="%.3f")
                                    for k in ("strength", "95% low", "95% high", "share", "win rate")})
        st.caption("Strength: Bradley–Terry log-strength, centred on 0; P(A beats B) = 1 / (1 + exp(strength B − "
                   "strength A)). Share: the strengths as shares of 1. Ties count as half a win for each side.")

    st.markdown("**Agreement between raters** (pairs judged by two or more raters)")
    ag = RS.agreement(qrows)
    c = st.columns(4)
    c[0].metric("Repeated pairs", ag["repeated_pairs"])
    c[1].metric("Answers on them", ag["answers"])
    c[2].metric("Percent agreement", "–" if ag["percent"] != ag["percent"] else f"{ag['percent']:.0%}")
    c[3].metric("Fleiss' κ", "–" if ag["kappa"] != ag["kappa"] else f"{ag['kappa']:.2f}")
    st.caption("Percent agreement: share of rater pairs giving the same answer on the same pair of images, "
               "averaged over pairs. Fleiss' κ corrects it for the agreement expected by chance from how often "
               "each answer is given (κ = 1 perfect, 0 chance level). docs/studio.md has the details.")
    review_vs_metrics(rows, qrows, q, questions, roots, (str(path.resolve()), st_.st_mtime, st_.st_size))


def review_vs_metrics(rows: list[dict], qrows: list[dict], q: str, questions: list[str], roots: list[Path],
                      db_key: tuple[str, float, int]) -> None:
    """Each source's Bradley–Terry strength beside its run's latest metrics, and Kendall's τ between the two
    rankings per question and metric (studio.agreement)."""
    st.markdown("**Humans and metrics**: does each metric rank the sources as the raters do?")
    metrics = AG.source_metrics(RS.source_list(rows), load_all(roots), roots)
    scores, _, _ = AG.agreement(qrows, metrics, n_boot=0)
    if len(scores):
        st.dataframe(AG.scores_display(scores), hide_index=True, key="agree_sources",
                     column_config={"human strength": st.column_config.NumberColumn(format="%.3f")})
    n_boot = AG.DEFAULT_BOOT
    taus = _cached_agreement(*db_key, metrics, tuple(questions), n_boot)
    if len(taus):
        st.dataframe(AG.taus_display(taus), hide_index=True, key="agree_taus",
                     column_config={k: st.column_config.NumberColumn(format="%.2f")
                                    for k in ("Kendall τ", "95% low", "95% high", "P(τ > 0)")})
    st.caption(f"Human strength: the Bradley–Terry strength for “{RV.QUESTIONS.get(q, q)}” (the question above); "
               f"metrics: the latest evaluation logged by each source's run (— where it logged none; real art and "
               f"Stable Diffusion have no run). Kendall's τ-b between the raters' ranking and the metric's, "
               f"lower FID/KID and higher precision/recall counted as better: +1 the metric orders the sources as the "
               f"raters do, −1 the reverse, 0 no relation; only sources with both a strength and the metric count. "
               f"95% interval: percentile bootstrap over the ratings ({n_boot} resamples, Bradley–Terry refitted "
               f"each time, seed 0; the metrics are held fixed), P(τ > 0): the share of resamples with τ > 0. With "
               f"few sources τ takes few values and the interval is wide (the note says so). docs/studio.md.")


def view_sweeps(roots: list[Path]) -> None:
    """Runs grouped by tag (``pokelab sweep``): the grid as a table of final FID/KID/collapse, and each run's
    curves (studio.sweeps)."""
    runs = load_all(roots)
    tags = SW.tags(runs)
    if not tags:
        st.info("No tagged runs. `pokelab sweep GRID.toml` (or `pokelab train --tag TAG`) makes them; docs/sweeps.md.")
        return
    tag = st.selectbox("Sweep (tag)", tags, key="sweep_tag")
    chosen = SW.group(runs, tag)
    table = SW.table(chosen)
    table["collapse"] = [collapse_text(v) for v in table["collapse"]]
    _dataframe(table, hide_index=True, key="sweep_table", column_config={
        "final FID": st.column_config.NumberColumn(format="%.2f"), "best FID": st.column_config.NumberColumn(format="%.2f"),
        "final KID": st.column_config.NumberColumn(format="%.4f"), "img/s": st.column_config.NumberColumn(format="%.0f")})
    st.caption("Final: the last evaluation each run logged (its epoch under 'evaluated at'); compare FID only between "
               "runs evaluated at the same image size and sample count. The varied settings are the sweep's.")
    colours = P.colour_map(chosen)
    st.markdown(P.colour_key_html(chosen, colours), unsafe_allow_html=True)
    fid_kid_panels(chosen, colours, "epoch", "sweep_fid", "sweep_kid")
    st.plotly_chart(P.loss_figure(chosen, colours, D.loss_keys(chosen), 0.6), key="sweep_loss")


# ---- page -----------------------------------------------------------------------------------------------
def main() -> None:
    st.set_page_config(page_title="pokelab studio", page_icon="📈", layout="wide")
    args = parse_args(sys.argv[1:])
    init_state(args)
    ss = st.session_state
    with st.sidebar:
        st.title("pokelab studio")
        view = st.radio("View", VIEWS, key="view")
        st.text_area("Run folders (one per line)", key="roots_text", height=110, disabled=args.lock_roots,
                     help="Folders holding runs (pokelab, stylegan2-ada-pytorch, lightweight-gan). "
                          "Only files inside these folders are read.")
        st.text_input("Review database", key="review_db")
        auto = st.toggle("Auto-refresh while runs are running", value=True, key="auto_refresh")
        every = st.number_input("every (seconds)", min_value=2.0, max_value=600.0, value=float(args.refresh),
                                step=1.0, key="refresh_s")
    roots_all = PA.parse_roots(ss.roots_text)
    if args.lock_roots:  # hosted use: only the folders given on the command line
        roots_all = [r for r in roots_all if str(r) in ss.cli_roots or r in PA.default_roots()]
    roots = [r for r in roots_all if r.is_dir()]
    with st.sidebar:
        for r in roots_all:
            if not r.is_dir():
                st.caption(f"⚠️ not a folder: `{r}`")
        if not roots:
            st.caption("No run folder configured.")

    any_running = False
    if auto and view in ("Runs", "Trends", "Compare", "Sweeps"):
        any_running = any(r.status == "running" for r in load_all(roots))
    run_every = float(every) if auto and any_running else None

    if view == "Runs":
        st.fragment(view_runs, run_every=run_every)(roots)
    elif view == "Trends":
        st.fragment(view_trends, run_every=run_every)(roots)
    elif view == "Samples":
        view_samples(roots)
    elif view == "Compare":
        st.fragment(view_compare, run_every=run_every)(roots)
    elif view == "Sweeps":
        st.fragment(view_sweeps, run_every=run_every)(roots)
    else:
        view_review(ss.review_db, roots, [ss.cli_review_dir] if ss.get("cli_review_dir") else [])
    if run_every:
        st.sidebar.caption(f"● running runs refresh every {run_every:g} s")


main()

"""Plotly figures of the studio: pure functions of loaded runs (no Streamlit), so tests can count traces.

x axes: each run is drawn against its ``x_unit`` — its tool's own (pokelab: epochs; stylegan2-ada: kimg;
lightweight-gan: steps) or, for runs put on another axis with ``studio.data.on_axis``, training hours or
kimg. When the runs of a figure are in several units, the first unit is the bottom axis and every other
unit gets its own axis along the top, named after the unit and the tools drawn on it - the scales are not
comparable.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from .data import Pair, Run, collapse_points, ema, loss_keys

PALETTE = qualitative.D3 + qualitative.Dark24  # D3's ten are easy to tell apart
UNIT_ORDER = ("epoch", "hours", "kimg", "step")
UNIT_TOOL = {"epoch": "pokelab", "kimg": "stylegan2-ada", "step": "lightweight-gan"}
#: axis titles per unit (the unit itself where not listed)
UNIT_TITLE = {"hours": "training hours"}
#: how hover labels print x per unit
UNIT_HOVER = {"hours": ":.3f"}
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
EVENT_MARKS = {"nan_rollback": "NaN rollback", "resumed": "resumed", "interrupted": "interrupted",
               "nan_stop": "NaN stop", "error": "error", "init_done": "init phase over"}
#: the y scales of loss figures: as logged, log axis, or each run's curve divided by its own median |value|
#: (so a run whose losses sit at 2500 does not flatten the others)
LOSS_SCALES = {"linear": "as logged", "log": "log scale", "run": "per run (÷ its median)"}
#: runs whose typical loss magnitudes differ by more than this factor: the page suggests another scale
LOSS_SPREAD_HINT = 30.0


class Curve(NamedTuple):
    """One logged series drawn for every run of a figure: colour = run, ``dash`` = which series."""
    frame: str          # "train" or "evals" (eval series: lines with markers, never smoothed)
    key: str
    label: str          # trace name
    dash: str = "solid"
    note: str = ""      # label in the line-style key under the title (default: label)


def colour_map(runs: Iterable[Run]) -> dict[str, str]:
    """A stable colour per run (by its position in the full list), the same in every figure."""
    return {r.key: PALETTE[i % len(PALETTE)] for i, r in enumerate(runs)}


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    if len(h) != 6:
        return hex_colour
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def unit_tools(runs: Iterable[Run]) -> dict[str, list[str]]:
    """The x units of the runs (in axis order) and the tools drawn in each."""
    runs = list(runs)
    units = [u for u in UNIT_ORDER if any(r.x_unit == u for r in runs)]
    units += sorted({r.x_unit for r in runs} - set(units))
    out: dict[str, list[str]] = {}
    for u in units:
        for r in runs:
            if r.x_unit == u and r.tool not in out.setdefault(u, []):
                out[u].append(r.tool)
    return out


def _axes(runs: list[Run], axis: str | None = None) -> tuple[dict[str, str], dict]:
    """Axis id per x unit and the layout entries that define those axes; ``axis`` (the unit chosen on the
    page) is the bottom one when some run is in it (runs that could not be put on it go along the top)."""
    tools = unit_tools(runs)
    units = list(tools) or [axis or "epoch"]
    if axis in units:
        units.remove(axis)
        units.insert(0, axis)
    ids = {u: ("x" if k == 0 else f"x{k + 1}") for k, u in enumerate(units)}
    several = len(units) > 1
    layout: dict = {}
    for k, u in enumerate(units):
        title = UNIT_TITLE.get(u, u) + (f" ({', '.join(tools[u])})" if several and tools.get(u) else "")
        name = "xaxis" if k == 0 else f"xaxis{k + 1}"
        ax = {"title": {"text": title}, "showgrid": k == 0, "zeroline": False}
        if k > 0:
            ax.update(overlaying="x", side="top")
            if k > 1:  # a third unit: a free axis above the second one
                ax.update(anchor="free", position=1.0)
        layout[name] = ax
    if len(units) > 2:  # room between the plot's top (second axis) and the paper's top (third axis)
        layout["yaxis"] = {"domain": [0, 0.74]}
    return ids, layout


def _base(title: str, ytitle: str, runs: list[Run], height: int = 380,
          axis: str | None = None) -> tuple[go.Figure, dict[str, str]]:
    ids, axes = _axes(runs, axis)
    fig = go.Figure()
    top = 40 + 48 * min(1, len(ids) - 1)
    # no plotly legend: runs keep one colour in every figure and the page shows one colour key
    # (colour_key_html); what line styles mean is written under the plot (_style_note)
    fig.update_layout(title={"text": title, "x": 0.01, "xanchor": "left", "y": 1, "yref": "container",
                             "yanchor": "top", "pad": {"t": 12}}, template="plotly_white", height=height,
                      margin={"l": 60, "r": 20, "t": top + 20, "b": 50}, hovermode="closest", showlegend=False,
                      yaxis_title=ytitle, **axes)
    fig.update_xaxes(rangemode="tozero")
    return fig, ids


def _style_note(fig: go.Figure, items: list[tuple[str, str]]) -> None:
    """A one-line key of line styles, e.g. [("solid", "D"), ("dash", "G")], under the title (above the
    top x axis when there is one)."""
    glyph = {"solid": "───", "dash": "– – –", "dot": "·····", "dashdot": "–·–·", "longdash": "—  —",
             "longdashdot": "—·—", "cross": "✕"}
    text = "    ".join(f"{glyph.get(d, d)} {label}" for d, label in items)
    top_axes = sum(1 for k in fig.layout.to_plotly_json() if k.startswith("xaxis") and k != "xaxis")
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0, y=1, xanchor="left", yanchor="bottom",
                       yshift=8 + 48 * min(1, top_axes), showarrow=False, font={"size": 11, "color": "#555"})
    fig.update_layout(margin_t=fig.layout.margin.t + 16)


def colour_key_html(runs: Iterable[Run], colours: dict[str, str]) -> str:
    """The runs' colours as a line of HTML (one key for all figures of a page)."""
    from html import escape

    return " ".join(f'<span style="white-space:nowrap;margin-right:14px"><span style="color:{colours.get(r.key, "#444")};'
                    f'font-size:1.3em">■</span> {escape(r.label)}</span>' for r in runs)


def _xref(ids: dict[str, str], run: Run) -> str:
    return ids.get(run.x_unit, "x")


def _xh(run: Run) -> str:
    """x in a hover label: the unit and the value."""
    return f"{run.x_unit} %{{x{UNIT_HOVER.get(run.x_unit, '')}}}"


def _series(run: Run, frame: str, name: str) -> pd.Series | None:
    return run.column(frame, name)


def empty_note(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font={"size": 14, "color": "#888"})
    return fig


def _band(fig: go.Figure, ids: dict[str, str], run: Run, s: pd.Series, lo: pd.Series, hi: pd.Series, colour: str,
          what: str) -> None:
    """A filled band from ``lo`` to ``hi`` at the points of ``s`` where both are logged (no hover: the line's
    hover says the values)."""
    lo, hi = lo.reindex(s.index), hi.reindex(s.index)
    ok = (lo.notna() & hi.notna()).to_numpy()
    x = s.index.to_numpy()[ok]
    if len(x):
        fig.add_trace(go.Scatter(
            x=np.concatenate([x, x[::-1]]), y=np.concatenate([hi.to_numpy()[ok], lo.to_numpy()[ok][::-1]]),
            fill="toself", fillcolor=_rgba(colour, 0.18), line={"width": 0}, hoverinfo="skip", showlegend=False,
            name=f"{run.label} {what}", xaxis=_xref(ids, run)))


def _interval(run: Run, key: str) -> tuple[pd.Series, pd.Series] | None:
    """The logged 95 % interval of ``key`` (``key_lo``, ``key_hi``; engines.metrics.small_n), if any."""
    lo, hi = _series(run, "evals", f"{key}_lo"), _series(run, "evals", f"{key}_hi")
    return (lo, hi) if lo is not None and hi is not None else None


def fid_figure(runs: list[Run], colours: dict[str, str], metric: str = "fid", title: str = "FID (lower is better)",
               axis: str | None = None) -> go.Figure:
    """One line per run that logged the metric; the best point of each run is drawn larger; a band where the run
    logged the metric's 95 % interval (``fid_lo``/``fid_hi``: band + line = 2 traces)."""
    fig, ids = _base(title, metric.upper() if metric in ("fid", "kid") else metric, runs, axis=axis)
    for r in runs:
        s = _series(r, "evals", metric)
        if s is None:
            continue
        c = colours.get(r.key, "#444")
        ci = _interval(r, metric)
        if ci is not None:
            _band(fig, ids, r, s, *ci, c, "95% interval")
        best = int(np.argmin(s.to_numpy()))
        sizes = np.full(len(s), 6)
        sizes[best] = 13
        fig.add_trace(go.Scatter(
            x=s.index, y=s.to_numpy(), name=r.label, mode="lines+markers", xaxis=_xref(ids, r),
            line={"color": c}, marker={"size": sizes},
            hovertemplate=f"{r.label}<br>{_xh(r)}<br>{metric} %{{y:.3f}}<extra></extra>"))
    if not fig.data:
        empty_note(fig, "no run with FID yet")
    return fig


def kid_figure(runs: list[Run], colours: dict[str, str], axis: str | None = None,
               title: str = "KID (lower is better; band: 95% interval, else ± 1 std over subsets)") -> go.Figure:
    """KID per run, with a band (band + line = 2 traces): the 95 % interval where the run logged ``kid_lo`` /
    ``kid_hi``, else +-1 std over subsets where it logged ``kid_std``."""
    fig, ids = _base(title, "KID", runs, axis=axis)
    for r in runs:
        s = _series(r, "evals", "kid")
        if s is None:
            continue
        c = colours.get(r.key, "#444")
        ci = _interval(r, "kid")
        sd = _series(r, "evals", "kid_std")
        if ci is not None:
            _band(fig, ids, r, s, *ci, c, "95% interval")
        elif sd is not None:
            sd = sd.reindex(s.index)
            _band(fig, ids, r, s, s - sd, s + sd, c, "± std")
        fig.add_trace(go.Scatter(
            x=s.index, y=s.to_numpy(), name=r.label, mode="lines+markers", xaxis=_xref(ids, r),
            line={"color": c}, marker={"size": 5},
            hovertemplate=f"{r.label}<br>{_xh(r)}<br>KID %{{y:.4f}}<extra></extra>"))
    if not fig.data:
        empty_note(fig, "no run with KID yet")
    return fig


#: the evaluation metrics drawn beside FID/KID when some run logged them (engines.metrics.prdc, .small_n): figure
#: key -> (title, y title, [(metric, label, dash)])
QUALITY_FIGURES = {
    "fid_inf": ("FID∞ (lower is better; extrapolated to infinitely many samples: comparable across sample counts)",
                "FID∞", [("fid_inf", "FID∞", "solid")]),
    "pr": ("Precision (fidelity) and recall (diversity), k = 3 (higher is better)", "fraction",
           [("precision", "precision", "solid"), ("recall", "recall", "dash")]),
    "dc": ("Density and coverage, k = 5 (coverage: higher is better; density ~1 for real-like samples)", "value",
           [("density", "density", "solid"), ("coverage", "coverage", "dash")]),
}


def quality_figures(runs: list[Run], colours: dict[str, str], axis: str | None = None) -> dict[str, go.Figure]:
    """The QUALITY_FIGURES some run logged, by key (eval series: lines with markers, colour = run)."""
    out = {}
    for key, (title, ytitle, series) in QUALITY_FIGURES.items():
        if not any(r.column("evals", m) is not None for r in runs for m, _, _ in series):
            continue
        curves = [Curve("evals", m, label, dash) for m, label, dash in series]
        out[key] = curves_figure(runs, colours, curves, title, ytitle, height=340, style_note=len(curves) > 1,
                                 axis=axis)
    return out


def typical_scale(values: np.ndarray) -> float:
    """What a curve is divided by on the "per run" scale: the median of its |values| (robust to spikes); the
    largest |value| where that is 0; 1 for an all-zero curve."""
    a = np.abs(np.asarray(values, dtype=float))
    a = a[np.isfinite(a)]
    if not len(a):
        return 1.0
    med = float(np.median(a))
    return med if med > 0 else (float(a.max()) or 1.0)


def loss_spread(runs: Iterable[Run], keys: list[str]) -> tuple[float, Run | None]:
    """How far apart the runs' typical loss magnitudes are: max / min over runs of the median |value| of their
    chosen ``loss/*`` curves (the largest curve per run), and the run with the largest. (1.0, None) for fewer than
    two runs with losses."""
    per: list[tuple[float, Run]] = []
    for r in runs:
        mags = [typical_scale(s.to_numpy()) for k in keys if (s := _series(r, "train", k)) is not None]
        if mags:
            per.append((max(mags), r))
    if len(per) < 2:
        return 1.0, None
    lo, hi = min(per, key=lambda t: t[0]), max(per, key=lambda t: t[0])
    return (hi[0] / lo[0] if lo[0] > 0 else float("inf")), hi[1]


def curves_figure(runs: list[Run], colours: dict[str, str], curves: list[Curve], title: str, ytitle: str,
                  smoothing: float = 0.0, raw_faint: bool = True, show_events: bool = False, height: int = 380,
                  empty: str = "nothing logged", style_note: bool = True, axis: str | None = None,
                  yscale: str = "linear") -> go.Figure:
    """Several series per run (colour: run, dash: which series). With smoothing > 0 train series are EMA-smoothed
    and, with ``raw_faint``, the raw curve stays as a faint line under the smoothed one (2 traces per curve).
    ``yscale`` (LOSS_SCALES): "linear"; "log" (a log y axis; values <= 0 cannot be drawn there and are left out,
    with a note); "run" (each run's curve divided by its own median |value|, ``typical_scale``; the hover shows
    the logged value too)."""
    if yscale not in LOSS_SCALES:
        raise ValueError(f"unknown y scale {yscale!r} ({', '.join(LOSS_SCALES)})")
    if yscale == "run":
        ytitle = f"{ytitle} ÷ the run's median |{ytitle}|"
    fig, ids = _base(title, ytitle, runs, height=height, axis=axis)
    dropped = 0
    for r in runs:
        c = colours.get(r.key, "#444")
        for cv in curves:
            s = _series(r, cv.frame, cv.key)
            if s is None:
                continue
            raw = s.to_numpy(dtype=float)
            div = typical_scale(raw) if yscale == "run" else 1.0
            smooth = smoothing > 0 and cv.frame == "train"
            shown = ema(raw, smoothing) if smooth else raw
            faint = raw / div
            y = shown / div
            if yscale == "log":
                dropped += int(np.sum(raw <= 0))
                faint = np.where(faint > 0, faint, np.nan)
                y = np.where(y > 0, y, np.nan)
            if smooth and raw_faint:
                fig.add_trace(go.Scatter(x=s.index, y=faint, mode="lines", xaxis=_xref(ids, r),
                                         line={"color": _rgba(c, 0.25), "width": 1, "dash": cv.dash},
                                         legendgroup=r.key, showlegend=False, hoverinfo="skip",
                                         name=f"{r.label} · {cv.label} (raw)"))
            extra = {}
            hover = f"{r.label} · {cv.label}<br>{_xh(r)}<br>%{{y:.4f}}"
            if yscale == "run":
                extra["customdata"] = shown
                hover = (f"{r.label} · {cv.label}<br>{_xh(r)}<br>%{{y:.3f}} × its median |value| {div:.4g}"
                         f"<br>as logged %{{customdata:.4g}}")
            fig.add_trace(go.Scatter(x=s.index, y=y, mode="lines" if cv.frame == "train" else "lines+markers",
                                     name=cv.label, xaxis=_xref(ids, r), **_group(fig, r),
                                     line={"color": c, "dash": cv.dash, "width": 2}, marker={"size": 6},
                                     hovertemplate=hover + "<extra></extra>", **extra))
    if yscale == "log":
        fig.update_yaxes(type="log")
        if dropped:
            fig.add_annotation(text=f"{dropped} value(s) ≤ 0 cannot be drawn on a log scale: left out",
                               xref="paper", yref="paper", x=1, y=0, xanchor="right", yanchor="bottom",
                               showarrow=False, font={"size": 11, "color": "#b45309"})
    if show_events:
        _mark_events(fig, runs, ids, colours)
    if not fig.data:
        empty_note(fig, empty)
    elif style_note:
        _style_note(fig, [(cv.dash, cv.note or cv.label) for cv in curves])
    return fig


def _short(key: str) -> str:
    return key[5:] if key.startswith("loss/") else key


def loss_figure(runs: list[Run], colours: dict[str, str], keys: list[str] | None = None,
                smoothing: float = 0.0, show_events: bool = True, axis: str | None = None,
                yscale: str = "linear") -> go.Figure:
    """Every chosen ``loss/*`` of every run (colour: run, dash: which loss). With smoothing > 0 the raw
    curve stays as a faint line under the smoothed one (2 traces per curve). ``yscale``: LOSS_SCALES."""
    if yscale not in LOSS_SCALES:
        raise ValueError(f"unknown y scale {yscale!r} ({', '.join(LOSS_SCALES)})")
    keys = loss_keys(runs) if keys is None else keys
    parts = [f"EMA smoothing {smoothing:.2f}; raw curves faint"] if smoothing > 0 else []
    if yscale != "linear":
        parts.insert(0, {"log": "log scale", "run": "each run ÷ its median"}[yscale])
    title = "Losses" + (f" ({'; '.join(parts)})" if parts else "")
    curves = [Curve("train", key, _short(key), DASHES[k % len(DASHES)]) for k, key in enumerate(keys)]
    return curves_figure(runs, colours, curves, title, "loss", smoothing, show_events=show_events, height=420,
                         empty="no losses logged", style_note=len(keys) > 1, axis=axis, yscale=yscale)


def translation_figure(runs: list[Run], colours: dict[str, str], pair: Pair, smoothing: float = 0.0,
                       axis: str | None = None, yscale: str = "linear") -> go.Figure:
    """A per-direction pair of a translation run (``studio.data.TRANSLATION_PAIRS``): A→B solid, B→A dashed,
    eval series of the pair dotted with markers."""
    if yscale not in LOSS_SCALES:
        raise ValueError(f"unknown y scale {yscale!r} ({', '.join(LOSS_SCALES)})")
    (ka, la), (kb, lb) = pair.ab, pair.ba
    curves = [Curve("train", ka, la, "solid"), Curve("train", kb, lb, "dash")]
    curves += [Curve("evals", k, label, "dot") for k, label in pair.evals]
    title = pair.title + (f" — EMA {smoothing:.2f}" if smoothing > 0 else "") + \
        {"linear": "", "log": " — log scale", "run": " — each run ÷ its median"}[yscale]
    return curves_figure(runs, colours, curves, title, "loss", smoothing, show_events=True, height=360,
                         empty=f"no run logged {_short(ka)} or {_short(kb)}", axis=axis, yscale=yscale)


def _group(fig: go.Figure, run: Run) -> dict:
    """Legend entries grouped per run: the run's name once, as the group title."""
    first = not any(getattr(t, "legendgroup", None) == run.key and t.legendgrouptitle.text for t in fig.data)
    out = {"legendgroup": run.key}
    if first:
        out["legendgrouptitle_text"] = run.label
    return out


class EventMark(NamedTuple):
    """One vertical line: every marked event of the figure's runs at one x on one x axis."""
    xref: str
    x: float
    label: str          # the distinct event names, "interrupted + resumed", with "×n" where one repeats
    runs: tuple[str, ...]  # keys of the runs with events there
    count: int          # events merged into this line


def event_marks(runs: list[Run], ids: dict[str, str]) -> list[EventMark]:
    """The events worth a line (EVENT_MARKS), merged per distinct x and axis: a resume logs "interrupted" and
    "resumed" at the same epoch, repeated resumes log it again, and several runs may share an epoch — one line
    each, not a pile of overlapping lines and labels. Ordered by axis, then x."""
    merged: dict[tuple[str, float], dict] = {}
    for r in runs:
        for e in r.events:
            name, x = e.get("event"), e.get("x")
            if name not in EVENT_MARKS or x is None or x != x:
                continue
            m = merged.setdefault((_xref(ids, r), float(x)), {"names": {}, "runs": []})
            m["names"][EVENT_MARKS[name]] = m["names"].get(EVENT_MARKS[name], 0) + 1
            if r.key not in m["runs"]:
                m["runs"].append(r.key)
    out = []
    for (xref, x), m in sorted(merged.items()):
        label = " + ".join(n + (f" ×{k}" if k > 1 else "") for n, k in m["names"].items())
        out.append(EventMark(xref, x, label, tuple(m["runs"]), sum(m["names"].values())))
    return out


def _mark_events(fig: go.Figure, runs: list[Run], ids: dict[str, str], colours: dict[str, str],
                 limit: int = 12) -> None:
    """Dotted vertical lines where runs logged a rollback, resume or interruption (shapes, not traces): one per
    distinct x (``event_marks``), in the run's colour (grey where several runs share it); beyond ``limit``
    lines a note says how many were left out (every event is listed in Run details)."""
    marks = event_marks(runs, ids)
    for m in marks[:limit]:
        colour = colours.get(m.runs[0], "#999") if len(m.runs) == 1 else "#888"
        fig.add_vline(x=m.x, line={"color": colour, "dash": "dot", "width": 1}, xref=m.xref,
                      annotation_text=m.label, annotation_textangle=-90,
                      annotation_font={"size": 10, "color": "#666"}, annotation_position="top left")
    if len(marks) > limit:
        fig.add_annotation(text=f"+{len(marks) - limit} more event line(s) not drawn (Run details lists them)",
                           xref="paper", yref="paper", x=1, y=1, xanchor="right", yanchor="top", showarrow=False,
                           font={"size": 10, "color": "#666"})


def dacc_figure(runs: list[Run], colours: dict[str, str], smoothing: float = 0.0,
                axis: str | None = None) -> go.Figure:
    """D accuracy on real (solid) and on fake (dash) per run, with the 0.5 reference line (EMA-smoothed
    when smoothing > 0)."""
    title = "D accuracy (0.5 = D cannot tell real from fake)" + (f", EMA {smoothing:.2f}" if smoothing > 0 else "")
    curves = [Curve("train", "acc/D_real", "real", "solid", "on real"),
              Curve("train", "acc/D_fake", "fake", "dash", "on fake")]
    fig = curves_figure(runs, colours, curves, title, "accuracy", smoothing, raw_faint=False,
                        empty="no D accuracy logged", axis=axis)
    fig.add_hline(y=0.5, line={"color": "#888", "dash": "dot", "width": 1.5},
                  annotation_text="0.5", annotation_position="bottom right")
    fig.update_yaxes(range=[-0.02, 1.02])
    return fig


def diversity_figure(runs: list[Run], colours: dict[str, str],
                     computed: dict[str, list[tuple[float, float]]] | None = None,
                     reference: dict[str, list[tuple[float, float]]] | None = None,
                     axis: str | None = None) -> go.Figure:
    """Mean pairwise MS-SSIM of generated samples (solid) against the real-image level (dotted); red
    crosses where the collapse flag fired. ``computed``: run key -> [(x, SSIM)] estimated from the saved
    grids (dash-dot; single-scale SSIM on tiles, an approximation; for translation runs: on the output
    column). ``reference``: run key -> [(x, SSIM)] of a translation grid's input column (long dash)."""
    fig, ids = _base("Sample similarity (higher = less diverse; MS-SSIM)", "mean pairwise MS-SSIM", runs, axis=axis)
    computed = computed or {}
    reference = reference or {}
    for r in runs:
        c = colours.get(r.key, "#444")
        fake = _series(r, "evals", "ms_ssim/fake")
        real = _series(r, "evals", "ms_ssim/real")
        if fake is not None:
            fig.add_trace(go.Scatter(x=fake.index, y=fake.to_numpy(), mode="lines+markers", name="samples",
                                     **_group(fig, r), xaxis=_xref(ids, r), line={"color": c}, marker={"size": 5}))
        if real is not None:
            fig.add_trace(go.Scatter(x=real.index, y=real.to_numpy(), mode="lines", name="real images",
                                     **_group(fig, r), xaxis=_xref(ids, r), line={"color": c, "dash": "dot"}))
        pts, src = collapse_points(r)
        if pts and fake is not None:
            y = fake.reindex(pts).to_numpy()
            fig.add_trace(go.Scatter(x=pts, y=y, mode="markers", name="collapse flagged",
                                     xaxis=_xref(ids, r), **_group(fig, r),
                                     marker={"symbol": "x", "size": 12, "color": "#d62728", "line": {"width": 1}},
                                     hovertemplate=f"{r.label}: collapse flagged ({src})<br>{_xh(r)}"
                                                   f"<extra></extra>"))
        est = computed.get(r.key)
        if est:
            xs, ys = zip(*est)
            fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="lines+markers", xaxis=_xref(ids, r),
                                     name="grid SSIM (approx.)", **_group(fig, r),
                                     line={"color": c, "dash": "dashdot"}, marker={"symbol": "diamond", "size": 6}))
        ref = reference.get(r.key)
        if ref:
            xs, ys = zip(*ref)
            fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="lines", xaxis=_xref(ids, r),
                                     name="grid SSIM of the inputs", **_group(fig, r),
                                     line={"color": c, "dash": "longdash", "width": 1}))
    if not fig.data:
        empty_note(fig, "no MS-SSIM logged — compute an estimate from the sample grids in Samples")
    else:
        kinds = [("solid", "samples"), ("dot", "real images")]
        if any(t.name == "collapse flagged" for t in fig.data):
            kinds.append(("cross", "collapse flagged"))
        if computed:
            kinds.append(("dashdot", "grid SSIM (approx.)"))
        if reference:
            kinds.append(("longdash", "grid SSIM of the translation inputs"))
        _style_note(fig, kinds)
    return fig


def scalar_figure(runs: list[Run], colours: dict[str, str], key: str, frame: str = "train",
                  smoothing: float = 0.0, title: str | None = None, height: int = 320,
                  axis: str | None = None) -> go.Figure:
    """Any other logged scalar (img/s, augment p, translation eval metrics, ...), one line per run (eval
    series with markers: they are sparse)."""
    fig, ids = _base(title or key, key, runs, height=height, axis=axis)
    for r in runs:
        s = _series(r, frame, key)
        if s is None:
            continue
        y = ema(s.to_numpy(), smoothing) if smoothing > 0 else s.to_numpy()
        fig.add_trace(go.Scatter(x=s.index, y=y, mode="lines" if frame == "train" else "lines+markers",
                                 name=r.label, xaxis=_xref(ids, r), line={"color": colours.get(r.key)},
                                 hovertemplate=f"{r.label}<br>{_xh(r)}<br>{key} %{{y:.4f}}<extra></extra>"))
    if not fig.data:
        empty_note(fig, f"no run logged {key}")
    return fig


# ---- review ---------------------------------------------------------------------------------------
def short_label(text: str, n: int = 30) -> str:
    """Long source names cut in the middle for axis labels (the hover shows them whole)."""
    return text if len(text) <= n else text[: n // 2 - 1] + "…" + text[-(n - n // 2):]


def win_rate_heatmap(rates: pd.DataFrame, games: pd.DataFrame) -> go.Figure:
    z = rates.to_numpy(dtype=float)
    text = [[("" if np.isnan(z[i, j]) else f"{z[i, j]:.0%}<br>n={games.iat[i, j]}") for j in range(z.shape[1])]
            for i in range(z.shape[0])]
    names = [str(s) for s in rates.index]
    full = [[[names[i], names[j]] for j in range(len(names))] for i in range(len(names))]
    fig = go.Figure(go.Heatmap(z=z, x=list(rates.columns), y=list(rates.index), text=text, texttemplate="%{text}",
                               zmin=0, zmax=1, colorscale="RdBu", hoverongaps=False, customdata=full,
                               colorbar={"title": {"text": "row wins"}},
                               hovertemplate="%{customdata[0]} vs %{customdata[1]}<br>row won %{z:.1%}"
                                             "<extra></extra>"))
    ticks = {"tickmode": "array", "tickvals": list(rates.index), "ticktext": [short_label(n) for n in names]}
    fig.update_layout(template="plotly_white", height=160 + 60 * len(rates), margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      title={"text": "Win rate of row against column (ties = ½)", "x": 0.01},
                      yaxis={"autorange": "reversed", "automargin": True, **ticks},
                      xaxis={"side": "bottom", "tickangle": -25, "automargin": True, **ticks})
    return fig


def bt_figure(table: pd.DataFrame, level: float = 0.95) -> go.Figure:
    t = table.iloc[::-1]
    fig = go.Figure(go.Scatter(
        x=t["theta"], y=[short_label(str(s)) for s in t["source"]], mode="markers", marker={"size": 10, "color": "#1f77b4"},
        error_x={"type": "data", "symmetric": False, "array": t["hi"] - t["theta"], "arrayminus": t["theta"] - t["lo"]},
        hovertemplate="%{y}<br>strength %{x:.2f}<extra></extra>", name="Bradley–Terry"))
    fig.add_vline(x=0, line={"color": "#aaa", "dash": "dot"})
    fig.update_layout(template="plotly_white", height=120 + 40 * len(t), margin={"l": 10, "r": 10, "t": 40, "b": 40},
                      title={"text": f"Bradley–Terry log-strength with {level:.0%} intervals", "x": 0.01},
                      xaxis_title="log-strength (0 = average source)")
    return fig

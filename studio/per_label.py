"""Per-label metrics of conditional runs in the studio (engines/metrics/per_label.py writes them): a label x
evaluation table of KID (or intra-FID) from the ``kid/label/<label>`` keys of the evaluation lines, its heatmap,
and the label-consistency series. Plain functions of loaded runs (no Streamlit, no torch), so tests pin them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .data import Run, fmt_x

#: per-label figures by metric: (key prefix in metrics.jsonl, what the table calls it)
METRICS = {"kid": ("kid/label/", "KID"), "fid": ("fid/label/", "intra-FID")}
COUNT_PREFIX = "eval_n/label/"
CONSISTENCY = ("label_consistency", "label_consistency/real")


def labels_of(run: Run, metric: str = "kid") -> list[str]:
    """Labels with at least one per-label value of ``metric``, in the order they were first logged."""
    prefix = METRICS[metric][0]
    return [str(c)[len(prefix):] for c in run.evals.columns if str(c).startswith(prefix)]


def has_per_label(run: Run) -> bool:
    return bool(labels_of(run, "kid") or labels_of(run, "fid")) or any(c in run.evals.columns for c in CONSISTENCY)


def per_label_table(run: Run, metric: str = "kid") -> pd.DataFrame:
    """Rows: labels; columns: the evaluations that measured any label (by x, e.g. the epoch; a repeated x, such
    as a ``pokelab eval --log`` line at the last epoch, keeps its last line); values: ``metric`` (NaN where that
    evaluation left the label out: too few real or generated images). Empty when the run has none."""
    names = labels_of(run, metric)
    ev = run.evals
    if not names or "x" not in ev.columns:
        return pd.DataFrame()
    prefix = METRICS[metric][0]
    cols = [prefix + n for n in names]
    sub = ev[["x", *cols]].apply(pd.to_numeric, errors="coerce")
    sub = sub[sub["x"].notna() & sub[cols].notna().any(axis=1)].drop_duplicates("x", keep="last").sort_values("x")
    table = pd.DataFrame(sub[cols].to_numpy(dtype=float).T, index=names, columns=[float(x) for x in sub["x"]])
    table.index.name = "label"
    return table


def counts(run: Run) -> pd.Series:
    """Samples asked for each label at the latest evaluation that logged counts."""
    cols = [c for c in run.evals.columns if str(c).startswith(COUNT_PREFIX)]
    if not cols:
        return pd.Series(dtype=float)
    rows = run.evals[cols].apply(pd.to_numeric, errors="coerce").dropna(how="all")
    if not len(rows):
        return pd.Series(dtype=float)
    last = rows.iloc[-1]
    return pd.Series(last.to_numpy(dtype=float), index=[str(c)[len(COUNT_PREFIX):] for c in cols]).dropna()


def consistency(run: Run) -> pd.DataFrame:
    """x, label_consistency, label_consistency/real of every evaluation that measured them."""
    have = [c for c in CONSISTENCY if c in run.evals.columns]
    if not have or "x" not in run.evals.columns:
        return pd.DataFrame(columns=["x", *CONSISTENCY])
    df = run.evals[["x", *have]].apply(pd.to_numeric, errors="coerce")
    df = df[df[have].notna().any(axis=1)].drop_duplicates("x", keep="last").sort_values("x").reset_index(drop=True)
    for c in CONSISTENCY:
        if c not in df.columns:
            df[c] = np.nan
    return df[["x", *CONSISTENCY]]


def table_for_display(table: pd.DataFrame, run: Run) -> pd.DataFrame:
    """The table with readable column names ('epoch 10') and the latest sample count per label."""
    out = table.copy()
    out.columns = [f"{run.x_unit} {fmt_x(x)}" for x in table.columns]
    n = counts(run)
    if len(n):
        out.insert(0, "samples (latest)", [n.get(label, np.nan) for label in out.index])
    return out


def heatmap(table: pd.DataFrame, run: Run, metric: str = "kid") -> go.Figure:
    """Labels down, evaluations across, colour = the metric (darker = further from the label's real images)."""
    label = METRICS[metric][1]
    z = table.to_numpy(dtype=float)
    xs = [f"{fmt_x(x)}" for x in table.columns]
    text = [["" if np.isnan(v) else f"{v:.3g}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=xs, y=list(table.index), text=text, texttemplate="%{text}", hoverongaps=False,
                               colorscale="Viridis", reversescale=True, colorbar={"title": {"text": label}},
                               hovertemplate=f"%{{y}} at {run.x_unit} %{{x}}<br>{label} %{{z:.4g}}<extra></extra>"))
    fig.update_layout(template="plotly_white", height=140 + 24 * len(table),
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      title={"text": f"Per-label {label} over the evaluations (lower is better)", "x": 0.01},
                      xaxis={"title": run.x_unit, "type": "category"},
                      yaxis={"autorange": "reversed", "automargin": True})
    return fig

"""Sweeps in the studio: runs grouped by their run.json ``tag`` (``pokelab sweep`` and ``pokelab train --tag``),
each group shown as its grid: one row per run with the settings that vary and the final FID / KID / collapse flag
(docs/sweeps.md). Plain functions of loaded runs (no Streamlit, no torch), so tests pin them.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Iterable

import pandas as pd

from .data import Run, last_collapse, last_value, throughput


def run_tag(run: Run) -> str | None:
    tag = run.info.get("tag") if isinstance(run.info, dict) else None
    return tag if isinstance(tag, str) and tag else None


def sweep_entry(run: Run) -> dict[str, Any]:
    """The run's ``sweep`` record (name, settings, varied, key) when it has a sound one, else {}."""
    sw = run.info.get("sweep") if isinstance(run.info, dict) else None
    return sw if isinstance(sw, dict) else {}


def tags(runs: Iterable[Run]) -> list[str]:
    """Every tag, the most recently written group first."""
    newest: dict[str, float] = {}
    for r in runs:
        t = run_tag(r)
        if t is not None:
            newest[t] = max(newest.get(t, 0.0), r.last_modified)
    return sorted(newest, key=lambda t: (-newest[t], t))


def group(runs: Iterable[Run], tag: str) -> list[Run]:
    """The runs of one tag, in the sweep's own order (its run names) and by run id where there is none; each
    copy labelled by its name in the grid (the run id is kept in ``path``)."""
    out = []
    for r in runs:
        if run_tag(r) != tag:
            continue
        name = sweep_entry(r).get("name")
        out.append(replace(r, label=str(name)) if isinstance(name, str) and name else r)
    return sorted(out, key=lambda r: (sweep_entry(r).get("name") is None, str(r.path.name)))


def _cell(v: Any) -> Any:
    if v is None or isinstance(v, (int, float, str, bool)):
        return v
    return json.dumps(v)


def varied_keys(runs: list[Run]) -> list[str]:
    """The settings that differ between the group's runs, in the order the sweep records them."""
    keys: dict[str, None] = {}
    for r in runs:
        v = sweep_entry(r).get("varied")
        if isinstance(v, dict):
            keys.update(dict.fromkeys(str(k) for k in v))
    return list(keys)


def table(runs: list[Run]) -> pd.DataFrame:
    """One row per run of a group: its name, the varied settings, status, epochs, final (= last evaluated)
    FID and KID, the latest collapse flag, best FID, img/s and the run folder."""
    keys = varied_keys(runs)
    rows = []
    for r in runs:
        varied = sweep_entry(r).get("varied")
        varied = varied if isinstance(varied, dict) else {}
        fid, fid_x = last_value(r, "evals", "fid")
        kid, _ = last_value(r, "evals", "kid")
        s = r.column("evals", "fid")
        collapsed, _ = last_collapse(r)
        rows.append({"run": r.label, **{k: _cell(varied.get(k)) for k in keys}, "status": r.status,
                     "epochs": r.done, "final FID": fid, "final KID": kid, "evaluated at": fid_x,
                     "collapse": collapsed, "best FID": float(s.min()) if s is not None else None,
                     "img/s": throughput(r), "path": str(r.path)})
    cols = ["run", *keys, "status", "epochs", "final FID", "final KID", "evaluated at", "collapse", "best FID",
            "img/s", "path"]
    return pd.DataFrame(rows, columns=cols)

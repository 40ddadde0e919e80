"""Runs for the studio: find them, load them tolerantly, summarise them, judge them.

Three on-disk formats are read into one ``Run`` record (plain data, picklable, so Streamlit can cache it):

- pokelab runs (``run.json`` + ``metrics.jsonl`` + ``samples/epoch_*.png``) through ``engines.runs.folder``;
  x axis: epochs.
- stylegan2-ada-pytorch training folders (``stats.jsonl``, ``metric-*.jsonl``, ``fakesNNNNNN.png``,
  ``training_options.json``); x axis: kimg (thousands of real images shown to D).
- lightweight-gan result folders (``fid_scores.txt`` with ``step,fid`` lines, numbered grids);
  x axis: training steps.

Translation runs (``run.json`` ``"kind": "translate"``: CycleGAN, CartoonGAN, U-GAT-IT) are pokelab runs
with two datasets (source A, target B), per-direction losses and a sample grid whose columns are
input | output | reconstruction (| attention); see ``TRANSLATE_COLUMNS`` and ``TRANSLATION_PAIRS``.

Nothing here raises on a bad run: every problem becomes a line in ``Run.warnings`` (shown on the
page) and the run is still listed. No torch, no Streamlit.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
import pandas as pd

from engines.runs import folder as R

from .paths import is_inside

#: gap between generated and real mean pairwise MS-SSIM that flags collapse; the same value as
#: engines.metrics.msssim.COLLAPSE_MARGIN (not imported: that module imports torch)
COLLAPSE_MARGIN = 0.1
#: how much of a run's metrics.jsonl (and of stylegan2-ada's jsonl logs) the studio reads: a 1000-epoch pokelab
#: run logs ~0.5 MB; a hostile or runaway 200 MB log cost 1.8 GB of memory. Past the cap the first
#: METRICS_MAX_BYTES are read (streamed, line by line) and a warning says how much was left out.
METRICS_MAX_BYTES = 32 * 2**20
#: a run that says "running" but has written nothing for this long is shown as "running?"
STALE_AFTER_S = 30 * 60
#: D balance rule (docs/studio.md): overall D accuracy over the last window further than this from 0.5
DRIFT_TOL = 0.15
#: ... or D accuracy on real and on fake further apart than this (D calls (almost) everything one class)
SPLIT_TOL = 0.5
#: lightweight-gan names its grids by ``steps // evaluate_every``; its CLI default is 1000
LIGHTWEIGHT_EVALUATE_EVERY = 1000
#: cycle rule (docs/studio.md): a cycle loss whose mean over the last window is above this many times
#: its lowest window mean is "rising again"
CYCLE_RISE = 1.5
#: input-kept rule: outputs are judged to follow their inputs when the grid's permutation test gives p
#: below this (studio.grids.translation_check) ...
CORRESPONDENCE_ALPHA = 0.05
#: ... and only with at least this many rows (with n rows the smallest possible p is 1/n!)
CORRESPONDENCE_MIN_ROWS = 5

KINDS = ("generate", "translate", "upscale")  # upscale: super-resolution runs (srgan; PSNR/SSIM/LPIPS)
#: translation engines: a run.json that cannot be read is still recognised from its run id
TRANSLATE_ENGINES = ("cyclegan", "cartoongan", "ugatit", "pix2pix")
#: the columns of a translation run's sample grid, per engine (one row per input picture)
TRANSLATE_COLUMNS = {"cyclegan": ("input", "output", "reconstruction"),
                     "ugatit": ("input", "output", "reconstruction", "attention"),
                     "cartoongan": ("input", "output"),
                     "pix2pix": ("input", "output", "target")}  # held-out pairs with their true target


class Pair(NamedTuple):
    """One per-direction figure of translation runs: the train series (key, label) of the A→B direction and of
    the B→A direction, drawn solid and dashed, plus eval series (key, label) drawn in the same figure."""
    title: str
    ab: tuple[str, str]
    ba: tuple[str, str]
    evals: tuple[tuple[str, str], ...] = ()

    @property
    def train(self) -> tuple[tuple[str, str], tuple[str, str]]:
        return self.ab, self.ba


#: per-direction losses of translation runs, one figure each, A→B against B→A. As in the engines
#: (engines/translate): D_B judges G_AB's outputs (domain B) and D_A G_BA's; idt_B = |G_AB(b) - b|,
#: idt_A = |G_BA(a) - a|; cycle_A = A→B→A starts with G_AB.
TRANSLATION_PAIRS = (
    Pair("Discriminators: D_B (A→B) vs D_A (B→A)",
         ("loss/D_B", "D_B (judges A→B)"), ("loss/D_A", "D_A (judges B→A)")),
    Pair("Generators (adversarial): A→B vs B→A",
         ("loss/G_AB", "G_AB (A→B)"), ("loss/G_BA", "G_BA (B→A)")),
    Pair("Cycle consistency (round-trip L1)",
         ("loss/cycle_A", "cycle_A (A→B→A)"), ("loss/cycle_B", "cycle_B (B→A→B)"),
         evals=(("cycle/A", "eval cycle/A (A→B→A)"),)),
    Pair("Identity (L1): G_AB on B vs G_BA on A",
         ("loss/idt_B", "idt_B (G_AB on B)"), ("loss/idt_A", "idt_A (G_BA on A)")),
)
#: translation eval metrics with a figure each (comparing runs): (key, title)
TRANSLATION_EVALS = (
    ("lpips/content", "LPIPS input ↔ output (lower = more of the input kept)"),
    ("lpips/target", "LPIPS output ↔ true target, paired by file id (lower is better)"),
)
#: values that must be numbers in metrics.jsonl: text there is reported (unknown keys are ignored silently)
_METRIC_PREFIXES = ("loss/", "acc/", "lpips/", "cycle/", "ms_ssim/")
_METRIC_NAMES = ("fid", "kid", "kid_std", "collapse", "lr", "img_per_s", "epoch_seconds", "augment_p",
                 "init_phase", "eval_n", "eval_seconds", "paired_n", "fid_lo", "fid_hi", "kid_lo", "kid_hi",
                 "fid_inf", "precision", "recall", "density", "coverage")

TOOLS = ("pokelab", "stylegan2-ada", "lightweight-gan")
X_UNITS = {"pokelab": "epoch", "stylegan2-ada": "kimg", "lightweight-gan": "step"}
_HUGE = 1e300  # the run writer stores +-inf as +-1e308; such values are not plottable


@dataclass
class GridLayout:
    """How a sample grid is tiled: tile side (None: detect), padding between tiles, padding colour."""
    tile: int | None = None
    padding: int = 2
    pad_value: int | None = 255   # None: try white and black
    nrow: int | None = None       # tiles per row when known
    columns: tuple[str, ...] = ()  # translation grids: what each column shows (input, output, ...)


@dataclass
class Run:
    path: Path
    tool: str
    label: str = ""
    root: Path | None = None
    engine: str = "?"
    kind: str = "generate"        # "translate" for image-to-image runs (two datasets)
    dataset: str = "?"
    status: str = "unknown"
    done: float | None = None
    planned: float | None = None
    x_unit: str = "epoch"
    train: pd.DataFrame = field(default_factory=pd.DataFrame)
    evals: pd.DataFrame = field(default_factory=pd.DataFrame)
    events: list[dict[str, Any]] = field(default_factory=list)
    samples: list[tuple[float, Path]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float | None = None
    layout: GridLayout = field(default_factory=GridLayout)
    last_modified: float = 0.0
    best_eval: list[dict[str, Any]] = field(default_factory=list)  # `pokelab eval RUN/best --log` lines

    @property
    def key(self) -> str:
        return str(self.path)

    @property
    def translate(self) -> bool:
        return self.kind == "translate"

    def column(self, frame: str, name: str) -> pd.Series | None:
        """A numeric column of ``train`` or ``evals`` without NaNs, indexed by x (None if absent)."""
        df = self.train if frame == "train" else self.evals
        if name not in df.columns or "x" not in df.columns:
            return None
        s = pd.Series(pd.to_numeric(df[name], errors="coerce").to_numpy(), index=df["x"].to_numpy())
        s = s[s.notna()]
        return s if len(s) else None


# ---- discovery -------------------------------------------------------------------------------
def detect_tool(d: Path) -> str | None:
    """Which format a folder is in (None: not a run folder)."""
    try:
        if R.is_run_dir(d):
            return "pokelab"
        if (d / "stats.jsonl").is_file() or (d / "training_options.json").is_file() \
                or any(d.glob("metric-*.jsonl")):
            return "stylegan2-ada"
        if (d / "fid_scores.txt").is_file():
            return "lightweight-gan"
    except OSError:
        return None
    return None


def discover(roots: Iterable[str | os.PathLike], max_depth: int = 3) -> list[tuple[Path, str, Path]]:
    """(run folder, tool, root) under the roots; a root may itself be a run. Hidden folders are skipped,
    and so are folders that resolve outside every root (a symlink pointing elsewhere)."""
    roots = [Path(r).resolve() for r in roots]
    seen: set[Path] = set()
    found: list[tuple[Path, str, Path]] = []
    for root in roots:
        if not root.is_dir():
            continue
        stack = [(root, 0)]
        while stack:
            d, depth = stack.pop()
            real = d.resolve()
            if real in seen or not is_inside(real, roots):
                continue
            seen.add(real)
            tool = detect_tool(d)
            if tool:
                found.append((d, tool, root))
                continue
            if depth >= max_depth:
                continue
            try:
                children = sorted((c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")),
                                  reverse=True)
            except OSError:
                continue
            stack.extend((c, depth + 1) for c in children)
    return sorted(found, key=lambda t: str(t[0]))


_SIG_FILES = {
    "pokelab": ("run.json", "metrics.jsonl", "samples"),
    "stylegan2-ada": ("stats.jsonl", "training_options.json"),
    "lightweight-gan": ("fid_scores.txt",),
}


def signature(path: str | os.PathLike, tool: str) -> tuple:
    """What changes when a run changes (cache key): mtimes and sizes of its key files, and the folder's
    own mtime (new sample grids or metric files appear there)."""
    path = Path(path)
    out: list[tuple] = []
    names = list(_SIG_FILES.get(tool, ())) + ["."]
    if tool == "stylegan2-ada":
        names += sorted(p.name for p in path.glob("metric-*.jsonl"))
    for name in names:
        try:
            st = (path / name).stat()
            out.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((name, None, None))
    return tuple(out)


def unique_labels(paths: list[Path]) -> dict[Path, str]:
    """Short display names: the folder name, with its parent added where two runs share a name."""
    names: dict[str, int] = {}
    for p in paths:
        names[p.name] = names.get(p.name, 0) + 1
    return {p: (p.name if names[p.name] == 1 else f"{p.parent.name}/{p.name}") for p in paths}


# ---- loading -----------------------------------------------------------------------------------
def load_run(path: str | os.PathLike, tool: str | None = None, root: str | os.PathLike | None = None) -> Run:
    """Load one run of any supported format. Never raises: problems become ``warnings``.
    The result depends on the files only (so it can be cached on ``signature``); the time-dependent
    part of the status is applied by ``refresh_status``."""
    path = Path(path)
    tool = tool or detect_tool(path) or "pokelab"
    run = Run(path=path, tool=tool, label=path.name, root=Path(root) if root else None,
              x_unit=X_UNITS.get(tool, "epoch"))
    try:
        run.last_modified = _last_modified(path, tool)
        if run.root is not None:
            # a log file that is a symlink to somewhere else is not followed (only the roots are read)
            names = list(_SIG_FILES.get(tool, ())) + [p.name for p in path.glob("metric-*.jsonl")]
            escaping = [n for n in names if (path / n).exists() and not is_inside(path / n, [run.root])]
            if escaping:
                run.status = "unreadable"
                run.warnings.append(f"{', '.join(escaping)} point(s) outside the configured folders; not read")
                return run
        {"pokelab": _load_pokelab, "stylegan2-ada": _load_stylegan, "lightweight-gan": _load_lightweight}[tool](run)
        if run.root is not None:
            inside = [s for s in run.samples if is_inside(s[1], [run.root])]
            if len(inside) != len(run.samples):
                run.warnings.append(f"{len(run.samples) - len(inside)} sample grid(s) point outside the configured "
                                    "folders; left out")
                run.samples = inside
    except Exception as e:  # noqa: BLE001 — a run must never take the page down
        run.status = "unreadable"
        run.warnings.append(f"could not be read: {type(e).__name__}: {e}")
    return run


def _last_modified(path: Path, tool: str) -> float:
    ts = []
    for name in list(_SIG_FILES.get(tool, ())) + ["."]:
        try:
            ts.append((path / name).stat().st_mtime)
        except OSError:
            pass
    return max(ts) if ts else 0.0


def _frame(records: list[dict[str, Any]], xkey: str, run: Run, what: str) -> pd.DataFrame:
    """Records -> DataFrame with a numeric ``x`` column, sorted, one row per x (the last one logged wins,
    as after a resume), numeric-looking columns converted and +-inf stand-ins blanked."""
    if not records:
        return pd.DataFrame({"x": pd.Series(dtype=float)})
    df = pd.DataFrame.from_records(records)
    if xkey not in df.columns:
        run.warnings.append(f"{what}: no '{xkey}' field in any line; ignored")
        return pd.DataFrame({"x": pd.Series(dtype=float)})
    df["x"] = pd.to_numeric(df[xkey], errors="coerce")
    bad = int(df["x"].isna().sum())
    if bad:
        run.warnings.append(f"{what}: {bad} line(s) without a usable '{xkey}'; skipped")
        df = df[df["x"].notna()]
    for c, dt in list(df.dtypes.items()):
        if dt == object:
            conv = pd.to_numeric(df[c], errors="coerce")
            # values that are neither numbers nor null (text, lists) where a metric is expected
            bad = int((conv.isna() & df[c].notna()).sum())
            # keep text columns (event names, messages); convert columns that are numbers with gaps
            if conv.notna().sum() and conv.notna().sum() >= df[c].map(_is_numberish).sum():
                df[c] = conv
                if bad:
                    run.warnings.append(f"{what}: {bad} non-numeric value(s) of '{c}' ignored")
            elif bad and _is_metric_name(c):
                run.warnings.append(f"{what}: '{c}' holds no numbers ({bad} value(s) such as "
                                    f"{_short_repr(df[c].dropna().iloc[0])}); ignored")
    num = [c for c, dt in df.dtypes.items() if dt.kind in "fiub"]
    if num:
        arr = df[num].to_numpy(dtype=float)
        huge = np.abs(arr) >= _HUGE
        if huge.any():
            run.notes.append(f"{what}: {int(huge.sum())} infinite value(s) left out of the plots")
            df[num] = np.where(huge, np.nan, arr)
    x = df["x"]
    if not (x.is_monotonic_increasing and x.is_unique):  # resumed runs re-log epochs: keep the last one
        df = df.drop_duplicates("x", keep="last").sort_values("x", kind="stable")
    return df.reset_index(drop=True)


def _is_numberish(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) or v is None


def _is_metric_name(c: Any) -> bool:
    return isinstance(c, str) and (c.startswith(_METRIC_PREFIXES) or c in _METRIC_NAMES)


def _short_repr(v: Any, n: int = 30) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 1] + "…"


def _read_json(p: Path, run: Run) -> dict[str, Any]:
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(obj, dict):
            return obj
        run.warnings.append(f"{p.name}: expected a JSON object")
    except FileNotFoundError:
        pass
    except (ValueError, OSError) as e:
        run.warnings.append(f"{p.name}: unreadable ({e})")
    return {}


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v) and abs(v) < _HUGE:
        return float(v)
    return None


def _dataset_name(ds: Any) -> str:
    if isinstance(ds, dict):
        return str(ds.get("name") or ds.get("key") or "?")
    if isinstance(ds, list) and ds:  # translation runs: two domains
        return " → ".join(_dataset_name(d) for d in ds)
    if isinstance(ds, str):
        return ds
    return "?"


def _translation_dataset(ds: Any, run: Run) -> str:
    """"A → B" from a translation run's two dataset infos; anything else is labelled as far as it goes
    and reported (a missing domain shows as "?")."""
    if not isinstance(ds, list):
        run.warnings.append(f"run.json: a translation run lists two datasets (source A, target B); found "
                            f"{'nothing' if ds is None else type(ds).__name__}")
        return _dataset_name(ds) if ds is not None else "? → ?"
    named = [d for d in ds if isinstance(d, dict) and (d.get("name") or d.get("key"))]
    if len(ds) != 2 or len(named) != 2:
        run.warnings.append(f"run.json: a translation run lists two datasets (source A, target B) with a name "
                            f"each; found {len(ds)} entr{'y' if len(ds) == 1 else 'ies'}, {len(named)} named")
    two = (list(ds) + [None, None])[:2] if len(ds) < 2 else ds
    return " → ".join(_dataset_name(d) for d in two)


def _run_kind(info: dict[str, Any], engine: str, run: Run) -> str:
    kind = info.get("kind")
    if kind in KINDS:
        return kind
    if kind is not None:
        run.warnings.append(f"run.json: unknown kind {kind!r}")
    # older or unreadable run.json: the engine (or a two-dataset list) still says what the run is
    return "translate" if engine in TRANSLATE_ENGINES or isinstance(info.get("dataset"), list) else "generate"


def _load_pokelab(run: Run) -> None:
    path = run.path
    try:
        info = R.read_info(path)
    except R.RunFormatError as e:
        run.warnings.append("run.json: " + str(e).replace(f"{path / 'run.json'}: ", "").replace(f"{path} ", ""))
        info = {}
    except OSError as e:
        run.warnings.append(f"run.json: unreadable ({e})")
        info = {}
    run.info = info
    cfg = info.get("config") if isinstance(info.get("config"), dict) else {}
    run.engine = str(info.get("engine") or _engine_from_id(path.name) or "?")
    run.kind = _run_kind(info, run.engine, run)
    if run.translate and info:
        run.dataset = _translation_dataset(info.get("dataset"), run)
    else:
        run.dataset = _dataset_name(info.get("dataset"))
    status = info.get("status")
    run.status = status if status in R.STATUSES else ("broken" if not info else "unknown")
    if info and status not in R.STATUSES:
        run.warnings.append(f"run.json: unknown status {status!r}")
    run.planned = _num(cfg.get("epochs"))
    run.wall_seconds = _num(info.get("wall_seconds"))
    tile = cfg.get("image_size")
    run.layout = GridLayout(tile=int(tile) if isinstance(tile, int) and tile > 0 else None, padding=2, pad_value=255)
    if run.translate:
        cols = TRANSLATE_COLUMNS.get(run.engine, ())
        run.layout.columns, run.layout.nrow = cols, (len(cols) or None)
        if not cols:
            run.notes.append(f"translation engine {run.engine!r} is not known to the studio: its grid columns (and "
                             "so the output column) are unknown")

    try:
        m = R.read_metrics(path, max_bytes=METRICS_MAX_BYTES)
    except OSError as e:
        run.warnings.append(f"metrics.jsonl: unreadable ({e})")
        m = R.Metrics()
    for w in m.warnings:
        if "partial last line" in w and run.status == "running":
            run.notes.append(f"metrics.jsonl {w}")  # expected while the trainer writes
        elif w == "no metrics.jsonl yet" and run.status == "running":
            run.notes.append(w)
        else:
            run.warnings.append(f"metrics.jsonl {w}" if w.startswith("line") else w)
    run.train = _frame(m.train, "epoch", run, "metrics.jsonl (train)")
    run.evals = _frame(m.eval, "epoch", run, "metrics.jsonl (eval)")
    run.best_eval = list(m.best_eval)
    run.events = [{"x": _num(e.get("epoch")), "event": str(e.get("event") or e.get("kind") or "?"),
                   "message": str(e.get("message", ""))} for e in m.events]
    end = init_phase_end(run)
    if end is not None:
        run.events.append({"x": end, "event": "init_done",
                           "message": "initialisation (reconstruction only) over; adversarial training from here "
                                      "(derived from init_phase)"})
    done = _num(info.get("epoch"))
    if done is None and len(run.train):
        done = float(run.train["x"].max())
    run.done = done
    run.samples = [(float(ep), p) for ep, p in R.list_samples(path)]


def _engine_from_id(run_id: str) -> str | None:
    rest = run_id[16:] if re.match(r"^\d{8}-\d{6}-", run_id) else ""
    for e in TRANSLATE_ENGINES:  # translation ids name two datasets: <engine>-<source>-to-<target>
        if rest.startswith(e + "-"):
            return e
    m = re.match(r"^\d{8}-\d{6}-([^-]+(?:-[^-]+)?)-", run_id)
    return m.group(1) if m else None


def _mean(v: Any) -> float | None:
    """stylegan2-ada stats values are {"num", "mean", "std"} dicts."""
    if isinstance(v, dict):
        return _num(v.get("mean"))
    return _num(v)


def _load_stylegan(run: Run) -> None:
    path = run.path
    opts = _read_json(path / "training_options.json", run)
    run.info = opts
    ts = opts.get("training_set_kwargs") if isinstance(opts.get("training_set_kwargs"), dict) else {}
    run.engine = "stylegan2-ada"
    ds_path = ts.get("path")
    run.dataset = Path(str(ds_path)).stem if ds_path else "?"
    run.planned = _num(opts.get("total_kimg"))
    res = ts.get("resolution")
    run.layout = GridLayout(tile=int(res) if isinstance(res, int) and res > 0 else None, padding=0, pad_value=None)

    rows: list[dict[str, Any]] = []
    stats = path / "stats.jsonl"
    if stats.is_file():
        recs, warns = R.read_jsonl(stats, max_bytes=METRICS_MAX_BYTES)
        run.warnings += [w for w in warns if "partial last line" not in w]
        run.notes += [w for w in warns if "partial last line" in w]
        prev_kimg: float | None = 0.0
        for rec in recs:
            row: dict[str, Any] = {"x": _mean(rec.get("Progress/kimg")), "time": _num(rec.get("timestamp"))}
            for k, v in rec.items():
                if not k.startswith("Loss/"):
                    continue
                name = k[5:]
                if name.startswith(("scores/", "signs/")):
                    continue
                # Loss/G/loss -> loss/G, Loss/D/reg -> loss/D_reg, Loss/r1_penalty -> loss/r1_penalty
                if name.endswith("/loss"):
                    name = name[:-5]
                row["loss/" + name.replace("/", "_")] = _mean(v)
            sr, sf = _mean(rec.get("Loss/signs/real")), _mean(rec.get("Loss/signs/fake"))
            # mean sign of D's output: +1 = every real called real; accuracy = share with the right sign
            if sr is not None:
                row["acc/D_real"] = (1 + sr) / 2
            if sf is not None:
                row["acc/D_fake"] = (1 - sf) / 2
            aug = _mean(rec.get("Progress/augment"))
            if aug is not None:
                row["augment_p"] = aug
            spk = _mean(rec.get("Timing/sec_per_kimg"))
            if spk:
                row["img_per_s"] = 1000.0 / spk
            total = _mean(rec.get("Timing/total_sec"))
            if total is not None:
                row["wall"] = total
            # training time of the tick: the tool measures it from the end of the previous tick's maintenance
            # (snapshots, grids, metrics) to the tick's end, so evaluation is left out, as in epoch_seconds
            tick = _mean(rec.get("Timing/sec_per_tick"))
            kimg = row["x"]
            if tick is None and spk is not None and kimg is not None and prev_kimg is not None:
                tick = spk * (kimg - prev_kimg)
            if tick is not None and tick >= 0:
                row["tick_seconds"] = tick
            if kimg is not None:
                prev_kimg = kimg
            rows.append(row)
    else:
        run.warnings.append("no stats.jsonl")
    run.train = _frame(rows, "x", run, "stats.jsonl")
    if "wall" in run.train.columns and run.train["wall"].notna().any():
        run.wall_seconds = float(run.train["wall"].dropna().iloc[-1])

    evals: dict[float, dict[str, Any]] = {}
    for mf in sorted(path.glob("metric-*.jsonl")):
        recs, warns = R.read_jsonl(mf, max_bytes=METRICS_MAX_BYTES)
        run.warnings += warns
        for rec in recs:
            snap = str(rec.get("snapshot_pkl") or "")
            mt = re.search(r"(\d+)\.pkl$", snap)
            results = rec.get("results")
            if not mt or not isinstance(results, dict):
                run.warnings.append(f"{mf.name}: a line without snapshot_pkl/results; skipped")
                continue
            x = float(int(mt.group(1)))
            row = evals.setdefault(x, {"x": x})
            for name, val in results.items():
                v = _num(val)
                if v is None:
                    continue
                row[name] = v
                if name.startswith("fid"):
                    row["fid"] = v
                elif name.startswith("kid"):
                    row["kid"] = v
    run.evals = _frame(list(evals.values()), "x", run, "metric-*.jsonl")

    samples = []
    for f in path.glob("fakes*.png"):
        mt = re.match(r"^fakes(\d+)\.png$", f.name)  # fakes_init.png (before training) is left out
        if mt:
            samples.append((float(int(mt.group(1))), f))
    run.samples = sorted(samples)
    kimgs = [x for x in [run.train["x"].max() if len(run.train) else None,
                         run.evals["x"].max() if len(run.evals) else None] if x is not None and x == x]
    run.done = float(max(kimgs)) if kimgs else None
    run.status = "finished" if run.planned and run.done is not None and run.done >= run.planned else "running"


def _load_lightweight(run: Run) -> None:
    path = run.path
    run.engine = "lightweight-gan"
    run.dataset = "?"
    rows = []
    text = (path / "fid_scores.txt").read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    partial = not text.endswith("\n") and lines[-1] != ""
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        parts = [p.strip() for p in raw.split(",")]
        try:
            # "steps,fid" (some versions append ", G: .. | D: ..")
            rows.append({"x": float(int(parts[0])), "fid": float(parts[1])})
        except (ValueError, IndexError):
            if partial and i == len(lines):
                run.notes.append("fid_scores.txt: partial last line (still writing?)")
            else:
                run.warnings.append(f"fid_scores.txt line {i}: not 'step,fid'; skipped")
    run.evals = _frame(rows, "x", run, "fid_scores.txt")
    plain, ema = [], []
    for f in path.iterdir():
        mt = re.match(r"^(\d+)(-ema)?\.(jpg|jpeg|png)$", f.name)
        if mt:
            (ema if mt.group(2) else plain).append((float(int(mt.group(1)) * LIGHTWEIGHT_EVALUATE_EVERY), f))
    run.samples = sorted(ema or plain)  # the EMA generator is the one its FID is computed on
    if run.samples:
        run.notes.append(f"grid steps assume lightweight-gan's default evaluate_every={LIGHTWEIGHT_EVALUATE_EVERY}")
    run.layout = GridLayout(tile=None, padding=2, pad_value=0, nrow=8)  # torchvision save_image, 8 per row
    xs = [s[0] for s in run.samples] + (list(run.evals["x"]) if len(run.evals) else [])
    run.done = float(max(xs)) if xs else None
    run.status = "running"  # these tools do not record a status; refresh_status() decides from the mtime


_STALE_MARK = "nothing was written for"


def refresh_status(run: Run, now: float | None = None) -> Run:
    """The time-dependent part of a run's status (idempotent): a pokelab run marked "running" that has
    not written anything for STALE_AFTER_S gets a warning (the trainer may have been killed before it
    could mark the run); for the other tools, which record no status, an unfinished run is "running"
    while its files change and "stopped" after that."""
    now = time.time() if now is None else now
    run.warnings = [w for w in run.warnings if _STALE_MARK not in w]
    age = now - run.last_modified
    if run.tool == "pokelab":
        if run.status == "running" and age > STALE_AFTER_S:
            run.warnings.append(f"status is 'running' but {_STALE_MARK} {_fmt_age(age)}: the trainer may have "
                                "been killed before it could mark the run")
    elif run.status in ("running", "stopped"):
        run.status = "running" if age < STALE_AFTER_S else "stopped"
    return run


_TOOL_ORDER = {t: i for i, t in enumerate(TOOLS)}


def sort_runs(runs: list[Run]) -> list[Run]:
    """pokelab runs first (newest first: their ids start with the UTC time), then the other tools."""
    by_label = sorted(runs, key=lambda r: r.label, reverse=True)
    return sorted(by_label, key=lambda r: _TOOL_ORDER.get(r.tool, len(TOOLS)))


def load_runs(roots: Iterable[str | os.PathLike], now: float | None = None) -> list[Run]:
    """Discover and load every run under the roots (uncached: the page caches per run)."""
    found = discover(roots)
    labels = unique_labels([p for p, _, _ in found])
    out = []
    for p, tool, root in found:
        r = load_run(p, tool, root)
        r.label = labels[p]
        out.append(refresh_status(r, now))
    return sort_runs(out)


# ---- summaries -----------------------------------------------------------------------------------
def _fmt_age(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def fmt_duration(s: float | None) -> str:
    if s is None or s != s:
        return ""
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}"


def fmt_x(x: float | None) -> str:
    if x is None or x != x:
        return ""
    return f"{x:g}" if abs(x - round(x)) > 1e-9 else f"{int(round(x))}"


def best_fid(run: Run) -> tuple[float | None, float | None]:
    """(best FID, x where it was reached); the earliest x wins a tie."""
    s = run.column("evals", "fid")
    if s is None:
        return None, None
    i = int(np.argmin(s.to_numpy()))
    return float(s.iloc[i]), float(s.index[i])


def last_value(run: Run, frame: str, name: str) -> tuple[float | None, float | None]:
    s = run.column(frame, name)
    if s is None:
        return None, None
    return float(s.iloc[-1]), float(s.index[-1])


def throughput(run: Run, last: int = 10) -> float | None:
    """Mean img/s over the last ``last`` logged points (the current speed, not the warm-up)."""
    s = run.column("train", "img_per_s")
    if s is None:
        return None
    return float(s.iloc[-last:].mean())


def summarize(run: Run) -> dict[str, Any]:
    bf, bx = best_fid(run)
    kid, _ = last_value(run, "evals", "kid")
    kid_std, _ = last_value(run, "evals", "kid_std")
    quality = {f"last {label}": last_value(run, "evals", key)[0] for key, label in QUALITY_KEYS}
    status = run.status
    if status == "running" and any(_STALE_MARK in w for w in run.warnings):
        status = "running?"
    group = fid_group(run)
    collapsed, _ = last_collapse(run)
    return {
        "run": run.label, "tool": run.tool, "engine": run.engine, "kind": run.kind, "dataset": run.dataset,
        "status": status,
        "done": run.done, "planned": run.planned, "unit": run.x_unit,
        "progress": f"{fmt_x(run.done) or '–'} / {fmt_x(run.planned) or '?'} {run.x_unit}",
        "best FID": bf, "best FID at": bx, "last KID": kid, "last KID std": kid_std, **quality,
        # what the best FID can be compared with (FidGroup): image size, samples of that evaluation
        "size": group.size, "eval n": group.n, "FID group": group.label,
        # the latest evaluation's collapse flag (None: not measured)
        "collapse": collapsed,
        "best/": best_export_cell(run),
        "img/s": throughput(run), "wall time": fmt_duration(run.wall_seconds),
        "samples": len(run.samples), "warnings": len(run.warnings), "path": str(run.path),
    }


def best_export(run: Run) -> dict[str, Any] | None:
    """The run's best/ export (run.json ``best``, written by the trainer: docs/training.md "The best export"):
    metric, value, epoch, hours, eval_n as recorded, ``present`` (best/ is a folder in the run, links not
    followed) and ``measured``: the latest ``pokelab eval RUN/best --log`` line of that same epoch (None: not
    measured on its own since best/ last moved). None when run.json records no best/."""
    b = run.info.get("best") if isinstance(run.info, dict) else None
    if not isinstance(b, dict) or not isinstance(b.get("metric"), str) or _num(b.get("value")) is None \
            or _num(b.get("epoch")) is None:
        return None
    epoch = _num(b["epoch"])
    measured = [e for e in run.best_eval if _num(e.get("epoch")) == epoch]
    return {"metric": b["metric"], "value": _num(b["value"]), "epoch": epoch, "hours": _num(b.get("hours")),
            "eval_n": _num(b.get("eval_n")), "present": R.is_real_dir(R.best_dir(run.path)),
            "measured": measured[-1] if measured else None}


def best_export_cell(run: Run) -> str:
    """The runs table's "best/" column: where the best export is from and its score ("" when none)."""
    b = best_export(run)
    if b is None:
        return ""
    m = b["measured"]
    value, n = b["value"], b["eval_n"]  # the choice's own score, unless best/ was measured on its own
    if m is not None and _num(m.get(b["metric"])) is not None:
        value, n = _num(m[b["metric"]]), _num(m.get("eval_n"))
    return f"{run.x_unit} {fmt_x(b['epoch'])} · {b['metric'].upper()} {value:.4g} ({fmt_x(n)})"


def best_export_text(run: Run) -> str | None:
    """Run details: what best/ is, and its own measurement or the command that makes it. None when no best/."""
    b = best_export(run)
    if b is None:
        return None
    when = f"{run.x_unit} {fmt_x(b['epoch'])}" + (f", {b['hours']:.2f} h of training" if b["hours"] else "")
    text = (f"best/: the export of {when}, the lowest {b['metric'].upper()} of the run's evaluations "
            f"({b['value']:.4g} at {fmt_x(b['eval_n'])} samples).")
    if not b["present"]:
        return text + " The folder is not in this copy of the run."
    m = b["measured"]
    if m is None:
        return text + f" Not measured on its own yet: `pokelab eval {R.best_dir(run.path)} --n 2000 --log`."
    got = [f"{label} {_num(m[k]):{fmt}}" for k, label, fmt in (("fid", "FID", ".2f"), ("kid", "KID", ".4f"))
           if _num(m.get(k)) is not None]
    return text + f" Measured on its own: {', '.join(got) or 'no FID/KID'} at {fmt_x(_num(m.get('eval_n')))} samples."


#: evaluation keys whose latest value the runs table keeps (engines.metrics.prdc, .small_n): (key, label)
QUALITY_KEYS = (("fid_inf", "FID∞"), ("precision", "precision"), ("recall", "recall"), ("density", "density"),
                ("coverage", "coverage"))


def eval_cadence_text(run: Run) -> str | None:
    """What run.json's ``eval_cadence`` (engines/eval_cadence.py) says, in one line: when the run was evaluated and
    why, evaluation's share of its time, a smoke run's smaller sample count. None when not recorded."""
    c = run.info.get("eval_cadence") if isinstance(run.info, dict) else None
    if not isinstance(c, dict) or not isinstance(c.get("mode"), str):
        return None
    mode, every = c["mode"], c.get("every")
    if mode == "off":
        return "Evaluation: off during training (eval_every=0)."
    done = [e for e in c.get("evaluated") or [] if isinstance(e, (int, float)) and not isinstance(e, bool)]
    if len(done) > 8:
        shown = ", ".join(fmt_x(e) for e in done[:4]) + ", …, " + ", ".join(fmt_x(e) for e in done[-2:])
    else:
        shown = ", ".join(fmt_x(e) for e in done) or "none yet"
    parts = [f"Evaluation: {len(done)} so far (epochs {shown})" if done else "Evaluation: none yet"]
    eff = c.get("effective_every")
    if isinstance(eff, (int, float)) and done:
        parts.append(f"effectively one every {fmt_x(round(float(eff), 1))} epochs")
    protocol = f"protocol cadence every {every} epochs" if isinstance(every, int) else "protocol cadence"
    budget = c.get("budget")
    if mode == "budget" and isinstance(budget, (int, float)):
        parts.append(f"{protocol}, stretched to keep evaluation within {budget:.0%} of the run's time")
    elif mode == "explicit":
        parts.append(f"every {every} epochs as set explicitly")
    else:
        parts.append(f"{protocol} ({c.get('reason') or mode})")
    share = c.get("eval_share")
    if isinstance(share, (int, float)) and done:
        parts.append(f"evaluation took {share:.0%} of the run's time")
    nxt = c.get("next")
    if isinstance(nxt, (int, float)) and not isinstance(nxt, bool) and run.status == "running":
        parts.append(f"next at epoch {fmt_x(nxt)}")
    text = "; ".join(parts) + "."
    if c.get("smoke"):
        text += (f" Smoke run: evaluated with {c.get('eval_n')} samples (not the protocol's), so its FID compares "
                 "only with runs at that sample count.")
    return text


def runs_table(runs: list[Run]) -> pd.DataFrame:
    cols = ["run", "tool", "engine", "kind", "dataset", "status", "done", "planned", "unit", "progress", "best FID",
            "best FID at", "last KID", "last KID std", *(f"last {label}" for _, label in QUALITY_KEYS), "size",
            "eval n", "FID group", "collapse", "best/", "img/s", "wall time", "samples", "warnings", "path"]
    return pd.DataFrame([summarize(r) for r in runs], columns=cols)


# ---- x axes: epochs, training hours, images seen ------------------------------------------------------
#: the x axes the trend figures offer. "epoch": each run's own unit (epochs for pokelab runs, kimg for
#: stylegan2-ada, steps for lightweight-gan); "hours": training wall clock, evaluation excluded; "kimg":
#: thousands of training images drawn (docs/studio.md, "x axis")
X_AXES = {"epoch": "epochs", "hours": "training hours", "kimg": "images seen (kimg)"}


@dataclass
class XMap:
    """A run's own x (epochs, kimg) to another axis: linear between known points (exact at them, e.g. at
    every epoch end), NaN outside them (left out of figures)."""
    unit: str
    native: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    notes: list[str] = field(default_factory=list)
    identity: bool = False   # the run's own unit already is this axis (stylegan2-ada and kimg)

    def __call__(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.identity:
            return x.copy()
        if not len(self.native):
            return np.full(x.shape, np.nan)
        return np.interp(x, self.native, self.values, left=np.nan, right=np.nan)

    def at(self, x: float | None) -> float | None:
        """One value; None where it cannot be placed."""
        if x is None:
            return None
        v = float(self(x))
        return v if v == v else None

    @property
    def end(self) -> float | None:
        """The axis value of the run's last known point (its training hours or kimg so far)."""
        return float(self.values[-1]) if len(self.values) else None


def batch_size(run: Run) -> int | None:
    """The training batch size from run.json's config (stylegan2-ada: training_options.json)."""
    cfg = run.info.get("config") if isinstance(run.info.get("config"), dict) else run.info
    bs = cfg.get("batch_size") if isinstance(cfg, dict) else None
    return int(bs) if isinstance(bs, (int, float)) and not isinstance(bs, bool) and bs > 0 else None


def _start(native: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training starts at 0 on both axes (epoch 0 = 0 hours = 0 images)."""
    if len(native) and native[0] > 0:
        return np.concatenate([[0.0], native]), np.concatenate([[0.0], values])
    return native, values


def _epoch_grid(run: Run) -> np.ndarray:
    """Every epoch from 1 to the last one with a train line (pokelab epochs are whole numbers)."""
    xs = np.sort(run.train["x"].to_numpy(dtype=float))
    if len(xs) and np.all(xs >= 1) and np.allclose(xs, np.round(xs)) and xs[-1] <= 10_000_000:
        return np.arange(1, int(round(xs[-1])) + 1, dtype=float)
    return xs


def _pokelab_hours(run: Run) -> tuple[XMap | None, str]:
    sec = run.column("train", "epoch_seconds")
    if sec is None:
        return None, "no epoch_seconds in metrics.jsonl (a run from before the field, or not written by pokelab)"
    sec = sec[sec >= 0]
    if not len(sec):
        return None, "no usable epoch_seconds in metrics.jsonl"
    grid = _epoch_grid(run)
    logged = pd.Series(sec.to_numpy(), index=sec.index.astype(float))
    logged = logged[~logged.index.duplicated(keep="last")]
    secs = logged.reindex(grid)
    notes: list[str] = []
    missing = int(secs.isna().sum())
    if missing:
        fill = float(logged.median())
        notes.append(f"{missing} epoch(s) without epoch_seconds counted at the run's median epoch time "
                     f"({fill:.1f} s)")
        secs = secs.fillna(fill)
    secs, note = _unlogged_time(run, grid, secs)
    if note:
        notes.append(note)
    native, values = _start(grid, np.cumsum(secs.to_numpy()) / 3600.0)
    return XMap("hours", native, values, notes), ""


def _unlogged_time(run: Run, grid: np.ndarray, secs: pd.Series) -> tuple[pd.Series, str]:
    """An epoch cut short by SIGINT/SIGTERM is finished after the resume, and its ``epoch_seconds`` only times
    the batches after the resume; the batches before it are in run.json's ``wall_seconds`` (the trainer adds
    them there, writes run.json with the last complete epoch and saves them in the checkpoint). So where
    run.json's ``wall_seconds`` exceeds the logged epoch times up to run.json's ``epoch``, the difference is
    given to the epochs up to the one after it that trained more images than they timed (step x batch size
    against img_per_s x epoch_seconds), in proportion to the missing images. run.json's progress fields may
    lag the log by some epochs while a run trains (the trainer rewrites them every 30 s or so), hence the
    comparison at run.json's epoch rather than at the last logged one. kill -9 and NaN rollbacks need nothing:
    the trainer drops both the time and the lines after the checkpoint."""
    wall, ep = _num(run.info.get("wall_seconds")), _num(run.info.get("epoch"))
    if wall is None or ep is None or not len(grid) or ep > grid[-1]:
        return secs, ""  # run.json ahead of the log (lines lost, or from before a resume): nothing to compare
    gap = wall - float(secs[grid <= ep].sum())
    if abs(gap) <= max(1.0, 1e-3 * wall):
        return secs, ""
    if gap < 0:  # while a run trains, run.json may be stale in either direction: only said once it stopped
        return secs, ("" if run.status == "running" else
                      f"the logged epoch times up to epoch {fmt_x(ep)} add up to {-gap:.0f} s more than run.json's "
                      f"wall_seconds ({wall:.0f} s); the logged times are used")
    bs = batch_size(run)
    step, ips = run.column("train", "step"), run.column("train", "img_per_s")
    short = pd.Series(dtype=float)
    if bs and step is not None and ips is not None:
        steps = step[~step.index.duplicated(keep="last")].reindex(grid)
        before = steps.shift(1)
        if grid[0] == 1:
            before.iloc[0] = 0.0
        trained = (steps - before) * bs
        timed = ips[~ips.index.duplicated(keep="last")].reindex(grid) * secs
        short = (trained - timed)
        short = short[(short > bs / 2) & (short.index <= ep + 1)]
    if not len(short):
        return secs, (f"run.json's wall_seconds is {gap:.0f} s more than the logged epoch times up to epoch "
                      f"{fmt_x(ep)} (training in an epoch cut short and not logged yet); the axis follows the "
                      f"logged times")
    secs = secs.copy()
    secs.loc[short.index] += gap * short / short.sum()
    eps = ", ".join(fmt_x(x) for x in short.index[:8]) + (" …" if len(short) > 8 else "")
    return secs, (f"epoch(s) {eps} resumed mid-epoch: the training before the interruption ({gap:.0f} s, "
                  f"run.json's wall_seconds minus the logged epoch times) is added to them")


def _pokelab_kimg(run: Run) -> tuple[XMap | None, str]:
    bs = batch_size(run)
    if not bs:
        return None, "no batch_size in run.json's config"
    # eval lines carry the step of their epoch too; where the two disagree the train line counts
    parts = [df[["x", "step"]] for df in (run.evals, run.train) if "step" in df.columns and len(df)]
    if not parts:
        return None, "no step in metrics.jsonl"
    xs = pd.concat(parts).apply(pd.to_numeric, errors="coerce").dropna()
    if not len(xs):
        return None, "no step in metrics.jsonl"
    xs = xs.drop_duplicates("x", keep="last").sort_values("x")
    native, values = _start(xs["x"].to_numpy(dtype=float), xs["step"].to_numpy(dtype=float) * bs / 1000.0)
    notes = []
    if run.translate:
        notes.append("images of the source domain (A): step × batch size; every step also draws as many target "
                     "(B) images")
    return XMap("kimg", native, values, notes), ""


def _stylegan_hours(run: Run) -> tuple[XMap | None, str]:
    tick = run.column("train", "tick_seconds")
    if tick is None:
        return None, "no Timing/sec_per_tick or Timing/sec_per_kimg in stats.jsonl"
    native, values = _start(tick.index.to_numpy(dtype=float), np.cumsum(tick.to_numpy()) / 3600.0)
    return XMap("hours", native, values,
                ["training time: the sum of Timing/sec_per_tick (snapshots and metrics excluded)"]), ""


def x_map(run: Run, axis: str) -> tuple[XMap | None, str]:
    """How to put a run on ``axis`` ("hours" or "kimg"); (None, why) when the run did not log what it takes.

    - hours (training wall clock, evaluation excluded): pokelab — the cumulative ``epoch_seconds`` of the
      train lines (see ``_unlogged_time`` for epochs resumed mid-epoch); stylegan2-ada — the cumulative
      ``Timing/sec_per_tick``; lightweight-gan — not logged.
    - kimg (images seen / 1000): pokelab — step x ``config.batch_size`` (translation: source-domain images);
      stylegan2-ada — its own kimg; lightweight-gan — its batch size is not in the results folder.
    """
    if axis not in ("hours", "kimg"):
        raise ValueError(f"unknown x axis {axis!r} (hours or kimg)")
    if run.tool == "pokelab":
        return _pokelab_hours(run) if axis == "hours" else _pokelab_kimg(run)
    if run.tool == "stylegan2-ada":
        return _stylegan_hours(run) if axis == "hours" else (XMap("kimg", identity=True), "")
    if run.tool == "lightweight-gan":
        return None, ("lightweight-gan logs no training time" if axis == "hours" else
                      "lightweight-gan's results folder does not record the batch size")
    return None, f"{run.tool} runs cannot be put on this axis"


def _remap_frame(df: pd.DataFrame, m: XMap) -> pd.DataFrame:
    if "x" not in df.columns or not len(df):
        return df
    out = df.copy()
    out["x"] = m(out["x"].to_numpy(dtype=float))
    return out[out["x"].notna()].reset_index(drop=True)


def on_axis(run: Run, axis: str) -> tuple[Run, str]:
    """The run for figures against ``axis`` ("epoch": each run's own unit, unchanged): a copy whose train and
    eval frames, events and grids carry x on that axis and whose ``x_unit`` is the axis, and "". A run that
    cannot be put there comes back unchanged (on its own unit) with the reason."""
    if axis == "epoch" or (run.x_unit == axis):
        return run, ""
    m, why = x_map(run, axis)
    if m is None:
        return run, why
    if m.identity:
        return run, ""
    events = [{**e, "x": m.at(e.get("x"))} for e in run.events]
    samples = [(v, p) for x, p in run.samples if (v := m.at(x)) is not None]
    return (replace(run, x_unit=m.unit, train=_remap_frame(run.train, m), evals=_remap_frame(run.evals, m),
                    events=events, samples=samples, notes=run.notes + m.notes), "")


def points_on_axis(run: Run, axis: str, pts: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
    """(x, y) points of a run against its own x (e.g. the grid diversity by epoch) put on ``axis``, as
    ``on_axis`` does with its frames; unchanged where the run stays on its own unit."""
    if not pts or axis == "epoch" or run.x_unit == axis:
        return pts
    m, _ = x_map(run, axis)
    if m is None or m.identity:
        return pts
    return [(v, y) for x, y in pts if (v := m.at(x)) is not None]


def training_hours(run: Run) -> float | None:
    """Total training time of a run so far in hours, evaluation excluded: pokelab — the larger of run.json's
    ``wall_seconds`` (it includes an epoch cut short and not logged yet, but lags the log by some epochs while
    the run trains) and the logged epoch times; stylegan2-ada — the sum of its tick times."""
    m, _ = x_map(run, "hours")
    ends = [v for v in (m.end if m is not None else None,
                        run.wall_seconds / 3600.0 if run.tool == "pokelab" and run.wall_seconds is not None else None)
            if v is not None]
    return max(ends) if ends else None


def image_size(run: Run) -> int | None:
    """The training resolution (pokelab: config.image_size; stylegan2-ada: the dataset's resolution)."""
    cfg = run.info.get("config") if isinstance(run.info.get("config"), dict) else {}
    ts = run.info.get("training_set_kwargs") if isinstance(run.info.get("training_set_kwargs"), dict) else {}
    v = cfg.get("image_size", ts.get("resolution"))
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def eval_count(run: Run) -> int | None:
    """Samples per evaluation: the last logged ``eval_n``, else config.eval_n; stylegan2-ada: from the metric's
    name (fid50k_full: 50,000)."""
    n, _ = last_value(run, "evals", "eval_n")
    if n is not None:
        return int(n)
    cfg = run.info.get("config") if isinstance(run.info.get("config"), dict) else {}
    if isinstance(cfg.get("eval_n"), int):
        return int(cfg["eval_n"])
    for c in run.evals.columns:
        mt = re.match(r"^fid(\d+)k", str(c))
        if mt:
            return int(mt.group(1)) * 1000
    return None


# ---- what FID can be compared with: kind, image size, samples per evaluation ---------------------------
#: FID is only comparable between evaluations of the same kind (a translation run's FID scores its outputs
#: against the target set), at the same image size and with the same number of samples (FID is biased
#: upwards below ~2048 samples, by an amount that depends on the set). KID is unbiased in the sample count but
#: still depends on the kind and the image size; the figures keep both in the same panels.
class FidGroup(NamedTuple):
    kind: str
    size: int | None
    n: int | None

    @property
    def label(self) -> str:
        size = f"{self.size} px" if self.size else "image size unknown"
        n = f"n = {self.n:,}" if self.n else "sample count unknown"
        return f"{self.kind} · {size} · {n}"

    def sort_key(self) -> tuple:
        return (KINDS.index(self.kind) if self.kind in KINDS else len(KINDS), self.kind, self.size is None,
                self.size or 0, self.n is None, self.n or 0)


def _fallback_count(run: Run) -> int | None:
    """Samples per evaluation where a line does not say: config.eval_n, else the metric's name (fid50k_full)."""
    cfg = run.info.get("config") if isinstance(run.info.get("config"), dict) else {}
    n = cfg.get("eval_n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    for c in run.evals.columns:
        mt = re.match(r"^fid(\d+)k", str(c))
        if mt:
            return int(mt.group(1)) * 1000
    return None


def eval_counts(run: Run) -> pd.Series:
    """Samples of each evaluation (a float per row of ``run.evals``, NaN where unknown): the line's ``eval_n``,
    else ``_fallback_count``. A run can mix counts (``pokelab eval RUN --log --n 2000`` after a 500-sample run)."""
    fb = _fallback_count(run)
    fill = float(fb) if fb else np.nan
    if "eval_n" in run.evals.columns:
        n = pd.to_numeric(run.evals["eval_n"], errors="coerce").astype(float)
        n = n.where(n > 0).fillna(fill)
    else:
        n = pd.Series(fill, index=run.evals.index, dtype=float)
    return n.reset_index(drop=True)


def fid_group(run: Run) -> FidGroup:
    """The group of a run's best FID (runs table, Compare): kind, image size and the sample count of the
    evaluation that reached it (without a FID: of the latest evaluation)."""
    _, bx = best_fid(run)
    if bx is None:
        return FidGroup(run.kind, image_size(run), eval_count(run))
    at = eval_counts(run)[(run.evals["x"] == bx).to_numpy()]
    n = at.iloc[0] if len(at) else np.nan
    return FidGroup(run.kind, image_size(run), None if n != n else int(n))


def fid_panels(runs: Iterable[Run], metrics: tuple[str, ...] = ("fid", "kid")) -> list[tuple[FidGroup, list[Run]]]:
    """The runs that logged any of ``metrics``, split into FidGroups (ordered: kind, size, n; unknowns last). A run
    whose evaluations used several sample counts appears in each of their groups, with only those evaluations
    (a copy of the run whose ``evals`` are filtered). One figure per group never puts incomparable values on one
    axis."""
    groups: dict[FidGroup, list[Run]] = {}
    for r in runs:
        ev = r.evals
        have = [m for m in metrics if m in ev.columns]
        if not have or not len(ev):
            continue
        valid = ev[have].apply(pd.to_numeric, errors="coerce").notna().any(axis=1).to_numpy()
        if not valid.any():
            continue
        ns = eval_counts(r).to_numpy()
        size = image_size(r)
        seen = []
        for n in ns[valid]:
            key = None if n != n else int(n)
            if key not in seen:
                seen.append(key)
        for n in seen:
            mask = np.isnan(ns) if n is None else (ns == n)
            sub = r if mask.all() else replace(r, evals=ev[mask].reset_index(drop=True))
            groups.setdefault(FidGroup(r.kind, size, n), []).append(sub)
    return sorted(groups.items(), key=lambda kv: kv[0].sort_key())


def fid_ranking(runs: Iterable[Run]) -> list[tuple[FidGroup, list[Run]]]:
    """Runs with a FID ranked by best FID within their group (``fid_group``), largest group first: best FID
    ranks runs only within a kind, image size and sample count."""
    groups: dict[FidGroup, list[Run]] = {}
    for r in runs:
        if best_fid(r)[0] is not None:
            groups.setdefault(fid_group(r), []).append(r)
    ranked = [(g, sorted(rs, key=lambda r: best_fid(r)[0])) for g, rs in groups.items()]
    return sorted(ranked, key=lambda gr: (-len(gr[1]), gr[0].sort_key()))


# ---- judging -------------------------------------------------------------------------------------
def collapse_points(run: Run) -> tuple[list[float], str]:
    """x values where mode collapse was flagged, and where the flag came from ('logged', 'derived', '')."""
    ev = run.evals
    if "collapse" in ev.columns:
        flag = pd.to_numeric(ev["collapse"], errors="coerce")
        return [float(x) for x in ev.loc[flag.fillna(0) > 0.5, "x"]], "logged"
    if {"ms_ssim/fake", "ms_ssim/real"} <= set(ev.columns):
        f = pd.to_numeric(ev["ms_ssim/fake"], errors="coerce")
        r = pd.to_numeric(ev["ms_ssim/real"], errors="coerce")
        return [float(x) for x in ev.loc[f > r + COLLAPSE_MARGIN, "x"]], "derived"
    return [], ""


def last_collapse(run: Run) -> tuple[bool | None, float | None]:
    """The collapse flag of the latest evaluation that measured it (the logged flag, else derived from MS-SSIM
    as ``collapse_points`` does) and that evaluation's x; (None, None) when no evaluation measured it."""
    ev = run.evals
    if "collapse" in ev.columns:
        flag = pd.to_numeric(ev["collapse"], errors="coerce")
    elif {"ms_ssim/fake", "ms_ssim/real"} <= set(ev.columns):
        f = pd.to_numeric(ev["ms_ssim/fake"], errors="coerce")
        r = pd.to_numeric(ev["ms_ssim/real"], errors="coerce")
        flag = (f > r + COLLAPSE_MARGIN).astype(float).where(f.notna() & r.notna())
    else:
        return None, None
    known = flag[flag.notna()]
    if not len(known):
        return None, None
    i = known.index[-1]
    return bool(known.iloc[-1] > 0.5), float(ev.loc[i, "x"])


def d_balance(run: Run, frac: float = 0.1, min_points: int = 5, max_points: int = 50) -> dict[str, Any] | None:
    """D accuracy over the last window: the last ``frac`` of the logged points (at least ``min_points``,
    at most ``max_points``). None when the run did not log D accuracy."""
    tr = run.train
    if not {"acc/D_real", "acc/D_fake"} <= set(tr.columns):
        return None
    df = tr[["x", "acc/D_real", "acc/D_fake"]].apply(pd.to_numeric, errors="coerce").dropna()
    if not len(df):
        return None
    w = df.iloc[-_window(len(df), frac, min_points, max_points):]
    real, fake = float(w["acc/D_real"].mean()), float(w["acc/D_fake"].mean())
    overall = (real + fake) / 2
    if overall > 0.5 + DRIFT_TOL:
        state = "D winning"
    elif overall < 0.5 - DRIFT_TOL:
        state = "D losing"
    elif abs(real - fake) > SPLIT_TOL:
        state = "D one-sided"
    else:
        state = "balanced"
    return {"real": real, "fake": fake, "overall": overall, "points": len(w),
            "from": float(w["x"].iloc[0]), "to": float(w["x"].iloc[-1]), "state": state}


def init_phase_end(run: Run) -> float | None:
    """CartoonGAN: the first epoch after the reconstruction-only initialisation (``init_phase`` 1 -> 0)."""
    s = run.column("train", "init_phase")
    if s is None or not (s > 0.5).any():
        return None
    after = s.index[(s <= 0.5) & (s.index > s.index[s > 0.5].max())]
    return float(after[0]) if len(after) else None


def translation_series(run: Run) -> dict[str, dict[str, pd.Series]]:
    """The per-direction losses a translation run logged, by figure: {title: {label: series}}."""
    out: dict[str, dict[str, pd.Series]] = {}
    for pair in TRANSLATION_PAIRS:
        got = {label: s for key, label in pair.train if (s := run.column("train", key)) is not None}
        got.update({label: s for key, label in pair.evals if (s := run.column("evals", key)) is not None})
        if got:
            out[pair.title] = got
    return out


def translation_pairs(runs: Iterable[Run]) -> list[Pair]:
    """The rows of TRANSLATION_PAIRS of which any of the runs logged a train series (either side)."""
    runs = list(runs)
    return [p for p in TRANSLATION_PAIRS if any(r.column("train", key) is not None for r in runs for key, _ in p.train)]


def pair_keys() -> set[str]:
    """The train keys drawn in the per-direction figures."""
    return {key for p in TRANSLATION_PAIRS for key, _ in p.train}


def _window(n: int, frac: float = 0.1, min_points: int = 5, max_points: int = 50) -> int:
    """Points in a judging window: ``frac`` of the logged points, at least ``min_points``, at most ``max_points``."""
    return int(min(max_points, max(min_points, round(frac * n))))


def cycle_trend(run: Run, key: str) -> dict[str, Any] | None:
    """A cycle loss over training: the mean of the first and of the last window (as ``d_balance``), the lowest
    window mean (rolling), and a state: "falling", "not falling" (last window >= first window) or "rising
    again" (last window > CYCLE_RISE x the lowest). CartoonGAN's initialisation epochs are left out.
    None when not logged; state "too short" with fewer than two windows of points."""
    s = run.column("train", key)
    if s is None:
        return None
    end = init_phase_end(run)
    if end is not None:
        s = s[s.index >= end]
    k = _window(len(s))
    if len(s) < 2 * k:
        return {"key": key, "points": len(s), "state": "too short"}
    v = s.to_numpy()
    early, late = float(v[:k].mean()), float(v[-k:].mean())
    roll = np.convolve(v, np.ones(k) / k, mode="valid")
    i = int(np.argmin(roll))
    state = "not falling" if late >= early else ("rising again" if late > CYCLE_RISE * roll[i] else "falling")
    return {"key": key, "points": len(s), "k": k, "early": early, "late": late, "best": float(roll[i]),
            "best_from": float(s.index[i]), "best_to": float(s.index[i + k - 1]),
            "from": float(s.index[0]), "to": float(s.index[-1]), "state": state}


def _cycle_verdict(run: Run) -> dict[str, str] | None:
    trends = [t for key in ("loss/cycle_A", "loss/cycle_B") if (t := cycle_trend(run, key)) is not None]
    if not trends:
        return None
    u = run.x_unit
    parts, warn = [], False
    for t in trends:
        name = t["key"][5:]
        if t["state"] == "too short":
            parts.append(f"{name}: too few {u}s to judge ({t['points']})")
            continue
        head = f"{name} {t['early']:.3g} → {t['late']:.3g} (mean of the first / last {t['k']} {u}s)"
        if t["state"] == "not falling":
            warn = True
            parts.append(f"{head}: not falling — the generators do not learn to reconstruct their input")
        elif t["state"] == "rising again":
            warn = True
            parts.append(f"{head}: rising again, {t['late'] / t['best']:.1f}× its lowest ({t['best']:.3g} over "
                         f"{u} {fmt_x(t['best_from'])}–{fmt_x(t['best_to'])}) — reconstruction is being traded "
                         f"for the adversarial loss")
        else:
            parts.append(f"{head}: falling")
    ev, ex = last_value(run, "evals", "cycle/A")
    if ev is not None:
        parts.append(f"eval cycle/A {ev:.3g} at {u} {fmt_x(ex)}")
    return {"topic": "cycle", "level": "warn" if warn else "ok" if any(t["state"] != "too short" for t in trends)
            else "info", "text": "; ".join(parts)}


def _input_kept_verdict(run: Run, grid_check: dict[str, Any] | None) -> dict[str, str]:
    """From the latest grid's permutation test (studio.grids.translation_check): do the outputs look more like
    their own inputs than like the other inputs of the grid?"""
    topic = "input kept"
    if grid_check is None:
        return {"topic": topic, "level": "info", "text": "not checked (no sample grid)"}
    if grid_check.get("error"):
        return {"topic": topic, "level": "info", "text": f"not checked: {grid_check['error']}"}
    n, p = int(grid_check["rows"]), float(grid_check["p"])
    at = f" ({run.x_unit} {fmt_x(grid_check['x'])} grid)" if grid_check.get("x") is not None else ""
    sims = (f"SSIM output↔own input {grid_check['matched']:.3f}, ↔ other inputs {grid_check['mismatched']:.3f}, "
            f"permutation test p = {p:.2g} over {n} rows")
    if n < CORRESPONDENCE_MIN_ROWS:
        return {"topic": topic, "level": "info", "text": f"too few rows in the grid to test ({n}){at}"}
    if p < CORRESPONDENCE_ALPHA:
        return {"topic": topic, "level": "ok", "text": f"outputs follow their inputs{at}: {sims}"}
    return {"topic": topic, "level": "warn",
            "text": f"outputs look no more like their own inputs than like the other inputs{at} ({sims}): the "
                    f"translator may ignore its input (mode collapse in translation)"}


def _lpips_verdict(run: Run) -> dict[str, str] | None:
    """LPIPS input↔output and output↔target as numbers (info only: their level depends on the image size and
    the two domains, so no threshold is applied — docs/studio.md)."""
    c, cx = last_value(run, "evals", "lpips/content")
    t, tx = last_value(run, "evals", "lpips/target")
    if c is None and t is None:
        return None
    u, parts = run.x_unit, []
    if c is not None:
        first = run.column("evals", "lpips/content")
        parts.append(f"input↔output {c:.3f} at {u} {fmt_x(cx)}" +
                     (f" (first {first.iloc[0]:.3f} at {u} {fmt_x(first.index[0])})" if len(first) > 1 else "") +
                     "; lower = more of the input kept")
    level = "info"
    if t is not None:
        n, _ = last_value(run, "evals", "paired_n")
        base, _ = last_value(run, "evals", "lpips/target_input")
        parts.append(f"output↔true target {t:.3f}" + (f" over {n:.0f} pairs" if n is not None else "") +
                     "; lower is better")
        if base is not None:
            # the untranslated inputs against the same targets: a translator that does not beat doing nothing
            # has learnt nothing about the pairs, whatever the image size
            parts.append(f"untranslated inputs score {base:.3f}" +
                         (": the outputs are closer to the true targets" if t < base else
                          ": the outputs are no closer to the true targets than the inputs themselves"))
            level = "ok" if t < base else "warn"
    return {"topic": "LPIPS", "level": level, "text": "; ".join(parts)}


def _baseline_verdict(run: Run) -> dict[str, str] | None:
    """The outputs' FID against the untranslated inputs' FID (``fid_input``, the same target set and sample
    count): a translator whose outputs look less like the target domain than its inputs did has made things
    worse, whatever the absolute level. Both from the same evaluation (the latest that logged both). A run
    with a FID but no ``fid_input`` (evaluated before the key existed) gets "baseline unknown" and the command
    that adds it: the studio never imports torch, so it cannot compute it on demand."""
    f, fx = last_value(run, "evals", "fid")
    if f is None:
        return None
    ev = run.evals
    both = pd.DataFrame()
    if "fid_input" in ev.columns:
        both = ev[["x", "fid", "fid_input"]].apply(pd.to_numeric, errors="coerce").dropna()
    if not len(both):
        return {"topic": "vs. doing nothing", "level": "info",
                "text": f"baseline unknown: this run's evaluations did not log fid_input (the untranslated inputs' "
                        f"FID against the same target set, with the same samples), so the outputs' FID {f:.1f} at "
                        f"{run.x_unit} {fmt_x(fx)} cannot be told from what doing nothing scores. Add it with "
                        f"`pokelab eval {run.path} --log` once the run has stopped (an evaluation of the final "
                        f"export at its last epoch, logged with fid_input)"}
    f, fx, base = float(both["fid"].iloc[-1]), float(both["x"].iloc[-1]), float(both["fid_input"].iloc[-1])
    better = f < base
    return {"topic": "vs. doing nothing", "level": "ok" if better else "warn",
            "text": f"FID of the outputs {f:.1f} at {run.x_unit} {fmt_x(fx)}, of the untranslated inputs {base:.1f}"
                    + ("" if better else ": the outputs look less like the target set than the inputs do")}


def verdict(run: Run, grid_check: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Short judgement lines: FID, collapse, D balance; for translation runs the collapse line is replaced by
    "input kept" (``grid_check``: ``studio.grids.translation_check`` of the latest grid, with its ``x``, or
    {"error": why}) and cycle and LPIPS lines are added. Each: {topic, level (ok|warn|info), text}."""
    u = run.x_unit
    out: list[dict[str, str]] = []
    pts, src = collapse_points(run)
    kept = _input_kept_verdict(run, grid_check) if run.translate and not src else None
    baseline = _baseline_verdict(run) if run.translate else None
    bf, bx = best_fid(run)
    if bf is None:
        out.append({"topic": "FID", "level": "info", "text": "no FID logged"})
    else:
        last, lx = last_value(run, "evals", "fid")
        if lx == bx:
            level, text = "ok", f"best FID {bf:.2f} at {u} {fmt_x(bx)}, the latest evaluation (may still improve)"
        else:
            rise = (last - bf) / bf * 100 if bf else float("nan")
            level = "warn" if rise > 10 else "ok"
            text = (f"best FID {bf:.2f} at {u} {fmt_x(bx)}; last {last:.2f} at {u} {fmt_x(lx)} "
                    f"({rise:+.0f}% from the best)")
        # a collapsed generator is never a ✓, however its FID looks
        flagged_last, cx = last_collapse(run)
        where = [w for w, hit in ((f"the best-FID evaluation ({u} {fmt_x(bx)})", bx in pts),
                                  (f"the latest evaluation that measured it ({u} {fmt_x(cx)})",
                                   bool(flagged_last) and cx != bx)) if hit]
        if where:
            level = "warn"
            text += (f" — but mode collapse is flagged at {' and at '.join(where)}: the FID of a collapsed "
                     f"generator does not make a good run")
        elif kept is not None and kept["level"] == "warn":
            level = "warn"
            text += (" — but the outputs do not follow their inputs (input kept, below): the translator may "
                     "ignore them")
        elif baseline is not None and baseline["level"] == "warn":
            level = "warn"
            text += " — but no better than the untranslated inputs score (vs. doing nothing, below)"
        elif baseline is not None and baseline["level"] == "info" and level == "ok":
            level = "info"
            text += " (no do-nothing baseline to judge its level by: see below)"
        out.append({"topic": "FID", "level": level, "text": text})
    if kept is not None:
        out.append(kept)
    elif not src:
        out.append({"topic": "collapse", "level": "info", "text": "no diversity metric logged (MS-SSIM)"})
    elif not pts:
        out.append({"topic": "collapse", "level": "ok", "text": "no mode collapse flagged"})
    else:
        last_x = float(run.evals["x"].iloc[-1])
        still = " — still flagged at the last evaluation" if pts[-1] == last_x else " — not flagged at the end"
        out.append({"topic": "collapse", "level": "warn",
                    "text": f"mode collapse flagged at {len(pts)} evaluation(s), first at {u} {fmt_x(pts[0])}{still}"
                            + (" (derived from MS-SSIM)" if src == "derived" else "")})
    b = d_balance(run)
    if b is None:
        out.append({"topic": "D balance", "level": "info", "text": "no D accuracy logged"})
    else:
        span = f"over {u} {fmt_x(b['from'])}–{fmt_x(b['to'])}"
        nums = f"real {b['real']:.2f}, fake {b['fake']:.2f}"
        text = {
            "balanced": f"D accuracy stays near 0.5 {span} ({nums})",
            "D winning": f"D accuracy drifted up to {b['overall']:.2f} {span} ({nums}): D is winning — "
                         "it may be memorising the small set (more augmentation or an earlier epoch may help)",
            "D losing": f"D accuracy fell to {b['overall']:.2f} {span} ({nums}): D is being fooled or too weak",
            "D one-sided": f"D calls almost everything {'real' if b['real'] > b['fake'] else 'fake'} {span} ({nums})",
        }[b["state"]]
        out.append({"topic": "D balance", "level": "ok" if b["state"] == "balanced" else "warn", "text": text})
    if run.translate:
        out += [v for v in (_cycle_verdict(run), _lpips_verdict(run), baseline) if v is not None]
    return out


def ema(values: np.ndarray | list[float], alpha: float) -> np.ndarray:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing); NaNs are carried over
    without updating the average. alpha = 0 returns the values."""
    v = np.asarray(values, dtype=float)
    if alpha <= 0 or not len(v):
        return v.copy()
    if not 0 <= alpha < 1:
        raise ValueError("smoothing must be in [0, 1)")
    out = np.empty_like(v)
    acc, weight = 0.0, 0.0
    for i, x in enumerate(v):
        if x == x:
            acc = alpha * acc + (1 - alpha) * x
            weight = alpha * weight + (1 - alpha)
        out[i] = acc / weight if weight > 0 else np.nan
    return out


def loss_keys(runs: Iterable[Run]) -> list[str]:
    """Every ``loss/*`` column that any of the runs logged, D and G first."""
    keys: set[str] = set()
    for r in runs:
        keys |= {c for c in r.train.columns if c.startswith("loss/") and pd.api.types.is_numeric_dtype(r.train[c])}
    first = [k for k in ("loss/D", "loss/G") if k in keys]
    return first + sorted(keys - set(first))


def nearest_sample(run: Run, x: float) -> tuple[float, Path] | None:
    """The sample grid closest to x (the earlier one on a tie)."""
    if not run.samples:
        return None
    xs = np.array([s[0] for s in run.samples])
    return run.samples[int(np.argmin(np.abs(xs - x)))]

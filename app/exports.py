"""Which engine exports the app serves, loaded once per process, and the training sets behind them.

Discovery reads only each export's config.json (``engines.runs.export.read_export_config``); weights are
loaded on first use and kept (one engine object per export and process, shared by all requests:
sampling is read-only in eval mode). A folder given on the command line may be an export, a run
folder (its ``export/``), or a folder holding either one level down (``checkpoints/<name>/`` and
``checkpoints/runs/<run-id>/``); an export reachable twice (a shipped copy of a run's export) is
listed once.

Each export also carries the facts of its run's last evaluation (``ExportEntry.quality``: FID, KID, the
sample count, MS-SSIM and the mode-collapse flag of the last ``eval`` line of the run's metrics.jsonl, read
with ``engines.runs.folder.read_metrics`` once per scan). An export whose last evaluation flagged collapse is left
out of the default export lists and out of the blind review (``ExportCatalog.listed``, ``app.review_book``);
an export without an evaluation ("not evaluated") stays available.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engines.runs.export import ExportError, read_export_config, resolve_export_dir
from engines.runs.folder import BEST_DIR, RunFormatError, best_dir, is_run_dir, read_info, read_metrics, run_of_best

from .appconfig import REPO_ROOT
from .inputs import AppInputError

log = logging.getLogger("pokelab.app")


#: gap between generated and real mean pairwise MS-SSIM that flags collapse when an evaluation logged the two
#: MS-SSIM values but no ``collapse`` key; the trainer's value (engines.metrics.msssim.COLLAPSE_MARGIN, not
#: imported: that package imports torch and the metrics stack) and the studio's
COLLAPSE_MARGIN = 0.1


def _number(v: Any) -> float | None:
    """A finite float from a metrics value, else None (null, text, bool, NaN, the 1e308 the run writer
    writes for infinity)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) and abs(v) < 1e300 else None


@dataclass(frozen=True)
class Quality:
    """The last evaluation of the run behind an export (its metrics.jsonl's last ``eval`` line).

    ``evaluated`` is False when there is no such line (no run folder found, no metrics.jsonl, only
    training lines); ``problem`` then says which. ``collapse`` is None when the evaluation did not
    measure diversity (translation runs, ``--eval-metrics`` without MS-SSIM)."""
    evaluated: bool = False
    problem: str = "not evaluated"
    run_dir: str | None = None
    epoch: int | None = None
    step: int | None = None
    fid: float | None = None
    kid: float | None = None
    kid_std: float | None = None
    eval_n: int | None = None
    ms_ssim_fake: float | None = None
    ms_ssim_real: float | None = None
    collapse: bool | None = None
    collapse_from: str = ""          # 'logged' (the trainer's flag) | 'derived' (from the two MS-SSIM values) | ''
    evaluations: int = 0             # eval lines in the log
    warnings: tuple[str, ...] = ()   # malformed or partial lines skipped by the reader

    @property
    def collapsed(self) -> bool:
        return bool(self.collapse)

    @classmethod
    def missing(cls, problem: str, run_dir: Path | None = None, warnings: tuple[str, ...] = ()) -> "Quality":
        return cls(problem=problem, run_dir=str(run_dir) if run_dir else None, warnings=warnings)

    @classmethod
    def from_eval(cls, rec: dict[str, Any], run_dir: Path, evaluations: int,
                  warnings: tuple[str, ...] = ()) -> "Quality":
        fake, real = _number(rec.get("ms_ssim/fake")), _number(rec.get("ms_ssim/real"))
        flag, source = rec.get("collapse"), ""
        if isinstance(flag, bool) or _number(flag) is not None:
            collapse, source = float(flag) > 0.5, "logged"
        elif fake is not None and real is not None:
            collapse, source = fake > real + COLLAPSE_MARGIN, "derived"
        else:
            collapse = None
        n, epoch, step = _number(rec.get("eval_n")), _number(rec.get("epoch")), _number(rec.get("step"))
        return cls(evaluated=True, problem="", run_dir=str(run_dir),
                   epoch=int(epoch) if epoch is not None else None, step=int(step) if step is not None else None,
                   fid=_number(rec.get("fid")), kid=_number(rec.get("kid")), kid_std=_number(rec.get("kid_std")),
                   eval_n=int(n) if n is not None else None, ms_ssim_fake=fake, ms_ssim_real=real,
                   collapse=collapse, collapse_from=source, evaluations=evaluations, warnings=warnings)

    # ---- texts -------------------------------------------------------------------------------------
    def scores(self) -> str:
        """'FID 243.9 · KID 0.231 · n=500', or 'not evaluated'."""
        if not self.evaluated:
            return "not evaluated"
        bits = []
        if self.fid is not None:
            bits.append(f"FID {self.fid:.1f}")
        if self.kid is not None:
            bits.append(f"KID {self.kid:.3g}")
        if not bits:
            bits.append("no FID/KID logged")
        if self.eval_n is not None:
            bits.append(f"n={self.eval_n}")
        return " · ".join(bits)

    def collapse_text(self, detail: bool = False) -> str:
        """'⚠ collapsed' / 'no collapse' ('' when not measured); ``detail`` adds the two MS-SSIM values."""
        if self.collapse is None:
            return ""
        text = "⚠ collapsed" if self.collapse else "no collapse"
        if detail and self.ms_ssim_fake is not None and self.ms_ssim_real is not None:
            text += f" (MS-SSIM of samples {self.ms_ssim_fake:.2f}, of real images {self.ms_ssim_real:.2f})"
        return text

    def short(self) -> str:
        """Scores and collapse flag for a picker label: 'FID 511.9 · KID 0.801 · n=500 · ⚠ collapsed'."""
        return " · ".join(b for b in (self.scores(), self.collapse_text()) if b)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        d["collapsed"] = self.collapsed
        return d


def public_path(path: str | Path | None, roots: Iterable[Path] = ()) -> str | None:
    """How the app names a server path to the outside (HTTP routes, the About tab): relative to the
    repository, else ``<root folder name>/<relative path>`` under one of the folders it was given, else only
    the last two components. Never an absolute path."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    for base, prefix in [(REPO_ROOT, None)] + [(Path(r), Path(r).name) for r in roots]:
        try:
            rel = p.relative_to(base)
        except ValueError:
            try:
                rel = p.resolve().relative_to(Path(base).resolve())
            except (ValueError, OSError):
                continue
        if prefix is None:
            return str(rel)
        return str(Path(prefix) / rel) if str(rel) != "." else prefix
    return str(Path("…", *p.parts[-2:])) if len(p.parts) > 2 else p.name


def public_source_id(source: str, roots: Iterable[Path] = ()) -> str:
    """A review source id ('dcgan:/abs/export', 'real:name') with any absolute path made public."""
    head, sep, rest = str(source).partition(":")
    if sep and Path(rest).is_absolute():
        return f"{head}:{public_path(rest, roots)}"
    return str(source)


def find_run_dir(export_dir: Path, run_id: Any, roots: Iterable[Path] = ()) -> tuple[Path | None, str]:
    """The run folder behind an export: RUN/export's RUN, else a folder named after ``trained.run_id`` in
    one of the given roots (``ROOT/<run_id>``, ``ROOT/runs/<run_id>``: a copy of an export shipped beside its
    run). A run folder counts only when its id (run.json's ``run_id``, else its name) is the export's
    ``trained.run_id``, so another run's metrics are never shown. Returns (folder or None, why not)."""
    rid = str(run_id) if isinstance(run_id, str) and run_id.strip() else None
    if rid is not None and (Path(rid).name != rid or rid in (".", "..")):
        rid = None                     # a recorded id that is a path: never follow it
    cands: list[Path] = []
    if export_dir.name in ("export", BEST_DIR):
        cands.append(export_dir.parent)
    if rid:
        for r in roots:
            r = Path(r)
            if r.is_dir():
                cands += [r / rid, r / "runs" / rid]
    why = "no run folder with metrics found"
    for c in dict.fromkeys(cands):
        if not is_run_dir(c):
            continue
        if rid is None:
            return (c, "") if c == export_dir.parent else (None, why)
        try:
            recorded = read_info(c).get("run_id")
        except RunFormatError:
            recorded = None
        if rid in (recorded, c.name):
            return c, ""
        why = f"the export names run {rid}, not {recorded or c.name}"
    return None, why


def read_quality(run_dir: Path | None, problem: str = "no run folder with metrics found",
                 best_epoch: int | None = None) -> Quality:
    """The last evaluation of a run (``engines.runs.folder.read_metrics``: malformed and partial lines are skipped
    with a warning, never an error). Never raises: an unreadable log gives 'not evaluated' with the reason.
    ``best_epoch``: the quality of the run's best/ (from that epoch): its own ``pokelab eval RUN/best --log``
    line when there is one, else the trainer's evaluation that chose it."""
    if run_dir is None:
        return Quality.missing(problem)
    if not (Path(run_dir) / "metrics.jsonl").is_file():
        return Quality.missing("no metrics.jsonl in its run", run_dir)
    try:
        m = read_metrics(run_dir)
    except OSError as e:
        return Quality.missing(f"metrics.jsonl unreadable ({e.strerror or e})", run_dir)
    warnings = tuple(m.warnings)
    if best_epoch is not None:
        at = [r for r in m.best_eval if r.get("epoch") == best_epoch] or \
             [r for r in m.eval if r.get("epoch") == best_epoch and "eval_by" not in r]
        if not at:
            return Quality.missing(f"no evaluation of best/ (epoch {best_epoch}) logged", run_dir, warnings)
        return Quality.from_eval(at[-1], Path(run_dir), len(at), warnings)
    if not m.eval:
        return Quality.missing("no evaluation logged", run_dir, warnings)
    return Quality.from_eval(m.eval[-1], Path(run_dir), len(m.eval), warnings)


@dataclass
class ExportEntry:
    key: str                 # unique short name (the dropdown value)
    path: Path               # the export folder (resolved)
    config: dict[str, Any]   # its config.json
    quality: Quality = field(default_factory=Quality)   # its run's last evaluation (read once per scan)
    roots: tuple[Path, ...] = ()  # the folders the app was given (to name paths without their absolute part)

    @property
    def collapsed(self) -> bool:
        """Its run's last evaluation flagged mode collapse: not in the default lists, never in the review."""
        return self.quality.collapsed

    @property
    def engine_name(self) -> str:
        return str(self.config.get("engine", "?"))

    @property
    def kind(self) -> str:
        return str(self.config.get("kind") or "generate")

    @property
    def image_size(self) -> int:
        return int(self.config.get("image_size") or 0)

    @property
    def supports(self) -> set[str]:
        extra = self.config.get("extra") or {}
        sup = extra.get("supports") if isinstance(extra, dict) else None
        return {str(s) for s in sup} if isinstance(sup, (list, tuple)) else set()

    @property
    def vocabulary(self) -> list[str]:
        """A conditional export's labels (``extra.labels.vocabulary``, engines.labels); [] for the others."""
        labels = (self.config.get("extra") or {}).get("labels") if "labels" in self.supports else None
        vocab = labels.get("vocabulary") if isinstance(labels, dict) else None
        return [str(v) for v in vocab[:4096]] if isinstance(vocab, list) else []

    @property
    def trained(self) -> dict[str, Any]:
        t = self.config.get("trained")
        return t if isinstance(t, dict) else {}

    @property
    def dataset(self) -> dict[str, Any]:
        """The training set of what the engine makes (for a translation engine: its target domain B)."""
        d = self.trained.get("dataset")
        if isinstance(d, list):  # translation engines record (source, target); the target is what they make
            d = d[-1] if d else {}
        return d if isinstance(d, dict) else {}

    @property
    def source_dataset(self) -> dict[str, Any]:
        """A translation engine's input domain A (the export's ``trained.source_dataset``)."""
        d = self.trained.get("source_dataset") if self.kind == "translate" else None
        return d if isinstance(d, dict) else {}

    @property
    def directions(self) -> tuple[str, ...]:
        """Translation directions the export has ('AB', and 'BA' where the engine has both generators)."""
        if self.kind != "translate":
            return ()
        extra = self.config.get("extra") or {}
        dirs = extra.get("directions") if isinstance(extra, dict) else None
        return tuple(str(d) for d in dirs) if isinstance(dirs, (list, tuple)) and dirs else ("AB",)

    @property
    def has_attention(self) -> bool:
        extra = self.config.get("extra") or {}
        return self.kind == "translate" and isinstance(extra, dict) and bool(extra.get("attention"))

    def domain_names(self) -> tuple[str, str]:
        """('bw-sprites-96', 'dreamworld-256') for a translation export, ('A', 'B') when not recorded."""
        return (str(self.source_dataset.get("name") or "A"), str(self.dataset.get("name") or "B"))

    @property
    def display_path(self) -> str:
        try:
            return str(self.path.relative_to(REPO_ROOT))
        except ValueError:
            return str(self.path)

    @property
    def source_id(self) -> str:
        """How the review database names this export (e.g. 'dcgan:checkpoints/dcgan')."""
        return f"{self.engine_name}:{self.display_path}"

    def label(self) -> str:
        """Engine first, then its last evaluation: 'dcgan · FID 243.9 · KID 0.231 · n=500 · no collapse ·
        <key> · 64 px · 200 epochs · dreamworld-256'."""
        bits = [self.engine_name, self.quality.short(), self.key, f"{self.image_size} px"]
        ep = self.trained.get("epochs")
        if ep is not None:
            bits.append(f"{ep} epochs")
        if self.kind == "translate":
            bits.append(" → ".join(self.domain_names()))
        elif self.dataset.get("name"):
            bits.append(str(self.dataset["name"]))
        return " · ".join(bits)

    def facts(self) -> dict[str, Any]:
        """Training facts for the About tab and the export summary (only what the export records)."""
        t, ds = self.trained, self.dataset
        ec = self.config.get("engine_config") or {}
        return {
            "name": self.key,
            "engine": self.engine_name,
            "image_size": self.image_size,
            "epochs": t.get("epochs"),
            "steps": t.get("steps"),
            "batch_size": t.get("batch_size"),
            "dataset": ds.get("name"),
            "images": ds.get("count"),
            "device": t.get("device"),
            "run_id": t.get("run_id"),
            "lr": ec.get("lr"),
            "z_dim": ec.get("z_dim"),
            "supports": sorted(self.supports),
            "folder": public_path(self.path, self.roots),
            # translation exports: the input domain, the directions, whether there are attention maps
            "source_dataset": self.source_dataset.get("name"),
            "directions": list(self.directions),
            "attention": self.has_attention,
            # the run's last evaluation (FID, KID, n, MS-SSIM, collapse flag; 'evaluated': False when none)
            "evaluation": dict(self.quality.as_dict(), run_dir=public_path(self.quality.run_dir, self.roots)),
            "collapsed": self.collapsed,
        }


@dataclass
class RealSet:
    """A training set as the app uses it: uint8 images at one size, with file names when known."""
    images: Any              # uint8 tensor [N, 3, S, S]
    key: str
    name: str
    files: list[str] = field(default_factory=list)
    note: str = ""

    def item(self, index: int) -> str:
        return self.files[index] if index < len(self.files) else f"#{index}"


class ExportCatalog:
    def __init__(self, roots: list[Path], device: str = "cpu", data_dirs: list[Path] | None = None):
        self.roots = [Path(r) for r in roots]
        self.device = device
        self.data_dirs = [Path(d) for d in (data_dirs or [])]
        self.entries: dict[str, ExportEntry] = {}
        self.problems: list[str] = []      # folders that looked like exports but could not be read
        self._engines: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._real: dict[tuple[str, int], RealSet | str] = {}
        self._real_lock = threading.Lock()
        self.scan()

    # ---- discovery --------------------------------------------------------------------------
    @staticmethod
    def _candidates(root: Path) -> list[Path]:
        if not root.is_dir():
            return [root] if root.name == "config.json" else []
        out = [root]
        kids = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        out += [k for k in kids if k.name != "runs"]
        runs = root / "runs"
        if runs.is_dir():
            out += sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))
        # each run's best/ (the trainer's best_metric export) after the run's own export
        with_best = []
        for cand in out:
            with_best.append(cand)
            if is_run_dir(cand) and (best_dir(cand) / "config.json").is_file():
                with_best.append(best_dir(cand))
        return with_best

    def scan(self) -> None:
        entries: dict[str, ExportEntry] = {}
        seen_paths: set[Path] = set()
        seen_runs: set[tuple] = set()
        problems: list[str] = []
        for root in self.roots:
            if not root.exists():
                if root != REPO_ROOT / "checkpoints":
                    problems.append(f"{root}: no such folder")
                continue
            for cand in self._candidates(root):
                looks = (cand / "config.json").is_file() or (cand.is_dir() and is_run_dir(cand)) \
                    or cand.name == "config.json"
                if not looks:
                    continue
                try:
                    d = resolve_export_dir(cand).resolve()
                    cfg = read_export_config(d)
                except ExportError as e:
                    if cand.is_dir() and is_run_dir(cand):
                        continue  # a run that has not written its export yet: nothing to serve
                    problems.append(str(e))
                    continue
                if d in seen_paths:
                    continue
                trained = cfg.get("trained") if isinstance(cfg.get("trained"), dict) else {}
                ident = (trained.get("run_id"), trained.get("epochs"), trained.get("steps"))
                if ident[0] and ident in seen_runs:
                    continue  # the same weights reachable as a shipped copy and as a run's export
                seen_paths.add(d)
                if ident[0]:
                    seen_runs.add(ident)
                best = run_of_best(d) is not None
                name = d.parent.name if d.name == "export" else f"{d.parent.name}-best" if best else d.name
                key, i = name, 2
                while key in entries:
                    key, i = f"{name}-{i}", i + 1
                run_dir, why = find_run_dir(d, trained.get("run_id"), self.roots)
                best_epoch = trained.get("epochs") if best and isinstance(trained.get("best"), dict) else None
                entries[key] = ExportEntry(key, d, cfg, read_quality(run_dir, why, best_epoch), tuple(self.roots))
        with self._lock:
            self.entries = entries
            self.problems = problems
        log.info("exports: %s", ", ".join(entries) or "none")

    def generators(self) -> list[ExportEntry]:
        """Every generation export, collapsed ones included (see ``listed`` for what a picker offers)."""
        return [e for e in self.entries.values() if e.kind == "generate"]

    def translators(self) -> list[ExportEntry]:
        return [e for e in self.entries.values() if e.kind == "translate"]

    def listed(self, kind: str = "generate", collapsed: bool = False) -> list[ExportEntry]:
        """What an export picker of ``kind`` offers, best first (so a picker opens on it): the exports whose
        last evaluation did not flag collapse, lowest KID first, then those without a KID (not evaluated
        included) in scan order; with ``collapsed`` the flagged ones follow, last."""
        of_kind = [e for e in self.entries.values() if e.kind == kind]
        healthy = sorted((e for e in of_kind if not e.collapsed),  # stable: ties keep the scan order
                         key=lambda e: (e.quality.kid is None, e.quality.kid or 0.0))
        return healthy + ([e for e in of_kind if e.collapsed] if collapsed else [])

    def collapsed(self, kind: str | None = None) -> list[ExportEntry]:
        """Exports whose run's last evaluation flagged mode collapse (of one kind, or all)."""
        return [e for e in self.entries.values() if e.collapsed and kind in (None, e.kind)]

    def get(self, key: str | None) -> ExportEntry:
        if not self.entries:
            raise AppInputError("No engine exports were found. Train one (pokelab train ENGINE --data DATA) and "
                                "start the app with --checkpoints pointing at its run or export folder.")
        if not key:
            raise AppInputError("Pick an engine export first.")
        e = self.entries.get(str(key))
        if e is None:
            raise AppInputError(f"Unknown export {key!r}; available: {', '.join(self.entries)}")
        return e

    def generator(self, key: str | None) -> ExportEntry:
        e = self.get(key)
        if e.kind != "generate":
            raise AppInputError(f"{e.key} is a {e.kind} engine ({e.engine_name}); pick a generation engine")
        return e

    def translator(self, key: str | None) -> ExportEntry:
        if not self.translators():
            raise AppInputError("No translation exports were found. Train one (pokelab train cyclegan --source "
                                "DIR_A --target DIR_B) and start the app with --checkpoints pointing at its run "
                                "or export folder.")
        e = self.get(key)
        if e.kind != "translate":
            raise AppInputError(f"{e.key} is a {e.kind} engine ({e.engine_name}); pick a translation engine")
        return e

    # ---- engines, loaded once ------------------------------------------------------------------
    def engine(self, key: str):
        """The loaded engine of an export (cached; concurrent first requests load it once)."""
        entry = self.get(key)
        eng = self._engines.get(entry.key)
        if eng is not None:
            return eng
        with self._lock:
            lock = self._locks.setdefault(entry.key, threading.Lock())
        with lock:
            eng = self._engines.get(entry.key)
            if eng is None:
                from engines.runs.export import load_export

                t0 = time.perf_counter()
                try:
                    eng = load_export(entry.path, device=self.device)
                except ExportError as e:
                    raise AppInputError(f"Could not load {entry.key}: {e}") from e
                except Exception as e:  # unknown engine, missing module: tell the user which export failed
                    raise AppInputError(f"Could not load {entry.key} ({entry.engine_name}): {e}") from e
                self._engines[entry.key] = eng
                log.info("loaded %s (%s) in %.2fs on %s", entry.key, entry.engine_name,
                         time.perf_counter() - t0, self.device)
        return eng

    def loaded(self) -> list[str]:
        return list(self._engines)

    # ---- the training sets behind an export --------------------------------------------------------
    @staticmethod
    def _recorded(entry: ExportEntry, role: str) -> dict[str, Any]:
        if role not in ("target", "source"):
            raise ValueError(f"role must be 'target' or 'source', not {role!r}")
        return entry.dataset if role == "target" else entry.source_dataset

    def dataset_path(self, entry: ExportEntry, role: str = "target") -> Path | None:
        """Where the export's training set (``role`` 'target': what it makes; 'source': a translation
        engine's inputs) is on this machine: the recorded path, else a folder of that name under --data."""
        ds = self._recorded(entry, role)
        src = ds.get("source")
        cands: list[Path] = []
        if src:
            cands.append(Path(str(src)))
        for d in self.data_dirs:
            if src:
                cands.append(d / Path(str(src)).name)
            if ds.get("name"):
                cands.append(d / str(ds["name"]))
        for c in cands:
            if c.exists():
                return c
        return None

    def real_set(self, entry: ExportEntry, size: int | None = None, role: str = "target") -> RealSet | None:
        """The export's training set at ``size`` px (default: the export's size), or None when it cannot
        be found or read here; ``real_set_problem`` then says why. ``role='source'``: a translation
        export's input domain."""
        size = int(size or entry.image_size)
        ck = (entry.key, size, role)
        with self._real_lock:
            got = self._real.get(ck)
            if got is None:
                got = self._load_real(entry, size, role)
                self._real[ck] = got
        return got if isinstance(got, RealSet) else None

    def real_set_problem(self, entry: ExportEntry, size: int | None = None, role: str = "target") -> str:
        got = self._real.get((entry.key, int(size or entry.image_size), role))
        return got if isinstance(got, str) else ""

    def _load_real(self, entry: ExportEntry, size: int, role: str = "target") -> RealSet | str:
        ds = self._recorded(entry, role)
        what = "training set" if role == "target" else "source (input) set"
        if not ds:
            return f"the export does not record its {what}"
        path = self.dataset_path(entry, role)
        if path is None:
            return (f"{what} {ds.get('name') or '?'} not found (recorded at {ds.get('source') or '?'}; "
                    "give its folder with --data)")
        try:
            try:
                from engines.data.prepare import load_dataset
            except ImportError:
                load_dataset = None
            if load_dataset is not None:
                got = load_dataset(str(path), size=size, background=ds.get("background") or "white", progress=False)
            elif path.is_dir():
                from engines.metrics.sources import load_image_folder

                got = load_image_folder(path, size=(size, size))
            else:
                return f"{path}: cannot read this kind of dataset here"
        except Exception as e:  # unreadable data must not take the app down; it only hides novelty/real
            log.warning("%s of %s unavailable: %s", what, entry.key, e)
            return f"{what} {path} could not be read: {e}"
        files = [Path(str(f)).name for f in (getattr(got, "files", None) or [])]
        if len(files) != len(got.images):
            files = []
        note = ""
        rec = ds.get("key")
        if rec and int(ds.get("size") or 0) == size and getattr(got, "key", None) not in (None, rec):
            note = f"the {what} changed since this export was trained"
        return RealSet(got.images, str(getattr(got, "key", "")), str(ds.get("name") or path.name), files, note)

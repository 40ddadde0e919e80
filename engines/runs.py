"""The run directory format: the one module that reads and writes it (docs/run-format.md).

runs/<run-id>/
  run.json          engine, resolved config, dataset, versions, git commit, device, status
  metrics.jsonl     one JSON object per line: {"kind": "train"|"eval"|"event", "epoch", "step", "time", ...}
  samples/epoch_000010.png
  checkpoints/last.pt
  export/           model.safetensors + config.json
  log.txt

No torch import here: the studio reads runs with this module and never imports training code.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

FORMAT_VERSION = 1
STATUSES = ("running", "finished", "failed", "interrupted")
SAMPLE_RE = re.compile(r"^epoch_(\d+)\.png$")


class RunFormatError(ValueError):
    pass


# ---- atomic writes ---------------------------------------------------------------
@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike):
    """Yield a binary file; on success it is fsynced and renamed over ``path``, on error removed.
    Readers never see a half-written file, and the old content survives a failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; runs are often shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---- ids and layout --------------------------------------------------------------
def make_run_id(engine: str, dataset: str, now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset).strip("-") or "data"
    return f"{now:%Y%m%d-%H%M%S}-{engine}-{safe}"


def sample_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    return Path(run_dir) / "samples" / f"epoch_{epoch:06d}.png"


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def export_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "export"


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "run.json").is_file()


# ---- writing -----------------------------------------------------------------------
class RunWriter:
    """Owns run.json and metrics.jsonl of one run (used by the trainer on the main rank)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "samples").mkdir(exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"

    def write_info(self, info: dict[str, Any]) -> None:
        info = dict(info)
        info.setdefault("format_version", FORMAT_VERSION)
        info["updated"] = _now_iso()
        atomic_write_json(self.dir / "run.json", info)

    def update_info(self, **changes: Any) -> dict[str, Any]:
        info = read_info(self.dir)
        info.update(changes)
        self.write_info(info)
        return info

    def log(self, kind: str, epoch: int, step: int, **values: Any) -> dict[str, Any]:
        """Append one line and flush it (a reader may be tailing the file)."""
        rec = {"kind": kind, "epoch": int(epoch), "step": int(step), "time": round(time.time(), 3)}
        rec.update({k: _plain(v) for k, v in values.items()})
        line = json.dumps(rec, default=_json_default)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        return rec

    def truncate_after(self, epoch: int) -> int:
        """On resume: drop lines logged after the checkpoint's epoch (they will be logged again).
        Returns how many lines were dropped. Malformed lines are kept as they were."""
        if not self.metrics_path.exists():
            return 0
        kept, dropped = [], 0
        for raw in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(raw)
                if isinstance(rec, dict) and int(rec.get("epoch", 0)) > epoch:
                    dropped += 1
                    continue
            except (ValueError, TypeError):
                if not raw.strip():
                    continue
                # a torn last line from a kill -9: drop it too
                dropped += 1
                continue
            kept.append(raw)
        atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))
        return dropped

    def append_log(self, text: str) -> None:
        with open(self.dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None if v != v else (1e308 if v > 0 else -1e308)
    return v


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---- reading -----------------------------------------------------------------------
@dataclass
class Metrics:
    train: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    p = Path(run_dir) / "run.json"
    if not p.is_file():
        raise RunFormatError(f"{run_dir} is not a run directory (no run.json)")
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise RunFormatError(f"{p}: malformed JSON ({e})") from e
    if not isinstance(info, dict):
        raise RunFormatError(f"{p}: expected a JSON object")
    return info


def read_jsonl(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str]]:
    """Tolerant JSON-lines reader: objects in order, plus warnings for malformed lines and for a
    partial last line (a file still being written). Never raises on content."""
    p = Path(path)
    data = p.read_bytes().decode("utf-8", errors="replace")
    lines = data.split("\n")
    partial_tail = not data.endswith("\n") and lines[-1] != ""
    records, warnings = [], []
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            if partial_tail and i == len(lines):
                warnings.append(f"{p.name} line {i}: partial last line (still being written?)")
            else:
                warnings.append(f"{p.name} line {i}: malformed, skipped")
            continue
        records.append(rec)
    return records, warnings


def read_metrics(run_dir: str | os.PathLike) -> Metrics:
    """A run's metrics split by kind; problems are collected in ``warnings``, unknown keys kept."""
    m = Metrics()
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        m.warnings.append("no metrics.jsonl yet")
        return m
    records, m.warnings = read_jsonl(p)
    for rec in records:
        kind = rec.get("kind", "train")
        {"train": m.train, "eval": m.eval}.get(kind, m.events).append(rec)
    return m


def list_samples(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    d = Path(run_dir) / "samples"
    if not d.is_dir():
        return []
    out = []
    for f in d.iterdir():
        mt = SAMPLE_RE.match(f.name)
        if mt:
            out.append((int(mt.group(1)), f))
    return sorted(out)


def find_runs(roots: Iterable[str | os.PathLike], max_depth: int = 3) -> list[Path]:
    """Run directories under the given roots (a root may itself be a run)."""
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        stack = [(root, 0)]
        while stack:
            d, depth = stack.pop()
            if is_run_dir(d):
                found.append(d)
                continue
            if depth >= max_depth:
                continue
            try:
                children = sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
            except OSError:
                continue
            stack.extend((c, depth + 1) for c in children)
    return sorted(set(found))

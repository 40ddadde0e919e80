"""The run directory format: the one module that reads and writes it (docs/run-format.md).

runs/<run-id>/
  run.json          engine, resolved config, dataset, versions, git commit, device, status
  metrics.jsonl     one JSON object per line: {"kind": "train"|"eval"|"event", "epoch", "step", "time", ...}
  samples/epoch_000010.png
  checkpoints/last.pt
  export/           model.safetensors + config.json
  best/             the same, of the evaluation with the lowest best_metric (KID by default)
  log.txt

No torch import here: the studio reads runs with this module and never imports training code.

Hostile files: run files are opened without following links (O_NOFOLLOW) and without blocking (O_NONBLOCK),
and only regular files are read or appended to; a FIFO, a device or a link in their place is reported by
name (RunFormatError, or a reader's warning), never followed, never waited on. A trainer owns a run through an
exclusive lock (``RunLock``: flock on ``.lock`` in the run folder).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

try:
    import fcntl
except ImportError:  # not POSIX: no run locks (documented)
    fcntl = None

FORMAT_VERSION = 1
STATUSES = ("running", "finished", "failed", "interrupted")
SAMPLE_RE = re.compile(r"^epoch_(\d+)\.png$")
#: the lock a trainer holds on its run (flock; the holder's PID is written in it)
LOCK_NAME = ".lock"
#: run.json is a few KB; anything this big is not one
MAX_RUN_JSON_BYTES = 16 * 2**20
#: a metrics line is well under 1 KB; longer ones are skipped without being held in memory
MAX_LINE_BYTES = 2**20
#: the largest epoch or step a run file may name (an epoch of 1e400 made runs unresumable)
MAX_COUNTER = 10**15
#: the files and folders a trainer writes, checked before a trainer takes a run (never links, right type)
RUN_FILES = ("run.json", "metrics.jsonl", "log.txt", LOCK_NAME, "checkpoints/last.pt", "export/config.json",
             "export/model.safetensors", "best/config.json", "best/model.safetensors", "progress.gif")
RUN_DIRS = ("checkpoints", "export", "best", "samples")
#: best/ is replaced as a whole (the weights and the config naming their evaluation must never mix): the new
#: export is written to .best.new/, the old one moved to .best.old/, the new one renamed into place
BEST_DIR, BEST_NEW, BEST_OLD = "best", ".best.new", ".best.old"
#: the atomic writer's temp files (``.<name>.<random>.tmp``): orphans of a kill -9 (clean_orphans)
TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


class RunFormatError(ValueError):
    pass


class RunLockedError(RunFormatError):
    """Another process (a trainer) owns the run."""


# ---- opening files without following links or blocking -----------------------------
def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
    """A file descriptor of ``path``, which must be a regular file: the last component is not followed if it
    is a link (O_NOFOLLOW), a FIFO is not waited on (O_NONBLOCK), anything else is refused with a
    RunFormatError that names the file. ``flags`` may add O_WRONLY/O_APPEND/O_CREAT."""
    path = Path(path)
    fl = flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, fl, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.EMLINK and path.is_symlink()):  # EMLINK: FreeBSD
            raise RunFormatError(f"{path}: is a symbolic link; run files must be regular files inside the run "
                                 "folder (remove the link)") from None
        if e.errno == errno.ENXIO:  # O_WRONLY|O_NONBLOCK on a FIFO nobody reads
            raise RunFormatError(f"{path}: is a FIFO (named pipe), not a regular file; remove it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RunFormatError(f"{path}: is {_kind_of(st.st_mode)}, not a regular file; not opened")
        if fl & getattr(os, "O_NONBLOCK", 0) and fcntl is not None:  # regular files: back to blocking I/O
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def regular_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` must not be opened as a run file (a link, a FIFO, a folder, ...), None when it is a regular
    file or does not exist. Looks at the path itself (lstat), never at what a link points to."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(st.st_mode):
        return None
    return f"{Path(path).name} is {_kind_of(st.st_mode)}, not a regular file"


def read_regular_bytes(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The content of a regular file (see ``open_regular``); RunFormatError when it is bigger than ``max_bytes``."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        if max_bytes is not None:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise RunFormatError(f"{path}: {size / 2**20:.1f} MB, more than the {max_bytes / 2**20:.0f} MB "
                                     "such a file may hold; not read")
            return f.read(max_bytes + 1)[:max_bytes]
        return f.read()


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


def best_dir(run_dir: str | os.PathLike) -> Path:
    """The export of the run's best evaluation so far (the trainer's ``best_metric``; docs/run-format.md)."""
    return Path(run_dir) / BEST_DIR


def run_of_best(path: str | os.PathLike) -> Path | None:
    """The run folder whose best/ ``path`` is, else None."""
    path = Path(path)
    return path.parent if path.name == BEST_DIR and is_run_dir(path.parent) else None


def is_real_dir(path: Path) -> bool:
    """A folder itself, not a link to one (nor anything unreadable)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove_tree(path: Path) -> None:
    """Remove a folder the trainer made (never a link: rmtree refuses one at the top and unlinks those inside)."""
    if is_real_dir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def replace_best(run_dir: str | os.PathLike, write) -> Path:
    """Replace best/ as a whole: ``write(folder)`` fills .best.new/, which then takes best/'s place; a crash at
    any point leaves either the old or the new export complete (recover_best puts it back on the next open).
    Call it only while holding the run's lock."""
    run_dir = Path(run_dir)
    new, old, dest = run_dir / BEST_NEW, run_dir / BEST_OLD, best_dir(run_dir)
    _remove_tree(new)
    write(new)
    _remove_tree(old)
    if is_real_dir(dest):
        os.rename(dest, old)
    os.rename(new, dest)
    _remove_tree(old)
    return dest


def recover_best(run_dir: str | os.PathLike) -> list[str]:
    """Finish or undo a replace_best that a kill -9 cut short: a complete .best.new/ wins when best/ is gone,
    else the old export goes back; the leftovers are removed. Returns what was done, in words."""
    run_dir = Path(run_dir)
    new, old, dest = run_dir / BEST_NEW, run_dir / BEST_OLD, best_dir(run_dir)
    done = []
    if not os.path.lexists(dest):
        for cand in (new, old):
            if is_real_dir(cand) and all((cand / f).is_file() for f in ("config.json", "model.safetensors")):
                os.rename(cand, dest)
                done.append(f"{BEST_DIR}/ restored from {cand.name}/")
                break
    for leftover in (new, old):
        if os.path.lexists(leftover):
            _remove_tree(leftover)
            done.append(f"removed {leftover.name}/")
    return done


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "run.json").is_file()


def create_run_dir(runs_dir: str | os.PathLike, run_id: str, attempts: int = 1000) -> Path:
    """A new, empty run folder ``runs_dir/run_id``, created atomically (mkdir, never an existing folder): when
    the id is taken (two runs started in the same second), ``-2``, ``-3``, ... is appended."""
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, attempts + 1):
        d = root / (run_id if i == 1 else f"{run_id}-{i}")
        try:
            d.mkdir()
        except FileExistsError:
            continue
        return d
    raise RunFormatError(f"{root}: {attempts} runs named {run_id}[-N] already exist")


class RunLock:
    """The exclusive lock a trainer holds on its run while it owns it (``fcntl.flock`` on ``RUN/.lock``).

    The kernel drops the lock when the process dies, ``kill -9`` included, so a stale lock file means
    nothing; the file holds the owner's PID for the error a second owner gets. Without ``fcntl`` (not
    POSIX) locking is skipped."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None or fcntl is None:
            return self
        fd = open_regular(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            try:
                pid = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise RunLockedError(f"{self.dir}: the run is owned by another trainer (PID {pid}); wait for it to "
                                 f"stop, or stop it (kill -INT {pid}) before resuming") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the PID is a courtesy for the error message; the lock is what counts
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def check_run_files(run_dir: str | os.PathLike) -> None:
    """Refuse a run folder whose files are links (a planted link would make a trainer write outside the run)
    or of the wrong type (a FIFO where metrics.jsonl belongs hangs a reader): RunFormatError naming them."""
    run_dir = Path(run_dir)
    bad = []
    for name in RUN_FILES:
        why = regular_file_problem(run_dir / name)
        if why:
            bad.append(f"{name} is {why.split(' is ', 1)[1]}")
    for name in RUN_DIRS:
        try:
            st = os.lstat(run_dir / name)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            bad.append(f"{name}/ is {_kind_of(st.st_mode)}, not a folder")
    if bad:
        raise RunFormatError(f"{run_dir}: refusing to write to this run: {'; '.join(bad)} (run files must be "
                             "regular files and folders inside the run folder; remove or replace them)")


def clean_orphans(run_dir: str | os.PathLike) -> list[str]:
    """Remove the atomic writer's temp files (``.last.pt.<random>.tmp``, ``.model.safetensors.<random>.tmp``,
    ...) that a ``kill -9`` left behind, and finish a best/ replacement it cut short (recover_best). Call it only
    while holding the run's lock (no writer is running).
    Returns what was removed (paths relative to the run)."""
    run_dir = Path(run_dir)
    removed = recover_best(run_dir)  # a best/ replacement cut short
    for sub in ("", *RUN_DIRS):
        d = run_dir / sub if sub else run_dir
        try:
            # the run folder itself may be a link the user made; its sub-folders may not (check_run_files)
            if not stat.S_ISDIR((os.lstat(d) if sub else os.stat(d)).st_mode):
                continue
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if TEMP_RE.match(name):
                try:
                    os.unlink(d / name)  # a link is removed, never followed
                    removed.append(f"{sub}/{name}" if sub else name)
                except (FileNotFoundError, IsADirectoryError, PermissionError):
                    pass
    return sorted(removed)


# ---- writing -----------------------------------------------------------------------
class RunWriter:
    """Owns run.json and metrics.jsonl of one run (used by the trainer on the main rank).

    Appends go through ``open_regular`` (no link followed, no FIFO waited on) and are flushed to the OS per
    line (a process crash keeps every line); ``sync()`` makes them durable (fsync), which the trainer does
    before each checkpoint, so a power cut loses at most the lines after the last checkpoint, which resume
    drops and logs again anyway (docs/run-format.md)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        samples = self.dir / "samples"
        if not samples.is_symlink():  # a link is refused by check_run_files; never create through it
            samples.mkdir(exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        #: what the last ``truncate_after`` dropped besides later epochs (malformed lines, bad epochs), by line
        self.truncate_notes: list[str] = []

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

    def _append(self, path: Path, text: str) -> None:
        fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            data = text.encode("utf-8")
            while data:  # one write per line: the OS has it once this returns (a crash cannot lose it)
                n = os.write(fd, data)
                data = data[n:]
        finally:
            os.close(fd)

    def log(self, kind: str, epoch: int, step: int, **values: Any) -> dict[str, Any]:
        """Append one line (a reader may be tailing the file); see ``sync`` for durability."""
        rec = {"kind": kind, "epoch": int(epoch), "step": int(step), "time": round(time.time(), 3)}
        rec.update({k: _plain(v) for k, v in values.items()})
        line = json.dumps(rec, default=_json_default)
        self._append(self.metrics_path, line + "\n")
        return rec

    def sync(self) -> None:
        """fsync metrics.jsonl (the trainer calls it before writing a checkpoint)."""
        try:
            fd = open_regular(self.metrics_path)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def truncate_after(self, epoch: int) -> int:
        """On resume: drop lines logged after the checkpoint's epoch (they will be logged again), a torn last
        line, malformed lines and lines whose ``epoch`` is not a whole number in range (``truncate_notes``
        says which). Returns how many lines were dropped. Streams: the file is never held in memory."""
        self.truncate_notes = []
        try:
            fd = open_regular(self.metrics_path)
        except FileNotFoundError:
            return 0
        dropped = 0
        with os.fdopen(fd, "rb") as src, atomic_writer(self.metrics_path) as dst:
            for i, raw, too_long in _lines(src):
                if too_long:
                    dropped += 1
                    self.truncate_notes.append(f"line {i}: longer than {MAX_LINE_BYTES // 1024} KB")
                    continue
                rec = _record(raw)
                if rec is _BLANK:
                    continue
                if rec is None:
                    # a torn last line from a kill -9, or junk: dropped
                    dropped += 1
                    self.truncate_notes.append(f"line {i}: malformed")
                    continue
                ep = counter_value(rec.get("epoch", 0))
                if ep is None:
                    dropped += 1
                    self.truncate_notes.append(f"line {i}: epoch {_short(rec.get('epoch'))} is not a whole "
                                               f"number between 0 and {MAX_COUNTER:.0e}")
                    continue
                if ep > epoch:
                    dropped += 1
                    continue
                dst.write(raw.rstrip(b"\r\n") + b"\n")
        return dropped

    def append_log(self, text: str) -> None:
        self._append(self.dir / "log.txt", text.rstrip("\n") + "\n")


def counter_value(v: Any) -> int | None:
    """An epoch or step from a run file as an int, or None when it is not a whole number in
    [0, MAX_COUNTER] (text, bool, 1e400 = inf, NaN, 2.5, -1)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
        return None
    return int(v) if 0 <= v <= MAX_COUNTER else None


def _short(v: Any, n: int = 40) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 1] + "…"


def _lines(f, max_line: int = MAX_LINE_BYTES, max_bytes: int | None = None):
    """(line number, bytes, too_long) of a binary file, holding at most ``max_line`` bytes of a line; the last
    line may lack its newline. Stops after ``max_bytes`` bytes (whole lines)."""
    i, total = 0, 0
    while max_bytes is None or total < max_bytes:
        raw = f.readline(max_line + 1)
        if not raw:
            return
        i += 1
        total += len(raw)
        if len(raw) > max_line and not raw.endswith(b"\n"):
            while True:  # skip the rest of an over-long line
                more = f.readline(max_line)
                total += len(more)
                if not more or more.endswith(b"\n"):
                    break
            yield i, b"", True
            continue
        yield i, raw, False


_BLANK: Any = object()


def _record(raw: bytes) -> Any:
    """One JSON-lines line: its object, None when it is not a JSON object (junk, a torn last line), or _BLANK."""
    text = raw.decode("utf-8", errors="replace")
    if not text.strip():
        return _BLANK
    try:
        rec = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return rec if isinstance(rec, dict) else None


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
    eval: list[dict[str, Any]] = field(default_factory=list)  # of the run's model at that epoch (export/'s line)
    best_eval: list[dict[str, Any]] = field(default_factory=list)  # `pokelab eval RUN/best --log`: of best/ alone
    events: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    p = Path(run_dir) / "run.json"
    try:
        data = read_regular_bytes(p, MAX_RUN_JSON_BYTES)  # a link or a FIFO is named, not followed or waited on
    except (FileNotFoundError, NotADirectoryError):
        raise RunFormatError(f"{run_dir} is not a run directory (no run.json)") from None
    try:
        info = json.loads(data.decode("utf-8"))
    except ValueError as e:
        raise RunFormatError(f"{p}: malformed JSON ({e})") from e
    except RecursionError:
        raise RunFormatError(f"{p}: malformed JSON (nested too deeply)") from None
    if not isinstance(info, dict):
        raise RunFormatError(f"{p}: expected a JSON object")
    return info


def _dataset_problems(ds: Any, where: str) -> list[str]:
    if not isinstance(ds, dict):
        return [f"'{where}' must be an object with name, key, size and source, not {_type(ds)}"]
    out = []
    for k in ("name", "key", "source"):
        if not isinstance(ds.get(k), str):
            out.append(f"'{where}.{k}' must be text, not {_type(ds.get(k))}")
    size = ds.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 16384:
        out.append(f"'{where}.size' must be a whole number of pixels (1-16384), not {_short(size)}")
    bg = ds.get("background")
    if bg is not None and not isinstance(bg, str):
        out.append(f"'{where}.background' must be text or null, not {_type(bg)}")
    rem = ds.get("background_removal")
    if rem is not None and not isinstance(rem, dict):
        out.append(f"'{where}.background_removal' must be an object or null, not {_type(rem)}")
    return out


def _type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def info_problems(info: dict[str, Any], resumable: bool = False) -> list[str]:
    """What is wrong with run.json's fields (types and ranges), field by field; empty when nothing. With
    ``resumable``, also the fields ``--resume`` needs (engine, config, dataset) must be there and sound."""
    out = []
    for k in ("run_id", "engine", "kind", "status", "created", "updated", "device", "command", "git_commit"):
        v = info.get(k)
        if v is not None and not isinstance(v, str):
            out.append(f"'{k}' must be text, not {_type(v)}")
    for k in ("epoch", "step", "nan_rollbacks"):
        if k in info and counter_value(info[k]) is None:
            out.append(f"'{k}' must be a whole number between 0 and {MAX_COUNTER:.0e}, not {_short(info[k])}")
    ws = info.get("wall_seconds")
    if ws is not None and (isinstance(ws, bool) or not isinstance(ws, (int, float)) or not math.isfinite(ws)
                           or ws < 0):
        out.append(f"'wall_seconds' must be a number >= 0, not {_short(ws)}")
    if "config" in info and not isinstance(info["config"], dict):
        out.append(f"'config' must be an object (the training settings), not {_type(info['config'])}")
    if resumable:
        if not isinstance(info.get("engine"), str) or not info.get("engine"):
            out.append("'engine' is missing")
        if "config" not in info:
            out.append("'config' is missing")
        ds = info.get("dataset")
        if isinstance(ds, list):
            if not 1 <= len(ds) <= 2:
                out.append(f"'dataset' must list one or two datasets, not {len(ds)}")
            else:
                for i, d in enumerate(ds):
                    out += _dataset_problems(d, f"dataset[{i}]")
        else:
            out += _dataset_problems(ds, "dataset")
    return out


def check_info(info: dict[str, Any], where: str | os.PathLike, resumable: bool = True) -> dict[str, Any]:
    """``info`` when its fields are sound, else a RunFormatError naming every wrong field."""
    bad = info_problems(info, resumable=resumable)
    if bad:
        raise RunFormatError(f"{where}: {'; '.join(bad)}")
    return info


def read_jsonl(path: str | os.PathLike, max_bytes: int | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Tolerant JSON-lines reader: objects in order, plus warnings for malformed lines and for a
    partial last line (a file still being written). Never raises on content; a file that is not a regular
    file (a FIFO, a link, a device) is not opened: a warning names it. Streams line by line; with
    ``max_bytes``, stops after that many bytes (whole lines) and says so."""
    p = Path(path)
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    try:
        fd = open_regular(p)
    except RunFormatError as e:
        why = regular_file_problem(p) or str(e)
        return records, [f"{why}; not read"]
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        last = None
        for i, raw, too_long in _lines(f, max_bytes=max_bytes):
            last = (i, raw)
            if too_long:
                warnings.append(f"{p.name} line {i}: longer than {MAX_LINE_BYTES // 1024} KB, skipped")
                continue
            rec = _record(raw)
            if rec is _BLANK:
                continue
            if rec is None:
                if not raw.endswith(b"\n"):
                    warnings.append(f"{p.name} line {i}: partial last line (still being written?)")
                else:
                    warnings.append(f"{p.name} line {i}: malformed, skipped")
                continue
            records.append(rec)
        read = f.tell()
        if max_bytes is not None and read < size and f.read(1):
            warnings.append(f"{p.name} is {size / 2**20:.0f} MB: only its first {read / 2**20:.0f} MB "
                            f"({last[0] if last else 0} lines) were read (the reader's cap is "
                            f"{max_bytes / 2**20:.0f} MB)")
    return records, warnings


def read_metrics(run_dir: str | os.PathLike, max_bytes: int | None = None) -> Metrics:
    """A run's metrics split by kind; problems are collected in ``warnings``, unknown keys kept. A
    metrics.jsonl that is not a regular file (a FIFO, a link) is not read (a warning says so); ``max_bytes``
    caps how much is read (``read_jsonl``)."""
    m = Metrics()
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists() and not p.is_symlink():
        m.warnings.append("no metrics.jsonl yet")
        return m
    records, m.warnings = read_jsonl(p, max_bytes=max_bytes)
    for rec in records:
        kind = rec.get("kind", "train")
        if kind == "eval" and rec.get("export") == BEST_DIR:  # kept out of the run's own trend and last value
            m.best_eval.append(rec)
            continue
        {"train": m.train, "eval": m.eval}.get(kind, m.events).append(rec)
    return m


def list_samples(run_dir: str | os.PathLike, skipped: list[str] | None = None) -> list[tuple[int, Path]]:
    """The fixed-latent grids ``samples/epoch_NNNNNN.png`` by epoch. Only what is (or links to) a regular file
    counts: a FIFO, a device, a folder or a dangling link in their place is left out (and named in ``skipped``
    when a list is given), so a reader never blocks opening it. Where a link points is the caller's check
    (the studio's ``is_inside``)."""
    d = Path(run_dir) / "samples"
    if not d.is_dir():
        return []
    out = []
    for f in d.iterdir():
        mt = SAMPLE_RE.match(f.name)
        if mt:
            try:
                mode = os.stat(f).st_mode
            except OSError:
                mode = None
            if mode is None or not stat.S_ISREG(mode):
                if skipped is not None:
                    skipped.append(f"samples/{f.name} is {_kind_of(mode) if mode is not None else 'a dangling link'}, "
                                   "not a regular file")
                continue
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

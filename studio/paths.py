"""Where the studio may read: the configured roots, and the check made before every file read.

A sample grid, a log or the review database is only opened after its *resolved* path (symlinks
followed) is found inside one of the allowed folders, so a symlink in a run folder or a crafted
path typed into the sidebar cannot make the studio read other files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parents[1]


class OutsideRootsError(PermissionError):
    """A path that resolves outside every configured folder."""


def default_roots(cwd: str | os.PathLike | None = None) -> list[Path]:
    """The shipped runs (``checkpoints/`` of the repository) and ``./runs`` (relative to the repository
    root and to the working directory); only those that exist."""
    cwd = Path(cwd or os.getcwd())
    cands = [REPO_ROOT / "checkpoints", REPO_ROOT / "runs", cwd / "runs"]
    out: list[Path] = []
    for c in cands:
        if c.is_dir() and c.resolve() not in out:
            out.append(c.resolve())
    return out


def parse_roots(text: str | Iterable[str], base: str | os.PathLike | None = None) -> list[Path]:
    """Folders from a text field (one per line, or separated by the OS path separator) or a list.
    Relative paths are taken from ``base`` (the working directory by default). Duplicates dropped,
    order kept. Missing folders are kept (the page says they are missing)."""
    base = Path(base or os.getcwd())
    if isinstance(text, str):
        parts = [p for line in text.splitlines() for p in line.split(os.pathsep)]
    else:
        parts = list(text)
    out: list[Path] = []
    for p in parts:
        p = str(p).strip()
        if not p:
            continue
        q = Path(os.path.expanduser(p))
        q = (q if q.is_absolute() else base / q).resolve()
        if q not in out:
            out.append(q)
    return out


def is_inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> bool:
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError):  # symlink loops
        return False
    for r in roots:
        try:
            real.relative_to(Path(r).resolve())
            return True
        except (ValueError, OSError, RuntimeError):
            continue
    return False


def check_inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> Path:
    """The resolved path, or OutsideRootsError when it lies outside every root."""
    roots = list(roots)
    if not is_inside(path, roots):
        where = ", ".join(str(r) for r in roots) or "(no folders configured)"
        raise OutsideRootsError(f"{path} is outside the folders the studio may read ({where})")
    return Path(path).resolve()


def read_bytes_inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike],
                      max_bytes: int = 64 * 2**20) -> bytes:
    """Read a file only after checking where it really is; refuse absurdly large files."""
    real = check_inside(path, roots)
    size = real.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{path} is {size / 2**20:.0f} MiB; the studio reads files up to {max_bytes / 2**20:.0f} MiB")
    return real.read_bytes()


def tail_text(path: str | os.PathLike, roots: Iterable[str | os.PathLike], max_bytes: int = 20_000) -> str:
    """The end of a text file (a run's log.txt), checked like any other read."""
    real = check_inside(path, roots)
    with open(real, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes:  # drop the first, probably cut, line
        text = text.split("\n", 1)[-1]
    return text

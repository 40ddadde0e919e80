"""``pokelab data fetch pokemon OUT``: download the public Pokémon artwork for users with internet.

Standard library only (urllib) plus tqdm. Resumable: a finished ``{id}.png`` that opens as an image is
kept; a download goes to ``{id}.png.part`` and is renamed only once complete and verified; a leftover
``.part`` is continued with an HTTP Range request when the server supports it. Transient failures
(connection errors, timeouts, HTTP 5xx/429, short bodies, files that do not open) are retried with
exponential backoff; permanent ones (HTTP 404 ...) are not. See docs/data.md.
"""
from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .. import __version__
from .prepare import DEFAULT_MAX_FILE_BYTES, DataError, _png_short
from ..runs.folder import atomic_write_json

# The PokeAPI sprites repository on GitHub: official artwork, one PNG per national dex number.
POKEMON_BASE_URL = ("https://raw.githubusercontent.com/PokeAPI/sprites/master/sprites/pokemon/"
                    "other/official-artwork")
SETS = {
    "pokemon": {"base_url": POKEMON_BASE_URL, "ids": "1-649",
                "about": "official artwork PNGs from the PokeAPI sprites repository (repository CC0; "
                         "the image contents are (c) The Pokémon Company)"},
}
USER_AGENT = f"pokelab/{__version__} (data fetch)"
MAX_IDS = 100_000
_CHUNK = 64 * 1024
_MAX_IMAGE_PIXELS = 40_000_000


class _Retry(Exception):
    """A failure worth another attempt."""


class _Permanent(Exception):
    """A failure another attempt will not fix (HTTP 404, 403 ...)."""


@dataclass
class FetchResult:
    out: Path
    downloaded: list[int] = field(default_factory=list)
    present: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


def parse_ids(text: str) -> list[int]:
    """'1-649' / '1,4,7-9' -> sorted unique positive ints."""
    ids: set[int] = set()
    if not str(text).strip():
        raise DataError("--ids is empty; give e.g. 1-649 or 1,4,7-9")
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise DataError(f"--ids: cannot read {part!r}; use numbers and ranges like 1-649 or 1,4,7-9")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if a < 1 or b < a:
            raise DataError(f"--ids: {part!r} is not a range of positive numbers (low-high)")
        if b - a + 1 + len(ids) > MAX_IDS:
            raise DataError(f"--ids: more than {MAX_IDS} ids asked for")
        ids.update(range(a, b + 1))
    return sorted(ids)


def _check_base_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    # urllib would also open file:// and ftp:// URLs; only plain web downloads are meant here
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DataError(f"--base-url must be an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


def is_valid_image(path: str | os.PathLike) -> bool:
    """The file opens, passes PIL's integrity check and decodes completely."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > _MAX_IMAGE_PIXELS:
                return False
            im.verify()  # chunk CRCs for PNG
        with Image.open(path) as im:
            im.load()    # and the pixel data really decodes
        # Pillow fills a PNG whose image data ends early with black rows: data's check catches that
        with open(path, "rb") as f:
            return _png_short(f.read(DEFAULT_MAX_FILE_BYTES + 1)) is None
    except Exception:  # noqa: BLE001 - any failure means "not a usable image"
        return False


def _download(url: str, part: Path, timeout: float) -> int:
    """Fetch ``url`` into ``part``, continuing what is already there. Returns bytes received now."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - scheme checked in _check_base_url
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:
            # the range starts at or past the end: the partial file may already be whole
            if is_valid_image(part):
                return 0
            part.unlink(missing_ok=True)
            raise _Retry("server refused to resume the partial file; starting over") from None
        if e.code in (408, 425, 429) or 500 <= e.code < 600:
            raise _Retry(f"HTTP {e.code} {e.reason}") from None
        raise _Permanent(f"HTTP {e.code} {e.reason}") from None
    with resp:
        status = getattr(resp, "status", 200)
        mode = "wb"
        if have and status == 206:
            crange = resp.headers.get("Content-Range", "")
            m = re.match(r"bytes\s+(\d+)-", crange)
            if not m or int(m.group(1)) != have:
                raise _Retry(f"server answered the resume with an unexpected range {crange!r}")
            mode = "ab"
        elif status != 200:
            raise _Retry(f"unexpected HTTP status {status}")
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        got = 0
        with open(part, mode) as f:
            try:
                while True:
                    block = resp.read(_CHUNK)
                    if not block:
                        break
                    f.write(block)
                    got += len(block)
            finally:
                f.flush()
                os.fsync(f.fileno())
        if expected is not None and got < expected:
            raise _Retry(f"connection closed early ({got} of {expected} bytes)")
    return got


def _fetch_one(ident: int, out: Path, base_url: str, retries: int, backoff: float, timeout: float,
               stop: threading.Event) -> tuple[str, int, str]:
    """-> ('present'|'downloaded'|'failed', bytes, reason)."""
    final = out / f"{ident}.png"
    if final.exists() and is_valid_image(final):
        return "present", 0, ""
    part = out / f"{ident}.png.part"
    url = f"{base_url}/{ident}.png"
    reason = ""
    received = 0
    for attempt in range(retries + 1):
        if stop.is_set():
            return "failed", received, "cancelled"
        try:
            received += _download(url, part, timeout)
            if not is_valid_image(part):
                part.unlink(missing_ok=True)  # a bad file cannot be resumed into a good one
                raise _Retry("downloaded file is not a valid image")
            os.replace(part, final)  # the final name only ever holds a complete, verified file
            return "downloaded", received, ""
        except _Permanent as e:
            return "failed", received, f"{e} ({url})"
        except (_Retry, urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError,
                ConnectionError, OSError) as e:
            reason = str(e) if isinstance(e, _Retry) else _describe(e)
        if attempt < retries:
            # exponential backoff with a little jitter so parallel workers do not retry in lockstep
            stop.wait(backoff * (2 ** attempt) * (1 + 0.25 * random.random()))
    return "failed", received, f"{reason} after {retries + 1} attempt(s) ({url})"


def _describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return f"network error: {e.reason}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def fetch_images(out: str | os.PathLike, ids: list[int] | str, base_url: str = POKEMON_BASE_URL,
                 workers: int = 4, retries: int = 3, backoff: float = 1.0, timeout: float = 30.0,
                 progress: bool = True) -> FetchResult:
    """Download ``{base_url}/{id}.png`` for every id into ``out`` (resumable, verified)."""
    ids = parse_ids(ids) if isinstance(ids, str) else sorted({int(i) for i in ids})
    if not ids:
        raise DataError("no ids to fetch")
    base_url = _check_base_url(base_url)
    if not 1 <= int(workers) <= 64:
        raise DataError("--workers must be between 1 and 64")
    if int(retries) < 0:
        raise DataError("--retries must be >= 0")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: OUT must be a folder")
    out.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    result = FetchResult(out=out)
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="pokelab-fetch")
    try:
        futures = {pool.submit(_fetch_one, i, out, base_url, int(retries), float(backoff), float(timeout), stop): i
                   for i in ids}
        with tqdm(total=len(ids), desc="fetching", unit="img", disable=not progress) as bar:
            for fut in as_completed(futures):
                ident = futures[fut]
                state, nbytes, reason = fut.result()
                result.bytes += nbytes
                if state == "present":
                    result.present.append(ident)
                elif state == "downloaded":
                    result.downloaded.append(ident)
                else:
                    result.failed.append((ident, reason))
                bar.update(1)
    except BaseException:
        stop.set()  # Ctrl-C: let running downloads end at their next attempt; .part files stay for resume
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    result.downloaded.sort()
    result.present.sort()
    result.failed.sort()
    return result


def format_summary(name: str, res: FetchResult) -> str:
    lines = [f"fetched {name} into {res.out}: {len(res.downloaded)} downloaded "
             f"({res.bytes / 2**20:.1f} MiB), {len(res.present)} already present, {len(res.failed)} failed"]
    for ident, reason in res.failed:
        lines.append(f"  {ident}: {reason}")
    if res.failed:
        lines.append("run the same command again to retry the failed ones (finished files are kept)")
    return "\n".join(lines)


def _write_provenance(name: str, res: FetchResult, base_url: str, ids: str) -> None:
    atomic_write_json(res.out / "fetch.json", {
        "set": name, "base_url": base_url, "ids": ids, "about": SETS[name]["about"],
        "downloaded": len(res.downloaded), "present": len(res.present),
        "failed": [[i, r] for i, r in res.failed],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


def _cmd_fetch(args: argparse.Namespace) -> int:
    spec = SETS[args.set]
    base_url = args.base_url or spec["base_url"]
    ids = args.ids or spec["ids"]
    try:
        res = fetch_images(args.out, ids, base_url=base_url, workers=args.workers, retries=args.retries,
                           backoff=args.backoff, timeout=args.timeout, progress=args.progress)
    except DataError as e:
        print(f"pokelab data fetch: error: {e}", file=sys.stderr)
        return 2
    try:
        _write_provenance(args.set, res, base_url, ids)
    except OSError as e:
        print(f"warning: could not write {res.out / 'fetch.json'} ({e})", file=sys.stderr)
    print(format_summary(args.set, res))
    return 0 if res.ok else 1


def add_fetch_command(data_subparsers) -> None:
    f = data_subparsers.add_parser(
        "fetch", help="download the public Pokémon artwork (needs internet; resumable)",
        description="Download a public image set. 'pokemon': " + SETS["pokemon"]["about"] + ". Files already "
                    "complete are skipped; partial downloads are resumed. Exit code 1 if some failed.")
    f.add_argument("set", choices=sorted(SETS), help="which image set")
    f.add_argument("out", help="folder to download into")
    f.add_argument("--base-url", help="where {id}.png files are served (default: the PokeAPI sprites "
                                      "repository's official-artwork folder)")
    f.add_argument("--ids", help="ids to fetch, e.g. 1-649 or 1,4,7-9 (default 1-649)")
    f.add_argument("--workers", type=int, default=4, help="parallel downloads (default 4)")
    f.add_argument("--retries", type=int, default=3, help="extra attempts per file (default 3)")
    f.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each time")
    f.add_argument("--timeout", type=float, default=30.0, help="network timeout per request in seconds")
    f.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    f.set_defaults(func=_cmd_fetch)

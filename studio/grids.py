"""Sample grids: reading them safely, cutting them into tiles, a diversity figure, the timeline GIF.

Diversity from a grid is the mean pairwise **single-scale** SSIM among its tiles (numpy/scipy, no torch):
an approximation of the MS-SSIM the trainer logs (docs/studio.md). Same window as the trainer's
metric (11-tap Gaussian, sigma 1.5, "valid" filtering, K = (0.01, 0.03), data range 255), SSIM
averaged over the RGB channels.

Translation grids (one row per input; columns input | output | reconstruction | ...) are cut by column:
diversity is measured on the output column only, and ``translation_check`` tests whether each output
looks more like its own input than like the other inputs (a permutation test on SSIM).
"""
from __future__ import annotations

import io
import itertools
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image
from scipy.ndimage import correlate1d

from engines.runs.gif import gif_bytes, stamp_label

from .data import GridLayout
from .paths import read_bytes_inside

WIN, SIGMA, K1, K2, DATA_RANGE = 11, 1.5, 0.01, 0.03, 255.0


class GridError(ValueError):
    """A grid that cannot be cut into tiles."""


def load_image(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> Image.Image:
    """Open an image only inside the roots; RGB. A half-written or corrupt file raises a clear error."""
    data = read_bytes_inside(path, roots)
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise GridError(f"not a readable image ({e})") from e
    return im.convert("RGB")


# ---- tiles -----------------------------------------------------------------------------------
def _fits(size: int, tile: int, padding: int) -> int | None:
    """Tiles along one side when ``size = n * (tile + padding) + padding``, else None."""
    step = tile + padding
    if step <= 0 or size - padding <= 0 or (size - padding) % step:
        return None
    return (size - padding) // step


def _pad_lines_ok(arr: np.ndarray, tile: int, padding: int, pad_value: int, axis: int) -> bool:
    """All padding lines along one axis are exactly the padding colour."""
    if padding == 0:
        return True
    n = (arr.shape[axis] - padding) // (tile + padding)
    idx = np.concatenate([np.arange(k * (tile + padding), k * (tile + padding) + padding) for k in range(n + 1)])
    lines = np.take(arr, idx, axis=axis)
    return bool((lines == pad_value).all())


def detect_layout(arr: np.ndarray, layout: GridLayout) -> tuple[int, int, int, int]:
    """(tile height, tile width, rows, cols) for an HxWx3 grid.

    With a known square tile side: checked against the image size. Otherwise (or when the known side
    does not fit): with ``nrow`` known the tile width follows from the width; else the smallest tile
    side >= 8 px whose padding lines are all padding colour is taken (a larger side that passes is a
    block of several real tiles). Square tiles are assumed when detecting."""
    h, w = arr.shape[:2]
    pad = layout.padding
    pad_values = [layout.pad_value] if layout.pad_value is not None else [255, 0]
    if layout.tile:
        cols, rows = _fits(w, layout.tile, pad), _fits(h, layout.tile, pad)
        if cols and rows:
            return layout.tile, layout.tile, rows, cols
    if layout.nrow and (w - pad) % layout.nrow == 0:
        tw = (w - pad) // layout.nrow - pad
        rows = _fits(h, tw, pad) if tw >= 1 else None
        if rows:
            return tw, tw, rows, layout.nrow
    if pad == 0:
        raise GridError(f"cannot find the tiles of a {w}x{h} grid without padding and without a known tile size")
    for tile in range(8, min(h, w) - 2 * pad + 1):
        cols, rows = _fits(w, tile, pad), _fits(h, tile, pad)
        if not cols or not rows or cols * rows < 2:
            continue
        for pv in pad_values:
            if _pad_lines_ok(arr, tile, pad, pv, 0) and _pad_lines_ok(arr, tile, pad, pv, 1):
                return tile, tile, rows, cols
    raise GridError(f"cannot find the tiles of a {w}x{h} grid (expected square tiles with {pad} px padding)")


def split_grid(arr: np.ndarray, layout: GridLayout | None = None) -> np.ndarray:
    """HxWx3 uint8 grid -> (n, th, tw, 3) tiles, row by row, leaving out empty slots (tiles that are
    all one colour, as the unused end of the last row)."""
    layout = layout or GridLayout()
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise GridError(f"expected an RGB image, got an array of shape {arr.shape}")
    arr = arr[:, :, :3]
    th, tw, rows, cols = detect_layout(arr, layout)
    pad = layout.padding
    tiles = []
    for r in range(rows):
        for c in range(cols):
            y, x = pad + r * (th + pad), pad + c * (tw + pad)
            t = arr[y:y + th, x:x + tw]
            if t.shape[:2] != (th, tw) or (t == t.flat[0]).all():
                continue
            tiles.append(t)
    if not tiles:
        raise GridError("the grid holds no non-empty tiles")
    return np.stack(tiles)


def split_columns(arr: np.ndarray, layout: GridLayout) -> dict[str, np.ndarray]:
    """A translation grid -> {column name: (rows, th, tw, 3) tiles}, every slot kept (a plain output tile is
    still an output). The grid must have exactly ``len(layout.columns)`` columns."""
    if not layout.columns:
        raise GridError("the grid's columns are unknown (not a translation grid, or an engine the studio does "
                        "not know)")
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise GridError(f"expected an RGB image, got an array of shape {arr.shape}")
    arr = arr[:, :, :3]
    th, tw, rows, cols = detect_layout(arr, layout)
    if cols != len(layout.columns):
        raise GridError(f"the grid has {cols} columns of {tw} px tiles; expected {len(layout.columns)} "
                        f"({' | '.join(layout.columns)})")
    pad = layout.padding
    out = {}
    for c, name in enumerate(layout.columns):
        x = pad + c * (tw + pad)
        out[name] = np.stack([arr[pad + r * (th + pad):pad + r * (th + pad) + th, x:x + tw] for r in range(rows)])
    return out


# ---- SSIM --------------------------------------------------------------------------------------
def _gauss() -> np.ndarray:
    c = np.arange(WIN, dtype=np.float64) - WIN // 2
    g = np.exp(-(c ** 2) / (2 * SIGMA ** 2))
    return g / g.sum()


def _blur(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable Gaussian over axes 1 and 2 (H, W) of (N, H, W, C), cropped to the "valid" region."""
    r = WIN // 2
    y = correlate1d(x, g, axis=1, mode="nearest")
    y = correlate1d(y, g, axis=2, mode="nearest")
    return y[:, r:x.shape[1] - r, r:x.shape[2] - r]


def _tile_stats(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = _blur(x, g)
    return mu, _blur(x * x, g) - mu ** 2


def _ssim_from_stats(mu_a, var_a, mu_b, var_b, cross) -> np.ndarray:
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    cov = cross - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.reshape(len(s), -1).mean(axis=1)


def ssim_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of each pair (a[i], b[i]) of (N, H, W, C) images in 0..255, averaged over pixels and channels."""
    if a.shape != b.shape:
        raise ValueError("image pairs must have the same shape")
    if min(a.shape[1:3]) < WIN:
        raise GridError(f"tiles must be at least {WIN} px for SSIM; these are {a.shape[2]}x{a.shape[1]}")
    g = _gauss()
    a, b = a.astype(np.float32), b.astype(np.float32)
    mu_a, var_a = _tile_stats(a, g)
    mu_b, var_b = _tile_stats(b, g)
    return _ssim_from_stats(mu_a, var_a, mu_b, var_b, _blur(a * b, g))


def pair_indices(n: int, max_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j when there are at most ``max_pairs`` of them, else a seeded random subset."""
    if n < 2:
        raise GridError("need at least two tiles to measure diversity")
    i, j = np.triu_indices(n, k=1)
    if len(i) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(i), size=max_pairs, replace=False)
        pick.sort()
        i, j = i[pick], j[pick]
    return i, j


def mean_pairwise_ssim(tiles: np.ndarray, max_pairs: int = 300, seed: int = 0, chunk: int = 32) -> float:
    """Mean SSIM over pairs of distinct tiles. High = tiles look alike = low diversity.
    Per-tile means and variances are blurred once; only the cross term is blurred per pair."""
    if min(tiles.shape[1:3]) < WIN:
        raise GridError(f"tiles must be at least {WIN} px for SSIM; these are {tiles.shape[2]}x{tiles.shape[1]}")
    i, j = pair_indices(len(tiles), max_pairs, seed)
    g = _gauss()
    x = tiles.astype(np.float32)
    stats = _tile_stats(x, g)
    return float(_indexed_ssim(x, stats, x, stats, i, j, g, chunk).mean())


def _indexed_ssim(xa, stats_a, xb, stats_b, i: np.ndarray, j: np.ndarray, g: np.ndarray, chunk: int) -> np.ndarray:
    """SSIM of xa[i[k]] against xb[j[k]] for every k: per-tile means and variances are blurred once (given),
    only the cross term is blurred per pair, ``chunk`` pairs at a time."""
    (mu_a, var_a), (mu_b, var_b) = stats_a, stats_b
    vals = []
    for s in range(0, len(i), chunk):
        a, b = i[s:s + chunk], j[s:s + chunk]
        vals.append(_ssim_from_stats(mu_a[a], var_a[a], mu_b[b], var_b[b], _blur(xa[a] * xb[b], g)))
    return np.concatenate(vals)


def ssim_matrix(a: np.ndarray, b: np.ndarray, chunk: int = 32) -> np.ndarray:
    """SSIM of every a[i] against every b[j] (two (N, H, W, C) stacks of one tile size) -> (len(a), len(b))."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError("the two tile stacks must have the same tile shape")
    if min(a.shape[1:3]) < WIN:
        raise GridError(f"tiles must be at least {WIN} px for SSIM; these are {a.shape[2]}x{a.shape[1]}")
    g = _gauss()
    xa, xb = a.astype(np.float32), b.astype(np.float32)
    i, j = (m.ravel() for m in np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij"))
    return _indexed_ssim(xa, _tile_stats(xa, g), xb, _tile_stats(xb, g), i, j, g, chunk).reshape(len(a), len(b))


def permutation_pvalue(sim: np.ndarray, max_exact: int = 8, draws: int = 20000, seed: int = 0) -> float:
    """One-sided permutation test that row i goes with column i: the share of pairings (permutations of the
    columns) whose summed similarity is at least the diagonal's. Exact over all n! pairings for n <= max_exact
    (the identity is one of them, so p >= 1/n!), else ``draws`` random ones ((1 + hits) / (1 + draws))."""
    n = sim.shape[0]
    if sim.shape != (n, n) or n < 2:
        raise ValueError(f"need a square similarity matrix of at least 2x2, got {sim.shape}")
    sim = np.asarray(sim, dtype=np.float64)
    stat = float(np.trace(sim))
    # ties count as "at least": SSIM is computed in float32, so identical outputs can differ in the last bits
    tol = 1e-5 * n
    rows = np.arange(n)
    if n <= max_exact:
        perms = np.array(list(itertools.permutations(range(n))), dtype=np.int8)
        return float((sim[rows, perms].sum(axis=1) >= stat - tol).mean())
    rng = np.random.default_rng(seed)
    hits = sum(int(sim[rows, rng.permutation(n)].sum() >= stat - tol) for _ in range(draws))
    return (1 + hits) / (1 + draws)


def translation_check(path: str | os.PathLike, roots: Iterable[str | os.PathLike],
                      layout: GridLayout) -> dict[str, float]:
    """Does each output of a translation grid keep its input? SSIM of every output against every input of the
    grid: ``matched`` = mean over own input, ``mismatched`` = mean over the other inputs, ``p`` = the
    permutation test of ``permutation_pvalue`` (small = the outputs follow their inputs). A translator that
    ignores its input (the same picture for everything, or pictures unrelated to the input) gives p near
    uniform; a similar-looking input/output pair is *expected* here, not a collapse."""
    cols = split_columns(np.asarray(load_image(path, roots)), layout)
    if "output" not in cols or "input" not in cols:
        raise GridError("no input and output columns in this grid")
    inp, out = cols["input"], cols["output"]
    n = len(inp)
    sim = ssim_matrix(out, inp)
    off = (sim.sum() - np.trace(sim)) / (n * n - n) if n > 1 else float("nan")
    return {"rows": float(n), "matched": float(np.trace(sim) / n), "mismatched": float(off),
            "p": permutation_pvalue(sim) if n > 1 else 1.0}


def grid_diversity(path: str | os.PathLike, roots: Iterable[str | os.PathLike], layout: GridLayout | None = None,
                   max_pairs: int = 300) -> dict[str, float]:
    """{'ssim': mean pairwise SSIM among the tiles, 'tiles': count, 'tile': side} for one saved grid.
    Translation grids (``layout.columns``): among the *output* tiles only, with the inputs' own figure as
    ``ssim_inputs`` for reference; a grid whose output column is unknown raises GridError."""
    im = load_image(path, roots)
    layout = layout or GridLayout()
    if layout.columns:
        if "output" not in layout.columns:
            raise GridError("this translation grid has no output column")
        cols = split_columns(np.asarray(im), layout)
        tiles = cols["output"]
        ref = {"ssim_inputs": mean_pairwise_ssim(cols["input"], max_pairs=max_pairs)} if "input" in cols else {}
    else:
        tiles, ref = split_grid(np.asarray(im), layout), {}
    return {"ssim": mean_pairwise_ssim(tiles, max_pairs=max_pairs), "tiles": float(len(tiles)),
            "tile": float(tiles.shape[1]), **ref}


def spread(items: list, k: int) -> list:
    """At most k items spread evenly over the list, always keeping the first and the last."""
    if k <= 0 or len(items) <= k:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


# ---- GIF ----------------------------------------------------------------------------------------
def timeline_gif(frames: list[tuple[str, str | os.PathLike]], roots: Iterable[str | os.PathLike],
                 fps: float = 4.0, max_side: int = 512, hold_last: float = 1.5) -> tuple[bytes, list[str]]:
    """An animated GIF (bytes, built in memory) of the grids in order, each stamped with its label,
    and the list of grids that could not be read (skipped). The last frame is held ``hold_last`` s."""
    roots = list(roots)
    images, skipped = [], []
    size = None
    for label, path in frames:
        try:
            im = load_image(path, roots)
        except (GridError, OSError, ValueError) as e:
            skipped.append(f"{Path(path).name}: {e}")
            continue
        if max(im.size) > max_side:
            s = max_side / max(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
        size = size or im.size
        if im.size != size:  # GIF frames share one canvas: fit later frames onto the first one's
            im = im.resize(size, Image.LANCZOS)
        images.append(stamp_label(im, label))
    if not images:
        raise GridError("no readable sample grids for a GIF")
    return gif_bytes(images, fps=fps, hold_last=hold_last), skipped

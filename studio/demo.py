"""Realistic synthetic runs for trying the studio, its screenshots and its load benchmark.

``python -m studio.demo DEST [--images DIR] [--source-images DIR]`` writes a handful of runs in every
format the studio reads: pokelab runs (finished, running with a half-written last line, failed, one that
collapses, a broken one, a CycleGAN translation run), a stylegan2-ada-pytorch folder and a
lightweight-gan folder. Metric curves are synthetic (decreasing FID with noise, ...); sample grids are
made of real images when ``--images`` points at a folder (e.g. the Pokémon Dream World art), blurred and
noised less and less as "training" goes on. The translation run translates ``--source-images`` (e.g. the
Black/White sprites; files paired with the art by name) into the ``--images`` style; without it its
inputs are pixelated copies of the art.

Nothing here trains anything: it only writes files in the run format.
"""
from __future__ import annotations

import argparse
import io
import os
import json
import math
import random
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from engines.runs.folder import atomic_write_bytes, atomic_write_json, atomic_write_text, sample_path

from .data import TRANSLATE_COLUMNS


# ---- images --------------------------------------------------------------------------------------
def _flatten(path: Path, tile: int) -> np.ndarray:
    """An image flattened on white, resized to tile x tile."""
    with Image.open(path) as im:
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        bg.alpha_composite(im)
        return np.asarray(bg.convert("RGB").resize((tile, tile), Image.LANCZOS))


def _load_art(images_dir: str | Path | None, tile: int, n: int, rng: random.Random,
              names: list[str] | None = None) -> list[np.ndarray]:
    """n RGB tiles: real images flattened on white when a folder is given, else coloured blobs. ``names``
    (a list to fill) receives the file names picked."""
    out: list[np.ndarray] = []
    files = sorted(Path(images_dir).glob("*.png")) if images_dir else []
    if files:
        for f in rng.sample(files, min(n, len(files))):
            out.append(_flatten(f, tile))
            if names is not None:
                names.append(f.name)
    while len(out) < n:  # no folder: simple shapes, so the grids still look like something
        a = np.full((tile, tile, 3), 255, np.uint8)
        yy, xx = np.mgrid[:tile, :tile]
        cx, cy, r = rng.uniform(0.3, 0.7) * tile, rng.uniform(0.3, 0.7) * tile, rng.uniform(0.2, 0.35) * tile
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        a[mask] = [rng.randrange(40, 220) for _ in range(3)]
        out.append(a)
    return out


def _progress(tile_img: np.ndarray, f: float, rng: np.random.Generator) -> np.ndarray:
    """What a generator might draw at training fraction f: a blurred, noisy version of the target."""
    im = Image.fromarray(tile_img)
    radius = float(max(0.0, (1 - f) ** 1.5 * tile_img.shape[0] / 6))
    if radius > 0.2:
        im = im.filter(ImageFilter.GaussianBlur(radius))
    a = np.asarray(im).astype(np.float32)
    a += rng.normal(0, 70 * float(1 - f) ** 2, a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


def make_grid(tiles: list[np.ndarray], nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Same layout as engines.data.images.grid_array (not imported: it imports torch)."""
    n = len(tiles)
    h, w = tiles[0].shape[:2]
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, 3), pad_value, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        grid[y:y + h, x:x + w] = t[:, :, :3]
    return grid


def _pixelate(tile_img: np.ndarray, cells: int = 24, colours: int = 16) -> np.ndarray:
    """A sprite-like stand-in for a translation input: few pixels, few colours."""
    im = Image.fromarray(tile_img).resize((cells, cells), Image.BOX).quantize(colours).convert("RGB")
    return np.asarray(im.resize(tile_img.shape[1::-1], Image.NEAREST))


def _png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


# ---- curves ----------------------------------------------------------------------------------------
def fid_curve(epochs: np.ndarray, start: float, floor: float, tau: float, rng: np.random.Generator,
              rise_after: float | None = None, rise: float = 0.0) -> np.ndarray:
    f = floor + (start - floor) * np.exp(-epochs / tau)
    if rise_after is not None:
        f = f + rise * np.clip(epochs - rise_after, 0, None) / max(1.0, epochs.max() - rise_after)
    return f * (1 + rng.normal(0, 0.03, len(epochs)))


def _train_lines(epochs: int, rng: np.random.Generator, t0: float, d_acc_end: float = 0.62,
                 extra_losses: tuple[str, ...] = (), ips: float = 900.0, steps_per_epoch: int = 11) -> list[dict]:
    lines = []
    for e in range(1, epochs + 1):
        f = e / max(epochs, 1)
        acc = 0.5 + (d_acc_end - 0.5) * min(1.0, 2 * f)
        rec = {"kind": "train", "epoch": e, "step": e * steps_per_epoch, "time": round(t0 + e * 12.5, 3),
               "loss/D": float(1.2 - 0.5 * f + rng.normal(0, 0.08)),
               "loss/G": float(0.9 + 1.6 * f + rng.normal(0, 0.25)),
               "acc/D_real": float(np.clip(acc + rng.normal(0, 0.05), 0, 1)),
               "acc/D_fake": float(np.clip(acc - 0.03 + rng.normal(0, 0.05), 0, 1)),
               "img_per_s": float(ips * (1 + rng.normal(0, 0.02))), "augment_p": round(min(0.6, 0.002 * e), 4),
               "lr/G": 2e-4, "epoch_seconds": 12.5}  # as run.json's wall_seconds (epochs x 12.5 s)
        for k in extra_losses:
            rec[k] = float(2.5 * math.exp(-3 * f) + 0.4 + rng.normal(0, 0.05))
        lines.append(rec)
    return lines


# ---- writers ---------------------------------------------------------------------------------------
def write_pokelab_run(dest: Path, run_id: str, engine: str, epochs_planned: int, epochs_done: int, status: str,
                      *, seed: int = 0, eval_every: int = 10, sample_every: int = 20, tile: int = 64,
                      grid_n: int = 16, art: list[np.ndarray] | None = None, fid: tuple = (280.0, 60.0, 40.0),
                      rise_after: float | None = None, collapse_after: float | None = None,
                      partial_tail: bool = False, extra_losses: tuple[str, ...] = (), d_acc_end: float = 0.62,
                      events: list[dict] | None = None, dataset_count: int = 649, eval_n: int = 2000) -> Path:
    rng = np.random.default_rng(seed)
    d = dest / run_id
    (d / "samples").mkdir(parents=True, exist_ok=True)
    t0 = time.time() - epochs_done * 12.5
    info = {
        "run_id": run_id, "engine": engine, "kind": "generate", "status": status,
        "config": {"image_size": tile, "batch_size": 64, "epochs": epochs_planned, "seed": seed,
                   "sample_every": sample_every, "eval_every": eval_every, "grid_n": grid_n, "eval_n": eval_n},
        "dataset": {"name": "pokemon", "key": "demo0123456789ab", "count": dataset_count, "size": tile},
        "device": "cuda:0 (NVIDIA H100 80GB HBM3)", "amp": "bfloat16",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "epoch": epochs_done, "step": epochs_done * 11, "wall_seconds": round(epochs_done * 12.5, 2),
        "format_version": 1,
    }
    atomic_write_json(d / "run.json", info)
    lines = _train_lines(epochs_done, rng, t0, d_acc_end=d_acc_end, extra_losses=extra_losses)
    ev_epochs = np.arange(eval_every, epochs_done + 1, eval_every, dtype=float)
    fids = fid_curve(ev_epochs, fid[0], fid[1], fid[2] * epochs_planned / 200, rng, rise_after, rise=25.0)
    evals = []
    for e, fv in zip(ev_epochs, fids):
        ms_real = 0.165
        ms_fake = 0.14 + 0.03 * rng.random()
        if collapse_after is not None and e > collapse_after:
            ms_fake = 0.2 + 0.25 * min(1.0, (e - collapse_after) / (epochs_planned - collapse_after + 1e-9))
        rec = {"kind": "eval", "epoch": int(e), "step": int(e) * 11, "time": round(t0 + e * 12.5 + 3, 3),
               "fid": float(fv), "kid": float(max(0.002, fv / 1000 * (1 + rng.normal(0, 0.05)))),
               "kid_std": float(fv / 12000 + 0.001), "ms_ssim/fake": float(ms_fake), "ms_ssim/real": ms_real,
               "collapse": int(ms_fake > ms_real + 0.1), "eval_seconds": 41.3, "eval_n": eval_n}
        evals.append(rec)
    allrec = sorted(lines + evals, key=lambda r: (r["epoch"], r["kind"] != "train"))
    for ev in events or []:
        allrec.append({"kind": "event", "step": ev["epoch"] * 11, "time": t0 + ev["epoch"] * 12.5, **ev})
    allrec.sort(key=lambda r: r["epoch"])
    text = "".join(json.dumps(r) + "\n" for r in allrec)
    if partial_tail:
        nxt = json.dumps({"kind": "train", "epoch": epochs_done + 1, "step": 0, "loss/D": 0.71})
        text += nxt[: len(nxt) // 2]
    atomic_write_text(d / "metrics.jsonl", text)
    if art is not None:
        targets = art[:grid_n]
        for e in list(range(sample_every, epochs_done + 1, sample_every)):
            f = e / epochs_planned
            local = np.random.default_rng(seed * 1000 + e)
            tiles = []
            for i, t in enumerate(targets):
                if collapse_after is not None and e > collapse_after:
                    t = targets[i % 2]  # the generator draws the same two creatures over and over
                tiles.append(_progress(t, min(1.0, 0.15 + f), local))
            atomic_write_bytes(sample_path(d, e), _png(make_grid(tiles)))
    atomic_write_text(d / "log.txt", f"run {run_id}: engine {engine}\n" +
                      "".join(f"epoch {r['epoch']}: loss/D={r['loss/D']:.4g}\n" for r in lines[-5:]))
    return d


def _translation_lines(epochs_planned: int, epochs_done: int, eval_every: int, rng: np.random.Generator, t0: float,
                       steps_per_epoch: int, eval_n: int) -> list[dict]:
    """CycleGAN-like curves (least-squares GAN, lambda_cycle 10, lambda_idt 0.5): cycle and identity L1 fall fast
    and then slowly; adversarial parts hover; lr constant for the first half, then linearly down to 0."""
    half = epochs_planned / 2
    lines = []
    for e in range(1, epochs_done + 1):
        f = e / epochs_planned

        def fall(base, drop, start, k=5.0):
            return float(base + drop * (1 - f) + start * math.exp(-e / k) + rng.normal(0, 0.004))

        cyc_a, cyc_b = fall(0.055, 0.04, 0.45), fall(0.065, 0.05, 0.5)
        idt_a, idt_b = fall(0.03, 0.025, 0.3), fall(0.035, 0.03, 0.32)
        d_a, d_b = (float(0.24 - 0.05 * f + rng.normal(0, 0.015)) for _ in range(2))
        g_ab, g_ba = (float(0.32 + 0.15 * f + rng.normal(0, 0.03)) for _ in range(2))
        acc = 0.53 + 0.07 * min(1.0, 2 * f)
        lines.append({
            "kind": "train", "epoch": e, "step": e * steps_per_epoch, "time": round(t0 + e * 30.0, 3),
            "loss/G": g_ab + g_ba + 10 * (cyc_a + cyc_b) + 5 * (idt_a + idt_b), "loss/D": (d_a + d_b) / 2,
            "loss/D_A": d_a, "loss/D_B": d_b, "loss/G_AB": g_ab, "loss/G_BA": g_ba,
            "loss/cycle_A": cyc_a, "loss/cycle_B": cyc_b, "loss/idt_A": idt_a, "loss/idt_B": idt_b,
            "acc/D_real": float(np.clip(acc + rng.normal(0, 0.03), 0, 1)),
            "acc/D_fake": float(np.clip(acc - 0.04 + rng.normal(0, 0.03), 0, 1)),
            "lr": 2e-4 if e <= half else 2e-4 * (epochs_planned - e) / half,
            "img_per_s": float(48 * (1 + rng.normal(0, 0.02))), "epoch_seconds": 27.0})
    ev = np.arange(eval_every, epochs_done + 1, eval_every, dtype=float)
    fids = fid_curve(ev, 240.0, 92.0, epochs_planned / 6, rng)
    for e, fv in zip(ev, fids):
        cyc = next(r["loss/cycle_A"] for r in lines if r["epoch"] == int(e))
        lines.append({
            "kind": "eval", "epoch": int(e), "step": int(e) * steps_per_epoch, "time": round(t0 + e * 30.0 + 3, 3),
            "fid": float(fv), "kid": float(max(0.002, fv / 1100 * (1 + rng.normal(0, 0.05)))),
            "kid_std": float(fv / 14000 + 0.001),
            # the untranslated inputs against the same target set (the do-nothing baseline): the same every time
            "fid_input": 170.0, "kid_input": 0.16,
            # near-identity early (cycle and identity losses win first), moving away as the style changes
            "lpips/content": float(0.33 - 0.16 * math.exp(-e / 40) + rng.normal(0, 0.006)),
            "lpips/target": float(0.40 + 0.13 * math.exp(-e / 50) + rng.normal(0, 0.006)), "paired_n": eval_n,
            "cycle/A": float(cyc * 1.15 + rng.normal(0, 0.002)), "eval_n": eval_n, "eval_seconds": 34.0})
    return sorted(lines, key=lambda r: (r["epoch"], r["kind"] != "train"))


def write_translation_run(dest: Path, run_id: str = "20250306-100000-cyclegan-sprites2art", engine: str = "cyclegan",
                          epochs_planned: int = 200, epochs_done: int = 200, status: str = "finished", *,
                          seed: int = 6, pairs: list[tuple[np.ndarray, np.ndarray]] | None = None, tile: int = 64,
                          sample_every: int = 5, eval_every: int = 10,
                          names: tuple[str, str] = ("bw-sprites-96", "dreamworld-256"), count: int = 649) -> Path:
    """A translation run (``kind: translate``) as docs/run-format.md describes it: two datasets, per-direction
    losses, LPIPS/cycle evaluations and grids with one row per input: input | output | reconstruction
    (| attention for U-GAT-IT; CartoonGAN has input | output). ``pairs``: (input, target) tiles."""
    rng = np.random.default_rng(seed)
    d = dest / run_id
    (d / "samples").mkdir(parents=True, exist_ok=True)
    t0 = time.time() - epochs_done * 30.0
    steps = count  # batch size 1
    info = {
        "run_id": run_id, "engine": engine, "kind": "translate", "status": status,
        "config": {"image_size": tile, "batch_size": 1, "epochs": epochs_planned, "seed": seed,
                   "sample_every": sample_every, "eval_every": eval_every, "eval_n": count,
                   "engine": {"lr": 2e-4, "betas": [0.5, 0.999], "lambda_cycle": 10.0, "lambda_idt": 0.5,
                              "gan_loss": "lsgan", "pool_size": 50}},
        "dataset": [{"name": names[0], "key": "demoA0123456789a", "count": count, "size": tile, "source": names[0]},
                    {"name": names[1], "key": "demoB0123456789b", "count": count, "size": tile, "source": names[1]}],
        "device": "cuda:0 (NVIDIA H100 80GB HBM3)", "amp": "bfloat16",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "epoch": epochs_done, "step": epochs_done * steps, "wall_seconds": round(epochs_done * 27.0, 2),
        "format_version": 1,
    }
    atomic_write_json(d / "run.json", info)
    lines = _translation_lines(epochs_planned, epochs_done, eval_every, rng, t0, steps, count)
    atomic_write_text(d / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    if pairs:
        columns = TRANSLATE_COLUMNS[engine]
        for e in range(sample_every, epochs_done + 1, sample_every):
            f = e / epochs_planned
            local = np.random.default_rng(seed * 1000 + e)
            tiles = []
            for inp, target in pairs[:8]:
                w = min(1.0, 0.15 + 1.2 * f)  # from a noisy copy of the input towards the target's style
                out = ((1 - w) * inp + w * _progress(target, min(1.0, 0.2 + f), local)).astype(np.uint8)
                row = {"input": inp, "output": out, "reconstruction": _progress(inp, min(1.0, 0.35 + f), local),
                       "attention": np.repeat((255 * (out.mean(axis=2, keepdims=True) < 250)).astype(np.uint8), 3, 2)}
                tiles += [row[c] for c in columns]
            atomic_write_bytes(sample_path(d, e), _png(make_grid(tiles, nrow=len(columns))))
    atomic_write_text(d / "log.txt", f"run {run_id}: engine {engine} ({names[0]} → {names[1]})\n" +
                      "".join(f"epoch {r['epoch']}: loss/G={r['loss/G']:.4g} cycle_A={r['loss/cycle_A']:.4g}\n"
                              for r in lines if r["kind"] == "train")[-400:])
    return d


def write_stylegan_run(dest: Path, name: str = "00000-pokemon-auto1", total_kimg: int = 400, done_kimg: int = 400,
                       *, seed: int = 3, art: list[np.ndarray] | None = None, tile: int = 64, grid: tuple = (4, 3),
                       snapshot_kimg: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    d = dest / name
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / "training_options.json", {
        "num_gpus": 1, "image_snapshot_ticks": 10, "network_snapshot_ticks": 10, "metrics": ["fid50k_full"],
        "random_seed": 0, "training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset",
                                                  "path": "/data/pokemon.zip", "use_labels": False,
                                                  "max_size": 649, "xflip": True, "resolution": tile},
        "batch_size": 32, "batch_gpu": 32, "total_kimg": total_kimg, "kimg_per_tick": 4, "ada_target": 0.6,
        "run_dir": str(d)})
    t0 = time.time() - done_kimg * 9
    lines = []
    for k in range(0, done_kimg + 1, 4):
        f = k / total_kimg
        sr = 0.35 * min(1.0, 3 * f) + rng.normal(0, 0.04)
        sf = -0.3 * min(1.0, 3 * f) + rng.normal(0, 0.04)
        lines.append({
            "Loss/scores/fake": {"num": 128, "mean": float(-0.5 * f), "std": 1.0},
            "Loss/signs/fake": {"num": 128, "mean": float(sf), "std": 0.9},
            "Loss/G/loss": {"num": 128, "mean": float(0.7 + 0.8 * f + rng.normal(0, 0.1)), "std": 0.5},
            "Loss/scores/real": {"num": 128, "mean": float(0.6 * f), "std": 1.0},
            "Loss/signs/real": {"num": 128, "mean": float(sr), "std": 0.9},
            "Loss/D/loss": {"num": 128, "mean": float(1.35 - 0.3 * f + rng.normal(0, 0.06)), "std": 0.4},
            "Loss/r1_penalty": {"num": 8, "mean": float(0.05 + 0.1 * f), "std": 0.02},
            "Loss/D/reg": {"num": 8, "mean": float(0.02 + 0.05 * f), "std": 0.01},
            "Progress/tick": {"num": 1, "mean": k // 4, "std": 0.0},
            "Progress/kimg": {"num": 1, "mean": float(k), "std": 0.0},
            "Progress/augment": {"num": 1, "mean": float(min(0.4, 0.002 * k)), "std": 0.0},
            "Timing/total_sec": {"num": 1, "mean": float(k * 9), "std": 0.0},
            "Timing/sec_per_kimg": {"num": 1, "mean": float(9 + rng.normal(0, 0.2)), "std": 0.0},
            "timestamp": t0 + k * 9})
    atomic_write_text(d / "stats.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    snaps = np.arange(0, done_kimg + 1, snapshot_kimg, dtype=float)
    fids = fid_curve(snaps, 300.0, 45.0, total_kimg / 5, rng)
    atomic_write_text(d / "metric-fid50k_full.jsonl", "".join(json.dumps({
        "results": {"fid50k_full": float(v)}, "metric": "fid50k_full", "total_time": 120.0,
        "total_time_str": "2m 00s", "num_gpus": 1, "snapshot_pkl": f"network-snapshot-{int(k):06d}.pkl",
        "timestamp": t0 + k * 9}) + "\n" for k, v in zip(snaps, fids)))
    if art is not None:
        gw, gh = grid
        targets = art[: gw * gh]
        for k in snaps:
            local = np.random.default_rng(int(k) + seed)
            tiles = [_progress(t, min(1.0, 0.1 + k / total_kimg), local) for t in targets]
            atomic_write_bytes(d / f"fakes{int(k):06d}.png", _png(make_grid(tiles, nrow=gw, padding=0)))
    atomic_write_text(d / "log.txt", "Training for 400 kimg...\n")
    return d


def write_lightweight_run(dest: Path, name: str = "pokemon", steps: int = 12000, *, seed: int = 5,
                          art: list[np.ndarray] | None = None, tile: int = 32) -> Path:
    rng = np.random.default_rng(seed)
    d = dest / name
    d.mkdir(parents=True, exist_ok=True)
    pts = np.arange(1000, steps + 1, 1000, dtype=float)
    fids = fid_curve(pts, 250.0, 70.0, steps / 4, rng)
    atomic_write_text(d / "fid_scores.txt", "".join(f"{int(s)},{v}\n" for s, v in zip(pts, fids)))
    if art is not None:
        targets = (art * (64 // len(art) + 1))[:64]
        for num in range(0, steps // 1000 + 1, 3):
            local = np.random.default_rng(num + seed)
            tiles = [_progress(t, min(1.0, 0.1 + num * 1000 / steps), local) for t in targets]
            g = make_grid(tiles, nrow=8, padding=2, pad_value=0)
            atomic_write_bytes(d / f"{num}-ema.jpg", _png(g, "JPEG"))
    return d


def write_broken_run(dest: Path, run_id: str = "20250305-090000-dcgan-pokemon") -> Path:
    d = dest / run_id
    (d / "samples").mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "run.json", '{"run_id": "%s", "engine": "dcgan", "status": "runn' % run_id)
    good = [{"kind": "train", "epoch": e, "step": e, "time": 0, "loss/D": 1.0 - 0.01 * e, "loss/G": 1.0}
            for e in range(1, 6)]
    text = json.dumps(good[0]) + "\n{not json at all\n" + "".join(json.dumps(g) + "\n" for g in good[1:])
    atomic_write_text(d / "metrics.jsonl", text)
    atomic_write_bytes(d / "samples" / "epoch_000005.png", b"\x89PNG\r\n\x1a\n-truncated")
    return d


def write_demo_reviews(db_path: str | Path, seed: int = 0, n: int = 240) -> Path:
    """A blind-review database as the app writes it: 4 sources with different true strengths, 3 raters,
    part of the pairs shown to several raters (so agreement can be measured)."""
    from engines.review import record

    rng = random.Random(seed)
    strength = {"real": 2.0, "stylegan2-ada:00000-pokemon-auto1": 1.0, "aegan:20250303-140000-aegan-pokemon": 0.3,
                "dcgan:20250301-101500-dcgan-pokemon": -0.4}
    names = list(strength)
    raters = ["ash", "misty", "brock"]
    shown: list[tuple] = []
    t0 = time.time() - 3600
    for k in range(n):
        q = "pokemon" if k % 3 else "novel"
        if shown and rng.random() < 0.3:  # the same pair again, for another rater
            q, a, b, ia, ib, consensus = rng.choice(shown)
        else:
            a, b = rng.sample(names, 2)
            ia, ib = f"seed:{rng.randrange(10_000)}", f"seed:{rng.randrange(10_000)}"
            pa = 1 / (1 + math.exp(strength[b] - strength[a]))
            consensus = "left" if rng.random() < pa else "right"  # how this particular pair looks
            shown.append((q, a, b, ia, ib, consensus))
        u = rng.random()  # raters mostly see the same thing in the same pair, with some noise and ties
        answer = "tie" if u < 0.08 else (consensus if u < 0.8 else rng.choice(["left", "right"]))
        record(db_path, rater=rng.choice(raters), session=f"s{k // 80}", question=q, left_source=a, right_source=b,
               left_item=ia, right_item=ib, answer=answer, created=t0 + k * 10)
    return Path(db_path)


def _translation_pairs(art: list[np.ndarray], names: list[str], source_dir: str | Path | None,
                       tile: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input, target) tiles: the source image of the same file name when there is one, else the art pixelated."""
    out = []
    for k, target in enumerate(art):
        src = Path(source_dir) / names[k] if source_dir and k < len(names) else None
        out.append((_flatten(src, tile) if src is not None and src.is_file() else _pixelate(target), target))
    return out


def write_demo(dest: str | Path, images_dir: str | Path | None = None, tile: int = 64, seed: int = 0,
               source_dir: str | Path | None = None) -> list[Path]:
    """The demo set: 6 pokelab runs (one broken, one CycleGAN translation from ``source_dir`` — or pixelated
    art — to the art of ``images_dir``), a stylegan2-ada folder, a lightweight-gan folder, and a review
    database ``reviews.db``."""
    dest = Path(dest)
    rng = random.Random(seed)
    names: list[str] = []
    art = _load_art(images_dir, tile, 16, rng, names)
    small = [np.asarray(Image.fromarray(a).resize((32, 32), Image.LANCZOS)) for a in art]
    runs_dir = dest / "runs"
    out = [
        write_pokelab_run(runs_dir, "20250301-101500-dcgan-pokemon", "dcgan", 200, 200, "finished", seed=1,
                          art=art, tile=tile, fid=(290.0, 78.0, 35.0), rise_after=150, d_acc_end=0.86,
                          events=[{"epoch": 80, "event": "interrupted", "message": "SIGTERM: checkpoint written"},
                                  {"epoch": 80, "event": "resumed", "message": "resumed from epoch 80"}]),
        write_pokelab_run(runs_dir, "20250302-081000-wgan_gp-pokemon", "wgan_gp", 300, 130, "running", seed=2,
                          art=art, tile=tile, fid=(300.0, 55.0, 45.0), partial_tail=True, d_acc_end=0.55,
                          events=[{"epoch": 60, "event": "nan_rollback",
                                   "message": "non-finite loss at epoch 61 (loss/D); rolled back to epoch 60"}]),
        write_pokelab_run(runs_dir, "20250303-140000-aegan-pokemon", "aegan", 200, 200, "finished", seed=3,
                          art=art, tile=tile, fid=(270.0, 62.0, 30.0), collapse_after=120,
                          extra_losses=("loss/recon", "loss/Dz")),
        write_pokelab_run(runs_dir, "20250304-120000-dcgan-pokemon", "dcgan", 200, 37, "failed", seed=4,
                          art=art, tile=tile, fid=(290.0, 90.0, 35.0),
                          events=[{"epoch": 37, "event": "error", "message": "CUDA out of memory"}]),
        write_broken_run(runs_dir),
        write_translation_run(runs_dir, pairs=_translation_pairs(art, names, source_dir, tile), tile=tile,
                              names=(Path(source_dir).name if source_dir else "pixelated",
                                     Path(images_dir).name if images_dir else "shapes")),
        write_stylegan_run(dest / "stylegan2-ada", art=art, tile=tile),
        write_lightweight_run(dest / "lightweight-gan", art=small, tile=32),
    ]
    write_demo_reviews(dest / "reviews.db", seed=seed)
    # lightweight-gan records no status: files untouched for two hours read as a stopped run
    old = time.time() - 7200
    for p in [out[-1], *out[-1].iterdir()]:
        os.utime(p, (old, old))
    return out


def write_synthetic(dest: str | Path, runs: int = 20, epochs: int = 1000, eval_every: int = 10, seed: int = 0) -> list[Path]:
    """Metrics-only pokelab runs (no grids) for the load benchmark."""
    dest = Path(dest)
    return [write_pokelab_run(dest, f"20250101-{i:06d}-dcgan-bench", "dcgan", epochs, epochs, "finished",
                              seed=seed + i, eval_every=eval_every, art=None) for i in range(runs)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write demo runs for the pokelab studio.")
    ap.add_argument("dest", help="folder to write into (created)")
    ap.add_argument("--images", help="folder of PNG images to build the sample grids from")
    ap.add_argument("--source-images", help="folder of PNG images the demo translation run translates from "
                                            "(paired with --images by file name; default: pixelated --images)")
    ap.add_argument("--tile", type=int, default=64, help="tile size of the sample grids (px)")
    args = ap.parse_args(argv)
    paths = write_demo(args.dest, args.images, tile=args.tile, source_dir=args.source_images)
    print(f"wrote {len(paths)} runs under {args.dest}; open them with:\n"
          f"  streamlit run studio -- --runs {args.dest} --review-db {Path(args.dest) / 'reviews.db'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

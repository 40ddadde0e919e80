"""Metrics of an image-to-image translation engine (docs/metrics.md, "Translation").

Every source picture is translated A -> B (up to ``n``), then:
- ``fid``, ``kid`` (+ ``kid_std``): the translated outputs against the target set — does it look like the target domain?
  (the same code path and cached real statistics as generation); ``fid_input``, ``kid_input``: the untranslated
  inputs against the same set, the do-nothing baseline (computed once per source/target pair and cached);
- ``lpips/content``: mean LPIPS between each input and its output — how much of the input was changed
  (lower keeps more of the picture; 0 would be the identity, so read it together with FID);
- ``cycle/A``: mean L1 (in [-1, 1] units) between each input and its A -> B -> A reconstruction, for
  engines with both directions;
- ``lpips/target``: when the two sets share picture ids (file names without extension, as the shared
  sprite -> artwork task does), mean LPIPS between each output and the true target of the same id; lower
  is better; ``paired_n`` says how many pairs were found. The unpaired engines never see the pairs in training.
  ``lpips/target_input`` is the same distance for the untranslated inputs: the do-nothing baseline.
- ``l1/target``, ``ssim/target`` (metrics ``l1_target``, ``ssim_target``): the same pairs, mean absolute
  difference in [-1, 1] units (the unit of the training L1 losses) and SSIM (``msssim.ssim``: 11-tap Gaussian
  window, sigma 1.5, on 0-255 pixels, mean over channels; higher is better); ``_input`` keys for the inputs.
  The paired engine (pix2pix) logs them; ``pokelab eval-paired`` tabulates them beside baselines.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
import warnings
from typing import Iterable

import numpy as np
import torch

from ..data.images import from_uint8
from .evaluate import EvalOptions, _evaluate, parse_metric_names
from .inception import as_uint8_rgb, resolve_device
from .sources import as_image_set, resize_uint8

TRANSLATION_METRICS = ("fid", "kid", "lpips", "cycle", "lpips_target", "l1_target", "ssim_target")
#: metrics that compare each output with the true target of the same id -> their result key
PAIRED_METRICS = {"l1_target": "l1/target", "ssim_target": "ssim/target", "lpips_target": "lpips/target"}
_baseline_lock = threading.Lock()
_baseline_cache: dict[tuple, dict[str, float]] = {}


def parse_translation_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    return parse_metric_names(metrics, TRANSLATION_METRICS, what="translation metric")


def paired_indices(source_files: list[str], target_files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) of source and target pictures with the same id (file stem, case-insensitive)."""
    from ..paired import picture_id

    where = {picture_id(f): j for j, f in enumerate(target_files)}
    pairs = [(i, where[picture_id(f)]) for i, f in enumerate(source_files) if picture_id(f) in where]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, j = np.array(pairs, np.int64).T
    return i, j


def evaluate_translation(engine, source, target, metrics: str | Iterable[str] = TRANSLATION_METRICS,
                         n: int | None = None, batch_size: int = 50, device=None, seed: int = 0,
                         progress: bool = False, **options) -> dict[str, float]:
    """Metrics of ``engine`` (a TranslationEngine) translating ``source`` into the domain of ``target``
    (PreparedDatasets, image sets or uint8 tensors). Keys: fid, kid, kid_std, fid_input, kid_input, lpips/content,
    cycle/A, lpips/target, l1/target, ssim/target (each with an _input twin), paired_n (those asked for and
    possible), eval_n, eval_seconds."""
    t0 = time.perf_counter()
    metrics = parse_translation_metrics(metrics)
    opts = EvalOptions(**options)
    dev = resolve_device(device)
    src, tgt = as_image_set(source, "source"), as_image_set(target, "target")
    size = (engine.image_size, engine.image_size)
    count = len(src.images) if n is None else min(int(n), len(src.images))
    if count < 2:
        raise ValueError(f"translation evaluation needs at least 2 source pictures (got {count})")
    inputs = as_uint8_rgb(src.images[:count])
    if tuple(inputs.shape[-2:]) != size:
        inputs = resize_uint8(inputs, size)

    chunks = range(0, count, batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, total=math.ceil(count / batch_size), desc="translating", unit="batch")
    outputs, cycle_sum = [], 0.0
    with_cycle = "cycle" in metrics and "BA" in engine.directions
    for s in chunks:
        x = inputs[s:s + batch_size]
        y = engine.translate(x)
        if not torch.isfinite(y).all():
            raise ValueError("the translator produced NaN/Inf pixels; the model has diverged")
        outputs.append(as_uint8_rgb(y).cpu())
        if with_cycle:
            rec = engine.translate(y, "BA").float().cpu()  # the output translated back: no second A -> B pass
            cycle_sum += float((rec - from_uint8(x).cpu()).abs().mean(dim=(1, 2, 3)).sum())
    out_u8 = torch.cat(outputs)

    res: dict[str, float] = {}
    feature_metrics = [m for m in ("fid", "kid") if m in metrics]
    if feature_metrics:
        def scores(images: torch.Tensor) -> dict[str, float]:
            return feature_scores(images, tgt, feature_metrics, batch_size, dev, seed, opts)

        res.update(scores(out_u8))
        # the do-nothing baseline (the inputs themselves against the target set), computed once per run
        key = (getattr(src, "key", None), count, getattr(tgt, "key", None), size, tuple(feature_metrics), seed)
        with _baseline_lock:
            base = _baseline_cache.get(key) if key[0] and key[2] else None
        if base is None:
            base = scores(inputs)
            with _baseline_lock:
                _baseline_cache[key] = base
        res.update({f"{k}_input": v for k, v in base.items() if k != "kid_std"})
    if "lpips" in metrics:
        from .perceptual import lpips_distance

        res["lpips/content"] = float(lpips_distance(inputs, out_u8, dev, batch_size).mean())
    if with_cycle:
        res["cycle/A"] = cycle_sum / count
    paired = [m for m in PAIRED_METRICS if m in metrics]
    if paired:
        i, j = paired_indices(list(src.files or [])[:count], list(tgt.files or []))
        if len(i):
            truth = true_targets(tgt, j, size)
            res.update(paired_scores(out_u8[torch.as_tensor(i)], truth, paired, dev, batch_size))
            # the do-nothing baseline: a translator earns its keep only by beating this
            res.update({f"{k}_input": v for k, v in
                        paired_scores(inputs[torch.as_tensor(i)], truth, paired, dev, batch_size).items()})
            res["paired_n"] = float(len(i))
        else:
            warnings.warn(f"{', '.join(paired)} skipped: the source and target sets share no picture ids "
                          "(file names)", stacklevel=2)
    res["eval_n"] = float(count)
    res["eval_seconds"] = time.perf_counter() - t0
    return res


def feature_scores(images: torch.Tensor, target, metrics: Iterable[str], batch_size: int = 50, device=None,
                   seed: int = 0, opts: EvalOptions | None = None) -> dict[str, float]:
    """FID / KID (+ kid_std) of uint8 pictures against the target set (its statistics cached by key)."""
    metrics = [m for m in ("fid", "kid") if m in metrics]
    count = len(images)
    batches = (images[s:s + batch_size] for s in range(0, count, batch_size))
    opts = dataclasses.replace(opts or EvalOptions(), intervals=0)  # only fid/kid are kept: skip their intervals
    r = _evaluate(batches, count, as_image_set(target, "target"), metrics, batch_size, resolve_device(device),
                  seed, False, opts, None)
    return {k: v for k, v in r.items() if k in ("fid", "kid", "kid_std")}


def true_targets(target, index, size: tuple[int, int]) -> torch.Tensor:
    """The target set's pictures at ``index`` as uint8 RGB at ``size`` (antialiased resize where needed)."""
    truth = as_uint8_rgb(target.images[torch.as_tensor(index)])
    return resize_uint8(truth, size) if tuple(truth.shape[-2:]) != tuple(size) else truth


def paired_scores(outputs: torch.Tensor, truth: torch.Tensor, metrics: Iterable[str] = tuple(PAIRED_METRICS),
                  device=None, batch_size: int = 50) -> dict[str, float]:
    """Mean distances of aligned uint8 pictures to their true targets: ``l1/target`` ([-1, 1] units),
    ``ssim/target`` (single-scale SSIM, higher is better), ``lpips/target`` (AlexNet LPIPS)."""
    if outputs.shape != truth.shape or outputs.dim() != 4:
        raise ValueError(f"paired metrics need two aligned NCHW batches, got {tuple(outputs.shape)} and "
                         f"{tuple(truth.shape)}")
    metrics = [m for m in PAIRED_METRICS if m in metrics]
    res: dict[str, float] = {}
    if "l1_target" in metrics:  # exact in integers: |a - b| / 127.5 is the distance of from_uint8 values
        diff = (outputs.to(torch.int16) - truth.to(torch.int16)).abs().double()
        res["l1/target"] = float(diff.mean() / 127.5)
    if "ssim_target" in metrics:
        from .msssim import ssim

        vals = [ssim(outputs[s:s + batch_size], truth[s:s + batch_size], data_range=255.0)
                for s in range(0, len(outputs), batch_size)]
        res["ssim/target"] = float(torch.cat(vals).mean())
    if "lpips_target" in metrics:
        from .perceptual import lpips_distance

        res["lpips/target"] = float(lpips_distance(outputs, truth, resolve_device(device), batch_size).mean())
    return res

"""One entry point for the trainer, the CLI and the app: evaluate a generator (or a set of images)
against a real set. Generated images flow batch by batch from the generator into the networks in
memory (quantised to uint8 first, exactly as a saved PNG would be); real-image features come from the
on-disk statistics cache."""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from . import MetricUnavailable
from .fid import RealStats, fid_from_features, real_statistics
from .inception import as_uint8_rgb, class_probabilities, classifier_problem, features_of_batch, \
    inception_score_from_probs, resolve_device
from .kid import kid_and_interval
from .msssim import COLLAPSE_MARGIN, collapse_flag, ms_ssim_scales, pairwise_ms_ssim
from .novelty import MEMORISATION_PERCENTILE, NoveltyResult, novelty
from .prdc import DC_K, PR_K, PRDC_METRICS, prdc
from .small_n import FID_INF_POINTS, LEVEL, REPLICATES, WeightedFID, fid_infinity, fid_interval
from .sources import as_image_set, load_image_folder, load_real, resize_uint8

KNOWN_METRICS = ("fid", "kid", "ms_ssim", "lpips", "novelty", "is", *PRDC_METRICS, "fid_inf")
DEFAULT_METRICS = ("fid", "kid", "ms_ssim")
_FEATURE_METRICS = {"fid", "kid", "novelty", "fid_inf", *PRDC_METRICS}
_POOL_METRICS = {"ms_ssim", "lpips"}


@dataclass
class EvalOptions:
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pairs: int = 500                 # random pairs for MS-SSIM / LPIPS diversity
    diversity_pool: int = 500        # generated images kept (uint8) to draw those pairs from
    collapse_margin: float = COLLAPSE_MARGIN
    memorisation_percentile: float = MEMORISATION_PERCENTILE
    is_splits: int = 10
    intervals: int = REPLICATES      # half-samples behind fid_lo/fid_hi and kid_lo/kid_hi (0: no intervals)
    interval_level: float = LEVEL
    pr_k: int = PR_K                 # neighbourhood of precision/recall (pr50k3)
    dc_k: int = DC_K                 # neighbourhood of density/coverage
    fid_inf_points: int = FID_INF_POINTS
    fid_inf_first: int | None = None  # smallest count of FID∞'s line (None: min(5000, n // 2))


def parse_metric_names(metrics: str | Iterable[str], known: tuple[str, ...], all_means: tuple[str, ...] | None = None,
                       what: str = "metric") -> tuple[str, ...]:
    """'fid, KID' or ['fid', 'kid'] -> ('fid', 'kid'): validated against ``known``, de-duplicated, in order;
    'all' expands to ``all_means`` (default: every known metric)."""
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    out: list[str] = []
    for m in names:
        m = m.strip().lower().replace("-", "_")
        if not m:
            continue
        if m == "all":
            m_list = list(known if all_means is None else all_means)
        elif m in known:
            m_list = [m]
        else:
            raise ValueError(f"unknown {what} {m!r}; known: {', '.join(known)} (or 'all')")
        out += [k for k in m_list if k not in out]
    if not out:
        raise ValueError("no metrics asked for")
    return tuple(out)


def parse_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    return parse_metric_names(metrics, KNOWN_METRICS, tuple(k for k in KNOWN_METRICS if k != "is"))


def _batch_seed(seed: int, index: int) -> int:
    """Independent, reproducible seeds per batch (seed s and s+1 do not share batches)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, index]).generate_state(1)[0])


def _generated(sample_fn: Callable[[int, int], torch.Tensor], n: int, batch_size: int, seed: int,
               shard: bool = False) -> Iterator[torch.Tensor]:
    from ..base import metrics_sampling
    from ..distributed import current

    rank, world = (current().rank, current().world) if shard else (0, 1)
    for b, start in enumerate(range(0, n, batch_size)):
        if b % world != rank:  # under torchrun: batch b is rank b % world's (its seed is the same as in one process)
            continue
        k = min(batch_size, n - start)
        with metrics_sampling():  # engines sample as their references measure (Engine.metrics_sample_kwargs)
            x = sample_fn(k, _batch_seed(seed, b))
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or len(x) != k:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"sample_fn({k}, seed) must return a [{k}, C, H, W] tensor in [-1, 1]; got {got}")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError("the generator produced NaN/Inf pixels; the model has diverged")
        yield as_uint8_rgb(x)


_real_ms_lock = threading.Lock()
_real_ms_cache: dict[tuple, float] = {}


def _real_ms_ssim(real, size, images_at_size, pairs, seed, device) -> float:
    key = (real.key, tuple(size), pairs, seed)
    with _real_ms_lock:
        if key in _real_ms_cache:
            return _real_ms_cache[key]
    v = pairwise_ms_ssim(images_at_size(), pairs, seed, device=device)
    with _real_ms_lock:
        _real_ms_cache[key] = v
    return v


def _check_size(metrics, size) -> None:
    if "ms_ssim" in metrics:
        ms_ssim_scales(min(size))
    if "lpips" in metrics:
        from .perceptual import MIN_SIZE

        if min(size) < MIN_SIZE:
            raise MetricUnavailable(f"LPIPS (AlexNet) needs images of at least {MIN_SIZE} px; got {size[0]}x{size[1]}")


def _evaluate(fake_batches: Iterable[torch.Tensor], n_total: int | None, real, metrics, batch_size: int, device,
              seed: int, progress: bool, opts: EvalOptions, details: dict | None,
              shard: bool = False) -> dict[str, float]:
    t0 = time.perf_counter()
    metrics = parse_metrics(metrics)
    dev = resolve_device(device)
    if "is" in metrics:
        problem = classifier_problem()  # refuse before minutes of sampling, not after
        if problem:
            raise MetricUnavailable(f"Inception Score unavailable: {problem}")
    real = as_image_set(real)
    if len(real.images) < 2:
        raise ValueError(f"the real set has {len(real.images)} image(s); evaluation needs at least 2")
    need_feats = bool(_FEATURE_METRICS & set(metrics))
    need_pool = bool(_POOL_METRICS & set(metrics))

    if progress:
        from tqdm.auto import tqdm

        fake_batches = tqdm(fake_batches, total=None if n_total is None else math.ceil(n_total / batch_size),
                            desc="evaluating", unit="batch")
    feats, probs, pool, shapes = [], [], [], []
    n, pooled, size = 0, 0, None
    failure = None
    try:
        for x in fake_batches:
            if size is None:
                size = tuple(x.shape[-2:])
                _check_size(metrics, size)  # fail on the first batch, not after sampling everything
            elif tuple(x.shape[-2:]) != size:
                raise ValueError(f"generated images changed size mid-evaluation ({size} then {tuple(x.shape[-2:])})")
            n += len(x)
            shapes.append((len(x), size))
            if need_feats:
                feats.append(features_of_batch(x, dev))
            if "is" in metrics:
                probs.append(class_probabilities(x, dev, batch_size))
            if need_pool and pooled < opts.diversity_pool:
                keep = x[:opts.diversity_pool - pooled].cpu()
                pool.append(keep)
                pooled += len(keep)
    except Exception as e:  # noqa: BLE001 — under torchrun every rank must hear of it before the gather below
        if not shard:
            raise
        failure = e
    if shard:
        # torchrun: each rank embedded its share of the batches; rank 0 puts them back in the one-process order
        # and computes the numbers (engines.distributed.gather_batches raises everywhere if any rank failed)
        from ..distributed import gather_batches

        got = gather_batches(feats, probs, pool, shapes, error=failure)
        if got is None:
            return {}
        feats, probs, pool, shapes = got
        pool = [torch.cat(pool)[:opts.diversity_pool]] if pool else []
        n = sum(k for k, _ in shapes)
        sizes = {sz for _, sz in shapes}
        if len(sizes) > 1:
            raise ValueError(f"generated images differ in size between processes ({sorted(sizes)})")
        size = shapes[0][1] if shapes else None
    if n < 2:
        raise ValueError(f"evaluation needs at least 2 generated images (got {n})")

    resized: list[torch.Tensor] = []

    def real_at_size() -> torch.Tensor:  # resized only on a statistics-cache miss or for MS-SSIM
        if not resized:
            resized.append(resize_uint8(as_uint8_rgb(real.images), size))
        return resized[0]

    res: dict[str, float] = {}
    stats: RealStats | None = None
    fake_feats = torch.cat(feats).numpy() if feats else None
    if details is not None and fake_feats is not None:
        details["fake_features"] = fake_feats  # [n, 2048] pool3 (benchmarks/fid_speed.py times the metrics on them)
    if need_feats:
        stats = real_statistics(real.key, size, real_at_size, name=getattr(real, "name", "real"), device=dev,
                                batch_size=batch_size, progress=progress)
    # intervals need 4 images to halve; FID∞ refuses fewer itself
    intervals = opts.intervals if n >= 4 else 0
    weighted = WeightedFID(fake_feats, stats, dev) if ("fid" in metrics and intervals) or "fid_inf" in metrics \
        else None
    if "fid" in metrics:
        res["fid"] = fid_from_features(fake_feats, stats, dev)
        if intervals:
            res["fid_lo"], res["fid_hi"] = fid_interval(fake_feats, stats, res["fid"], intervals,
                                                        opts.interval_level, seed, dev, weighted=weighted)
    if "fid_inf" in metrics:
        res["fid_inf"] = fid_infinity(fake_feats, stats, opts.fid_inf_points, opts.fid_inf_first, seed, dev,
                                      weighted=weighted).value
    if "kid" in metrics:
        res["kid"], res["kid_std"], ci = kid_and_interval(
            stats.features, fake_feats, opts.kid_subsets, opts.kid_subset_size, seed=seed, device=dev,
            replicates=intervals, level=opts.interval_level)
        if ci is not None:
            res["kid_lo"], res["kid_hi"] = ci
    asked_prdc = [m for m in PRDC_METRICS if m in metrics]
    if asked_prdc:
        res.update(prdc(stats.features, fake_feats, asked_prdc, opts.pr_k, opts.dc_k, device=dev))
    fake_pool = torch.cat(pool) if pool else None
    if "ms_ssim" in metrics:
        res["ms_ssim/fake"] = pairwise_ms_ssim(fake_pool, opts.pairs, seed, device=dev)
        res["ms_ssim/real"] = _real_ms_ssim(real, size, real_at_size, opts.pairs, seed, dev)
        res["collapse"] = float(collapse_flag(res["ms_ssim/fake"], res["ms_ssim/real"], opts.collapse_margin))
    if "lpips" in metrics:
        from .perceptual import lpips_diversity

        res["lpips/diversity"] = lpips_diversity(fake_pool, opts.pairs, seed, device=dev, batch_size=batch_size)
    if "novelty" in metrics:
        nov = novelty(fake_feats, stats.features, opts.memorisation_percentile, getattr(real, "files", None))
        res["memorisation"] = nov.memorisation
        res["novelty/median_distance"] = float(np.median(nov.distance))
        if details is not None:
            details["novelty"] = nov
    if "is" in metrics:
        res["is"], res["is_std"] = inception_score_from_probs(np.concatenate(probs), opts.is_splits)
    res["eval_n"] = float(n)
    res["eval_seconds"] = time.perf_counter() - t0
    return res


def evaluate_generator(sample_fn: Callable[[int, int], torch.Tensor], real, n: int = 2000,
                       metrics: str | Iterable[str] = DEFAULT_METRICS, batch_size: int = 50, device=None,
                       seed: int = 0, progress: bool = False, *, details: dict | None = None,
                       shard: bool = False, **options) -> dict[str, float]:
    """Metrics of ``sample_fn(n_batch, seed) -> [-1, 1] NCHW`` against ``real`` (a PreparedDataset, an
    image folder or a uint8 tensor). Keys: fid, fid_lo, fid_hi, kid, kid_std, kid_lo, kid_hi, fid_inf, precision,
    recall, density, coverage, ms_ssim/fake, ms_ssim/real, collapse, lpips/diversity, memorisation,
    novelty/median_distance, is, is_std (those asked for; the intervals come with fid and kid), eval_n,
    eval_seconds. ``options`` are EvalOptions fields (kid_subsets, pairs, collapse_margin, intervals, ...).

    ``shard``: called by every rank of a torchrun job, each generates and embeds every world-th batch (the same
    per-batch seeds as one process); the features come together on rank 0, which returns the numbers one process
    would give; the other ranks return {}."""
    if n < 2:
        raise ValueError(f"n must be at least 2 (got {n})")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    opts = EvalOptions(**options)
    return _evaluate(_generated(sample_fn, int(n), int(batch_size), seed, shard=shard), int(n), real, metrics,
                     batch_size, device, seed, progress, opts, details, shard=shard)


def evaluate_images(fake, real, metrics: str | Iterable[str] = DEFAULT_METRICS, batch_size: int = 50,
                    device=None, seed: int = 0, progress: bool = False, *, details: dict | None = None,
                    **options) -> dict[str, float]:
    """Metrics of a set of images (folder, uint8 NCHW tensor or [-1, 1] float tensor) against ``real``.
    Folder vs folder reproduces ``python -m pytorch_fid FAKE REAL`` (to ~1e-6 relative)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    opts = EvalOptions(**options)
    if isinstance(fake, torch.Tensor):
        imgs = as_uint8_rgb(fake)
    else:
        imgs = load_image_folder(fake).images
    if isinstance(real, (str, bytes)) or hasattr(real, "__fspath__"):
        real = load_real(real, size=int(imgs.shape[-1]))
    batches = (imgs[s:s + batch_size] for s in range(0, len(imgs), batch_size))
    return _evaluate(batches, len(imgs), real, metrics, batch_size, device, seed, progress, opts, details)


def find_nearest_training_images(images: torch.Tensor, real, device=None, batch_size: int = 50,
                                  percentile: float = MEMORISATION_PERCENTILE) -> NoveltyResult:
    """For the app: each image's nearest real training image (``.index``, ``.distance``, ``.files``) in
    Inception pool3 cosine distance, and the set's memorisation score. Uses the cached real features."""
    imgs = as_uint8_rgb(images)
    real = as_image_set(real)
    dev = resolve_device(device)
    size = tuple(imgs.shape[-2:])
    feats = torch.cat([features_of_batch(imgs[s:s + batch_size], dev) for s in range(0, len(imgs), batch_size)])
    stats = real_statistics(real.key, size, lambda: resize_uint8(as_uint8_rgb(real.images), size),
                            name=getattr(real, "name", "real"), device=dev, batch_size=batch_size)
    return novelty(feats.numpy(), stats.features, percentile, getattr(real, "files", None))

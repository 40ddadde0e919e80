"""Evaluation metrics: FID (with FID∞ and 95 % intervals), KID, precision/recall, density/coverage, MS-SSIM
diversity / mode collapse, LPIPS, novelty, Inception Score.

See docs/metrics.md for what each number means and the choices behind it.

Importing this package stays light (no torch): the CLI builds its parser and its list of user errors
(``MetricUnavailable``) from here. The numeric API is loaded on first use.
"""
from __future__ import annotations

import importlib


class MetricUnavailable(RuntimeError):
    """A metric that cannot be computed honestly here (e.g. Inception Score with a zeroed classifier,
    LPIPS on images too small for AlexNet). Raised instead of printing a meaningless number."""


_LAZY = {
    "evaluate_generator": "evaluate",
    "evaluate_images": "evaluate",
    "KNOWN_METRICS": "evaluate",
    "DEFAULT_METRICS": "evaluate",
    "frechet_distance": "fid",
    "feature_statistics": "fid",
    "real_statistics": "fid",
    "RealStats": "fid",
    "stats_cache_dir": "fid",
    "kid": "kid",
    "kid_and_interval": "kid",
    "mmd2_unbiased": "kid",
    "fid_infinity": "small_n",
    "fid_interval": "small_n",
    "prdc": "prdc",
    "ms_ssim": "msssim",
    "ms_ssim_scales": "msssim",
    "pairwise_ms_ssim": "msssim",
    "lpips_distance": "perceptual",
    "lpips_diversity": "perceptual",
    "inception_features": "inception",
    "inception_score": "inception",
    "get_inception": "inception",
    "nearest_real": "novelty",
    "novelty": "novelty",
    "find_nearest_training_images": "evaluate",
    "evaluate_conditional": "per_label",
    "per_label_scores": "per_label",
    "label_consistency": "per_label",
    "load_image_folder": "sources",
    "add_eval_command": "cli",
}

__all__ = ["MetricUnavailable", *_LAZY]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)

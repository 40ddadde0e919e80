"""Differentiable augmentation applied to everything the discriminator sees.

``build_augment(name, **opts)`` returns an object with
  ``__call__(x) -> x``   (x in [-1, 1], NCHW, differentiable w.r.t. x)
  ``p``                  the current augmentation probability (logged each epoch)
  ``update(real_logits)``  feedback hook after each D step (ADA adjusts p; DiffAugment ignores it)
  ``state_dict()/load_state_dict()``  saved in the checkpoint so resume is exact.
New pipelines (e.g. ADA) register in ``_BUILDERS``.
"""
from __future__ import annotations

import importlib

_BUILDERS = {
    "none": ("engines.augment.diffaugment", "NoAugment"),
    "diffaugment": ("engines.augment.diffaugment", "DiffAugment"),
    "ada": ("engines.augment.ada", "AdaptiveAugment"),
}


def available() -> list[str]:
    return list(_BUILDERS)


def build_augment(name: str | None, **opts):
    name = (name or "none").lower()
    if name not in _BUILDERS:
        raise ValueError(f"unknown augmentation {name!r}; available: {', '.join(_BUILDERS)}")
    mod, cls = _BUILDERS[name]
    return getattr(importlib.import_module(mod), cls)(**opts)

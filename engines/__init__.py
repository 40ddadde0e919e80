"""pokelab engines: the core library (no UI code).

Kept light on purpose: importing ``engines`` does not import torch, so the studio
(which must never pull in training code) can use small modules such as
``engines.runs.folder`` and ``engines.review``. The public API below is loaded lazily.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["get_engine", "list_engines", "load_export", "save_export", "__version__"]


def __getattr__(name: str):
    if name in ("get_engine", "list_engines"):
        from . import registry

        return getattr(registry, name)
    if name in ("load_export", "save_export"):
        from .runs import export

        return getattr(export, name)
    raise AttributeError(name)

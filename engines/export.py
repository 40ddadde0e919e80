"""Exports: what the app and ``pokelab sample`` load. A folder with

  config.json         {"format": "pokelab-export", "engine": ..., "engine_config": ..., "image_size": ..., ...}
  model.safetensors   the tensors of ``engine.export_modules()``, keys "<module>.<param>"

Loading never unpickles code (safetensors + JSON only).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .registry import get_engine
from .runs import atomic_write_bytes, atomic_write_json, export_dir, is_run_dir

EXPORT_FORMAT = "pokelab-export"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class ExportError(ValueError):
    pass


def save_export(engine, out_dir: str | os.PathLike, trained: dict[str, Any] | None = None) -> Path:
    """Write weights first, then the config (the config's presence marks a complete export)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for mod_name, mod in engine.export_modules().items():
        for k, v in mod.state_dict().items():
            tensors[f"{mod_name}.{k}"] = v.detach().to("cpu").contiguous().clone()
    atomic_write_bytes(out / WEIGHTS, st_save(tensors))
    cfg = {
        "format": EXPORT_FORMAT,
        "format_version": 1,
        "engine": engine.name,
        "kind": engine.kind,
        "image_size": engine.image_size,
        "engine_config": engine.config,
        "extra": engine.export_extra(),
        "trained": trained or {},
        "pokelab_version": __version__,
    }
    atomic_write_json(out / CONFIG, cfg)
    return out


def resolve_export_dir(path: str | os.PathLike) -> Path:
    """An export folder, a run folder (its export/), or an export's config.json."""
    p = Path(path)
    if p.is_file() and p.name == CONFIG:
        p = p.parent
    if not p.exists():
        raise ExportError(f"{path}: no such export or run folder")
    if is_run_dir(p) and not (p / CONFIG).is_file():
        p = export_dir(p)
        if not (p / CONFIG).is_file():
            raise ExportError(f"{path}: the run has no export yet (it is written at sample epochs and at the end)")
    if not (p / CONFIG).is_file() or not (p / WEIGHTS).is_file():
        raise ExportError(f"{path}: not a pokelab export (expected {CONFIG} and {WEIGHTS})")
    return p


def read_export_config(path: str | os.PathLike) -> dict[str, Any]:
    d = resolve_export_dir(path)
    try:
        cfg = json.loads((d / CONFIG).read_text(encoding="utf-8"))
    except ValueError as e:
        raise ExportError(f"{d / CONFIG}: malformed JSON ({e})") from e
    if not isinstance(cfg, dict) or cfg.get("format") != EXPORT_FORMAT or "engine" not in cfg:
        raise ExportError(f"{d / CONFIG}: not a pokelab export config")
    return cfg


def load_export(path: str | os.PathLike, device: str | torch.device | None = None):
    """Build the engine named in the export (sampling nets only) and load its weights; eval mode."""
    d = resolve_export_dir(path)
    cfg = read_export_config(d)
    cls = get_engine(cfg["engine"])
    engine = cls(cfg.get("engine_config") or {}, int(cfg["image_size"]), training=False)
    try:
        tensors = st_load((d / WEIGHTS).read_bytes())
    except Exception as e:  # safetensors raises its own error types
        raise ExportError(f"{d / WEIGHTS}: unreadable weights ({e})") from e
    for mod_name, mod in engine.export_modules().items():
        prefix = mod_name + "."
        sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            mod.load_state_dict(sub, strict=True)
        except RuntimeError as e:
            raise ExportError(f"{d}: weights do not match engine {cfg['engine']!r} with this config: {e}") from e
    engine.export_info = cfg
    engine.export_path = str(d)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    engine.to(dev).eval()
    return engine

"""Exports: what the app and ``pokelab sample`` load. A folder with

  config.json         {"format": "pokelab-export", "engine": ..., "engine_config": ..., "image_size": ..., ...}
  model.safetensors   the tensors of ``engine.export_modules()``, keys "<module>.<param>"

Loading never unpickles code (safetensors + JSON only), and never builds an engine bigger than an export may
ask for: the config is checked and the engine is first built on PyTorch's 'meta' device (no memory) to count
its parameters (``check_engine_size``), so a config with absurd widths is an ExportError, not a 1 TB allocation.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .. import __version__
from ..registry import get_engine
from .folder import atomic_write_bytes, atomic_write_json, export_dir, is_run_dir

EXPORT_FORMAT = "pokelab-export"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
#: what an export can be (engines.base.Engine.kind): a generator, a translator, an upscaler (super-resolution)
KINDS = ("generate", "translate", "upscale")


#: the largest image side an export (or a resumed run) may name
MAX_IMAGE_SIZE = 2048
#: the largest whole number in an engine config (widths, latent sizes, channel bases, layer counts)
MAX_CONFIG_INT = 1 << 20
#: the most parameters + buffers an engine built from a config may have (8 GB in fp32; the biggest shipped
#: engines have ~25 M)
MAX_PARAMETERS = 2 * 10**9


class ExportError(ValueError):
    pass


def _numbers(obj, path: str = "", depth: int = 0):
    if depth > 20:
        raise ExportError(f"engine_config{path}: nested too deeply")
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}", depth + 1)
    elif isinstance(obj, (list, tuple)):
        if len(obj) > 4096:
            raise ExportError(f"engine_config{path}: a list of {len(obj)} values is not an engine setting")
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]", depth + 1)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def check_engine_size(cls, engine_config: dict[str, Any] | None, image_size: Any, training: bool = False) -> int:
    """Bound what a config may ask for before anything is allocated: ``image_size`` at most MAX_IMAGE_SIZE,
    whole numbers in the engine config at most MAX_CONFIG_INT, no non-finite numbers, and the engine built
    on the 'meta' device (shapes only, no memory) at most MAX_PARAMETERS parameters and buffers. Returns the
    count (-1 when the engine cannot be built on 'meta': the real build is then left to fail or succeed).
    ExportError says which setting is too big."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise ExportError(f"image_size {image_size!r} is not a whole number of pixels between 1 and {MAX_IMAGE_SIZE}")
    if engine_config is not None and not isinstance(engine_config, dict):
        raise ExportError(f"engine_config must be an object, not {type(engine_config).__name__}")
    for path, v in _numbers(engine_config or {}):
        if isinstance(v, float) and not math.isfinite(v):
            raise ExportError(f"engine_config{path} = {v!r} is not a finite number")
        if isinstance(v, int) and abs(v) > MAX_CONFIG_INT:
            raise ExportError(f"engine_config{path} = {v} is larger than any engine setting may be ({MAX_CONFIG_INT})")
    n = -1
    for mode in ((True, False) if training else (False,)):
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                eng = cls(engine_config or {}, image_size, training=mode)
        except (ValueError, TypeError, KeyError) as e:  # a setting the engine refuses: say which
            raise ExportError(f"engine {getattr(cls, 'name', '?')!r} refuses this config: {e}") from None
        except Exception:  # noqa: BLE001 - e.g. .item() on a meta tensor: try without the training nets
            continue
        n = sum(t.numel() for t in itertools.chain(eng.parameters(), eng.buffers()))
        break
    if n > MAX_PARAMETERS:
        raise ExportError(f"engine {getattr(cls, 'name', '?')!r} with this config (image_size {image_size}, "
                          f"{_biggest(engine_config)}) would have {n / 1e6:,.0f} M parameters "
                          f"(~{n * 4 / 2**30:,.0f} GB), more than the {MAX_PARAMETERS / 1e9:g} G an export may ask "
                          "for; not built")
    return n


def _biggest(cfg: dict[str, Any] | None) -> str:
    nums = sorted(((v, p) for p, v in _numbers(cfg or {}) if isinstance(v, int)), reverse=True)[:3]
    return ", ".join(f"{p.lstrip('.')}={v}" for v, p in nums) or "no numbers"


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
    except RecursionError:
        raise ExportError(f"{d / CONFIG}: malformed JSON (nested too deeply)") from None
    if not isinstance(cfg, dict) or cfg.get("format") != EXPORT_FORMAT or "engine" not in cfg:
        raise ExportError(f"{d / CONFIG}: not a pokelab export config")
    bad = []
    if not isinstance(cfg["engine"], str):
        bad.append(f"'engine' must be text, not {type(cfg['engine']).__name__}")
    if cfg.get("kind") is not None and cfg.get("kind") not in KINDS:
        bad.append(f"'kind' must be one of {', '.join(KINDS)}, not {str(cfg.get('kind'))[:40]!r}")
    size = cfg.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMAGE_SIZE:
        bad.append(f"'image_size' must be a whole number of pixels between 1 and {MAX_IMAGE_SIZE}, "
                   f"not {str(size)[:40]!r}")
    for k in ("engine_config", "extra", "trained"):
        if cfg.get(k) is not None and not isinstance(cfg[k], dict):
            bad.append(f"'{k}' must be an object, not {type(cfg[k]).__name__}")
    if bad:
        raise ExportError(f"{d / CONFIG}: {'; '.join(bad)}")
    return cfg


def load_export(path: str | os.PathLike, device: str | torch.device | None = None):
    """Build the engine named in the export (sampling nets only) and load its weights; eval mode."""
    d = resolve_export_dir(path)
    cfg = read_export_config(d)
    cls = get_engine(cfg["engine"])
    try:
        check_engine_size(cls, cfg.get("engine_config"), cfg["image_size"])
        engine = cls(cfg.get("engine_config") or {}, int(cfg["image_size"]), training=False)
    except ExportError as e:
        raise ExportError(f"{d / CONFIG}: {e}") from None
    except (ValueError, TypeError) as e:
        raise ExportError(f"{d / CONFIG}: engine {cfg['engine']!r} refuses this config: {e}") from None
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
    engine.to(dev).set_memory_format().eval()
    return engine

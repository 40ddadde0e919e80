"""Engines register by name; adding an engine touches only its own file plus one line in ``_MODULES``."""
from __future__ import annotations

import importlib
import importlib.util

# name -> module that defines it. Modules are imported on first use so that
# listing engines or loading one does not import every other engine.
_MODULES = {
    "dcgan": "engines.generate.dcgan",
    "wgan_gp": "engines.generate.wgan_gp",
    "stylegan2_ada": "engines.generate.stylegan2_ada",
    "aegan": "engines.generate.aegan",
    "projected_gan": "engines.generate.projected_gan",
    "pggan": "engines.generate.pggan",
    "cgan": "engines.generate.cgan",
    "cyclegan": "engines.translate.cyclegan",
    "cartoongan": "engines.translate.cartoongan",
    "ugatit": "engines.translate.ugatit",
    "srgan": "engines.upscale.srgan",
    "pix2pix": "engines.translate.pix2pix",
    "stackgan": "engines.generate.stackgan",
}

_REGISTRY: dict[str, type] = {}


class UnknownEngineError(KeyError):
    def __str__(self) -> str:  # KeyError would print the repr with quotes
        return self.args[0]


def register(cls):
    """Class decorator: ``@register`` on an Engine subclass with a ``name`` attribute."""
    _REGISTRY[cls.name] = cls
    return cls


def available_engines() -> list[str]:
    """Engines whose module exists in this checkout (importable)."""
    out = []
    for name, mod in _MODULES.items():
        if importlib.util.find_spec(mod) is not None:
            out.append(name)
    return out


def list_engines() -> list[str]:
    return available_engines()


def get_engine(name: str) -> type:
    if name not in _REGISTRY:
        mod = _MODULES.get(name)
        if mod is None or importlib.util.find_spec(mod) is None:
            raise UnknownEngineError(
                f"unknown engine {name!r}; available: {', '.join(available_engines()) or 'none'}"
            )
        importlib.import_module(mod)
    return _REGISTRY[name]

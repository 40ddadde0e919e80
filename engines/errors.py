"""The exceptions that mean "the user asked for something that cannot be done" (bad input, missing
files, unknown names). The CLI prints them as one line and exits 2; anything else is a bug."""
from __future__ import annotations

import importlib


def _collect() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [FileNotFoundError, NotADirectoryError, PermissionError, ValueError]
    for mod, names in (
        ("engines.registry", ["UnknownEngineError"]),
        ("engines.runs.folder", ["RunFormatError"]),
        ("engines.runs.export", ["ExportError"]),
        ("engines.trainer", ["TrainingError"]),
        ("engines.data.prepare", ["DataError"]),
        ("engines.metrics", ["MetricUnavailable"]),
    ):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        found += [getattr(m, n) for n in names if hasattr(m, n)]
    return tuple(found)


USER_ERRORS = _collect()

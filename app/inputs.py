"""Checks for values that arrive from the page or the API: the page's sliders have bounds, but an API
caller can send anything, so every handler re-checks here and answers with a sentence, not a traceback."""
from __future__ import annotations

import math
from typing import Any, Iterable


class AppInputError(ValueError):
    """The request cannot be served as asked (out-of-range value, unknown export, ...)."""


def as_int(value: Any, name: str, lo: int, hi: int) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise AppInputError(f"{name} is required (a whole number from {lo} to {hi})")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise AppInputError(f"{name} must be a whole number from {lo} to {hi}, not {value!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise AppInputError(f"{name} must be a whole number from {lo} to {hi}, not {value!r}")
    i = int(f)
    if not lo <= i <= hi:
        raise AppInputError(f"{name} must be between {lo} and {hi}, not {i}")
    return i


def as_float(value: Any, name: str, lo: float, hi: float) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise AppInputError(f"{name} must be a number from {lo:g} to {hi:g}, not {value!r}") from None
    if not math.isfinite(f) or not lo <= f <= hi:
        raise AppInputError(f"{name} must be between {lo:g} and {hi:g}, not {value!r}")
    return f


def as_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    v = str(value).strip().lower() if value is not None else ""
    for c in choices:
        if v == c.lower():
            return c
    raise AppInputError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def as_text(value: Any, name: str, max_chars: int, required: bool = True) -> str:
    text = "" if value is None else str(value).strip()
    if required and not text:
        raise AppInputError(f"{name} is empty")
    if len(text) > max_chars:
        raise AppInputError(f"{name} is {len(text)} characters long; the limit is {max_chars}")
    if any(ord(ch) < 32 and ch not in "\t\n" for ch in text):
        raise AppInputError(f"{name} contains control characters")
    return text

"""Small helpers that several stages share: close-match hints and flat views of nested settings."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def did_you_mean(name: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=cutoff)
    return f" (did you mean '{close[0]}'?)" if close else ""


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; an empty dict stays a value."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[prefix + str(k)] = v
    return flat


def fmt_value(v: Any) -> str:
    """A setting as a study file would spell it: 0.001, true, stem-layer3, a+b for lists."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "+".join(map(fmt_value, v))
    return str(v).lower() if isinstance(v, bool) else str(v)

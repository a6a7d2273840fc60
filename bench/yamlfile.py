"""Reading a study file's YAML: UTF-8 only, aliases bounded, and the line of every key kept so
that errors can point at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.config import ConfigError


def _line_index(node, prefix=(), out=None) -> dict[tuple, int]:
    """Map each key path in the YAML document to its 1-based line, so errors can point at it."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            path = prefix + (k.value,)
            out[path] = k.start_mark.line + 1
            _line_index(v, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[prefix + (i,)] = v.start_mark.line + 1
            _line_index(v, prefix + (i,), out)
    return out


MAX_VALUES = 100_000  # a study file with more values once its aliases are expanded is refused


def read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            path, [f"not UTF-8 text: byte {e.start} is 0x{raw[e.start]:02x} ({e.reason}); save the file as UTF-8"]
        ) from None
    try:
        node = yaml.compose(text)
        if node is not None and (n := _expanded_size(node, {})) > MAX_VALUES:
            raise ConfigError(
                path,
                [
                    f"its YAML aliases expand to {n:,} values (more than {MAX_VALUES:,}); a study "
                    "file needs far fewer: write the values out, or use fewer nested aliases"
                ],
            )
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(path, [f"YAML syntax error at {where}{getattr(e, 'problem', None) or e}"]) from None
    return data, _line_index(node) if node is not None else {}


def _expanded_size(node, memo: dict) -> int:
    """How many scalar values the document holds with every alias expanded; each shared node is
    counted once per use but measured once, so an alias bomb is found in linear time."""
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, yaml.MappingNode):
        size = sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size

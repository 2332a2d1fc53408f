"""Reading an HF config.json dict (or a YAML `model.arch`) into a config dataclass."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def known_fields(cls: type, cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the keys `cls` has, typed; every other key) of `cfg`. Numbers are checked against the field's type: a
    float field takes an int or a number written as a string (YAML 1.1 reads `1e-5` as the string '1e-5');
    ValueError naming the key for anything else, instead of a TypeError deep inside the first forward pass."""
    types = {f.name: str(f.type) for f in fields(cls) if f.name != "extra"}
    known = {}
    for key, value in cfg.items():
        if key not in types or value is None:
            continue
        kind = types[key]
        if kind.startswith("float"):
            try:
                value = float(value) if not isinstance(value, bool) else None
            except (TypeError, ValueError):
                value = None
            if value is None:
                raise ValueError(f"{key}: expected a number, got {cfg[key]!r}")
        elif kind.startswith("int") and (isinstance(value, bool) or not isinstance(value, (int, list))):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        known[key] = value
    return known, {k: v for k, v in cfg.items() if k not in types}


def check_sizes(cfg: Any, positive: tuple[str, ...]) -> None:
    """Every field named in `positive` is an integer >= 1; ValueError naming the key (a zero or negative size
    crashes only in the first forward pass otherwise)."""
    for name in positive:
        value = getattr(cfg, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")

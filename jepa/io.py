"""Reading the small JSON files every layer has (config.json, tokenizer.json, vocab.json, ...), with errors that
name the file: one ValueError for bad UTF-8 or bad JSON, FileNotFoundError for a missing file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: str | Path, missing_hint: str = "") -> Any:
    """The JSON value in `path` (a UTF-8 byte-order mark is accepted). `missing_hint` is appended to the
    message when the file does not exist."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file{missing_hint}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 (byte {exc.start + 1})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def read_json_object(path: str | Path, what: str = "a JSON object") -> dict[str, Any]:
    """`read_json` for files that must hold an object; anything else is a ValueError saying what was expected."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected {what}, got {type(value).__name__}")
    return value

"""Writing evaluation results: metrics.jsonl keys and JSON files (NaN written as null)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def flat_metrics(summary: dict[str, Any], prefix: str = "eval/") -> dict[str, float]:
    """Nested summary -> flat numeric metrics for metrics.jsonl: ``{"test": {"mrr": x}}`` -> ``{"eval/test/mrr": x}``.

    Keeps int/float values (bools and strings dropped; NaN kept — `json_safe` writes it as null); leaves out
    counts named ``n``. Use ``prefix="eval/gsm8k/"`` etc. to namespace a flat summary.
    """
    flat: dict[str, float] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            flat.update(flat_metrics(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "n":
            flat[f"{prefix}{key}"] = value
    return flat


def json_safe(obj: Any) -> Any:
    """A copy of nested dicts/lists with non-finite floats replaced by None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_results(out: Path | None, name: str, examples: list[dict[str, Any]] | None, summary: dict[str, Any]) -> str:
    """Summary as indented JSON (returned); with ``out`` also ``out/name.jsonl`` (examples, one per line) and
    ``out/name_summary.json``."""
    text = json.dumps(json_safe(summary), indent=2)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if examples is not None:
            with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
                for example in examples:
                    f.write(json.dumps(json_safe(example)) + "\n")
        (out / f"{name}_summary.json").write_text(text + "\n", encoding="utf-8")
    return text


class PartialResults:
    """``out/NAME.partial.jsonl``: per-example results written as they finish, under a first line holding the
    settings they were made with. An evaluation with the same settings reads them back instead of computing
    them again (a torn last line is dropped); ``finish`` removes the file once the full results are written."""

    def __init__(self, out: Path | None, name: str, settings: dict[str, Any]) -> None:
        self.path = None if out is None else out / f"{name}.partial.jsonl"
        self.settings = json_safe(settings)

    def load(self) -> dict[int, dict[str, Any]]:
        """index -> example of a previous, interrupted run with the same settings (else {}; the file restarts)."""
        if self.path is None:
            return {}
        done = {}
        lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.is_file() else []
        if lines and _json_or_none(lines[0]) == {"settings": self.settings}:
            for line in lines[1:]:
                example = _json_or_none(line)
                if isinstance(example, dict) and isinstance(example.get("index"), int):
                    done[example["index"]] = example
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", encoding="utf-8") as f:  # rewritten whole: drops a torn line or old settings
            for line in [json.dumps({"settings": self.settings})] + [json.dumps(e) for e in done.values()]:
                f.write(line + "\n")
        return done

    def add(self, example: dict[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(json_safe(example)) + "\n")

    def finish(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _json_or_none(line: str) -> object:
    try:
        return json.loads(line)
    except ValueError:
        return None

"""How a config section declares its keys: `setting(...)` fields that carry their documentation and whether they
may change when a run resumes, and the `Section` base whose `check()` validates the section's own values.

The config reference (docs/config.md) and the resume rule are both read off these declarations, so a key is
declared once: its type and default (the dataclass field), its meaning (`doc`), and `resume=True` when a resumed
run may set it differently from the checkpoint's config (where the run lives, how it logs, checkpoints and
evaluates, how long the schedule is). Anything else would change the model, the optimizer state or the data
order, and a resume refuses it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar


def setting(default: Any = dataclasses.MISSING, doc: str = "", *, resume: bool = False, key: str | None = None,
            factory: Any = dataclasses.MISSING) -> Any:  # fmt: skip
    """A config field: `default` (or `factory` for a mutable one), what it means, whether it may change on
    resume, and its YAML key when that is not the attribute name (e.g. `lambda`)."""
    metadata: dict[str, Any] = {"doc": doc, "resume": resume}
    if key is not None:
        metadata["key"] = key
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def yaml_key(f: dataclasses.Field[Any]) -> str:
    """The key a field has in YAML and in a saved config (`lam` is `lambda`)."""
    return str(f.metadata.get("key", f.name))


class Section:
    """A config section (a dataclass): `section` is its YAML key; `check()` raises one ValueError line naming
    ``section.key`` for a value out of range. The base check refuses inf / nan in every float (they pass every range
    check and a run would diverge); subclasses extend it."""

    section: ClassVar[str]

    def check(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            self.require(not isinstance(value, float) or math.isfinite(value), f, "must be a finite number")

    def require(self, ok: bool, key: str | dataclasses.Field[Any], message: str) -> None:
        """ValueError ``section.key: message, got VALUE`` unless `ok`."""
        if not ok:
            f = key if isinstance(key, dataclasses.Field) else self.field(key)
            raise ValueError(f"{self.section}.{yaml_key(f)}: {message}, got {getattr(self, f.name)!r}")

    def require_choice(self, key: str, choices: tuple[str, ...]) -> None:
        self.require(getattr(self, key) in choices, key, f"must be one of {', '.join(choices)}")

    @classmethod
    def field(cls, name: str) -> dataclasses.Field[Any]:
        return next(f for f in dataclasses.fields(cls) if f.name == name)  # type: ignore[arg-type]

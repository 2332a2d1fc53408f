"""Progress of an evaluation on stderr: examples (or rows) done, and tokens per second.

Every evaluation loop (generation, reversal probes, view diagnostics, held-out loss) reports through one
`Progress`. Its `enabled` is the caller's `progress` argument; `None` means "as the surrounding run says": the
trainer wraps its evaluation hooks in `showing_progress(True)` when it shows its own progress bar, so a hook that
runs for minutes is never silent, and a `--quiet` run stays quiet.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

_SHOWN = contextvars.ContextVar("jepa_eval_progress", default=False)


@contextmanager
def showing_progress(enabled: bool) -> Iterator[None]:
    """Within this block, evaluations called with `progress=None` show their progress iff `enabled`."""
    token = _SHOWN.set(enabled)
    try:
        yield
    finally:
        _SHOWN.reset(token)


class Progress:
    """A tqdm bar over `total` units (`unit`: example, probe, row) with tokens/s in its postfix; `update` after
    each finished unit (or batch of them) and `add_tokens` as tokens are processed or generated."""

    def __init__(self, total: int, desc: str, unit: str = "example", enabled: bool | None = None, initial: int = 0):
        shown = _SHOWN.get() if enabled is None else enabled
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not shown, leave=False)
        self.tokens, self.started = 0, time.perf_counter()
        self._shown_at = 0.0

    def add_tokens(self, n: int) -> None:
        self.tokens += n
        now = time.perf_counter()
        if not self.bar.disable and now - self._shown_at >= 0.5:  # a redraw per decoding step would cost more
            self._shown_at = now
            self.bar.set_postfix(tokens=self.tokens, tok_s=f"{self.tokens / max(now - self.started, 1e-9):.0f}")

    def update(self, units: int = 1) -> None:
        self.bar.update(units)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

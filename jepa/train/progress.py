"""The run's progress on the console: a tqdm bar at a terminal, plain lines anywhere else.

tqdm redraws its bar with carriage returns; in a SLURM log or behind `| tee` those pile up into one line of tens of
thousands of characters. When stdout or stderr is not a terminal, a plain line goes to stdout every
`run.log_every` steps (and at the last step) instead: step, loss, lm, jepa, lr, tokens/s, eta.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm


@dataclass
class TimeSplit:
    """Where a run's wall time went, in seconds: waiting for the next batch (the prefetch thread's collation not
    done yet), forward+backward, the optimizer step, evaluation; `total` is the loop's wall time."""

    data: float = 0.0
    forward_backward: float = 0.0
    optimizer: float = 0.0
    evaluation: float = 0.0
    total: float = 0.0

    def describe(self) -> str:
        """One line: each part's share of the total, and what is left (checkpoints, logging, the loop itself)."""
        parts = {"forward+backward": self.forward_backward, "optimizer": self.optimizer,
                 "waiting for data": self.data, "evaluation": self.evaluation}  # fmt: skip
        other = max(0.0, self.total - sum(parts.values()))
        shares = ", ".join(f"{name} {value / self.total:.0%}" for name, value in parts.items()) if self.total else ""
        return f"time: {self.total:.1f} s; {shares}, checkpoints and logging {other / max(self.total, 1e-9):.0%}"


def format_duration(seconds: float) -> str:
    """H:MM:SS."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class StepProgress:
    """Shows optimizer steps `initial`..`total`; `interactive` None: whether stdout and stderr are terminals."""

    def __init__(
        self, *, total: int, initial: int, enabled: bool, log_every: int, interactive: bool | None = None
    ) -> None:
        if interactive is None:
            interactive = sys.stdout.isatty() and sys.stderr.isatty()
        self.total, self.log_every, self.enabled = total, log_every, enabled
        self.first, self.started = initial, time.perf_counter()
        self.bar = tqdm(total=total, initial=initial) if enabled and interactive else None

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        """After optimizer step `step` with its metrics (loss, lm, jepa, lr, tokens_per_s)."""
        due = step % self.log_every == 0 or step == self.total
        if self.bar is not None:
            self.bar.update(1)
            if due:
                self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", lm=f"{metrics['lm']:.4f}",
                                     jepa=f"{metrics['jepa']:.4f}", lr=f"{metrics['lr']:.2e}")  # fmt: skip
        elif self.enabled and due:
            done = step - self.first
            eta = (time.perf_counter() - self.started) / done * (self.total - step) if done else 0.0
            rate = metrics.get("tokens_per_s", 0.0)
            line = (f"step {step}/{self.total}  loss {metrics['loss']:.4f}  lm {metrics['lm']:.4f}  "
                    f"jepa {metrics['jepa']:.4f}  lr {metrics['lr']:.2e}  tokens/s {rate:.0f}  "
                    f"eta {format_duration(eta)}")  # fmt: skip
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

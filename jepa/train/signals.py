"""SIGINT (Ctrl-C) and SIGTERM (a cluster's preemption notice) end a run cleanly: the current optimizer step
finishes, a checkpoint is written, and train.py exits 130 / 143 with one line. A second signal of the same kind
acts at once (the default handler is back after the first)."""

from __future__ import annotations

import signal
import threading

import torch

from jepa.train.distributed import WorldInfo, all_reduce_sum

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: while inside, SIGINT / SIGTERM only set `signum`; the loop asks `requested`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def requested(self, world: WorldInfo) -> bool:
        """Whether any process got a signal (a collective under DDP, so every rank stops at the same step)."""
        if not world.is_distributed:
            return self.signum is not None
        flag = torch.tensor([float(self.signum or 0)], device=world.device)
        all_reduce_sum(flag, world)
        if flag.item() and self.signum is None:
            self.signum = signal.SIGTERM
        return bool(flag.item())

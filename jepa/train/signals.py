"""SIGINT (Ctrl-C) and SIGTERM (a cluster's preemption notice) end a run cleanly: the current optimizer step
finishes, a checkpoint is written, and train.py exits 130 / 143 with one line. A second signal of the same kind
acts at once, without a traceback. During an evaluation (`interruptible`) a signal stops it at once instead: the
last checkpoint is already written, and the next invocation runs that evaluation again.

A closed standard output (`train.py | head`) is handled like a signal (SIGPIPE: exit 141): the run stops at the
end of the step with a checkpoint and its one line on stderr, instead of dying at its next print.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TextIO

import torch

from jepa.train.distributed import WorldInfo, all_reduce_sum

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopNow(BaseException):
    """Raised by the signal handler inside `StopSignals.interruptible` (a BaseException, like KeyboardInterrupt:
    no `except Exception` on the way swallows it)."""


def _exit_now(signum: int, frame: FrameType | None) -> None:
    """A second signal: leave at once with one line (no traceback) and the shell's status for it."""
    os.write(
        2, f"{signal.Signals(signum).name} again: stopped at once; the newest step_N checkpoint resumes\n".encode()
    )
    os._exit(128 + signum)


class StopSignals:
    """Context manager: while inside, SIGINT / SIGTERM only set `signum`; the loop asks `requested`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._stdout: TextIO | None = None
        self._raise_now = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        signal.signal(signum, _exit_now)
        if self._raise_now:
            raise StopNow(signum)

    @contextmanager
    def interruptible(self, enabled: bool = True) -> Iterator[None]:
        """Within this block a signal raises `StopNow` at once (an evaluation: nothing to save). `enabled=False`
        (several processes, which must stop together) keeps the deferral."""
        self._raise_now = enabled
        try:
            if enabled and self.signum is not None:
                raise StopNow(self.signum)
            yield
        finally:
            self._raise_now = False

    def output_closed(self) -> None:
        """Standard output is gone (its reader exited): stop like a signal, and send later prints nowhere."""
        if self.signum is None:
            self.signum = signal.SIGPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        if sys.__stdout__ is not None:
            os.dup2(devnull, sys.__stdout__.fileno())  # the interpreter's final flush must not fail either
        os.close(devnull)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        self._stdout, sys.stdout = sys.stdout, _GuardedOutput(sys.stdout, self.output_closed)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        if self._stdout is not None:
            sys.stdout, self._stdout = self._stdout, None

    def requested(self, world: WorldInfo) -> bool:
        """Whether any process got a signal (a collective under DDP, so every rank stops at the same step)."""
        if not world.is_distributed:
            return self.signum is not None
        flag = torch.tensor([float(self.signum or 0)], device=world.device)
        all_reduce_sum(flag, world)
        if flag.item() and self.signum is None:
            self.signum = signal.SIGTERM
        return bool(flag.item())


class _GuardedOutput:
    """sys.stdout during a run: a write to a closed pipe tells `on_closed` instead of raising BrokenPipeError."""

    def __init__(self, stream: TextIO, on_closed: Callable[[], None]) -> None:
        self._stream, self._on_closed, self._closed = stream, on_closed, False

    def write(self, text: str) -> int:
        if self._closed:
            return len(text)
        try:
            n = self._stream.write(text)
            if "\n" in text:
                self._stream.flush()  # find a closed pipe at this line, not at exit
            return n
        except BrokenPipeError:
            self._closed = True
            self._on_closed()
            return len(text)

    def flush(self) -> None:
        if not self._closed:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._closed = True
                self._on_closed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

"""Collation ahead of the step: a background thread prepares the next optimizer steps' micro-batches (in
pinned memory on CUDA, so `Batch.to` copies them without blocking) while the device runs the current one.

The thread draws global batches from its own copy of the sampler; `next()` then advances the run's sampler by
the same batch (and checks that it is the same), so the position a checkpoint saves is always the one the
optimizer consumed, never the one the thread has read ahead to, and a resumed run sees exactly the batches the
uninterrupted one would have.
"""

from __future__ import annotations

import copy
import queue
import threading
from typing import Any

from jepa.data.batch import Batch
from jepa.train.data import EpochSampler
from jepa.train.state import TrainState
from jepa.train.step import next_micro_batches, step_micro_batches


class Prefetcher:
    """`next()` -> this rank's micro-batches of the next optimizer step, collated up to `depth` steps ahead
    (`data.prefetch`; 0 = collated by `next()` itself, no thread); the thread stops after `steps` steps. Use as a
    context manager (the thread ends with it). An error in the thread is raised by the `next()` that would have
    returned its batch."""

    def __init__(self, state: TrainState, steps: int, depth: int) -> None:
        self.state = state
        self.queue: queue.Queue[tuple[list[int] | None, Any]] = queue.Queue(maxsize=max(depth, 1))
        self.stopped = threading.Event()
        self.pin = state.world.device.type == "cuda"
        self.thread = None
        if depth > 0:
            sampler, first = copy.deepcopy(state.sampler), state.step
            self.thread = threading.Thread(target=self._work, args=(sampler, first, steps), daemon=True)
            self.thread.start()

    def _work(self, sampler: EpochSampler, first: int, steps: int) -> None:
        try:
            for step in range(first, first + steps):
                indices = sampler.next_batch()
                batches = step_micro_batches(self.state, indices, step)
                if self.pin:
                    batches = [b.pin_memory() for b in batches]
                if not self._put((indices, batches)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put((None, exc))

    def _put(self, item: tuple[list[int] | None, Any]) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self) -> list[Batch]:
        if self.thread is None:
            return next_micro_batches(self.state)
        indices, batches = self.queue.get()
        if indices is None:
            raise batches
        drawn = self.state.sampler.next_batch()
        if drawn != indices:  # the thread's sampler copy and the run's drifted apart: a bug, never a silent skip
            raise RuntimeError(f"prefetched batch of step {self.state.step + 1} is not the sampler's next batch")
        return batches

    def close(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

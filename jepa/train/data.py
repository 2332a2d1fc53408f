"""The checkpointable epoch sampler and this rank's micro-batches of a global batch.

Data order: every epoch is a permutation of the rows drawn from `numpy.random.default_rng([seed, epoch])`, cut
into global batches of `batch_size * grad_accum * world_size` rows (the incomplete tail is dropped, so every
optimizer step sees the same number of rows). The sampler's whole state is `(epoch, step_in_epoch)`. A global
batch is split into `world_size * grad_accum` micro-batches; rank r takes micro-batches r*grad_accum ..
(r+1)*grad_accum - 1, so N processes see exactly the rows one process with N times the accumulation would.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jepa.data.batch import Batch
from jepa.data.collator import collate
from jepa.data.datasets import Dataset
from jepa.data.layouts import draw_stp_spans, pack_rows


class EpochSampler:
    """Seeded per-epoch shuffling over `n` rows in global batches; position (epoch, step_in_epoch) is its state."""

    def __init__(self, n: int, global_batch: int, seed: int, shuffle: bool = True) -> None:
        if n < global_batch:
            raise ValueError(
                f"data: {n} rows is fewer than one global batch of {global_batch} rows "
                "(schedule.batch_size * schedule.grad_accum * processes)"
            )
        self.n, self.global_batch, self.seed, self.shuffle = n, global_batch, seed, shuffle
        self.steps_per_epoch = n // global_batch
        self.epoch, self.step_in_epoch = 0, 0
        self._order: np.ndarray | None = None

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            else:
                self._order = np.arange(self.n)
        return self._order

    def next_batch(self) -> list[int]:
        """Row indices of the next optimizer step's global batch; advances the position."""
        start = self.step_in_epoch * self.global_batch
        indices = self._epoch_order()[start : start + self.global_batch].tolist()
        self.step_in_epoch += 1
        if self.step_in_epoch == self.steps_per_epoch:
            self.epoch, self.step_in_epoch, self._order = self.epoch + 1, 0, None
        return indices

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "n": self.n,
            "global_batch": self.global_batch,
            "seed": self.seed,
            "shuffle": self.shuffle,
        }

    def check_state_dict(self, state: dict[str, Any]) -> None:
        """ValueError unless `state` was saved by a sampler over the same rows, batch and seed."""
        for key in ("n", "global_batch", "seed", "shuffle"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"checkpoint: data sampler {key} was {state[key]}, the config now gives "
                    f"{getattr(self, key)}; resume needs the same data, batch size and seed"
                )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.check_state_dict(state)
        self.epoch, self.step_in_epoch, self._order = state["epoch"], state["step_in_epoch"], None


def use_jepa(seed: int, step: int, micro: int, ratio: float) -> bool:
    """Whether micro-batch `micro` of optimizer step `step` keeps its JEPA segments (probability `ratio`).

    A pure function of (seed, step, micro), so every DDP rank decides alike and a resumed run decides as the
    uninterrupted one would, without any generator state to checkpoint.
    """
    if ratio >= 1.0:
        return True
    if ratio <= 0.0:
        return False
    return bool(np.random.default_rng([seed, step, micro, 0x1E9A]).random() < ratio)


def rank_micro_batches(
    *,
    data: Dataset,
    indices: list[int],
    batch_size: int,
    grad_accum: int,
    rank: int,
    step: int,
    seed: int,
    jepa_ratio: float,
    pad_to_multiple: int = 1,
    pack_length: int = 0,
) -> list[Batch]:
    """This rank's `grad_accum` collated micro-batches of one global batch (see the module docstring). With
    `pack_length` > 0 the examples of a micro-batch are packed into rows of at most that many tokens
    (`jepa.data.layouts.pack_rows`): the same examples, less padding, the same loss. STP rows get the spans of
    this step (`jepa.data.layouts.draw_stp_spans`)."""
    out = []
    for micro in range(grad_accum):
        chunk = rank * grad_accum + micro
        # An STP row gets this step's span, keyed by its dataset index (the same on every rank and on resume).
        chosen = indices[chunk * batch_size : (chunk + 1) * batch_size]
        rows = [draw_stp_spans(data.rows[i], seed, step, i) for i in chosen]
        if not use_jepa(seed, step, micro, jepa_ratio):
            rows = [r.lm_only() for r in rows]
        if pack_length:
            rows = pack_rows(rows, pack_length)
        out.append(collate(rows, data.pad_id, pad_to_multiple))
    return out

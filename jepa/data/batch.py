"""The typed contract between the collator and everything that consumes a micro-batch (the objective, the step,
the FLOP counter, evaluation): `Batch`, with its host-side `BatchCounts`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass, fields, replace
from typing import Any

import torch


@dataclass(frozen=True)
class BatchCounts:
    """Host numbers counted by the collator, so no step waits for the device to learn them. They add up over
    micro-batches (`+`, `BatchCounts.total`) and travel as one float64 vector when summed over processes."""

    labels: int = 0  # N: LM label tokens
    jepa_rows: int = 0  # P + S: the examples with a JEPA term (view pairs, then drawn STP paths)
    stp_paths: int = 0  # S: drawn STP paths
    tokens: int = 0  # real (non-padding) tokens
    positions: int = 0  # B * T
    attended_pairs: int = 0  # (query, key) pairs of real tokens the mask allows: the attention FLOPs

    def __add__(self, other: BatchCounts) -> BatchCounts:
        return BatchCounts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @classmethod
    def total(cls, counts: Iterable[BatchCounts]) -> BatchCounts:
        result = cls()
        for count in counts:
            result = result + count
        return result

    def as_tensor(self) -> torch.Tensor:
        """float64 [len(fields)] in field order (what an all-reduce sums); `from_values` reads it back."""
        return torch.tensor(astuple(self), dtype=torch.float64)

    @classmethod
    def from_values(cls, values: Sequence[float]) -> BatchCounts:
        if len(values) != len(fields(cls)):
            raise ValueError(f"BatchCounts needs {len(fields(cls))} values, got {len(values)}")
        return cls(*(int(round(v)) for v in values))


@dataclass
class Batch:
    """Padded rows (`jepa.data.collator.collate`): the attention mask as data, plus host-side indices and counts.

    No [T, T] mask is stored: `dense_mask` (SDPA) and `flex_block_mask` (FlexAttention) build it on the batch's
    device from `segment_ids`, `visible` and `lengths`. Tensors (B rows of T positions; S segments; N labels;
    P view pairs; Q signed STP terms):

        input_ids, position_ids  [B, T] long; predictor tokens have negative ids
        labels                   [B, T] long, pre-shifted (labels[b, t] is the token logits at t predict),
                                 IGNORE_INDEX where none
        segment_ids              [B, T] long, -1 on padding
        visible                  [B, S, S] bool: segment s sees segment s'
        lengths                  [B] long: real tokens per row
        label_index, label_target  [N] long: flat position b * T + t of every label, and its token
        jepa_row, pred_pos, target_pos  [P] long: one entry per JEPA view pair (a packed row holds several)
        stp_index, stp_sign, stp_slot   [Q] long, float32, long: the STP chords as sums of signed hidden states:
                                 chord slot s (0 .. S'-1 the spans', S' .. 2S'-1 the whole paths') += sign *
                                 h.flatten(0, 1)[index], for the S' = counts.stp_paths drawn paths (`StpPath`)
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    segment_ids: torch.Tensor
    visible: torch.Tensor
    lengths: torch.Tensor
    label_index: torch.Tensor
    label_target: torch.Tensor
    jepa_row: torch.Tensor
    pred_pos: torch.Tensor
    target_pos: torch.Tensor
    stp_index: torch.Tensor
    stp_sign: torch.Tensor
    stp_slot: torch.Tensor
    counts: BatchCounts
    has_predictor_tokens: bool

    def to(self, device: torch.device | str) -> Batch:
        """The batch with its tensors on `device` (non-blocking from pinned memory); the host numbers stay."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """The batch with its tensors in pinned host memory (for non-blocking copies to a GPU)."""
        return self._map_tensors(torch.Tensor.pin_memory)

    def _map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        changed: dict[str, Any] = {name: fn(v) for name, v in values.items() if isinstance(v, torch.Tensor)}
        return replace(self, **changed)

"""Pads packed rows into a `Batch` (jepa/data/batch.py): ids, positions, labels, the attention mask as data
(segment ids and visibility tables; `dense_mask` / `flex_block_mask` expand it on the device), and the host-side
counts and indices of labels and JEPA pairs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from jepa.data.batch import Batch, BatchCounts
from jepa.data.layouts import Row
from jepa.losses import IGNORE_INDEX


def attention_mask(row: Row, length: int) -> torch.Tensor:
    """bool [length, length]: query i may attend key j iff j <= i and segment(j) is visible to segment(i).

    Padding (beyond the row) attends only to itself, so no query row is fully masked (SDPA would give NaN).
    """
    # numpy: per-row torch ops on tiny tensors pay a thread-pool start each (ms under load, x B rows).
    n = len(row.input_ids)
    seg = np.asarray(row.segment_ids)
    table = np.zeros((len(row.visible), len(row.visible)), dtype=bool)
    for s, sees in enumerate(row.visible):
        table[s, list(sees)] = True
    mask = np.eye(length, dtype=bool)
    idx = np.arange(n)
    mask[:n, :n] = table[seg[:, None], seg[None, :]] & (idx[None, :] <= idx[:, None])
    return torch.from_numpy(mask)


def attended_pairs(row: Row) -> int:
    """How many (query, key) pairs of real tokens `attention_mask(row)` allows, in O(T * S) (S segments): the
    attention FLOPs of the row."""
    seg = np.asarray(row.segment_ids)
    table = np.zeros((len(row.visible), len(row.visible)), dtype=np.int64)
    for s, sees in enumerate(row.visible):
        table[s, list(sees)] = 1
    seen_so_far = np.cumsum(np.eye(len(row.visible), dtype=np.int64)[seg], axis=0)  # [T, S]: keys j <= i per segment
    return int((seen_so_far * table[seg]).sum())


def collate(rows: list[Row], pad_id: int, pad_to_multiple: int = 1) -> Batch:
    """Rows -> `Batch` (its docstring gives every tensor's shape and dtype): everything the forward needs counted
    and indexed here on the host, so the device never has to tell the host anything inside a micro-batch. The
    length T is the longest row's, rounded up to a multiple of `pad_to_multiple`."""
    T = max(len(r.input_ids) for r in rows)
    T = -(-T // pad_to_multiple) * pad_to_multiple
    B, S = len(rows), max(len(r.visible) for r in rows)
    input_ids = np.full((B, T), pad_id, dtype=np.int64)
    position_ids = np.zeros((B, T), dtype=np.int64)
    labels = np.full((B, T), IGNORE_INDEX, dtype=np.int64)
    segment_ids = np.full((B, T), -1, dtype=np.int64)  # -1: padding
    visible = np.zeros((B, S, S), dtype=bool)
    jepa, paths = [], []
    for b, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[b, :n] = row.input_ids
        position_ids[b, :n] = row.position_ids
        labels[b, :n] = row.labels
        segment_ids[b, :n] = row.segment_ids
        for seg, sees in enumerate(row.visible):
            visible[b, seg, list(sees)] = True
        jepa += [(b, p, q) for p, q in row.jepa_pairs]
        paths += [(b, path) for path in row.stp_paths]
    stp = []  # (flat index, sign, slot)
    for slot, (b, path) in enumerate(paths):
        if path.span is None:
            raise ValueError("an STP path without a drawn span (jepa.data.layouts.draw_stp_spans draws them)")
        start, stop = path.span
        span_terms = path.displacement(stop) + [(t, -sign) for t, sign in path.displacement(start)]
        stp += [(b * T + t, sign, slot) for t, sign in span_terms]
        stp += [(b * T + t, sign, len(paths) + slot) for t, sign in path.displacement(path.length)]
    stp_terms = np.asarray(stp, dtype=np.int64).reshape(-1, 3)
    label_index = np.flatnonzero(labels != IGNORE_INDEX)
    jepa_pairs = np.asarray(jepa, dtype=np.int64).reshape(-1, 3)
    counts = BatchCounts(
        labels=len(label_index),
        jepa_rows=len(jepa) + len(paths),
        stp_paths=len(paths),
        tokens=sum(len(r.input_ids) for r in rows),
        positions=B * T,
        attended_pairs=sum(attended_pairs(r) for r in rows),
    )
    return Batch(
        input_ids=torch.from_numpy(input_ids),
        position_ids=torch.from_numpy(position_ids),
        labels=torch.from_numpy(labels),
        segment_ids=torch.from_numpy(segment_ids),
        visible=torch.from_numpy(visible),
        lengths=torch.tensor([len(r.input_ids) for r in rows], dtype=torch.long),
        label_index=torch.from_numpy(label_index),
        label_target=torch.from_numpy(labels.reshape(-1)[label_index]),
        jepa_row=torch.from_numpy(jepa_pairs[:, 0].copy()),
        pred_pos=torch.from_numpy(jepa_pairs[:, 1].copy()),
        target_pos=torch.from_numpy(jepa_pairs[:, 2].copy()),
        stp_index=torch.from_numpy(stp_terms[:, 0].copy()),
        stp_sign=torch.from_numpy(stp_terms[:, 1].astype(np.float32)),
        stp_slot=torch.from_numpy(stp_terms[:, 2].copy()),
        counts=counts,
        has_predictor_tokens=any(t < 0 for r in rows for t in r.input_ids),
    )


def dense_mask(batch: Batch) -> torch.Tensor:
    """The batch's attention mask, bool [B, 1, T, T] on the batch's device (for SDPA), from its segment ids,
    visibility tables and lengths: equal to `attention_mask` of each row (tested). Device ops only, no sync."""
    segment_ids, visible, lengths = batch.segment_ids, batch.visible, batch.lengths
    B, T = segment_ids.shape
    idx = torch.arange(T, device=segment_ids.device)
    real = idx[None, :] < lengths[:, None]  # [B, T]
    seg = segment_ids.clamp(min=0)
    sees = visible[torch.arange(B, device=seg.device)[:, None, None], seg[:, :, None], seg[:, None, :]]
    mask = sees & (idx[None, None, :] <= idx[None, :, None]) & real[:, :, None] & real[:, None, :]
    return (mask | torch.eye(T, dtype=torch.bool, device=seg.device))[:, None]  # padding sees itself only


def flex_mask_mod(batch: Batch) -> Callable[..., torch.Tensor]:
    """The collated mask as a FlexAttention `mask_mod(b, h, q, kv)`: equal to `dense_mask` (tested), built from
    segment ids and visibility tables instead of a [B, T, T] tensor."""
    segment_ids, visible, lengths = batch.segment_ids, batch.visible, batch.lengths

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        real = (q < lengths[b]) & (kv < lengths[b])
        sees = visible[b, segment_ids[b, q].clamp(min=0), segment_ids[b, kv].clamp(min=0)]
        return (q == kv) | (real & (kv <= q) & sees)  # padding attends only to itself, as in attention_mask

    return mask_mod


def flex_block_mask(batch: Batch) -> BlockMask:
    """A BlockMask of the batch for `flex_attention` (on the batch's device); blocks nobody attends are skipped."""
    B, T = batch.input_ids.shape
    return create_block_mask(flex_mask_mod(batch), B=B, H=None, Q_LEN=T, KV_LEN=T, device=batch.input_ids.device)

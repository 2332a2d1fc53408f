"""Pads packed rows into a batch: ids, positions, the boolean 4-D attention mask, labels, and the host-side
counts and indices of labels and JEPA pairs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

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


def collate(rows: list[Row], pad_id: int, pad_to_multiple: int = 1) -> dict:
    """Rows -> batch, everything the forward needs counted and indexed here on the host, so the device never
    has to tell the host anything inside a micro-batch. Tensors:

        input_ids, position_ids, labels  [B, T] long (labels pre-shifted, IGNORE_INDEX where none)
        attn_mask                        [B, 1, T, T] bool
        segment_ids [B, T] long (-1 = padding), visible [B, S, S] bool, lengths [B] long: the same mask as data,
                                         for `flex_block_mask`
        label_index, label_target        [N] long: flat position b * T + t of every label and its token
        jepa_row, pred_pos, target_pos   [P] long: one entry per JEPA pair (a packed row holds several)

    and host numbers: num_labels (N), num_jepa (P), num_tokens (real tokens), num_positions (B * T),
    num_attended_pairs, has_predictor_tokens.
    """
    T = max(len(r.input_ids) for r in rows)
    T = -(-T // pad_to_multiple) * pad_to_multiple
    B = len(rows)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    position_ids = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    attn_mask = torch.empty((B, 1, T, T), dtype=torch.bool)
    label_index, label_target, jepa, pairs = [], [], [], 0
    segment_ids = torch.full((B, T), -1, dtype=torch.long)  # -1: padding
    visible = torch.zeros((B, max(len(r.visible) for r in rows), max(len(r.visible) for r in rows)), dtype=torch.bool)
    for b, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[b, :n] = torch.as_tensor(row.input_ids)
        position_ids[b, :n] = torch.as_tensor(row.position_ids)
        labels[b, :n] = torch.as_tensor(row.labels)
        attn_mask[b, 0] = mask = attention_mask(row, T)
        segment_ids[b, :n] = torch.as_tensor(row.segment_ids)
        for seg, sees in enumerate(row.visible):
            visible[b, seg, list(sees)] = True
        pairs += int(mask[:n, :n].sum())
        for t, y in enumerate(row.labels):
            if y != IGNORE_INDEX:
                label_index.append(b * T + t)
                label_target.append(y)
        jepa += [(b, p, q) for p, q in row.jepa_pairs]
    jepa_row, pred_pos, target_pos = (torch.tensor(c, dtype=torch.long) for c in zip(*jepa)) if jepa else (
        torch.zeros(0, dtype=torch.long) for _ in range(3))  # fmt: skip
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attn_mask": attn_mask,
        "segment_ids": segment_ids,
        "visible": visible,
        "lengths": torch.tensor([len(r.input_ids) for r in rows], dtype=torch.long),
        "labels": labels,
        "label_index": torch.tensor(label_index, dtype=torch.long),
        "label_target": torch.tensor(label_target, dtype=torch.long),
        "jepa_row": jepa_row,
        "pred_pos": pred_pos,
        "target_pos": target_pos,
        "num_labels": len(label_index),
        "num_jepa": len(jepa),
        "num_tokens": sum(len(r.input_ids) for r in rows),
        "num_positions": B * T,
        "num_attended_pairs": pairs,  # (query, key) pairs the mask allows among real tokens: attention FLOPs
        "has_predictor_tokens": any(t < 0 for r in rows for t in r.input_ids),
    }


def to_device(batch: dict, device: torch.device | str) -> dict:
    """The batch with its tensors on `device` (non-blocking from pinned memory); host numbers stay as they are."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def flex_mask_mod(batch: dict) -> Callable:
    """The collated mask as a FlexAttention `mask_mod(b, h, q, kv)`: equal to `attn_mask` (tested), built from
    segment ids and visibility tables instead of a [B, T, T] tensor."""
    segment_ids, visible, lengths = batch["segment_ids"], batch["visible"], batch["lengths"]

    def mask_mod(b, h, q, kv):
        real = (q < lengths[b]) & (kv < lengths[b])
        sees = visible[b, segment_ids[b, q].clamp(min=0), segment_ids[b, kv].clamp(min=0)]
        return (q == kv) | (real & (kv <= q) & sees)  # padding attends only to itself, as in attention_mask

    return mask_mod


def flex_block_mask(batch: dict) -> BlockMask:
    """A BlockMask of the batch for `flex_attention` (on the batch's device); blocks nobody attends are skipped."""
    B, T = batch["input_ids"].shape
    return create_block_mask(flex_mask_mod(batch), B, None, T, T, device=batch["input_ids"].device)

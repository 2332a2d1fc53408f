"""Pads packed rows into a batch: ids, positions, the boolean 4-D attention mask, labels, view indices."""

from __future__ import annotations

import numpy as np
import torch

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


def collate(rows: list[Row], pad_id: int, pad_to_multiple: int = 1) -> dict[str, torch.Tensor]:
    """Rows -> batch. Shapes: input_ids/position_ids/labels [B, T] long, attn_mask [B, 1, T, T] bool,
    pred_index/target_index [B] long (0 where the row has no JEPA term), jepa_rows [B] bool."""
    T = max(len(r.input_ids) for r in rows)
    T = -(-T // pad_to_multiple) * pad_to_multiple
    B = len(rows)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    position_ids = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    attn_mask = torch.empty((B, 1, T, T), dtype=torch.bool)
    for b, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[b, :n] = torch.as_tensor(row.input_ids)
        position_ids[b, :n] = torch.as_tensor(row.position_ids)
        labels[b, :n] = torch.as_tensor(row.labels)
        attn_mask[b, 0] = attention_mask(row, T)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attn_mask": attn_mask,
        "labels": labels,
        "pred_index": torch.tensor([r.pred_index or 0 for r in rows], dtype=torch.long),
        "target_index": torch.tensor([r.target_index or 0 for r in rows], dtype=torch.long),
        "jepa_rows": torch.tensor([r.has_jepa for r in rows], dtype=torch.bool),
    }

"""Held-out LM loss: the training objective's LM term on records the model did not train on.

Where a generation metric sits at its floor (a 135M model on GSM8K scores 0-2 %), the teacher-forced cross-entropy
of the reference answers still separates two models. It is computed by the objective training uses
(`jepa.objective.Objective`, its LM sum over label tokens) on the rows' LM sequences alone (`Row.lm_only`: no JEPA
segments, no predictor tokens), so a regular and a JEPA run are scored on the same tokens (the callers lay the
records out with `lm_labels: assistant`, whatever a run trained on: answer content and its end-of-turn token).

The end-of-turn token (a label whose target is one of the tokenizer's stop ids) is reported apart from the answer
tokens: its CE and the probability the model gives it (the stop decision), beside the CE of the answer content.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from jepa.data.collator import collate
from jepa.data.layouts import Row
from jepa.eval.progress import Progress
from jepa.losses import IGNORE_INDEX
from jepa.models.base import CausalLM
from jepa.objective import Objective


@torch.no_grad()
def heldout_lm_loss(
    model: CausalLM,
    rows: Sequence[Row],
    pad_id: int,
    batch_size: int = 16,
    progress: bool | None = None,
    stop_ids: Sequence[int] = (),
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """(per row, summary) of the LM cross-entropy (nats per label token, float64 sums of fp32 terms).

    Per row: ``{"row": i, "lm_sum": CE summed over its label tokens, "label_tokens": n, "eot_sum": CE summed
    over its labels whose target is in `stop_ids`, "eot_tokens": their number, "eot_prob": the summed probability
    of those targets}``; rows with no label token (an answer truncated away) count 0 tokens. Summary: ``lm_loss``
    = total CE / total label tokens (the micro-average training reports), ``perplexity`` = exp of it,
    ``label_tokens``, ``rows``; with `stop_ids`: ``eot_loss`` (mean CE of the end-of-turn labels), ``eot_prob``
    (the mean probability given to them), ``eot_tokens``, ``answer_loss`` (mean CE of the other labels),
    ``answer_tokens``. ``progress``: rows and tokens/s on stderr (None: as `showing_progress` says).
    """
    lm_rows = [row.lm_only() for row in rows]
    if not any(label != IGNORE_INDEX for row in lm_rows for label in row.labels):
        raise ValueError("no label token in the held-out rows (every answer truncated away?)")
    device = next(model.parameters()).device
    objective = Objective(model)
    was_training = model.training
    model.eval()
    per_row = []
    bar = Progress(len(lm_rows), "held-out loss", "row", enabled=progress)
    try:
        for start in range(0, len(lm_rows), batch_size):
            chunk = lm_rows[start : start + batch_size]
            host = collate(chunk, pad_id)
            h = objective.hidden(host.to(device))
            # The LM term one row at a time, so every row's own sum is known: label positions are flat
            # (b * T + t), grouped here by b on the host.
            owner = host.label_index // host.input_ids.shape[1]
            is_stop = torch.isin(host.label_target, torch.tensor(list(stop_ids), dtype=torch.long))
            # The end-of-turn labels' log-probabilities from full logits (a handful of positions per batch).
            stop_index = host.label_index[is_stop]
            logits = model.logits(h.flatten(0, 1)[stop_index.to(device)]).float()
            stop_logp = logits.log_softmax(-1).gather(1, host.label_target[is_stop].to(device)[:, None])[:, 0]
            stop_logp, stop_owner = stop_logp.double().cpu(), owner[is_stop]
            for b in range(len(chunk)):
                mine = owner == b
                index, target = host.label_index[mine].to(device), host.label_target[mine].to(device)
                lm_sum = objective.lm_sum_at(h, index, target)
                logp = stop_logp[stop_owner == b]
                per_row.append({"row": start + b, "lm_sum": float(lm_sum), "label_tokens": int(mine.sum()),
                                "eot_sum": float(-logp.sum()), "eot_tokens": len(logp),
                                "eot_prob": float(logp.exp().sum())})  # fmt: skip
            bar.add_tokens(sum(len(r.input_ids) for r in chunk))
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    total = sum(r["lm_sum"] for r in per_row)
    tokens = sum(r["label_tokens"] for r in per_row)
    loss = total / tokens
    summary = {"lm_loss": loss, "perplexity": math.exp(loss), "label_tokens": tokens, "rows": len(per_row)}
    if stop_ids:
        eot_tokens = sum(r["eot_tokens"] for r in per_row)
        eot_sum = sum(r["eot_sum"] for r in per_row)
        summary.update({
            "eot_loss": eot_sum / eot_tokens if eot_tokens else math.nan,
            "eot_prob": sum(r["eot_prob"] for r in per_row) / eot_tokens if eot_tokens else math.nan,
            "eot_tokens": eot_tokens,
            "answer_loss": (total - eot_sum) / (tokens - eot_tokens) if tokens > eot_tokens else math.nan,
            "answer_tokens": tokens - eot_tokens,
        })  # fmt: skip
    return per_row, summary

"""Reversal-curse metrics (docs/method.md §5), teacher forced, over the full vocabulary.

For a probe ``{"input_text": [[e1_f, e1_l], [r], [mask]], "target_text": [[e2_f, e2_l]]}`` the model reads
``[e1_f, e1_l, r, <mask>, e2_f]`` at positions 0..4 (the LM sequence of the reversal layout). Then

- rank1 = rank of e2_f among the logits at ``<mask>``; rank2 = rank of e2_l among the logits at e2_f (true e2_f
  given); rank = 1 + number of vocabulary entries with a strictly larger logit (ties favour the target);
- ``mrr_token1`` / ``mrr_token2`` = mean 1/rank; ``mrr`` = their mean; ``joint_accuracy`` = fraction with both
  ranks 1 (greedy exact match of the two-token name, ties aside); ``joint_nll`` = mean over probes of
  −log p(e2_f) − log p(e2_l | e2_f) in nats (log-softmax over the full vocabulary, float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from jepa.data.reversal import PROBE_SPLITS
from jepa.eval.progress import Progress
from jepa.models.base import CausalLM

METRICS = ("mrr_token1", "mrr_token2", "mrr", "joint_accuracy", "joint_nll")


def probe_tokens(items: list[dict[str, Any]]) -> torch.Tensor:
    """Seed-format items -> long [N, 6]: e1_f, e1_l, r, mask, e2_f, e2_l."""
    rows = []
    for item in items:
        (e1, (r,), (mask,)), (e2,) = item["input_text"], item["target_text"]
        rows.append([e1[0], e1[1], r, mask, e2[0], e2[1]])
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 6)


def ranks_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [N, V], targets [N] long -> long [N]: 1 + number of logits strictly larger than the target's."""
    target_logit = logits.gather(-1, targets[:, None])
    return 1 + (logits > target_logit).sum(-1)


def model_logits_fn(model: CausalLM) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function [B, T] ids -> [B, T, V] float32 logits through ``model`` then ``model.lm_head``."""
    device = next(model.parameters()).device

    def logits(ids: torch.Tensor) -> torch.Tensor:
        return model.logits(model(ids.to(device))).float().cpu()

    return logits


@torch.no_grad()
def score_probes(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    items: list[dict[str, Any]],
    batch_size: int = 256,
    progress: Progress | None = None,
) -> dict[str, torch.Tensor]:
    """Per-probe ``rank1``, ``rank2`` (long [N]) and ``nll`` (float [N], nats) with a logits function."""
    tokens = probe_tokens(items)
    rank1, rank2, nll = [], [], []
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start : start + batch_size]
        if progress is not None:
            progress.add_tokens(batch[:, :5].numel())
            progress.update(len(batch))
        logits = logits_fn(batch[:, :5]).float()
        at_mask, at_first = logits[:, 3], logits[:, 4]
        first, last = batch[:, 4], batch[:, 5]
        rank1.append(ranks_of(at_mask, first))
        rank2.append(ranks_of(at_first, last))
        nll.append(
            -(
                at_mask.log_softmax(-1).gather(-1, first[:, None])[:, 0]
                + at_first.log_softmax(-1).gather(-1, last[:, None])[:, 0]
            )
        )
    empty = torch.zeros(0, dtype=torch.long)
    return {
        "rank1": torch.cat(rank1) if rank1 else empty,
        "rank2": torch.cat(rank2) if rank2 else empty,
        "nll": torch.cat(nll) if nll else empty.float(),
    }


def summarise(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per-probe ranks/NLL -> the five metrics (NaN for an empty split) and ``n``."""
    n = len(scores["rank1"])
    if n == 0:
        return {"n": 0, **{m: math.nan for m in METRICS}}
    mrr1 = (1.0 / scores["rank1"].double()).mean().item()
    mrr2 = (1.0 / scores["rank2"].double()).mean().item()
    return {
        "n": n,
        "mrr_token1": mrr1,
        "mrr_token2": mrr2,
        "mrr": (mrr1 + mrr2) / 2,
        "joint_accuracy": ((scores["rank1"] == 1) & (scores["rank2"] == 1)).double().mean().item(),
        "joint_nll": scores["nll"].double().mean().item(),
    }


# What each probe split measures (the seed format's split names, kept): written into every summary.
SPLIT_DIRECTIONS = {
    "train": "both directions trained",
    "atomic": "forward: only this direction trained",
    "test": "reverse of the atomic facts: never trained (the reversal curse)",
}


@torch.no_grad()
def evaluate_reversal(
    model: CausalLM | Callable[[torch.Tensor], torch.Tensor],
    valid: dict[str, list[dict[str, Any]]],
    batch_size: int = 256,
    progress: bool | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Score every probe split present in ``valid`` (``train``, ``atomic``, ``test``).

    ``model`` is one of our models (logits via ``lm_head``) or a function [B, 5] ids -> [B, 5, V] logits.
    Returns (examples, summary): examples carry split, index, e1, r, e2, rank1, rank2, nll; summary maps each
    split to its ``direction`` (SPLIT_DIRECTIONS) and :func:`summarise`'s metrics. ``progress``: probes scored
    and tokens/s on stderr (None: as `jepa.eval.progress.showing_progress` says).
    """
    module = model if isinstance(model, nn.Module) else None  # one of ours (a CausalLM), or a logits function
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
        logits_fn = model_logits_fn(cast(CausalLM, module))
    else:
        logits_fn = model
    examples, summary = [], {}
    bar = Progress(sum(len(valid.get(s, [])) for s in PROBE_SPLITS), "reversal probes", "probe", enabled=progress)
    try:
        for split in PROBE_SPLITS:
            if split not in valid:
                continue
            items = valid[split]
            scores = score_probes(logits_fn, items, batch_size, progress=bar)
            summary[split] = {"direction": SPLIT_DIRECTIONS[split], **summarise(scores)}
            for k, item in enumerate(items):
                (e1, (r,), _), (e2,) = item["input_text"], item["target_text"]
                examples.append(
                    {
                        "split": split,
                        "index": k,
                        "e1": list(e1),
                        "r": r,
                        "e2": list(e2),
                        "rank1": int(scores["rank1"][k]),
                        "rank2": int(scores["rank2"][k]),
                        "nll": float(scores["nll"][k]),
                    }
                )
    finally:
        bar.close()
        if module is not None and was_training:
            module.train()
    return examples, summary

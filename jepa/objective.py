"""The JEPA objective on a packed batch: embed (with predictor tokens), one forward, LM + JEPA loss sums.

L = gamma * L_LM + lambda * L_JEPA, where the training loop divides the sums returned here by the number of
label tokens / JEPA rows of the whole optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from jepa.data.collator import collate
from jepa.data.layouts import Row
from jepa.losses import jepa_loss_fn, lm_loss_sum


class PredictorEmbeddings(nn.Module):
    """K trainable predictor-token embeddings, addressed by the ids -1 .. -K in `input_ids`.

    Kept apart from the vocabulary so they train under LoRA (the base embedding stays frozen), are never an LM
    target, and are simply absent at inference. Initialised to the mean input embedding plus small noise so
    the K tokens start distinct.
    """

    def __init__(self, k: int, embedding: nn.Embedding, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            mean = embedding.weight.float().mean(0).cpu()
            std = embedding.weight.float().std().cpu()
            init = mean + 0.02 * std * torch.randn(k, mean.numel(), generator=gen)
        self.weight = nn.Parameter(init.to(embedding.weight.device))

    def forward(self, input_ids: torch.Tensor, embedding: nn.Embedding) -> torch.Tensor:
        """input_ids [B, T] (predictor k as id -(k+1)) -> embeddings [B, T, D] in the embedding's dtype."""
        is_pred = input_ids < 0
        x = embedding(input_ids.clamp(min=0))
        if bool(is_pred.any()):
            x = x.clone()
            x[is_pred] = self.weight[(-input_ids[is_pred]) - 1].to(x.dtype)
        return x


def forward_hidden(model: nn.Module, predictors: PredictorEmbeddings | None,
                   batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One pass over a collated batch -> final-norm hidden states [B, T, D]."""
    ids = batch["input_ids"]
    if predictors is not None:
        embeds = predictors(ids, model.embed_tokens)
    elif bool((ids < 0).any()):
        raise ValueError("batch has predictor tokens but no PredictorEmbeddings were given")
    else:
        embeds = model.embed_tokens(ids)
    return model(input_embeds=embeds, attn_mask=batch["attn_mask"], position_ids=batch["position_ids"])


@dataclass
class LossTerms:
    lm_sum: torch.Tensor  # fp32 scalar: sum of CE over label tokens
    lm_tokens: int
    jepa_sum: torch.Tensor  # fp32 scalar: sum of the per-row JEPA loss over JEPA rows
    jepa_rows: int
    pred: torch.Tensor  # [N, D] prediction embeddings of the JEPA rows
    target: torch.Tensor  # [N, D] target embeddings


def view_embeddings(h: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = batch["jepa_rows"].nonzero().flatten()
    return h[rows, batch["pred_index"][rows]], h[rows, batch["target_index"][rows]]


def compute_terms(model: nn.Module, predictors: PredictorEmbeddings | None, batch: dict[str, torch.Tensor],
                  jepa_loss: str = "cosine", **loss_kwargs) -> LossTerms:
    """LM and JEPA loss sums of one micro-batch, from a single forward pass."""
    h = forward_hidden(model, predictors, batch)
    lm_sum, lm_tokens = lm_loss_sum(h, batch["labels"], model.lm_head)
    pred, target = view_embeddings(h, batch)
    if len(pred):
        jepa_sum = jepa_loss_fn(jepa_loss)(pred, target, **loss_kwargs).sum()
    else:
        jepa_sum = h.sum() * 0.0
    return LossTerms(lm_sum, lm_tokens, jepa_sum, len(pred), pred, target)


def two_pass_terms(model: nn.Module, predictors: PredictorEmbeddings | None, rows: list[Row], pad_id: int,
                   jepa_loss: str = "cosine", **loss_kwargs) -> LossTerms:
    """Reference path: every segment group runs as its own sequence (the published designs' extra passes).

    For each row: the LM sequence alone (plain causal), the prediction view (the segments the predictor sees,
    in order) and the target view (the isolated segment) each as separate sequences. Used by the tests to
    check the packed single pass, and by users who want the unpacked computation.
    """
    lm_sum, lm_tokens, preds, targets = 0.0, 0, [], []
    for row in rows:
        lm_row = row.lm_only()
        h = forward_hidden(model, predictors, collate([lm_row], pad_id))
        s, n = lm_loss_sum(h, collate([lm_row], pad_id)["labels"], model.lm_head)
        lm_sum, lm_tokens = lm_sum + s, lm_tokens + n
        if not row.has_jepa:
            continue
        for index, out in ((row.pred_index, preds), (row.target_index, targets)):
            seg = row.segment_ids[index]
            keep = [i for i in range(index + 1) if row.segment_ids[i] in row.visible[seg]]
            sub = Row([row.input_ids[i] for i in keep], [row.position_ids[i] for i in keep], [0] * len(keep),
                      [-100] * len(keep), ["V"], [(0,)], len(keep))
            out.append(forward_hidden(model, predictors, collate([sub], pad_id))[0, -1])
    empty = torch.zeros(0, model.embed_tokens.embedding_dim)
    pred = torch.stack(preds) if preds else empty
    target = torch.stack(targets) if targets else empty
    jepa_sum = jepa_loss_fn(jepa_loss)(pred, target, **loss_kwargs).sum() if preds else torch.zeros(())
    return LossTerms(lm_sum, lm_tokens, jepa_sum, len(preds), pred, target)

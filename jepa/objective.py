"""The JEPA objective on a packed batch: the one forward that training, evaluation diagnostics, the benchmarks
and the contract tests all call (docs/method.md §1-2).

    L = gamma * L_LM + lambda * L_JEPA

`Objective(batch)` returns the *sums* behind both terms (CE over label tokens, per-row JEPA loss over JEPA
rows); the training step divides them by the label tokens / JEPA rows of the whole optimizer step. In stp mode
the JEPA rows are the examples with a drawn span, and the per-example loss compares C = D - P with P, the chord
of the span and D the chord of the whole path (`stp_chords`), read off the same LM pass.
`Objective.two_pass` is the reference path the packed pass is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.attention.flex_attention import BlockMask

from jepa.data.batch import Batch
from jepa.data.collator import collate, dense_mask, flex_block_mask
from jepa.data.layouts import Row
from jepa.losses import IGNORE_INDEX, jepa_loss_fn, lm_loss_at, lm_loss_sum
from jepa.models.base import CausalLM
from jepa.models.predictors import PredictorEmbeddings


@dataclass
class LossTerms:
    """What one forward over a micro-batch gives."""

    lm_sum: torch.Tensor  # fp32 scalar: sum of CE over label tokens
    lm_tokens: int
    jepa_sum: torch.Tensor  # fp32 scalar: sum of the per-row JEPA loss over JEPA rows
    jepa_rows: int
    # [N, D] what the JEPA loss compared, per JEPA row: the view pairs' prediction / target embeddings (final-norm
    # hidden states), then (stp mode, fp32) each drawn path's rest C = D - P / span chord P
    pred: torch.Tensor
    target: torch.Tensor


def forward_hidden(
    model: CausalLM, predictors: PredictorEmbeddings | None, batch: Batch, attn_mask: torch.Tensor | BlockMask
) -> torch.Tensor:
    """One pass over a batch (input_ids [B, T] with predictor ids < 0, position_ids) under `attn_mask` (what
    `Objective.attention_mask` builds) -> final-norm hidden states [B, T, D]."""
    ids = batch.input_ids
    if predictors is not None:
        embeds = predictors(ids, model.embed_tokens)
    elif batch.has_predictor_tokens:
        raise ValueError("batch has predictor tokens but no PredictorEmbeddings were given")
    else:
        embeds = model.embed_tokens(ids)
    return model(input_embeds=embeds, attn_mask=attn_mask, position_ids=batch.position_ids)


def stp_chords(h: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """h [B, T, D] -> (rest, span) [S, D], fp32: per drawn STP path, C = D - P and P, where P is the chord of
    its span and D the chord of its whole path (sums of signed hidden states the collator listed)."""
    S = batch.counts.stp_paths
    rows = h.flatten(0, 1).index_select(0, batch.stp_index).float() * batch.stp_sign[:, None]
    chords = torch.zeros(2 * S, h.shape[-1], dtype=torch.float32, device=h.device).index_add_(0, batch.stp_slot, rows)
    span, path = chords[:S], chords[S:]
    return path - span, span


def hidden_state_index(layer: int, n_layers: int) -> int:
    """`jepa.stp_layer` as Hugging Face's `hidden_states` index in [0, n_layers]: 0 = the embeddings (the first
    block's input), k = the output of block k (1-based), n_layers (or -1) = after the final norm."""
    index = layer if layer >= 0 else n_layers + 1 + layer
    if not 0 <= index <= n_layers:
        raise ValueError(f"jepa.stp_layer: {layer} is not a hidden-state index of a {n_layers}-layer model "
                         f"(0 .. {n_layers}, or -1 .. -{n_layers + 1})")  # fmt: skip
    return index


def view_embeddings(h: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """h [B, T, D] -> (pred, target) [P, D]: the hidden states of the batch's P JEPA pairs, in row order."""
    return h[batch.jepa_row, batch.pred_pos], h[batch.jepa_row, batch.target_pos]


ATTENTION = ("sdpa", "flex")  # the dense-mask SDPA path (CPU, everything) and FlexAttention (CUDA)


class Objective(nn.Module):
    """Model + predictor tokens + the JEPA loss behind one forward, so DDP sees every trainable parameter.

    forward(batch) -> LossTerms, from a single pass over the packed rows. `gather_negatives` (InfoNCE under
    torch.distributed): the other ranks' targets, detached, join each rank's negatives.
    """

    def __init__(
        self,
        model: CausalLM,
        predictors: PredictorEmbeddings | None = None,
        jepa_loss: str = "cosine",
        temperature: float = 0.07,
        gather_negatives: bool = False,
        attention: str = "sdpa",
        stp_layer: int = -1,
    ) -> None:
        super().__init__()
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION)}, got {attention!r}")
        self.attention = attention
        self.model, self.predictors = model, predictors
        self.jepa_loss = jepa_loss_fn(jepa_loss)
        self.loss_kwargs: dict[str, Any] = {"temperature": temperature} if jepa_loss == "infonce" else {}
        self.gather_negatives = gather_negatives
        self.stp_hidden_index = hidden_state_index(stp_layer, len(model.blocks))

    def attention_mask(self, batch: Batch) -> torch.Tensor | BlockMask:
        """The attention mask this objective computes with, built on the batch's device from its segment ids
        and visibility tables: a dense bool [B, 1, T, T] (SDPA) or a FlexAttention BlockMask."""
        return (flex_block_mask if self.attention == "flex" else dense_mask)(batch)

    def hidden(self, batch: Batch) -> torch.Tensor:
        """Final-norm hidden states [B, T, D] of the batch under this objective's attention mask."""
        return forward_hidden(self.model, self.predictors, batch, self.attention_mask(batch))

    def lm_sum_at(self, h: torch.Tensor, label_index: torch.Tensor, label_target: torch.Tensor) -> torch.Tensor:
        """The LM term: CE summed (fp32 scalar) over the label positions `label_index` (flat b * T + t) of h."""
        return lm_loss_at(h, label_index, label_target, self.model.lm_head, softcap=self.model.logit_softcap)

    def views(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(pred, target) [N, D] of the batch's JEPA rows: what the JEPA loss aligns."""
        return view_embeddings(self.hidden(batch), batch)

    def hidden_and_stp_layer(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(final-norm hidden states, the hidden states STP reads) [B, T, D]: the same tensor unless
        `stp_layer` names an earlier layer, captured from that block during the one pass."""
        blocks = self.model.blocks
        if batch.counts.stp_paths == 0 or self.stp_hidden_index == len(blocks):
            h = self.hidden(batch)
            return h, h
        captured = []
        if self.stp_hidden_index == 0:
            handle = blocks[0].register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        else:
            handle = blocks[self.stp_hidden_index - 1].register_forward_hook(
                lambda module, args, out: captured.append(out)
            )
        try:
            h = self.hidden(batch)
        finally:
            handle.remove()
        return h, captured[0]  # activation checkpointing calls a block again in backward: the first is the pass

    def forward(self, batch: Batch) -> LossTerms:
        h, h_stp = self.hidden_and_stp_layer(batch)
        lm_sum = self.lm_sum_at(h, batch.label_index, batch.label_target)
        pred, target = view_embeddings(h, batch)
        if batch.counts.stp_paths:  # STP: the rest C = D - P is the "prediction", the span's chord P the target
            rest, span = stp_chords(h_stp, batch)
            pred, target = torch.cat([pred.float(), rest]), torch.cat([target.float(), span])
        jepa_sum = self.jepa_sum(pred, target) if batch.counts.jepa_rows else h.sum() * 0.0
        if self.predictors is not None:
            # Keeps the predictor tokens in every graph (an LM-only micro-batch would leave them unused and
            # DDP would wait forever for their gradient).
            jepa_sum = jepa_sum + self.predictors.weight.sum() * 0.0
        return LossTerms(lm_sum=lm_sum, lm_tokens=batch.counts.labels, jepa_sum=jepa_sum.float(),
                         jepa_rows=batch.counts.jepa_rows, pred=pred, target=target)  # fmt: skip

    def jepa_sum(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = dict(self.loss_kwargs)
        if self.gather_negatives and dist.is_initialized():
            kwargs["negatives"] = gather_other_targets(target)
        return self.jepa_loss(pred, target, **kwargs).sum()

    def two_pass(self, rows: list[Row], pad_id: int) -> LossTerms:
        """Reference path: every segment group runs as its own sequence (the published designs' extra passes).

        For each row (one example): the LM sequence alone (plain causal) and, per JEPA pair, the prediction view
        (the segments the predictor sees, in order) and the target view (the isolated segment), each as separate
        sequences. The tests check the
        packed single pass against it; users may run it to see the unpacked computation.
        """
        device = self.model.embed_tokens.weight.device
        lm_sum, lm_tokens = torch.zeros((), device=device), 0
        preds: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        for row in rows:
            lm_batch = collate([row.lm_only()], pad_id).to(device)
            s, n = lm_loss_sum(
                self.hidden(lm_batch), lm_batch.labels, self.model.lm_head, softcap=self.model.logit_softcap
            )
            lm_sum, lm_tokens = lm_sum + s, lm_tokens + n
            views = [(index, out) for pair in row.jepa_pairs for index, out in zip(pair, (preds, targets))]
            for index, out in views:
                seg = row.segment_ids[index]
                keep = [i for i in range(index + 1) if row.segment_ids[i] in row.visible[seg]]
                view = Row(
                    input_ids=[row.input_ids[i] for i in keep],
                    position_ids=[row.position_ids[i] for i in keep],
                    segment_ids=[0] * len(keep),
                    labels=[IGNORE_INDEX] * len(keep),
                    segment_names=["V"],
                    visible=[(0,)],
                    main_length=len(keep),
                )
                out.append(self.hidden(collate([view], pad_id).to(device))[0, -1])
        empty = torch.zeros(0, self.model.embed_tokens.embedding_dim, device=device)
        pred = torch.stack(preds) if preds else empty
        target = torch.stack(targets) if targets else empty
        jepa_sum = self.jepa_sum(pred, target) if preds else torch.zeros((), device=device)
        return LossTerms(lm_sum=lm_sum, lm_tokens=lm_tokens, jepa_sum=jepa_sum, jepa_rows=len(preds), pred=pred,
                         target=target)  # fmt: skip


def gather_other_targets(target: torch.Tensor) -> torch.Tensor:
    """The other ranks' target embeddings [M, D], detached: gradients flow only through this rank's own
    targets (its positives and in-batch negatives). Ranks may hold different numbers of JEPA rows."""
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=target.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(target)], device=target.device))
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, target.shape[-1], dtype=target.dtype, device=target.device)
    padded[: len(target)] = target.detach()
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(n)] for r, (g, n) in enumerate(zip(gathered, sizes)) if r != rank])

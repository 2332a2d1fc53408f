"""Losses: the LM cross-entropy (fused with the head, only where labels exist) and the JEPA losses by name.

Every loss returns a *sum* (LM: over label tokens; JEPA: over rows) so the training loop can normalise over
a whole optimizer step: mean over all label tokens of all micro-batches, mean over all JEPA rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
FP16_GRAD_SCALE = 2.0**12  # see LinearCrossEntropySum.forward


class LinearCrossEntropySum(torch.autograd.Function):
    """sum_i CE(cap(h_i @ W.T), y_i) without ever holding the [N, V] logits; cap is the identity, or with a
    `softcap` c (Gemma-2's final logits) z -> c * tanh(z / c), whose derivative 1 - tanh^2 joins the gradient.

    Chunks of rows are pushed through the head one at a time and the gradients w.r.t. `h` and `W` are formed
    during the forward pass, so peak memory is one chunk of logits (at Llama-3's 128K vocabulary the full fp32
    logits cost more than the model) and no matmul is recomputed.
    """

    @staticmethod
    def forward(
        ctx: Any, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int, softcap: float | None
    ) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # Under autocast the matmuls run in its dtype. The head's weight is cast to it once per call here: autocast
        # itself would cast it in every chunk's two matmuls, since its cast cache skips weights that do not require
        # grad (a frozen tied embedding under LoRA: ~1 GB of casts a micro-batch at Llama-3's vocabulary).
        device_type = h.device.type
        autocast = torch.is_autocast_enabled(device_type)
        compute = torch.get_autocast_dtype(device_type) if autocast else h.dtype
        # The gradients are formed here, before a GradScaler's factor exists: in fp16 the small ones would flush to
        # zero, so they are formed scaled by a fixed 2**12 (|softmax - onehot| <= 1 stays far from fp16's max) and
        # unscaled in backward, in fp32.
        scale = FP16_GRAD_SCALE if compute == torch.float16 else 1.0
        w, h_compute = weight.to(compute), h.to(compute)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if need_w else None
        with torch.autocast(device_type, enabled=False):  # everything below is already in `compute`
            for start in range(0, h.shape[0], chunk):
                h_c, y_c = h_compute[start : start + chunk], targets[start : start + chunk]
                logits = (h_c @ w.T).float()
                capped = None
                if softcap is not None:
                    capped = torch.tanh(logits / softcap)
                    logits = capped * softcap
                # The fused (log-)softmax kernels, not exp/logsumexp: those hit a slow path when many
                # probabilities underflow to denormals (large logit gaps), softmax does not.
                total -= torch.log_softmax(logits, dim=-1).gather(1, y_c[:, None]).sum()
                if need_h or need_w:
                    # d CE / d logits = softmax - onehot
                    probs = torch.softmax(logits, dim=-1)
                    del logits
                    probs[torch.arange(len(y_c), device=h.device), y_c] -= 1.0
                    if capped is not None:  # through the cap: d(c tanh(z / c)) / dz = 1 - tanh^2
                        probs *= 1.0 - capped.square()
                    probs = (probs * scale).to(compute)
                    if grad_h is not None:
                        grad_h[start : start + chunk] = probs @ w
                    if grad_w is not None:
                        grad_w += (probs.T @ h_c).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype, ctx.scale = weight.dtype, scale
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        grad_h, grad_w = ctx.saved_tensors
        factor = grad_out.float() / ctx.scale
        gh = (grad_h.float() * factor).to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * factor).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None


def logit_chunk_rows(vocab_size: int, device_type: str) -> int:
    """Rows of logits the fused LM loss forms at a time: 2**24 fp32 values (64 MiB) on CPU; on CUDA 2**26
    (256 MiB) in whole tiles of 128 rows, because the head's matmul is the largest of the step and a GPU needs
    hundreds of rows to fill its tensor cores (Llama-3's 128K vocabulary: 130 rows on CPU, 512 on CUDA)."""
    if device_type == "cuda":
        return max(128, 2**26 // vocab_size // 128 * 128)
    return max(1, 2**24 // vocab_size)


def lm_loss_at(
    h: torch.Tensor,
    label_index: torch.Tensor,
    targets: torch.Tensor,
    lm_head: torch.nn.Linear,
    chunk: int = 0,
    softcap: float | None = None,
) -> torch.Tensor:
    """Sum of CE (fp32 scalar) at the label positions: h [B, T, D], label_index [N] flat positions b * T + t,
    targets [N] the tokens to predict there. Indices come from the host, so nothing here waits for the device.

    `chunk` rows of logits exist at a time; the default is `logit_chunk_rows`. `softcap`: the model's final
    logit soft-cap (`CausalLM.logit_softcap`), or None."""
    if lm_head.bias is not None:
        raise ValueError("lm_head with a bias is not supported by the fused LM loss")
    if len(label_index) == 0:
        return h.sum() * 0.0  # keeps the graph connected (DDP) at no cost
    chunk = chunk or logit_chunk_rows(lm_head.weight.shape[0], h.device.type)
    rows = h.flatten(0, 1).index_select(0, label_index)
    return LinearCrossEntropySum.apply(rows, lm_head.weight, targets, chunk, softcap)


def lm_loss_sum(
    h: torch.Tensor,
    labels: torch.Tensor,
    lm_head: torch.nn.Linear,
    chunk: int | None = None,
    softcap: float | None = None,
) -> tuple[torch.Tensor, int]:
    """h [B, T, D] hidden states, labels [B, T] pre-shifted (labels[b, t] is the token the logits at t must
    predict; IGNORE_INDEX elsewhere). Returns (sum of CE over label tokens as fp32 scalar, number of tokens).
    Finds the labels on the device (a sync); the training objective uses `lm_loss_at` with host indices."""
    index = (labels.flatten() != IGNORE_INDEX).nonzero().flatten()
    return lm_loss_at(h, index, labels.flatten()[index], lm_head, chunk=chunk or 0, softcap=softcap), len(index)


def lm_loss_reference(
    h: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Linear, softcap: float | None = None
) -> torch.Tensor:
    """The plain computation (full logits), kept for tests and benchmarks."""
    logits = lm_head(h).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


# ---- JEPA losses: (pred [N, D], target [N, D]) -> per-row loss [N] -------------------------------------------


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1)


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).norm(dim=-1)


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).pow(2).mean(dim=-1)


def infonce_loss(
    pred: torch.Tensor, target: torch.Tensor, temperature: float = 0.07, negatives: torch.Tensor | None = None
) -> torch.Tensor:
    """Row i's positive is target i; the other targets in the batch (plus `negatives`, e.g. gathered from other
    data-parallel ranks) are its negatives."""
    a = F.normalize(pred.float(), dim=-1)
    b = F.normalize(target.float(), dim=-1)
    if negatives is not None:
        b = torch.cat([b, F.normalize(negatives.float(), dim=-1)])
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device), reduction="none")


JEPA_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "cosine": cosine_loss,
    "l2": l2_loss,
    "mse": mse_loss,
    "infonce": infonce_loss,
}


def jepa_loss_fn(name: str) -> Callable[..., torch.Tensor]:
    if name not in JEPA_LOSSES:
        raise ValueError(f"unknown JEPA loss {name!r} (choose from: {', '.join(JEPA_LOSSES)})")
    return JEPA_LOSSES[name]

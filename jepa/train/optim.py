"""AdamW, the learning-rate schedule and the mixed-precision context."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from jepa.models.base import CausalLM
from jepa.models.predictors import PredictorEmbeddings
from jepa.train.config import OptimConfig, ScheduleConfig


def make_optimizer(
    cfg: OptimConfig,
    model: CausalLM,
    predictors: PredictorEmbeddings | None,
    device: torch.device,
    fused: bool = True,
) -> torch.optim.AdamW:
    """AdamW, fused on CPU and CUDA (one kernel over all parameters; `fused=False`: torch's foreach step, the
    comparison of bench/optimizer_step.py). Weight decay on matrices only: not on biases, norms or predictor
    tokens."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    if predictors is not None:
        no_decay.append(predictors.weight)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=(fused and device.type in ("cuda", "cpu")) or None,
    )


class LRSchedule:
    """Multiplier of the peak lr at optimizer step s (0-based), Hugging Face's conventions: linear warm-up
    s / warmup, then constant, linear decay or cosine decay to min_lr_ratio at `total` steps."""

    def __init__(self, kind: str, total: int, warmup: int, min_ratio: float) -> None:
        self.kind, self.total, self.warmup, self.min_ratio = kind, total, warmup, min_ratio

    @classmethod
    def from_config(cls, cfg: ScheduleConfig, total: int) -> LRSchedule:
        """`schedule.warmup_steps` wins over `schedule.warmup_ratio` when > 0."""
        return cls(cfg.kind, total, cfg.warmup_steps or int(cfg.warmup_ratio * total), cfg.min_lr_ratio)

    def __call__(self, s: int) -> float:
        if s < self.warmup:
            return s / max(1, self.warmup)
        if self.kind == "constant":
            return 1.0
        progress = (s - self.warmup) / max(1, self.total - self.warmup)
        decay = max(0.0, 1.0 - progress) if self.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (1.0 - self.min_ratio) * decay


# precision.mode -> the dtype autocast computes in (fp32 and pure_bf16, whose weights already are bf16: none)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(mode: str, device: torch.device) -> AbstractContextManager[Any]:
    """bf16 / fp16: autocast; fp32 and pure_bf16: nothing."""
    if mode in AUTOCAST_DTYPES:
        return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[mode])
    return nullcontext()

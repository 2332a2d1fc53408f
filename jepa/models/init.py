"""Random initialisation for models trained from scratch (a loaded checkpoint overwrites it)."""

from __future__ import annotations

from torch import nn


def normal_init(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2's and HF's `initializer_range` scheme, for `model.apply`: N(0, std) weights of every Linear and
    Embedding, zero Linear biases (norms keep their ones and zeros)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)

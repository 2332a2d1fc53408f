"""`CausalLM`: what the library needs of an architecture (the objective, LoRA, checkpoints, generation, the FLOP
count and the parallel strategies all use only this). Llama and GPT-2 subclass it; a new architecture does too
(docs/extending.md)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from jepa.models.attention import AttentionMask, KVCache


class CausalLM(nn.Module):
    """A decoder-only language model with Hugging Face parameter names.

    `forward(input_ids | input_embeds, attn_mask, position_ids, cache)` returns the final-norm hidden states
    [B, T, D]; `lm_head` maps them to the vocabulary. `blocks` are the transformer blocks in order (compiled,
    sharded and hooked one by one), `embed_tokens` the input embedding, `lora_targets` the module names LoRA
    wraps by default.
    """

    lora_targets: ClassVar[tuple[str, ...]] = ()
    config: Any
    lm_head: nn.Linear
    gradient_checkpointing: bool

    @property
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def embed_tokens(self) -> nn.Embedding:
        raise NotImplementedError

    def state_from_hf(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An HF state dict -> this module's names and layouts."""
        return tensors

    def state_to_hf(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This module's state dict -> HF's names and layouts."""
        return state

    def materialize(self, device: torch.device | str) -> None:
        """After loading weights into a model built on the meta device: tie what is tied, rebuild buffers."""

    def attention_shape(self) -> tuple[int, int]:
        """(layers, query width = heads x head dim), for counting attention FLOPs."""
        raise NotImplementedError

    def kv_cache(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device | str) -> KVCache:
        """An empty cache for `batch` sequences of up to `max_len` positions."""
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attn_mask: AttentionMask = None,
        position_ids: torch.Tensor | None = None,
        input_embeds: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

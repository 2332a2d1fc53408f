"""`CausalLM`: what the library needs of an architecture (the objective, LoRA, checkpoints, generation, the FLOP
count and the parallel strategies all use only this). Llama and GPT-2 subclass it; a new architecture does too
(docs/extending.md)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.utils.checkpoint
from torch import nn

from jepa.models.attention import AttentionMask, KVCache

# The LoRA targets of the Llama-shaped decoders (Llama and its variants, Gemma): every attention and MLP projection.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ScaledEmbedding(nn.Embedding):
    """An embedding whose output is multiplied by a constant, in the weight's dtype (Gemma: sqrt(hidden))."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, scale: float) -> None:
        super().__init__(num_embeddings, embedding_dim)
        self.scale = scale

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input) * torch.tensor(self.scale, dtype=self.weight.dtype)


class CausalLM(nn.Module):
    """A decoder-only language model with Hugging Face parameter names.

    `forward(input_ids | input_embeds, attn_mask, position_ids, cache)` returns the final-norm hidden states
    [B, T, D]; `lm_head` maps them to the vocabulary. `blocks` are the transformer blocks in order (compiled,
    sharded and hooked one by one), `embed_tokens` the input embedding, `lora_targets` the module names LoRA
    wraps by default. `logits(h)` applies the head and, where the model has one (Gemma-2), the final soft-cap
    `logit_softcap * tanh(logits / logit_softcap)`; the fused LM loss applies the same cap.
    """

    lora_targets: ClassVar[tuple[str, ...]] = ()
    logit_softcap: float | None = None
    config: Any
    lm_head: nn.Linear
    gradient_checkpointing: bool

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of hidden states h [..., D] -> [..., V], soft-capped where the model caps them."""
        logits = self.lm_head(h)
        if self.logit_softcap is None:
            return logits
        return torch.tanh(logits / self.logit_softcap) * self.logit_softcap

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

    def run_blocks(
        self,
        x: torch.Tensor,
        rotations: list[tuple[torch.Tensor, ...]],
        masks: list[AttentionMask],
        cache: KVCache | None,
    ) -> torch.Tensor:
        """x [B, T, D] through `blocks`, block i with RoPE's (cos, sin) = rotations[i] and attention mask masks[i]
        (activation checkpointing when training with `gradient_checkpointing`); then the cache advances by T."""
        for i, block in enumerate(self.blocks):
            (cos, sin), mask = rotations[i], masks[i]
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(
                    block, x, cos, sin, attn_mask=mask, cache=cache, layer=i, use_reentrant=False
                )
            else:
                x = block(x, cos, sin, attn_mask=mask, cache=cache, layer=i)
        if cache is not None:
            cache.advance(x.shape[1])
        return x

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

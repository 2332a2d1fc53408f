"""GPT-2 in one file, with Hugging Face's parameter names (`transformer.h.N.attn.c_attn`, ...).

HF stores GPT-2's projections as Conv1D weights [in, out]; here they are `nn.Linear` [out, in] and the loader
transposes them. `forward` returns hidden states after the final LayerNorm; `lm_head` is tied to `wte`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from jepa.models.attention import AttentionMask, KVCache, attend
from jepa.models.base import CausalLM
from jepa.models.hf_config import check_sizes, known_fields
from jepa.models.init import normal_init


@dataclass
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None => 4 * n_embd
    layer_norm_epsilon: float = 1e-5
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_sizes(self, ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner"))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> GPT2Config:
        act = cfg.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"GPT-2 activation_function {act!r} is not supported (tanh GELU only)")
        known, extra = known_fields(cls, cfg)
        return cls(**known, extra=extra)

    def to_hf(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"})
        out.update(
            model_type="gpt2",
            architectures=["GPT2LMHeadModel"],
            activation_function="gelu_new",
            tie_word_embeddings=True,
        )
        return out


class GPT2Attention(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.attn_pdrop = cfg.attn_pdrop
        self.resid_dropout = nn.Dropout(cfg.resid_pdrop)

    def forward(self, x: torch.Tensor, attn_mask: AttentionMask, cache: KVCache | None, layer: int) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        if self.training and self.attn_pdrop > 0:
            if cache is not None:
                raise ValueError("KV cache is for inference (model.eval())")
            if not torch.is_tensor(attn_mask) and attn_mask is not None:
                raise ValueError("attention dropout (attn_pdrop > 0) needs model.attention: sdpa")
            if attn_mask is None:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.attn_pdrop)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.attn_pdrop)
        else:
            y = attend(q, k, v, attn_mask=attn_mask, cache=cache, layer=layer)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class GPT2MLP(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        inner = cfg.n_inner or 4 * cfg.n_embd
        self.c_fc = nn.Linear(cfg.n_embd, inner)
        self.c_proj = nn.Linear(inner, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class GPT2Block(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = GPT2MLP(cfg)

    def forward(self, x: torch.Tensor, attn_mask: AttentionMask, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT2Body(nn.Module):
    """HF's `transformer.*` submodule."""

    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.h = nn.ModuleList(GPT2Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)


# HF stores these as Conv1D weights [in, out]; ours are nn.Linear [out, in].
HF_CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
# Causal-mask buffers that old GPT-2 checkpoints carry; they are not parameters.
HF_IGNORED = (".attn.bias", ".attn.masked_bias")


class GPT2(CausalLM):
    # LoRA targets when `lora.targets` is empty: every attention and MLP projection.
    lora_targets: ClassVar[tuple[str, ...]] = ("c_attn", "c_proj", "c_fc")

    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.config = cfg
        self.transformer = GPT2Body(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        self.gradient_checkpointing = False
        self.apply(normal_init)

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, in order (what `model.compile` compiles one by one)."""
        return self.transformer.h

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.transformer.wte

    @property
    def max_positions(self) -> int:
        """Position ids must stay below this: GPT-2's position table is learnt (RoPE models have no such limit)."""
        return self.config.n_positions

    def state_from_hf(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An HF GPT-2 state dict (`GPT2LMHeadModel`, or `GPT2Model` without the `transformer.` prefix) -> ours:
        Conv1D weights transposed, mask buffers dropped."""
        if not any(k.startswith("transformer.") for k in tensors):
            tensors = {(k if k.startswith("lm_head.") else "transformer." + k): v for k, v in tensors.items()}
        return {k: (v.t() if k.endswith(HF_CONV1D) else v) for k, v in tensors.items() if not k.endswith(HF_IGNORED)}

    def state_to_hf(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (v.t() if k.endswith(HF_CONV1D) else v) for k, v in state.items()}

    def materialize(self, device: torch.device | str) -> None:
        """After loading weights into a model built on the meta device: tie the head (GPT-2 always is)."""
        self.lm_head.weight = self.transformer.wte.weight

    def attention_shape(self) -> tuple[int, int]:
        """(layers, query width = heads x head dim), for counting attention FLOPs."""
        cfg = self.config
        return cfg.n_layer, cfg.n_embd

    def kv_cache(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device | str) -> KVCache:
        """An empty cache for `batch` sequences of up to `max_len` positions."""
        cfg = self.config
        return KVCache(n_layers=cfg.n_layer, batch=batch, n_kv_heads=cfg.n_head, max_len=max_len,
                       head_dim=cfg.n_embd // cfg.n_head, dtype=dtype, device=device)  # fmt: skip

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attn_mask: AttentionMask = None,
        position_ids: torch.Tensor | None = None,
        input_embeds: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Same contract as `Llama.forward`: [B, T] ids (or [B, T, D] embeds) -> [B, T, D] after `ln_f`."""
        x = self.transformer.wte(input_ids) if input_embeds is None else input_embeds
        B, T, _ = x.shape
        if position_ids is None:
            start = cache.length if cache is not None else 0
            position_ids = torch.arange(start, start + T, device=x.device).expand(B, T)
        x = self.transformer.drop(x + self.transformer.wpe(position_ids))
        for i, block in enumerate(self.transformer.h):
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, attn_mask, cache, i, use_reentrant=False)
            else:
                x = block(x, attn_mask, cache, i)
        if cache is not None:
            cache.advance(T)
        return self.transformer.ln_f(x)

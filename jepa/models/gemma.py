"""Gemma-2 and Gemma-3 (text), in one file, with Hugging Face's names.

`GemmaConfig.model_type` picks the variant, as transformers' config.json names it:

    gemma2       Gemma-2: RMSNorm scaled by (1 + w); norms before and after attention and before and after the
                 MLP; GeGLU (tanh GELU); the input embedding scaled by sqrt(hidden); attention scaled by
                 query_pre_attn_scalar^-1/2 with its logits soft-capped (c * tanh(s / c)); the final logits
                 soft-capped too; layers alternate a sliding window (even layers) and global attention.
    gemma3_text  Gemma-3: Gemma-2's block without soft-capping, plus an RMSNorm over each head of q and k before
                 RoPE; five sliding-window layers to one global (`sliding_window_pattern` 6); the sliding layers
                 rotate with their own base (`rope_local_base_freq`), the global ones with `rope_theta` and, for
                 the larger models, linear `rope_scaling`.

Soft-capped attention cannot run in SDPA's fused kernels: `attend` computes it on the math path (CPU, and CUDA
with a dense mask) or with a FlexAttention `score_mod` (a BlockMask). `forward` returns the final-norm hidden
states; `logits(h)` applies the head and the final soft-cap, and the fused LM loss applies the same cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from jepa.models.attention import AttentionMask, KVCache, attend, default_positions, layer_masks, rotation
from jepa.models.base import PROJECTIONS, CausalLM, ScaledEmbedding
from jepa.models.hf_config import check_sizes, known_fields
from jepa.models.init import normal_init

SLIDING, GLOBAL = "sliding_attention", "full_attention"
HF_CLASSES = {"gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}


@dataclass
class GemmaConfig:
    model_type: str = "gemma2"  # a key of HF_CLASSES
    vocab_size: int = 256000
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 256
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0  # the global layers' base (Gemma-2: every layer's)
    rope_local_base_freq: float | None = None  # the sliding layers' base (None: rope_theta)
    rope_scaling: dict[str, Any] | None = None  # global layers only: None or {"rope_type": "linear", "factor": f}
    max_position_embeddings: int = 8192
    attention_bias: bool = False
    query_pre_attn_scalar: float = 256.0
    sliding_window: int = 4096
    layer_types: list[str] | None = None  # None: Gemma-2 alternates from a sliding layer, Gemma-3 five to one
    attn_logit_softcapping: float | None = None  # Gemma-2's config.json: 50 (read as 50 when absent)
    final_logit_softcapping: float | None = None  # Gemma-2's config.json: 30 (read as 30 when absent)
    hidden_activation: str = "gelu_pytorch_tanh"
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # other config.json keys, written back on save

    def __post_init__(self) -> None:
        if self.model_type not in HF_CLASSES:
            raise ValueError(f"model_type {self.model_type!r} is not a Gemma variant ({', '.join(HF_CLASSES)})")
        check_sizes(self, ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                           "num_key_value_heads", "head_dim", "max_position_embeddings", "sliding_window"))  # fmt: skip
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.hidden_activation != "gelu_pytorch_tanh":
            raise ValueError(f"hidden_activation: {self.hidden_activation!r} is not supported (gelu_pytorch_tanh)")
        scaling = self.rope_scaling or {}
        if scaling.get("rope_type", scaling.get("type", "default")) not in ("default", "linear"):
            raise ValueError(f"rope_scaling: {scaling} is not supported (default, linear)")
        if self.layer_types is None:
            every = 2 if self.model_type == "gemma2" else int(self.extra.get("sliding_window_pattern", 6))
            self.layer_types = [SLIDING if (i + 1) % every else GLOBAL for i in range(self.num_hidden_layers)]
        if len(self.layer_types) != self.num_hidden_layers or set(self.layer_types) - {SLIDING, GLOBAL}:
            raise ValueError(f"layer_types: expected {self.num_hidden_layers} of {SLIDING!r} / {GLOBAL!r}")

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> GemmaConfig:
        """Build from a config.json dict: the Hub's keys (`rope_theta`, `rope_local_base_freq`, `rope_scaling`) or
        transformers 5's `rope_parameters` (one entry per layer type for Gemma-3)."""
        cfg = dict(cfg)
        rope = cfg.pop("rope_parameters", None) or {}
        per_type = rope if GLOBAL in rope or SLIDING in rope else {GLOBAL: rope}
        if per_type.get(GLOBAL):
            cfg.setdefault("rope_theta", per_type[GLOBAL].get("rope_theta", 10000.0))
            if per_type[GLOBAL].get("rope_type", "default") != "default":
                cfg.setdefault("rope_scaling", {k: v for k, v in per_type[GLOBAL].items() if k != "rope_theta"})
        if per_type.get(SLIDING):
            cfg.setdefault("rope_local_base_freq", per_type[SLIDING].get("rope_theta"))
        if cfg.get("model_type") == "gemma3_text":  # transformers' defaults for keys a config.json leaves out
            cfg.setdefault("rope_theta", 1_000_000.0)
            cfg.setdefault("rope_local_base_freq", 10_000.0)
        else:
            cfg.setdefault("attn_logit_softcapping", 50.0)
            cfg.setdefault("final_logit_softcapping", 30.0)
        if cfg.get("use_bidirectional_attention"):
            raise ValueError("use_bidirectional_attention: only causal Gemma models are supported")
        known, extra = known_fields(cls, cfg)
        return cls(**known, extra=extra)

    def to_hf(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"})
        out["architectures"] = [HF_CLASSES[self.model_type]]
        if self.model_type == "gemma2":
            del out["rope_local_base_freq"]
        return out

    def rope_inverse_frequencies(self, layer_type: str) -> torch.Tensor:
        """[head_dim / 2] float32 inverse frequencies of one layer type (the global ones linearly scaled)."""
        local = layer_type == SLIDING and self.rope_local_base_freq is not None
        base = self.rope_local_base_freq if local else self.rope_theta
        assert base is not None
        inv_freq = 1.0 / (base ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
        if layer_type == GLOBAL and self.rope_scaling:
            inv_freq = inv_freq / float(self.rope_scaling.get("factor", 1.0))
        return inv_freq


class GemmaRMSNorm(nn.Module):
    """x / rms(x) * (1 + weight), in fp32, cast back after the weight (the weight starts at 0)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.float())).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class GemmaAttention(nn.Module):
    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        d, b = cfg.hidden_size, cfg.attention_bias
        self.q_proj = nn.Linear(d, self.n_head * self.head_dim, bias=b)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=b)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=b)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, d, bias=b)
        self.scale = cfg.query_pre_attn_scalar**-0.5
        self.softcap = cfg.attn_logit_softcapping
        self.qk_norm = cfg.model_type == "gemma3_text"
        if self.qk_norm:  # Gemma-3: each head of q and k
            self.q_norm = GemmaRMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = GemmaRMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        *,
        attn_mask: AttentionMask,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = (q * cos + rotate_half(q) * sin).to(v.dtype)  # one dtype for attention, as in Llama
        k = (k * cos + rotate_half(k) * sin).to(v.dtype)
        y = attend(q, k, v, attn_mask=attn_mask, cache=cache, layer=layer, scale=self.scale, softcap=self.softcap)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class GemmaMLP(nn.Module):
    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class GemmaBlock(nn.Module):
    """Norms around both halves: x + post_attn(attn(input(x))), then x + post_ff(mlp(pre_ff(x)))."""

    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        d, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.input_layernorm = GemmaRMSNorm(d, eps)
        self.self_attn = GemmaAttention(cfg)
        self.post_attention_layernorm = GemmaRMSNorm(d, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(d, eps)
        self.mlp = GemmaMLP(cfg)
        self.post_feedforward_layernorm = GemmaRMSNorm(d, eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        *,
        attn_mask: AttentionMask,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        attn = self.self_attn(self.input_layernorm(x), cos, sin, attn_mask=attn_mask, cache=cache, layer=layer)
        x = x + self.post_attention_layernorm(attn)
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class GemmaBody(nn.Module):
    """HF's `model.*` submodule: the scaled embedding, blocks, final norm."""

    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.embed_tokens = ScaledEmbedding(cfg.vocab_size, cfg.hidden_size, scale=cfg.hidden_size**0.5)
        self.layers = nn.ModuleList(GemmaBlock(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Gemma(CausalLM):
    lora_targets: ClassVar[tuple[str, ...]] = PROJECTIONS

    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = GemmaBody(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.logit_softcap = cfg.final_logit_softcapping
        self.register_buffer("inv_freq_global", cfg.rope_inverse_frequencies(GLOBAL), persistent=False)
        self.register_buffer("inv_freq_local", cfg.rope_inverse_frequencies(SLIDING), persistent=False)
        self.gradient_checkpointing = False
        self.apply(normal_init)
        for module in self.modules():  # (1 + w) norms: w = 0 is the identity scale
            if isinstance(module, GemmaRMSNorm):
                nn.init.zeros_(module.weight)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.embed_tokens

    def materialize(self, device: torch.device | str) -> None:
        """After loading onto the meta device: tie the head, rebuild the float32 RoPE buffers on `device`."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.inv_freq_global = self.config.rope_inverse_frequencies(GLOBAL).to(device)
        self.inv_freq_local = self.config.rope_inverse_frequencies(SLIDING).to(device)

    def attention_shape(self) -> tuple[int, int]:
        cfg = self.config
        return cfg.num_hidden_layers, cfg.num_attention_heads * cfg.head_dim

    def kv_cache(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device | str) -> KVCache:
        cfg = self.config
        return KVCache(n_layers=cfg.num_hidden_layers, batch=batch, n_kv_heads=cfg.num_key_value_heads, max_len=max_len,
                       head_dim=cfg.head_dim, dtype=dtype, device=device)  # fmt: skip

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attn_mask: AttentionMask = None,
        position_ids: torch.Tensor | None = None,
        input_embeds: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """As `Llama.forward`. `input_embeds` are taken as given: `embed_tokens` (a ScaledEmbedding) has already
        scaled them by sqrt(hidden), as in transformers."""
        x = self.model.embed_tokens(input_ids) if input_embeds is None else input_embeds
        if position_ids is None:
            position_ids = default_positions(x, cache)
        by_kind = {GLOBAL: rotation(position_ids, self.inv_freq_global, x.dtype),
                   SLIDING: rotation(position_ids, self.inv_freq_local, x.dtype)}  # fmt: skip
        layer_types = self.config.layer_types
        windows = [self.config.sliding_window if kind == SLIDING else None for kind in layer_types]
        masks = layer_masks(attn_mask, position_ids, cache, windows)
        x = self.run_blocks(x, [by_kind[kind] for kind in layer_types], masks, cache)
        return self.model.norm(x)

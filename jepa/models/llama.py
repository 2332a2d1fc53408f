"""Llama (Llama-2/3, SmolLM2, ...) and the decoders shaped like it, in one file, with Hugging Face's names.

`LlamaConfig.model_type` picks the block's variant (VARIANTS), as transformers' config.json names it:

    llama   Llama-2/3, SmolLM2: pre-norm, optional biases on every attention projection
    qwen2   Qwen2 / Qwen2.5, DeepSeek-R1-Distill-Qwen: biases on q, k, v (not o); rope_theta usually 1e6
    qwen3   Qwen3: RMSNorm over each head of q and of k (q_norm, k_norm [head_dim]) before RoPE
    olmo2   OLMo-2: RMSNorm over the whole q and k projections (q_norm, k_norm); the block's norms come after
            attention and after the MLP (post_attention_layernorm, post_feedforward_layernorm), not before
    mistral Mistral (v0.1: every layer sees a sliding window of `sliding_window` positions; v0.3: none)
    phi3    Phi-3 (mini / medium, 4k and 128k without longrope): Llama's block, a sliding window on every layer
            when configured, and HF checkpoints that fuse q, k, v into `qkv_proj` and gate, up into
            `gate_up_proj` (split on load, fused again on save, so LoRA targets each projection)

Parameter names equal the keys of the HF `...ForCausalLM` state dict, so loading and saving a checkpoint is a
plain copy. `forward` returns the final hidden states *after* the final norm; `lm_head(h)` gives logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from jepa.models.attention import AttentionMask, KVCache, attend, default_positions, layer_masks, rotation
from jepa.models.base import PROJECTIONS, CausalLM
from jepa.models.hf_config import check_sizes, known_fields
from jepa.models.init import normal_init


@dataclass(frozen=True)
class Variant:
    """How one model_type differs from Llama. `qkv_bias` / `o_bias` None: config.attention_bias decides.
    `qk_norm`: None | "head" (each head of q and k) | "full" (the whole projections). `windowed`: config's
    `sliding_window` applies to every layer (absent from config.json: `default_window`, as transformers reads it).
    `fused`: HF checkpoints hold `qkv_proj` and `gate_up_proj`."""

    hf_class: str
    qkv_bias: bool | None = None
    o_bias: bool | None = None
    qk_norm: str | None = None
    norms_after: bool = False
    windowed: bool = False
    default_window: int | None = None
    fused: bool = False


VARIANTS = {
    "llama": Variant("LlamaForCausalLM"),
    "qwen2": Variant("Qwen2ForCausalLM", qkv_bias=True, o_bias=False),
    "qwen3": Variant("Qwen3ForCausalLM", qk_norm="head"),
    "olmo2": Variant("Olmo2ForCausalLM", qk_norm="full", norms_after=True),
    "mistral": Variant("MistralForCausalLM", windowed=True, default_window=4096),
    "phi3": Variant("Phi3ForCausalLM", qkv_bias=False, o_bias=False, windowed=True, fused=True),
}


@dataclass
class LlamaConfig:
    model_type: str = "llama"  # a key of VARIANTS
    vocab_size: int = 32000
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int = 3
    head_dim: int | None = None  # None => hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = (
        None  # {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor", ...}
    )
    max_position_embeddings: int = 2048
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    sliding_window: int | None = None  # Mistral / Phi-3: every layer attends to this many positions back at most
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # other config.json keys, written back on save

    def __post_init__(self) -> None:
        if self.model_type not in VARIANTS:
            raise ValueError(f"model_type {self.model_type!r} is not a Llama variant ({', '.join(VARIANTS)})")
        check_sizes(self, ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                           "num_key_value_heads", "head_dim", "max_position_embeddings"))  # fmt: skip
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                                 f"({self.num_attention_heads}) when head_dim is not set")  # fmt: skip
            self.head_dim = self.hidden_size // self.num_attention_heads
        scaling = self.rope_scaling or {}
        rope_type = scaling.get("rope_type", scaling.get("type", "default"))
        if rope_type not in ("default", None, "llama3"):
            raise ValueError(f"rope_scaling type {rope_type!r} is not supported (supported: default, llama3)")
        if self.sliding_window is not None and not self.variant.windowed:
            raise ValueError(f"sliding_window: model_type {self.model_type!r} has no sliding-window layers here")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window must be >= 1 or null, got {self.sliding_window}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> LlamaConfig:
        """Build from a config.json dict; accepts a top-level `rope_theta`/`rope_scaling` (Hub checkpoints) or
        `rope_parameters` (what transformers 5 writes)."""
        cfg = dict(cfg)
        rope = cfg.pop("rope_parameters", None)
        if rope:
            cfg.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
            if rope.get("rope_type", "default") != "default":
                cfg.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
        if cfg.get("num_key_value_heads") is None:
            cfg["num_key_value_heads"] = cfg.get("num_attention_heads")
        variant = VARIANTS.get(cfg.get("model_type", "llama"))
        window: dict[str, Any] = {}
        unused_window = {}  # Qwen configs carry a sliding_window they do not use (use_sliding_window false)
        if variant is not None and variant.windowed:
            window["sliding_window"] = cfg.pop("sliding_window", variant.default_window)
        elif cfg.get("use_sliding_window") or "sliding_attention" in (cfg.get("layer_types") or []):
            raise ValueError("use_sliding_window: this model's sliding-window layers are not supported")
        elif "sliding_window" in cfg:
            unused_window["sliding_window"] = cfg.pop("sliding_window")
        partial = (rope or {}).get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
        if partial != 1.0:
            raise ValueError(f"partial_rotary_factor: {partial} is not supported (RoPE over the whole head only)")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act: {cfg['hidden_act']!r} is not supported (silu only)")
        known, extra = known_fields(cls, cfg)
        return cls(**known, **window, extra={**extra, **unused_window})

    @property
    def variant(self) -> Variant:
        return VARIANTS[self.model_type]

    @property
    def layer_windows(self) -> list[int | None]:
        """Per layer, the sliding window it attends through (None: the whole causal context)."""
        return [self.sliding_window] * self.num_hidden_layers

    @property
    def qkv_bias(self) -> bool:
        fixed = self.variant.qkv_bias
        return self.attention_bias if fixed is None else fixed

    @property
    def o_bias(self) -> bool:
        fixed = self.variant.o_bias
        return self.attention_bias if fixed is None else fixed

    @property
    def per_head(self) -> int:
        """head_dim as `__post_init__` resolved it (hidden_size / heads when config.json does not set it)."""
        assert self.head_dim is not None
        return self.head_dim

    @property
    def qk_norm(self) -> str | None:
        return self.variant.qk_norm

    @property
    def norms_after(self) -> bool:
        return self.variant.norms_after

    def to_hf(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"})
        out.update(architectures=[self.variant.hf_class], hidden_act="silu")
        if out["rope_scaling"] is None:
            del out["rope_scaling"]
        if not self.variant.windowed:  # a windowed variant writes null: transformers reads a missing one as 4096
            del out["sliding_window"]
        out.setdefault("pad_token_id", None)  # Phi3Config would read a missing one as 32000
        return out


def rope_inverse_frequencies(cfg: LlamaConfig) -> torch.Tensor:
    """[head_dim / 2] float32 inverse frequencies, with Llama-3's long-context scaling when configured."""
    dim = cfg.per_head
    # float32 like the reference implementation, so positions far out rotate identically.
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    scaling = cfg.rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "llama3":
        factor = scaling["factor"]
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old_context = scaling.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv_freq
        # Long wavelengths (low frequencies) are slowed by `factor`, short ones kept, the band between blended.
        smooth = ((old_context / wavelen) - low) / (high - low)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
        in_band = (wavelen >= old_context / high) & (wavelen <= old_context / low)
        inv_freq = torch.where(in_band, blended, inv_freq)
    elif rope_type not in ("default", None):
        raise ValueError(f"rope_scaling type {rope_type!r} is not supported (supported: default, llama3)")
    return inv_freq


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dimension, computed in fp32. Llama casts back before the weight; OLMo-2
    (`weight_in_fp32`) after it, as each reference does (they differ below fp32)."""

    def __init__(self, dim: int, eps: float, weight_in_fp32: bool = False) -> None:
        super().__init__()
        self.eps, self.weight_in_fp32 = eps, weight_in_fp32
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x).to(dtype) if self.weight_in_fp32 else self.weight * x.to(dtype)


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.per_head
        d, b = cfg.hidden_size, cfg.qkv_bias
        self.q_proj = nn.Linear(d, self.n_head * self.head_dim, bias=b)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=b)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=b)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, d, bias=cfg.o_bias)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm == "head":  # Qwen3: each head of q and k
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        elif cfg.qk_norm == "full":  # OLMo-2: the whole projections
            self.q_norm = RMSNorm(self.n_head * self.head_dim, cfg.rms_norm_eps, weight_in_fp32=True)
            self.k_norm = RMSNorm(self.n_kv * self.head_dim, cfg.rms_norm_eps, weight_in_fp32=True)

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
        q, k = self.q_proj(x), self.k_proj(x)
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_head, self.head_dim)
        k = k.view(B, T, self.n_kv, self.head_dim)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        # RoPE in the residual stream's dtype (cos / sin: fp32 under autocast), then q, k back to v's: attention
        # gets one dtype (FlexAttention refuses mixed ones, and fp32 q / k would run its slow fp32 kernels)
        q = (q * cos + rotate_half(q) * sin).to(v.dtype)
        k = (k * cos + rotate_half(k) * sin).to(v.dtype)
        y = attend(q, k, v, attn_mask=attn_mask, cache=cache, layer=layer)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class LlamaMLP(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        d, f, b = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gate_proj = nn.Linear(d, f, bias=b)
        self.up_proj = nn.Linear(d, f, bias=b)
        self.down_proj = nn.Linear(f, d, bias=b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    """Pre-norm (input_layernorm before attention, post_attention_layernorm before the MLP) or, for OLMo-2,
    norms after (post_attention_layernorm on the attention output, post_feedforward_layernorm on the MLP's)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.norms_after = cfg.norms_after
        if not cfg.norms_after:
            self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, weight_in_fp32=cfg.norms_after)
        if cfg.norms_after:
            self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, weight_in_fp32=True)
        self.mlp = LlamaMLP(cfg)

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
        if self.norms_after:
            x = x + self.post_attention_layernorm(
                self.self_attn(x, cos, sin, attn_mask=attn_mask, cache=cache, layer=layer)
            )
            return x + self.post_feedforward_layernorm(self.mlp(x))
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attn_mask=attn_mask, cache=cache, layer=layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    """HF's `model.*` submodule: embeddings, blocks, final norm."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, weight_in_fp32=cfg.norms_after)


class Llama(CausalLM):
    # LoRA targets when `lora.targets` is empty: every attention and MLP projection.
    lora_targets: ClassVar[tuple[str, ...]] = PROJECTIONS

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = LlamaBody(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", rope_inverse_frequencies(cfg), persistent=False)
        self.gradient_checkpointing = False
        self.apply(normal_init)

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, in order (what `model.compile` compiles one by one)."""
        return self.model.layers

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.embed_tokens

    def state_from_hf(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """HF's names are ours; a fused checkpoint (Phi-3) has its `qkv_proj` / `gate_up_proj` split."""
        if not self.config.variant.fused:
            return tensors
        cfg = self.config
        q, kv = cfg.num_attention_heads * cfg.per_head, cfg.num_key_value_heads * cfg.per_head
        out = {}
        for name, tensor in tensors.items():
            if name.endswith("self_attn.qkv_proj.weight"):
                prefix = name.removesuffix("qkv_proj.weight")
                for part, piece in zip(("q", "k", "v"), torch.split(tensor, [q, kv, kv]), strict=True):
                    out[f"{prefix}{part}_proj.weight"] = piece.contiguous()
            elif name.endswith("mlp.gate_up_proj.weight"):
                prefix = name.removesuffix("gate_up_proj.weight")
                gate, up = tensor.chunk(2)  # gate first, as transformers' Phi3MLP reads it
                out[f"{prefix}gate_proj.weight"], out[f"{prefix}up_proj.weight"] = gate.contiguous(), up.contiguous()
            else:
                out[name] = tensor
        return out

    def state_to_hf(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Ours -> HF's: the same names, or for a fused variant q, k, v and gate, up concatenated again."""
        if not self.config.variant.fused:
            return state
        out = {}
        for name, tensor in state.items():
            if name.endswith("self_attn.q_proj.weight"):
                prefix = name.removesuffix("q_proj.weight")
                parts = [state[f"{prefix}{p}_proj.weight"] for p in ("q", "k", "v")]
                out[f"{prefix}qkv_proj.weight"] = torch.cat(parts)
            elif name.endswith("mlp.gate_proj.weight"):
                prefix = name.removesuffix("gate_proj.weight")
                out[f"{prefix}gate_up_proj.weight"] = torch.cat([tensor, state[f"{prefix}up_proj.weight"]])
            elif not name.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight", "mlp.up_proj.weight")):
                out[name] = tensor
        return out

    def materialize(self, device: torch.device | str) -> None:
        """After loading weights into a model built on the meta device: tie the head (when configured) and
        recompute the non-persistent RoPE buffer in float32 on `device`."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.inv_freq = rope_inverse_frequencies(self.config).to(device)

    def attention_shape(self) -> tuple[int, int]:
        """(layers, query width = heads x head dim), for counting attention FLOPs."""
        cfg = self.config
        return cfg.num_hidden_layers, cfg.num_attention_heads * cfg.per_head

    def kv_cache(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device | str) -> KVCache:
        """An empty cache for `batch` sequences of up to `max_len` positions (grouped-query K/V heads)."""
        cfg = self.config
        return KVCache(n_layers=cfg.num_hidden_layers, batch=batch, n_kv_heads=cfg.num_key_value_heads, max_len=max_len,
                       head_dim=cfg.per_head, dtype=dtype, device=device)  # fmt: skip

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attn_mask: AttentionMask = None,
        position_ids: torch.Tensor | None = None,
        input_embeds: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """input_ids [B, T] (or input_embeds [B, T, D]) -> final-norm hidden states [B, T, D].

        attn_mask: None (causal), bool [B, 1, T, S] (True = may attend) or additive float; S = T, or the cached
        length + T when `cache` is given. position_ids [B, T]: default arange(T) (offset by the cache length).
        """
        x = self.model.embed_tokens(input_ids) if input_embeds is None else input_embeds
        if position_ids is None:
            position_ids = default_positions(x, cache)
        rotations = [rotation(position_ids, self.inv_freq, x.dtype)] * len(self.blocks)
        masks = layer_masks(attn_mask, position_ids, cache, self.config.layer_windows)
        x = self.run_blocks(x, rotations, masks, cache)
        return self.model.norm(x)

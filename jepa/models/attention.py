"""Attention through `scaled_dot_product_attention`, and the KV cache used by generation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

# What attention takes as a mask: None (causal), a bool / additive tensor for SDPA, or a FlexAttention BlockMask.
AttentionMask = torch.Tensor | BlockMask | None


class KVCache:
    """Pre-allocated keys/values for every layer: [B, H_kv, max_len, Dh] each, and the position id of every
    cached key, [B, max_len] (what a sliding-window layer measures distances with).

    Layers write their new keys/values at `length`; the model calls `advance(T)` once per forward.
    """

    def __init__(
        self,
        *,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.positions = torch.zeros((batch, max_len), dtype=torch.long, device=device)
        self.length = 0
        self.max_len = max_len

    def key_positions(self, position_ids: torch.Tensor) -> torch.Tensor:
        """Record the position ids [B, T] of the keys this forward adds; returns those of every key, [B, S]."""
        end = self.length + position_ids.shape[1]
        self.positions[:, self.length : end] = position_ids
        return self.positions[:, :end]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: AttentionMask,
    cache: KVCache | None,
    layer: int,
    scale: float | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """q [B, H, T, Dh], k/v [B, H_kv, T, Dh] -> [B, H, T, Dh]. Grouped-query heads share k/v.

    attn_mask None means plain causal attention (only valid without a cache or for a single new token); a bool or
    additive tensor goes to SDPA; a FlexAttention BlockMask to `flex_attention` (compiled on CUDA; no cache).
    `scale`: the score scale (None: Dh^-1/2). `softcap`: scores become softcap * tanh(scores / softcap) (Gemma-2),
    which SDPA's kernels cannot do: the math path (`softcapped_attention`) or a FlexAttention score_mod.
    """
    if isinstance(attn_mask, BlockMask):  # FlexAttention: computes only the blocks the mask lets through
        score_mod = None
        if softcap is not None:
            cap = softcap

            def score_mod(score: torch.Tensor, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> torch.Tensor:
                return torch.tanh(score / cap) * cap

        return _flex_attention(q.is_cuda)(q, k, v, score_mod=score_mod, block_mask=attn_mask, scale=scale,
                                          enable_gqa=k.shape[1] != q.shape[1])  # fmt: skip
    if cache is not None:
        k, v = cache.update(layer, k, v)
    if softcap is not None:
        return softcapped_attention(q, k, v, attn_mask=attn_mask, scale=scale, softcap=softcap)
    # Grouped-query heads: SDPA's enable_gqa reads the shared K/V in place (faster than expanding them on CPU).
    gqa = k.shape[1] != q.shape[1]
    if attn_mask is None:
        causal = q.shape[2] > 1
        if causal and k.shape[2] != q.shape[2]:
            raise ValueError("a multi-token forward over a non-empty KV cache needs an explicit attn_mask")
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale, enable_gqa=gqa)


def softcapped_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None,
    scale: float | None,
    softcap: float,
) -> torch.Tensor:
    """Attention with soft-capped scores, written out (transformers' eager Gemma-2 path): scores in q's dtype,
    capped, masked, softmax in fp32 and cast back. Materialises [B, H, T, S] scores: the cost of soft-capping
    without FlexAttention."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-2, -1)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    scores = torch.tanh(scores / softcap) * softcap
    T, S = q.shape[2], k.shape[2]
    if attn_mask is None:
        if T > 1 and T != S:
            raise ValueError("a multi-token forward over a non-empty KV cache needs an explicit attn_mask")
        attn_mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    if attn_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    else:
        scores = scores + attn_mask
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v


def sliding_window(mask: AttentionMask, q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> AttentionMask:
    """`mask` restricted to keys fewer than `window` positions behind their query: key j stays visible to query i
    iff pos(i) - pos(j) < window, transformers' sliding-window rule. Positions, not indices, so a packed segment
    sees the window it would see alone and a left-padded prompt counts its real tokens only (transformers counts
    the padding too: the same outputs without padding). q_pos [B, T], k_pos [B, S]; `mask` as `attend` takes it
    (None: causal); a query always keeps itself, so no row is fully masked."""
    near = (q_pos[:, :, None] - k_pos[:, None, :]) < window  # [B, T, S]
    T, S = q_pos.shape[1], k_pos.shape[1]
    if mask is None:
        if T > 1 and T != S:
            raise ValueError("a multi-token forward over a non-empty KV cache needs an explicit attn_mask")
        causal = torch.ones(T, S, dtype=torch.bool, device=near.device).tril(S - T)
        return (near & causal)[:, None]
    if isinstance(mask, BlockMask):
        base = mask.mask_mod

        def windowed(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            return base(b, h, q, kv) & (q_pos[b, q] - k_pos[b, kv] < window)

        return create_block_mask(windowed, B=q_pos.shape[0], H=None, Q_LEN=T, KV_LEN=S, device=q_pos.device)
    if mask.dtype == torch.bool:
        return mask & near[:, None]
    return mask.masked_fill(~near[:, None], float("-inf"))


def default_positions(x: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
    """arange(T) per row of x [B, T, D], offset by what the cache already holds: [B, T] position ids."""
    B, T = x.shape[:2]
    start = cache.length if cache is not None else 0
    return torch.arange(start, start + T, device=x.device).expand(B, T)


def rotation(position_ids: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """RoPE's (cos, sin) [B, 1, T, Dh] in `dtype` for position ids [B, T] and inverse frequencies [Dh / 2]: the
    angles in fp32, so positions far out rotate as the reference implementations do."""
    angles = position_ids[:, None, :, None].float() * inv_freq.to(position_ids.device)  # [B, 1, T, Dh/2]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def layer_masks(
    attn_mask: AttentionMask, position_ids: torch.Tensor, cache: KVCache | None, windows: list[int | None]
) -> list[AttentionMask]:
    """Per layer, `attn_mask` or, for a layer with a sliding window, `sliding_window` of it: one mask per window
    size, built once per forward (a cache records the keys' positions first)."""
    masks: dict[int | None, AttentionMask] = {None: attn_mask}
    if any(w is not None for w in windows):
        key_positions = cache.key_positions(position_ids) if cache is not None else position_ids
        for w in {w for w in windows if w is not None}:
            masks[w] = sliding_window(attn_mask, position_ids, key_positions, w)
    return [masks[w] for w in windows]


_COMPILED_FLEX: Callable[..., Any] | None = None


def compiled_flex_attention(backend: str | Callable[..., Any] = "inductor") -> Callable[..., Any]:
    """flex_attention under torch.compile with automatic dynamic shapes: a new (batch, length) compiles a graph
    with symbolic sizes once, instead of one graph per shape (packed jepa rows give ~11 shapes an epoch; past the
    recompile limit, 8, torch would fall back to the unfused flex that materialises B x H x T x T scores)."""
    return torch.compile(flex_attention, dynamic=None, backend=backend)


def _flex_attention(cuda: bool) -> Callable[..., Any]:
    """flex_attention, compiled once for CUDA (its fast kernels need compilation); eager elsewhere (CPU: forward
    only in torch 2.13)."""
    global _COMPILED_FLEX
    if not cuda:
        return flex_attention
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = compiled_flex_attention()
    return _COMPILED_FLEX

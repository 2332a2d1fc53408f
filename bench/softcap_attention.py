"""What soft-capped attention (Gemma-2) costs against SDPA: one attention layer, forward + backward.

Gemma-2-2B's attention shapes (8 query heads, 4 KV heads, head dim 256, query_pre_attn_scalar 256), batch 1,
fp32 CPU, a causal dense mask: `attend` with `softcap=50` (the math path: [B, H, T, T] scores written out,
capped, masked, softmax) against `attend` without it (SDPA's fused kernel). Interleaved repetitions, median
times and their ratio per length. (On CUDA a BlockMask runs the cap as a FlexAttention score_mod instead; not
measured here.) Run: `python bench/softcap_attention.py [--lengths 256 512 1024] [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from jepa.models.attention import attend


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=256)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU")
    print("length\tsdpa_s\tsoftcap_s\tratio")
    for length in args.lengths:
        q = torch.randn(1, args.heads, length, args.head_dim, requires_grad=True)
        k = torch.randn(1, args.kv_heads, length, args.head_dim, requires_grad=True)
        v = torch.randn(1, args.kv_heads, length, args.head_dim, requires_grad=True)
        mask = torch.ones(length, length, dtype=torch.bool).tril()[None, None]

        def step(softcap: float | None, q=q, k=k, v=v, mask=mask) -> None:
            y = attend(q, k, v, attn_mask=mask, cache=None, layer=0, scale=args.head_dim**-0.5, softcap=softcap)
            y.sum().backward()

        times: dict[str, list[float]] = {"sdpa": [], "softcap": []}
        step(None), step(50.0)  # warm-up
        for _ in range(args.repeats):
            times["sdpa"].append(timed(lambda step=step: step(None)))
            times["softcap"].append(timed(lambda step=step: step(50.0)))
        sdpa, capped = statistics.median(times["sdpa"]), statistics.median(times["softcap"])
        print(f"{length}\t{sdpa:.4f}\t{capped:.4f}\t{capped / sdpa:.2f}")


if __name__ == "__main__":
    main()

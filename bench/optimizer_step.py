"""The AdamW step, fused (what training uses on CPU and CUDA) against torch's foreach step.

The optimizer is the trainer's own (`jepa.train.optim.make_optimizer`) over a SmolLM2-135M-shaped model (random
weights, fp32, tied head) with random gradients; interleaved repetitions, median seconds per step and their
ratio, on this machine's CPU (or `--device cuda`). Run: `python bench/optimizer_step.py [--layers 30] [--repeats 7]`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from shapes import SMOLLM2  # bench/ is on sys.path when a bench runs as a script

from jepa.models import Llama, LlamaConfig
from jepa.train.config import OptimConfig
from jepa.train.optim import make_optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=SMOLLM2["num_hidden_layers"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = Llama(LlamaConfig(**{**SMOLLM2, "num_hidden_layers": args.layers})).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    cfg = OptimConfig(lr=1e-4, weight_decay=0.01)
    optimizers = {"foreach": make_optimizer(cfg, model, None, device, fused=False),
                  "fused": make_optimizer(cfg, model, None, device)}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for optimizer in optimizers.values():
        optimizer.step()  # warm-up: the state tensors exist from here on
    for _ in range(args.repeats):
        for name, optimizer in optimizers.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    foreach, fused = statistics.median(times["foreach"]), statistics.median(times["fused"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, {params:.1f}M parameters")
    print(f"foreach_s\tfused_s\tspeedup\n{foreach:.4f}\t{fused:.4f}\t{foreach / fused:.2f}")


if __name__ == "__main__":
    main()

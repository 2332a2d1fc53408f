"""The CPU training step against this machine's own matmul limit: a CPU "MFU" (issue 28 §3-4).

1. The training step the loop runs (`build` + `train_step`, through train_throughput.py's `run_once`: a child
   process, the fastest of `--steps` steps) in regular and jepa mode on the same GSM8K examples (SmolLM2-135M
   shape, full fine-tuning, fp32), with one more step profiled for its top ops.
2. This machine's fp32 matmul rate at the same shapes: every nn.Linear of the model (counted by shape) at the
   step's token count, its three matmuls of a training step (forward, input gradient, weight gradient), plus the
   LM head's at the step's label tokens; model FLOPs / time, the best of `--repeats`, measured right after the
   mode's steps. Both figures need a machine nobody else is using: a neighbour's load moves them differently.
MFU = the step's model FLOP/s (jepa/train/flops.py: real tokens only, padding and masked pairs not counted) /
that rate. What the rest of the step is: the top ops (attention, elementwise, AdamW).
Run: `python bench/cpu_mfu.py [--batch 4] [--steps 3] [--threads N]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when run through runpy (the --help test)

from train_throughput import run_once  # noqa: E402

from jepa.models import build_model  # noqa: E402
from jepa.train.config import load_config  # noqa: E402


def linear_shapes(config: str, overrides: list[str]) -> tuple[Counter[tuple[int, int]], tuple[int, int]]:
    """(count of every block nn.Linear's (out, in) shape, the LM head's shape) of the model the config trains
    (built on the meta device: shapes only)."""
    cfg = load_config(config, overrides)
    arch = cfg.model.arch or json.loads((Path(cfg.model.path or "") / "config.json").read_text())
    with torch.device("meta"):
        model = build_model(arch)
    shapes = Counter(
        tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear) and m is not model.lm_head
    )
    return shapes, tuple(model.lm_head.weight.shape)


def matmul_rate(
    shapes: Counter[tuple[int, int]], head: tuple[int, int], tokens: int, labels: int, repeats: int
) -> float:
    """Model FLOP/s of a training step's linear-layer matmuls at these shapes: the best of `repeats`."""

    def timed(out_features: int, in_features: int, rows: int) -> float:
        x, w, dy = (
            torch.randn(rows, in_features),
            torch.randn(out_features, in_features),
            torch.randn(rows, out_features),
        )
        started = time.perf_counter()
        x @ w.T  # forward
        dy @ w  # input gradient
        dy.T @ x  # weight gradient
        return time.perf_counter() - started

    best = 0.0
    for _ in range(repeats):
        seconds = sum(n * timed(*shape, tokens) for shape, n in shapes.items()) + timed(*head, labels)
        flops = 6 * tokens * sum(n * o * i for (o, i), n in shapes.items()) + 6 * labels * head[0] * head[1]
        best = max(best, flops / seconds)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="smollm2_step.yaml")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default) here and in the step")
    ap.add_argument("--top-ops", type=int, default=8)
    ap.add_argument("overrides", nargs="*", metavar="section.key=value", help="added to every setting")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    base = [f"schedule.batch_size={args.batch}", "schedule.grad_accum=1", "lora.enabled=false",
            f"run.threads={threads}", *args.overrides]  # fmt: skip
    shapes, head = linear_shapes(args.config, base)
    print(
        "mode\tstep s\ttokens\tlabel tokens\tmodel TFLOP/s\tmatmul TFLOP/s\tMFU\ttop ops (share of the profiled step)"
    )
    for mode in ("regular", "jepa"):
        result = run_once(args.config, [*base, f"layout.mode={mode}"], 1, args.steps, top_ops=args.top_ops)
        if "error" in result:
            raise SystemExit(f"error: {result['error']}")
        tokens = round(result["tokens_s"] / result["steps_s"])
        labels = round(result["lm_tokens_s"] / result["steps_s"])
        rate = matmul_rate(shapes, head, tokens, labels, args.repeats) / 1e12
        ops = ", ".join(f"{name} {share:.0%}" for name, share in result["top_ops"])
        print(f"{mode}\t{1 / result['steps_s']:.2f}\t{tokens}\t{labels}\t{result['tflops']:.4f}\t{rate:.4f}\t"
              f"{result['tflops'] / rate:.0%}\t{ops}", flush=True)  # fmt: skip
    print(f"# {threads} threads; the fastest step of {args.steps}, the best matmul round of {args.repeats}")


if __name__ == "__main__":
    main()

"""Training throughput: optimizer steps/s, tokens/s and peak memory of the training step the loop runs
(`build(cfg)` then `train_step`: forward/backward, clip, AdamW, schedule) for

  * gpt2_reversal.yaml's 4-layer GPT-2 (d=768) with lambda=0 (plain LM rows) vs lambda=1 (packed JEPA rows),
  * smollm2_step.yaml (SmolLM2-135M-Instruct, Step-JEPA) with LoRA vs full fine-tuning (and LoRA without
    its input dropout, whose saved masks and dropped copies of every projection input cost activation memory),
  * `--only modes`: the same SmolLM2 step in regular, jepa and stp mode (what each JEPA term costs).

Each setting runs in its own child process (so peak memory is its own: RSS on CPU, max allocated on CUDA),
alternately for `--rounds` rounds; the fastest step of the fastest round is reported (plus the median step
time), because on a shared machine slower steps measure the neighbours. The parent prints the ratios.
`tokens` counts every packed token, JEPA segments included; `label tok/s` counts only the LM label tokens, so
(label tokens/s of lambda=1) / (label tokens/s of lambda=0) is the real cost of JEPA.

    python bench/train_throughput.py [--steps 3] [--reversal-batch 64] [--only reversal|smollm2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jepa.train.build import build  # noqa: E402
from jepa.train.config import load_config  # noqa: E402
from jepa.train.step import next_micro_batches, train_step  # noqa: E402


def measure(config: str, overrides: list[str], warmup: int, steps: int, queue, top_ops: int = 0) -> None:
    """Child process: time `steps` optimizer steps after `warmup` ones; put a result dict on `queue`. `top_ops` > 0:
    one more step under torch.profiler, its `top_ops` ops by self CPU time as (name, share of the step)."""
    if "distributed.strategy=fsdp" in overrides:  # FSDP runs under torchrun: its environment, for one process
        torchrun_env(rank=0, world_size=1, port=free_port())
    with tempfile.TemporaryDirectory() as runs:  # build() resumes from run.dir: a fresh, empty one
        cfg = load_config(config, [*overrides, f"run.dir={runs}", "checkpoint.resume=none"])
        state = build(cfg, verbose=False)
    device = state.world.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, tokens, lm_tokens, real, tflops, mfu, mfu_6n = [], [], [], [], [], [], []
    for i in range(warmup + steps):
        micro_batches = next_micro_batches(state)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        metrics = train_step(state, micro_batches)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            tokens.append(metrics["tokens"])
            lm_tokens.append(metrics["lm_tokens"])
            real.append(metrics["real_token_fraction"])
            tflops.append(metrics["tflops"])
            mfu.append(metrics.get("mfu"))
            mfu_6n.append(metrics.get("mfu_6n", metrics.get("mfu")))  # full fine-tuning: the one count is 6N
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    ops = []
    if top_ops:
        micro_batches = next_micro_batches(state)
        with torch.profiler.profile() as profiler:
            train_step(state, micro_batches)
        events = profiler.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        ops = [(e.key, e.self_cpu_time_total / total) for e in sorted(events, key=lambda e: -e.self_cpu_time_total)]
        ops = ops[:top_ops]
    # The fastest step: on a shared machine the others measure the neighbours' load, not this code.
    best = min(range(steps), key=lambda k: times[k])
    queue.put(
        {
            "steps_s": 1 / times[best],
            "tokens_s": tokens[best] / times[best],
            "lm_tokens_s": lm_tokens[best] / times[best],
            "median_s": sorted(times)[steps // 2],
            "tflops": tflops[best],
            "mfu": mfu[best],
            "mfu_6n": mfu_6n[best],
            "real": sum(real) / len(real),
            "peak_mib": peak,
            "rows": state.sampler.global_batch,
            "trainable_m": sum(p.numel() for p in state.trainable_parameters) / 1e6,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "top_ops": ops,
        }
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_env(rank: int, world_size: int, port: int) -> None:
    """The environment torchrun gives process `rank` of `world_size` on this machine."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip


def run_once(
    config: str, overrides: list[str], warmup: int, steps: int, timeout_s: float | None = None, top_ops: int = 0
) -> dict:
    """`measure` in a child process; {"error": ...} when it fails (its traceback is on stderr already) or runs past
    `timeout_s` (then it is killed)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=measure, args=(config, overrides, warmup, steps, queue, top_ops))
    child.start()
    child.join(timeout_s)
    if child.is_alive():
        child.kill()
        child.join()
        return {"error": f"timed out after {timeout_s:.0f} s", "timed_out": True}
    if child.exitcode != 0:
        return {"error": f"the {config} {' '.join(overrides)} measurement failed (exit {child.exitcode})"}
    return queue.get()


def compare(settings: list[tuple[str, str, list[str]]], warmup: int, steps: int, rounds: int) -> list[dict]:
    """Run the settings alternately `rounds` times (A B A B ...), keep each one's fastest round, print a row each."""
    best: list[dict | None] = [None] * len(settings)
    for _ in range(rounds):
        for k, (_, config, overrides) in enumerate(settings):
            result = run_once(config, overrides, warmup, steps)
            if "error" in result:
                sys.exit(f"error: {result['error']}")
            if best[k] is None or result["steps_s"] > best[k]["steps_s"]:
                best[k] = result
    for (name, _, _), r in zip(settings, best):
        print(
            f"{name:<26} {r['steps_s']:8.3f} {r['median_s']:9.2f} {r['tokens_s']:9.0f} {r['lm_tokens_s']:11.0f} "
            f"{r['peak_mib']:9.0f} {r['trainable_m']:10.2f}  ({r['rows']} rows/step, {r['real']:.0%} real, "
            f"{r['device']}, {r['threads']} threads)",
            flush=True,
        )
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per setting")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="alternating repetitions; the fastest is kept")
    parser.add_argument(
        "--reversal-batch",
        type=int,
        default=64,
        help="rows per step for the GPT-2 runs (the config's 256 takes minutes per step on 2 CPU cores)",
    )
    parser.add_argument("--reversal-data", default=None, help="default: data/reversal, else data/reversal_small")
    parser.add_argument("--smollm2-batch", type=int, default=4)
    parser.add_argument("--only", choices=("reversal", "smollm2", "packing", "modes"))
    parser.add_argument("--modes-extra", nargs="*", default=[], help="overrides added to both settings of --only modes")
    args = parser.parse_args()
    print(
        f"{'setting':<26} {'steps/s':>8} {'median s':>9} {'tokens/s':>9} {'label tok/s':>11} {'peak MiB':>9} "
        f"{'trainable M':>10}"
    )
    if args.only in (None, "reversal"):
        data = args.reversal_data or (
            "data/reversal" if Path("data/reversal/train.json").is_file() else "data/reversal_small"
        )
        base = [
            f"data.train={data}",
            f"schedule.batch_size={args.reversal_batch}",
            "schedule.grad_accum=1",
            "run.threads=null",
        ]
        print(f"# gpt2_reversal.yaml model on {data}")
        lm, jepa = compare(
            [
                ("reversal lambda=0", "gpt2_reversal.yaml", base + ["jepa.lambda=0"]),
                ("reversal lambda=1 packed", "gpt2_reversal.yaml", base + ["jepa.lambda=1"]),
            ],
            args.warmup,
            args.steps,
            args.rounds,
        )
        print(
            f"  lambda=1 / lambda=0: steps/s x{jepa['steps_s'] / lm['steps_s']:.2f}, "
            f"label tokens/s x{jepa['lm_tokens_s'] / lm['lm_tokens_s']:.2f}, "
            f"peak memory x{jepa['peak_mib'] / lm['peak_mib']:.2f}"
        )
    if args.only in (None, "smollm2"):
        base = [f"schedule.batch_size={args.smollm2_batch}", "schedule.grad_accum=1", "run.threads=null"]
        print("# smollm2_step.yaml")
        lora, full, _ = compare(
            [
                ("smollm2 step LoRA", "smollm2_step.yaml", base),
                ("smollm2 step full FT", "smollm2_step.yaml", base + ["lora.enabled=false"]),
                ("smollm2 step LoRA dropout=0", "smollm2_step.yaml", base + ["lora.dropout=0"]),
            ],
            args.warmup,
            args.steps,
            args.rounds,
        )
        print(
            f"  LoRA / full: steps/s x{lora['steps_s'] / full['steps_s']:.2f}, "
            f"peak memory x{lora['peak_mib'] / full['peak_mib']:.2f}"
        )

    if args.only in (None, "packing"):
        # The same examples per step, padded to the longest row vs packed (data.pack_length): the real-token
        # fraction and the tokens/s of the step the loop runs.
        groups = [
            ("step", "smollm2_step.yaml", [f"schedule.batch_size={args.smollm2_batch}", "lora.enabled=false"], 1024),
            ("jepa", "smollm2_step.yaml", ["schedule.batch_size=8", "layout.mode=jepa", "lora.enabled=false"], 1024),
        ]
        if Path("data/reversal/train.json").is_file():
            groups.append(
                ("reversal", "gpt2_reversal.yaml", ["data.train=data/reversal", "schedule.batch_size=64"], 128)
            )
        for name, config, overrides, pack in groups:
            overrides = overrides + ["schedule.grad_accum=1", "run.threads=null"]
            print(f"# {config} {name} mode")
            padded, packed = compare(
                [
                    (f"{name} padded", config, overrides),
                    (f"{name} packed {pack}", config, overrides + [f"data.pack_length={pack}"]),
                ],
                args.warmup,
                args.steps,
                args.rounds,
            )
            print(
                f"  packed / padded: tokens/s x{packed['tokens_s'] / padded['tokens_s']:.2f}, real tokens "
                f"{padded['real']:.0%} -> {packed['real']:.0%}, "
                f"peak memory x{packed['peak_mib'] / padded['peak_mib']:.2f}"
            )

    if args.only in (None, "modes"):
        # Issue 10 §0: what the JEPA term costs. Same GSM8K examples, SmolLM2 shape, full FT: jepa mode (the chat +
        # the Text and Code views) against regular mode; the goal is a step-time ratio <= 1.1x the token ratio.
        base = ["schedule.batch_size=4", "schedule.grad_accum=1", "lora.enabled=false", "run.threads=null"]
        print("# smollm2_step.yaml: jepa and stp vs regular mode " + " ".join(args.modes_extra))
        regular, jepa, stp = compare(
            [
                ("regular mode", "smollm2_step.yaml", base + ["layout.mode=regular", *args.modes_extra]),
                ("jepa mode", "smollm2_step.yaml", base + ["layout.mode=jepa", *args.modes_extra]),
                ("stp mode", "smollm2_step.yaml", base + ["layout.mode=stp", "jepa.lambda=0.02", *args.modes_extra]),
            ],
            args.warmup,
            args.steps,
            args.rounds,
        )
        # Both from each setting's fastest step: its tokens (tokens/s over steps/s) and its time (1 / steps/s).
        token_ratio = (jepa["tokens_s"] / jepa["steps_s"]) / (regular["tokens_s"] / regular["steps_s"])
        time_ratio = regular["steps_s"] / jepa["steps_s"]
        print(f"  jepa / regular: step time x{time_ratio:.2f} for x{token_ratio:.2f} the tokens "
              f"(time / token ratio {time_ratio / token_ratio:.2f}; goal <= 1.10)")  # fmt: skip
        # STP reads its chords off the LM pass: the same tokens, so the step time should be ~1.0x.
        stp_tokens = (stp["tokens_s"] / stp["steps_s"]) / (regular["tokens_s"] / regular["steps_s"])
        print(f"  stp / regular: step time x{regular['steps_s'] / stp['steps_s']:.2f} for x{stp_tokens:.2f} the tokens")


if __name__ == "__main__":
    main()

"""Why one CPU training step varies: the same step repeated on the same rows (issue 28 §3).

`build` + `train_step` (what the loop runs) on one optimizer step's micro-batches, repeated `--repeats` times
in a fresh process per setting; per setting: the fastest, median and slowest step, the spread (slowest -
fastest) / median, and the minor page faults a step takes (memory the allocator gave back to the kernel and
takes again, zero-filled, at every step). Settings:
  default        as the trainer runs
  malloc_keep    glibc told to keep freed memory (MALLOC_TRIM_THRESHOLD_ / MALLOC_MMAP_THRESHOLD_, set before the
                 process starts): fewer page faults from memory returned to the kernel and taken again
  prefetching    default, plus a thread collating the next step's batch while each step runs (as `data.prefetch`
                 does in the loop)
Run: `python bench/step_spread.py [--config smollm2_step.yaml] [--repeats 8] [overrides ...]`.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

MALLOC_KEEP = {"MALLOC_TRIM_THRESHOLD_": str(1 << 40), "MALLOC_MMAP_THRESHOLD_": str(1 << 25)}
SETTINGS = {"default": {}, "malloc_keep": MALLOC_KEEP, "prefetching": {}}


def measure(config: str, overrides: list[str], repeats: int, prefetching: bool) -> dict[str, float]:
    import torch

    from jepa.train.build import build
    from jepa.train.config import load_config
    from jepa.train.step import next_micro_batches, step_micro_batches, train_step

    with tempfile.TemporaryDirectory() as runs:
        state = build(load_config(config, [*overrides, f"run.dir={runs}", "checkpoint.resume=none"]), verbose=False)
    batches = next_micro_batches(state)
    turns: queue.Queue[int | None] = queue.Queue()

    def collate_next() -> None:  # one step's batch collated per step, as the loop's Prefetcher does in steady state
        step = 1
        while turns.get() is not None:
            step_micro_batches(state, state.sampler.next_batch(), step)
            step += 1

    collator = threading.Thread(target=collate_next)
    if prefetching:
        collator.start()
    times, faults = [], []
    for i in range(repeats + 1):  # the first step warms up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.perf_counter()
        turns.put(i)
        train_step(state, batches)
        if i:
            times.append(time.perf_counter() - started)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    turns.put(None)
    if prefetching:
        collator.join()  # a thread still inside torch at exit aborts the process
    median = statistics.median(times)
    spread = (max(times) - min(times)) / median
    return {"fastest": min(times), "median": median, "slowest": max(times), "spread": spread,
            "faults": statistics.median(faults), "threads": torch.get_num_threads()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="smollm2_step.yaml")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--setting", action="append", choices=tuple(SETTINGS), help="default: all")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: one setting in this process
    ap.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(measure(args.config, args.overrides, args.repeats, args.case == "prefetching")))
        return
    print("setting\tfastest s\tmedian s\tslowest s\tspread\tpage faults/step\tthreads")
    for name in args.setting or SETTINGS:
        proc = subprocess.run(
            [sys.executable, __file__, "--config", args.config, "--repeats", str(args.repeats), "--case", name,
             *args.overrides],
            capture_output=True, text=True, env={**os.environ, **SETTINGS[name]},
        )  # fmt: skip
        if proc.returncode != 0:
            sys.exit(f"{name}: {proc.stderr.strip().splitlines()[-1]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name}\t{r['fastest']:.2f}\t{r['median']:.2f}\t{r['slowest']:.2f}\t{r['spread']:.0%}\t"
              f"{r['faults']:.0f}\t{r['threads']}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

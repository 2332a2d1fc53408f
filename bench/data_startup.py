"""Start-up cost of a run's training data: laying rows out at every start (before) vs the row cache (issue 28 §2).

For each config, three fresh processes load the training set through `jepa.train.build.train_dataset`, the
function `build` calls:
  every_start  data.cache=false: tokenized and laid out, rows held as Python `Row` lists (what every start, every
               resume and every rank did before the cache; the lists are what the trainer held)
  cold         the first start with the cache: laid out into arrays and written to the cache
  warm         a later start: the cache entry checked (sha256) and memory-mapped
Figures: seconds to load; RSS added by the dataset (after the load, and after reading every row once, which an
epoch does: a memory-mapped page is resident once touched). Ratios every_start / warm.
Run: `python bench/data_startup.py [--config gpt2_reversal.yaml --config smollm2_synth.yaml] [overrides ...]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mib() -> float:
    """This process's resident set size now (Linux /proc; the peak from getrusage elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(config: str, overrides: list[str], case: str) -> dict[str, float]:
    """One case in this process: {seconds, rss_load_mib, rss_read_mib, rows}."""
    from jepa.train.build import train_dataset
    from jepa.train.config import load_config

    cache = "false" if case == "every_start" else "true"
    cfg = load_config(config, [*overrides, f"data.cache={cache}"])
    gc.collect()
    base = rss_mib()
    started = time.perf_counter()
    dataset = train_dataset(cfg)
    seconds = time.perf_counter() - started
    rows = list(dataset.rows) if case == "every_start" else dataset.rows  # Python Row lists, as held before
    gc.collect()
    loaded = rss_mib() - base
    tokens = sum(len(row.input_ids) for row in rows)  # every row read once, as an epoch reads them
    gc.collect()
    return {"seconds": seconds, "rss_load_mib": loaded, "rss_read_mib": rss_mib() - base, "rows": len(rows),
            "tokens": tokens}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", help="a training config (repeatable)")
    ap.add_argument("overrides", nargs="*", metavar="section.key=value", help="applied to every config")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: measure one case in this process
    args = ap.parse_args()
    configs = args.config or ["gpt2_reversal.yaml", "smollm2_synth.yaml"]
    if args.case:
        print(json.dumps(measure(configs[0], args.overrides, args.case)))
        return
    print("config\tcase\tseconds\trows\trss_load_mib\trss_read_mib")
    for config in configs:
        with tempfile.TemporaryDirectory(prefix="jepa-bench-rowcache-") as cache_dir:
            overrides = [*args.overrides, f"data.cache_dir={cache_dir}"]
            results = {}
            for case in ("every_start", "cold", "warm"):
                proc = subprocess.run(
                    [sys.executable, __file__, "--config", config, "--case", case, *overrides],
                    capture_output=True, text=True,
                )  # fmt: skip
                if proc.returncode != 0:
                    sys.exit(f"{config} {case}: {proc.stderr.strip().splitlines()[-1]}")
                results[case] = r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"{config}\t{case}\t{r['seconds']:.2f}\t{r['rows']}\t{r['rss_load_mib']:.0f}\t"
                      f"{r['rss_read_mib']:.0f}", flush=True)  # fmt: skip
            if results["every_start"]["tokens"] != results["warm"]["tokens"]:
                sys.exit(f"{config}: the cached rows hold other tokens than the laid-out rows")
            before, warm = results["every_start"], results["warm"]
            print(f"{config}\tratio every_start/warm\t{before['seconds'] / warm['seconds']:.1f}x\t\t"
                  f"{before['rss_load_mib'] / max(warm['rss_load_mib'], 1):.1f}x\t"
                  f"{before['rss_read_mib'] / max(warm['rss_read_mib'], 1):.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()

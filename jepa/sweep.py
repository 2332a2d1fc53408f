"""A grid of training runs (config overrides x seeds) and the table a researcher reads.

    python -m jepa.sweep SPEC.yaml [--protocol NAME] [--cells A,B] [--seeds S,T] [--jobs N] [--dry-run]

SPEC.yaml::

    config: gpt2_reversal_tiny.yaml          # the base config: a name in configs/ or a path
    overrides: [schedule.max_steps=200]      # for every run (optional)
    seeds: [82, 23, 37, 84, 4]               # the LLM-JEPA paper's
    cells:                                   # cell name -> its overrides; the first is the baseline
      regular: [jepa.lambda=0]
      jepa: [jepa.lambda=1]
    baseline: regular                        # optional: another cell to compare with
    comparisons: ["jepa - regular"]          # optional: "cell - other" pairs (default: every cell - baseline)
    metrics: [eval/test/mrr, eval/atomic/mrr]  # final-evaluation keys of metrics.jsonl to tabulate
    examples: synth                          # optional: a generation task whose per-example results are paired
    runs_dir: runs/sweep_reversal            # optional; default runs/sweep_<SPEC file stem>
    protocols:                               # optional: named overrides on top of all the above, for another
      gpu: [schedule.epochs=4]               # machine (--protocol gpu: runs in RUNS_DIR_gpu)

Each run is `jepa train --config CONFIG OVERRIDES CELL run.seed=S run.name=CELL_sS run.dir=RUNS_DIR` (`python -m
jepa train`, this interpreter's package, so no checkout is needed; a bare SPEC name resolves in
./experiments/sweeps, then in the specs the package ships). A run that
finished (its `sweep_done.json` holds the final evaluation, written after train.py succeeded with the same
command) is skipped; an interrupted one resumes from its checkpoint (train.py's checkpoint.resume=auto).

Results in RUNS_DIR: `results.json` (every run's final metrics, and per cell and metric mean, sample std and n)
and `results.md`: mean ± std per cell, and for every comparison (default: each cell against the baseline) the
paired difference over the seeds both have, with its 95 % t interval and the two-sided p-value of the paired
t-test (the runs of one seed share the data order and initialisation, so the difference is taken seed by seed),
`curves.png` (every run's curves) and `cells.png` (each metric's final values per cell, a dot per seed).
With `examples: TASK`, the runs are also paired example by example on the task's criterion (exact match for
NL-RX): McNemar's exact test per seed and pooled over the seeds (the discordant pairs summed; the pooled test
treats every (seed, example) pair as independent, which the shared test examples make optimistic).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jepa.eval.hooks import examples_path
from jepa.eval.report import json_safe
from jepa.plot import plot_cells, plot_runs
from jepa.train.config import load_config

SWEEP_DIRS = (  # where a bare spec name is looked for: ./experiments/sweeps, the package's, the checkout's
    Path("experiments") / "sweeps",
    Path(__file__).resolve().parent / "sweeps",
    Path(__file__).resolve().parent.parent / "experiments" / "sweeps",
)


def resolve_spec_path(name: str | Path) -> Path:
    """A path as given if it exists, else NAME (with `.yaml` appended when missing) in the first of SWEEP_DIRS."""
    path = Path(name)
    if path.is_file():
        return path
    for folder in SWEEP_DIRS:
        for candidate in (folder / path, folder / f"{path}.yaml"):
            if candidate.is_file():
                return candidate
    return path  # read() names it in its one-line error


@dataclass
class SweepSpec:
    config: str
    seeds: list[int]
    cells: dict[str, list[str]]
    metrics: list[str]
    overrides: list[str] = field(default_factory=list)
    baseline: str = ""
    runs_dir: str = ""
    protocols: dict[str, list[str]] = field(default_factory=dict)
    comparisons: list[str] = field(default_factory=list)
    examples: str = ""

    def pairs(self) -> list[tuple[str, str]]:
        """(cell, other) of every comparison whose two cells are in the (selected) grid."""
        if not self.comparisons:
            return [(cell, self.baseline) for cell in self.cells if cell != self.baseline]
        pairs = [tuple(part.strip() for part in text.split(" - ")) for text in self.comparisons]
        return [(a, b) for a, b in pairs if a in self.cells and b in self.cells]

    @classmethod
    def read(cls, path: str | Path, protocol: str | None = None) -> SweepSpec:
        """The spec in `path` (with `protocol`'s overrides appended and `_PROTOCOL` after its runs_dir); ValueError
        naming the file and key when something is missing or mistyped."""
        path = resolve_spec_path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read the sweep spec ({' '.join(str(exc).split())[:160]})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a sweep spec is a mapping (config, seeds, cells, metrics)")
        unknown = sorted(set(raw) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise ValueError(f"{path}: unknown key {unknown[0]!r}")
        checks: dict[str, Callable[[Any], Any]] = {
            "config": lambda v: isinstance(v, str) and v,
            "seeds": lambda v: isinstance(v, list) and v and all(isinstance(s, int) for s in v),
            "cells": lambda v: isinstance(v, dict) and v and all(
                isinstance(o, list) and all(isinstance(x, str) for x in o) for o in v.values()),
            "metrics": lambda v: isinstance(v, list) and v and all(isinstance(m, str) for m in v),
            "protocols": lambda v: isinstance(v, dict) and all(
                isinstance(o, list) and all(isinstance(x, str) for x in o) for o in v.values()),
            "comparisons": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
            "examples": lambda v: isinstance(v, str),
        }  # fmt: skip
        raw.setdefault("protocols", {})
        raw.setdefault("comparisons", [])
        raw.setdefault("examples", "")
        for key, ok in checks.items():
            if key not in raw or not ok(raw[key]):
                raise ValueError(f"{path}: {key}: missing or not the right type (see python -m jepa.sweep --help)")
        spec = cls(**raw)
        spec.baseline = spec.baseline or next(iter(spec.cells))
        if spec.baseline not in spec.cells:
            raise ValueError(f"{path}: baseline {spec.baseline!r} is not one of the cells ({', '.join(spec.cells)})")
        for text in spec.comparisons:
            parts = [part.strip() for part in text.split(" - ")]
            if len(parts) != 2 or not all(part in spec.cells for part in parts):
                raise ValueError(f"{path}: comparisons: {text!r} is not 'cell - other' with two of the cells "
                                 f"({', '.join(spec.cells)})")  # fmt: skip
        spec.runs_dir = spec.runs_dir or f"runs/sweep_{path.stem}"
        if protocol is not None:
            if protocol not in spec.protocols:
                known = ", ".join(spec.protocols) or "none"
                raise ValueError(f"{path}: protocols: no protocol {protocol!r} (the spec has: {known})")
            spec.overrides = [*spec.overrides, *spec.protocols[protocol]]
            spec.runs_dir = f"{spec.runs_dir}_{protocol}"
        return spec

    def select_cells(self, names: list[str]) -> None:
        """Keep only the cells `names` and the baseline (a grid run in parts: a finished part is skipped later)."""
        unknown = [n for n in names if n not in self.cells]
        if unknown:
            raise ValueError(f"--cells: no cell {unknown[0]!r} (the spec has: {', '.join(self.cells)})")
        self.cells = {n: o for n, o in self.cells.items() if n in names or n == self.baseline}

    def select_seeds(self, seeds: list[int]) -> None:
        """Keep only `seeds` (a grid run in parts, seed by seed)."""
        unknown = [s for s in seeds if s not in self.seeds]
        if unknown:
            raise ValueError(f"--seeds: no seed {unknown[0]} (the spec has: {', '.join(map(str, self.seeds))})")
        self.seeds = [s for s in self.seeds if s in seeds]

    def runs(self) -> list[tuple[str, int, list[str]]]:
        """(cell, seed, train.py arguments) of every run, seed-major so early results cover every cell."""
        out = []
        for seed in self.seeds:
            for cell, cell_overrides in self.cells.items():
                args = ["--config", self.config, *self.overrides, *cell_overrides, f"run.seed={seed}",
                        f"run.name={cell}_s{seed}", f"run.dir={self.runs_dir}"]  # fmt: skip
                out.append((cell, seed, args))
        return out


def final_evaluation(run_dir: Path) -> dict[str, Any]:
    """The last `kind: eval` line of a run's metrics.jsonl ({} when it has none)."""
    path, last = run_dir / "metrics.jsonl", {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("kind") == "eval":
            last = record
    return last


def run_one(spec: SweepSpec, cell: str, seed: int, args: list[str], *, quiet: bool) -> dict[str, Any]:
    """Train one run (or skip it when done with the same command); returns its final evaluation."""
    run_dir = Path(spec.runs_dir) / f"{cell}_s{seed}"
    done = run_dir / "sweep_done.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved.get("args") == args:
            return saved["evaluation"]
    command = [sys.executable, "-m", "jepa", "train", *args, "--quiet"]  # the installed package's, no checkout needed
    result = subprocess.run(command, capture_output=quiet, text=True)
    if result.returncode != 0:
        tail = (result.stderr or "").strip().splitlines()[-1:] if quiet else []
        raise RuntimeError(f"run {cell}_s{seed} failed (exit {result.returncode}){': ' + tail[0] if tail else ''}")
    evaluation = final_evaluation(run_dir)
    done.write_text(json.dumps({"args": args, "evaluation": evaluation}, indent=2) + "\n")
    return evaluation


def t_two_sided_p(t: float, df: int) -> float:
    """Two-sided p-value of Student's t with `df` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    if math.isnan(t) or df < 1:
        return float("nan")
    if math.isinf(t):
        return 0.0
    return regularized_beta(df / (df + t * t), df / 2.0, 0.5)


def t_quantile_975(df: int) -> float:
    """t such that the two-sided p-value is 0.05 (bisection on t_two_sided_p)."""
    low, high = 0.0, 1000.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if t_two_sided_p(mid, df) > 0.05 else (low, mid)
    return (low + high) / 2


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) by its continued fraction (modified Lentz), accurate to ~1e-12 here."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below this point: use the symmetry
        return 1.0 - regularized_beta(1.0 - x, b, a)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            numerator = 1.0
        elif i % 2 == 0:
            numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + numerator / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-14:
            break
    return front * (f - 1.0)


def paired_difference(cell: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    """cell - baseline over the seeds both have: mean, 95 % t interval, paired t-test p-value, n."""
    seeds = sorted(set(cell) & set(baseline))
    diffs = [cell[s] - baseline[s] for s in seeds]
    n = len(diffs)
    if n < 2:
        return {"mean": diffs[0] if diffs else float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                "p": float("nan"), "n": n}  # fmt: skip
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    se = sd / math.sqrt(n)
    t = mean / se if se > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    half = t_quantile_975(n - 1) * se
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "p": t_two_sided_p(t, n - 1), "n": n}


def summarise(spec: SweepSpec, evaluations: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """Per cell and metric: the values by seed, mean, sample std, n."""
    table: dict[str, Any] = {}
    for cell in spec.cells:
        table[cell] = {}
        for metric in spec.metrics:
            by_seed = {seed: evaluations[(cell, seed)][metric] for seed in spec.seeds
                       if isinstance(evaluations.get((cell, seed), {}).get(metric), (int, float))}  # fmt: skip
            values = list(by_seed.values())
            table[cell][metric] = {
                "by_seed": by_seed,
                "mean": statistics.fmean(values) if values else float("nan"),
                "std": statistics.stdev(values) if len(values) > 1 else float("nan"),
                "n": len(values),
            }
    return table


def compare(spec: SweepSpec, table: dict[str, Any]) -> dict[str, Any]:
    """Per comparison ("cell - other") and metric: the paired difference over the seeds both have."""
    return {
        f"{a} - {b}": {metric: paired_difference(table[a][metric]["by_seed"], table[b][metric]["by_seed"])
                       for metric in spec.metrics}
        for a, b in spec.pairs()
    }  # fmt: skip


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of b and c discordant pairs (binomial(b + c, 1/2)); 1.0 when b + c = 0."""
    n = b + c
    if n == 0:
        return 1.0
    # exact integers divided once: 2.0**n overflows a float past n = 1023 (five seeds pool more pairs than that)
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n)


def read_examples(path: Path) -> dict[int, bool]:
    """index -> correct of a run's per-example results (`jepa.eval.hooks.write_examples`)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        out[record["index"]] = bool(record["correct"])
    return out


def paired_examples(spec: SweepSpec, evaluations: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """Per comparison (cell - other): per seed and pooled, the examples both runs scored, the discordant counts
    (b: only the cell right, c: only the other right), the difference in accuracy (b - c) / n and McNemar's exact
    p-value. A run without per-example results is left out (its seed is missing)."""

    def correct(cell: str, seed: int) -> dict[int, bool] | None:
        step = evaluations.get((cell, seed), {}).get("step")
        if step is None:
            return None
        path = examples_path(Path(spec.runs_dir) / f"{cell}_s{seed}", spec.examples, step)
        return read_examples(path) if path.is_file() else None

    out = {}
    for a, b in spec.pairs():
        per_seed: dict[int, dict[str, float]] = {}
        total: dict[str, float] = {"n": 0, "b": 0, "c": 0}
        for seed in spec.seeds:
            ra, rb = correct(a, seed), correct(b, seed)
            if ra is None or rb is None:
                continue
            common = sorted(set(ra) & set(rb))
            only_a = sum(ra[i] and not rb[i] for i in common)
            only_b = sum(rb[i] and not ra[i] for i in common)
            per_seed[seed] = {"n": len(common), "b": only_a, "c": only_b}
            for key, value in per_seed[seed].items():
                total[key] += value
        for counts in [*per_seed.values(), total]:
            counts["difference"] = (counts["b"] - counts["c"]) / counts["n"] if counts["n"] else float("nan")
            counts["p"] = mcnemar_p(int(counts["b"]), int(counts["c"]))
        out[f"{a} - {b}"] = {"by_seed": per_seed, "pooled": total}
    return out


def markdown(
    spec: SweepSpec, table: dict[str, Any], comparisons: dict[str, Any], examples: dict[str, Any] | None = None
) -> str:
    """mean ± std (n) per cell and metric; then the paired differences of the comparisons; then McNemar."""
    head = "| cell | " + " | ".join(spec.metrics) + " |\n|---|" + "---|" * len(spec.metrics) + "\n"

    def cell_text(t: dict[str, Any]) -> str:
        return f"{t['mean']:.4g} ± {t['std']:.2g} (n={t['n']})"

    rows = "".join(f"| {cell} | " + " | ".join(cell_text(table[cell][m]) for m in spec.metrics) + " |\n"
                   for cell in spec.cells)  # fmt: skip
    diffs = ""
    for name, by_metric in comparisons.items():
        for metric in spec.metrics:
            d = by_metric[metric]
            diffs += (f"| {name.replace(' - ', ' − ')} | {metric} | {d['mean']:+.4g} | [{d['ci_low']:+.4g}, "
                      f"{d['ci_high']:+.4g}] | {d['p']:.3g} | {d['n']} |\n")  # fmt: skip
    text = (
        head + rows + "\nPaired over seeds (same seed = same data order and initialisation); 95 % t interval, "
        "two-sided paired t-test:\n\n| difference | metric | mean | 95 % CI | p | seeds |\n|---|---|---|---|---|---|\n"
        + diffs
    )
    if examples:
        text += (f"\nPaired by example on {spec.examples} (b: only the first cell right, c: only the second; "
                 "McNemar's exact test; pooled = all seeds' pairs):\n\n| difference | seed | examples | b | c | "
                 "accuracy difference | p |\n|---|---|---|---|---|---|---|\n")  # fmt: skip
        for name, result in examples.items():
            for seed, counts in [*result["by_seed"].items(), ("pooled", result["pooled"])]:
                text += (f"| {name.replace(' - ', ' − ')} | {seed} | {counts['n']} | {counts['b']} | {counts['c']} | "
                         f"{counts['difference']:+.4g} | {counts['p']:.3g} |\n")  # fmt: skip
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jepa.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", help="the sweep spec (YAML)")
    parser.add_argument("--protocol", help="one of the spec's protocols (its overrides on top of the spec's)")
    parser.add_argument("--cells", help="comma-separated cells to run and tabulate (the baseline is always kept)")
    parser.add_argument("--seeds", help="comma-separated seeds to run and tabulate (default: the spec's)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--dry-run", action="store_true", help="print the train.py commands and stop")
    parser.add_argument("--verbose", action="store_true", help="the runs' own output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = SweepSpec.read(args.spec, args.protocol)
        if args.cells:
            spec.select_cells(args.cells.split(","))
        if args.seeds:
            try:
                seeds = [int(s) for s in args.seeds.split(",")]
            except ValueError:
                raise ValueError(f"--seeds: {args.seeds!r} is not a comma-separated list of integers") from None
            spec.select_seeds(seeds)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = spec.runs()
    if args.dry_run:
        for _, _, run_args in runs:
            print("jepa train " + " ".join(run_args))
        return 0
    for cell, seed, run_args in runs:  # every run's config, checked before the first run trains
        try:
            load_config(run_args[1], [a for a in run_args[2:] if not a.startswith("--")])
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: run {cell}_s{seed}: {exc}", file=sys.stderr)
            return 2
    Path(spec.runs_dir).mkdir(parents=True, exist_ok=True)
    try:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = {(c, s): pool.submit(run_one, spec, c, s, a, quiet=not args.verbose) for c, s, a in runs}
            evaluations = {key: future.result() for key, future in futures.items()}
    except RuntimeError as exc:
        print(f"error: {exc}; the finished runs are kept, the same command goes on", file=sys.stderr)
        return 1
    table = summarise(spec, evaluations)
    comparisons = compare(spec, table)
    examples = paired_examples(spec, evaluations) if spec.examples else None
    for metric in spec.metrics:
        if not any(table[cell][metric]["n"] for cell in spec.cells):
            print(f"warning: metrics: {metric} was logged by no run (a typo, or an evaluation the runs do not "
                  "make); its column is nan", file=sys.stderr)  # fmt: skip
    out = Path(spec.runs_dir)
    results = json_safe({"spec": spec.__dict__, "cells": table, "comparisons": comparisons, "examples": examples})
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(spec, table, comparisons, examples)
    (out / "results.md").write_text(text)
    print(text)
    try:
        plot_runs([out / f"{c}_s{s}" for c, s, _ in runs], out / "curves.png", eval_patterns=spec.metrics)
        plot_cells(table, spec.metrics, out / "cells.png")
    except ValueError as exc:  # matplotlib is optional: the table is the result
        print(f"no curves.png / cells.png: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

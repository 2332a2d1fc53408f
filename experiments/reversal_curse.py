"""The reversal-curse table of the README: lambda=0 (plain LM) vs lambda=1 cosine vs lambda=1 InfoNCE, 3 seeds.

Runs `train.py --config gpt2_reversal_tiny.yaml` for each (setting, seed), reads the final evaluation line of
each run's metrics.jsonl and prints a markdown table (mean ± std over seeds) of forward (atomic) and reverse
(test) MRR and joint accuracy, then plots the runs. Run: `python experiments/reversal_curse.py` (~7 min on a
2-core CPU; `--jobs 2` runs two trainings at a time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DATA = ["--preset", "tiny"]  # -> data/reversal_tiny
SETTINGS = {
    "lm only (lambda=0)": ["jepa.lambda=0"],
    "JEPA cosine (lambda=1)": ["jepa.lambda=1", "jepa.loss=cosine"],
    "JEPA InfoNCE (lambda=1)": ["jepa.lambda=1", "jepa.loss=infonce"],
}
SEEDS = (1, 2, 3)
COLUMNS = ["atomic/mrr", "test/mrr", "atomic/joint_accuracy", "test/joint_accuracy", "views/cosine"]


def run_name(setting: str, seed: int) -> str:
    tag = setting.split(" (")[0].lower().replace(" ", "_")
    return f"reversal_{tag}_s{seed}"


def train(setting: str, seed: int) -> dict:
    name = run_name(setting, seed)
    cmd = [
        sys.executable,
        "train.py",
        "--config",
        "gpt2_reversal_tiny.yaml",
        f"run.name={name}",
        f"run.seed={seed}",
        "checkpoint.resume=none",
        *SETTINGS[setting],
        "--quiet",
    ]
    subprocess.run(cmd, check=True)
    evals = [json.loads(line) for line in open(Path("runs") / name / "metrics.jsonl") if '"kind": "eval"' in line]
    return evals[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    subprocess.run([sys.executable, "prepare.py", "reversal", *DATA], check=True)
    jobs = [(s, seed) for s in SETTINGS for seed in SEEDS]
    with ThreadPoolExecutor(args.jobs) as pool:
        finals = dict(zip(jobs, pool.map(lambda job: train(*job), jobs)))
    print("\n| setting | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for setting in SETTINGS:
        cells = []
        for col in COLUMNS:
            values = [finals[(setting, seed)].get(f"eval/{col}") for seed in SEEDS]
            values = [v for v in values if v is not None]
            cells.append(f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else "–")
        print(f"| {setting} | " + " | ".join(cells) + " |")
    runs = [str(Path("runs") / run_name(s, 1)) for s in SETTINGS]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jepa.plot",
            *runs,
            "--out",
            "runs/reversal_curse.png",
            "--eval",
            "eval/atomic/mrr",
            "eval/test/mrr",
        ],
        check=False,
    )


if __name__ == "__main__":
    main()

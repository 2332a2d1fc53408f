"""Step-JEPA vs regular fine-tuning on the real SmolLM2-135M-Instruct (LoRA), same GSM8K subset and budget.

Trains `configs/smollm2_step.yaml` twice (mode regular with lambda 0, and mode step with lambda 0.1), then for the
base model and both runs: GSM8K accuracy by greedy generation on the same first N test problems, and the view
diagnostics (cosine between prediction and target views, effective ranks) on held-out test records. Prints a
markdown table. Defaults follow issue 5 (200 problems, 512 new tokens): about 2 x 3 min of training and
~1 h of generation per model on a 2-core CPU; `--limit` / `--max-new-tokens` give a cheaper run (say so when
you quote it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BASE = "data/models/smollm2-135m-instruct"
TEST = "data/gsm8k_steps/test.jsonl"
RUNS = {
    "regular (lambda=0)": ["layout.mode=regular", "jepa.lambda=0"],
    "step-JEPA (lambda=0.1)": ["layout.mode=step", "jepa.lambda=0.1"],
}


def evaluate(model: str, out: Path, limit: int, max_new_tokens: int, batch_size: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    common = ["--model", model, "--data", TEST, "--limit", str(limit), "--out", str(out)]
    for command, extra in (
        ("gsm8k", ["--max-new-tokens", str(max_new_tokens), "--batch-size", str(batch_size)]),
        ("views", ["--mode", "step"]),
    ):
        subprocess.run(
            [sys.executable, "-m", "jepa.eval", command, *common, *extra], check=True, stdout=subprocess.DEVNULL
        )
    summaries = [json.loads((out / f"{kind}_summary.json").read_text()) for kind in ("gsm8k", "views")]
    return {**summaries[0], **summaries[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--train-limit", type=int, default=64, help="GSM8K training examples (data.limit)")
    ap.add_argument("--skip-train", action="store_true", help="evaluate the runs already in runs/")
    args = ap.parse_args()
    models = {"base (no fine-tuning)": BASE}
    for label, overrides in RUNS.items():
        name = "smollm2_" + label.split(" ")[0].replace("-", "_")
        if not args.skip_train:
            subprocess.run(
                [
                    sys.executable,
                    "train.py",
                    "--config",
                    "smollm2_step.yaml",
                    f"run.name={name}",
                    "checkpoint.resume=none",
                    f"data.limit={args.train_limit}",
                    *overrides,
                    "--quiet",
                ],
                check=True,
            )
        models[label] = f"runs/{name}/final"
    rows = {
        label: evaluate(
            path, Path("runs/eval_smollm2") / label.split(" ")[0], args.limit, args.max_new_tokens, args.batch_size
        )
        for label, path in models.items()
    }
    print(
        f"\nGSM8K test, first {args.limit} problems, greedy, {args.max_new_tokens} new tokens; "
        f"fine-tuning on {args.train_limit} training examples"
    )
    print("| model | accuracy | unparseable | mean tokens | view cosine | erank pred | erank target |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        print(
            f"| {label} | {r['accuracy']:.3f} | {r['unparseable']} | {r['mean_tokens']:.0f} | {r['cosine']:.3f} | "
            f"{r['erank_pred']:.1f} | {r['erank_target']:.1f} |"
        )


if __name__ == "__main__":
    main()

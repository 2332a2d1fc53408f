"""`make gpu-stage`: the folder a GPU check carries to a machine that has nothing of this project's data.

    python bench/gpu_stage.py [--out gpu_stage] [--chat-data data/gsm8k_steps/train.jsonl]
                              [--tokenizer data/models/smollm2-135m-instruct] [--rows 256]

Writes (git-ignored, at most 8 MiB; refused otherwise):
    tokenizer/        SmolLM2's tokenizer.json, tokenizer_config.json, config.json: all the CUDA tests and the GPU
                      benchmarks read of it (~3.5 MB; no weights: the benchmarks build random ones)
    gsm8k_steps.jsonl the first --rows chat records of --chat-data (the Step-JEPA / LLM-JEPA benchmark rows)
    reversal_small/   the generated small reversal preset (the GPT-2 reversal benchmark's data)
Then, on the GPU machine, from the repository root (the command docs/testing.md shows):
    JEPA_TOKENIZER_DIR=gpu_stage/tokenizer python3 bench/gpu_check.py --chat-data gpu_stage/gsm8k_steps.jsonl \\
        --tokenizer gpu_stage/tokenizer --reversal-data gpu_stage/reversal_small --out gpu_check.json
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

LIMIT_BYTES = 8 * 2**20
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json")


def stage(out: Path, chat_data: Path, tokenizer: Path, rows: int) -> int:
    """Write the folder; returns its size in bytes. ValueError naming what is missing or too large."""
    missing = [str(p) for p in (chat_data, *(tokenizer / f for f in TOKENIZER_FILES)) if not p.is_file()]
    if missing:
        raise ValueError(f"{missing[0]} is missing (make prepare, or python prepare.py gsm8k / smollm2)")
    shutil.rmtree(out, ignore_errors=True)
    (out / "tokenizer").mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer / name, out / "tokenizer" / name)
    with chat_data.open(encoding="utf-8") as src, (out / "gsm8k_steps.jsonl").open("w", encoding="utf-8") as dst:
        for n, line in enumerate(src):
            if n >= rows:
                break
            dst.write(line)
    repo = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, str(repo / "prepare.py"), "reversal", "--preset", "small", "--out",
                    str(out / "reversal_small")], check=True, capture_output=True)  # fmt: skip
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    if size > LIMIT_BYTES:
        raise ValueError(f"{out}: {size / 2**20:.1f} MiB, more than the 8 MiB a GPU call carries; use fewer --rows")
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_stage")
    parser.add_argument("--chat-data", default="data/gsm8k_steps/train.jsonl")
    parser.add_argument("--tokenizer", default="data/models/smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=256)
    args = parser.parse_args()
    try:
        size = stage(Path(args.out), Path(args.chat_data), Path(args.tokenizer), args.rows)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    print(f"{args.out}: {size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()

"""`make gpu-check`: the CUDA tests and the GPU benchmarks in one command, one JSON file of figures.

    python bench/gpu_check.py [--out gpu_check.json] [--steps 4] [--skip-tests]

1. `pytest -m cuda tests` (skipped on a machine without CUDA): passed / failed / skipped counts.
2. The training step the loop runs (`build` + `train_step`, each setting in its own process, bench/
   train_throughput.py's `run_once`): steps/s, tokens/s, TFLOP/s, MFU and peak memory for
   * Step-JEPA at the seed's shapes on a Llama-3.2-1B-shaped model with random weights (no checkpoint needed:
     `model.arch` is its config.json): LoRA r=16, bf16, batch 4 x accumulation 4, max length 1024; sdpa vs
     flex attention, padded vs packed rows (data.pack_length 1024), flex packed compiled (model.compile);
   * LLM-JEPA (jepa mode) at the paper's shapes on the same model: full FT, pure bf16, batch 8, max length 512,
     K=4, gradient checkpointing, with its accumulation cut to 2 (a step of 128 rows says nothing more);
   * Step-JEPA packed under distributed.strategy=fsdp in one process (the FSDP2 CUDA path vs ddp);
   * the GPT-2 reversal paper config (gpt2_reversal.yaml): steps/s, padded vs packed.
   The chat rows are GSM8K (`data/gsm8k_steps/train.jsonl`, `python prepare.py gsm8k`) tokenized with the
   SmolLM2 tokenizer (`data/models/smollm2-135m-instruct`, its tokenizer files are enough): the row lengths of
   Llama-3's tokenizer within a few per cent, and nothing to download. The reversal data is generated
   (`python prepare.py reversal`).
3. Ratios: packed / padded and flex / sdpa tokens/s.

Sized for under 20 minutes on one H100. `--tiny` runs the same code at toy shapes on any device (the CPU test
of this script).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import run_once  # noqa: E402

# Llama-3.2-1B's config.json (the architecture only: the weights are random).
LLAMA_1B = {
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "tie_word_embeddings": True,
}
TINY_LLAMA = {**LLAMA_1B, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 49152}  # fmt: skip
TINY_GPT2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}


def flow(value) -> str:
    """A value as a one-line YAML override."""
    return json.dumps(value)


def settings(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """(name, config, overrides) of every measured setting."""
    cuda = torch.cuda.is_available() and not args.cpu
    chat = [
        "model.path=null",
        f"model.arch={flow(TINY_LLAMA if args.tiny else LLAMA_1B)}",
        f"model.tokenizer={args.tokenizer}",
        f"data.train={args.chat_data}",
        "data.limit=null",
        "run.threads=null",
        f"run.device={'cuda' if cuda else 'cpu'}",
    ]
    step = ["schedule.batch_size=2", "schedule.grad_accum=2", "layout.max_length=256"] if args.tiny else []
    jepa = ["schedule.batch_size=2", "layout.max_length=256"] if args.tiny else []
    attentions = ("sdpa", "flex") if cuda else ("sdpa",)  # flex has no CPU backward
    out = []
    for attention in attentions:
        for pack in (0, 1024):
            name = f"step {attention} {'packed' if pack else 'padded'}"
            overrides = [*chat, *step, f"model.attention={attention}", f"data.pack_length={pack}"]
            out.append((name, "llama1b_step.yaml", overrides))
    if cuda:
        out.append(("step flex packed compiled", "llama1b_step.yaml",
                    [*chat, "model.attention=flex", "data.pack_length=1024", "model.compile=true"]))  # fmt: skip
    # FSDP2 on one process (bf16 mixed-precision policy): the CUDA code path, and its cost against ddp.
    out.append(("step sdpa packed fsdp", "llama1b_step.yaml",
                [*chat, *step, "data.pack_length=1024", "distributed.strategy=fsdp"]))  # fmt: skip
    for pack in (0, 1024):
        name = f"jepa sdpa {'packed' if pack else 'padded'}"
        out.append((name, "llama1b_jepa.yaml", [*chat, *jepa, "schedule.grad_accum=2", f"data.pack_length={pack}"]))
    reversal = [f"data.train={args.reversal_data}", "run.threads=null", f"run.device={'cuda' if cuda else 'cpu'}"]
    if args.tiny:
        reversal += [f"model.arch={flow(TINY_GPT2)}", "schedule.batch_size=16"]
    for pack in (0, 64):
        name = f"reversal {'packed' if pack else 'padded'}"
        out.append((name, "gpt2_reversal.yaml", [*reversal, f"data.pack_length={pack}"]))
    return out


def cuda_tests(repo: Path) -> dict:
    """`pytest -m cuda tests`: counts from its summary line, and the tail of its output when something failed."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests"], cwd=repo,
                          capture_output=True, text=True)  # fmt: skip
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {key: int(n) for n, key in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", summary)}
    result = {"exit": proc.returncode, "summary": summary, "seconds": round(time.perf_counter() - started, 1)}
    result.update(counts)
    if proc.returncode not in (0, 5):  # 5: nothing collected
        result["output_tail"] = (proc.stdout + proc.stderr)[-4000:]
    return result


def ratio(runs: dict, a: str, b: str, key: str = "tokens_s") -> float | None:
    if a in runs and b in runs and key in runs[a] and key in runs[b]:
        return round(runs[a][key] / runs[b][key], 3)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per setting (after 2 warm-up)")
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmarks")
    parser.add_argument("--only", default=None, help="a regular expression: measure only the settings it matches")
    parser.add_argument("--tiny", action="store_true", help="toy shapes: checks this script, measures nothing")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where CUDA is available")
    parser.add_argument("--chat-data", default="data/gsm8k_steps/train.jsonl")
    parser.add_argument("--tokenizer", default="data/models/smollm2-135m-instruct")
    parser.add_argument("--reversal-data", default="data/reversal")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parent.parent
    for path in (args.chat_data, args.tokenizer, args.reversal_data):
        if not Path(path).exists():
            sys.exit(f"error: {path} is missing (make prepare, or python prepare.py gsm8k / smollm2 / reversal)")
    report: dict = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.cpu else "cpu",
        "torch": torch.__version__,
        "tests": None if args.skip_tests else cuda_tests(repo),
        "runs": {},
    }
    for name, config, overrides in settings(args):
        if args.only and not re.search(args.only, name):
            continue
        started = time.perf_counter()
        result = run_once(config, overrides, warmup=2, steps=args.steps)
        result["seconds"] = round(time.perf_counter() - started, 1)
        report["runs"][name] = result
        shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
        print(f"{name}: {shown}", flush=True)
    runs = report["runs"]
    report["ratios"] = {
        "step packed / padded tokens/s (sdpa)": ratio(runs, "step sdpa packed", "step sdpa padded"),
        "step packed / padded tokens/s (flex)": ratio(runs, "step flex packed", "step flex padded"),
        "step flex / sdpa tokens/s (packed)": ratio(runs, "step flex packed", "step sdpa packed"),
        "step compiled / eager tokens/s (flex packed)": ratio(runs, "step flex packed compiled", "step flex packed"),
        "jepa packed / padded tokens/s": ratio(runs, "jepa sdpa packed", "jepa sdpa padded"),
        "step fsdp / ddp tokens/s (one process)": ratio(runs, "step sdpa packed fsdp", "step sdpa packed"),
        "reversal packed / padded steps/s": ratio(runs, "reversal packed", "reversal padded", "steps_s"),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    failed = [n for n, r in runs.items() if "error" in r]
    if failed or (report["tests"] and report["tests"]["exit"] not in (0, 5)):
        sys.exit(f"error: {len(failed)} benchmark(s) failed ({', '.join(failed)}); tests: "
                 f"{report['tests'] and report['tests']['summary']}")  # fmt: skip


if __name__ == "__main__":
    main()

"""`make gpu-check`: the CUDA tests and the GPU benchmarks in one command, one JSON file of figures.

    python bench/gpu_check.py [--out gpu_check.json] [--plan] [--full] [--steps 4] [--skip-tests]

The default plan fits one short GPU allocation: stages in order, each under its own timeout (their sum is at most
8 minutes), the JSON rewritten after every stage and every measured setting (a killed run keeps what finished),
a short table printed last. `--plan` prints the plan, one stage a line with its timeout in seconds, the total
last. `--full` runs every setting below without stage budgets (~20 minutes on one H100).

1. probe: torch / CUDA / cuDNN versions, the SDPA backends enabled, FlexAttention under bf16 autocast.
2. `pytest -m cuda tests` (skipped on a machine without CUDA), 60 s per test: passed / failed / skipped counts.
3. The training step the loop runs (`build` + `train_step`, each setting in its own process, bench/
   train_throughput.py's `run_once`): steps/s, tokens/s, TFLOP/s, MFU and peak memory for
   * Step-JEPA at the seed's shapes on a Llama-3.2-1B-shaped model with random weights drawn on the GPU (no
     checkpoint needed: `model.arch` is its config.json; `model.init_on=device`): LoRA r=16, bf16, 16 rows a step,
     max length 1024. "step recipe": configs/llama1b_step.yaml as shipped (one micro-batch packed into rows of
     up to 4096 tokens, compiled blocks, FlexAttention); "step seed padded": the seed's batch 4 x accumulation 4,
     padded, SDPA, eager (the baseline); the recipe eager with flex and with sdpa (what compile and flex add);
   * LLM-JEPA (jepa mode) at the paper's shapes on the same model: full FT, pure bf16, batch 8, max length 512,
     K=4, gradient checkpointing, with its accumulation cut to 2 (a step of 128 rows says nothing more);
   * Step-JEPA packed under distributed.strategy=fsdp in one process (the FSDP2 CUDA path vs ddp);
   * the GPT-2 reversal paper config (gpt2_reversal.yaml): steps/s, padded vs packed.
   The chat rows are GSM8K (`data/gsm8k_steps/train.jsonl`, `python prepare.py gsm8k`) tokenized with the
   SmolLM2 tokenizer (`data/models/smollm2-135m-instruct`, its tokenizer files are enough): the row lengths of
   Llama-3's tokenizer within a few per cent, and nothing to download. The reversal data is generated
   (`python prepare.py reversal`).
4. Ratios (recipe / seed padded, compiled / eager, flex / sdpa, packed / padded tokens/s) and the recipe's goals
   on one H100: MFU >= 40 % in the 6N convention (`mfu_6n`: 6 x parameters x tokens, although LoRA's frozen
   weights get no weight gradient; the library's own `mfu` counts those 4N) and >= 3x the seed padded tokens/s.

`--tiny` runs the same code at toy shapes on any device (the CPU test of this script).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    """(name, config, overrides) of every measured setting. "step recipe" is configs/llama1b_step.yaml as shipped
    (the GPU recipe: the seed's 16 rows as one micro-batch packed into rows of up to 4096 tokens, compiled blocks,
    FlexAttention); "step seed padded" is the seed's own layout run eagerly (batch 4 x accumulation 4, padded
    rows, SDPA): the baseline of the recipe's goal (>= 3x its tokens/s, >= 40 % MFU in the 6N convention)."""
    cuda = torch.cuda.is_available() and not args.cpu
    device = "cuda" if cuda else "cpu"
    chat = [
        "model.path=null",
        f"model.arch={flow(TINY_LLAMA if args.tiny else LLAMA_1B)}",
        "model.init_on=device",  # random weights drawn on the GPU: seconds, not a minute per setting on the host
        f"model.tokenizer={args.tokenizer}",
        f"data.train={args.chat_data}",
        "data.limit=null",
        "run.threads=null",
        f"run.device={device}",
    ]
    tiny = ["layout.max_length=256", "schedule.batch_size=4", "data.pack_length=1024"] if args.tiny else []
    batch, accumulation = (2, 2) if args.tiny else (4, 4)  # the seed's 16 rows a step (4 at toy shapes)
    seed = [f"schedule.batch_size={batch}", f"schedule.grad_accum={accumulation}", "data.pack_length=0",
            "model.attention=sdpa", "model.compile=false"]  # fmt: skip
    eager = ["model.compile=false"]
    out = []
    if cuda:  # flex has no CPU backward; inductor on CPU needs a C++ build
        out.append(("step recipe", "llama1b_step.yaml", [*chat, *tiny]))
        out.append(("step recipe eager flex", "llama1b_step.yaml", [*chat, *tiny, *eager]))
    out.append(("step seed padded", "llama1b_step.yaml", [*chat, *tiny, *seed]))
    out.append(("step recipe eager sdpa", "llama1b_step.yaml", [*chat, *tiny, *eager, "model.attention=sdpa"]))
    # FSDP2 on one process (bf16 mixed-precision policy): the CUDA code path, and its cost against ddp.
    out.append(("step recipe eager sdpa fsdp", "llama1b_step.yaml",
                [*chat, *tiny, *eager, "model.attention=sdpa", "distributed.strategy=fsdp"]))  # fmt: skip
    jepa = ["schedule.batch_size=2", "layout.max_length=256"] if args.tiny else []
    for pack in (0, 1024):
        name = f"jepa sdpa {'packed' if pack else 'padded'}"
        out.append((name, "llama1b_jepa.yaml", [*chat, *jepa, "schedule.grad_accum=2", f"data.pack_length={pack}"]))
    reversal = [f"data.train={args.reversal_data}", "run.threads=null", f"run.device={device}", "model.init_on=device"]
    if args.tiny:
        reversal += [f"model.arch={flow(TINY_GPT2)}", "schedule.batch_size=16"]
    for pack in (0, 64):
        name = f"reversal {'packed' if pack else 'padded'}"
        out.append((name, "gpt2_reversal.yaml", [*reversal, f"data.pack_length={pack}"]))
    return out


def cuda_tests(repo: Path, timeout_s: float | None = None) -> dict:
    """`pytest -m cuda tests`, 60 s per test where pytest-timeout is installed: counts from its summary line, and
    the tail of its output when something failed or the stage ran out of time."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests"]
    try:
        import pytest_timeout  # noqa: F401  (the GPU machine has it; the per-test limit is only a guard)

        command += ["--timeout", "60"]
    except ImportError:
        pass
    try:
        proc = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return {"exit": None, "error": f"timed out after {timeout_s:.0f} s", "output_tail": out[-4000:],
                "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {key: int(n) for n, key in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", summary)}
    result = {"exit": proc.returncode, "summary": summary, "seconds": round(time.perf_counter() - started, 1)}
    result.update(counts)
    if proc.returncode not in (0, 5):  # 5: nothing collected
        result["output_tail"] = (proc.stdout + proc.stderr)[-4000:]
    return result


def probe(cpu: bool) -> dict:
    """Versions, the SDPA backends enabled, and FlexAttention under bf16 autocast on a small input."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from jepa.models.attention import compiled_flex_attention

    cuda = torch.cuda.is_available() and not cpu
    out: dict = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": "cpu"}
    if cuda:
        out.update(device=torch.cuda.get_device_name(), cudnn=torch.backends.cudnn.version(),
                   sdpa={"flash": torch.backends.cuda.flash_sdp_enabled(),
                         "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                         "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                         "math": torch.backends.cuda.math_sdp_enabled()})  # fmt: skip
    device = "cuda" if cuda else "cpu"
    try:
        attention = compiled_flex_attention() if cuda else flex_attention  # CPU: eager, forward only
        q, k, v = (torch.randn(2, 4, 256, 64, device=device, dtype=torch.bfloat16) for _ in range(3))
        block_mask = create_block_mask(lambda b, h, qi, ki: ki <= qi, 2, None, 256, 256, device=device)
        with torch.autocast(device, dtype=torch.bfloat16):
            y = attention(q, k, v, block_mask=block_mask)
        out["flex_autocast"] = {"ok": bool(torch.isfinite(y.float()).all()), "dtype": str(y.dtype)}
    except Exception as exc:  # noqa: BLE001 - what failed is the finding
        out["flex_autocast"] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return out


@dataclass(frozen=True)
class Stage:
    """One stage of the plan: its timeout and the settings (names in `settings`) it measures, in order."""

    name: str
    timeout_s: int
    what: str
    settings: tuple[str, ...] = ()


PLAN = (
    Stage("probe", 30, "versions, SDPA backends, FlexAttention under bf16 autocast"),
    Stage("cuda tests", 180, "pytest -m cuda, 60 s per test"),
    Stage("step 1B", 170, "Step-JEPA at Llama-3.2-1B shapes: the GPU recipe, then the seed's padded eager layout",
          ("step recipe", "step seed padded")),
    Stage("fsdp", 50, "FSDP2 on one GPU (NCCL), the recipe's layout, eager sdpa", ("step recipe eager sdpa fsdp",)),
    Stage("extras", 50, "as time allows: the recipe eager (flex, sdpa), the LLM-JEPA paper shapes, GPT-2 reversal",
          ("step recipe eager flex", "step recipe eager sdpa", "jepa sdpa packed", "reversal packed")),
)  # fmt: skip


def plan_text() -> str:
    lines = [f"{stage.name}\t{stage.timeout_s}\t{stage.what}" for stage in PLAN]
    return "\n".join([*lines, f"total\t{sum(stage.timeout_s for stage in PLAN)}"])


def ratio(runs: dict, a: str, b: str, key: str = "tokens_s") -> float | None:
    if a in runs and b in runs and key in runs[a] and key in runs[b]:
        return round(runs[a][key] / runs[b][key], 3)
    return None


def measure_settings(
    args: argparse.Namespace, names: list[str] | None, budget_s: float | None, report: dict, write: Callable[[], None]
) -> None:
    """Measure the settings named (all with None), in order, within `budget_s` seconds (None: no limit); a setting
    that does not fit in what is left is recorded as not run. The report is written after each one."""
    started = time.perf_counter()
    chosen = [s for s in settings(args) if (names is None or s[0] in names)]
    if names is not None:  # the stage's order
        chosen.sort(key=lambda s: names.index(s[0]))
    for name, config, overrides in chosen:
        if args.only and not re.search(args.only, name):
            continue
        left = None if budget_s is None else budget_s - (time.perf_counter() - started)
        if left is not None and left < 10:
            report["runs"][name] = {"error": "not run: the stage's time was spent", "not_run": True}
            continue
        t0 = time.perf_counter()
        result = run_once(config, overrides, warmup=2, steps=args.steps, timeout_s=left)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        report["runs"][name] = result
        shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
        print(f"{name}: {shown}", flush=True)
        write()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--plan", action="store_true", help="print the default plan (stage, timeout s) and stop")
    parser.add_argument("--full", action="store_true", help="every setting, no stage budgets (~20 min on an H100)")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per setting (after 2 warm-up)")
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmarks")
    parser.add_argument("--only", default=None, help="a regular expression: measure only the settings it matches")
    parser.add_argument("--tiny", action="store_true", help="toy shapes: checks this script, measures nothing")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where CUDA is available")
    parser.add_argument("--chat-data", default="data/gsm8k_steps/train.jsonl")
    parser.add_argument("--tokenizer", default="data/models/smollm2-135m-instruct")
    parser.add_argument("--reversal-data", default="data/reversal")
    args = parser.parse_args()
    if args.plan:
        print(plan_text())
        return
    repo = Path(__file__).resolve().parent.parent
    for path in (args.chat_data, args.tokenizer, args.reversal_data):
        if not Path(path).exists():
            sys.exit(f"error: {path} is missing (make prepare, or python prepare.py gsm8k / smollm2 / reversal)")
    report: dict = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.cpu else "cpu",
        "torch": torch.__version__,
        "plan": "full" if args.full else "default",
        "stages": {},
        "tests": None,
        "runs": {},
    }

    def write() -> None:  # after every stage and setting: a run killed from outside keeps what finished
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    for stage in PLAN:
        t0 = time.perf_counter()
        budget = None if args.full else stage.timeout_s
        if stage.name == "probe":
            report["probe"] = probe(args.cpu)
        elif stage.name == "cuda tests":
            report["tests"] = None if args.skip_tests else cuda_tests(repo, budget)
        elif args.full:
            if stage.name == "step 1B":  # --full: every setting, in the order of `settings`
                measure_settings(args, None, None, report, write)
        else:
            measure_settings(args, list(stage.settings), budget, report, write)
        report["stages"][stage.name] = {"seconds": round(time.perf_counter() - t0, 1), "timeout_s": stage.timeout_s}
        write()
    runs = report["runs"]
    report["ratios"] = {
        "step recipe / seed padded tokens/s (goal >= 3)": ratio(runs, "step recipe", "step seed padded"),
        "step recipe / recipe eager flex tokens/s (compile)": ratio(runs, "step recipe", "step recipe eager flex"),
        "step recipe eager flex / eager sdpa tokens/s": ratio(runs, "step recipe eager flex", "step recipe eager sdpa"),
        "step recipe eager sdpa / seed padded tokens/s (layout)": ratio(runs, "step recipe eager sdpa",
                                                                        "step seed padded"),
        "jepa packed / padded tokens/s": ratio(runs, "jepa sdpa packed", "jepa sdpa padded"),
        "step fsdp / ddp tokens/s (one process)": ratio(runs, "step recipe eager sdpa fsdp", "step recipe eager sdpa"),
        "reversal packed / padded steps/s": ratio(runs, "reversal packed", "reversal padded", "steps_s"),
    }  # fmt: skip
    recipe = runs.get("step recipe", {})
    report["goals"] = {  # issue 24 section 3, on one H100 (the 6N convention: 6 x parameters x tokens)
        "step recipe mfu_6n >= 0.40": recipe.get("mfu_6n"),
        "step recipe / seed padded tokens/s >= 3": report["ratios"]["step recipe / seed padded tokens/s (goal >= 3)"],
    }
    write()
    print("\nstage            seconds  timeout")
    for name, stage in report["stages"].items():
        print(f"{name:<16} {stage['seconds']:7.1f}  {stage['timeout_s']:7d}")
    for name, run in runs.items():
        figure = (f"{run['tokens_s']:.0f} tokens/s, MFU {run.get('mfu')} (6N: {run.get('mfu_6n')})"
                  if "tokens_s" in run else run.get("error"))  # fmt: skip
        print(f"  {name:<28} {figure}")
    print(f"wrote {args.out}")
    failed = [n for n, r in runs.items() if "error" in r and not r.get("not_run")]
    if failed or (report["tests"] and report["tests"].get("exit") not in (0, 5)):
        sys.exit(f"error: {len(failed)} benchmark(s) failed ({', '.join(failed)}); tests: "
                 f"{report['tests'] and report['tests'].get('summary', report['tests'].get('error'))}")  # fmt: skip


if __name__ == "__main__":
    main()

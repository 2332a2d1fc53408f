"""Training throughput (issue 4 §7): optimizer steps/s, tokens/s and peak memory of the real training step
(accumulate_gradients + clip + AdamW) for

  * gpt2_reversal.yaml's 4-layer GPT-2 (d=768) with lambda=0 (plain LM rows) vs lambda=1 (packed JEPA rows),
  * smollm2_step.yaml (SmolLM2-135M-Instruct, Step-JEPA) with LoRA vs full fine-tuning (and LoRA without
    its input dropout, whose saved masks and dropped copies of every projection input cost activation memory).

Each setting runs in its own child process (so peak memory is its own: RSS on CPU, max allocated on CUDA),
alternately for `--rounds` rounds; the fastest step of the fastest round is reported (plus the median step
time), because on a shared machine slower steps measure the neighbours. The parent prints the ratios.
`tokens` counts every packed token, JEPA segments included; `LM tokens`
counts only the LM sequence, so (LM tokens/s of lambda=1) / (LM tokens/s of lambda=0) is the real cost of JEPA.

    python bench/train_throughput.py [--steps 3] [--reversal-batch 64] [--only reversal|smollm2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jepa.models.lora import apply_lora  # noqa: E402
from jepa.tokenizer import Tokenizer  # noqa: E402
from jepa.train.config import DEFAULT_LORA_TARGETS, load_config  # noqa: E402
from jepa.train.data import EpochSampler, load_train_data, rank_micro_batches  # noqa: E402
from jepa.train.loop import (  # noqa: E402
    Processes,
    TrainModule,
    accumulate_gradients,
    build_train_model,
    make_optimizer,
    make_predictors,
    seed_everything,
)


def measure(config: str, overrides: list[str], warmup: int, steps: int, queue) -> None:
    """Child process: time `steps` optimizer steps after `warmup` ones; put a result dict on `queue`."""
    cfg = load_config(config, overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.run.threads and device.type == "cpu":
        torch.set_num_threads(cfg.run.threads)
    seed_everything(cfg.run.seed)
    tokenizer = None
    if cfg.layout.mode != "reversal":
        tokenizer = Tokenizer.from_dir(cfg.model.tokenizer or cfg.model.path, date_string=cfg.data.date_string)
    data = load_train_data(cfg.data.train, cfg.layout, tokenizer, cfg.data.limit)
    if cfg.jepa.lam == 0:
        data.rows = [r.lm_only() for r in data.rows]
    model = build_train_model(cfg, data, device)
    if cfg.lora.enabled:
        apply_lora(model, cfg.lora.targets or DEFAULT_LORA_TARGETS[model.config.to_hf()["model_type"]],
                   cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout)
    predictors = make_predictors(cfg, model)
    if predictors is not None:
        predictors.to(device)
    module = TrainModule(model, predictors, cfg.jepa.loss, cfg.jepa.temperature, False)
    optimizer = make_optimizer(cfg, model, predictors, device)
    params = [p for p in module.parameters() if p.requires_grad]
    procs = Processes(0, 1, device)
    s = cfg.schedule
    sampler = EpochSampler(len(data.rows), s.batch_size * s.grad_accum, cfg.run.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, tokens, lm_tokens = [], [], []
    for i in range(warmup + steps):
        indices = sampler.next_batch()
        micro = rank_micro_batches(data, indices, s.batch_size, s.grad_accum, 0, i, cfg.run.seed, cfg.jepa.ratio)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        accumulate_gradients(module, micro, cfg, procs)
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            tokens.append(sum(len(data.rows[j].input_ids) for j in indices))
            lm_tokens.append(sum(data.rows[j].main_length for j in indices))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    # The fastest step: on a shared machine the others measure the neighbours' load, not this code.
    best = min(range(steps), key=lambda k: times[k])
    queue.put({"steps_s": 1 / times[best], "tokens_s": tokens[best] / times[best],
               "lm_tokens_s": lm_tokens[best] / times[best], "median_s": sorted(times)[steps // 2],
               "peak_mib": peak, "rows": s.batch_size * s.grad_accum,
               "trainable_m": sum(p.numel() for p in params) / 1e6, "device": str(device),
               "threads": torch.get_num_threads()})


def run_once(config: str, overrides: list[str], warmup: int, steps: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=measure, args=(config, overrides, warmup, steps, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def compare(settings: list[tuple[str, str, list[str]]], warmup: int, steps: int, rounds: int) -> list[dict]:
    """Run the settings alternately `rounds` times (A B A B ...), keep each one's fastest round, print a row each."""
    best: list[dict | None] = [None] * len(settings)
    for _ in range(rounds):
        for k, (_, config, overrides) in enumerate(settings):
            result = run_once(config, overrides, warmup, steps)
            if best[k] is None or result["steps_s"] > best[k]["steps_s"]:
                best[k] = result
    for (name, _, _), r in zip(settings, best):
        print(f"{name:<26} {r['steps_s']:8.3f} {r['median_s']:9.2f} {r['tokens_s']:9.0f} {r['lm_tokens_s']:9.0f} "
              f"{r['peak_mib']:9.0f} {r['trainable_m']:10.2f}  ({r['rows']} rows/step, {r['device']}, "
              f"{r['threads']} threads)", flush=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per setting")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="alternating repetitions; the fastest is kept")
    parser.add_argument("--reversal-batch", type=int, default=64, help="rows per step for the GPT-2 runs "
                        "(the config's 256 takes minutes per step on 2 CPU cores)")
    parser.add_argument("--reversal-data", default=None, help="default: data/reversal, else data/reversal_small")
    parser.add_argument("--smollm2-batch", type=int, default=4)
    parser.add_argument("--only", choices=("reversal", "smollm2"))
    args = parser.parse_args()
    print(f"{'setting':<26} {'steps/s':>8} {'median s':>9} {'tokens/s':>9} {'LM tok/s':>9} {'peak MiB':>9} "
          f"{'trainable M':>10}")
    if args.only in (None, "reversal"):
        data = args.reversal_data or ("data/reversal" if Path("data/reversal/train.json").is_file()
                                      else "data/reversal_small")
        base = [f"data.train={data}", f"schedule.batch_size={args.reversal_batch}", "schedule.grad_accum=1",
                "run.threads=null"]
        print(f"# gpt2_reversal.yaml model on {data}")
        lm, jepa = compare([("reversal lambda=0", "gpt2_reversal.yaml", base + ["jepa.lambda=0"]),
                            ("reversal lambda=1 packed", "gpt2_reversal.yaml", base + ["jepa.lambda=1"])],
                           args.warmup, args.steps, args.rounds)
        print(f"  lambda=1 / lambda=0: steps/s x{jepa['steps_s'] / lm['steps_s']:.2f}, "
              f"LM tokens/s x{jepa['lm_tokens_s'] / lm['lm_tokens_s']:.2f}, "
              f"peak memory x{jepa['peak_mib'] / lm['peak_mib']:.2f}")
    if args.only in (None, "smollm2"):
        base = [f"schedule.batch_size={args.smollm2_batch}", "schedule.grad_accum=1", "run.threads=null"]
        print("# smollm2_step.yaml")
        lora, full, _ = compare([("smollm2 step LoRA", "smollm2_step.yaml", base),
                                 ("smollm2 step full FT", "smollm2_step.yaml", base + ["lora.enabled=false"]),
                                 ("smollm2 step LoRA dropout=0", "smollm2_step.yaml", base + ["lora.dropout=0"])],
                                args.warmup, args.steps, args.rounds)
        print(f"  LoRA / full: steps/s x{lora['steps_s'] / full['steps_s']:.2f}, "
              f"peak memory x{lora['peak_mib'] / full['peak_mib']:.2f}")


if __name__ == "__main__":
    main()

"""Memory per process, distributed.strategy ddp vs fsdp: 2 gloo processes on this machine, SmolLM2-135M-Instruct
full fine-tuning (smollm2_step.yaml, `make prepare`), the training step the loop runs (`build` + `train_step`).

Per rank: the bytes of model state it holds after a step (parameters + gradients + AdamW moments: this rank's
shards under FSDP, everything under DDP) and its peak RSS (which also counts torch itself, the data and the
activations, alike for both). The parent prints fsdp / ddp ratios.

    python bench/distributed_memory.py [--steps 2] [--config smollm2_step.yaml]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import free_port, torchrun_env  # noqa: E402

from jepa.train.build import build  # noqa: E402
from jepa.train.config import load_config  # noqa: E402
from jepa.train.parallel import local_shard  # noqa: E402
from jepa.train.step import forward_backward, next_micro_batches, train_step  # noqa: E402


def state_bytes(state) -> int:
    """Bytes of parameters, gradients and optimizer state this rank holds (its shards under FSDP)."""
    tensors = [local_shard(p) for p in state.objective.parameters()]
    tensors += [local_shard(p.grad) for p in state.objective.parameters() if p.grad is not None]
    for per_param in state.optimizer.state.values():
        tensors += [local_shard(v) for v in per_param.values() if torch.is_tensor(v) and v.ndim > 0]
    return sum(t.numel() * t.element_size() for t in tensors)


def worker(rank: int, world: int, port: int, config: str, overrides: list[str], steps: int, out: str) -> None:
    torchrun_env(rank, world, port)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as runs:
        cfg = load_config(config, [*overrides, f"run.dir={runs}", "checkpoint.resume=none"])
        state = build(cfg, verbose=False)
    times = []
    for _ in range(steps + 1):  # the first one allocates the AdamW state
        micro_batches = next_micro_batches(state)
        started = time.perf_counter()
        train_step(state, micro_batches)
        times.append(time.perf_counter() - started)
    # train_step frees the gradients; one more forward/backward puts them back, so they are counted too.
    forward_backward(state, next_micro_batches(state))
    result = {
        "state_mib": state_bytes(state) / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "step_s": min(times[1:]),
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="smollm2_step.yaml")
    parser.add_argument("--steps", type=int, default=2, help="timed optimizer steps after a first one")
    args = parser.parse_args()
    base = ["lora.enabled=false", "schedule.batch_size=2", "schedule.grad_accum=1", "run.threads=1"]
    results = {}
    for strategy in ("ddp", "fsdp"):
        with tempfile.TemporaryDirectory() as out:
            overrides = [*base, f"distributed.strategy={strategy}"]
            mp.spawn(worker, args=(2, free_port(), args.config, overrides, args.steps, out), nprocs=2, join=True)
            ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(2)]
        results[strategy] = {k: max(r[k] for r in ranks) for k in ranks[0]}
        r = results[strategy]
        print(f"{strategy:>4}: model state {r['state_mib']:8.1f} MiB/rank, peak RSS {r['peak_rss_mib']:8.1f} MiB/rank, "
              f"fastest step {r['step_s']:.2f} s (2 gloo processes, 1 thread each)", flush=True)  # fmt: skip
    ddp, fsdp = results["ddp"], results["fsdp"]
    ratio = {k: fsdp[k] / ddp[k] for k in ddp}
    print(f"fsdp / ddp: model state x{ratio['state_mib']:.2f}, peak RSS x{ratio['peak_rss_mib']:.2f}, "
          f"step time x{ratio['step_s']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

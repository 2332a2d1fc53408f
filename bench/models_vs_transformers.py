"""Forward + backward of our Llama vs transformers' on the same SmolLM2-135M-shaped weights (fp32, CPU).

Timings are interleaved (ours, theirs, ours, ...) in one process and the median ratio printed; peak memory is
measured in fresh child processes (max RSS) so the two do not share an allocator high-water mark.
Goal (issue 2): ours / transformers <= 1.0 for time. Run: `python bench/models_vs_transformers.py`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from shapes import SMOLLM2  # bench/ is on sys.path when a bench runs as a script

from jepa.losses import lm_loss_sum
from jepa.models import Llama, LlamaConfig, load_pretrained, save_pretrained


def make_checkpoint(path: str, layers: int) -> None:
    torch.manual_seed(0)
    save_pretrained(Llama(LlamaConfig(**{**SMOLLM2, "num_hidden_layers": layers})), path)


def step_fns(path: str, batch: int, seq: int):
    import transformers

    ours = load_pretrained(path).train()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="sdpa"
    ).train()
    ids = torch.randint(0, SMOLLM2["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(0))
    shifted = torch.cat([ids[:, 1:], torch.full((batch, 1), -100)], dim=1)

    def ours_step() -> float:
        total, n = lm_loss_sum(ours(ids), shifted, ours.lm_head, softcap=ours.logit_softcap)
        loss = total / n
        loss.backward()
        ours.zero_grad(set_to_none=True)
        return loss.item()

    def theirs_step() -> float:
        loss = theirs(input_ids=ids, labels=ids).loss
        loss.backward()
        theirs.zero_grad(set_to_none=True)
        return loss.item()

    return ours_step, theirs_step


def rss_mib(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(which: str, path: str, batch: int, seq: int) -> None:
    """Peak RSS of one training step alone: the high-water mark is reset after loading (Linux clear_refs)."""
    ours_step, theirs_step = step_fns(path, batch, seq)
    fn = ours_step if which == "ours" else theirs_step
    fn()  # first step allocates gradients and caches
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = rss_mib("VmRSS")
    fn()
    print(f"{rss_mib('VmHWM'):.0f} {rss_mib('VmHWM') - base:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--layers", type=int, default=SMOLLM2["num_hidden_layers"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", choices=["ours", "theirs"])
    ap.add_argument("--path")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.path, args.batch, args.seq)
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as path:
        make_checkpoint(path, args.layers)
        ours_step, theirs_step = step_fns(path, args.batch, args.seq)
        lo, lt = ours_step(), theirs_step()  # warm-up, and the losses must agree
        print(f"loss ours {lo:.6f} transformers {lt:.6f} (|diff| {abs(lo - lt):.2e})")
        times = {"ours": [], "transformers": []}
        for _ in range(args.repeats):
            for name, fn in (("ours", ours_step), ("transformers", theirs_step)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"forward+backward, batch {args.batch} x {args.seq}, {args.layers} layers, fp32 CPU, "
            f"{torch.get_num_threads()} threads, median of {args.repeats}:"
        )
        print(
            f"  ours {med['ours']:.3f} s   transformers {med['transformers']:.3f} s   "
            f"ratio ours/transformers {med['ours'] / med['transformers']:.3f}"
        )
        mem = {}
        for name in ("ours", "theirs"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    name,
                    "--path",
                    path,
                    "--batch",
                    str(args.batch),
                    "--seq",
                    str(args.seq),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            mem[name] = (float(out[0]), float(out[1]))
        print(
            f"  peak RSS ours {mem['ours'][0]:.0f} MiB (+{mem['ours'][1]:.0f} in the step)   transformers "
            f"{mem['theirs'][0]:.0f} MiB (+{mem['theirs'][1]:.0f} in the step)   "
            f"ratio {mem['ours'][0] / mem['theirs'][0]:.3f}"
        )


if __name__ == "__main__":
    main()

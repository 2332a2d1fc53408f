"""Greedy generation, ours (`jepa.models.generate`, what every evaluation calls) vs transformers' `generate`, on the
same SmolLM2 weights and the same chat prompts (issue 28 §1).

Prompts: the first records of an NL-RX (or any chat) jsonl through the chat template with the generation prompt,
as the evaluation builds them. Both stop a row at the template's stop tokens; a batch ends when every row has
stopped or `--new-tokens` were generated. Per batch size: tokens/s (tokens kept / wall time) and
time-to-first-token (prefill + the first token), the median of `--repeats` interleaved runs (ours, theirs, ...),
and whether the outputs are equal token for token. Goal on a CPU: ours >= 1.5x at batch 16, >= 1x at batch 1.
Run: `python bench/generation.py [--model DIR] [--data FILE] [--batch 1 --batch 16] [--threads N]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from jepa.eval.generation import prompt_messages
from jepa.models import generate, load_pretrained
from jepa.tokenizer import Tokenizer


def ours_fn(model, prompts, new_tokens, stop_ids, pad_id):
    def run():
        first = []
        started = time.perf_counter()
        out = generate(model, prompts, new_tokens, stop_ids=stop_ids, pad_id=pad_id,
                       on_step=lambda *_: first or first.append(time.perf_counter()))  # fmt: skip
        return out, time.perf_counter() - started, first[0] - started

    return run


def theirs_fn(model, prompts, new_tokens, stop_ids, pad_id):
    from transformers.generation.streamers import BaseStreamer

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

    class FirstToken(BaseStreamer):
        def __init__(self) -> None:
            self.calls: list[float] = []

        def put(self, value) -> None:  # called with the prompt, then with every new token
            self.calls.append(time.perf_counter())

        def end(self) -> None:
            pass

    def run():
        streamer = FirstToken() if len(prompts) == 1 else None  # transformers streams batch 1 only
        started = time.perf_counter()
        with torch.no_grad():
            seq = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                                 eos_token_id=list(stop_ids), pad_token_id=pad_id, streamer=streamer)  # fmt: skip
        seconds = time.perf_counter() - started
        out = []
        for row in seq[:, width:].tolist():
            stop = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
            out.append(row[:stop])
        first = streamer.calls[1] - started if streamer is not None and len(streamer.calls) > 1 else float("nan")
        return out, seconds, first

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="data/models/smollm2-135m-instruct")
    ap.add_argument("--data", default="data/llm_jepa/synth_test.jsonl")
    ap.add_argument("--batch", type=int, action="append", help="batch sizes (default: 1 and 16)")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    tokenizer = Tokenizer.from_dir(args.model)
    with open(args.data) as f:
        records = [json.loads(line) for line in f]
    ours = load_pretrained(args.model).eval()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    stop_ids, pad_id = tuple(tokenizer.stop_ids), tokenizer.pad_id
    print("batch\tours tok/s\ttheirs tok/s\tratio\tours TTFT s\ttheirs TTFT s\tequal rows\ttokens")
    for batch in args.batch or [1, 16]:
        prompts = [tokenizer.encode_chat(prompt_messages(r), add_generation_prompt=True).ids for r in records[:batch]]
        runs = {"ours": ours_fn(ours, prompts, args.new_tokens, stop_ids, pad_id),
                "theirs": theirs_fn(theirs, prompts, args.new_tokens, stop_ids, pad_id)}  # fmt: skip
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        ttft: dict[str, list[float]] = {name: [] for name in runs}
        outputs = {}
        for _ in range(args.repeats):
            for name, run in runs.items():
                outputs[name], total, first = run()
                seconds[name].append(total)
                ttft[name].append(first)
        tokens = sum(len(o) for o in outputs["ours"])
        equal = sum(a == b for a, b in zip(outputs["ours"], outputs["theirs"]))
        rate = {name: tokens / statistics.median(s) for name, s in seconds.items()}
        print(f"{batch}\t{rate['ours']:.1f}\t{rate['theirs']:.1f}\t{rate['ours'] / rate['theirs']:.2f}x\t"
              f"{statistics.median(ttft['ours']):.3f}\t{statistics.median(ttft['theirs']):.3f}\t"
              f"{equal}/{len(prompts)}\t{tokens}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

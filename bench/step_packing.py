"""Cost of the JEPA terms: one optimizer micro-step (forward + backward) on GSM8K, Step-JEPA and STP.

Four ways, same SmolLM2-shaped model (random weights), same examples, fp32 CPU, interleaved, median ratios:
  ntp      plain next-token prediction on the LM sequences (the baseline)
  packed   our single pass: LM sequence + predictors + isolated step-2 copy in one row (docs/method.md §2)
  two_pass the seed's design: a clean LM pass plus a second pass over the sequence carrying the JEPA segments
  stp      STP mode: the LM sequences alone, the chords of a drawn span read off the same pass
Goals: packed / ntp <= 1.3 (issue 3) while two_pass / ntp ~ 2; stp / ntp ~ 1.0 (issue 23: no extra tokens).
Run: `python bench/step_packing.py [--data data/gsm8k_steps/train.jsonl] [--tokenizer DIR]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
from shapes import SMOLLM2  # bench/ is on sys.path when a bench runs as a script

from jepa.data.collator import collate
from jepa.data.layouts import LayoutConfig, build_chat_row, draw_stp_spans
from jepa.losses import IGNORE_INDEX
from jepa.models import Llama, LlamaConfig
from jepa.models.predictors import PredictorEmbeddings
from jepa.objective import Objective
from jepa.tokenizer import Tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/gsm8k_steps/train.jsonl")
    ap.add_argument("--tokenizer", default="data/models/smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--layers", type=int, default=SMOLLM2["num_hidden_layers"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    tok = Tokenizer.from_dir(args.tokenizer)
    with open(args.data) as f:
        records = [json.loads(line) for _, line in zip(range(args.batch), f)]
    cfg = LayoutConfig(mode="step", predictors=2, max_length=args.max_length)
    rows = [build_chat_row(r["messages"], tok, cfg) for r in records]
    ntp_batch = collate([r.lm_only() for r in rows], tok.pad_id)
    packed_batch = collate(rows, tok.pad_id)
    # the seed's second pass: the packed rows without LM labels (the LM term comes from the clean first pass)
    jepa_pass_batch = collate([dataclasses.replace(r, labels=[IGNORE_INDEX] * len(r.labels)) for r in rows], tok.pad_id)
    stp_cfg = dataclasses.replace(cfg, mode="stp")
    stp_rows = [draw_stp_spans(build_chat_row(r["messages"], tok, stp_cfg), 0, 0, i) for i, r in enumerate(records)]
    stp_batch = collate(stp_rows, tok.pad_id)

    torch.manual_seed(0)
    model = Llama(LlamaConfig(**{**SMOLLM2, "num_hidden_layers": args.layers})).train()
    predictors = PredictorEmbeddings(2, model.embed_tokens)
    objective = Objective(model, predictors)

    def run(*batches) -> None:
        loss = 0.0
        for b in batches:
            t = objective(b)
            loss = loss + t.lm_sum / max(t.lm_tokens, 1) + t.jepa_sum / max(t.jepa_rows, 1)
        loss.backward()
        model.zero_grad(set_to_none=True)
        predictors.zero_grad(set_to_none=True)

    ways = {"ntp": (ntp_batch,), "packed": (packed_batch,), "two_pass": (ntp_batch, jepa_pass_batch),
            "stp": (stp_batch,)}  # fmt: skip
    for batches in ways.values():
        run(*batches)  # warm-up
    times = {k: [] for k in ways}
    for _ in range(args.repeats):
        for name, batches in ways.items():
            t0 = time.perf_counter()
            run(*batches)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    lm_len = ntp_batch.input_ids.shape[1]
    print(
        f"step mode, batch {args.batch}, max_length {args.max_length}, {args.layers} layers, fp32 CPU, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"  padded length: ntp {lm_len}, packed {packed_batch.input_ids.shape[1]}, stp "
          f"{stp_batch.input_ids.shape[1]}")  # fmt: skip
    for name in ways:
        print(f"  {name:9s} {med[name]:.3f} s   / ntp = {med[name] / med['ntp']:.3f}")


if __name__ == "__main__":
    main()

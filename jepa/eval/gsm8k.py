"""GSM8K accuracy by batched greedy generation (docs/method.md §4).

Prompt = the record's system message + user question through the chat template with the assistant header;
greedy decoding with the KV cache, stopping at end-of-turn. Two scoring protocols (see `jepa.eval.answers`):
"default" (boxed / #### / last number, numeric comparison, 512 new tokens) and "paper" (strict final
``#### X`` string match, 128 new tokens). Both scores are recorded for every example; ``correct`` and
``accuracy`` follow the chosen protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from jepa.data.sources import GSM8K_SYSTEM_PROMPT, SkippedLines, iter_jsonl
from jepa.eval.answers import gold_answer, score_default, score_paper
from jepa.models import generate
from jepa.tokenizer import Tokenizer

PROTOCOLS = {"default": 512, "paper": 128}  # protocol -> default max_new_tokens


def load_gsm8k_records(path: str | Path, system_prompt: str = GSM8K_SYSTEM_PROMPT) -> list[dict]:
    """Records from a jsonl file: prepared chat records (``{"messages": [...], "answer": "72"}``, as written by
    ``prepare.py gsm8k``) or raw GSM8K lines (``{"question", "answer": "...\\n#### 72"}``), the latter given
    ``system_prompt``. Returns chat records; a bad line raises ValueError("path:LINE: reason")."""
    path = Path(path)
    records = []
    for number, obj in iter_jsonl(path, ("answer",), skip_bad=False, bad=SkippedLines()):
        if "messages" in obj:
            messages = obj["messages"]
            if not (
                isinstance(messages, list)
                and all(isinstance(m, dict) for m in messages)
                and any(m.get("role") == "user" and isinstance(m.get("content"), str) for m in messages)
            ):
                raise ValueError(f"{path}:{number}: 'messages' must be a list of messages with a user message")
            records.append({"messages": messages, "answer": gold_answer(obj["answer"])})
        elif isinstance(obj.get("question"), str):
            records.append(
                {
                    "messages": [
                        {"role": "system", "content": system_prompt},
                        {"role": "user", "content": obj["question"].strip()},
                    ],
                    "answer": gold_answer(obj["answer"]),
                }
            )
        else:
            raise ValueError(f"{path}:{number}: expected 'messages' (prepared record) or 'question' (raw GSM8K)")
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def prompt_messages(record: dict) -> list[dict]:
    """The record's system message (if any) and its first user message: what the model is prompted with."""
    messages = record["messages"]
    system = [m for m in messages[:1] if m.get("role") == "system"]
    user = next(m for m in messages if m.get("role") == "user")
    return system + [user]


@torch.no_grad()
def evaluate_gsm8k(
    model: nn.Module,
    tokenizer: Tokenizer,
    records: list[dict],
    limit: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    protocol: str = "default",
    progress: bool = False,
    done: dict[int, dict] | None = None,
    on_example: Callable[[dict], None] | None = None,
) -> tuple[list[dict], dict]:
    """Generate an answer for the first ``limit`` records and score them.

    Returns (examples, summary). Each example: index, question, generation, predicted, gold, correct (chosen
    protocol), correct_default, correct_paper, source (boxed/hash/number/none), parsed, n_tokens, truncated
    (hit ``max_new_tokens``). Summary: n, accuracy, accuracy_default, accuracy_paper, unparseable (examples
    not parsed under the chosen protocol), truncated, mean_tokens, protocol, max_new_tokens, seconds.

    Prompts are sorted by token length (longest first) before batching so a batch pads little and memory
    peaks in the first batch; results come back in record order and do not depend on the batching.
    ``done`` (index -> example, e.g. read back from an interrupted evaluation) are not generated again;
    ``on_example`` is called with each new example as soon as its batch finishes. ``progress`` shows problems
    done and tokens generated on stderr.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_new_tokens = PROTOCOLS[protocol] if max_new_tokens is None else max_new_tokens
    records = records[:limit] if limit is not None else records
    examples = {i: e for i, e in (done or {}).items() if i < len(records)}
    start = time.perf_counter()
    prompts = [tokenizer.encode_chat(prompt_messages(r), add_generation_prompt=True).ids for r in records]
    order = sorted((i for i in range(len(prompts)) if i not in examples), key=lambda i: -len(prompts[i]))
    bar = tqdm(total=len(records), initial=len(examples), desc="gsm8k", unit="problem", disable=not progress)
    generated = 0
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(order), batch_size):
            chunk = order[first : first + batch_size]
            outputs = generate(
                model, [prompts[i] for i in chunk], max_new_tokens, stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id
            )
            for i, ids in zip(chunk, outputs):
                examples[i] = score_example(i, records[i], tokenizer.decode(ids, skip_special_tokens=True), len(ids),
                                            max_new_tokens, protocol)  # fmt: skip
                if on_example is not None:
                    on_example(examples[i])
            generated += sum(len(ids) for ids in outputs)
            bar.update(len(chunk))
            bar.set_postfix(tokens=generated, tok_s=f"{generated / (time.perf_counter() - start):.0f}")
    finally:
        model.train(was_training)
        bar.close()
    examples = [examples[i] for i in range(len(records))]
    return examples, summarise_gsm8k(examples, protocol, max_new_tokens, time.perf_counter() - start)


def score_example(index: int, record: dict, generation: str, n_tokens: int, max_new_tokens: int,
                  protocol: str) -> dict:  # fmt: skip
    """One generated answer scored under both protocols (see :func:`evaluate_gsm8k`)."""
    default, paper = score_default(generation, record["answer"]), score_paper(generation, record["answer"])
    chosen = default if protocol == "default" else paper
    return {
        "index": index,
        "question": prompt_messages(record)[-1]["content"],
        "generation": generation,
        "predicted": chosen["predicted"],
        "gold": record["answer"],
        "correct": chosen["correct"],
        "correct_default": default["correct"],
        "correct_paper": paper["correct"],
        "source": chosen["source"],
        # default: an answer that reads as a number; paper: a final "#### X" line
        "parsed": chosen["predicted"] is not None and (protocol == "paper" or default["predicted_value"] is not None),
        "n_tokens": n_tokens,
        "truncated": n_tokens >= max_new_tokens,
    }


def summarise_gsm8k(examples: list[dict], protocol: str, max_new_tokens: int, seconds: float) -> dict:
    n = len(examples)

    def mean(key: str) -> float:
        return sum(float(e[key]) for e in examples) / n if n else float("nan")

    return {
        "n": n,
        "protocol": protocol,
        "max_new_tokens": max_new_tokens,
        "accuracy": mean("correct"),
        "accuracy_default": mean("correct_default"),
        "accuracy_paper": mean("correct_paper"),
        "unparseable": sum(not e["parsed"] for e in examples),
        "truncated": sum(e["truncated"] for e in examples),
        "mean_tokens": mean("n_tokens"),
        "seconds": round(seconds, 2),
    }

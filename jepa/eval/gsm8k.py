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
from typing import Any

from jepa.data.sources import GSM8K_SYSTEM_PROMPT, SkippedLines, iter_jsonl
from jepa.eval.answers import gold_answer, score_default, score_paper
from jepa.eval.generation import generate_and_score, prompt_messages, response_ending
from jepa.models.base import CausalLM
from jepa.tokenizer import Tokenizer

PROTOCOLS = {"default": 512, "paper": 128}  # protocol -> default max_new_tokens


def load_gsm8k_records(path: str | Path, system_prompt: str = GSM8K_SYSTEM_PROMPT) -> list[dict[str, Any]]:
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


def evaluate_gsm8k(
    model: CausalLM,
    tokenizer: Tokenizer,
    records: list[dict[str, Any]],
    limit: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    protocol: str = "default",
    progress: bool | None = None,
    done: dict[int, dict[str, Any]] | None = None,
    on_example: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Generate an answer for the first ``limit`` records and score them (`jepa.eval.generation`).

    Returns (examples, summary). Each example: index, question, generation, predicted, gold, correct (chosen
    protocol), correct_default, correct_paper, source (boxed/hash/number/none), parsed, n_tokens, and
    `response_ending`'s contains / overgeneration / truncated (hit ``max_new_tokens``) against the gold final
    answer. Summary: n, accuracy, accuracy_default, accuracy_paper, unparseable (examples not parsed under the
    chosen protocol), truncated (a count), truncated_fraction, contains, overgeneration, mean_tokens, protocol,
    max_new_tokens, seconds.
    ``done`` / ``on_example``: see `generate_and_score`.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    max_new_tokens = PROTOCOLS[protocol] if max_new_tokens is None else max_new_tokens
    records = records[:limit] if limit is not None else records
    start = time.perf_counter()

    def score(index: int, record: dict[str, Any], generation: str, n_tokens: int) -> dict[str, Any]:
        return score_example(index, record, generation, n_tokens, max_new_tokens=max_new_tokens, protocol=protocol)

    examples = generate_and_score(model, tokenizer, records, score, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, progress=progress, desc="gsm8k", unit="problem", done=done,
                                  on_example=on_example)  # fmt: skip
    return examples, summarise_gsm8k(examples, protocol, max_new_tokens, time.perf_counter() - start)


def score_example(index: int, record: dict[str, Any], generation: str, n_tokens: int, *, max_new_tokens: int,
                  protocol: str) -> dict[str, Any]:  # fmt: skip
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
        # contains: the gold final answer occurs in the generation; overgeneration means little for reasoning
        **response_ending(generation.strip(), record["answer"], n_tokens, max_new_tokens),
    }


def summarise_gsm8k(
    examples: list[dict[str, Any]], protocol: str, max_new_tokens: int, seconds: float
) -> dict[str, Any]:
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
        "truncated_fraction": mean("truncated"),
        "contains": mean("contains"),
        "overgeneration": mean("overgeneration"),
        "mean_tokens": mean("n_tokens"),
        "seconds": round(seconds, 2),
    }

"""Generation tasks and their scorers: the LLM-JEPA paper's NL-RX-SYNTH, NL-RX-TURK and NQ-Open, and GSM8K.

A task is data: where its reference comes from, its scorer (a name in SCORERS) and its default number of new
tokens. `evaluate_task` prompts with each chat record's system + user message (`jepa.eval.generation`), decodes
the response without special tokens and strips it (the official protocol: greedy, 128 new tokens), and scores it.

Scorers return {"correct": the paper's criterion, then looser ones reported beside it, never instead}; the
summary gives each as accuracy (correct) or accuracy_<name>, with its 95 % interval. Every task also reports how
the response ends (`response_ending`), the stop-token diagnostics: `contains` (the reference occurs in the
response), `overgeneration` (the response starts with the reference and goes on), `truncated` (generation hit
max_new_tokens) and the mean response length in tokens, each a fraction with its interval.

    exact     NL-RX: correct iff the response equals the reference regex; normalised: equal once all
              whitespace is removed (no NL-RX reference contains whitespace: none of the 12,000 published
              lines, so a space in a response is formatting, never part of a right answer); startswith: the
              response starts with the reference (the paper's Table 2 metric for its from-scratch model)
    nq_open   NQ-Open: correct iff any "; "-separated part of the response is a substring of the reference (the
              official code's check; an empty part is no answer, though "" is a substring of everything, so an
              empty response is wrong and counted in the summary's `empty`); normalised: the usual open-QA
              exact match, any "; "-part of the response equal to any "; "-part of the reference after
              lower-casing and removing punctuation, articles and extra whitespace (SQuAD's normalisation)
    gsm8k     the final answer (boxed / #### / last number) numerically equal to the reference's; normalised:
              the paper's strict "#### X" string match
"""

from __future__ import annotations

import math
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jepa.data.sources import BadRecord, SkippedLines, chat_record, iter_jsonl
from jepa.eval.answers import gold_answer, score_default, score_paper
from jepa.eval.generation import generate_and_score, prompt_messages, response_ending
from jepa.models.base import CausalLM
from jepa.tokenizer import Tokenizer


def score_exact(response: str, reference: str) -> dict[str, Any]:
    def squeeze(s: str) -> str:
        return re.sub(r"\s+", "", s)

    return {"correct": response == reference, "normalised": squeeze(response) == squeeze(reference),
            "startswith": response.startswith(reference)}  # fmt: skip


def normalise_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def score_nq_open(response: str, reference: str) -> dict[str, Any]:
    parts = [p for p in response.split("; ") if p]
    references = {normalise_answer(r) for r in reference.split("; ")}
    return {
        "correct": any(p in reference for p in parts),
        "normalised": any(normalise_answer(p) in references for p in parts),
    }


def score_gsm8k(response: str, reference: str) -> dict[str, Any]:
    return {"correct": score_default(response, reference)["correct"],
            "normalised": score_paper(response, reference)["correct"]}  # fmt: skip


SCORERS: dict[str, Callable[[str, str], dict[str, Any]]] = {"exact": score_exact, "nq_open": score_nq_open,
                                                  "gsm8k": score_gsm8k}  # fmt: skip


@dataclass(frozen=True)
class Task:
    scorer: str  # a name in SCORERS
    max_new_tokens: int
    reference: str = "assistant"  # the first assistant message's content, or a record key ("answer")


TASKS = {
    "synth": Task("exact", 128),
    "turk": Task("exact", 128),
    "nq_open": Task("nq_open", 128),
    "gsm8k": Task("gsm8k", 512, reference="answer"),
}


def load_task_records(path: str | Path, task: Task, limit: int | None = None) -> list[dict[str, Any]]:
    """Chat records (checked like `prepare.py chat`: a user message and an assistant answer after it; gsm8k also
    needs "answer") with their reference as "reference". A bad line: ValueError("path:LINE: reason")."""
    path, records = Path(path), []
    required = () if task.reference == "assistant" else (task.reference,)
    for number, obj in iter_jsonl(path, required, skip_bad=False, bad=SkippedLines()):
        try:
            messages = chat_record(obj)["messages"]
        except BadRecord as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
        if task.reference == "assistant":
            roles = [m["role"] for m in messages]
            reference = messages[roles.index("assistant", roles.index("user") + 1)]["content"]
        else:
            reference = gold_answer(obj[task.reference])
        records.append({"messages": messages, "reference": reference})
        if limit is not None and len(records) == limit:
            break
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n (sensible at 0 and n, unlike the normal one)."""
    if n == 0:
        return float("nan"), float("nan")
    p, z2 = k / n, z * z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate_task(
    model: CausalLM,
    tokenizer: Tokenizer,
    task_name: str,
    records: list[dict[str, Any]],
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    progress: bool | None = None,
    done: dict[int, dict[str, Any]] | None = None,
    on_example: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(examples, summary). Example: index, prompt, reference, response, the scorer's criteria (correct,
    normalised, ...), n_tokens, and `response_ending`'s (contains, overgeneration, truncated). Summary: task,
    scorer, n, accuracy and its 95 % Wilson interval (accuracy_ci_low / _high), the same for every other
    criterion (accuracy_normalised ...); contains, overgeneration and truncated_fraction, each with its interval;
    truncated and empty (counts of responses), mean_tokens (mean response length), max_new_tokens, seconds."""
    task = TASKS[task_name]
    scorer = SCORERS[task.scorer]
    max_new_tokens = max_new_tokens or task.max_new_tokens
    started = time.perf_counter()

    def score(index: int, record: dict[str, Any], generation: str, n_tokens: int) -> dict[str, Any]:
        response = generation.strip()
        return {"index": index, "prompt": prompt_messages(record)[-1]["content"], "reference": record["reference"],
                "response": response, **scorer(response, record["reference"]), "n_tokens": n_tokens,
                **response_ending(response, record["reference"], n_tokens, max_new_tokens)}  # fmt: skip

    examples = generate_and_score(model, tokenizer, records, score, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, progress=progress, desc=task_name, unit="example",
                                  done=done, on_example=on_example)  # fmt: skip
    n = len(examples)
    summary = {"task": task_name, "scorer": task.scorer, "n": n}
    names = {c: "accuracy" if c == "correct" else f"accuracy_{c}" for c in scorer("", "")}
    names.update({"contains": "contains", "overgeneration": "overgeneration", "truncated": "truncated_fraction"})
    for criterion, name in names.items():
        hits = sum(e[criterion] for e in examples)
        summary[name] = hits / n
        summary[f"{name}_ci_low"], summary[f"{name}_ci_high"] = wilson_interval(hits, n)
    summary.update({
        "truncated": sum(e["truncated"] for e in examples),
        "empty": sum(not e["response"] for e in examples),
        "mean_tokens": sum(e["n_tokens"] for e in examples) / n,
        "max_new_tokens": max_new_tokens,
        "seconds": round(time.perf_counter() - started, 2),
    })  # fmt: skip
    return examples, summary

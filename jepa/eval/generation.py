"""Batched greedy generation over chat records, the loop every generation task shares (GSM8K, NL-RX, NQ-Open).

Prompt = the record's system message (if any) + its first user message through the chat template with the
generation prompt; greedy decoding with the KV cache, stopping at the template's end-of-turn; the response is
decoded without special tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from jepa.eval.progress import Progress
from jepa.models import generate
from jepa.models.base import CausalLM
from jepa.tokenizer import Tokenizer


def prompt_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's system message (if any) and its first user message: what the model is prompted with."""
    messages = record["messages"]
    system = [m for m in messages[:1] if m.get("role") == "system"]
    user = next(m for m in messages if m.get("role") == "user")
    return system + [user]


@torch.no_grad()
def generate_and_score(
    model: CausalLM,
    tokenizer: Tokenizer,
    records: list[dict[str, Any]],
    score: Callable[[int, dict[str, Any], str, int], dict[str, Any]],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    progress: bool | None = None,
    desc: str = "generate",
    unit: str = "example",
    done: dict[int, dict[str, Any]] | None = None,
    on_example: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """`score(index, record, response, n_tokens)` for every record, in record order.

    Prompts are sorted by token length (longest first) before batching, so a batch pads little and memory peaks
    in the first batch; the results do not depend on the batching. `done` (index -> example, read back from an
    interrupted evaluation) is not generated again; `on_example` gets each new example as its batch finishes.
    `progress` shows examples done (counted in `unit`s, each as its sequence ends) and tokens generated per
    second on stderr, updated every decoding step (None: as `jepa.eval.progress.showing_progress` says).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    examples = {i: e for i, e in (done or {}).items() if i < len(records)}
    prompts = [tokenizer.encode_chat(prompt_messages(r), add_generation_prompt=True).ids for r in records]
    order = sorted((i for i in range(len(prompts)) if i not in examples), key=lambda i: -len(prompts[i]))
    bar = Progress(len(records), desc, unit=unit, enabled=progress, initial=len(examples))
    was_training = model.training
    model.eval()

    def on_step(new_tokens: int, finished: int) -> None:
        bar.add_tokens(new_tokens)
        bar.update(finished)

    try:
        for first in range(0, len(order), batch_size):
            chunk = order[first : first + batch_size]
            outputs = generate(model, [prompts[i] for i in chunk], max_new_tokens, stop_ids=tokenizer.stop_ids,
                               pad_id=tokenizer.pad_id, on_step=on_step)  # fmt: skip
            for i, ids in zip(chunk, outputs):
                examples[i] = score(i, records[i], tokenizer.decode(ids, skip_special_tokens=True), len(ids))
                if on_example is not None:
                    on_example(examples[i])
    finally:
        model.train(was_training)
        bar.close()
    return [examples[i] for i in range(len(records))]


def response_ending(response: str, reference: str, n_tokens: int, max_new_tokens: int) -> dict[str, Any]:
    """How a response relates to its reference beyond correctness (the same for every task): `contains` (the
    reference occurs in it), `overgeneration` (it starts with the reference and goes on: the answer was given and
    the model did not stop), `truncated` (generation hit `max_new_tokens` without a stop token)."""
    return {
        "contains": reference in response,
        "overgeneration": response.startswith(reference) and len(response) > len(reference),
        "truncated": n_tokens >= max_new_tokens,
    }

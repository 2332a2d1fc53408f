"""Batched generation with a KV cache: greedy or temperature/top-p sampling, left padding, stop tokens."""

from __future__ import annotations

from collections.abc import Callable

import torch

from jepa.models.base import CausalLM


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """logits [B, V] -> next ids [B]. temperature 0 = greedy."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: CausalLM,
    prompts: list[list[int]],
    max_new_tokens: int,
    stop_ids: list[int] | tuple[int, ...] = (),
    temperature: float = 0.0,
    top_p: float = 1.0,
    pad_id: int = 0,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_token: Callable[[int, int], None] | None = None,
) -> list[list[int]]:
    """Continue each prompt (token-id lists of any lengths); returns the new ids of each, stop token excluded.

    Prompts are left-padded; position ids count real tokens only and padded keys are masked out, so a
    prompt's continuation does not depend on what it is batched with. A decoding step reads the device once (the
    chosen tokens; stop tokens are found in that read); a row that has stopped decodes on with the others, its
    tokens not kept (dropping it from the batch was tried: no faster on CPU, where the weight matmuls dominate).
    `on_step(new_tokens, finished)` is called after every decoding step with the tokens it added and the sequences
    it ended (at a stop token or at `max_new_tokens`): over a call, `finished` sums to the number of prompts.
    `on_token(row, token)` gets each kept token as it is chosen (streaming; a stop token is not passed).
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    B, P = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, P), pad_id, dtype=torch.long, device=device)
    key_valid = torch.zeros(B, P + max_new_tokens, dtype=torch.bool, device=device)
    for b, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {b} is empty")
        ids[b, P - len(p) :] = torch.tensor(p, device=device)
        key_valid[b, P - len(p) : P] = True
    positions = (key_valid[:, :P].long().cumsum(-1) - 1).clamp(min=0)
    causal = torch.ones(P, P, dtype=torch.bool, device=device).tril()
    # Padding queries see only themselves: a fully masked row would make SDPA return NaN.
    mask = (causal & key_valid[:, None, :P]) | torch.eye(P, dtype=torch.bool, device=device)
    cache = model.kv_cache(B, P + max_new_tokens, dtype, device)

    h = model(ids, attn_mask=mask[:, None], position_ids=positions, cache=cache)
    next_pos = positions[:, -1] + 1
    stop = set(stop_ids)
    done = [False] * B  # the row has met a stop token
    out: list[list[int]] = [[] for _ in range(B)]
    for step in range(max_new_tokens):
        token = sample_next(model.logits(h[:, -1]).float(), temperature, top_p, generator)
        chosen = token.tolist()  # the step's one host read
        ended = 0
        for i, t in enumerate(chosen):
            if done[i]:
                continue
            if t in stop:
                done[i], ended = True, ended + 1
                continue
            out[i].append(t)
            if on_token is not None:
                on_token(i, t)
        running = B - sum(done)
        last = running == 0 or step == max_new_tokens - 1
        if on_step is not None:
            on_step(running, ended + (running if last else 0))
        if last:
            break
        key_valid[:, P + step] = True
        step_mask = key_valid[:, None, None, : P + step + 1]
        h = model(token[:, None], attn_mask=step_mask, position_ids=next_pos[:, None], cache=cache)
        next_pos = next_pos + 1
    return out

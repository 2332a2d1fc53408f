"""One optimizer step: `train_step(state, micro_batches)`, the function the loop, the tests and the benchmarks
share.

Loss of one optimizer step (docs/method.md §1), over all micro-batches of all processes:

    L = gamma * (sum of CE over every label token) / (number of label tokens)
      + lambda * (sum of per-row JEPA losses)       / (number of JEPA rows)

Both denominators are counted from the collated batches BEFORE any forward pass (and summed over processes),
so each micro-batch's backward already carries its exact share and the logged loss equals what one big batch
would give. Under DDP the per-process loss is multiplied by the world size because DDP averages gradients.
"""

from __future__ import annotations

import math
import time

import torch

from jepa.data.collator import to_device
from jepa.train.data import rank_micro_batches
from jepa.train.distributed import all_reduce_sum
from jepa.train.optim import autocast_context
from jepa.train.parallel import full_value
from jepa.train.state import TrainingDiverged, TrainState

Batch = dict  # see jepa.data.collator.collate
# The host-side counts of a micro-batch that a step sums (collate's num_* keys).
COUNTS = ("num_labels", "num_jepa", "num_tokens", "num_positions", "num_attended_pairs")


def next_micro_batches(state: TrainState) -> list[Batch]:
    """This rank's collated micro-batches of the sampler's next global batch (advances the sampler)."""
    return step_micro_batches(state, state.sampler.next_batch(), state.step)


def step_micro_batches(state: TrainState, indices: list[int], step: int) -> list[Batch]:
    """This rank's collated micro-batches of optimizer step `step` (0-based) whose global batch is `indices`.
    Reads only the immutable parts of `state` (config, dataset, rank), so a background thread may call it."""
    cfg = state.cfg
    return rank_micro_batches(
        state.dataset,
        indices,
        cfg.schedule.batch_size,
        cfg.schedule.grad_accum,
        state.world.rank,
        step,
        cfg.run.seed,
        cfg.jepa.ratio,
        pad_multiple(cfg.data.pad_to_multiple, state.world.device),
        cfg.data.pack_length,
    )


def pad_multiple(configured: int, device: torch.device) -> int:
    """`data.pad_to_multiple`, raised to a multiple of 128 on CUDA: cuDNN's SDPA returns NaN for masked attention
    at lengths T % 128 == 64 (pytorch issue 196678)."""
    return math.lcm(configured, 128) if device.type == "cuda" else configured


def forward_backward(state: TrainState, micro_batches: list[Batch]) -> torch.Tensor:
    """Forward + backward every micro-batch of one optimizer step; gradients end up in `.grad`.

    The loss denominators (label tokens and JEPA rows of the whole step, over all processes) are counted on the
    host by the collator, so no micro-batch waits for the device: for one process they are plain numbers, under
    DDP an all-reduced device tensor. Returns float64 [7] on the device, summed over processes: Σ LM CE,
    Σ JEPA loss, then the COUNTS (label tokens, JEPA rows, real tokens, positions, attended pairs).
    """
    cfg, world, objective = state.cfg, state.world, state.objective
    counts = [sum(b[k] for b in micro_batches) for k in COUNTS]
    counts = torch.tensor(counts, dtype=torch.float64)
    if world.is_distributed:
        counts = all_reduce_sum(counts.to(world.device), world)
        n_tokens, n_rows = counts[0].float().clamp(min=1.0), counts[1].float().clamp(min=1.0)
    else:
        n_tokens, n_rows = (max(sum(b[k] for b in micro_batches), 1.0) for k in ("num_labels", "num_jepa"))
    gamma, lam = cfg.jepa.gamma, cfg.jepa.lam
    totals = torch.zeros(2, dtype=torch.float64, device=world.device)
    for i, batch in enumerate(micro_batches):
        batch = to_device(batch, world.device)
        last = i == len(micro_batches) - 1
        with state.parallel.accumulating(objective, last):  # gradients are reduced on the last micro-batch only
            with autocast_context(cfg.precision.mode, world.device):
                terms = objective(batch)
            loss = gamma * terms.lm_sum / n_tokens + lam * terms.jepa_sum / n_rows
            state.scaler.scale(loss * world.world_size).backward()
        totals += torch.stack([terms.lm_sum.detach(), terms.jepa_sum.detach()]).double()
    return torch.cat([all_reduce_sum(totals, world), counts.to(world.device)])


def step_metrics(values: list[float], gamma: float, lam: float) -> dict:
    """forward_backward's totals (as host numbers) -> {"loss", "lm", "jepa", "lm_tokens", "jepa_rows", "tokens",
    "real_token_fraction"}, where loss = gamma * lm + lambda * jepa exactly as one big batch would give it."""
    lm_sum, jepa_sum, n_tokens, n_rows, n_real, n_positions, _ = values
    lm, jepa = lm_sum / max(n_tokens, 1.0), jepa_sum / max(n_rows, 1.0)
    return {
        "loss": gamma * lm + lam * jepa,
        "lm": lm,
        "jepa": jepa,
        "lm_tokens": int(n_tokens),
        "jepa_rows": int(n_rows),
        "tokens": int(n_real),
        "real_token_fraction": n_real / max(n_positions, 1.0),
    }


def train_step(state: TrainState, micro_batches: list[Batch]) -> dict:
    """Forward/backward, clip, AdamW step and schedule step for one optimizer step; `state.step` advances.

    Returns the step's metrics: step_metrics' plus step, kind, lr (the one used), grad_norm (before clipping),
    tokens_per_s and step_s (this function's wall time, collation excluded), tflops (model FLOPs per second of
    all processes, jepa/train/flops.py) and mfu (over `run.peak_tflops` x processes, when the peak is known).
    The device is read once, after clipping. Raises TrainingDiverged before applying a step whose loss or
    gradient norm is not finite (fp16: the scaler skips such steps).
    """
    started = time.perf_counter()
    totals = forward_backward(state, micro_batches)
    state.scaler.unscale_(state.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(state.trainable_parameters, state.cfg.optim.clip or math.inf)
    grad_norm = full_value(grad_norm.detach()).double().reshape(1).to(totals.device)  # FSDP: a DTensor
    *values, grad_norm = torch.cat([totals, grad_norm]).tolist()
    metrics = step_metrics(values, state.cfg.jepa.gamma, state.cfg.jepa.lam)
    where = (
        f"at step {state.step + 1}; training stopped, the step was not applied; last good checkpoint: "
        f"{state.last_checkpoint or 'none (no checkpoint was written before)'}; to go on, resume from it with a "
        "lower optim.lr, optim.clip > 0 or bf16 instead of fp16, or look at the data of this step"
    )
    if not math.isfinite(metrics["loss"]):
        raise TrainingDiverged(f"loss is {metrics['loss']} {where} (lm={metrics['lm']}, jepa={metrics['jepa']})")
    if not math.isfinite(grad_norm) and not state.scaler.is_enabled():
        raise TrainingDiverged(f"gradient norm is {grad_norm} {where}")
    lr = state.scheduler.get_last_lr()[0]
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    elapsed = time.perf_counter() - started
    tflops = state.flops.step_flops(values[4], values[2], values[6]) / elapsed / 1e12
    metrics.update(step=state.step, kind="train", lr=lr, grad_norm=grad_norm,
                   tokens_per_s=metrics["tokens"] / elapsed, step_s=elapsed, tflops=tflops)  # fmt: skip
    if state.peak_tflops:
        metrics["mfu"] = tflops / (state.peak_tflops * state.world.world_size)
    return metrics

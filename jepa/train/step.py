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
from dataclasses import dataclass
from typing import Any

import torch

from jepa.data.batch import Batch, BatchCounts
from jepa.train.data import rank_micro_batches
from jepa.train.distributed import all_reduce_sum
from jepa.train.optim import autocast_context
from jepa.train.parallel import full_value
from jepa.train.state import TrainingDiverged, TrainState


@dataclass(frozen=True)
class StepTotals:
    """One optimizer step's sums over every micro-batch of every process, as host numbers."""

    lm_sum: float  # Σ CE over the label tokens
    jepa_sum: float  # Σ per-row JEPA loss over the JEPA rows
    counts: BatchCounts
    grad_norm: float = math.nan  # before clipping (nan: not read)

    def metrics(self, gamma: float, lam: float) -> dict[str, Any]:
        """{"loss", "lm", "jepa", "lm_tokens", "jepa_rows", "tokens", "real_token_fraction"}, where loss =
        gamma * lm + lambda * jepa exactly as one big batch would give it."""
        counts = self.counts
        lm, jepa = self.lm_sum / max(counts.labels, 1), self.jepa_sum / max(counts.jepa_rows, 1)
        return {
            "loss": gamma * lm + lam * jepa,
            "lm": lm,
            "jepa": jepa,
            "lm_tokens": counts.labels,
            "jepa_rows": counts.jepa_rows,
            "tokens": counts.tokens,
            "real_token_fraction": counts.tokens / max(counts.positions, 1),
        }


@dataclass
class StepSums:
    """What `forward_backward` leaves on the device, summed over processes; `read` brings it to the host in one
    transfer. `counts` stays on the host for one process; under DDP it is the all-reduced float64 vector of
    `BatchCounts.as_tensor` on the device."""

    losses: torch.Tensor  # float64 [2]: Σ LM CE, Σ JEPA loss
    counts: BatchCounts | torch.Tensor

    def read(self, grad_norm: torch.Tensor | None = None) -> StepTotals:
        """The totals as host numbers (one device read), with `grad_norm` (a scalar on the same device) if given."""
        parts = [self.losses]
        if isinstance(self.counts, torch.Tensor):
            parts.append(self.counts)
        if grad_norm is not None:
            parts.append(grad_norm.double().reshape(1))
        values = torch.cat(parts).tolist()
        lm_sum, jepa_sum = values[:2]
        if isinstance(self.counts, torch.Tensor):
            counts = BatchCounts.from_values(values[2 : 2 + len(self.counts)])
        else:
            counts = self.counts
        return StepTotals(lm_sum=lm_sum, jepa_sum=jepa_sum, counts=counts,
                          grad_norm=values[-1] if grad_norm is not None else math.nan)  # fmt: skip


def next_micro_batches(state: TrainState) -> list[Batch]:
    """This rank's collated micro-batches of the sampler's next global batch (advances the sampler)."""
    return step_micro_batches(state, state.sampler.next_batch(), state.step)


def step_micro_batches(state: TrainState, indices: list[int], step: int) -> list[Batch]:
    """This rank's collated micro-batches of optimizer step `step` (0-based) whose global batch is `indices`.
    Reads only the immutable parts of `state` (config, dataset, rank), so a background thread may call it."""
    cfg = state.cfg
    return rank_micro_batches(
        data=state.dataset,
        indices=indices,
        batch_size=cfg.schedule.batch_size,
        grad_accum=cfg.schedule.grad_accum,
        rank=state.world.rank,
        step=step,
        seed=cfg.run.seed,
        jepa_ratio=cfg.jepa.ratio,
        pad_to_multiple=pad_multiple(
            cfg.data.pad_to_multiple, state.world.device, precision=cfg.precision.mode, attention=state.attention
        ),
        pack_length=cfg.data.pack_length,
    )


def pad_multiple(configured: int, device: torch.device, *, precision: str, attention: str) -> int:
    """`data.pad_to_multiple`, raised to a multiple of 128 where cuDNN's SDPA runs: CUDA, fp16 / bf16, the SDPA
    path. cuDNN returns NaN for masked attention at lengths T % 128 == 64 (pytorch issue 196678); fp32 never
    reaches cuDNN and FlexAttention is not SDPA, so neither pays the padding (13-token reversal rows stay 13)."""
    cudnn = device.type == "cuda" and precision in ("bf16", "fp16", "pure_bf16") and attention == "sdpa"
    return math.lcm(configured, 128) if cudnn else configured


def forward_backward(state: TrainState, micro_batches: list[Batch]) -> StepSums:
    """Forward + backward every micro-batch of one optimizer step; gradients end up in `.grad`.

    The loss denominators (label tokens and JEPA rows of the whole step, over all processes) are counted on the
    host by the collator, so no micro-batch waits for the device: for one process they are plain numbers, under
    DDP an all-reduced device tensor. Returns the step's sums, still on the device (see StepSums).
    """
    cfg, world, objective = state.cfg, state.world, state.objective
    counts = BatchCounts.total(b.counts for b in micro_batches)
    step_counts: BatchCounts | torch.Tensor = counts
    if world.is_distributed:
        host = counts.as_tensor()
        if world.device.type == "cuda":  # pinned: the copy does not wait for the stream
            host = host.pin_memory()
        step_counts = all_reduce_sum(host.to(world.device, non_blocking=True), world)
        n_tokens: torch.Tensor | float = step_counts[0].float().clamp(min=1.0)
        n_rows: torch.Tensor | float = step_counts[1].float().clamp(min=1.0)
    else:
        n_tokens, n_rows = max(counts.labels, 1.0), max(counts.jepa_rows, 1.0)
    gamma, lam = cfg.jepa.gamma, cfg.jepa.lam
    totals = torch.zeros(2, dtype=torch.float64, device=world.device)
    for i, batch in enumerate(micro_batches):
        batch = batch.to(world.device)
        last = i == len(micro_batches) - 1
        with state.parallel.accumulating(objective, last):  # gradients are reduced on the last micro-batch only
            with autocast_context(cfg.precision.mode, world.device):
                terms = objective(batch)
            loss = gamma * terms.lm_sum / n_tokens + lam * terms.jepa_sum / n_rows
            state.scaler.scale(loss * world.world_size).backward()
        totals += torch.stack([terms.lm_sum.detach(), terms.jepa_sum.detach()]).double()
    return StepSums(losses=all_reduce_sum(totals, world), counts=step_counts)


def train_step(state: TrainState, micro_batches: list[Batch]) -> dict[str, Any]:
    """Forward/backward, clip, AdamW step and schedule step for one optimizer step; `state.step` advances.

    Returns the step's metrics: StepTotals.metrics' plus step, kind, lr (the one used), grad_norm (before clipping),
    tokens_per_s and step_s (this function's wall time, collation excluded) split into forward_backward_s (through
    clipping and the one device read, so the device has finished them) and optimizer_s (the AdamW and schedule
    step; on CUDA its kernels are only launched here and finish inside the next step's forward_backward_s), tflops
    (model FLOPs per second of all processes, jepa/train/flops.py) and mfu (over `run.peak_tflops` x processes,
    when the peak is known).
    The device is read once, after clipping. Raises TrainingDiverged before applying a step whose loss or
    gradient norm is not finite (fp16: the scaler skips such steps).
    """
    started = time.perf_counter()
    sums = forward_backward(state, micro_batches)
    state.scaler.unscale_(state.optimizer)
    norm = torch.nn.utils.clip_grad_norm_(state.trainable_parameters, state.cfg.optim.clip or math.inf)
    totals = sums.read(full_value(norm.detach()).to(sums.losses.device))  # FSDP: a DTensor
    forward_backward_done = time.perf_counter()
    grad_norm = totals.grad_norm
    metrics = totals.metrics(state.cfg.jepa.gamma, state.cfg.jepa.lam)
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
    counts = totals.counts
    flops = state.flops.step_flops(
        tokens=counts.tokens, label_tokens=counts.labels, attended_pairs=counts.attended_pairs
    )
    tflops = flops / elapsed / 1e12
    metrics.update(step=state.step, kind="train", lr=lr, grad_norm=grad_norm,
                   tokens_per_s=metrics["tokens"] / elapsed, step_s=elapsed, tflops=tflops,
                   forward_backward_s=forward_backward_done - started,
                   optimizer_s=elapsed - (forward_backward_done - started))  # fmt: skip
    if not state.flops.weight_grads:  # LoRA: beside the 4N count, the 6N figure most MFU numbers use
        flops_6n = state.flops.step_flops(
            tokens=counts.tokens, label_tokens=counts.labels, attended_pairs=counts.attended_pairs, weight_grads=True
        )
        metrics["tflops_6n"] = flops_6n / elapsed / 1e12
    if state.peak_tflops:
        metrics["mfu"] = tflops / (state.peak_tflops * state.world.world_size)
        if "tflops_6n" in metrics:
            metrics["mfu_6n"] = metrics["tflops_6n"] / (state.peak_tflops * state.world.world_size)
    return metrics

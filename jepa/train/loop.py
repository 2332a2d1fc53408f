"""The training loop, top to bottom: processes and device, data, model (+ LoRA, predictors), optimizer and
schedule, resume, then per optimizer step: micro-batches -> normalised loss -> backward -> clip -> step.

Loss of one optimizer step (SPEC §1), over all micro-batches of all processes:

    L = gamma * (sum of CE over every label token) / (number of label tokens)
      + lambda * (sum of per-row JEPA losses)       / (number of JEPA rows)

Both denominators are counted from the collated batches BEFORE any forward pass (and summed over processes),
so each micro-batch's backward already carries its exact share and the logged loss equals what one big batch
would give. Under DDP the per-process loss is multiplied by the world size because DDP averages gradients.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from jepa.losses import IGNORE_INDEX, jepa_loss_fn, lm_loss_sum
from jepa.models import build_model, load_pretrained, save_pretrained
from jepa.models.lora import apply_lora, save_adapter, save_merged
from jepa.objective import PredictorEmbeddings, forward_hidden, view_embeddings
from jepa.tokenizer import Tokenizer
from jepa.train.checkpoint import all_rng_states, find_latest, load_checkpoint, save_checkpoint, step_dirs
from jepa.train.config import DEFAULT_LORA_TARGETS, TrainConfig, check_paths, dump_config
from jepa.train.data import EpochSampler, TrainData, load_train_data, rank_micro_batches

EvalFn = Callable[[nn.Module, "PredictorEmbeddings | None", int], dict]


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN/inf; training stopped before applying that step."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    last_checkpoint: Path | None
    final_dir: Path | None
    last_metrics: dict


# ---------------------------------------------------------------------------------------------- processes


@dataclass
class Processes:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ddp(self) -> bool:
        return self.world_size > 1


def setup_processes(device_pref: str) -> Processes:
    """Single process, or torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): NCCL on GPU, gloo on CPU."""
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device: cuda requested but torch sees no GPU (use run.device=cpu)")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Processes(rank, world_size, device)


def all_reduce_sum(t: torch.Tensor, procs: Processes) -> torch.Tensor:
    if procs.ddp:
        dist.all_reduce(t)
    return t


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- the model


class TrainModule(nn.Module):
    """Model + predictor embeddings behind one forward, so DDP sees every trainable parameter.

    forward(batch) -> (sum of LM CE over label tokens, sum of the per-row JEPA loss), both fp32 scalars.
    """

    def __init__(self, model: nn.Module, predictors: PredictorEmbeddings | None, loss: str, temperature: float,
                 gather_negatives: bool) -> None:
        super().__init__()
        self.model, self.predictors = model, predictors
        self.loss_fn = jepa_loss_fn(loss)
        self.loss_kwargs = {"temperature": temperature} if loss == "infonce" else {}
        self.gather_negatives = gather_negatives

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = forward_hidden(self.model, self.predictors, batch)
        lm_sum, _ = lm_loss_sum(h, batch["labels"], self.model.lm_head)
        pred, target = view_embeddings(h, batch)
        kwargs = dict(self.loss_kwargs)
        if self.gather_negatives and dist.is_initialized():
            kwargs["negatives"] = gather_other_targets(target)
        jepa_sum = self.loss_fn(pred, target, **kwargs).sum() if len(pred) else h.sum() * 0.0
        if self.predictors is not None:
            # Keeps the predictor tokens in every graph (an LM-only micro-batch would leave them unused and
            # DDP would wait forever for their gradient).
            jepa_sum = jepa_sum + self.predictors.weight.sum() * 0.0
        return lm_sum, jepa_sum.float()


def gather_other_targets(target: torch.Tensor) -> torch.Tensor:
    """The other ranks' target embeddings [M, D], detached: gradients flow only through this rank's own
    targets (its positives and in-batch negatives). Ranks may hold different numbers of JEPA rows."""
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=target.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(target)], device=target.device))
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, target.shape[-1], dtype=target.dtype, device=target.device)
    padded[:len(target)] = target.detach()
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:int(n)] for r, (g, n) in enumerate(zip(gathered, sizes)) if r != rank])


def build_train_model(cfg: TrainConfig, data: TrainData, device: torch.device) -> nn.Module:
    """Pretrained weights from model.path, or model.arch from scratch (vocab_size from the data if absent)."""
    dtype = torch.bfloat16 if cfg.precision.mode == "pure_bf16" else torch.float32
    if cfg.model.path is not None:
        model = load_pretrained(cfg.model.path, dtype=dtype, device=device)
    else:
        arch = dict(cfg.model.arch)
        if data.vocab_size is not None:
            arch.setdefault("vocab_size", data.vocab_size)
            if arch["vocab_size"] < data.vocab_size:
                raise ValueError(f"model.arch.vocab_size: {arch['vocab_size']} is smaller than the data's "
                                 f"vocabulary ({data.vocab_size})")
        model = build_model(arch, source="model.arch").to(device=device, dtype=dtype)
    model.gradient_checkpointing = cfg.model.gradient_checkpointing
    return model.train()


def make_predictors(cfg: TrainConfig, model: nn.Module) -> PredictorEmbeddings | None:
    """K trainable predictor tokens, only when the run has a JEPA term with predictors."""
    if cfg.layout.mode == "regular" or cfg.jepa.lam == 0 or cfg.layout.predictors == 0:
        return None
    predictors = PredictorEmbeddings(cfg.layout.predictors, model.embed_tokens, seed=cfg.jepa.predictor_seed)
    return predictors.to(model.embed_tokens.weight.dtype)


# ---------------------------------------------------------------------------------------------- optimizer


def make_optimizer(cfg: TrainConfig, model: nn.Module, predictors: nn.Module | None,
                   device: torch.device) -> torch.optim.AdamW:
    """AdamW (fused on CUDA). Weight decay on matrices only: not on biases, norms or predictor tokens."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    if predictors is not None:
        no_decay.append(predictors.weight)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.optim.lr,
                             betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps,
                             fused=device.type == "cuda" or None)


class LRSchedule:
    """Multiplier of the peak lr at optimizer step s (0-based), Hugging Face's conventions: linear warm-up
    s / warmup, then constant, linear decay or cosine decay to min_lr_ratio at `total` steps."""

    def __init__(self, kind: str, total: int, warmup: int, min_ratio: float) -> None:
        self.kind, self.total, self.warmup, self.min_ratio = kind, total, warmup, min_ratio

    def __call__(self, s: int) -> float:
        if s < self.warmup:
            return s / max(1, self.warmup)
        if self.kind == "constant":
            return 1.0
        progress = (s - self.warmup) / max(1, self.total - self.warmup)
        decay = max(0.0, 1.0 - progress) if self.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (1.0 - self.min_ratio) * decay


def autocast_context(mode: str, device: torch.device):
    if mode == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if mode == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()  # fp32, and pure_bf16 whose weights already are bf16


# ---------------------------------------------------------------------------------------------- one step


def step_counts(micro_batches: list[dict[str, torch.Tensor]], procs: Processes) -> tuple[float, float, float]:
    """(label tokens, JEPA rows, packed tokens) of the whole optimizer step over all processes, counted from the
    collated batches before any forward: the first two are the loss denominators."""
    counts = torch.tensor([sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in micro_batches),
                           sum(int(b["jepa_rows"].sum()) for b in micro_batches),
                           sum(int(b.get("num_tokens", b["input_ids"].numel())) for b in micro_batches)],
                          dtype=torch.float64)
    counts = all_reduce_sum(counts.to(procs.device), procs).cpu()
    return float(counts[0]), float(counts[1]), float(counts[2])


def accumulate_gradients(module: nn.Module, micro_batches: list[dict[str, torch.Tensor]], cfg: TrainConfig,
                         procs: Processes, scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """Forward + backward every micro-batch of one optimizer step; gradients end up in `.grad`.

    Returns {"loss", "lm", "jepa", "lm_tokens", "jepa_rows", "tokens"} for the whole step (all processes), where
    loss = gamma * lm + lambda * jepa exactly as one big batch would give it.
    """
    n_tokens, n_rows, n_packed = step_counts(micro_batches, procs)
    gamma, lam = cfg.jepa.gamma, cfg.jepa.lam
    totals = torch.zeros(2, dtype=torch.float64, device=procs.device)
    for i, batch in enumerate(micro_batches):
        batch = {k: v.to(procs.device, non_blocking=True) for k, v in batch.items()}
        last = i == len(micro_batches) - 1
        # DDP all-reduces gradients on the last micro-batch only.
        sync = nullcontext() if last or not isinstance(module, DistributedDataParallel) else module.no_sync()
        with sync:
            with autocast_context(cfg.precision.mode, procs.device):
                lm_sum, jepa_sum = module(batch)
            loss = gamma * lm_sum / max(n_tokens, 1.0) + lam * jepa_sum / max(n_rows, 1.0)
            loss = loss * procs.world_size
            (scaler.scale(loss) if scaler is not None else loss).backward()
        totals += torch.stack([lm_sum.detach(), jepa_sum.detach()]).double()
    totals = all_reduce_sum(totals, procs).cpu()
    lm, jepa = float(totals[0]) / max(n_tokens, 1.0), float(totals[1]) / max(n_rows, 1.0)
    return {"loss": gamma * lm + lam * jepa, "lm": lm, "jepa": jepa, "lm_tokens": int(n_tokens),
            "jepa_rows": int(n_rows), "tokens": int(n_packed)}


# ---------------------------------------------------------------------------------------------- the run


def load_eval_fn(cfg: TrainConfig) -> EvalFn | None:
    """`eval.fn: "package.module:factory"`; factory(cfg) returns the hook (model, predictors, step) -> dict."""
    if cfg.eval.fn is None:
        return None
    module_name, _, attr = cfg.eval.fn.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"eval.fn: cannot import {cfg.eval.fn} ({exc})") from None
    return factory(cfg)


def export_final(cfg: TrainConfig, model: nn.Module, predictors: nn.Module | None, lora: bool) -> Path | None:
    """runs/NAME/final: an HF directory (LoRA merged) or the adapter, + predictors and tokenizer/vocab files."""
    if cfg.checkpoint.export == "none":
        return None
    final = cfg.run_dir / "final"
    shutil.rmtree(final, ignore_errors=True)
    if cfg.checkpoint.export == "adapter" and lora:
        save_adapter(model, final)
    elif lora:
        save_merged(model, final)
    else:
        save_pretrained(model, final)
    if predictors is not None:
        from safetensors.torch import save_file
        save_file({"weight": predictors.weight.detach().contiguous().cpu()}, str(final / "predictors.safetensors"))
    sources = [Path(cfg.model.tokenizer or cfg.model.path or "")] if cfg.layout.mode != "reversal" else []
    for src in sources:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
            if (src / name).is_file():
                shutil.copy(src / name, final / name)
    if cfg.layout.mode == "reversal":
        shutil.copy(Path(cfg.data.train) / "vocab.json", final / "vocab.json")
    return final


def train(cfg: TrainConfig, eval_fn: EvalFn | None = None, progress: bool = True) -> TrainResult:
    """Run (or resume) the configured training; `eval_fn` (else the one `eval.fn` names) runs every `eval.every`
    steps and at the end. Raises ValueError/FileNotFoundError for bad configs or data,
    TrainingDiverged on a non-finite loss (nothing is saved for that step; earlier checkpoints stay)."""
    check_paths(cfg)
    eval_fn = eval_fn or load_eval_fn(cfg)
    procs = setup_processes(cfg.run.device)
    if cfg.run.threads and procs.device.type == "cpu":
        torch.set_num_threads(cfg.run.threads)
    seed_everything(cfg.run.seed)
    run_dir = cfg.run_dir
    say = print if procs.is_main and progress else (lambda *a, **k: None)

    # ---- data
    tokenizer = None
    if cfg.layout.mode != "reversal":
        tokenizer = Tokenizer.from_dir(cfg.model.tokenizer or cfg.model.path, date_string=cfg.data.date_string)
    layout = cfg.layout
    data = load_train_data(cfg.data.train, layout, tokenizer, cfg.data.limit, cfg.data.skip_bad)
    if cfg.jepa.lam == 0 and layout.mode != "regular":
        data.rows = [r.lm_only() for r in data.rows]  # lambda = 0: plain SFT rows, no JEPA segments at all
    say(f"data: {data.summary()}")
    s = cfg.schedule
    global_batch = s.batch_size * s.grad_accum * procs.world_size
    sampler = EpochSampler(len(data.rows), global_batch, cfg.run.seed, cfg.data.shuffle)
    total_steps = s.max_steps or s.epochs * sampler.steps_per_epoch
    warmup = s.warmup_steps or int(s.warmup_ratio * total_steps)

    # ---- model, LoRA, predictor tokens
    model = build_train_model(cfg, data, procs.device)
    if cfg.lora.enabled:
        model_type = model.config.to_hf()["model_type"]
        targets = cfg.lora.targets or DEFAULT_LORA_TARGETS[model_type]
        apply_lora(model, targets, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout)
    predictors = make_predictors(cfg, model)
    if predictors is not None:
        predictors.to(procs.device)
    module: nn.Module = TrainModule(model, predictors, cfg.jepa.loss, cfg.jepa.temperature,
                                    cfg.jepa.gather_negatives)
    if procs.ddp:
        module = DistributedDataParallel(module, device_ids=[procs.device.index] if procs.device.type == "cuda"
                                         else None)
    params = [p for p in module.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    say(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"{n_trainable / 1e6:.2f}M trainable; {total_steps} optimizer steps of {global_batch} rows")

    # ---- optimizer, schedule, precision
    optimizer = make_optimizer(cfg, model, predictors, procs.device)
    lr_schedule = LRSchedule(s.kind, total_steps, warmup, s.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule)
    scaler = torch.amp.GradScaler(procs.device.type) if cfg.precision.mode == "fp16" else None
    if scaler is not None:  # the scaler skips steps with inf gradients; the schedule advances anyway, on purpose
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()` before")

    # ---- resume
    step, last_checkpoint = 0, None
    resume = cfg.checkpoint.resume
    if resume == "auto":
        last_checkpoint = find_latest(run_dir)
    elif resume != "none":
        last_checkpoint = Path(resume)
    elif step_dirs(run_dir):
        raise ValueError(f"checkpoint.resume: {run_dir} already has checkpoints; use checkpoint.resume=auto to "
                         "continue or another run.name")
    if last_checkpoint is not None:
        state = load_checkpoint(last_checkpoint, model, predictors, cfg.lora.enabled, optimizer, scheduler, scaler,
                                procs.rank, procs.world_size)
        sampler.load_state_dict(state["sampler"])
        # LambdaLR restored the checkpoint's schedule fields (its total steps); the current config's schedule wins.
        scheduler.lr_lambdas = [lr_schedule] * len(optimizer.param_groups)
        step = state["step"]
        say(f"resumed from {last_checkpoint} (step {step})")

    metrics_path = run_dir / "metrics.jsonl"
    if procs.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg))
        kept = []
        if step and metrics_path.is_file():  # drop lines logged after the checkpoint we resume from
            kept = [ln for ln in metrics_path.read_text().splitlines() if json.loads(ln)["step"] <= step]
        metrics_path.write_text("".join(ln + "\n" for ln in kept))

    def log(record: dict) -> None:
        if procs.is_main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def checkpoint(at_step: int) -> Path:
        rng_states = all_rng_states()  # collective: every rank
        path = run_dir / f"step_{at_step}"
        if procs.is_main:
            save_checkpoint(run_dir, at_step, model, predictors, cfg.lora.enabled, optimizer, scheduler, scaler,
                            sampler.state_dict(), procs.world_size, rng_states, cfg.checkpoint.keep_last)
        if procs.ddp:
            dist.barrier()
        return path

    def evaluate(at_step: int) -> None:
        if eval_fn is None:
            return
        if procs.is_main:
            model.eval()
            with torch.no_grad():
                result = eval_fn(model, predictors, at_step)
            model.train()
            log({"step": at_step, "kind": "eval", **result})
            say(f"eval step {at_step}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                    for k, v in result.items()))
        if procs.ddp:
            dist.barrier()

    # ---- the loop
    end_step = min(total_steps, s.stop_at_step or total_steps)
    bar = tqdm(total=total_steps, initial=step, disable=not (procs.is_main and progress), dynamic_ncols=True)
    metrics: dict = {}
    started = time.perf_counter()
    while step < end_step:
        t0 = time.perf_counter()
        epoch = sampler.epoch
        indices = sampler.next_batch()
        micro_batches = rank_micro_batches(data, indices, s.batch_size, s.grad_accum, procs.rank, step, cfg.run.seed,
                                           cfg.jepa.ratio, cfg.data.pad_to_multiple)
        metrics = accumulate_gradients(module, micro_batches, cfg, procs, scaler)
        tokens = metrics["tokens"]
        if not math.isfinite(metrics["loss"]):
            where = last_checkpoint or "none (no checkpoint was written before)"
            raise TrainingDiverged(f"loss is {metrics['loss']} at step {step + 1} (lm={metrics['lm']}, "
                                   f"jepa={metrics['jepa']}); training stopped, the step was not applied; "
                                   f"last good checkpoint: {where}")
        if scaler is not None:
            scaler.unscale_(optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip or float("inf")))
        if not math.isfinite(grad_norm) and scaler is None:  # fp16: the scaler skips the step and lowers its scale
            raise TrainingDiverged(f"gradient norm is {grad_norm} at step {step + 1}; training stopped, the step "
                                   f"was not applied; last good checkpoint: {last_checkpoint or 'none'}")
        lr = scheduler.get_last_lr()[0]
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        elapsed = time.perf_counter() - t0
        metrics.update(step=step, kind="train", epoch=epoch, lr=lr, grad_norm=grad_norm,
                       tokens_per_s=tokens / elapsed, step_s=elapsed)
        log(metrics)
        bar.update(1)
        if step % cfg.run.log_every == 0 or step == total_steps:
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", lm=f"{metrics['lm']:.4f}",
                            jepa=f"{metrics['jepa']:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens / elapsed:.0f}")
        if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step < end_step:
            last_checkpoint = checkpoint(step)
        if cfg.eval.every and step % cfg.eval.every == 0 and step < end_step:
            evaluate(step)
    bar.close()

    # ---- the end: a checkpoint of the last step, the exported model, a final evaluation
    if last_checkpoint is None or last_checkpoint.name != f"step_{step}":
        last_checkpoint = checkpoint(step)
    if step < total_steps:  # stopped early (schedule.stop_at_step): resume later with checkpoint.resume=auto
        say(f"stopped at step {step} of {total_steps}; checkpoint: {last_checkpoint}")
        return TrainResult(run_dir, step, last_checkpoint, None, metrics)
    final_dir = export_final(cfg, model, predictors, cfg.lora.enabled) if procs.is_main else None
    evaluate(step)
    say(f"done: {step} steps in {time.perf_counter() - started:.1f} s; metrics: {metrics_path}; "
        f"checkpoint: {last_checkpoint}" + (f"; model: {final_dir}" if final_dir else ""))
    return TrainResult(run_dir, step, last_checkpoint, final_dir, metrics)

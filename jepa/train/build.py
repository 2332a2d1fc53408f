"""Set-up of a run: `build(cfg)` returns the TrainState that `train_step` advances.

Order: paths checked, processes joined, seeds set; the data source's rows; the model (pretrained or from
scratch), LoRA, predictor tokens; the objective (DDP-wrapped for several processes); AdamW, schedule, scaler;
then the newest checkpoint restored when the run resumes. Nothing is written to the run directory here.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from jepa.data.datasets import Dataset, load_dataset
from jepa.data.layouts import MODES
from jepa.eval.hooks import EvalHook
from jepa.models import build_model, load_pretrained
from jepa.models.base import CausalLM
from jepa.models.lora import apply_lora, cast_frozen_bases
from jepa.models.predictors import PredictorEmbeddings
from jepa.objective import Objective
from jepa.train.checkpoint import CheckpointMismatch, all_step_dirs, apply_checkpoint, read_checkpoint, step_dirs
from jepa.train.config import TrainConfig, check_paths
from jepa.train.data import EpochSampler
from jepa.train.distributed import WorldInfo, init_world, seed_everything
from jepa.train.flops import FlopCounter, peak_tflops
from jepa.train.optim import AUTOCAST_DTYPES, LRSchedule, make_optimizer
from jepa.train.parallel import DDP, strategy
from jepa.train.state import TrainState
from jepa.train.trackers import check_installed

# The backend of `model.compile` (the tests swap in "aot_eager": the same graph capture without a C++ build).
COMPILE_BACKEND = "inductor"


def build(cfg: TrainConfig, eval_hook: EvalHook | None = None, verbose: bool = True) -> TrainState:
    """The training state of `cfg`, resumed from its newest checkpoint when `checkpoint.resume` says so.
    `eval_hook` (else the one `eval.fn` names) is kept for the loop. Raises ValueError / FileNotFoundError with
    one line naming the key or file for bad configs and data."""
    check_paths(cfg)
    check_installed(cfg.run.loggers)
    eval_hook = eval_hook or load_eval_hook(cfg)
    parallel = strategy(cfg.distributed.strategy)
    world = init_world(cfg.run.device, parallel.needs_process_group, cfg.distributed.wait_minutes)
    if cfg.model.attention == "flex" and world.device.type != "cuda":  # refused before any global state changes
        raise ValueError("model.attention: flex has no backward on CPU (torch 2.13); use sdpa or run on a GPU")
    if cfg.run.threads and world.device.type == "cpu":
        torch.set_num_threads(cfg.run.threads)
    seed_everything(cfg.run.seed)

    dataset = train_dataset(cfg, world, verbose and world.is_main)
    s = cfg.schedule
    sampler = EpochSampler(
        len(dataset.rows), s.batch_size * s.grad_accum * world.world_size, cfg.run.seed, cfg.data.shuffle
    )
    total_steps = s.max_steps or s.epochs * sampler.steps_per_epoch

    model = build_train_model(cfg, dataset, world.device, parallel)
    check_model_fits_data(cfg, model, dataset)
    predictors = make_predictors(cfg, model)
    attention = attention_kind(cfg, model, world.device)
    objective = Objective(
        model,
        predictors,
        jepa_loss=cfg.jepa.loss,
        temperature=cfg.jepa.temperature,
        gather_negatives=cfg.jepa.gather_negatives,
        attention=attention,
        stp_layer=cfg.jepa.stp_layer,  # ValueError naming the key when the model has fewer layers
    )
    wrapped = parallel.wrap(objective, world, cfg.precision.mode)  # before the optimizer: FSDP shards in place

    optimizer = make_optimizer(cfg.optim, model, predictors, world.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule.from_config(s, total_steps))
    scaler = torch.amp.GradScaler(world.device.type, enabled=cfg.precision.mode == "fp16")
    if scaler.is_enabled():  # the scaler skips steps with inf gradients; the schedule advances anyway, on purpose
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()` before")

    state = TrainState(
        cfg=cfg,
        world=world,
        dataset=dataset,
        sampler=sampler,
        model=model,
        predictors=predictors,
        objective=wrapped,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        flops=FlopCounter.for_model(model, cfg.lora.enabled),
        peak_tflops=peak_tflops(world.device, cfg.run.peak_tflops),
        total_steps=total_steps,
        parallel=parallel,
        attention=attention,
        eval_hook=eval_hook,
        verbose=verbose,
    )
    lambda_zero_warning = MODES[cfg.layout.mode].lambda_zero_warning
    if lambda_zero_warning and cfg.jepa.lam == 0:  # lambda's default is 0: say so rather than train SFT silently
        state.warn(lambda_zero_warning)
    warmup = s.warmup_steps or int(s.warmup_ratio * total_steps)
    if warmup >= total_steps:
        state.warn(f"schedule.warmup_steps: the warm-up ({warmup} steps) is not shorter than the run ({total_steps} "
                   "steps); the learning rate never reaches optim.lr")  # fmt: skip
    state.print_main(f"data: {dataset.summary()}")
    for problem in dataset.truncation_problems(cfg.layout.max_length):
        state.warn(problem)
    n_trainable = sum(p.numel() for p in state.trainable_parameters)
    state.print_main(
        f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"{n_trainable / 1e6:.2f}M trainable; {total_steps} optimizer steps of {sampler.global_batch} "
        "rows"
    )
    resume(state)
    return state


def attention_kind(cfg: TrainConfig, model: CausalLM, device: torch.device) -> str:
    """`model.attention`: auto is the dense-mask SDPA path (FlexAttention stays opt-in until it has run on a GPU);
    flex needs CUDA (checked in `build` before anything else) and no attention dropout."""
    if cfg.model.attention != "flex":
        return "sdpa"
    if getattr(model.config, "attn_pdrop", 0.0) > 0:
        raise ValueError("model.attention: flex has no attention dropout; set model.arch.attn_pdrop: 0 or use sdpa")
    return "flex"


def train_dataset(cfg: TrainConfig, world: WorldInfo | None = None, verbose: bool = False) -> Dataset:
    """The rows of `data.train` laid out for `layout.mode` (through the row cache, `jepa.data.datasets.load_dataset`);
    with lambda = 0 plain SFT rows (no JEPA segments). Several processes: rank 0 reads or builds the cache entry
    while the others wait, then they read it (an error on rank 0 is raised on every rank, not left to a timeout)."""

    def warn(text: str) -> None:  # as TrainState.warn: once, verbose or not
        if world is None or world.is_main:
            print(f"warning: {text}", file=sys.stderr)

    def load(progress: bool) -> Dataset:
        return load_dataset(cfg.data, cfg.layout, cfg.tokenizer_dir, progress=progress, warn=warn)

    if world is None or not world.is_distributed or not cfg.data.cache:
        dataset = load(progress=verbose)
    else:
        error = [""]
        if world.is_main:
            try:
                dataset = load(progress=verbose)
            except BaseException as exc:
                error[0] = " ".join(str(exc).split()) or type(exc).__name__
                dist.broadcast_object_list(error, src=0, group=world.wait_group)
                raise
        dist.broadcast_object_list(error, src=0, group=world.wait_group)
        if error[0]:
            raise ValueError(error[0])
        if not world.is_main:
            dataset = load(progress=False)
    if cfg.jepa.lam == 0:
        dataset.rows = dataset.rows.lm_only()
    dataset.truncation_problems(cfg.layout.max_length)  # raises when nothing would be trained
    return dataset


def check_model_fits_data(cfg: TrainConfig, model: CausalLM, dataset: Dataset) -> None:
    """Every token id the rows use has an embedding row and every position id is below the model's position
    limit (GPT-2's learnt table); else ValueError naming the key, before any step (an IndexError in the first
    forward pass otherwise)."""
    rows = model.embed_tokens.weight.shape[0]
    top_id = max(dataset.pad_id, dataset.rows.max_token_id())
    if top_id >= rows:
        where = f"model.path: {cfg.model.path}" if cfg.model.path else "model.arch.vocab_size"
        raise ValueError(f"{where}: the data uses token id {top_id} but the model's embedding has {rows} rows (a "
                         "tokenizer with more tokens than the weights?)")  # fmt: skip
    limit = getattr(model, "max_positions", None)
    top_position = dataset.rows.max_position()
    if limit is not None and top_position >= limit:
        raise ValueError(f"the rows reach position {top_position} but the model has {limit} positions "
                         "(model.arch.n_positions); lower layout.predictors / layout.max_length or raise the "
                         "model's limit")  # fmt: skip


def build_train_model(cfg: TrainConfig, dataset: Dataset, device: torch.device, parallel: DDP) -> CausalLM:
    """Pretrained weights from model.path, or model.arch from scratch (vocab_size from the data if absent);
    then LoRA (default targets: the architecture's `lora_targets`), activation checkpointing and `model.compile`."""
    dtype = torch.bfloat16 if cfg.precision.mode == "pure_bf16" else torch.float32
    if cfg.model.path is not None:
        model = load_pretrained(cfg.model.path, dtype=dtype, device=device)
    else:
        arch = dict(cfg.model.arch or {})  # the config check: exactly one of model.path and model.arch
        arch.setdefault("vocab_size", dataset.vocab_size)
        if arch["vocab_size"] < dataset.vocab_size:
            raise ValueError(
                f"model.arch.vocab_size: {arch['vocab_size']} is smaller than the data's "
                f"vocabulary ({dataset.vocab_size})"
            )
        # Drawn on the CPU by default, so a seed gives the same initial weights on every device.
        with torch.device(device if cfg.model.init_on == "device" else "cpu"):
            model = build_model(arch, source="model.arch")
        model = model.to(device=device, dtype=dtype)
    if cfg.lora.enabled:
        targets = cfg.lora.targets or list(model.lora_targets)
        apply_lora(model, targets, cfg.lora.rank, cfg.lora.alpha, dropout=cfg.lora.dropout)
        # Frozen bases in the compute dtype: no re-cast every forward (unless the strategy casts for compute).
        if cfg.precision.mode in AUTOCAST_DTYPES and not parallel.casts_for_compute:
            cast_frozen_bases(model, AUTOCAST_DTYPES[cfg.precision.mode])
    model.gradient_checkpointing = cfg.model.gradient_checkpointing
    if cfg.model.compile:
        for block in model.blocks:
            block.compile(backend=COMPILE_BACKEND, fullgraph=True)
    return model.train()


def make_predictors(cfg: TrainConfig, model: CausalLM) -> PredictorEmbeddings | None:
    """K trainable predictor tokens on the model's device and dtype, only when the run has a JEPA term with
    predictors."""
    if cfg.trained_predictors == 0:
        return None
    predictors = PredictorEmbeddings(cfg.trained_predictors, model.embed_tokens, seed=cfg.jepa.predictor_seed)
    return predictors.to(device=model.embed_tokens.weight.device, dtype=model.embed_tokens.weight.dtype)


def load_eval_hook(cfg: TrainConfig) -> EvalHook | None:
    """`eval.fn: "package.module:factory"`; factory(cfg) returns the hook (model, predictors, step) -> dict."""
    if cfg.eval.fn is None:
        return None
    module_name, _, attr = cfg.eval.fn.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"eval.fn: cannot import {cfg.eval.fn} ({exc})") from None
    return factory(cfg)


def resume(state: TrainState) -> None:
    """`checkpoint.resume`: auto = the run's newest valid step_N (incomplete or unreadable ones are skipped, with
    a warning saying which and why), a path = that checkpoint (invalid: one line naming the file), none = a
    fresh run (refused when the run directory already has checkpoints)."""
    cfg = state.cfg
    if cfg.checkpoint.resume == "none":
        if step_dirs(cfg.run_dir):
            raise ValueError(
                f"checkpoint.resume: {cfg.run_dir} already has checkpoints; use checkpoint.resume=auto to "
                "continue or another run.name"
            )
        return
    if cfg.checkpoint.resume == "auto":
        saved = None
        for path in all_step_dirs(cfg.run_dir):
            try:
                saved = read_checkpoint(state, path)
                break
            except CheckpointMismatch as exc:
                raise ValueError(f"checkpoint.resume: {exc}") from None
            except (ValueError, FileNotFoundError) as exc:
                state.warn(f"skipping checkpoint {path.name}: {exc}")
        if saved is None:
            return
    else:
        try:
            saved = read_checkpoint(state, Path(cfg.checkpoint.resume))
        except (ValueError, FileNotFoundError) as exc:
            raise ValueError(f"checkpoint.resume: {exc}") from None
    apply_checkpoint(state, saved)
    # LambdaLR restored the checkpoint's schedule fields (its total steps); the current config's schedule wins.
    schedule = LRSchedule.from_config(cfg.schedule, state.total_steps)
    state.scheduler.lr_lambdas = [schedule] * len(state.optimizer.param_groups)
    old_lr = ((saved.config or {}).get("optim") or {}).get("lr")
    if isinstance(old_lr, (int, float)) and old_lr > 0 and old_lr != cfg.optim.lr:  # the peak lr changed: rescale
        scale = cfg.optim.lr / old_lr
        state.scheduler.base_lrs = [lr * scale for lr in state.scheduler.base_lrs]
        for group in state.optimizer.param_groups:  # LambdaLR set initial_lr in every group
            group["lr"] *= scale
            group["initial_lr"] *= scale
        state.scheduler._last_lr = [group["lr"] for group in state.optimizer.param_groups]  # what get_last_lr reports
        state.print_main(f"optim.lr: {old_lr:g} -> {cfg.optim.lr:g} from step {saved.trainer_state['step']}")
    state.print_main(f"resumed from {saved.path} (step {state.step})")

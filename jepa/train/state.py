"""The training state: everything a run holds between optimizer steps."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from jepa.data.datasets import Dataset
from jepa.eval.hooks import EvalHook
from jepa.models.base import CausalLM
from jepa.models.predictors import PredictorEmbeddings
from jepa.train.config import TrainConfig
from jepa.train.data import EpochSampler
from jepa.train.distributed import WorldInfo
from jepa.train.flops import FlopCounter
from jepa.train.parallel import DDP


class TrainingStopped(RuntimeError):
    """Training cannot go on; the message is one line saying why and what was kept. train.py exits 1."""


class TrainingDiverged(TrainingStopped):
    """The loss, the gradient norm or the weights became NaN/inf; that step was not applied or not saved."""


class CheckpointNotWritten(TrainingStopped):
    """A checkpoint (or the metrics line) could not be written, e.g. the disk is full."""


class Interrupted(TrainingStopped):
    """SIGINT or SIGTERM: the current step finished and a checkpoint was written."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass(kw_only=True)
class TrainState:
    """`build` makes it, `train_step` advances it, `save_checkpoint` / `load_checkpoint` write and restore it.

    `objective` is the module the step calls: the `Objective` over `model` and `predictors`, as `parallel`
    wrapped it (DistributedDataParallel for several processes, or FSDP2-sharded). `step` counts finished
    optimizer steps.
    """

    cfg: TrainConfig
    world: WorldInfo
    dataset: Dataset
    sampler: EpochSampler
    model: CausalLM
    predictors: PredictorEmbeddings | None
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler  # enabled for fp16 only; a pass-through otherwise
    flops: FlopCounter
    peak_tflops: float | None  # for MFU; None when unknown (CPU)
    total_steps: int
    parallel: DDP  # distributed.strategy: DDP or FSDP (jepa/train/parallel.py)
    attention: str = "sdpa"  # the attention path the objective computes with (model.attention resolved)
    step: int = 0
    last_checkpoint: Path | None = None
    eval_hook: EvalHook | None = None
    verbose: bool = True  # progress bar and summary lines on the main process
    stop_signal: int | None = None  # SIGINT / SIGTERM received: finish this step, checkpoint, stop
    tracker_ids: dict[str, str] = field(default_factory=dict)  # run.loggers' run ids (W&B, MLflow), for resume

    @property
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.objective.parameters() if p.requires_grad]

    def print_main(self, text: str) -> None:
        """Print a summary line, once (main process) and only when the run is verbose."""
        if self.world.is_main and self.verbose:
            print(text)

    def warn(self, text: str) -> None:
        """A `warning: ...` line on stderr, once (main process), verbose or not."""
        if self.world.is_main:
            print(f"warning: {text}", file=sys.stderr)

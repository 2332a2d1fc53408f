"""The training state: everything a run holds between optimizer steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from jepa.data.datasets import Dataset
from jepa.eval.hooks import EvalHook
from jepa.models.predictors import PredictorEmbeddings
from jepa.train.config import TrainConfig
from jepa.train.data import EpochSampler
from jepa.train.distributed import WorldInfo


@dataclass
class TrainState:
    """`build` makes it, `train_step` advances it, `save_checkpoint` / `load_checkpoint` write and restore it.

    `objective` is the module the step calls: the `Objective` over `model` and `predictors`, wrapped in
    DistributedDataParallel when there are several processes. `step` counts finished optimizer steps.
    """

    cfg: TrainConfig
    world: WorldInfo
    dataset: Dataset
    sampler: EpochSampler
    model: nn.Module
    predictors: PredictorEmbeddings | None
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler  # enabled for fp16 only; a pass-through otherwise
    total_steps: int
    step: int = 0
    last_checkpoint: Path | None = None
    eval_hook: EvalHook | None = None
    verbose: bool = True  # progress bar and summary lines on the main process

    @property
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.objective.parameters() if p.requires_grad]

    def print_main(self, text: str) -> None:
        """Print a summary line, once (main process) and only when the run is verbose."""
        if self.world.is_main and self.verbose:
            print(text)

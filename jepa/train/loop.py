"""The training loop, top to bottom: `build` the state, then per optimizer step the next micro-batches ->
`train_step` -> metrics line -> periodic checkpoint and evaluation; at the end a checkpoint of the last step,
the exported model and a final evaluation.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from jepa.eval.hooks import EvalHook
from jepa.models import save_pretrained
from jepa.models.lora import save_adapter, save_merged
from jepa.models.predictors import save_predictors
from jepa.train.build import build
from jepa.train.checkpoint import save_checkpoint
from jepa.train.config import TrainConfig, dump_config
from jepa.train.distributed import barrier
from jepa.train.state import TrainState
from jepa.train.step import TrainingDiverged, next_micro_batches, train_step

__all__ = ["TrainResult", "TrainingDiverged", "train"]


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    last_checkpoint: Path | None
    final_dir: Path | None
    last_metrics: dict


def train(cfg: TrainConfig, eval_hook: EvalHook | None = None, progress: bool = True) -> TrainResult:
    """Run (or resume) the configured training; `eval_hook` (else the one `eval.fn` names) runs every
    `eval.every` steps and at the end. Raises ValueError/FileNotFoundError for bad configs or data,
    TrainingDiverged on a non-finite loss (nothing is saved for that step; earlier checkpoints stay)."""
    state = build(cfg, eval_hook, verbose=progress)
    metrics_log = MetricsLog.start(state)
    end_step = min(state.total_steps, cfg.schedule.stop_at_step or state.total_steps)
    bar = tqdm(
        total=state.total_steps, initial=state.step, disable=not (state.world.is_main and progress), dynamic_ncols=True
    )
    metrics, started = {}, time.perf_counter()
    while state.step < end_step:
        epoch = state.sampler.epoch
        metrics = train_step(state, next_micro_batches(state))
        metrics["epoch"] = epoch
        metrics_log.write(metrics)
        bar.update(1)
        if state.step % cfg.run.log_every == 0 or state.step == state.total_steps:
            bar.set_postfix(
                {k: f"{metrics[k]:.4f}" for k in ("loss", "lm", "jepa")}
                | {"lr": f"{metrics['lr']:.2e}", "tok_s": f"{metrics['tokens_per_s']:.0f}"}
            )
        if cfg.checkpoint.every and state.step % cfg.checkpoint.every == 0 and state.step < end_step:
            save_checkpoint(state)
        if cfg.eval.every and state.step % cfg.eval.every == 0 and state.step < end_step:
            evaluate(state, metrics_log)
    bar.close()

    if state.last_checkpoint is None or state.last_checkpoint.name != f"step_{state.step}":
        save_checkpoint(state)
    if state.step < state.total_steps:  # stopped early (schedule.stop_at_step): resume with checkpoint.resume=auto
        state.print_main(f"stopped at step {state.step} of {state.total_steps}; checkpoint: {state.last_checkpoint}")
        return TrainResult(cfg.run_dir, state.step, state.last_checkpoint, None, metrics)
    final_dir = export_final(state) if state.world.is_main else None
    evaluate(state, metrics_log)
    state.print_main(
        f"done: {state.step} steps in {time.perf_counter() - started:.1f} s; metrics: "
        f"{metrics_log.path}; checkpoint: {state.last_checkpoint}" + (f"; model: {final_dir}" if final_dir else "")
    )
    return TrainResult(cfg.run_dir, state.step, state.last_checkpoint, final_dir, metrics)


class MetricsLog:
    """`run_dir/metrics.jsonl`, one JSON object per line, written by the main process only."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    @classmethod
    def start(cls, state: TrainState) -> MetricsLog:
        """Create the run directory, write config.yaml, and drop metrics logged after the resumed step."""
        cfg = state.cfg
        log = cls(cfg.run_dir / "metrics.jsonl", state.world.is_main)
        if log.enabled:
            cfg.run_dir.mkdir(parents=True, exist_ok=True)
            (cfg.run_dir / "config.yaml").write_text(dump_config(cfg))
            kept = []
            if state.step and log.path.is_file():
                kept = [ln for ln in log.path.read_text().splitlines() if json.loads(ln)["step"] <= state.step]
            log.path.write_text("".join(ln + "\n" for ln in kept))
        return log

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def evaluate(state: TrainState, metrics_log: MetricsLog) -> None:
    """Run the eval hook on the main process (model in eval mode, no grad); the others wait at a barrier."""
    if state.eval_hook is None:
        return
    if state.world.is_main:
        state.model.eval()
        with torch.no_grad():
            result = state.eval_hook(state.model, state.predictors, state.step)
        state.model.train()
        metrics_log.write({"step": state.step, "kind": "eval", **result})
        state.print_main(
            f"eval step {state.step}: "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
        )
    barrier(state.world)


def export_final(state: TrainState) -> Path | None:
    """runs/NAME/final: an HF directory (LoRA merged) or the adapter, + predictors and the data source's files
    (tokenizer or vocabulary)."""
    cfg = state.cfg
    if cfg.checkpoint.export == "none":
        return None
    final = cfg.run_dir / "final"
    shutil.rmtree(final, ignore_errors=True)
    if cfg.lora.enabled and cfg.checkpoint.export == "adapter":
        save_adapter(state.model, final)
    elif cfg.lora.enabled:
        save_merged(state.model, final)
    else:
        save_pretrained(state.model, final)
    if state.predictors is not None:
        save_predictors(state.predictors, final)
    state.dataset.export_files(final)
    return final

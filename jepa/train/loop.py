"""The training loop, top to bottom: `build` the state, then per optimizer step the next micro-batches
(collated ahead by a `Prefetcher` thread) ->
`train_step` -> metrics line -> periodic checkpoint and evaluation; at the end a checkpoint of the last step,
the exported model and a final evaluation. The run directory is locked for the run, and SIGINT / SIGTERM end it
with a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from jepa.eval.hooks import EvalHook
from jepa.eval.progress import showing_progress
from jepa.models import save_pretrained
from jepa.models.base import CausalLM
from jepa.models.lora import save_adapter, save_merged
from jepa.models.predictors import PredictorEmbeddings, save_predictors
from jepa.train.build import build
from jepa.train.checkpoint import WRITE_ERRORS, save_checkpoint, write_error_text
from jepa.train.config import TrainConfig, check_run_dir, dump_config
from jepa.train.distributed import any_rank, wait_for_main
from jepa.train.lock import RunLock
from jepa.train.optim import autocast_context
from jepa.train.prefetch import Prefetcher
from jepa.train.profiling import StepProfiler
from jepa.train.progress import StepProgress, TimeSplit
from jepa.train.signals import StopNow, StopSignals
from jepa.train.state import CheckpointNotWritten, Interrupted, TrainingDiverged, TrainingStopped, TrainState
from jepa.train.step import train_step
from jepa.train.trackers import TRACKERS, Tracker, numeric

__all__ = ["Interrupted", "TrainResult", "TrainingDiverged", "TrainingStopped", "train"]

# The dtype a run computes in, which a merged LoRA export is written in.
WORKING_DTYPES = {"bf16": torch.bfloat16, "pure_bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(kw_only=True)
class TrainResult:
    run_dir: Path
    steps: int
    last_checkpoint: Path | None
    final_dir: Path | None
    last_metrics: dict[str, Any]


def train(cfg: TrainConfig, eval_hook: EvalHook | None = None, progress: bool = True) -> TrainResult:
    """Run (or resume) the configured training; `eval_hook` (else the one `eval.fn` names) runs every
    `eval.every` steps and at the end. Raises ValueError/FileNotFoundError for bad configs or data (before any
    work), TrainingStopped (TrainingDiverged, CheckpointNotWritten, Interrupted) when the run cannot go on."""
    check_run_dir(cfg)
    with (
        RunLock(cfg.run_dir, enabled=os.environ.get("RANK", "0") == "0") as lock,
        StopSignals() as stop,
        contextlib.ExitStack() as cleanup,
    ):
        state = build(cfg, eval_hook, verbose=progress)
        lock.keep()  # the run has started: its directory stays, whatever happens next
        metrics_log = MetricsLog.start(state)
        cleanup.callback(metrics_log.close)  # the trackers end with the run, however it ends
        if state.step >= state.total_steps:  # finished before: what an interruption cut short, then the result
            state.print_main(f"{cfg.run_dir}: complete ({state.step} of {state.total_steps} steps); nothing to train")
            done = cfg.run_dir / "final"
            final_dir = done if done.is_dir() else export_final(state)
            result = stored = metrics_log.evals.get(state.step)
            if any_rank(state.world.is_main and state.eval_hook is not None and stored is None, state.world):
                result = evaluate(state, metrics_log, stop)
            print_headline(state, result, stored=stored is not None)
            return TrainResult(run_dir=cfg.run_dir, steps=state.step, last_checkpoint=state.last_checkpoint,
                               final_dir=final_dir, last_metrics={})  # fmt: skip
        end_step = min(state.total_steps, cfg.schedule.stop_at_step or state.total_steps)
        if eval_due(state, end_step) and any_rank(
            state.world.is_main and state.step not in metrics_log.evals, state.world
        ):
            evaluate(state, metrics_log, stop)  # the periodic evaluation an interruption cut short
        bar = StepProgress(total=state.total_steps, initial=state.step, enabled=state.world.is_main and progress,
                           log_every=cfg.run.log_every)  # fmt: skip
        metrics, started, first_step = {}, time.perf_counter(), state.step
        split = TimeSplit()
        profiler = StepProfiler(cfg.run.profile, cfg.run_dir, enabled=state.world.is_main)
        cleanup.callback(profiler.finish)  # a run that ends inside the window still writes what was recorded
        with Prefetcher(state, steps=end_step - state.step, depth=cfg.data.prefetch) as batches:
            while state.step < end_step and not stop.requested(state.world):
                epoch = state.sampler.epoch
                profiler.before(state.step)
                waited = time.perf_counter()
                micro_batches = batches.next()  # the prefetch thread's batches: waits only when it is behind
                data_wait = time.perf_counter() - waited
                metrics = train_step(state, micro_batches)
                metrics["data_wait_s"] = data_wait
                split.data += data_wait
                if (written := profiler.after(state.step)) is not None:
                    state.print_main(f"profile of steps {profiler.start + 1}-{state.step}: {written}")
                split.forward_backward += metrics["forward_backward_s"]
                split.optimizer += metrics["optimizer_s"]
                metrics["epoch"] = epoch
                metrics_log.write(metrics)
                bar.update(state.step, metrics)
                if state.step - first_step == ESTIMATE_AFTER_STEPS:
                    warn_if_long(state, end_step, (time.perf_counter() - started) / ESTIMATE_AFTER_STEPS)
                if cfg.checkpoint.every and state.step % cfg.checkpoint.every == 0 and state.step < end_step:
                    save_checkpoint(state)
                if eval_due(state, end_step):
                    split.evaluation += timed(lambda: evaluate(state, metrics_log, stop))
        bar.close()

        if state.last_checkpoint is None or state.last_checkpoint.name != f"step_{state.step}":
            save_checkpoint(state)
        if stop.signum is not None:
            raise interrupted(state, stop.signum)
        if state.step < state.total_steps:  # schedule.stop_at_step: resume later with checkpoint.resume=auto
            state.print_main(
                f"stopped at step {state.step} of {state.total_steps}; checkpoint: {state.last_checkpoint}"
            )
            return TrainResult(run_dir=cfg.run_dir, steps=state.step, last_checkpoint=state.last_checkpoint,
                               final_dir=None, last_metrics=metrics)  # fmt: skip
        final_dir = export_final(state)
        evaluated = time.perf_counter()
        result = evaluate(state, metrics_log, stop)
        split.evaluation += time.perf_counter() - evaluated
        split.total = time.perf_counter() - started
        state.print_main(f"done: {state.step - first_step} steps in {split.total:.1f} s; metrics: "
                         f"{metrics_log.path}; checkpoint: {state.last_checkpoint}"
                         + (f"; model: {final_dir}" if final_dir else ""))  # fmt: skip
        state.print_main(split.describe())
        print_headline(state, result)
        if stop.signum is not None:  # a signal after the last step: everything is written; still say so
            raise interrupted(state, stop.signum)
        return TrainResult(run_dir=cfg.run_dir, steps=state.step, last_checkpoint=state.last_checkpoint,
                           final_dir=final_dir, last_metrics=metrics)  # fmt: skip


# After this many steps the run estimates its remaining time, and says so when it exceeds LONG_RUN_HOURS.
ESTIMATE_AFTER_STEPS = 3
LONG_RUN_HOURS = 2.0


def warn_if_long(state: TrainState, end_step: int, seconds_per_step: float) -> None:
    """A warning when this device would take more than LONG_RUN_HOURS for the rest of the run (a paper-size
    config on a CPU): the configs' headers say what hardware they expect."""
    hours = seconds_per_step * (end_step - state.step) / 3600
    if hours > LONG_RUN_HOURS:
        state.warn(f"at {seconds_per_step:.1f} s a step on {state.world.device}, the remaining {end_step - state.step} "
                   f"steps take about {hours:.0f} h; the config's header says what hardware it expects (stop with "
                   "Ctrl-C: the checkpoint resumes)")  # fmt: skip


def timed(work: Callable[[], Any]) -> float:
    """Seconds `work()` took."""
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def eval_due(state: TrainState, end_step: int) -> bool:
    """Whether the periodic evaluation falls on the state's step (never on the last step: the final one runs)."""
    every = state.cfg.eval.every
    return bool(every) and state.step > 0 and state.step % every == 0 and state.step < end_step


def interrupted(state: TrainState, signum: int, during: str = "") -> Interrupted:
    name = "a closed stdout (SIGPIPE)" if signum == signal.SIGPIPE else signal.Signals(signum).name
    return Interrupted(f"interrupted by {name}{during} at step {state.step}; checkpoint: {state.last_checkpoint}; "
                       "the same command resumes", signum)  # fmt: skip


def print_headline(state: TrainState, result: dict[str, Any] | None, stored: bool = False) -> None:
    """The hook's one-line result after the final evaluation (again, from metrics.jsonl, for a finished run)."""
    headline = getattr(state.eval_hook, "headline", None)
    if result and headline is not None:
        state.print_main(f"result{' (stored)' if stored else ''}: {headline(result)}")


class MetricsLog:
    """`run_dir/metrics.jsonl`, one JSON object per line, written by the main process only. `evals` maps a step
    to its logged evaluation (what a resumed run need not repeat)."""

    def __init__(self, path: Path, enabled: bool, state: TrainState) -> None:
        self.path, self.enabled, self.state = path, enabled, state
        self.evals: dict[int, dict[str, Any]] = {}
        self._config_written = False
        self.trackers: list[Tracker] = []  # run.loggers (jepa/train/trackers.py): every record goes to each

    def open_trackers(self) -> None:
        """Start (or, resumed, reopen) every tracker of run.loggers; their run ids go into the next checkpoint."""
        cfg, state = self.state.cfg, self.state
        config = yaml.safe_load(dump_config(cfg))
        for name in dict.fromkeys(cfg.run.loggers):
            tracker = TRACKERS[name]()
            run_id = tracker.start(run_dir=cfg.run_dir, run_name=cfg.run.name, project=cfg.run.project, config=config,
                                   resume_id=state.tracker_ids.get(name), resumed_step=state.step)  # fmt: skip
            if run_id is not None:
                state.tracker_ids[name] = run_id
            self.trackers.append(tracker)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []

    @classmethod
    def start(cls, state: TrainState) -> MetricsLog:
        """Keep the metrics logged up to the resumed step. A torn last line (a write cut short by a full disk or a
        kill) is dropped with a warning; another bad line is an error naming it. config.yaml is written with the
        first line this run logs: an invocation that stops before its first step leaves the old one."""
        cfg = state.cfg
        log = cls(cfg.run_dir / "metrics.jsonl", state.world.is_main, state)
        if not log.enabled:
            return log
        log.open_trackers()
        try:
            lines = log.path.read_text(errors="replace").splitlines() if state.step and log.path.exists() else []
            kept = []
            for number, line in enumerate(lines, start=1):
                try:
                    record = json.loads(line)
                except ValueError:
                    if number < len(lines):
                        raise ValueError(f"{log.path}:{number}: not JSON; fix or delete that line to resume") from None
                    state.warn(f"{log.path}:{number}: dropped a torn last line (a write was cut short)")
                    continue
                if isinstance(record, dict) and record.get("step", 0) <= state.step:
                    kept.append(line)
                    if record.get("kind") == "eval":
                        log.evals[record["step"]] = {k: v for k, v in record.items() if k not in ("step", "kind")}
            log.path.write_text("".join(line + "\n" for line in kept))
        except OSError as exc:
            raise write_failed(state, log.path, "could not be read and rewritten", exc) from None
        return log

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if not self._config_written:
            config = self.path.parent / "config.yaml"
            try:
                config.write_text(dump_config(self.state.cfg))
            except OSError as exc:
                raise write_failed(self.state, config, "not written", exc) from None
            self._config_written = True
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise write_failed(self.state, self.path, f"could not take the step {record.get('step')} line", exc,
                               note="the next resume drops a torn last line") from None  # fmt: skip
        values = numeric(record)
        for tracker in self.trackers:
            tracker.log(values, int(record["step"]))


def write_failed(state: TrainState, path: Path, what: str, exc: OSError, *, note: str = "") -> CheckpointNotWritten:
    """One line for a file the trainer could not write: the path, why, and the last good checkpoint."""
    return CheckpointNotWritten(
        f"{path}: {what} ({exc.strerror or exc}); last good checkpoint: {state.last_checkpoint or 'none'}"
        + (f"; {note}" if note else "")
    )


def evaluate(state: TrainState, metrics_log: MetricsLog, stop: StopSignals) -> dict[str, Any] | None:
    """Run the eval hook on the main process (the whole model, in eval mode, no grad, under the run's autocast;
    under FSDP an unsharded copy) and return its metrics there. Collective: the others wait on the long-timeout
    group. Its progress shows when the run's does; a signal stops a single-process evaluation at once
    (Interrupted: the checkpoint of this step is written, the next invocation evaluates again)."""
    if state.eval_hook is None:
        return None
    result = None
    with state.parallel.gathered(state) as whole:
        if whole is not None:
            model, predictors = whole
            model.eval()
            state.print_main(f"eval step {state.step}: running")
            try:
                with stop.interruptible(not state.world.is_distributed), showing_progress(state.verbose):
                    # under the run's autocast, as training computes: LoRA's frozen bases are stored in its dtype.
                    # Eagerly: generation's many (batch, length, cache) shapes would recompile `model.compile`'s
                    # fullgraph blocks per shape, and past torch's recompile limit (8) fail.
                    with (
                        torch.no_grad(),
                        autocast_context(state.cfg.precision.mode, state.world.device),
                        torch.compiler.set_stance("force_eager"),
                    ):
                        result = state.eval_hook(model, predictors, state.step)
            except StopNow as caught:
                raise interrupted(state, caught.args[0], during=" during the evaluation") from None
            model.train()
            metrics_log.write({"step": state.step, "kind": "eval", **result})
            metrics_log.evals[state.step] = result
            state.print_main(f"eval step {state.step}: " + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))  # fmt: skip
    wait_for_main(state.world)
    return result


def export_final(state: TrainState) -> Path | None:
    """runs/NAME/final, written like a checkpoint (a temporary directory renamed into place) by rank 0: an HF
    directory (LoRA merged, in the run's working dtype) or the adapter, + predictors and the data source's files
    (tokenizer or vocabulary). Collective (FSDP gathers the model); None on the other ranks."""
    cfg = state.cfg
    if cfg.checkpoint.export == "none":
        return None
    final = None
    with state.parallel.gathered(state) as whole:
        if whole is not None:
            final = write_export(state, *whole)
    wait_for_main(state.world)
    return final


def link_checkpoint_model(state: TrainState, out: Path) -> bool:
    """Full fine-tuning: the export's weights are the last checkpoint's `model/` files byte for byte (the same
    `save_pretrained` of the same parameters), so they are hard-linked instead of written a second time (one copy
    of the weights on disk for step_N and final). False where that is not possible (another step, sharded
    checkpoints, a file system without hard links): the caller writes them."""
    source = state.cfg.run_dir / f"step_{state.step}" / "model"
    if state.last_checkpoint != source.parent or not (source / "model.safetensors").is_file():
        return False
    out.mkdir(parents=True, exist_ok=True)
    try:
        for file in source.iterdir():
            os.link(file, out / file.name)
    except OSError:
        for file in out.iterdir():
            file.unlink()
        return False
    return True


def write_export(state: TrainState, model: CausalLM, predictors: PredictorEmbeddings | None) -> Path:
    cfg = state.cfg
    final, tmp = cfg.run_dir / "final", cfg.run_dir / ".final.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        if cfg.lora.enabled and cfg.checkpoint.export == "adapter":
            save_adapter(model, tmp)
        elif cfg.lora.enabled:
            save_merged(model, tmp, dtype=WORKING_DTYPES[cfg.precision.mode])
        elif not link_checkpoint_model(state, tmp):
            save_pretrained(model, tmp)
        if predictors is not None:
            save_predictors(predictors, tmp)
        state.dataset.export_files(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except WRITE_ERRORS as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingStopped(
            f"{final}: export not written ({write_error_text(exc)}); the trained model is in {state.last_checkpoint}; "
            "re-run the same command to export it"
        ) from None
    return final

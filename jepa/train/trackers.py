"""Experiment trackers: where a run's metrics go besides `metrics.jsonl` (always written; the source of truth).

`run.loggers` names them (registered units, `TRACKERS`): `jsonl` (metrics.jsonl only), `tensorboard`, `wandb`,
`mlflow`. Each gets the resolved config once, then every record `metrics.jsonl` gets, with the optimizer step as
its step: a training step's numbers as `train/<key>` (loss, lm, jepa, lr, tokens_per_s, tflops, mfu, ...), an
evaluation's as its own `eval/...` keys. Only the main process logs.

Offline by design: TensorBoard writes event files under `RUN_DIR/tensorboard`; MLflow defaults to a file store
under `RUN_DIR/mlruns` (`MLFLOW_TRACKING_URI` overrides it); W&B honours `WANDB_MODE=offline` and writes under the
run directory. A missing package is one line naming the extra to install.

Resume continues the same tracker run: the W&B run id and the MLflow run id live in the checkpoint's
trainer_state.json, and a resumed run logs into the run it started (W&B `resume="allow"`). The steps between the
last checkpoint and an interruption are logged twice (once before it, once after the resume); TensorBoard drops the
first copies (`purge_step`), W&B and MLflow keep both points of such a step.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

# The package each tracker needs, and the extra that installs it.
REQUIREMENTS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
                "mlflow": ("mlflow", "mlflow")}  # fmt: skip


def numeric(record: Mapping[str, Any]) -> dict[str, float]:
    """The record's numbers under tracker keys: a training step's as `train/<key>`, an evaluation's as they are."""
    is_eval = record.get("kind") == "eval"
    out = {}
    for key, value in record.items():
        if key in ("step", "kind", "epoch") or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[key if is_eval or "/" in key else f"train/{key}"] = float(value)
    return out


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"optim": {"lr": 1e-4}} -> {"optim.lr": "0.0001"} (tracker parameters are flat strings)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)
    return out


class Tracker:
    """One sink. `start` opens (or, with `resume_id`, reopens) its run and returns the id a resume needs (None:
    nothing to remember); `log` takes one record's numbers at a step; `close` flushes and ends."""

    name: ClassVar[str]

    def start(self, *, run_dir: Path, run_name: str, project: str, config: Mapping[str, Any],
              resume_id: str | None, resumed_step: int) -> str | None:  # fmt: skip
        raise NotImplementedError

    def log(self, values: Mapping[str, float], step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


TRACKERS: dict[str, type[Tracker]] = {}


def register_tracker(cls: type[Tracker]) -> type[Tracker]:
    if cls.name in TRACKERS:
        raise ValueError(f"tracker {cls.name!r} is registered twice")
    TRACKERS[cls.name] = cls
    return cls


def check_installed(names: list[str]) -> None:
    """One ValueError line for the first tracker whose package is missing, naming the extra that installs it."""
    for name in names:
        if name in REQUIREMENTS:
            package, extra = REQUIREMENTS[name]
            if importlib.util.find_spec(package) is None:
                raise ValueError(f"run.loggers: {name} needs the {package} package: pip install 'jepa[{extra}]'")


@register_tracker
class JsonlTracker(Tracker):
    """metrics.jsonl itself (written by the trainer whatever run.loggers says): nothing more to do."""

    name = "jsonl"

    def start(self, *, run_dir: Path, run_name: str, project: str, config: Mapping[str, Any],
              resume_id: str | None, resumed_step: int) -> str | None:  # fmt: skip
        return None

    def log(self, values: Mapping[str, float], step: int) -> None:
        pass


@register_tracker
class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def start(self, *, run_dir: Path, run_name: str, project: str, config: Mapping[str, Any],
              resume_id: str | None, resumed_step: int) -> str | None:  # fmt: skip
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resume drops what the interrupted run logged after its checkpoint, so no step shows twice
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resumed_step + 1 or None)
        if not resumed_step:
            text = "\n".join(f"    {k}: {v}" for k, v in flatten(config).items())  # indented: Markdown code
            self.writer.add_text("config", text, 0)
        return None

    def log(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


@register_tracker
class WandbTracker(Tracker):
    name = "wandb"

    def start(self, *, run_dir: Path, run_name: str, project: str, config: Mapping[str, Any],
              resume_id: str | None, resumed_step: int) -> str | None:  # fmt: skip
        import wandb

        self.run = wandb.init(project=project, name=run_name, id=resume_id,
                              resume="allow", dir=str(run_dir), config=dict(config), reinit="create_new")  # fmt: skip
        return str(self.run.id)

    def log(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def close(self) -> None:
        self.run.finish()


@register_tracker
class MlflowTracker(Tracker):
    name = "mlflow"

    def start(self, *, run_dir: Path, run_name: str, project: str, config: Mapping[str, Any],
              resume_id: str | None, resumed_step: int) -> str | None:  # fmt: skip
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):  # MLflow 3 keeps its file store behind this switch; offline needs no server
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        if resume_id is not None:
            self.run_id = resume_id
            self.client.update_run(resume_id, status="RUNNING")
            return resume_id
        experiment = self.client.get_experiment_by_name(project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(project)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        for key, value in flatten(config).items():
            self.client.log_param(self.run_id, key, value[:6000])  # MLflow's limit on a parameter's length
        return str(self.run_id)

    def log(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)

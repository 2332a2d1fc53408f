"""Training checkpoints `runs/NAME/step_N/`, written to a temporary directory and renamed into place.

A checkpoint directory holds

    model/                 full fine-tuning: an HF-format directory (config.json + model.safetensors)
    adapter_model.safetensors  LoRA: the adapter tensors only, in PEFT's layout (+ adapter_config.json)
    predictors.safetensors the K predictor-token embeddings (when the run has any)
    optimizer.pt
    sharded/               distributed.strategy=fsdp instead of the four above: torch.distributed.checkpoint
                           shards of the model (LoRA: its trainable tensors), predictor tokens and optimizer
    scheduler.pt  scaler.pt ({} unless fp16)  rng.pt (python / numpy / torch / cuda states, one entry per rank)
    config.yaml            the run's config when it was written (resume compares it with the new one)
    trainer_state.json     step, data-sampler position, world size, the trackers' run ids (W&B, MLflow)
    manifest.json          every other file and its size -- written last

`os.replace` of the finished temporary directory is atomic, so a crash leaves either the whole checkpoint or
none; a checkpoint is valid when its manifest's files are all there with their sizes and every file reads.
Checkpoints written before manifests existed (no manifest.json) are accepted when trainer_state.json is there.
Parameters or optimizer state that are not finite are never written.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from safetensors import SafetensorError
from torch.distributed.checkpoint.api import CheckpointException

from jepa.train.config import changed_on_resume, dump_config
from jepa.train.distributed import any_rank, wait_for_main
from jepa.train.parallel import SHARDED_DIR, local_shard
from jepa.train.state import CheckpointNotWritten, TrainingDiverged, TrainState

STEP_DIR = re.compile(r"step_(\d+)")
STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"


# What a failed write raises: OSError from Python's own writes, but a full disk inside torch.save is a RuntimeError
# ("inline_container.cc ... unexpected pos"), inside safetensors a SafetensorError, inside torch.distributed's
# checkpoint a CheckpointException.
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError, CheckpointException)


def write_error_text(exc: BaseException) -> str:
    """One short line for a failed write (torch's C++ messages run to several lines)."""
    lines = str(exc).strip().splitlines()
    return (getattr(exc, "strerror", None) or (lines[0] if lines else type(exc).__name__))[:200]


class CheckpointMismatch(ValueError):
    """A sound checkpoint that this run cannot take (another strategy): an error, never skipped for an older one."""


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_rng_states() -> list[dict[str, Any]]:
    """Every rank's RNG state (collective under DDP), so dropout resumes exactly on each rank."""
    mine = rng_state()
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, mine)
    return states


def step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run (trainer_state.json present), oldest first."""
    if not run_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in run_dir.iterdir()
        if (m := STEP_DIR.fullmatch(p.name)) and (p / STATE_FILE).is_file()
    ]
    return sorted(found)


def all_step_dirs(run_dir: Path) -> list[Path]:
    """Every `step_N` directory of a run, complete or not, newest first."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := STEP_DIR.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


# ---------------------------------------------------------------------------------------------- writing


def non_finite_tensors(state: TrainState) -> list[str]:
    """Names of parameters and optimizer-state tensors holding NaN or inf (at most 3; this rank's shards under
    FSDP, so every rank also learns whether any other rank found one)."""

    def finite(t: torch.Tensor) -> bool:
        return bool(torch.isfinite(local_shard(t)).all())

    bad = [name for name, p in state.objective.named_parameters() if not finite(p)]
    for i, per_param in enumerate(state.optimizer.state.values()):
        bad += [
            f"optimizer state {i}.{k}"
            for k, v in per_param.items()
            if torch.is_tensor(v) and v.is_floating_point() and not finite(v)
        ]
    if any_rank(bool(bad), state.world) and not bad:
        bad = ["a parameter or optimizer state on another rank"]
    return bad[:3]


def save_checkpoint(state: TrainState) -> Path:
    """Write `run_dir/step_N` for the state's step atomically and make it `state.last_checkpoint`. Collective
    (every rank's RNG state is gathered; under FSDP every rank writes its shards), so every rank calls it.
    Returns its path.

    Raises TrainingDiverged when a parameter or the optimizer state is not finite (nothing is written), and
    CheckpointNotWritten when writing fails (disk full ...): the temporary directory is removed and the message
    names the last good checkpoint.
    """
    bad = non_finite_tensors(state)
    if bad:
        raise TrainingDiverged(
            f"step {state.step}: {', '.join(bad)} hold NaN or inf; no checkpoint written; last good checkpoint: "
            f"{state.last_checkpoint or 'none'} (lower optim.lr, keep optim.clip > 0, prefer bf16 to fp16)"
        )
    rng_states = all_rng_states()
    cfg, step, world = state.cfg, state.step, state.world
    final, tmp = cfg.run_dir / f"step_{step}", cfg.run_dir / f".step_{step}.tmp"
    error = ""

    def attempt(write: Callable[[], object], everywhere: bool) -> None:
        """One stage; every rank learns whether any rank failed."""
        nonlocal error
        if not error and (everywhere or world.is_main):
            try:
                write()
            except WRITE_ERRORS as exc:
                error = f"{write_error_text(exc)} ({getattr(exc, 'filename', None) or tmp})"
        # Rank 0 may write for minutes (a large model's files): the others wait on the long-timeout group
        # (distributed.wait_minutes), not in the collective below, which would time out under NCCL's 10 minutes.
        wait_for_main(world)
        if any_rank(bool(error), world) and not error:
            error = "another rank could not write its part"

    attempt(lambda: fresh_directory(tmp), everywhere=False)
    attempt(lambda: state.parallel.save_weights(state, tmp), everywhere=True)  # rank 0's files, or every shard
    attempt(lambda: finish_checkpoint(state, tmp, final, rng_states), everywhere=False)
    if error:
        if world.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointNotWritten(
            f"checkpoint step_{step} not written: {error}; removed {tmp.name}; last good checkpoint: "
            f"{state.last_checkpoint or 'none'}"
        )
    if world.is_main:
        for _, old in step_dirs(cfg.run_dir)[: -cfg.checkpoint.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    state.last_checkpoint = final
    return final


def fresh_directory(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)


def finish_checkpoint(state: TrainState, tmp: Path, final: Path, rng_states: list[dict[str, Any]]) -> None:
    """The files beside the weights into `tmp`, the manifest last, then `tmp` renamed to `final` (rank 0)."""
    cfg = state.cfg
    torch.save(state.scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(state.scaler.state_dict(), tmp / "scaler.pt")  # {} unless fp16
    torch.save(rng_states, tmp / "rng.pt")
    (tmp / "config.yaml").write_text(dump_config(cfg))
    trainer_state = {"step": state.step, "sampler": state.sampler.state_dict(), "world_size": state.world.world_size,
                     "trackers": state.tracker_ids}  # fmt: skip
    (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
    files = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
    (tmp / MANIFEST_FILE).write_text(json.dumps({"files": files}, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class CheckpointContents:
    """Everything a checkpoint holds, read into memory (so a bad file is found before anything is changed)."""

    path: Path
    trainer_state: dict[str, Any]
    config: dict[str, Any] | None  # None: written before checkpoints carried their config
    weights: dict[str, Any]  # model or adapter, predictors, optimizer: what the strategy's read_weights gives
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    rng: list[dict[str, Any]]


def manifest_problem(path: Path) -> str | None:
    """Why `path` is not a complete checkpoint (missing file, wrong size), or None."""
    if not path.is_dir():
        return "no such checkpoint directory"
    if not (path / STATE_FILE).is_file():
        return f"incomplete (no {STATE_FILE})"
    manifest = path / MANIFEST_FILE
    if not manifest.is_file():
        return None  # written before manifests existed
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError, OSError):
        return f"unreadable {MANIFEST_FILE}"
    for name, size in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, the manifest says {size}"
    return None


def _read(file: Path, reader: Callable[[Path], Any]) -> Any:
    try:
        return reader(file)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as exc:  # torch.load raises many kinds on a damaged file; name the file instead
        raise ValueError(f"{file}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None


def read_checkpoint(state: TrainState, path: Path) -> CheckpointContents:
    """Read and check every file of `path` for this run; ValueError / FileNotFoundError naming the file."""
    problem = manifest_problem(path)
    if problem:
        raise ValueError(f"{path}: {problem}")
    trainer_state = _read(path / STATE_FILE, lambda f: json.loads(f.read_text()))
    check_trainer_state(trainer_state, path / STATE_FILE)
    config_file = path / "config.yaml"
    config = _read(config_file, lambda f: yaml.safe_load(f.read_text())) if config_file.is_file() else None
    if (path / SHARDED_DIR).is_dir() != state.parallel.shards_checkpoints:
        raise CheckpointMismatch(
            f"{path}: written with distributed.strategy="
            f"{'fsdp' if (path / SHARDED_DIR).is_dir() else 'ddp'}, this run uses {state.parallel.name}"
        )
    load = lambda f, **kw: torch.load(f, weights_only=False, **kw)  # noqa: E731
    return CheckpointContents(
        path,
        trainer_state,
        config,
        state.parallel.read_weights(state, path, _read),
        scheduler=_read(path / "scheduler.pt", load),
        scaler=_read(path / "scaler.pt", load),
        rng=_read(path / "rng.pt", load),
    )


# trainer_state.json's fields and, under "sampler", the data sampler's: all integers (shuffle: a bool).
TRAINER_STATE_FIELDS = ("step", "world_size")
SAMPLER_FIELDS = ("epoch", "step_in_epoch", "n", "global_batch", "seed")


def check_trainer_state(trainer_state: object, file: Path) -> None:
    """ValueError naming the file and the field unless trainer_state.json holds what `apply_checkpoint` reads."""
    sampler = trainer_state.get("sampler") if isinstance(trainer_state, dict) else None
    if not isinstance(sampler, dict):
        raise ValueError(f'{file}: no "sampler" object (the data order to resume)')
    assert isinstance(trainer_state, dict)  # sampler is a dict only when it is
    for where, obj, names in (("", trainer_state, TRAINER_STATE_FIELDS), ("sampler.", sampler, SAMPLER_FIELDS)):
        for name in names:
            if isinstance(obj.get(name), bool) or not isinstance(obj.get(name), int):
                raise ValueError(f"{file}: {where}{name} is {obj.get(name)!r}, not an integer")
    if not isinstance(sampler.get("shuffle"), bool):
        raise ValueError(f"{file}: sampler.shuffle is {sampler.get('shuffle')!r}, not true or false")


def load_checkpoint(state: TrainState, path: Path) -> None:
    """Restore everything `save_checkpoint` wrote into the live state (every rank): weights or adapter,
    predictors, optimizer, schedule, scaler, this rank's RNG, the sampler position and the step. Every file is
    read and checked before the state changes (FSDP's shards: their files and sizes, then read in place)."""
    apply_checkpoint(state, read_checkpoint(state, path))


def apply_checkpoint(state: TrainState, saved: CheckpointContents) -> None:
    """Put read checkpoint contents into the live state; ValueError when they do not fit this run's config."""
    path, world = saved.path, state.world
    state.sampler.check_state_dict(saved.trainer_state["sampler"])
    if saved.trainer_state["world_size"] != world.world_size:
        raise ValueError(
            f"checkpoint.resume: {path} was written by {saved.trainer_state['world_size']} processes, this run has "
            f"{world.world_size}; exact resume needs the same number"
        )
    if saved.config is not None:
        changed = changed_on_resume(saved.config, state.cfg)
        if changed:
            raise ValueError(
                f"checkpoint.resume: {path} was trained with other settings: {'; '.join(changed)} (these would "
                "change the model, the optimizer state or the data order; resume with the old values or start "
                "another run.name)"
            )
    state.parallel.load_weights(state, saved.weights, path)
    state.scheduler.load_state_dict(saved.scheduler)
    state.scaler.load_state_dict(saved.scaler)
    set_rng_state(saved.rng[world.rank])
    state.sampler.load_state_dict(saved.trainer_state["sampler"])
    state.step = saved.trainer_state["step"]
    state.tracker_ids = dict(saved.trainer_state.get("trackers", {}))  # absent in checkpoints written before
    state.last_checkpoint = path

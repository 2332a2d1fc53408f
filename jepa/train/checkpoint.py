"""Training checkpoints `runs/NAME/step_N/`, written to a temporary directory and renamed into place.

A checkpoint directory holds

    model/                 full fine-tuning: an HF-format directory (config.json + model.safetensors)
    adapter.safetensors    LoRA: the adapter tensors only (+ adapter_config.json)
    predictors.safetensors the K predictor-token embeddings (when the run has any)
    optimizer.pt  scheduler.pt  scaler.pt ({} unless fp16)  rng.pt (python / numpy / torch / cuda states,
                           one entry per rank)
    config.yaml            the run's config when it was written (resume compares it with the new one)
    trainer_state.json     step, data-sampler position, world size
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from jepa.models import save_pretrained
from jepa.models.checkpoint import read_safetensors, tied
from jepa.models.lora import read_adapter, save_adapter, set_adapter
from jepa.models.predictors import read_predictors, save_predictors
from jepa.train.config import changed_on_resume, dump_config
from jepa.train.state import CheckpointNotWritten, TrainingDiverged, TrainState

STEP_DIR = re.compile(r"step_(\d+)")
STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_rng_states() -> list[dict]:
    """Every rank's RNG state (collective under DDP), so dropout resumes exactly on each rank."""
    mine = rng_state()
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    states: list = [None] * dist.get_world_size()
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
    """Names of parameters and optimizer-state tensors holding NaN or inf (at most 3)."""
    bad = [name for name, p in state.objective.named_parameters() if not bool(torch.isfinite(p).all())]
    for i, per_param in enumerate(state.optimizer.state.values()):
        bad += [
            f"optimizer state {i}.{k}"
            for k, v in per_param.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
        ]
    return bad[:3]


def save_checkpoint(state: TrainState) -> Path:
    """Write `run_dir/step_N` for the state's step atomically, on rank 0, and make it `state.last_checkpoint`.
    Collective under DDP (every rank's RNG state is gathered), so every rank calls it. Returns its path.

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
    cfg, step = state.cfg, state.step
    final, tmp = cfg.run_dir / f"step_{step}", cfg.run_dir / f".step_{step}.tmp"
    error = ""
    if state.world.is_main:
        try:
            write_checkpoint_files(state, tmp, rng_states)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            error = f"{exc.strerror or exc} ({exc.filename or tmp})"
        for _, old in step_dirs(cfg.run_dir)[: -cfg.checkpoint.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    if state.world.is_distributed:  # every rank learns whether rank 0 succeeded
        flag = torch.tensor([float(bool(error))], device=state.world.device)
        dist.broadcast(flag, 0)
        error = error or ("rank 0 could not write it" if flag.item() else "")
    if error:
        raise CheckpointNotWritten(
            f"checkpoint step_{step} not written: {error}; removed {tmp.name}; last good checkpoint: "
            f"{state.last_checkpoint or 'none'}"
        )
    state.last_checkpoint = final
    return final


def write_checkpoint_files(state: TrainState, tmp: Path, rng_states: list[dict]) -> None:
    """Every file of a checkpoint into `tmp`, the manifest last."""
    cfg = state.cfg
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if cfg.lora.enabled:
        save_adapter(state.model, tmp)
    else:
        save_pretrained(state.model, tmp / "model")
    if state.predictors is not None:
        save_predictors(state.predictors, tmp)
    torch.save(state.optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(state.scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(state.scaler.state_dict(), tmp / "scaler.pt")  # {} unless fp16
    torch.save(rng_states, tmp / "rng.pt")
    (tmp / "config.yaml").write_text(dump_config(cfg))
    trainer_state = {"step": state.step, "sampler": state.sampler.state_dict(), "world_size": state.world.world_size}
    (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
    files = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
    (tmp / MANIFEST_FILE).write_text(json.dumps({"files": files}, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class CheckpointContents:
    """Everything a checkpoint holds, read into memory (so a bad file is found before anything is changed)."""

    path: Path
    trainer_state: dict
    config: dict | None  # None: written before checkpoints carried their config
    model: dict[str, torch.Tensor] | None  # full fine-tuning (our names)
    adapter: dict[str, torch.Tensor] | None  # LoRA
    predictors: torch.Tensor | None
    optimizer: dict
    scheduler: dict
    scaler: dict
    rng: list[dict]


def manifest_problem(path: Path) -> str | None:
    """Why `path` is not a complete checkpoint (missing file, wrong size), or None."""
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


def _read(file: Path, reader):
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
    device = state.world.device
    trainer_state = _read(path / STATE_FILE, lambda f: json.loads(f.read_text()))
    config_file = path / "config.yaml"
    config = _read(config_file, lambda f: yaml.safe_load(f.read_text())) if config_file.is_file() else None
    model = adapter = None
    if state.cfg.lora.enabled:
        adapter = read_adapter(path)
    else:
        model = state.model.state_from_hf(read_safetensors(path / "model"))
    predictors = None
    if state.predictors is not None:
        predictors = read_predictors(path, state.predictors.weight.shape[1])
    load = lambda f, **kw: torch.load(f, weights_only=False, **kw)  # noqa: E731
    return CheckpointContents(
        path,
        trainer_state,
        config,
        model,
        adapter,
        predictors,
        optimizer=_read(path / "optimizer.pt", lambda f: load(f, map_location=device)),
        scheduler=_read(path / "scheduler.pt", load),
        scaler=_read(path / "scaler.pt", load),
        rng=_read(path / "rng.pt", load),
    )


def load_checkpoint(state: TrainState, path: Path) -> None:
    """Restore everything `save_checkpoint` wrote into the live state (every rank): weights or adapter,
    predictors, optimizer, schedule, scaler, this rank's RNG, the sampler position and the step. Every file is
    read and checked before the state changes."""
    apply_checkpoint(state, read_checkpoint(state, path))


def apply_checkpoint(state: TrainState, saved: CheckpointContents) -> None:
    """Put read checkpoint contents into the live state; ValueError when they do not fit this run's config."""
    path, world, model = saved.path, state.world, state.model
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
    if saved.predictors is not None and saved.predictors.shape != state.predictors.weight.shape:
        raise ValueError(
            f"{path}/predictors.safetensors: K={saved.predictors.shape[0]}, the run has "
            f"K={state.predictors.weight.shape[0]} predictor tokens (layout.predictors)"
        )
    if state.predictors is not None and saved.predictors is None:
        raise ValueError(f"{path}: no predictors.safetensors, the run has predictor tokens (layout.predictors)")
    if saved.adapter is not None:
        set_adapter(model, saved.adapter, path / "adapter.safetensors")
    else:
        tensors = dict(saved.model)
        if tied(model):
            tensors.pop("lm_head.weight", None)
        result = model.load_state_dict({k: v.to(world.device) for k, v in tensors.items()}, strict=False)
        missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and tied(model))]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{path / 'model'}: does not match the model (missing {missing[:3]}, "
                f"unexpected {result.unexpected_keys[:3]})"
            )
    if state.predictors is not None:
        with torch.no_grad():
            state.predictors.weight.copy_(saved.predictors)
    state.optimizer.load_state_dict(saved.optimizer)
    state.scheduler.load_state_dict(saved.scheduler)
    state.scaler.load_state_dict(saved.scaler)
    set_rng_state(saved.rng[world.rank])
    state.sampler.load_state_dict(saved.trainer_state["sampler"])
    state.step = saved.trainer_state["step"]
    state.last_checkpoint = path

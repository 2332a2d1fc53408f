"""Training checkpoints `runs/NAME/step_N/`, written to a temporary directory and renamed into place.

A checkpoint directory holds

    model/                 full fine-tuning: an HF-format directory (config.json + model.safetensors)
    adapter.safetensors    LoRA: the adapter tensors only (+ adapter_config.json)
    predictors.safetensors the K predictor-token embeddings (when the run has any)
    optimizer.pt  scheduler.pt  scaler.pt ({} unless fp16)  rng.pt (python / numpy / torch / cuda states,
                           one entry per rank)
    trainer_state.json     step, data-sampler position, world size -- written last

`os.replace` of the finished temporary directory is atomic, so a crash leaves either the whole checkpoint or
none; `find_latest` only accepts directories that contain trainer_state.json.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from jepa.models import save_pretrained
from jepa.models.checkpoint import read_safetensors, tied
from jepa.models.lora import load_adapter, save_adapter
from jepa.models.predictors import restore_predictors, save_predictors
from jepa.train.distributed import barrier
from jepa.train.state import TrainState

STEP_DIR = re.compile(r"step_(\d+)")
STATE_FILE = "trainer_state.json"


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
    """Complete checkpoints of a run, oldest first."""
    if not run_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in run_dir.iterdir()
        if (m := STEP_DIR.fullmatch(p.name)) and (p / STATE_FILE).is_file()
    ]
    return sorted(found)


def find_latest(run_dir: Path) -> Path | None:
    dirs = step_dirs(run_dir)
    return dirs[-1][1] if dirs else None


def save_checkpoint(state: TrainState) -> Path:
    """Write `run_dir/step_N` for the state's step atomically, on rank 0, and make it `state.last_checkpoint`.
    Collective under DDP (every rank's RNG state is gathered), so every rank calls it. Returns its path."""
    rng_states = all_rng_states()
    cfg, step = state.cfg, state.step
    final = cfg.run_dir / f"step_{step}"
    if state.world.is_main:
        tmp = cfg.run_dir / f".step_{step}.tmp"
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
        trainer_state = {"step": step, "sampler": state.sampler.state_dict(), "world_size": state.world.world_size}
        (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in step_dirs(cfg.run_dir)[: -cfg.checkpoint.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(state.world)
    state.last_checkpoint = final
    return final


def load_checkpoint(state: TrainState, path: Path) -> None:
    """Restore everything `save_checkpoint` wrote into the live state (every rank): weights or adapter,
    predictors, optimizer, schedule, scaler, this rank's RNG, the sampler position and the step."""
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"checkpoint.resume: {path} is not a complete checkpoint (no {STATE_FILE})")
    trainer_state = json.loads(state_file.read_text())
    world = state.world
    if trainer_state["world_size"] != world.world_size:
        raise ValueError(
            f"checkpoint.resume: {path} was written by {trainer_state['world_size']} processes, this "
            f"run has {world.world_size}; exact resume needs the same number"
        )
    model = state.model
    if state.cfg.lora.enabled:
        load_adapter(model, path)
    else:
        tensors = model.state_from_hf(read_safetensors(path / "model"))
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
        restore_predictors(state.predictors, path)
    state.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=world.device, weights_only=False))
    state.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    state.scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=False))
    set_rng_state(torch.load(path / "rng.pt", weights_only=False)[world.rank])
    state.sampler.load_state_dict(trainer_state["sampler"])
    state.step = trainer_state["step"]
    state.last_checkpoint = path

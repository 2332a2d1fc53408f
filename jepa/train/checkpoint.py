"""Training checkpoints `runs/NAME/step_N/`, written to a temporary directory and renamed into place.

A checkpoint directory holds

    model/                 full fine-tuning: an HF-format directory (config.json + model.safetensors)
    adapter.safetensors    LoRA: the adapter tensors only (+ adapter_config.json)
    predictors.safetensors the K predictor-token embeddings (when the run has any)
    optimizer.pt  scheduler.pt  scaler.pt  rng.pt (python / numpy / torch / cuda states, one entry per rank)
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
from safetensors.torch import load_file, save_file
from torch import nn

from jepa.models import save_pretrained
from jepa.models.checkpoint import hf_to_ours, read_safetensors, tied
from jepa.models.lora import load_adapter, save_adapter

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
    found = [(int(m.group(1)), p) for p in run_dir.iterdir()
             if (m := STEP_DIR.fullmatch(p.name)) and (p / STATE_FILE).is_file()]
    return sorted(found)


def find_latest(run_dir: Path) -> Path | None:
    dirs = step_dirs(run_dir)
    return dirs[-1][1] if dirs else None


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, predictors: nn.Module | None, lora: bool,
                    optimizer: torch.optim.Optimizer, scheduler, scaler, sampler_state: dict, world_size: int,
                    rng_states: list[dict], keep_last: int) -> Path:
    """Write step_N atomically (rank 0 only; gather `rng_states` on every rank first). Returns its path."""
    final = run_dir / f"step_{step}"
    tmp = run_dir / f".step_{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if lora:
        save_adapter(model, tmp)
    else:
        save_pretrained(model, tmp / "model")
    if predictors is not None:
        save_file({"weight": predictors.weight.detach().contiguous().cpu()}, str(tmp / "predictors.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(scaler.state_dict() if scaler is not None else {}, tmp / "scaler.pt")
    torch.save(rng_states, tmp / "rng.pt")
    state = {"step": step, "sampler": sampler_state, "world_size": world_size}
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in step_dirs(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: nn.Module, predictors: nn.Module | None, lora: bool,
                    optimizer: torch.optim.Optimizer, scheduler, scaler, rank: int, world_size: int) -> dict:
    """Restore everything saved by `save_checkpoint` into live objects (every rank). Returns trainer_state."""
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"checkpoint.resume: {path} is not a complete checkpoint (no {STATE_FILE})")
    state = json.loads(state_file.read_text())
    if state["world_size"] != world_size:
        raise ValueError(f"checkpoint.resume: {path} was written by {state['world_size']} processes, this run has "
                         f"{world_size}; exact resume needs the same number")
    device = next(model.parameters()).device
    if lora:
        load_adapter(model, path)
    else:
        tensors = hf_to_ours(model, read_safetensors(path / "model"))
        if tied(model):
            tensors.pop("lm_head.weight", None)
        result = model.load_state_dict({k: v.to(device) for k, v in tensors.items()}, strict=False)
        missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and tied(model))]
        if missing or result.unexpected_keys:
            raise ValueError(f"{path / 'model'}: does not match the model (missing {missing[:3]}, "
                             f"unexpected {result.unexpected_keys[:3]})")
    if predictors is not None:
        with torch.no_grad():
            predictors.weight.copy_(load_file(str(path / "predictors.safetensors"))["weight"])
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    if scaler is not None:
        scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=False))
    set_rng_state(torch.load(path / "rng.pt", weights_only=False)[rank])
    return state

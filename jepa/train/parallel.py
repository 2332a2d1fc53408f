"""How the objective is spread over processes: `distributed.strategy`.

    ddp   one process, or DistributedDataParallel over torchrun's processes: each holds the whole model, its
          gradients and the AdamW state (~16 bytes per parameter with fp32 master weights). Checkpoints: rank 0
          writes the model (or the LoRA adapter), the predictor tokens and optimizer.pt.
    fsdp  FSDP2 (`torch.distributed.fsdp.fully_shard`): every block, then the rest of the objective (embeddings,
          final norm, head, predictor tokens) sharded over the processes. Parameters are all-gathered per block
          for its forward and backward and gradients reduce-scattered, on the last micro-batch of a step only;
          the optimizer is built on the shards. Checkpoints: `torch.distributed.checkpoint`, every rank writing
          its shards into `step_N/sharded/` (a file system all ranks share). Needs torchrun, also for one process.

A strategy is what the trainer asks instead of branching: `wrap` the objective, the context of one micro-batch
(`accumulating`), the model and optimizer part of a checkpoint (`save_weights` / `read_weights` /
`load_weights`), and the whole trained model on rank 0 (`gathered`) for evaluation and export.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from jepa.models import build_model, save_pretrained
from jepa.models.base import CausalLM
from jepa.models.checkpoint import read_safetensors, tied
from jepa.models.lora import ADAPTER_FILE, apply_lora, read_adapter, save_adapter, set_adapter
from jepa.models.predictors import PredictorEmbeddings, read_predictors, save_predictors
from jepa.objective import Objective
from jepa.train.distributed import WorldInfo

if TYPE_CHECKING:  # state.py holds a strategy: the state is only ever an argument here
    from jepa.train.state import TrainState

# read(file, reader): the reader's result, or one ValueError naming a damaged file (jepa/train/checkpoint.py)
ReadFile = Callable[[Path, Callable[[Path], Any]], Any]

SHARDED_DIR = "sharded"  # a checkpoint's torch.distributed.checkpoint directory (fsdp)


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor: a DTensor (FSDP's gradient norm) as its full value, anything else as it is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def local_shard(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a sharded DTensor (FSDP parameters, optimizer state); anything else as it is."""
    return t.to_local() if isinstance(t, DTensor) else t


class DDP:
    """One process, or DistributedDataParallel (gradients all-reduced on the last micro-batch)."""

    name = "ddp"
    needs_process_group = False  # one process runs without torch.distributed
    shards_checkpoints = False  # rank 0 writes whole files (SHARDED_DIR only under FSDP)
    casts_for_compute = False  # the module computes in the stored dtype (autocast and frozen bases do the rest)

    def wrap(self, objective: Objective, world: WorldInfo, precision: str) -> nn.Module:
        if not world.is_distributed:
            return objective
        return DistributedDataParallel(
            objective, device_ids=[world.device.index] if world.device.type == "cuda" else None
        )

    def accumulating(self, module: nn.Module, last: bool) -> AbstractContextManager[Any]:
        """The context of one micro-batch's forward and backward: gradients are reduced on the last one only."""
        return module.no_sync() if isinstance(module, DistributedDataParallel) and not last else nullcontext()

    @contextmanager
    def gathered(self, state: TrainState) -> Iterator[tuple[CausalLM, PredictorEmbeddings | None] | None]:
        """(model, predictors) whole on rank 0, None elsewhere. Collective: every rank enters it."""
        yield (state.model, state.predictors) if state.world.is_main else None

    def save_weights(self, state: TrainState, tmp: Path) -> None:
        """Model (or adapter), predictor tokens and optimizer into checkpoint directory `tmp`. Every rank calls it."""
        if not state.world.is_main:
            return
        if state.cfg.lora.enabled:
            save_adapter(state.model, tmp)
        else:
            save_pretrained(state.model, tmp / "model")
        if state.predictors is not None:
            save_predictors(state.predictors, tmp)
        torch.save(state.optimizer.state_dict(), tmp / "optimizer.pt")

    def read_weights(self, state: TrainState, path: Path, read: ReadFile) -> dict[str, Any]:
        """What save_weights wrote, read and checked (read(file, reader) names a damaged file)."""
        load = lambda f: torch.load(f, map_location=state.world.device, weights_only=False)  # noqa: E731
        weights = {"optimizer": read(path / "optimizer.pt", load)}
        if state.cfg.lora.enabled:
            weights["adapter"] = read_adapter(path)
        else:
            weights["model"] = state.model.state_from_hf(read_safetensors(path / "model"))
            expected = state.model.state_dict()
            for name, tensor in weights["model"].items():  # another model's checkpoint: found before any change
                if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
                    raise ValueError(f"{path / 'model'}: {name} has shape {tuple(tensor.shape)}, this run's model "
                                     f"{tuple(expected[name].shape)} (a checkpoint of another model)")  # fmt: skip
        if state.predictors is not None:
            weights["predictors"] = read_predictors(path, state.predictors.weight.shape[1])
        return weights

    def load_weights(self, state: TrainState, weights: dict[str, Any], path: Path) -> None:
        """Put read weights into the live model, predictors and optimizer; ValueError when they do not fit."""
        model, predictors = state.model, state.predictors
        saved_predictors: torch.Tensor | None = weights.get("predictors")  # read when the run has predictors
        if (
            predictors is not None
            and saved_predictors is not None
            and saved_predictors.shape != predictors.weight.shape
        ):
            raise ValueError(
                f"{path}/predictors.safetensors: K={saved_predictors.shape[0]}, the run has "
                f"K={predictors.weight.shape[0]} predictor tokens (layout.predictors)"
            )
        if "adapter" in weights:
            set_adapter(model, weights["adapter"], path / ADAPTER_FILE)
        else:
            tensors = dict(weights["model"])
            if tied(model):
                tensors.pop("lm_head.weight", None)
            result = model.load_state_dict({k: v.to(state.world.device) for k, v in tensors.items()}, strict=False)
            missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and tied(model))]
            if missing or result.unexpected_keys:
                raise ValueError(
                    f"{path / 'model'}: does not match the model (missing {missing[:3]}, "
                    f"unexpected {result.unexpected_keys[:3]})"
                )
        if predictors is not None and saved_predictors is not None:
            with torch.no_grad():
                predictors.weight.copy_(saved_predictors)
        state.optimizer.load_state_dict(weights["optimizer"])


class FSDP(DDP):
    """FSDP2 (see the module docstring)."""

    name = "fsdp"
    needs_process_group = True
    shards_checkpoints = True
    casts_for_compute = True  # MixedPrecisionPolicy casts each block's parameters for its forward

    def wrap(self, objective: Objective, world: WorldInfo, precision: str) -> nn.Module:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # bf16: fp32 master weights, each block computes in bf16 (autocast stays on for what it keeps in fp32)
        # and gradients are reduced in fp32. fp32 and pure_bf16 compute in the stored dtype.
        policy = MixedPrecisionPolicy(torch.bfloat16, torch.float32) if precision == "bf16" else MixedPrecisionPolicy()
        for block in objective.model.blocks:
            fully_shard(block, mp_policy=policy)
        return cast(nn.Module, fully_shard(objective, mp_policy=policy))

    def accumulating(self, module: nn.Module, last: bool) -> AbstractContextManager[Any]:
        from torch.distributed.fsdp import FSDPModule

        cast(FSDPModule, module).set_requires_gradient_sync(last)
        return nullcontext()

    @contextmanager
    def gathered(self, state: TrainState) -> Iterator[tuple[CausalLM, PredictorEmbeddings | None] | None]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, on rank 0 only
        full = get_model_state_dict(state.objective, options=options)
        yield unsharded_copy(state, cast(dict[str, torch.Tensor], full)) if state.world.is_main else None

    def _state_dicts(self, state: TrainState) -> tuple[dict[str, Any], Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        # LoRA: only the trainable tensors (adapters, predictor tokens) and their optimizer state. Loading is not
        # strict about the frozen ones left out; dcp.load already refuses a checkpoint that lacks a key asked for.
        # (StateDictOptions.ignore_frozen_params misses a tied head: it asks named_parameters, which dedups.)
        lora = state.cfg.lora.enabled
        options = StateDictOptions(strict=not lora)
        model, optimizer = get_state_dict(state.objective, state.optimizer, options=options)
        if lora:
            named = state.objective.named_parameters(remove_duplicate=False)
            frozen = {name for name, p in named if not p.requires_grad}
            model = {k: v for k, v in model.items() if k not in frozen}
        return {"model": model, "optimizer": optimizer}, options

    def save_weights(self, state: TrainState, tmp: Path) -> None:
        from torch.distributed.checkpoint.state_dict_saver import save

        dicts, _ = self._state_dicts(state)
        save(dicts, checkpoint_id=str(tmp / SHARDED_DIR))

    def read_weights(self, state: TrainState, path: Path, read: ReadFile) -> dict[str, Any]:
        return {}  # the manifest checked the shards' files and sizes; load_weights reads them in place

    def load_weights(self, state: TrainState, weights: dict[str, Any], path: Path) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict
        from torch.distributed.checkpoint.state_dict_loader import load

        dicts, options = self._state_dicts(state)
        try:
            load(dicts, checkpoint_id=str(path / SHARDED_DIR))
        except Exception as exc:  # a missing key or a shape that does not fit: name the checkpoint
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{path / SHARDED_DIR}: does not fit this run ({first})") from None
        set_state_dict(state.objective, state.optimizer, model_state_dict=dicts["model"],
                       optim_state_dict=dicts["optimizer"], options=options)  # fmt: skip


def unsharded_copy(state: TrainState, full: dict[str, torch.Tensor]) -> tuple[CausalLM, PredictorEmbeddings | None]:
    """A plain (model, predictors) on rank 0's device from the objective's full state dict `full`."""
    cfg, device = state.cfg, state.world.device
    with torch.device("meta"):
        model = build_model(state.model.config.to_hf())
        if cfg.lora.enabled:
            apply_lora(model, cfg.lora.targets or list(model.lora_targets), cfg.lora.rank, cfg.lora.alpha)
    result = model.load_state_dict({k.removeprefix("model."): v for k, v in full.items() if k.startswith("model.")},
                                   strict=False, assign=True)  # fmt: skip
    tied_head = getattr(model.config, "tie_word_embeddings", True)  # GPT-2 always ties
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and tied_head)]
    if missing or result.unexpected_keys:  # a bug, not bad input: the copy must be the trained model, whole
        raise RuntimeError(f"gathered state does not fit the model: missing {missing[:3]}, "
                           f"unexpected {result.unexpected_keys[:3]}")  # fmt: skip
    model.materialize(device)
    model = model.to(device)
    predictors = None
    if state.predictors is not None:
        predictors = type(state.predictors)(state.predictors.weight.shape[0], model.embed_tokens, seed=0)
        predictors.weight.data = full["predictors.weight"].to(device)
    return model, predictors


def strategy(name: str) -> DDP:
    """The strategy named by `distributed.strategy`."""
    return {"ddp": DDP, "fsdp": FSDP}[name]()

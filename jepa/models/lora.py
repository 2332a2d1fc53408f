"""LoRA (own implementation): low-rank adapters on named nn.Linear modules, merge for export, adapter files.

    y = base(x) + (dropout(x) @ A.T @ B.T) * alpha / rank,   A [r, in] Kaiming-uniform, B [out, r] zeros

so an adapted model starts exactly equal to its base. `apply_lora` freezes every base parameter; the predictor
embeddings live outside the model (jepa.objective.PredictorEmbeddings) and stay trainable. Adapter tensors are
named `<module path>.lora_A` / `.lora_B` (HF module paths, e.g. `model.layers.0.self_attn.q_proj.lora_A`).

Adapters are written in PEFT's layout (`adapter_model.safetensors` with `base_model.model.<path>.lora_A.weight`
keys + PEFT's `adapter_config.json`: r, lora_alpha, target_modules), so PEFT, vLLM and transformers load them onto
the base model; PEFT's scaling is lora_alpha / r, as here. A fused checkpoint layout (Phi-3's qkv_proj /
gate_up_proj) has per-projection adapters here, which PEFT cannot put on HF's fused modules: merge those (the
default `checkpoint.export`). Directories written before (`adapter.safetensors`, keys without the PEFT prefix,
config {rank, alpha, modules}) still load.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from jepa.models.base import CausalLM
from jepa.models.checkpoint import save_pretrained

ADAPTER_FILE = "adapter_model.safetensors"  # PEFT's names
ADAPTER_CONFIG = "adapter_config.json"
LEGACY_ADAPTER_FILE = "adapter.safetensors"  # this library's layout before PEFT's
PEFT_PREFIX = "base_model.model."


def has_adapter(path: str | Path) -> bool:
    """Whether the directory holds a LoRA adapter (PEFT's layout or the earlier one)."""
    return (Path(path) / ADAPTER_FILE).is_file() or (Path(path) / LEGACY_ADAPTER_FILE).is_file()


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        dev, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=dev, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=dev, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (self.dropout(x) @ self.lora_A.T.to(x.dtype)) @ self.lora_B.T.to(x.dtype)
        return self.base(x) + update * self.scaling

    def merged(self) -> nn.Linear:
        """The base Linear with the update folded into its weight (computed in fp32, stored in its dtype)."""
        w = self.base.weight
        with torch.no_grad():
            delta = (self.lora_B.float() @ self.lora_A.float()) * self.scaling
            self.base.weight.data = (w.float() + delta).to(w.dtype)
        return self.base


def apply_lora(model: CausalLM, targets: list[str], rank: int, alpha: float, *, dropout: float = 0.0) -> list[str]:
    """Freeze `model` and wrap every nn.Linear whose last name is in `targets`. Returns the wrapped paths.

    Raises ValueError when no module matches (a typo in `lora.targets` would otherwise train nothing).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for path, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, rank, alpha, dropout))
                wrapped.append(f"{path}.{child_name}" if path else child_name)
    if not wrapped:
        raise ValueError(f"lora.targets: no nn.Linear named {targets} in the model")
    return wrapped


def cast_frozen_bases(model: CausalLM, dtype: torch.dtype) -> int:
    """Store every adapted layer's frozen base weight (and bias) in `dtype`, the autocast compute dtype: autocast
    would cast them to exactly these values on every forward, so results are unchanged and the copies (and half
    the base's memory) are saved. Embeddings and norms keep their dtype. Returns the number of layers cast."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for layer in layers:
        layer.base.to(dtype)
    return len(layers)


def lora_state_dict(model: CausalLM) -> dict[str, torch.Tensor]:
    """Only the adapter tensors: {"<path>.lora_A": [r, in], "<path>.lora_B": [out, r]}."""
    return {name: p.detach() for name, p in model.named_parameters() if name.endswith((".lora_A", ".lora_B"))}


def merge_lora(model: CausalLM) -> CausalLM:
    """Fold every adapter into its base weight and put the plain nn.Linear back (in place). Returns `model`."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())
    return model


def save_adapter(model: CausalLM, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the adapter in PEFT's layout (adapter_model.safetensors + adapter_config.json) to the directory
    `path`; `extra` adds keys to the config (e.g. base_model_name_or_path)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {f"{PEFT_PREFIX}{k}.weight": v.contiguous().cpu() for k, v in lora_state_dict(model).items()}
    save_file(state, str(path / ADAPTER_FILE), metadata={"format": "pt"})
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    paths = sorted({k.rsplit(".", 1)[0] for k in lora_state_dict(model)})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": layers[0].rank,
        "lora_alpha": layers[0].alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted({p.rsplit(".", 1)[-1] for p in paths}),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "base_model_name_or_path": None,
        **(extra or {}),
    }
    (path / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return path


def adapter_settings(path: str | Path) -> tuple[list[str], int, float]:
    """(target module names, rank, alpha) of the adapter in `path` (PEFT's config, or the earlier one)."""
    file = Path(path) / ADAPTER_CONFIG
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
        if "r" in meta:
            return list(meta["target_modules"]), int(meta["r"]), float(meta["lora_alpha"])
        return sorted({m.rsplit(".", 1)[-1] for m in meta["modules"]}), int(meta["rank"]), float(meta["alpha"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{file}: not a LoRA adapter config ({' '.join(str(exc).split())[:120]})") from None


def read_adapter(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of the adapter in `path`, under this library's names (`<module path>.lora_A`); a missing or
    unreadable file is one error naming it."""
    file = Path(path) / ADAPTER_FILE
    if not file.is_file() and (Path(path) / LEGACY_ADAPTER_FILE).is_file():
        file = Path(path) / LEGACY_ADAPTER_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: adapter file not found")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{file}: unreadable safetensors file ({exc})") from None
    return {k.removeprefix(PEFT_PREFIX).removesuffix(".weight"): v for k, v in tensors.items()}


def set_adapter(model: CausalLM, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy adapter tensors into an already-wrapped model (exact copy); `source` names them in errors."""
    params = dict(model.named_parameters())
    missing = sorted(set(lora_state_dict(model)) - set(tensors))
    if missing or any(k not in params for k in tensors):
        raise ValueError(f"{source}: adapter does not match the model's LoRA modules (missing {missing[:3]})")
    with torch.no_grad():
        for key, value in tensors.items():
            params[key].copy_(value)


def load_adapter(model: CausalLM, path: str | Path) -> None:
    """Copy the adapter saved in `path` into an already-wrapped model (exact copy)."""
    set_adapter(model, read_adapter(path), Path(path) / ADAPTER_FILE)


def save_merged(model: CausalLM, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """An HF-format directory of the base with the adapters merged; `model` itself is left adapted."""
    return save_pretrained(merge_lora(copy.deepcopy(model)), path, dtype=dtype)

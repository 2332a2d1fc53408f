"""Hugging Face-format checkpoints: config.json + model.safetensors (or a sharded index).

Our parameter names are HF's, so import and export are a copy; what an architecture does differently (GPT-2's
transposed Conv1D weights) is its class's `state_from_hf` / `state_to_hf`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from jepa.io import read_json_object
from jepa.models.base import CausalLM
from jepa.models.gemma import HF_CLASSES as GEMMA_VARIANTS
from jepa.models.gemma import Gemma, GemmaConfig
from jepa.models.gpt2 import GPT2, GPT2Config
from jepa.models.llama import VARIANTS, Llama, LlamaConfig

# model_type -> (module, config); the Llama variants (jepa.models.llama.VARIANTS) share one module.
ARCHITECTURES: dict[str, tuple[type[CausalLM], Any]] = {
    **{name: (Llama, LlamaConfig) for name in VARIANTS},
    **{name: (Gemma, GemmaConfig) for name in GEMMA_VARIANTS},
    "gpt2": (GPT2, GPT2Config),
}


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found (an HF-format model directory needs config.json)")
    config = read_json_object(config_file, "a JSON object of model settings")
    return config


def build_model(hf_config: dict[str, Any], source: str = "config") -> CausalLM:
    """A randomly initialised model for an HF config dict (`model_type` picks the architecture)."""
    model_type = hf_config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{source}: unknown model_type {model_type!r} (supported: {', '.join(ARCHITECTURES)})")
    cls, cfg_cls = ARCHITECTURES[model_type]
    try:
        cfg = cfg_cls.from_hf(hf_config)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    return cls(cfg)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors` or of the shards listed in `model.safetensors.index.json`."""
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = read_json_object(index, "a safetensors index").get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f'{index}: no "weight_map" object (tensor name -> shard file)')
        files = [path / name for name in sorted(set(weight_map.values()))]
    else:
        raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")
    tensors = {}
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"{file} listed in {index.name} is missing")
        try:
            with safe_open(file, framework="pt") as f:
                for key in f.keys():
                    tensors[key] = f.get_tensor(key)
        except (SafetensorError, OSError) as exc:  # truncated or not a safetensors file at all
            raise ValueError(f"{file}: unreadable safetensors file ({exc}); re-export or re-download it") from None
    return tensors


def tied(model: CausalLM) -> bool:
    return model.lm_head.weight is model.embed_tokens.weight


def load_pretrained(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> CausalLM:
    """Load an HF-format directory into our Llama or GPT-2. Errors name the file and the offending tensors."""
    path = Path(path)
    hf_config = read_config(path)
    with torch.device("meta"):
        model = build_model(hf_config, source=str(path / "config.json"))
    tensors = model.state_from_hf(read_safetensors(path))
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if tied(model):
        expected.pop("lm_head.weight")
        tensors.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path}: checkpoint does not match config.json: missing tensors {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected tensors {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}"
        )
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != tuple(shape):
            raise ValueError(
                f"{path}: tensor {key} has shape {tuple(tensors[key].shape)}, config.json implies {tuple(shape)}"
            )
    # contiguous: GPT-2's Conv1D weights arrive as transposed views, which would pick other matmul kernels (and
    # cost DDP / FSDP a copy per step) than the same weights built in our layout
    state = {k: v.to(device=device, dtype=dtype).contiguous() for k, v in tensors.items()}
    model.load_state_dict(state, strict=False, assign=True)
    model.materialize(device)
    return model.eval()


def save_pretrained(model: CausalLM, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write config.json + model.safetensors that transformers (and `load_pretrained`) read back."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if tied(model):
        state.pop("lm_head.weight")
    state = model.state_to_hf(state)
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in state.items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    hf_config = model.config.to_hf()
    hf_config["torch_dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
    (path / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return path

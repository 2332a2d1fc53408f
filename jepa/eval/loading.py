"""Loading what the evaluators score: an HF-format model directory (and, later, a run checkpoint).

`load_for_eval` is the single entry point the evaluation CLI uses. It understands

- an HF-format directory (config.json + model.safetensors [+ tokenizer.json]), e.g. ``runs/NAME/final`` when
  exported as ``hf``, with the trained predictor embeddings in ``predictors.safetensors`` (``{"weight": [K, D]}``)
  when the run has them;
- a full fine-tuning checkpoint ``runs/NAME/step_N/`` whose HF model is in ``model/`` (predictors at the
  checkpoint's top level).

A LoRA checkpoint (``adapter.safetensors`` + a pointer to its base) is not loaded yet: the training code's owner
is to add it *here* (merge the adapter into the base), returning the same `EvalModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from jepa.models import load_pretrained
from jepa.objective import PredictorEmbeddings

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class EvalModel:
    """A model ready for evaluation: in eval mode, on its device."""

    model: nn.Module
    tokenizer_dir: Path  # where tokenizer.json (and tokenizer_config.json) live
    predictors: PredictorEmbeddings | None = None  # trained predictor-token embeddings, when the checkpoint has them


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_for_eval(path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                  ) -> EvalModel:
    """Load ``path`` (see module docstring) for evaluation, in eval mode.

    dtype None = bfloat16 on CUDA, float32 on CPU; device None = CUDA if present. The tokenizer directory is the
    model directory, or the checkpoint directory when only that one has a tokenizer.json.
    TODO(trainer): LoRA checkpoints (adapter + base pointer).
    Raises FileNotFoundError / ValueError naming the offending file.
    """
    path = Path(path)
    device = torch.device(device or default_device())
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: model directory not found")
    model_dir = path / "model" if (path / "model" / "config.json").is_file() else path
    if not (model_dir / "config.json").is_file():
        if (path / "adapter.safetensors").is_file():
            raise ValueError(f"{path}: LoRA adapter checkpoints are not supported by load_for_eval yet; evaluate an "
                             "HF export (checkpoint.export: hf merges the adapter)")
        raise FileNotFoundError(f"{path}: no config.json (expected an HF-format model directory or a checkpoint "
                                "with model/)")
    model = load_pretrained(model_dir, dtype=dtype, device=device).eval()
    predictors = load_predictors(path / "predictors.safetensors", model)
    tokenizer_dir = model_dir if (model_dir / "tokenizer.json").is_file() or model_dir == path else path
    return EvalModel(model=model, tokenizer_dir=tokenizer_dir, predictors=predictors)


def load_predictors(file: Path, model: nn.Module) -> PredictorEmbeddings | None:
    """``predictors.safetensors`` ({"weight": [K, D]}) as `PredictorEmbeddings` on the model's device/dtype, or
    None when the file does not exist. A wrong width raises ValueError naming the file."""
    if not file.is_file():
        return None
    tensors = load_file(str(file))
    embedding = model.embed_tokens
    weight = tensors.get("weight")
    if weight is None or weight.dim() != 2 or weight.shape[1] != embedding.weight.shape[1]:
        shape = None if weight is None else tuple(weight.shape)
        raise ValueError(f"{file}: expected a tensor 'weight' of shape [K, {embedding.weight.shape[1]}], got {shape}")
    predictors = PredictorEmbeddings(weight.shape[0], embedding)
    with torch.no_grad():
        predictors.weight.copy_(weight.to(predictors.weight.dtype))
    return predictors.to(device=embedding.weight.device, dtype=embedding.weight.dtype)

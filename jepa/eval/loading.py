"""Loading what the evaluators score: an HF-format model directory (and, later, a run checkpoint).

`load_for_eval` is the single entry point the evaluation CLI uses. It understands

- an HF-format directory (config.json + model.safetensors [+ tokenizer.json]), e.g. ``runs/NAME/final`` when
  exported as ``hf``, with the trained predictor embeddings in ``predictors.safetensors`` (``{"weight": [K, D]}``)
  when the run has them;
- a full fine-tuning checkpoint ``runs/NAME/step_N/`` whose HF model is in ``model/`` (predictors at the
  checkpoint's top level);
- a LoRA checkpoint (``step_N/`` or an ``export: adapter`` final/ holding PEFT's ``adapter_model.safetensors``):
  the base is the run's ``config.yaml`` ``model.path`` (or ``--base``), the adapter is merged into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from jepa.models import load_pretrained
from jepa.models.base import CausalLM
from jepa.models.lora import adapter_settings, apply_lora, has_adapter, load_adapter, merge_lora
from jepa.models.predictors import PredictorEmbeddings, load_predictors

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class EvalModel:
    """A model ready for evaluation: in eval mode, on its device."""

    model: CausalLM
    tokenizer_dir: Path  # where tokenizer.json (and tokenizer_config.json) live
    predictors: PredictorEmbeddings | None = None  # trained predictor-token embeddings, when the checkpoint has them


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_for_eval(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    base: str | Path | None = None,
) -> EvalModel:
    """Load ``path`` (see module docstring) for evaluation, in eval mode.

    dtype None = bfloat16 on CUDA, float32 on CPU; device None = CUDA if present. The tokenizer directory is the
    model directory, or the checkpoint directory when only that one has a tokenizer.json.
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
        if has_adapter(path):
            return load_lora_checkpoint(path, dtype, device, base)
        raise FileNotFoundError(
            f"{path}: no config.json (expected an HF-format model directory or a checkpoint with model/)"
        )
    model = load_pretrained(model_dir, dtype=dtype, device=device).eval()
    predictors = load_predictors(path, model)
    tokenizer_dir = model_dir if (model_dir / "tokenizer.json").is_file() or model_dir == path else path
    return EvalModel(model=model, tokenizer_dir=tokenizer_dir, predictors=predictors)


def load_lora_checkpoint(
    path: Path, dtype: torch.dtype, device: torch.device, base: str | Path | None = None
) -> EvalModel:
    """Base model (``base``, else ``model.path`` of the run's config.yaml next to ``path``) + the adapter, merged."""
    if base is None:
        run_config = path.parent / "config.yaml"
        if not run_config.is_file():
            raise FileNotFoundError(f"{path}: a LoRA adapter without {run_config}; pass the base model directory")
        base = (yaml.safe_load(run_config.read_text()).get("model") or {}).get("path")
        if not base:
            raise ValueError(f"{run_config}: model.path (the LoRA base) is not set")
    targets, rank, alpha = adapter_settings(path)
    model = load_pretrained(base, dtype=torch.float32, device=device)
    apply_lora(model, targets, rank, alpha)
    load_adapter(model, path)
    model = merge_lora(model).to(dtype).eval()
    predictors = load_predictors(path, model)
    return EvalModel(model=model, tokenizer_dir=Path(base), predictors=predictors)

"""Predictor tokens: K trainable embeddings that stand between view A and the prediction (docs/method.md §1).

They live outside the vocabulary, addressed by the ids -1 .. -K in `input_ids`, so they train under LoRA (the
base embedding stays frozen), are never an LM target, and are simply absent at inference. Like the LoRA adapter
they are saved as their own file, `predictors.safetensors` = {"weight": [K, D]}, next to the model or inside
a checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from jepa.models.base import CausalLM, ScaledEmbedding

PREDICTORS_FILE = "predictors.safetensors"


class PredictorEmbeddings(nn.Module):
    """K trainable predictor-token embeddings [K, D], initialised to the mean input embedding plus small noise
    (seeded) so the K tokens start distinct."""

    def __init__(self, k: int, embedding: nn.Embedding, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            mean = embedding.weight.float().mean(0).cpu()
            std = embedding.weight.float().std().cpu()
            init = mean + 0.02 * std * torch.randn(k, mean.numel(), generator=gen)
        self.weight = nn.Parameter(init.to(embedding.weight.device))

    def forward(self, input_ids: torch.Tensor, embedding: nn.Embedding) -> torch.Tensor:
        """input_ids [B, T] (predictor k as id -(k+1)) -> embeddings [B, T, D] in the embedding's dtype. A scaled
        embedding (Gemma's sqrt(hidden)) scales the predictor rows too, as it would vocabulary rows."""
        # torch.where, not a boolean mask: no data-dependent shape, so the device never reports back to the host.
        x = embedding(input_ids.clamp(min=0))
        k = (-input_ids - 1).clamp(0, self.weight.shape[0] - 1)
        rows = self.weight[k].to(x.dtype)
        if isinstance(embedding, ScaledEmbedding):
            rows = rows * torch.tensor(embedding.scale, dtype=x.dtype)
        return torch.where((input_ids < 0)[..., None], rows, x)


def save_predictors(predictors: PredictorEmbeddings, directory: str | Path) -> Path:
    """Write `directory/predictors.safetensors`; returns the file."""
    file = Path(directory) / PREDICTORS_FILE
    save_file({"weight": predictors.weight.detach().contiguous().cpu()}, str(file))
    return file


def read_predictors(directory: str | Path, width: int) -> torch.Tensor | None:
    """The [K, width] weight in `directory/predictors.safetensors`, or None when there is no such file.
    Anything else than one [K, width] tensor named "weight" raises ValueError naming the file."""
    file = Path(directory) / PREDICTORS_FILE
    if not file.is_file():
        return None
    weight = load_file(str(file)).get("weight")
    if weight is None or weight.dim() != 2 or weight.shape[1] != width:
        shape = None if weight is None else tuple(weight.shape)
        raise ValueError(f"{file}: expected a tensor 'weight' of shape [K, {width}], got {shape}")
    return weight


def load_predictors(directory: str | Path, model: CausalLM) -> PredictorEmbeddings | None:
    """The predictors saved in `directory`, on the model's device and dtype; None when it has none."""
    embedding = model.embed_tokens
    weight = read_predictors(directory, embedding.weight.shape[1])
    if weight is None:
        return None
    predictors = PredictorEmbeddings(weight.shape[0], embedding)
    with torch.no_grad():
        predictors.weight.copy_(weight)
    return predictors.to(device=embedding.weight.device, dtype=embedding.weight.dtype)


def restore_predictors(predictors: PredictorEmbeddings, directory: str | Path) -> None:
    """Copy the saved weight into live `predictors` (resume). A missing file or another K raises ValueError."""
    saved = read_predictors(directory, predictors.weight.shape[1])
    if saved is None or saved.shape != predictors.weight.shape:
        found = "no file" if saved is None else f"K={saved.shape[0]}"
        raise ValueError(
            f"{Path(directory) / PREDICTORS_FILE}: {found}, the run has K={predictors.weight.shape[0]} "
            "predictor tokens (layout.predictors)"
        )
    with torch.no_grad():
        predictors.weight.copy_(saved)

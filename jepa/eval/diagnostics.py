"""Representation diagnostics of a JEPA mode on held-out rows (docs/method.md §4).

Given the prediction-view and target-view embeddings [N, D] that `jepa.objective` aligns (the final-norm
hidden state at each row's ``pred_index`` / ``target_index``):

- ``cosine``: mean cosine similarity between a row's prediction and target embedding;
- ``erank_pred`` / ``erank_target``: effective rank (Roy & Vetterli 2007, as in RankMe) = exp of the Shannon
  entropy of the singular values normalised to sum 1; between 1 (collapsed onto a line) and min(N, D).
  Embeddings are *not* centred (set ``center=True`` for the rank of the spread around the mean);
- ``linear_error``: the LLM-JEPA paper's check — how well the best affine map pred → target explains the target
  embeddings: ``||[A 1] W − B||_F / ||B − mean(B)||_F`` with W the least-squares solution, fitted and measured
  on the same rows. 0 = exactly affine; 1 = no better than predicting the mean target. With N ≤ D + 1 rows
  any target is fitted exactly, so the error is reported as NaN there (use more rows than dimensions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from jepa.data.collator import collate
from jepa.data.layouts import Row
from jepa.eval.progress import Progress
from jepa.models.base import CausalLM
from jepa.models.predictors import PredictorEmbeddings
from jepa.objective import Objective


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean row-wise cosine similarity of a, b [N, D] (float64); NaN when N = 0."""
    if len(a) == 0:
        return math.nan
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).mean().item()


def effective_rank(x: torch.Tensor, center: bool = False) -> float:
    """exp(entropy of singular values / their sum) of x [N, D]; 1.0 for rank one, k for k equal singular values.

    NaN when x is empty or all zero.
    """
    x = x.double()
    if center:
        x = x - x.mean(0, keepdim=True)
    if x.numel() == 0:
        return math.nan
    s = torch.linalg.svdvals(x)
    total = s.sum()
    if total <= 0:
        return math.nan
    p = s / total
    p = p[p > 0]
    return math.exp(-(p * p.log()).sum().item())


def linear_map_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative residual of the least-squares affine map a [N, Da] -> b [N, Db] (see module docstring).

    NaN when N <= Da + 1 (the fit interpolates) or when b does not vary.
    """
    a, b = a.double(), b.double()
    n, dim = a.shape
    if n <= dim + 1:
        return math.nan
    design = torch.cat([a, torch.ones(n, 1, dtype=a.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, b, driver="gelsd").solution
    spread = torch.linalg.norm(b - b.mean(0, keepdim=True))
    if spread == 0:
        return math.nan
    return (torch.linalg.norm(design @ solution - b) / spread).item()


def view_diagnostics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """All diagnostics of pred, target [N, D]: n, dim, cosine, erank_pred, erank_target, linear_error."""
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"pred and target must both be [N, D], got {tuple(pred.shape)} and {tuple(target.shape)}")
    return {
        "n": int(pred.shape[0]),
        "dim": int(pred.shape[1]),
        "cosine": mean_cosine(pred, target),
        "erank_pred": effective_rank(pred),
        "erank_target": effective_rank(target),
        "linear_error": linear_map_error(pred, target),
    }


@torch.no_grad()
def collect_views(
    model: CausalLM,
    predictors: PredictorEmbeddings | None,
    rows: Sequence[Row],
    pad_id: int,
    *,
    batch_size: int = 16,
    progress: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction and target embeddings (float32 CPU [N, D]) of the rows that have a JEPA term, in row order.

    One forward per batch through the packed layout, exactly as training computes them (`Objective.views`).
    `progress`: rows and tokens/s on stderr (None: as `jepa.eval.progress.showing_progress` says).
    """
    jepa_rows = [r for r in rows if r.jepa_pairs]  # view pairs (an STP path has no fixed pair to read)
    if not jepa_rows:
        raise ValueError("no row has a JEPA term (mode 'regular', or every view was too long)")
    device = next(model.parameters()).device
    objective = Objective(model, predictors)
    was_training = model.training
    model.eval()
    preds, targets = [], []
    bar = Progress(len(jepa_rows), "view diagnostics", "row", enabled=progress)
    try:
        for start in range(0, len(jepa_rows), batch_size):
            chunk = jepa_rows[start : start + batch_size]
            pred, target = objective.views(collate(chunk, pad_id).to(device))
            preds.append(pred.float().cpu())
            targets.append(target.float().cpu())
            bar.add_tokens(sum(len(r.input_ids) for r in chunk))
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return torch.cat(preds), torch.cat(targets)


def evaluate_views(
    model: CausalLM, predictors: PredictorEmbeddings | None, rows: Sequence[Row], pad_id: int, *, batch_size: int = 16
) -> dict[str, float]:
    """:func:`view_diagnostics` of the rows' views (see :func:`collect_views`)."""
    return view_diagnostics(*collect_views(model, predictors, rows, pad_id, batch_size=batch_size))

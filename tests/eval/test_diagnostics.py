"""Representation diagnostics on synthetic embeddings with known answers, and view collection from rows."""

import math

import pytest
import torch

from jepa.data.collator import collate
from jepa.data.layouts import LayoutConfig, build_reversal_row
from jepa.eval.diagnostics import (
    collect_views,
    effective_rank,
    evaluate_views,
    linear_map_error,
    mean_cosine,
    view_diagnostics,
)
from jepa.models.predictors import PredictorEmbeddings
from jepa.objective import Objective
from tests.models.tiny import tiny_gpt2


def with_singular_values(values: list[float], n: int = 40, d: int = 16, seed: int = 0) -> torch.Tensor:
    """An [n, d] matrix whose nonzero singular values are exactly `values`."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, len(values), generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, len(values), generator=gen, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ v.T


@pytest.mark.parametrize(
    "values, expected",
    [
        ([2.0], 1.0),
        ([1.0, 1.0, 1.0, 1.0, 1.0], 5.0),
        ([3.0, 1.0], math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))),
        ([5.0] * 16, 16.0),
    ],
)
def test_effective_rank_of_known_spectra(values, expected):
    assert effective_rank(with_singular_values(values)) == pytest.approx(expected, rel=1e-9)


def test_effective_rank_collapse_and_centering():
    x = torch.ones(10, 4) + 1e-12  # every row identical: rank one
    assert effective_rank(x) == pytest.approx(1.0)
    spread = with_singular_values([1.0, 1.0, 1.0])
    shifted = spread + 100.0  # a large common offset dominates the uncentred spectrum
    assert effective_rank(shifted) < 1.5
    assert effective_rank(shifted, center=True) > 2.5
    assert math.isnan(effective_rank(torch.zeros(3, 4)))


def test_mean_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    assert mean_cosine(a, b) == pytest.approx((1 + 0 - 1) / 3)
    assert math.isnan(mean_cosine(torch.zeros(0, 2), torch.zeros(0, 2)))


def test_linear_map_error_exact_partial_and_none():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(8, 6, generator=gen, dtype=torch.float64)
    exact = a @ w + 3.0  # affine: the intercept is fitted too
    assert linear_map_error(a, exact) < 1e-10
    noise = torch.randn(200, 6, generator=gen, dtype=torch.float64)
    unrelated = linear_map_error(a, noise)
    assert 0.9 < unrelated <= 1.0  # only (8 + 1) / 200 of the noise can be fitted by chance
    # signal + noise: the residual is about the noise share of the target's spread
    mixed = a @ w + noise
    expected = noise.norm() / (mixed - mixed.mean(0)).norm()
    assert linear_map_error(a, mixed) == pytest.approx(float(expected), rel=0.05)


def test_linear_map_error_is_nan_when_fit_interpolates():
    a, b = torch.randn(9, 8), torch.randn(9, 3)  # n = dim + 1: any b is fitted exactly
    assert math.isnan(linear_map_error(a, b))
    assert math.isnan(linear_map_error(torch.randn(50, 2), torch.ones(50, 3)))  # target does not vary


def test_view_diagnostics_keys_and_shape_check():
    a = with_singular_values([1.0, 1.0], n=30, d=4)
    out = view_diagnostics(a.float(), a.float())
    assert out["n"] == 30 and out["dim"] == 4
    assert out["cosine"] == pytest.approx(1.0) and out["linear_error"] < 1e-5
    assert out["erank_pred"] == pytest.approx(2.0, rel=1e-4) == out["erank_target"]
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        view_diagnostics(torch.zeros(3, 4), torch.zeros(3, 5))


def reversal_rows(n: int, k: int) -> list:
    gen = torch.Generator().manual_seed(1)
    inverses = {20: 21, 21: 20}
    cfg = LayoutConfig(mode="reversal", predictors=k)
    rows = []
    for i in range(n):
        e1, e2 = torch.randint(0, 19, (2,), generator=gen).tolist(), torch.randint(0, 19, (2,), generator=gen).tolist()
        kind = "train" if i % 3 else "atomic"  # atomic rows have no JEPA term and are skipped
        rows.append(
            build_reversal_row({"input_text": [e1, [20], [19]], "target_text": [e2], "type": kind}, inverses, cfg)
        )
    return rows


@pytest.mark.parametrize("k", [0, 2])
def test_collect_views_equals_training_views(k):
    model = tiny_gpt2(vocab_size=24)
    predictors = PredictorEmbeddings(k, model.embed_tokens) if k else None
    rows = reversal_rows(10, k)
    pred, target = collect_views(model, predictors, rows, pad_id=22, batch_size=3)
    jepa_rows = [r for r in rows if r.has_jepa]
    assert pred.shape == target.shape == (len(jepa_rows), 64)
    with torch.no_grad():
        terms = Objective(model, predictors)(collate(jepa_rows, pad_id=22))
    torch.testing.assert_close(pred, terms.pred, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(target, terms.target, atol=1e-5, rtol=1e-5)
    summary = evaluate_views(model, predictors, rows, pad_id=22)
    assert summary["n"] == len(jepa_rows) and -1 <= summary["cosine"] <= 1
    assert math.isnan(summary["linear_error"])  # 6 rows, 64 dimensions: too few rows to judge


def test_collect_views_needs_jepa_rows():
    rows = [r for r in reversal_rows(6, 0) if not r.has_jepa]
    with pytest.raises(ValueError, match="no row has a JEPA term"):
        collect_views(tiny_gpt2(vocab_size=24), None, rows, pad_id=22)

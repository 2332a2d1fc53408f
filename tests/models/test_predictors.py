"""Predictor tokens: saved and restored like the LoRA adapter, one clear line when they do not fit."""

import pytest
import torch

from jepa.models.predictors import PredictorEmbeddings, load_predictors, restore_predictors, save_predictors
from tests.models.tiny import tiny_gpt2


def test_saved_predictors_load_and_restore_exactly(tmp_path):
    model = tiny_gpt2(vocab_size=20)
    predictors = PredictorEmbeddings(3, model.embed_tokens, seed=5)
    save_predictors(predictors, tmp_path)
    loaded = load_predictors(tmp_path, model)
    assert torch.equal(loaded.weight, predictors.weight)
    fresh = PredictorEmbeddings(3, model.embed_tokens, seed=6)
    assert not torch.equal(fresh.weight, predictors.weight)
    restore_predictors(fresh, tmp_path)
    assert torch.equal(fresh.weight, predictors.weight)
    assert load_predictors(tmp_path / "elsewhere", model) is None


def test_predictor_ids_pick_their_rows():
    model = tiny_gpt2(vocab_size=20)
    predictors = PredictorEmbeddings(2, model.embed_tokens, seed=0)
    x = predictors(torch.tensor([[4, -1, -2]]), model.embed_tokens)
    assert torch.equal(x[0, 0], model.embed_tokens.weight[4])
    assert torch.equal(x[0, 1], predictors.weight[0]) and torch.equal(x[0, 2], predictors.weight[1])


def test_restoring_another_k_is_one_line_naming_the_file(tmp_path):
    model = tiny_gpt2(vocab_size=20)
    save_predictors(PredictorEmbeddings(1, model.embed_tokens), tmp_path)
    two = PredictorEmbeddings(2, model.embed_tokens)
    with pytest.raises(ValueError, match=r"predictors.safetensors: K=1, the run has K=2 predictor tokens"):
        restore_predictors(two, tmp_path)
    with pytest.raises(ValueError, match=r"predictors.safetensors: no file, the run has K=2"):
        restore_predictors(two, tmp_path / "missing")

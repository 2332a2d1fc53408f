"""What the CUDA tests (tests/train/test_cuda.py, skipped without a GPU) need of their setup, checked on any
machine so a GPU hour is not spent finding it out."""

import torch

from jepa.train.build import build
from tests.train.helpers import typed
from tests.train.test_cuda import _chat, _reversal


def test_the_cuda_tests_models_have_head_dim_of_at_least_16(tmp_path, smollm2_dir):
    """Inductor's CUDA FlexAttention kernels need head_dim >= 16; the flex and no-sync tests failed to compile at 8."""
    for raw in (_reversal(tmp_path, "r"), _chat(tmp_path, smollm2_dir, "c")):
        raw["run"]["device"] = "cpu"  # the same models, built here
        model = build(typed(raw), verbose=False).model
        config = model.config
        heads = getattr(config, "num_attention_heads", None) or config.n_head
        layers, width = model.attention_shape()
        assert width // heads >= 16, (raw["run"]["dir"], width, heads)
        assert torch.isfinite(model.lm_head.weight).all()

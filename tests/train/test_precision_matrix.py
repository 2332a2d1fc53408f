"""Evaluation and export in every precision mode, with and without LoRA (GPU-readiness: a LoRA run in bf16 stores
its frozen bases in bf16, so an evaluation outside the run's autocast used to fail on its first matmul)."""

import json

import pytest
import torch

from jepa.models import load_pretrained
from jepa.train.config import PRECISIONS
from jepa.train.loop import train
from tests.train.helpers import chat_config, tiny_chat_model_dir, typed


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synth.jsonl"
    records = [{"messages": [{"role": "user", "content": f"What is {i} + 3?"},
                             {"role": "assistant", "content": f"It is {i + 3}."}]} for i in range(8)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_evaluates_and_exports(tmp_path, smollm2_dir, chat_data, precision, lora):
    cfg = chat_config(
        tmp_path, tiny_chat_model_dir(tmp_path, smollm2_dir), chat_data,
        layout={"mode": "jepa", "predictors": 1}, lora={"enabled": lora, "dropout": 0.0},
        precision={"mode": precision}, schedule={"max_steps": 1, "batch_size": 2, "grad_accum": 1},
        eval={"fn": "jepa.eval.hooks:synth", "data": str(chat_data), "limit": 2, "max_new_tokens": 4,
              "views": "jepa", "heldout_loss": True},
        checkpoint={"export": "hf"},
    )  # fmt: skip
    result = train(typed(cfg), progress=False)
    evaluation = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert evaluation["kind"] == "eval"
    for key in ("eval/synth/accuracy", "eval/views/cosine", "eval/heldout/lm_loss"):
        assert key in evaluation and evaluation[key] == evaluation[key], key  # present and not NaN
    exported = load_pretrained(result.final_dir)
    with torch.no_grad():
        hidden = exported(torch.tensor([[1, 2, 3]]))
    assert torch.isfinite(hidden.float()).all()

"""The training-time evaluation hooks (eval.fn: jepa.eval.hooks:...) inside a real training run."""

import json

import pytest

from jepa.eval.hooks import views
from jepa.models import load_pretrained, save_pretrained
from jepa.models.predictors import PredictorEmbeddings
from jepa.train.config import config_from_dict
from jepa.train.loop import train
from tests.data.tiny_tokenizer import write_tiny_llama3_tokenizer
from tests.models.tiny import tiny_llama
from tests.train.helpers import reversal_config


@pytest.mark.parametrize("k", [1, 0])
def test_reversal_hook_logs_probe_metrics_and_views(tmp_path, k):
    """With K = 0 the prediction is the forward fact's own last token: the views exist without predictor tokens."""
    raw = reversal_config(tmp_path, eval={"fn": "jepa.eval.hooks:reversal", "every": 5, "limit": 4},
                          layout={"mode": "reversal", "predictors": k})  # fmt: skip
    train(config_from_dict(raw), progress=False)
    lines = [json.loads(line) for line in open(tmp_path / "runs" / "tiny" / "metrics.jsonl")]
    evals = [line for line in lines if line.get("kind") == "eval"]
    assert [e["step"] for e in evals] == [5, 10]
    for split in ("train", "atomic", "test"):
        assert 0 < evals[-1][f"eval/{split}/mrr"] <= 1
        assert 0 <= evals[-1][f"eval/{split}/joint_accuracy"] <= 1
    assert -1 <= evals[-1]["eval/views/cosine"] <= 1


def test_views_hook_on_chat_rows(tmp_path):
    model_dir = tmp_path / "model"
    write_tiny_llama3_tokenizer(model_dir)
    save_pretrained(tiny_llama(vocab_size=300), model_dir)
    record = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q?"},
            {"role": "assistant", "content": "One.\n\nTwo.\n\n#### 2"},
        ],
        "answer": "2",
    }
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(record) for _ in range(3)) + "\n")
    cfg = config_from_dict(
        {
            "model": {"path": str(model_dir)},
            "data": {"train": str(data)},
            "layout": {"mode": "step", "predictors": 2},
            "eval": {"limit": 2},
        }
    )
    model = load_pretrained(model_dir)
    out = views(cfg)(model, PredictorEmbeddings(2, model.embed_tokens), 0)
    assert set(out) >= {"eval/views/cosine", "eval/views/erank_pred", "eval/views/erank_target"}


def test_a_run_with_the_reversal_hook_ends_with_a_readable_result_line(tmp_path, capsys):
    cfg = config_from_dict(
        reversal_config(tmp_path, eval={"fn": "jepa.eval.hooks:reversal"}, schedule={"max_steps": 2})
    )
    train(cfg, progress=True)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("result: forward facts (atomic) MRR 0.") and "| their reverse (test) MRR 0." in last
    assert "exact match" in last and len(last) < 200

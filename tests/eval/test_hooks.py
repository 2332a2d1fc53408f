"""The training-time evaluation hooks (eval.fn: jepa.eval.hooks:...) inside a real training run."""

import json
from pathlib import Path

import pytest
import torch

from jepa.data.datasets import tokenize_chats
from jepa.data.layouts import LayoutConfig
from jepa.eval.heldout import heldout_lm_loss
from jepa.eval.hooks import examples_path, synth, views
from jepa.models import load_pretrained, save_pretrained
from jepa.models.predictors import PredictorEmbeddings
from jepa.tokenizer import Tokenizer
from jepa.train.config import config_from_dict
from jepa.train.loop import train
from tests.data.tiny_tokenizer import write_tiny_llama3_tokenizer
from tests.models.tiny import tiny_llama
from tests.train.helpers import reversal_config


def tiny_model_dir(tmp_path) -> Path:
    """A tiny Llama saved in HF format beside the tiny Llama-3 tokenizer."""
    model_dir = tmp_path / "model"
    write_tiny_llama3_tokenizer(model_dir)
    save_pretrained(tiny_llama(vocab_size=300), model_dir)
    return model_dir


def synth_records(tmp_path, words: tuple[str, ...] = ("dog", "a vowel", "truck", "two numbers")) -> Path:
    """NL-RX-shaped chat records, one per word, as a jsonl file."""
    data = tmp_path / "synth.jsonl"
    records = [{"messages": [{"role": "user", "content": f"lines with {w}"}, {"role": "assistant", "content": w}]}
               for w in words]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    return data


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
    model_dir = tiny_model_dir(tmp_path)
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


def test_eval_heldout_loss_adds_the_lm_loss_of_the_same_records_as_regular_rows(tmp_path):
    model_dir, data = tiny_model_dir(tmp_path), synth_records(tmp_path, ("dog", "a vowel", "truck"))
    raw = {"model": {"path": str(model_dir)}, "data": {"train": str(data)}, "layout": {"mode": "jepa", "predictors": 1},
           "eval": {"limit": 2, "heldout_loss": True}}  # fmt: skip
    model = load_pretrained(model_dir)
    out = views(config_from_dict(raw))(model, PredictorEmbeddings(1, model.embed_tokens), 0)
    tokenizer = Tokenizer.from_dir(model_dir)
    rows, pad_id, *_ = tokenize_chats(data, tokenizer, LayoutConfig(mode="regular", predictors=0), limit=2)
    _, expected = heldout_lm_loss(model, rows, pad_id)
    assert out["eval/heldout/lm_loss"] == expected["lm_loss"] and out["eval/heldout/rows"] == 2
    assert "eval/views/cosine" in out and out["eval/heldout/eot_tokens"] == 2
    raw["layout"]["lm_labels"] = "paper"  # a run trained on other labels is scored on the same answer tokens
    paper = views(config_from_dict(raw))(model, PredictorEmbeddings(1, model.embed_tokens), 0)
    assert paper["eval/heldout/lm_loss"] == expected["lm_loss"]
    raw["eval"]["heldout_loss"] = False
    assert not any(key.startswith("eval/heldout/") for key in views(config_from_dict(raw))(model, None, 0))


def test_a_run_with_the_reversal_hook_ends_with_a_readable_result_line(tmp_path, capsys):
    cfg = config_from_dict(
        reversal_config(tmp_path, eval={"fn": "jepa.eval.hooks:reversal"}, schedule={"max_steps": 2})
    )
    train(cfg, progress=True)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("result: forward (atomic) MRR 0.") and "| reverse (test) MRR 0." in last
    assert "exact " in last and "| chance 0." in last and len(last) < 200


def test_generation_hook_adds_the_views_eval_views_names_for_regular_and_jepa_runs(tmp_path):
    """eval.views: jepa measures a regular run on the same views (K = 0: the user view's own last token) and a
    jepa run through its trained predictor tokens; without eval.views no view metrics are computed."""
    model_dir, data = tiny_model_dir(tmp_path), synth_records(tmp_path)

    def hook_output(mode: str, views_mode: str | None, predictors: PredictorEmbeddings | None) -> dict:
        cfg = config_from_dict(
            {
                "model": {"path": str(model_dir)},
                "data": {"train": str(data)},
                "layout": {"mode": mode, "predictors": 1},
                "jepa": {"lambda": 0.0 if mode == "regular" else 1.0},
                "eval": {"fn": "jepa.eval.hooks:synth", "views": views_mode, "limit": 3, "max_new_tokens": 3},
                "run": {"dir": str(tmp_path / "runs")},
            }
        )
        return synth(cfg)(load_pretrained(model_dir), predictors, 0)

    plain = hook_output("regular", None, None)
    assert "eval/synth/accuracy" in plain and not any(key.startswith("eval/views/") for key in plain)
    regular = hook_output("regular", "jepa", None)
    assert regular["eval/synth/accuracy"] == plain["eval/synth/accuracy"] and "eval/views/cosine" in regular
    torch.manual_seed(0)
    predictors = PredictorEmbeddings(1, load_pretrained(model_dir).embed_tokens)
    with torch.no_grad():
        predictors.weight.normal_()  # a trained token differs from the untouched init; K = 1 must use it
    jepa = hook_output("jepa", "jepa", predictors)
    assert abs(jepa["eval/views/cosine"] - regular["eval/views/cosine"]) > 1e-4
    assert jepa["eval/views/erank_target"] == pytest.approx(regular["eval/views/erank_target"], rel=1e-5)


def test_generation_hook_keeps_every_examples_result_for_paired_tests(tmp_path):
    model_dir, data = tiny_model_dir(tmp_path), synth_records(tmp_path)
    cfg = config_from_dict({"model": {"path": str(model_dir)}, "data": {"train": str(data)},
                            "layout": {"mode": "regular"}, "run": {"dir": str(tmp_path / "runs"), "name": "r"},
                            "eval": {"fn": "jepa.eval.hooks:synth", "limit": 3, "max_new_tokens": 3}})  # fmt: skip
    out = synth(cfg)(load_pretrained(model_dir), None, 7)
    path = examples_path(tmp_path / "runs" / "r", "synth", 7)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert sum(line["correct"] for line in lines) / 3 == out["eval/synth/accuracy"]
    assert {"contains", "overgeneration", "truncated", "n_tokens", "response"} <= set(lines[0])
    assert out["eval/synth/truncated_fraction"] == sum(line["truncated"] for line in lines) / 3


def test_views_hook_of_an_stp_run_reads_the_jepa_views_at_k0(tmp_path):
    """An STP run has no view pair of its own: the views hook measures it on the jepa views, read at K = 0 (no
    predictor tokens), as the regular runs are."""
    model_dir, data = tiny_model_dir(tmp_path), synth_records(tmp_path, ("dog", "a vowel", "truck"))
    raw = {"model": {"path": str(model_dir)}, "data": {"train": str(data)}, "eval": {"limit": 3},
           "layout": {"mode": "stp"}, "jepa": {"lambda": 0.02}}  # fmt: skip
    model = load_pretrained(model_dir)
    stp = views(config_from_dict(raw))(model, None, 0)
    raw["layout"] = {"mode": "regular"}
    raw["eval"]["views"] = "jepa"
    assert stp == views(config_from_dict(raw))(model, None, 0) and "eval/views/cosine" in stp

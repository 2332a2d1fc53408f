"""Held-out LM loss (jepa/eval/heldout.py) against an independent per-example computation."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from jepa.data.datasets import tokenize_chats
from jepa.data.layouts import LayoutConfig
from jepa.eval.__main__ import main
from jepa.eval.heldout import heldout_lm_loss
from jepa.losses import IGNORE_INDEX
from jepa.models import load_pretrained
from jepa.tokenizer import Tokenizer

ANSWERS = ["He has 3 apples.\n\nHe buys 4 more.\n\n#### 7", "#### 1", "Two and two.\n\nMakes four.\n\n#### 4"]


@pytest.fixture
def chat_file(tmp_path):
    path = tmp_path / "chat.jsonl"
    records = [
        {"messages": [{"role": "user", "content": f"Question {i}: how many apples?"},
                      {"role": "assistant", "content": answer}]}
        for i, answer in enumerate(ANSWERS)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def reference_sums(model, rows) -> list[tuple[float, int]]:
    """Each row alone, unpadded, plain causal attention, full logits: CE summed over its label tokens."""
    out = []
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row.input_ids[: row.main_length]])
            labels = torch.tensor(row.labels[: row.main_length])
            logits = model.lm_head(model(input_ids=ids))[0]
            keep = labels != IGNORE_INDEX
            out.append((F.cross_entropy(logits[keep], labels[keep], reduction="sum").item(), int(keep.sum())))
    return out


@pytest.mark.parametrize("mode", ["regular", "jepa"])
def test_heldout_loss_equals_separate_unpadded_passes(chat_model_dir, chat_file, mode):
    """Rows of different lengths batched with padding give each row's own loss; a JEPA layout's extra segments
    do not enter it (the loss is the LM sequence's alone)."""
    model = load_pretrained(chat_model_dir)
    tokenizer = Tokenizer.from_dir(chat_model_dir)
    rows, pad_id, *_ = tokenize_chats(chat_file, tokenizer, LayoutConfig(mode="regular", predictors=0))
    reference = reference_sums(model, rows)
    if mode == "jepa":  # the same records laid out with their JEPA views: heldout_lm_loss must ignore them
        rows, *_ = tokenize_chats(chat_file, tokenizer, LayoutConfig(mode="jepa", predictors=0))
        assert all(row.has_jepa and len(row.input_ids) > row.main_length for row in rows)
    per_row, summary = heldout_lm_loss(model, rows, pad_id, batch_size=2)
    assert len({n for _, n in reference}) == 3  # three different answer lengths: padding is exercised
    for got, (ce, n) in zip(per_row, reference):
        assert got["label_tokens"] == n
        assert got["lm_sum"] == pytest.approx(ce, rel=1e-5)
    total, tokens = sum(ce for ce, _ in reference), sum(n for _, n in reference)
    assert summary["label_tokens"] == tokens and summary["rows"] == 3
    assert summary["lm_loss"] == pytest.approx(total / tokens, rel=1e-5)
    assert summary["perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-5)


def test_heldout_loss_separates_models_and_restores_training_mode(chat_model_dir, chat_file):
    model = load_pretrained(chat_model_dir)
    tokenizer = Tokenizer.from_dir(chat_model_dir)
    rows, pad_id, *_ = tokenize_chats(chat_file, tokenizer, LayoutConfig(mode="regular", predictors=0))
    model.train()
    _, before = heldout_lm_loss(model, rows, pad_id)
    assert model.training
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)  # sharper, wrong logits: a different model must score differently
    _, after = heldout_lm_loss(model, rows, pad_id)
    assert after["lm_loss"] != pytest.approx(before["lm_loss"], rel=1e-3)


def test_heldout_loss_without_any_label_token_is_an_error(chat_model_dir, chat_file):
    tokenizer = Tokenizer.from_dir(chat_model_dir)
    rows, pad_id, *_ = tokenize_chats(chat_file, tokenizer, LayoutConfig(mode="regular", predictors=0, max_length=4))
    with pytest.raises(ValueError, match="no label token"):
        heldout_lm_loss(load_pretrained(chat_model_dir), rows, pad_id)


def test_loss_command_writes_summary_and_per_example_lines(chat_model_dir, chat_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["loss", "--model", str(chat_model_dir), "--data", str(chat_file), "--limit", "2", "--out", str(out)]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    lines = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert summary["rows"] == len(lines) == 2
    assert summary["lm_loss"] == pytest.approx(sum(r["lm_sum"] for r in lines) / summary["label_tokens"])
    assert json.loads((out / "loss_summary.json").read_text())["lm_loss"] == summary["lm_loss"]
    assert main(["loss", "--model", str(chat_model_dir), "--data", str(chat_file), "--max-length", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --max-length must be >= 1, got 0"


def test_end_of_turn_is_reported_apart_from_the_answer_tokens(chat_model_dir, chat_file):
    """Hand-checked against full logits: the end-of-turn label of each row (the stop token after the answer) is
    exactly one label per row; its mean CE / probability and the other labels' mean CE split the total."""
    model = load_pretrained(chat_model_dir)
    tokenizer = Tokenizer.from_dir(chat_model_dir)
    rows, pad_id, *_ = tokenize_chats(chat_file, tokenizer, LayoutConfig(mode="regular", predictors=0))
    stop_logp, other_ce, other_n = [], 0.0, 0
    with torch.no_grad():
        for row in rows:
            logp = model.lm_head(model(input_ids=torch.tensor([row.input_ids])))[0].log_softmax(-1)
            for t, label in enumerate(row.labels):
                if label == IGNORE_INDEX:
                    continue
                if label in tokenizer.stop_ids:
                    stop_logp.append(logp[t, label].item())
                else:
                    other_ce, other_n = other_ce - logp[t, label].item(), other_n + 1
    assert len(stop_logp) == len(rows)  # one end of turn per answer
    per_row, summary = heldout_lm_loss(model, rows, pad_id, batch_size=2, stop_ids=tokenizer.stop_ids)
    assert [r["eot_tokens"] for r in per_row] == [1, 1, 1]
    assert summary["eot_tokens"] == 3 and summary["answer_tokens"] == other_n
    assert summary["eot_loss"] == pytest.approx(-sum(stop_logp) / 3, rel=1e-4)
    assert summary["eot_prob"] == pytest.approx(sum(math.exp(v) for v in stop_logp) / 3, rel=1e-4)
    assert summary["answer_loss"] == pytest.approx(other_ce / other_n, rel=1e-4)
    assert "eot_loss" not in heldout_lm_loss(model, rows, pad_id)[1]  # without stop ids: the total only

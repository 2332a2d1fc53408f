"""The training data sources: rows, pad id, vocabulary, path checks and exported files of each kind of data."""

import json

import pytest

from jepa.data.datasets import ChatDataset, DataConfig, ReversalDataset, dataset_class
from jepa.data.layouts import MODES, LayoutConfig
from jepa.data.reversal import generate_reversal
from jepa.data.sources import gsm8k_record
from jepa.tokenizer import Tokenizer


def test_every_mode_has_exactly_one_source():
    assert {mode: dataset_class(mode) for mode in MODES} == {
        "regular": ChatDataset,
        "jepa": ChatDataset,
        "step": ChatDataset,
        "reversal": ReversalDataset,
        "stp": ChatDataset,
    }


def test_chat_rows_count_truncated_views_and_name_bad_lines(tmp_path, smollm2_dir):
    path = tmp_path / "train.jsonl"
    long_step = "word " * 80
    records = [
        gsm8k_record("What is 2 + 3?", "Two plus three.\nIt is 5.\n#### 5"),
        gsm8k_record("What is 4 + 4?", f"{long_step}\n{long_step}\n#### 8"),
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "one step"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    layout = LayoutConfig(mode="step", max_length=120)
    with pytest.raises(ValueError, match=rf"^{path}:3: step mode needs at least 2 assistant steps"):
        ChatDataset.load(DataConfig(train=str(path)), layout, str(smollm2_dir))
    data = ChatDataset.load(DataConfig(train=str(path), skip_bad=True), layout, str(smollm2_dir))
    assert len(data.rows) == 2 and data.jepa_truncated == 1 and sum(data.skipped.values()) == 1
    assert "1 LM-only because their JEPA view was truncated" in data.summary()


def test_chat_dataset_knows_its_tokenizer_and_exports_it(tmp_path, smollm2_dir):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(gsm8k_record("What is 2 + 3?", "Two plus three.\nIt is 5.\n#### 5")) + "\n")
    data = ChatDataset.load(DataConfig(train=str(path)), LayoutConfig(mode="jepa"), str(smollm2_dir))
    tokenizer = Tokenizer.from_dir(smollm2_dir)
    assert (data.pad_id, data.vocab_size) == (tokenizer.pad_id, tokenizer.vocab_size) == (tokenizer.pad_id, 49152)
    assert len(data.rows) == 1 and data.rows[0].has_jepa
    out = tmp_path / "final"
    out.mkdir()
    data.export_files(out)
    assert (out / "tokenizer.json").read_bytes() == (smollm2_dir / "tokenizer.json").read_bytes()
    assert not (out / "vocab.json").exists()


def test_reversal_dataset_has_its_own_vocabulary_and_exports_it(tmp_path):
    generate_reversal(
        tmp_path / "rev", n_learning=20, n_test=10, n_first=10, n_last=10, comb=3, n_relations=1, n_valid=5
    )
    vocab = json.loads((tmp_path / "rev" / "vocab.json").read_text())
    data = ReversalDataset.load(DataConfig(train=str(tmp_path / "rev"), limit=7), LayoutConfig(mode="reversal"))
    assert (data.pad_id, data.vocab_size) == (vocab["<pad>"], len(vocab))
    assert len(data.rows) == 7 and all(max(r.input_ids) < len(vocab) for r in data.rows)
    out = tmp_path / "final"
    out.mkdir()
    data.export_files(out)
    assert json.loads((out / "vocab.json").read_text()) == vocab


@pytest.mark.parametrize(
    "cls, data, message",
    [
        (ReversalDataset, "nowhere", r"data.train: reversal directory .*nowhere not found \(make it with"),
        (ChatDataset, "nowhere.jsonl", r"model.tokenizer: .*tokenizer.json not found"),
    ],
)
def test_missing_paths_name_the_key(tmp_path, cls, data, message):
    with pytest.raises(FileNotFoundError, match=message):
        mode = next(m for m in MODES if MODES[m].source == cls.reads)
        cls.load(DataConfig(train=str(tmp_path / data)), LayoutConfig(mode=mode), str(tmp_path))

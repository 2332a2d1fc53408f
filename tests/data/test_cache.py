"""The row cache: cached rows equal freshly laid-out rows; a changed input, setting or a corrupt entry is never
used; a cache that cannot be written costs nothing but the caching."""

import json

import pytest

from jepa.data.cache import RowCache, cache_key
from jepa.data.datasets import ChatDataset, DataConfig, ReversalDataset, load_dataset
from jepa.data.layouts import LayoutConfig
from jepa.data.reversal import generate_reversal
from jepa.data.sources import gsm8k_record

RECORDS = [
    gsm8k_record("What is 2 + 3?", "Two plus three.\nIt is 5.\n#### 5"),
    gsm8k_record("Tom has 3 apples and buys 5 more. How many?", "He had 3.\nHe buys 5.\n3 + 5 = 8.\n#### 8"),
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "one step"}]},  # skipped
]


@pytest.fixture
def chat_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def same_dataset(a, b):
    assert list(a.rows) == list(b.rows)
    assert (a.pad_id, a.vocab_size, a.jepa_truncated) == (b.pad_id, b.vocab_size, b.jepa_truncated)
    assert dict(a.skipped) == dict(b.skipped) and a.skipped.where == b.skipped.where


def test_cached_chat_rows_equal_fresh_rows(tmp_path, chat_file, smollm2_dir):
    cfg = DataConfig(train=str(chat_file), skip_bad=True, cache_dir=str(tmp_path / "cache"))
    layout = LayoutConfig(mode="step", step_pairs="all")
    fresh = ChatDataset.load(cfg, layout, str(smollm2_dir))
    first = load_dataset(cfg, layout, str(smollm2_dir), warn=pytest.fail)
    assert first.origin.startswith("laid out in") and len(list((tmp_path / "cache").iterdir())) == 1
    second = load_dataset(cfg, layout, str(smollm2_dir), warn=pytest.fail)
    assert second.origin.startswith("read from the row cache")
    same_dataset(first, fresh)
    same_dataset(second, fresh)
    assert sum(second.skipped.values()) == 1 and second.rows.rows_with_jepa() == 2
    out = tmp_path / "export"
    out.mkdir()
    second.export_files(out)  # a cached dataset still knows its tokenizer
    assert (out / "tokenizer.json").read_bytes() == (smollm2_dir / "tokenizer.json").read_bytes()


def test_cached_reversal_rows_equal_fresh_rows(tmp_path):
    generate_reversal(
        tmp_path / "rev", n_learning=20, n_test=10, n_first=10, n_last=10, comb=3, n_relations=1, n_valid=5
    )
    cfg = DataConfig(train=str(tmp_path / "rev"), cache_dir=str(tmp_path / "cache"))
    layout = LayoutConfig(mode="reversal", predictors=1)
    fresh = ReversalDataset.load(cfg, layout)
    load_dataset(cfg, layout, None, warn=pytest.fail)
    cached = load_dataset(cfg, layout, None, warn=pytest.fail)
    assert cached.origin.startswith("read from the row cache")
    same_dataset(cached, fresh)
    out = tmp_path / "export"
    out.mkdir()
    cached.export_files(out)
    assert (out / "vocab.json").read_bytes() == (tmp_path / "rev" / "vocab.json").read_bytes()


def test_a_changed_file_or_setting_is_a_new_entry(tmp_path, chat_file, smollm2_dir):
    cfg = DataConfig(train=str(chat_file), skip_bad=True, cache_dir=str(tmp_path / "cache"))
    layout = LayoutConfig(mode="regular")
    before = load_dataset(cfg, layout, str(smollm2_dir), warn=pytest.fail)
    chat_file.write_text(json.dumps(RECORDS[1]) + "\n")  # same path, other content
    after = load_dataset(cfg, layout, str(smollm2_dir), warn=pytest.fail)
    assert after.origin.startswith("laid out in") and len(after.rows) == 1 and len(before.rows) == 3
    same_dataset(after, ChatDataset.load(cfg, layout, str(smollm2_dir)))
    shorter = LayoutConfig(mode="regular", max_length=20)
    cut = load_dataset(cfg, shorter, str(smollm2_dir), warn=pytest.fail)
    assert cut.origin.startswith("laid out in") and len(cut.rows[0].input_ids) == 20
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_the_key_covers_inputs_settings_and_kind(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("x")
    b.write_text("x")
    key = cache_key(kind="chat", inputs=[a], settings={"max_length": 8})
    assert key == cache_key(kind="chat", inputs=[a], settings={"max_length": 8})
    assert key != cache_key(kind="chat", inputs=[b], settings={"max_length": 8})  # another path
    assert key != cache_key(kind="chat", inputs=[a], settings={"max_length": 9})
    assert key != cache_key(kind="reversal", inputs=[a], settings={"max_length": 8})
    a.write_text("y")
    assert key != cache_key(kind="chat", inputs=[a], settings={"max_length": 8})


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete an array", "garble the manifest"])
def test_a_corrupt_entry_is_said_and_rebuilt(tmp_path, chat_file, smollm2_dir, damage):
    cfg = DataConfig(train=str(chat_file), skip_bad=True, cache_dir=str(tmp_path / "cache"))
    layout = LayoutConfig(mode="jepa")
    load_dataset(cfg, layout, str(smollm2_dir), warn=pytest.fail)
    (entry,) = (tmp_path / "cache").iterdir()
    ids = entry / "input_ids.npy"
    if damage == "flip a byte":
        data = bytearray(ids.read_bytes())
        data[-3] ^= 0x01
        ids.write_bytes(bytes(data))
    elif damage == "truncate":
        ids.write_bytes(ids.read_bytes()[:-4])
    elif damage == "delete an array":
        (entry / "labels.npy").unlink()
    else:
        (entry / "manifest.json").write_text("{")
    warnings = []
    rebuilt = load_dataset(cfg, layout, str(smollm2_dir), warn=warnings.append)
    assert len(warnings) == 1 and "are corrupt" in warnings[0] and str(entry) in warnings[0]
    assert rebuilt.origin.startswith("laid out in")
    same_dataset(rebuilt, ChatDataset.load(cfg, layout, str(smollm2_dir)))
    again = load_dataset(cfg, layout, str(smollm2_dir), warn=pytest.fail)  # the rebuilt entry is whole
    assert again.origin.startswith("read from the row cache")


def test_an_unwritable_cache_is_said_and_the_rows_still_come(tmp_path, chat_file, smollm2_dir):
    (tmp_path / "a_file").write_text("not a directory")
    cfg = DataConfig(train=str(chat_file), skip_bad=True, cache_dir=str(tmp_path / "a_file" / "cache"))
    warnings = []
    data = load_dataset(cfg, LayoutConfig(mode="regular"), str(smollm2_dir), warn=warnings.append)
    assert len(warnings) == 1 and "cannot write the row cache" in warnings[0] and len(data.rows) == 3


def test_cache_off_lays_out_every_time(tmp_path, chat_file, smollm2_dir):
    cfg = DataConfig(train=str(chat_file), skip_bad=True, cache=False, cache_dir=str(tmp_path / "cache"))
    data = load_dataset(cfg, LayoutConfig(mode="regular"), str(smollm2_dir), warn=pytest.fail)
    assert data.origin == "" and not (tmp_path / "cache").exists()


def test_read_of_a_missing_entry_is_none(tmp_path):
    assert RowCache(tmp_path).read("0" * 32) is None

"""The mode registry: every registered mode keeps its declaration's promises, and a new mode is one declaration.

`Mirror`, declared below the way a researcher would add a mode, aligns the last user token with the last answer
token inside the LM sequence itself (no extra segment). Declaring it is the whole change: the config accepts it,
the dataset lays it out, the trainer trains it (its JEPA rows counted, no predictor tokens) and the views
diagnostics read it.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from jepa.data.datasets import ChatDataset, dataset_class
from jepa.data.layouts import MODES, LayoutConfig, Mode, Row, build_chat_row, main_sequence, register_mode
from jepa.eval.diagnostics import collect_views
from jepa.tokenizer import Tokenizer
from jepa.train.build import build
from jepa.train.step import next_micro_batches, train_step
from tests.data.test_layouts import CHATS
from tests.data.tiny_tokenizer import write_tiny_llama3_tokenizer
from tests.train.helpers import stp_chat_config, typed


def mirror_row(messages: list[dict], tokenizer: Tokenizer, cfg: LayoutConfig) -> Row:
    enc = tokenizer.encode_chat(messages)
    ids, labels = main_sequence(enc, cfg, tokenizer.pad_id)
    row = Row()
    row.add_segment("M", ids, list(range(len(ids))), sees=(), labels=labels)
    row.main_length = len(ids)
    user, answer = enc.spans[-2], enc.spans[-1]
    if answer.content_end <= len(ids):
        row.jepa_pairs.append((user.content_end - 1, answer.content_end - 1))
    return row


MIRROR = Mode("mirror", "the last user token against the last answer token, in the LM pass", source="chat",
              chat_row=mirror_row, predictor_tokens=False)  # fmt: skip


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return Tokenizer.from_dir(write_tiny_llama3_tokenizer(tmp_path_factory.mktemp("tok")))


@contextmanager
def registered(mode: Mode) -> Iterator[Mode]:
    register_mode(mode)
    try:
        yield mode
    finally:
        del MODES[mode.name]


@pytest.mark.parametrize("name", list(MODES))
def test_every_mode_keeps_its_declaration(tok, name):
    mode = MODES[name]
    assert mode.source in ("chat", "reversal") and (mode.source == "chat") == (mode.chat_row is not None)
    assert dataset_class(name).reads == mode.source
    if mode.chat_row is None:
        return
    rows = [build_chat_row(chat, tok, LayoutConfig(mode=name, predictors=2)) for chat in CHATS]
    assert any(r.has_jepa for r in rows) == mode.jepa_term
    assert any(r.jepa_pairs for r in rows) == mode.view_pairs
    uses_predictors = any(t < 0 for r in rows for t in r.input_ids)
    assert uses_predictors == mode.predictor_tokens


def test_a_new_mode_is_one_declaration(tmp_path, smollm2_dir, tok):
    with registered(MIRROR):
        rows = [build_chat_row(chat, tok, LayoutConfig(mode="mirror")) for chat in CHATS]
        assert all(len(r.jepa_pairs) == 1 for r in rows)
        assert dataset_class("mirror") is ChatDataset
        cfg = typed(stp_chat_config(tmp_path, smollm2_dir, layout={"mode": "mirror"}, eval={"views": None}))
        assert cfg.trained_predictors == 0
        state = build(cfg, verbose=False)
        assert state.predictors is None and all(r.jepa_pairs for r in state.dataset.rows)
        metrics = train_step(state, next_micro_batches(state))
        assert metrics["jepa_rows"] == 4 and 0 < metrics["jepa"] < 2  # the cosine term of every row
        pred, target = collect_views(state.model, None, state.dataset.rows, state.dataset.pad_id)
        assert pred.shape == target.shape == (len(state.dataset.rows), state.model.config.hidden_size)
        with pytest.raises(ValueError, match="registered twice"):
            register_mode(MIRROR)
    assert "mirror" not in MODES
    with pytest.raises(ValueError, match="layout.mode must be one of"):
        LayoutConfig(mode="mirror")


def test_a_declaration_that_contradicts_itself_is_refused():
    with pytest.raises(ValueError, match="with a chat_row for chat"):
        register_mode(Mode("broken", "a chat mode without a row builder", source="chat"))
    assert "broken" not in MODES

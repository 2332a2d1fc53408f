"""STP mode (Semantic Tube Prediction): the path, the span draw, and the loss of the one LM pass against a direct
per-example computation written here from the official `stp.py` (its three cases: span in the user message, in
the answer, across both)."""

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from jepa.data.collator import collate
from jepa.data.layouts import LayoutConfig, StpPath, build_chat_row, draw_span, draw_stp_spans, pack_rows
from jepa.objective import Objective
from jepa.tokenizer import Tokenizer
from tests.data.test_layouts import CHATS
from tests.data.tiny_tokenizer import write_tiny_llama3_tokenizer
from tests.models.tiny import tiny_llama

STP = LayoutConfig(mode="stp", max_length=512)


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return Tokenizer.from_dir(write_tiny_llama3_tokenizer(tmp_path_factory.mktemp("tok")))


@pytest.mark.parametrize("zero", [False, True])
def test_spans_are_never_empty_nor_the_whole_path_and_depend_only_on_their_key(zero):
    starts, stops = set(), set()
    for length in range(2, 9):
        for step in range(40):
            start, stop = draw_span(length, seed=5, step=step, example=3, zero=zero)
            assert 0 <= start < stop <= length and stop - start < length
            assert draw_span(length, seed=5, step=step, example=3, zero=zero) == (start, stop)
            starts.add(start)
            stops.add(stop)
    assert starts == {0} if zero else max(starts) == 7
    assert max(stops) == (7 if zero else 8)  # a span may end at the path's end, unless it starts at 0
    draws = {draw_span(30, seed=5, step=s, example=e) for s in range(3) for e in range(3)}
    assert len(draws) > 5  # step and example both change the draw
    with pytest.raises(ValueError, match="at least 2 tokens"):
        draw_span(1, seed=0, step=0, example=0)


def test_the_path_is_the_user_content_then_the_answer_content(tok):
    for chat in CHATS:
        row = build_chat_row(chat, tok, STP)
        (path,) = row.stp_paths
        (user_anchor, user_last), (answer_anchor, answer_last) = path.messages
        assert tok.decode(row.input_ids[user_anchor + 1 : user_last + 1]) == chat[1]["content"]
        assert tok.decode(row.input_ids[answer_anchor + 1 : answer_last + 1]) == chat[2]["content"]
        assert path.length == user_last - user_anchor + answer_last - answer_anchor
        plain = build_chat_row(chat, tok, LayoutConfig(mode="regular", max_length=512))
        assert (row.input_ids, row.labels, row.segment_ids) == (plain.input_ids, plain.labels, plain.segment_ids)
        assert row.lm_only().stp_paths == [] and row.has_jepa and not row.lm_only().has_jepa


def test_truncation_shortens_the_path_and_a_path_under_2_tokens_has_no_span(tok):
    full = build_chat_row(CHATS[0], tok, STP)
    (_, user_last), (answer_anchor, _) = full.stp_paths[0].messages
    cut = build_chat_row(CHATS[0], tok, replace(STP, max_length=answer_anchor + 3))  # two answer tokens kept
    assert cut.stp_paths[0].messages[1] == (answer_anchor, answer_anchor + 2)
    in_user = build_chat_row(CHATS[0], tok, replace(STP, max_length=user_last))  # the answer is cut away
    assert len(in_user.stp_paths[0].messages) == 1
    user_anchor = full.stp_paths[0].messages[0][0]
    assert not build_chat_row(CHATS[0], tok, replace(STP, max_length=user_anchor + 2)).has_jepa


def official_chords(h, user, answer, start, stop):
    """`get_embeddings` of the official stp.py for one example (h [T, D]; user / answer = (start - 1, end - 1) of
    the message's content [start, end)), returning (before + after, patch)."""
    user_start, user_end, answer_start, answer_end = user[0] + 1, user[1] + 1, answer[0] + 1, answer[1] + 1
    user_length = user_end - user_start
    patch_start = user_start + start if start + user_start < user_end else answer_start + start - user_length
    patch_end = user_start + stop if stop + user_start < user_end else answer_start + stop - user_length
    e = lambda i: h[i - 1]  # noqa: E731 - the hidden state before token i
    if patch_start >= answer_start:
        before = e(user_end) - e(user_start) + e(patch_start) - e(answer_start)
        patch = e(patch_end) - e(patch_start)
        after = e(answer_end) - e(patch_end)
    elif patch_end <= user_end:
        before = e(patch_start) - e(user_start)
        patch = e(patch_end) - e(patch_start)
        after = e(user_end) - e(patch_end) + e(answer_end) - e(answer_start)
    else:
        before = e(patch_start) - e(user_start)
        patch = e(user_end) - e(patch_start) + e(patch_end) - e(answer_start)
        after = e(answer_end) - e(patch_end)
    return before + after, patch


def direct_loss(model, rows, hidden=None):
    """Sum over examples of 1 - cos(C, P), each example run alone through the model (no padding, no packing)."""
    total = 0.0
    for row in rows:
        h = (hidden or model)(torch.tensor([row.input_ids]))[0]
        (path,) = row.stp_paths
        rest, patch = official_chords(h, *path.messages, *path.span)
        total = total + 1 - F.cosine_similarity(rest, patch, dim=0)
    return total


def rows_with_every_kind_of_span(tok):
    """Both chats with spans of each case and at each boundary: in the user message, in the answer, across."""
    rows = []
    for chat in CHATS:
        row = build_chat_row(chat, tok, STP)
        (path,) = row.stp_paths
        n_user, n = path.messages[0][1] - path.messages[0][0], path.length
        for span in [(0, 1), (0, n_user), (1, n_user - 1), (n_user - 1, n_user + 1), (n_user, n), (2, n),
                     (n_user, n_user + 1), (0, n - 1), (3, n - 2)]:  # fmt: skip
            rows.append(replace(row, stp_paths=[replace(path, span=span)]))
    return rows


def test_stp_loss_and_gradients_equal_the_official_computation(tok):
    model = tiny_llama(vocab_size=tok.vocab_size, seed=2).train()
    rows = rows_with_every_kind_of_span(tok)
    terms = Objective(model)(collate(rows, tok.pad_id))
    assert terms.jepa_rows == len(rows) and terms.pred.shape == (len(rows), model.embed_tokens.embedding_dim)
    reference = direct_loss(model, rows)
    torch.testing.assert_close(terms.jepa_sum, reference.float(), rtol=1e-5, atol=1e-5)
    params = [p for name, p in model.named_parameters() if "lm_head" not in name]  # the head: not on this path
    ours = torch.autograd.grad(terms.jepa_sum, params)
    theirs = torch.autograd.grad(reference, params)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        assert a.abs().max() > 0


def test_packed_rows_give_the_same_stp_loss(tok):
    model = tiny_llama(vocab_size=tok.vocab_size, seed=3).train()
    rows = rows_with_every_kind_of_span(tok)
    objective = Objective(model)
    separate = objective(collate(rows, tok.pad_id))
    packed_rows = pack_rows(rows, pack_length=800)
    assert len(packed_rows) < len(rows)
    packed = objective(collate(packed_rows, tok.pad_id))
    assert packed.jepa_rows == separate.jepa_rows == len(rows)
    torch.testing.assert_close(packed.jepa_sum, separate.jepa_sum, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.lm_sum, separate.lm_sum, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", [0, 1, -2])
def test_stp_layer_reads_the_hidden_states_of_that_layer(tok, layer):
    """Layer k (Hugging Face's hidden_states[k]) of a 2-layer model: 0 = the embeddings, 1 = after block 1
    (= -2): the reference is the model cut after that block, with no final norm."""
    model = tiny_llama(vocab_size=tok.vocab_size, seed=4).train()
    rows = rows_with_every_kind_of_span(tok)[:6]
    cut = copy.deepcopy(model)
    index = layer % 3
    cut.model.layers = cut.model.layers[:index]
    cut.model.norm = torch.nn.Identity()
    terms = Objective(model, stp_layer=layer)(collate(rows, tok.pad_id))
    torch.testing.assert_close(terms.jepa_sum, direct_loss(cut, rows).float(), rtol=1e-5, atol=1e-5)
    final = Objective(model)(collate(rows, tok.pad_id))
    assert not torch.allclose(terms.jepa_sum, final.jepa_sum)  # a different layer, a different loss
    with pytest.raises(ValueError, match="jepa.stp_layer: 3 is not a hidden-state index of a 2-layer model"):
        Objective(model, stp_layer=3)


def test_spans_drawn_per_step_and_example_and_a_path_without_one_is_refused(tok):
    row = build_chat_row(CHATS[0], tok, STP)
    with pytest.raises(ValueError, match="without a drawn span"):
        collate([row], tok.pad_id)
    drawn = draw_stp_spans(row, seed=1, step=0, example=0)
    assert row.stp_paths[0].span is None and drawn.stp_paths[0].span is not None  # the shared row untouched
    spans = {draw_stp_spans(row, seed=1, step=s, example=0).stp_paths[0].span for s in range(10)}
    assert len(spans) > 3
    assert draw_stp_spans(row, seed=1, step=4, example=2) == draw_stp_spans(row, seed=1, step=4, example=2)
    zero = build_chat_row(CHATS[0], tok, replace(STP, stp_zero=True))
    assert all(draw_stp_spans(zero, seed=1, step=s, example=0).stp_paths[0].span[0] == 0 for s in range(10))
    assert StpPath(((3, 5), (9, 12))).displacement(4) == [(5, 1), (3, -1), (11, 1), (9, -1)]


def test_stp_mode_without_lambda_says_it_trains_plain_sft(tmp_path, smollm2_dir, capsys):
    from jepa.train.build import build
    from tests.train.helpers import stp_chat_config, typed

    build(typed(stp_chat_config(tmp_path, smollm2_dir, jepa={"lambda": 0.0})), verbose=True)
    assert "layout.mode: stp with jepa.lambda=0 trains plain SFT rows" in capsys.readouterr().err
    build(typed(stp_chat_config(tmp_path, smollm2_dir, run={"name": "b"})), verbose=True)
    assert "stp with jepa.lambda=0" not in capsys.readouterr().err

"""The packed single pass equals running every segment as its own sequence (docs/method.md §2 contract), through
the `Objective` that training calls."""

import pytest
import torch

from jepa.data.collator import attention_mask, collate, dense_mask
from jepa.data.layouts import LayoutConfig, build_chat_row, build_reversal_row, pack_rows, step_token_ranges
from jepa.data.show import show_row
from jepa.losses import IGNORE_INDEX
from jepa.models.predictors import PredictorEmbeddings
from jepa.objective import Objective
from jepa.tokenizer import Tokenizer
from tests.data.tiny_tokenizer import write_tiny_llama3_tokenizer
from tests.models.tiny import tiny_gpt2, tiny_llama

CHATS = [
    [
        {"role": "system", "content": "Solve step by step."},
        {"role": "user", "content": "Natalia sold 48 clips in April and half as many in May. How many in all?"},
        {
            "role": "assistant",
            "content": "In May she sold 48/2 = 24 clips.\n\nIn all she sold 48+24 = 72 clips.\n\n#### 72",
        },
    ],
    [
        {"role": "system", "content": "Solve step by step."},
        {"role": "user", "content": "Weng earns $12 an hour. How much for 50 minutes?"},
        {"role": "assistant", "content": "Per minute: 12/60 = 0.2.\n\nFor 50 minutes: 0.2 x 50 = 10.\n\n#### 10"},
    ],
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return Tokenizer.from_dir(write_tiny_llama3_tokenizer(tmp_path_factory.mktemp("tok")))


def reversal_items():
    # ids: names 0..7, <mask> 8, <r_0> 9, <r_0_inv> 10
    return [
        {"input_text": [[0, 4], [9], [8]], "target_text": [[1, 5]], "type": "train"},
        {"input_text": [[2, 6], [10], [8]], "target_text": [[3, 7]], "type": "train"},
        {"input_text": [[3, 7], [9], [8]], "target_text": [[2, 6]], "type": "atomic"},
    ]


def total_loss(terms):
    return terms.lm_sum / terms.lm_tokens + terms.jepa_sum / max(terms.jepa_rows, 1)


def assert_packed_equals_separate(objective: Objective, rows, pad_id):
    params = [p for p in objective.parameters() if p.requires_grad]
    packed = objective(collate(rows, pad_id))
    separate = objective.two_pass(rows, pad_id)
    assert packed.lm_tokens == separate.lm_tokens > 0
    assert packed.jepa_rows == separate.jepa_rows == sum(r.has_jepa for r in rows)
    assert torch.allclose(packed.lm_sum, separate.lm_sum, atol=1e-5)
    assert packed.pred.shape == separate.pred.shape == packed.target.shape
    if packed.jepa_rows:
        assert (packed.pred - separate.pred).abs().max() < 1e-5
        assert (packed.target - separate.target).abs().max() < 1e-5
    g_packed = torch.autograd.grad(total_loss(packed), params, allow_unused=True)
    g_sep = torch.autograd.grad(total_loss(separate), params, allow_unused=True)
    for p, a, b in zip(params, g_packed, g_sep):
        a = torch.zeros_like(p) if a is None else a  # unused (e.g. predictors with K = 0): zero gradient
        b = torch.zeros_like(p) if b is None else b
        assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())  # fp32, relative to the scale


def objective_for(model, k: int) -> Objective:
    return Objective(model, PredictorEmbeddings(max(k, 1), model.embed_tokens, seed=1))


@pytest.mark.parametrize(
    "mode,k,variant",
    [("regular", 0, ""), ("step", 2, ""), ("step", 0, ""), ("jepa", 2, ""), ("jepa", 0, ""),
     ("jepa", 2, "qwen2"), ("step", 2, "qwen3"), ("jepa", 2, "olmo2"),
     ("step", 2, "mistral"), ("jepa", 2, "phi3"),  # sliding windows of 7 and 9 positions
     ("jepa", 2, "gemma2"), ("step", 2, "gemma3")],  # Gemma: soft-caps, windows of 6, scaled embeddings
)  # fmt: skip
def test_chat_modes_packed_equals_separate(tok, mode, k, variant):
    from tests.models.tiny import GEMMA_VARIANTS, LLAMA_VARIANTS, tiny_gemma

    if variant in GEMMA_VARIANTS:
        model = tiny_gemma(vocab_size=tok.vocab_size, **GEMMA_VARIANTS[variant]).train()
    else:
        model = tiny_llama(vocab_size=tok.vocab_size, **LLAMA_VARIANTS.get(variant, {})).train()
    cfg = LayoutConfig(mode=mode, predictors=k, max_length=512)
    rows = [build_chat_row(m, tok, cfg) for m in CHATS]
    assert all(r.has_jepa == (mode != "regular") for r in rows)
    assert_packed_equals_separate(objective_for(model, k), rows, tok.pad_id)


@pytest.mark.parametrize("arch,positions", [("gpt2", "restart"), ("gpt2", "continue"), ("llama", "restart")])
def test_reversal_packed_equals_separate(arch, positions):
    model = (tiny_gpt2 if arch == "gpt2" else tiny_llama)(vocab_size=12).train()
    cfg = LayoutConfig(mode="reversal", predictors=1, isolated_positions=positions)
    rows = [build_reversal_row(item, {9: 10, 10: 9}, cfg) for item in reversal_items()]
    assert [r.has_jepa for r in rows] == [True, True, False]  # atomic rows: their reverse is a test item
    assert_packed_equals_separate(objective_for(model, 1), rows, pad_id=11)


def test_lm_loss_is_exactly_plain_sft(tok):
    """The JEPA segments change nothing in the LM part: same labels, same loss as the regular row."""
    model = tiny_llama(vocab_size=tok.vocab_size)
    regular = [build_chat_row(m, tok, LayoutConfig(mode="regular")) for m in CHATS]
    step = [build_chat_row(m, tok, LayoutConfig(mode="step")) for m in CHATS]
    for r, s in zip(regular, step):
        assert s.input_ids[: s.main_length] == r.input_ids and s.labels[: s.main_length] == r.labels
    with torch.no_grad():
        a = Objective(model)(collate(regular, tok.pad_id))
        b = objective_for(model, 2)(collate(step, tok.pad_id))
    assert a.lm_tokens == b.lm_tokens and torch.allclose(a.lm_sum, b.lm_sum, atol=1e-5)


def test_step_layout_segments(tok):
    row = build_chat_row(CHATS[0], tok, LayoutConfig(mode="step", predictors=2))
    names = [row.segment_names[s] for s in row.segment_ids]
    n_a, n_b = names.count("A"), names.count("B")
    assert names == ["A"] * n_a + ["B"] * n_b + ["P"] * 2 + ["C"] * names.count("C")
    assert row.visible == [(0,), (0, 1), (0, 2), (3,)]  # A sees A; B sees A, B; P sees A, P; C only itself
    # A ends with step 1's ".\n\n" token; C is a copy of step 2; P continues A's positions; C restarts at 0.
    assert tok.decode(row.input_ids[n_a - 1 : n_a]) == ".\n\n"
    c = [i for i, n in enumerate(names) if n == "C"]
    assert tok.decode([row.input_ids[i] for i in c]) == "In all she sold 48+24 = 72 clips.\n\n"
    assert row.position_ids[n_a + n_b : n_a + n_b + 2] == [n_a, n_a + 1]
    assert row.position_ids[c[0]] == 0
    assert row.pred_index == n_a + n_b + 1 and row.target_index == c[-1]
    # Labels: assistant content + <|eot_id|>, never a predictor or a JEPA token.
    labelled = [row.labels[i] for i in range(len(row.labels)) if row.labels[i] != IGNORE_INDEX]
    assert tok.decode(labelled) == CHATS[0][2]["content"] + "<|eot_id|>"
    assert all(label == IGNORE_INDEX for label in row.labels[row.main_length :])


def test_steps_ignore_the_chat_template(tok):
    """Regression test for the published bug: the template's "\\n\\n" (after headers, after the date line)
    must never become a step."""
    enc = tok.encode_chat(CHATS[0])
    steps = step_token_ranges(enc)
    assistant = enc.spans[-1]
    assert all(assistant.content_start <= a <= b < assistant.content_end for a, b in steps)
    assert [tok.decode(enc.ids[a : b + 1]) for a, b in steps] == [
        "In May she sold 48/2 = 24 clips.\n\n",
        "In all she sold 48+24 = 72 clips.\n\n",
        "#### 72",
    ]
    rendered = tok.render_chat(CHATS[0])
    assert rendered.count("\n\n") > 2 + 3  # the template itself is full of blank lines


def test_steps_with_real_smollm2_tokenizer(smollm2_dir):
    tok = Tokenizer.from_dir(smollm2_dir)
    content = "Half of 48 is 24.\n\nSo 48+24 = 72 clips.\n\n\n\nDone:\n\n#### 72"
    enc = tok.encode_chat([{"role": "user", "content": "Q"}, {"role": "assistant", "content": content}])
    steps = [tok.decode(enc.ids[a : b + 1]) for a, b in step_token_ranges(enc)]
    assert [s.strip() for s in steps] == ["Half of 48 is 24.", "So 48+24 = 72 clips.", "Done:", "#### 72"]
    assert "".join(steps) == content  # steps tile the content: nothing lost, nothing doubled


def test_truncated_step2_trains_lm_only(tok):
    _, (_, step2_end), _ = step_token_ranges(tok.encode_chat(CHATS[0]))
    kept = build_chat_row(CHATS[0], tok, LayoutConfig(mode="step", max_length=step2_end + 1))
    assert kept.has_jepa and kept.main_length == step2_end + 1
    cut = build_chat_row(CHATS[0], tok, LayoutConfig(mode="step", max_length=step2_end))
    assert not cut.has_jepa and len(cut.input_ids) == cut.main_length == step2_end


def test_mask_has_no_empty_rows_and_show_row(tok):
    rows = [build_chat_row(m, tok, LayoutConfig(mode="step")) for m in CHATS]
    batch = collate(rows, tok.pad_id, pad_to_multiple=8)
    mask = dense_mask(batch)
    assert mask.any(-1).all()  # every query (padding too) sees at least one key
    assert batch.input_ids.shape[1] % 8 == 0
    model = tiny_llama(vocab_size=tok.vocab_size)
    with torch.no_grad():
        assert torch.isfinite(model(batch.input_ids.clamp(min=0), mask, batch.position_ids)).all()
    picture = show_row(rows[0], lambda t: tok.decode([t]))
    assert "<P2>" in picture and "pred" in picture and "tgt" in picture and "#" in picture


def test_jepa_mode_views(tok):
    row = build_chat_row(CHATS[0], tok, LayoutConfig(mode="jepa", predictors=2))
    names = [row.segment_names[s] for s in row.segment_ids]
    t = [i for i, n in enumerate(names) if n == "T"]
    d = [i for i, n in enumerate(names) if n == "D"]
    assert row.input_ids[row.pred_index] == -2  # the last predictor
    assert tok.decode([row.input_ids[row.target_index]]) == "2"  # last content token of "#### 72"
    assert row.position_ids[t[0]] == 0 and row.position_ids[d[0]] == 0
    assert "Natalia" in tok.decode([i for i in (row.input_ids[j] for j in t) if i >= 0])
    front = build_chat_row(CHATS[0], tok, LayoutConfig(mode="jepa", predictors=2, front_pred=True))
    assert tok.decode([front.input_ids[front.pred_index]]) == "?"  # the last content token
    parity = build_chat_row(CHATS[0], tok, LayoutConfig(mode="jepa", predictors=2, last_token=-2))
    assert parity.pred_index == row.pred_index and parity.target_index == row.target_index


LONG_FIRST_STEP = [
    {"role": "system", "content": "Solve step by step."},
    {"role": "user", "content": "How many?"},
    {"role": "assistant", "content": "word " * 60 + "done.\n\nThen two.\n\n#### 2"},
]


@pytest.mark.parametrize("mode", ["regular", "step", "jepa"])
@pytest.mark.parametrize("max_length", [8, 24, 48, 100, 512])
def test_the_lm_part_never_exceeds_max_length_and_rows_collate(tok, mode, max_length):
    """max_length may end inside step 1, step 2 or a view: the row stays consistent and trains LM-only."""
    cfg = LayoutConfig(mode=mode, predictors=2, max_length=max_length)
    rows = [build_chat_row(m, tok, cfg) for m in [*CHATS, LONG_FIRST_STEP]]
    for row in rows:
        assert row.main_length <= max_length
        assert len(row.input_ids) == len(row.position_ids) == len(row.labels) == len(row.segment_ids)
        assert max(row.segment_ids) < len(row.visible)
    batch = collate(rows, tok.pad_id)  # several rows of different shapes in one batch
    assert batch.input_ids.shape[0] == len(rows) == 3
    if mode == "step" and max_length <= 100:
        assert not rows[-1].has_jepa  # step 1 alone is longer than 100 tokens


@pytest.mark.parametrize("mode", ["step", "jepa"])
def test_a_chat_without_an_assistant_message_is_a_value_error(tok, mode):
    with pytest.raises(ValueError, match="assistant"):
        build_chat_row([{"role": "user", "content": "hi"}], tok, LayoutConfig(mode=mode))


def test_paper_labels_are_every_token_but_the_pad_token(smollm2_dir):
    """Hand-checked on a tiny chat: ChatML renders "<|im_start|>system\\nS<|im_end|>\\n<|im_start|>user\\nQ<|im_end|>
    \\n<|im_start|>assistant\\nA<|im_end|>\\n"; the official collator drops every pad (= <|im_end|>) target, so the
    targets are every token after the first except the three <|im_end|>."""
    tok = Tokenizer.from_dir(smollm2_dir)
    assert tok.decode([tok.pad_id]) == "<|im_end|>"
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    row = build_chat_row(chat, tok, LayoutConfig(mode="regular", lm_labels="paper"))
    targets = [y for y in row.labels if y != IGNORE_INDEX]
    expected = [t for t in row.input_ids[1:] if t != tok.pad_id]
    assert targets == expected and len(row.input_ids) - 1 - len(targets) == 3
    assert tok.decode(targets) == "system\nS\n<|im_start|>user\nQ\n<|im_start|>assistant\nA\n"
    everything = build_chat_row(chat, tok, LayoutConfig(mode="regular", lm_labels="all"))
    assert sum(y != IGNORE_INDEX for y in everything.labels) == len(targets) + 3


def test_paper_labels_count_on_the_first_gsm8k_examples(smollm2_dir, repo_root):
    """The issue's count: the first 4 GSM8K training examples, official system prompt, raw answers: 642 label
    tokens with `all`, 630 in the official code."""
    import json

    path = repo_root.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
    if not path.is_file():
        pytest.skip("GSM8K is not in ../shared/data/gsm8k")
    tok = Tokenizer.from_dir(smollm2_dir)
    counts = {"all": 0, "paper": 0}
    with path.open() as f:
        for _, line in zip(range(4), f):
            record = json.loads(line)
            chat = [
                {"role": "system", "content": "Answer the math question, show steps."},
                {"role": "user", "content": record["question"]},
                {"role": "assistant", "content": record["answer"]},
            ]
            for labels in counts:
                row = build_chat_row(chat, tok, LayoutConfig(mode="regular", lm_labels=labels))
                counts[labels] += sum(y != IGNORE_INDEX for y in row.labels)
    assert counts == {"all": 642, "paper": 630}


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    return x[torch.argsort(x[:, 0])]


PACKING_CASES = [("regular", "cosine"), ("step", "cosine"), ("step_all", "cosine"), ("jepa", "cosine"),
                 ("jepa", "infonce"), ("reversal", "cosine"), ("reversal", "infonce")]  # fmt: skip


@pytest.mark.parametrize("mode, loss", PACKING_CASES)
def test_packed_examples_give_the_loss_views_and_gradients_of_the_unpacked_ones(tok, mode, loss):
    """data.pack_length: the same examples, several per row, give the same loss sums, the same views (as a set:
    packing may reorder examples) and the same gradients, fp32, 1e-5."""
    if mode == "reversal":
        model = tiny_gpt2(vocab_size=12).train()
        rows = [build_reversal_row(item, {9: 10, 10: 9}, LayoutConfig(mode="reversal", predictors=1))
                for item in reversal_items() * 3]  # fmt: skip
        pad_id = 11
    else:
        model = tiny_llama(vocab_size=tok.vocab_size).train()
        cfg = LayoutConfig(mode=mode.removesuffix("_all"), predictors=2, max_length=512,
                           step_pairs="all" if mode == "step_all" else "first")  # fmt: skip
        rows = [build_chat_row(m, tok, cfg) for m in CHATS * 2]
        pad_id = tok.pad_id
    objective = Objective(model, PredictorEmbeddings(2, model.embed_tokens, seed=1), jepa_loss=loss)
    packed = pack_rows(rows, pack_length=2 * max(len(r.input_ids) for r in rows))
    assert len(packed) < len(rows)
    params = [p for p in objective.parameters() if p.requires_grad]
    a, b = objective(collate(rows, pad_id)), objective(collate(packed, pad_id))
    assert (a.lm_tokens, a.jepa_rows) == (b.lm_tokens, b.jepa_rows) and a.lm_tokens > 0
    torch.testing.assert_close(b.lm_sum, a.lm_sum, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.jepa_sum, a.jepa_sum, rtol=1e-5, atol=1e-5)
    if a.jepa_rows:
        torch.testing.assert_close(_sorted_rows(b.pred), _sorted_rows(a.pred), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(_sorted_rows(b.target), _sorted_rows(a.target), rtol=1e-5, atol=1e-5)
    grads_a = torch.autograd.grad(total_loss(a), params, allow_unused=True)
    grads_b = torch.autograd.grad(total_loss(b), params, allow_unused=True)
    for p, ga, gb in zip(params, grads_a, grads_b):
        ga, gb = (torch.zeros_like(p) if g is None else g for g in (ga, gb))
        assert (ga - gb).abs().max() <= 1e-5 * max(1.0, ga.abs().max().item())


def test_packing_fills_rows_and_keeps_examples_apart():
    cfg = LayoutConfig(mode="reversal", predictors=1)
    rows = [build_reversal_row(item, {9: 10, 10: 9}, cfg) for item in reversal_items() * 6]  # 13 / 6 tokens
    packed = pack_rows(rows, pack_length=32)
    assert sum(len(r.input_ids) for r in packed) == sum(len(r.input_ids) for r in rows)
    assert all(len(r.input_ids) <= 32 for r in packed)
    batch = collate(packed, pad_id=11)
    assert batch.counts.tokens / batch.counts.positions >= 0.9  # vs 8 / 13 real tokens unpacked
    mask = dense_mask(batch)[0, 0]
    first = len(rows[0].input_ids)  # the first example never attends to the second, nor the second to the first
    assert not mask[first:, :first][: len(packed[0].input_ids) - first].any()


@pytest.mark.parametrize("mode", ["regular", "step", "jepa", "reversal"])
@pytest.mark.parametrize("packed", [False, True])
def test_the_device_masks_are_the_rows_masks(tok, mode, packed):
    """The masks built from the batch's segment ids (SDPA's `dense_mask`, FlexAttention's mask_mod expanded with
    create_mask) equal each row's own `attention_mask`, and `counts.attended_pairs` counts its real pairs: every
    mode, padded and packed rows."""
    from torch.nn.attention.flex_attention import create_mask

    from jepa.data.collator import flex_mask_mod

    if mode == "reversal":
        rows = [build_reversal_row(item, {9: 10, 10: 9}, LayoutConfig(mode="reversal", predictors=1))
                for item in reversal_items() * 2]  # fmt: skip
    else:
        rows = [build_chat_row(m, tok, LayoutConfig(mode=mode, predictors=2)) for m in CHATS + [LONG_FIRST_STEP]]
    if packed:
        rows = pack_rows(rows, pack_length=2 * max(len(r.input_ids) for r in rows))
    batch = collate(rows, pad_id=0, pad_to_multiple=8)
    B, T = batch.input_ids.shape
    expected = torch.stack([attention_mask(row, T) for row in rows])[:, None]
    assert torch.equal(dense_mask(batch), expected)
    assert torch.equal(create_mask(flex_mask_mod(batch), B, 1, T, T, device="cpu"), expected)
    real = torch.arange(T)[None, :] < batch.lengths[:, None]
    assert batch.counts.attended_pairs == int((expected[:, 0] & real[:, :, None] & real[:, None, :]).sum())


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")  # eager on CPU, on purpose
@pytest.mark.parametrize("arch", ["llama", "gpt2", "mistral", "gemma2"])
def test_the_flex_objective_forward_equals_the_sdpa_one(tok, arch):
    """No gradients: FlexAttention has no CPU backward in torch 2.13, so CPU checks the forward only."""
    if arch == "gpt2":
        model = tiny_gpt2(vocab_size=12).eval()
        rows = [build_reversal_row(item, {9: 10, 10: 9}, LayoutConfig(mode="reversal", predictors=1))
                for item in reversal_items()]  # fmt: skip
        pad_id = 11
    else:  # grouped-query attention; mistral: a sliding window of 7 positions on every layer; gemma2: soft-capped
        from tests.models.tiny import GEMMA_VARIANTS, tiny_gemma  # scores (a score_mod) and windows of 6

        window = {"model_type": "mistral", "sliding_window": 7} if arch == "mistral" else {}
        if arch == "gemma2":
            model = tiny_gemma(vocab_size=tok.vocab_size, **GEMMA_VARIANTS["gemma2"]).eval()
        else:
            model = tiny_llama(vocab_size=tok.vocab_size, **window).eval()
        rows = [build_chat_row(m, tok, LayoutConfig(mode="step", predictors=2)) for m in CHATS]
        pad_id = tok.pad_id
    predictors = PredictorEmbeddings(2, model.embed_tokens, seed=1)
    batch = collate(pack_rows(rows, 64) + rows, pad_id)
    with torch.no_grad():
        dense = Objective(model, predictors)(batch)
        flex = Objective(model, predictors, attention="flex")(batch)
    torch.testing.assert_close(flex.lm_sum, dense.lm_sum, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flex.pred, dense.pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flex.target, dense.target, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------- multi-step JEPA (step_pairs)
FOUR_STEPS = [
    {"role": "system", "content": "Solve step by step."},
    {"role": "user", "content": "Tom has 3 apples and buys 4 more, then eats 2. How many are left?"},
    {"role": "assistant", "content": "He buys 4: 3+4 = 7.\n\nHe eats 2: 7-2 = 5.\n\nSo 5 are left.\n\n#### 5"},
]


def test_all_step_pairs_layout(tok):
    row = build_chat_row(FOUR_STEPS, tok, LayoutConfig(mode="step", predictors=2, step_pairs="all"))
    names = [row.segment_names[s] for s in row.segment_ids]
    assert row.segment_names == ["A", "A2", "A3", "B", "P", "C", "P2", "C2", "P3", "C3"]
    # The LM sequence sees all of itself; predictor k sees the LM sequence up to the end of step k; targets alone.
    assert row.visible == [(0,), (0, 1), (0, 1, 2), (0, 1, 2, 3), (0, 4), (5,), (0, 1, 6), (7,), (0, 1, 2, 8), (9,)]
    steps = ["He eats 2: 7-2 = 5.\n\n", "So 5 are left.\n\n", "#### 5"]
    for n, name in enumerate(("C", "C2", "C3")):
        target = [row.input_ids[i] for i, s in enumerate(names) if s == name]
        assert tok.decode(target) == steps[n]
        cut = sum(names.count(a) for a in ["A", "A2", "A3"][: n + 1])  # where step n+1 ends in the LM sequence
        p = [i for i, s in enumerate(names) if s == ("P", "P2", "P3")[n]]
        assert [row.position_ids[i] for i in p] == [cut, cut + 1]  # predictors continue after step n+1
        assert row.jepa_pairs[n] == (p[-1], [i for i, s in enumerate(names) if s == name][-1])
    assert len(row.jepa_pairs) == 3 and row.main_length == names.count("A") + names.count("A2") + names.count(
        "A3") + names.count("B")  # fmt: skip


def test_first_step_pair_is_the_seed_layout_and_all_equals_it_for_two_steps(tok):
    two_steps = [*CHATS[0][:2], {"role": "assistant", "content": "Half of 48 is 24.\n\n48+24 = 72."}]
    first = build_chat_row(two_steps, tok, LayoutConfig(mode="step", predictors=2))
    assert build_chat_row(two_steps, tok, LayoutConfig(mode="step", predictors=2, step_pairs="all")) == first
    many = build_chat_row(FOUR_STEPS, tok, LayoutConfig(mode="step", predictors=2))
    assert many.segment_names == ["A", "B", "P", "C"] and len(many.jepa_pairs) == 1


def test_pairs_whose_target_is_cut_by_max_length_are_left_out(tok):
    last_step_end = step_token_ranges(tok.encode_chat(FOUR_STEPS))[-1][1]  # "#### 5" ends at this token
    cfg = LayoutConfig(mode="step", predictors=1, step_pairs="all", max_length=last_step_end)
    cut = build_chat_row(FOUR_STEPS, tok, cfg)
    assert len(cut.jepa_pairs) == 2 and cut.segment_names[-1] == "C2" and cut.main_length == last_step_end
    with pytest.raises(ValueError, match="layout.step_pairs must be one of first, all, got 'some'"):
        LayoutConfig(mode="step", step_pairs="some")


@pytest.mark.parametrize("k", [2, 0])
def test_all_step_pairs_packed_equals_each_pair_run_separately(tok, k):
    """Loss, every view (all pairs) and all gradients of the single packed pass == two_pass, which runs each
    pair's prediction view and target view as sequences of their own."""
    model = tiny_llama(vocab_size=tok.vocab_size).train()
    cfg = LayoutConfig(mode="step", predictors=k, step_pairs="all", max_length=512)
    rows = [build_chat_row(m, tok, cfg) for m in [*CHATS, FOUR_STEPS]]
    assert [len(r.jepa_pairs) for r in rows] == [2, 2, 3]
    objective = objective_for(model, k)
    packed, separate = objective(collate(rows, tok.pad_id)), objective.two_pass(rows, tok.pad_id)
    assert packed.jepa_rows == separate.jepa_rows == 7  # every pair is one JEPA row of the step's mean
    torch.testing.assert_close(packed.pred, separate.pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.target, separate.target, rtol=1e-5, atol=1e-5)
    params = [p for p in objective.parameters() if p.requires_grad]
    g_packed = torch.autograd.grad(total_loss(packed), params, allow_unused=True)
    g_sep = torch.autograd.grad(total_loss(separate), params, allow_unused=True)
    for p, a, b in zip(params, g_packed, g_sep):
        a, b = (torch.zeros_like(p) if g is None else g for g in (a, b))
        assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("template", ["smollm2", "llama3"])
def test_lm_labels_all_and_paper_differ_in_exactly_the_end_of_turn_tokens(tmp_path, smollm2_dir, template):
    """The pair isolates the stop token (docs/method.md, LM labels): both train the prompt; `paper` drops the
    targets equal to the pad token, which is the end-of-turn token for SmolLM2 (<|im_end|>) and for Llama-3
    Instruct (<|eot_id|>: its tokenizer has no pad token, so pad = eos, as the official code sets it)."""
    import json

    if template == "smollm2":
        tokenizer, end_of_turn = Tokenizer.from_dir(smollm2_dir), "<|im_end|>"
    else:
        directory = write_tiny_llama3_tokenizer(tmp_path)
        (directory / "tokenizer_config.json").write_text(
            json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
        )
        tokenizer, end_of_turn = Tokenizer.from_dir(directory), "<|eot_id|>"
    eot = tokenizer.token_to_id(end_of_turn)
    assert tokenizer.pad_id == eot
    for chat in CHATS:
        rows = {s: build_chat_row(chat, tokenizer, LayoutConfig(mode="regular", lm_labels=s)) for s in ("all", "paper")}
        ids, every, paper = rows["all"].input_ids, rows["all"].labels, rows["paper"].labels
        differ = [t for t in range(len(ids)) if every[t] != paper[t]]
        assert differ == [t for t in range(len(ids) - 1) if ids[t + 1] == eot]
        assert len(differ) == 3  # system, user and assistant turns each end with one
        assert all(every[t] == eot and paper[t] == IGNORE_INDEX for t in differ)
        assert all(label != IGNORE_INDEX for label in every[:-1])  # `all`: every next token, the prompt's too

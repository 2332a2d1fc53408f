"""Tokenizer wrapper and chat templates: golden strings, piecewise encoding, masks, spans, offsets, errors."""

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from jepa.tokenizer import Tokenizer

LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
]
LLAMA3_SYSTEM_HEADER = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
)
SMOLLM_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

WITH_SYSTEM = [
    {"role": "system", "content": "  You are terse.\n"},
    {"role": "user", "content": "What is 2+2?\n"},
    {"role": "assistant", "content": " It is 4. "},
]
WITHOUT_SYSTEM = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


def build_byte_level_dir(tmp_dir: Path, specials: list[str]) -> Path:
    """A tiny byte-level BPE tokenizer.json (trained on a few sentences) with `specials` as special tokens."""
    backend = BackendTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = ["You are terse. What is 2+2? It is 4.", "What is the capital of France? Paris.", "Hello there!"] * 5
    backend.train_from_iterator(corpus, trainer=trainer)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    backend.save(str(tmp_dir / "tokenizer.json"))
    return tmp_dir


@pytest.fixture(scope="module")
def llama3_tok(tmp_path_factory) -> Tokenizer:
    return Tokenizer.from_dir(build_byte_level_dir(tmp_path_factory.mktemp("llama3"), LLAMA3_SPECIALS))


@pytest.fixture(scope="module")
def smol_tok(smollm2_dir) -> Tokenizer:
    return Tokenizer.from_dir(smollm2_dir)


@pytest.fixture(scope="module")
def smol_reference(smollm2_dir):
    """transformers' tokenizer for the same directory: renders the GGUF's official Jinja chat template."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


# ------------------------------------------------------------------------------------------------ llama3
LLAMA3_GOLDEN = {
    ("with_system", False): LLAMA3_SYSTEM_HEADER + "You are terse.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nIt is 4.<|eot_id|>",
    ("with_system", True): LLAMA3_SYSTEM_HEADER + "You are terse.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nIt is 4.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("without_system", False): LLAMA3_SYSTEM_HEADER + "<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>",
    ("without_system", True): LLAMA3_SYSTEM_HEADER + "<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
}
CONVERSATIONS = {"with_system": WITH_SYSTEM, "without_system": WITHOUT_SYSTEM}


@pytest.mark.parametrize("case,gen_prompt", list(LLAMA3_GOLDEN))
def test_llama3_golden_strings(llama3_tok, case, gen_prompt):
    messages = CONVERSATIONS[case]
    rendered = llama3_tok.render_chat(messages, add_generation_prompt=gen_prompt)
    assert rendered == LLAMA3_GOLDEN[(case, gen_prompt)]
    assert llama3_tok.decode(llama3_tok.encode_chat(messages, add_generation_prompt=gen_prompt).ids) == rendered


def test_llama3_defaults_and_date(tmp_path, llama3_tok):
    assert llama3_tok.chat_template == "llama3"
    assert llama3_tok.bos_id == llama3_tok.token_to_id("<|begin_of_text|>")
    assert llama3_tok.eos_id == llama3_tok.token_to_id("<|eot_id|>")
    assert llama3_tok.pad_id == llama3_tok.eos_id  # no pad token: falls back to eos
    assert llama3_tok.stop_ids == [llama3_tok.token_to_id(t) for t in ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>")]
    assert llama3_tok.vocab_size == llama3_tok.backend.get_vocab_size(with_added_tokens=True)
    dated = Tokenizer.from_dir(build_byte_level_dir(tmp_path, LLAMA3_SPECIALS), date_string="01 Jan 2025")
    assert "\nToday Date: 01 Jan 2025\n\n<|eot_id|>" in dated.render_chat([{"role": "user", "content": "Hi"}])


def test_llama3_mask_and_spans(llama3_tok):
    enc = llama3_tok.encode_chat(WITH_SYSTEM, add_generation_prompt=False)
    assert len(enc.ids) == len(enc.assistant_mask)
    masked = [i for i, m in zip(enc.ids, enc.assistant_mask, strict=True) if m]
    assert llama3_tok.decode(masked) == "It is 4.<|eot_id|>"
    assert [s.role for s in enc.spans] == ["system", "user", "assistant"]
    assert [s.content for s in enc.spans] == ["You are terse.", "What is 2+2?", "It is 4."]
    previous_end = 1  # after <|begin_of_text|>
    for span in enc.spans:
        assert span.start == previous_end and span.start < span.content_start <= span.content_end < span.end
        assert llama3_tok.decode(enc.ids[span.start : span.start + 1]) == "<|start_header_id|>"
        assert enc.ids[span.end - 1] == llama3_tok.token_to_id("<|eot_id|>")
        assert llama3_tok.decode(enc.ids[span.content_start : span.content_end]) == span.content
        assert len(span.offsets) == span.content_end - span.content_start
        assert "".join(span.content[a:b] for a, b in span.offsets) == span.content
        previous_end = span.end
    assert previous_end == len(enc.ids)


def test_llama3_system_block_present_without_system_message(llama3_tok):
    enc = llama3_tok.encode_chat(WITHOUT_SYSTEM, add_generation_prompt=True)
    system = enc.spans[0]
    assert (system.role, system.content, system.content_start == system.content_end) == ("system", "", True)
    gen_prompt_len = 2 + len(llama3_tok.encode("assistant")) + len(llama3_tok.encode("\n\n"))
    assert llama3_tok.decode(enc.ids[-gen_prompt_len:]) == "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert enc.spans[-1].end == len(enc.ids) - gen_prompt_len
    assert not any(enc.assistant_mask[-gen_prompt_len:])  # the generation prompt is never trained on


# ------------------------------------------------------------------------------------------------ chatml (SmolLM2)
CHATML_GOLDEN = {
    ("with_system", False): "<|im_start|>system\n  You are terse.\n<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n It is 4. <|im_end|>\n",
    ("with_system", True): "<|im_start|>system\n  You are terse.\n<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n It is 4. <|im_end|>\n"
    "<|im_start|>assistant\n",
    ("without_system", False): f"<|im_start|>system\n{SMOLLM_DEFAULT_SYSTEM}<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n",
    ("without_system", True): f"<|im_start|>system\n{SMOLLM_DEFAULT_SYSTEM}<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n"
    "<|im_start|>assistant\n",
}


@pytest.mark.parametrize("case,gen_prompt", list(CHATML_GOLDEN))
def test_chatml_golden_strings_match_transformers(smol_tok, smol_reference, case, gen_prompt):
    messages = CONVERSATIONS[case]
    rendered = smol_tok.render_chat(messages, add_generation_prompt=gen_prompt)
    assert rendered == CHATML_GOLDEN[(case, gen_prompt)]
    assert smol_reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt) == rendered
    enc = smol_tok.encode_chat(messages, add_generation_prompt=gen_prompt)
    assert smol_tok.decode(enc.ids) == rendered


def test_chatml_piecewise_ids_equal_retokenised_string(smol_tok):
    messages = [
        {"role": "system", "content": "Solve step by step."},
        {"role": "user", "content": "Tom has 12 apples and eats 3.\nHow many are left?"},
        {"role": "assistant", "content": "12 - 3 = 9.\n#### 9"},
        {"role": "user", "content": "Thanks!"},
    ]
    for conversation in (messages, messages[1:], WITHOUT_SYSTEM):
        for gen_prompt in (False, True):
            enc = smol_tok.encode_chat(conversation, add_generation_prompt=gen_prompt)
            assert enc.ids == smol_tok.encode(smol_tok.render_chat(conversation, add_generation_prompt=gen_prompt))


def test_chatml_special_ids_and_mask(smol_tok):
    assert smol_tok.chat_template == "chatml"
    assert (smol_tok.bos_id, smol_tok.eos_id, smol_tok.pad_id) == (1, 2, 2)  # <|im_start|>, <|im_end|>, <|im_end|>
    assert smol_tok.stop_ids == [2]
    assert smol_tok.vocab_size == 49152
    enc = smol_tok.encode_chat(WITH_SYSTEM)
    masked = [i for i, m in zip(enc.ids, enc.assistant_mask, strict=True) if m]
    assert smol_tok.decode(masked) == " It is 4. <|im_end|>"  # not the "\n" glue after <|im_end|>
    assistant = enc.spans[-1]
    assert assistant.role == "assistant" and enc.ids[assistant.end - 1] == 2 and assistant.end == len(enc.ids) - 1
    assert smol_tok.decode(enc.ids[assistant.content_start : assistant.content_end]) == " It is 4. "


def test_chatml_piece_boundary_divergence_is_the_documented_one(smol_tok):
    # Content starting with whitespace: in the rendered string the header's "\n" and the content's leading
    # spaces form one pre-token ("\n " + " Hi"); encode_chat keeps header and content apart ("\n", " ", " Hi").
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "  Hi"}]
    enc = smol_tok.encode_chat(messages)
    rendered = smol_tok.render_chat(messages)
    assert smol_tok.decode(enc.ids) == rendered
    assert enc.ids != smol_tok.encode(rendered)
    assert smol_tok.decode(enc.ids[enc.spans[1].content_start : enc.spans[1].content_end]) == "  Hi"


# ------------------------------------------------------------------------------------------------ plain text
def test_encode_offsets_digits_and_round_trip(smol_tok):
    text = "Hello world!\n\nIt costs 1234 €."
    ids, offsets = smol_tok.encode_with_offsets(text)
    assert ids == smol_tok.encode(text) and len(offsets) == len(ids)
    assert smol_tok.decode(ids) == text
    digit_tokens = [text[a:b] for a, b in offsets if text[a:b].strip().isdigit()]
    assert digit_tokens == ["1", "2", "3", "4"]  # digits are split individually
    assert [text[a:b] for a, b in offsets[:2]] == ["Hello", " world"]
    assert smol_tok.encode("<|im_end|>") == [2]  # special-token strings map to their ids, nothing is added
    assert smol_tok.decode([1, *smol_tok.encode("hi"), 2], skip_special_tokens=True) == "hi"


def test_config_files_give_special_tokens(tmp_path):
    tok_dir = build_byte_level_dir(tmp_path, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"])
    (tok_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": {"content": "<|im_start|>", "special": True},
                "eos_token": "<|endoftext|>",
                "pad_token": "<pad>",
                "chat_template": "{{ '<|im_start|>system\\nBe nice.<|im_end|>\\n' }}",
            }
        )
    )
    tok = Tokenizer.from_dir(tok_dir)
    assert tok.chat_template == "chatml"
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 0, 3)
    assert tok.stop_ids == [2, 0]  # <|im_end|>, then eos
    assert tok.render_chat([{"role": "user", "content": "Hi"}]).startswith("<|im_start|>system\nBe nice.<|im_end|>\n")


# ------------------------------------------------------------------------------------------------ errors
def test_missing_dir_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Tokenizer.from_dir(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)


def test_bad_messages_and_template(llama3_tok, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        llama3_tok.render_chat([])
    with pytest.raises(ValueError, match=r"messages\[1\].*content"):
        llama3_tok.encode_chat([{"role": "user", "content": "a"}, {"role": "assistant"}])
    with pytest.raises(ValueError, match="unknown chat_template"):
        Tokenizer.from_dir(build_byte_level_dir(tmp_path, LLAMA3_SPECIALS), chat_template="alpaca")
    plain = Tokenizer.from_dir(build_byte_level_dir(tmp_path / "plain", ["<|endoftext|>"]))
    assert plain.chat_template is None and plain.eos_id == plain.pad_id == 0
    with pytest.raises(ValueError, match="no chat template"):
        plain.render_chat([{"role": "user", "content": "a"}])

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
                "chat_template": QWEN25_JINJA.replace(QWEN_DEFAULT_SYSTEM, "Be nice."),
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


# ----------------------------------------------------------------------------------------- Qwen2.5, Qwen3, OLMo-2
# Their chat templates as documented, in Jinja (plain messages, no tools), rendered by transformers as the
# independent reference; the golden strings are written out from the same documented formats.
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN25_JINJA = (
    r"{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    r"{%- else %}{{- '<|im_start|>system\n" + QWEN_DEFAULT_SYSTEM + r"<|im_end|>\n' }}{%- endif %}"
    r"{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    r"{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
    r"{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
QWEN3_JINJA = (
    r"{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}"
    r"{%- endif %}{%- set ns = namespace(last_query_index=-1) %}{%- for message in messages %}"
    r"{%- if message.role == 'user' %}{%- set ns.last_query_index = loop.index0 %}{%- endif %}{%- endfor %}"
    r"{%- for message in messages %}{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    r"{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}"
    r"{%- elif message.role == 'assistant' %}{%- set content = message.content %}{%- set reasoning_content = '' %}"
    r"{%- if '</think>' in content %}"
    r"{%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}"
    r"{%- set content = content.split('</think>')[-1].lstrip('\n') %}{%- endif %}"
    r"{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}"
    r"{{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n'"
    r" + content.lstrip('\n') }}{%- else %}{{- '<|im_start|>' + message.role + '\n' + content }}{%- endif %}"
    r"{{- '<|im_end|>\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    r"{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
    r"{%- endif %}"
)
OLMO2_JINJA = (
    r"{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    r"{{ '<|system|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'user' %}"
    r"{{ '<|user|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'assistant' %}"
    r"{% if not loop.last %}{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
    r"{% else %}{{ '<|assistant|>\n' + message['content'] + eos_token }}{% endif %}{% endif %}"
    r"{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}"
)
TEMPLATES = {  # name -> (special tokens, tokenizer_config.json)
    "qwen2.5": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                {"chat_template": QWEN25_JINJA, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "qwen3": (["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
              {"chat_template": QWEN3_JINJA, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "olmo2": (["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"],
              {"chat_template": OLMO2_JINJA, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
               "pad_token": "<|pad|>"}),
}  # fmt: skip
MULTI_TURN = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "<think>\nadd\n</think>\n\nIt is 4."},
    {"role": "user", "content": "Hello there!"},
    {"role": "assistant", "content": "Paris."},
]
GOLDEN = {
    ("qwen2.5", "without_system", True): f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n"
    "<|im_start|>assistant\n",
    ("qwen2.5", "with_system", False): "<|im_start|>system\n  You are terse.\n<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n It is 4. <|im_end|>\n",
    ("qwen3", "without_system", True): "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\nParis.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    ("qwen3", "with_system", False): "<|im_start|>system\n  You are terse.\n<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n It is 4. <|im_end|>\n",
    ("qwen3", "multi_turn", False): "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\nIt is 4.<|im_end|>\n<|im_start|>user\nHello there!<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\nParis.<|im_end|>\n",
    ("olmo2", "without_system", True): "<|endoftext|><|user|>\nWhat is the capital of France?\n"
    "<|assistant|>\nParis.<|endoftext|><|assistant|>\n",
    ("olmo2", "with_system", False): "<|endoftext|><|system|>\n  You are terse.\n\n<|user|>\nWhat is 2+2?\n\n"
    "<|assistant|>\n It is 4. <|endoftext|>",
    ("olmo2", "multi_turn", False): "<|endoftext|><|user|>\nWhat is 2+2?\n<|assistant|>\n<think>\nadd\n</think>\n\n"
    "It is 4.<|endoftext|>\n<|user|>\nHello there!\n<|assistant|>\nParis.<|endoftext|>",
}  # fmt: skip


@pytest.fixture(scope="module")
def template_dirs(tmp_path_factory) -> dict[str, Path]:
    dirs = {}
    for name, (specials, config) in TEMPLATES.items():
        path = build_byte_level_dir(tmp_path_factory.mktemp(name), specials)
        (path / "tokenizer_config.json").write_text(
            json.dumps({**config, "tokenizer_class": "PreTrainedTokenizerFast"})
        )
        dirs[name] = path
    return dirs


@pytest.mark.parametrize("name,case,gen_prompt", list(GOLDEN))
def test_qwen_and_olmo2_golden_strings_match_their_jinja_templates(template_dirs, name, case, gen_prompt):
    from transformers import AutoTokenizer

    messages = {**CONVERSATIONS, "multi_turn": MULTI_TURN}[case]
    tok = Tokenizer.from_dir(template_dirs[name])
    assert tok.chat_template == {"qwen2.5": "chatml"}.get(name, name)
    rendered = tok.render_chat(messages, add_generation_prompt=gen_prompt)
    assert rendered == GOLDEN[(name, case, gen_prompt)]
    reference = AutoTokenizer.from_pretrained(template_dirs[name])
    assert reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt,
                                         enable_thinking=False) == rendered  # fmt: skip
    enc = tok.encode_chat(messages, add_generation_prompt=gen_prompt)
    assert tok.decode(enc.ids) == rendered
    for span in enc.spans:
        assert tok.decode(enc.ids[span.content_start : span.content_end]) == span.content
        assert len(span.offsets) == span.content_end - span.content_start  # what step detection reads
        assert "".join(span.content[a:b] for a, b in span.offsets) == span.content
    trained = tok.decode([i for i, m in zip(enc.ids, enc.assistant_mask, strict=True) if m])
    end_of_turn = "<|endoftext|>" if name == "olmo2" else "<|im_end|>"
    assistant = [s.content for s in enc.spans if s.role == "assistant"]
    assert trained == "".join(c + end_of_turn for c in assistant)  # content + end of turn, never the think glue


def test_qwen3_and_olmo2_special_tokens_and_stops(template_dirs):
    qwen3, olmo2 = Tokenizer.from_dir(template_dirs["qwen3"]), Tokenizer.from_dir(template_dirs["olmo2"])
    assert qwen3.stop_ids == [qwen3.token_to_id("<|im_end|>")] and qwen3.pad_id == qwen3.token_to_id("<|endoftext|>")
    assert olmo2.bos_id == olmo2.eos_id == olmo2.token_to_id("<|endoftext|>")
    assert olmo2.stop_ids == [olmo2.eos_id] and olmo2.pad_id == olmo2.token_to_id("<|pad|>")
    with pytest.raises(ValueError, match="olmo2 template: role 'tool' is not supported"):
        olmo2.render_chat([{"role": "tool", "content": "x"}])

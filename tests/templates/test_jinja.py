"""The Jinja path (jepa/templates/jinja.py): any tokenizer's own chat template, against transformers.

The fixtures are the published chat templates of Mistral-Instruct v0.3, Phi-3-mini, Gemma-2-it, Gemma-3-it,
Llama-2-chat, Zephyr and DeepSeek-R1-Distill-Qwen (tool-calling branches left out: no tools are exercised), each
over a tiny byte-level vocabulary holding that family's special tokens. transformers renders and tokenizes the
same directory; our ids must be its ids, our masks its `return_assistant_tokens_mask` where the template has
generation markers, else the mask written out by hand below.
"""

import json
import warnings

import pytest

from jepa.data.layouts import step_token_ranges
from jepa.templates.jinja import ChatTemplateError
from jepa.tokenizer import Tokenizer
from tests.test_tokenizer import OLMO2_JINJA, QWEN3_JINJA, QWEN25_JINJA, build_byte_level_dir

MISTRAL_V03 = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{%- endif %}"
    "{%- if message['role'] == 'user' %}{%- if loop.last and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token}}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported, with the exception of an "
    "initial optional system message!') }}{%- endif %}{%- endfor %}"
)
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
# Phi-3's template with transformers' generation markers around what the model writes: the reference mask.
PHI3_MARKED = PHI3.replace(
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}",
    "{{'<|assistant|>\n'}}{% generation %}{{message['content'] + '<|end|>'}}{% endgeneration %}{{'\n'}}",
)
GEMMA2 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
GEMMA3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
R1_DISTILL = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}"
    "{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor -%}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)
# Llama-3.2's template with the tool branches left out: the hand-written llama3 must agree with it.
LLAMA32 = (
    "{{- bos_token }}{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    '{%- set date_string = strftime_now("%d %b %Y") %}{%- else %}{%- set date_string = "26 Jul 2024" %}'
    "{%- endif %}{%- endif %}{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}{%- else %}"
    '{%- set system_message = "" %}{%- endif %}{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}'
    '{{- "Cutting Knowledge Date: December 2023\\n" }}{{- "Today Date: " + date_string + "\\n\\n" }}'
    '{{- system_message }}{{- "<|eot_id|>" }}{%- for message in messages %}'
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
    "'<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
FAMILIES = {  # name -> (special tokens, tokenizer_config.json)
    "mistral_v0.3": (["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
                     {"chat_template": MISTRAL_V03, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
    "phi3": (["<unk>", "<s>", "<|endoftext|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"],
             {"chat_template": PHI3, "bos_token": "<s>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
    "phi3_marked": (["<unk>", "<s>", "<|endoftext|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"],
                    {"chat_template": PHI3_MARKED, "bos_token": "<s>", "eos_token": "<|endoftext|>"}),
    "gemma2": (["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
               {"chat_template": GEMMA2, "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}),
    "gemma3": (["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>"],
               {"chat_template": GEMMA3, "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}),
    "llama2": (["<unk>", "<s>", "</s>"], {"chat_template": LLAMA2, "bos_token": "<s>", "eos_token": "</s>"}),
    "zephyr": (["<unk>", "<s>", "</s>"], {"chat_template": ZEPHYR, "bos_token": "<s>", "eos_token": "</s>"}),
    "r1_distill": (["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"],
                   {"chat_template": R1_DISTILL, "bos_token": "<｜begin▁of▁sentence｜>",
                    "eos_token": "<｜end▁of▁sentence｜>"}),
}  # fmt: skip
STEPS = "First, 2 + 2 = 4.\n\nThen 4 * 3 = 12.\n\nSo the answer is 12."
CONVERSATIONS = {
    "plain": [{"role": "user", "content": "What is (2+2)*3?"}, {"role": "assistant", "content": STEPS}],
    "with_system": [{"role": "system", "content": "  You are terse.\n"}, {"role": "user", "content": "Hello there! "},
                    {"role": "assistant", "content": " It is 4. "}],
    "multi_turn": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."},
                   {"role": "user", "content": "What is (2+2)*3?"}, {"role": "assistant", "content": STEPS}],
}  # fmt: skip
# What the Jinja path refuses, and the reason in its one line; transformers renders these (or raises for Gemma-2).
REFUSED = {
    ("mistral_v0.3", "with_system", False): r"it drops the content of messages\[0\] \(system\)",  # v0.3 shows it
    # only in the last user turn, so a trained-on conversation loses it
}
# The hand-checked end of each family's assistant turn: what the mask holds after the content.
END_OF_TURN = {"mistral_v0.3": "</s>", "phi3": "<|end|>", "phi3_marked": "<|end|>", "gemma2": "<end_of_turn>",
               "gemma3": "<end_of_turn>", "llama2": " </s>", "zephyr": "</s>",
               "r1_distill": "<｜end▁of▁sentence｜>"}  # fmt: skip


def merged_system(messages):
    """What the official LLM-JEPA code feeds Gemma, and what a template that refuses the system role is given."""
    if messages[0]["role"] != "system":
        return messages
    return [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}, *messages[2:]]


def write_family(path, specials, config):
    build_byte_level_dir(path, specials)
    (path / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "PreTrainedTokenizerFast"}))
    return path


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    return {name: write_family(tmp_path_factory.mktemp(name), *spec) for name, spec in FAMILIES.items()}


@pytest.fixture(scope="module")
def references(family_dirs):
    from transformers import AutoTokenizer

    return {name: AutoTokenizer.from_pretrained(path) for name, path in family_dirs.items()}


def reference_ids(reference, messages, add_generation_prompt, mask=False):
    out = reference.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        add_generation_prompt=add_generation_prompt,
                                        return_assistant_tokens_mask=mask)  # fmt: skip
    return list(out["input_ids"]), list(out["assistant_masks"]) if mask else None


def load(path) -> Tokenizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # R1-Distill's generation prompt warning: tested on its own below
        return Tokenizer.from_dir(path)


@pytest.mark.parametrize("gen_prompt", [False, True])
@pytest.mark.parametrize("case", list(CONVERSATIONS))
@pytest.mark.parametrize("name", list(FAMILIES))
def test_ids_and_masks_equal_transformers(family_dirs, references, name, case, gen_prompt):
    tok = load(family_dirs[name])
    assert tok.chat_template == "jinja"
    messages = CONVERSATIONS[case][:-1] if gen_prompt else CONVERSATIONS[case]
    if (name, case, gen_prompt) in REFUSED:
        with pytest.raises(ChatTemplateError, match=REFUSED[(name, case, gen_prompt)]) as refusal:
            tok.encode_chat(messages, add_generation_prompt=gen_prompt)
        assert "\n" not in str(refusal.value)
        return
    given = messages
    if name == "gemma2" and messages[0]["role"] == "system":  # transformers raises "System role not supported"
        with pytest.raises(Exception, match="System role not supported"):
            reference_ids(references[name], messages, gen_prompt)
        given = merged_system(messages)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        enc = tok.encode_chat(messages, add_generation_prompt=gen_prompt)
    assert any("prepended to the first user message" in str(w.message) for w in warned) == (given is not messages)
    ids, marked = reference_ids(references[name], given, gen_prompt, mask=name == "phi3_marked")
    assert enc.ids == ids
    assert tok.render_chat(messages, add_generation_prompt=gen_prompt) == references[name].apply_chat_template(
        given, tokenize=False, add_generation_prompt=gen_prompt
    )
    if marked is not None:
        assert enc.assistant_mask == [bool(m) for m in marked]
    # by hand: the mask is each assistant turn's content tokens and then its end of turn, nothing else
    assistants = [s for s in enc.spans if s.role == "assistant"]
    expected = [False] * len(enc.ids)
    for span in assistants:
        end = span.content_end + len(tok.encode(END_OF_TURN[name]))
        assert tok.decode(enc.ids[span.content_end : end]) == END_OF_TURN[name]
        expected[span.content_start : end] = [True] * (end - span.content_start)
    assert enc.assistant_mask == expected
    for span, message in zip(enc.spans, given, strict=True):
        assert span.role == message["role"] and span.content.strip() == message["content"].strip()
        assert len(span.offsets) == span.content_end - span.content_start
        assert span.content in tok.decode(enc.ids[span.content_start : span.content_end])
    if not gen_prompt and messages[-1]["content"] == STEPS:  # steps are found in the content only
        ranges = step_token_ranges(enc)
        assert len(ranges) == 3
        for (first, last), step in zip(ranges, STEPS.split("\n\n"), strict=True):
            assert step in tok.decode(enc.ids[first : last + 1])
            assert first >= assistants[-1].content_start and last < assistants[-1].content_end


def test_stop_tokens_are_the_end_of_turn_and_eos(family_dirs):
    for name, end in END_OF_TURN.items():
        tok = load(family_dirs[name])
        assert tok.stop_ids == list(dict.fromkeys([tok.token_to_id(end.strip()), tok.eos_id])), name


def test_hand_written_templates_agree_with_their_jinja(tmp_path, smollm2_dir):
    """The hand-written templates and the Jinja path: the same ids, masks and assistant contents."""
    from tests.test_tokenizer import LLAMA3_SPECIALS

    dirs = {"chatml": smollm2_dir}
    for name, specials, source in (
        ("llama3", LLAMA3_SPECIALS, LLAMA32),
        ("chatml", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], QWEN25_JINJA),
        ("olmo2", ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"], OLMO2_JINJA),
    ):
        bos = {"olmo2": "<|endoftext|>", "llama3": "<|begin_of_text|>"}.get(name)
        eos = {"llama3": "<|eot_id|>", "chatml": "<|im_end|>"}.get(name, "<|endoftext|>")
        config = {"chat_template": source, "bos_token": bos, "eos_token": eos}
        dirs[name + "_fixture"] = write_family(tmp_path / name, specials, config)
    checked = 0
    for name, path in dirs.items():
        hand, jinja = Tokenizer.from_dir(path), Tokenizer.from_dir(path, chat_template="jinja")
        assert hand.chat_template == name.removesuffix("_fixture") and hand.stop_ids[0] == jinja.stop_ids[0]
        for messages in CONVERSATIONS.values():
            for gen_prompt in (False, True):
                convo = messages[:-1] if gen_prompt else messages
                if name.startswith("chatml") and convo[0]["content"].startswith(" "):
                    continue  # the documented piecewise divergence: a ChatML content starting with whitespace
                a, b = hand.encode_chat(convo, gen_prompt), jinja.encode_chat(convo, gen_prompt)
                assert a.ids == b.ids and a.assistant_mask == b.assistant_mask, (name, convo)
                assistant = [(s.content_start, s.content_end, s.content) for s in a.spans if s.role == "assistant"]
                assert assistant == [(s.content_start, s.content_end, s.content) for s in b.spans
                                     if s.role == "assistant"]  # fmt: skip
                checked += 1
    assert checked >= 16


def test_a_template_that_rewrites_earlier_turns_is_refused_with_one_line(tmp_path):
    """Qwen3's drops the think block of past turns: refused by the Jinja path (the hand-written qwen3 claims it)."""
    path = write_family(tmp_path, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
                        {"chat_template": QWEN3_JINJA, "eos_token": "<|im_end|>"})  # fmt: skip
    assert Tokenizer.from_dir(path).chat_template == "qwen3"
    with pytest.raises(ChatTemplateError, match=r"tokenizer_config.json: chat template: rendering 3 messages "
                                                r"rewrites the first 2") as refusal:  # fmt: skip
        Tokenizer.from_dir(path, chat_template="jinja")
    assert "\n" not in str(refusal.value)


def test_a_content_the_template_edits_is_refused_with_one_line(family_dirs, references):
    """R1-Distill drops what precedes </think>: that conversation is refused, naming the message; plain is fine."""
    tok = load(family_dirs["r1_distill"])
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHello."}]
    assert "hm" not in references["r1_distill"].apply_chat_template(messages, tokenize=False)
    with pytest.raises(ChatTemplateError, match=r"messages\[1\] \(assistant\) is not rendered as its content"):
        tok.encode_chat(messages)
    with pytest.warns(UserWarning, match=r"generation prompt '<｜Assistant｜><think>\\n' is not how it opens"):
        Tokenizer.from_dir(family_dirs["r1_distill"])


@pytest.mark.parametrize(
    "source,reason",
    [
        ("{% for m in messages %}{{ m['content'] }}{% endfor", "Jinja syntax error on line 1"),
        ("{{ raise_exception('no chat here') }}", "chat template: no chat here"),
        (
            "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}",
            "no special token closes the assistant turn",
        ),
        ("{% for m in messages %}{{ m['content'] + m['content'] + '</s>' }}{% endfor %}", "repeats or reorders"),
        ("{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}", "drops"),
    ],
)
def test_an_unusable_template_is_refused_with_one_line_naming_the_file(tmp_path, source, reason):
    path = write_family(tmp_path, ["<unk>", "<s>", "</s>"], {"chat_template": source, "eos_token": "</s>"})
    with pytest.raises(ChatTemplateError, match=f"tokenizer_config.json: .*{reason}") as refusal:
        Tokenizer.from_dir(path)
    assert "\n" not in str(refusal.value)


def test_chat_template_jinja_file_wins_and_a_template_list_gives_default(tmp_path, family_dirs):
    templates = [
        {"name": "tool_use", "template": "{{ raise_exception('x') }}"},
        {"name": "default", "template": ZEPHYR},
    ]
    listed = write_family(tmp_path / "listed", FAMILIES["zephyr"][0], {"chat_template": templates, "eos_token": "</s>"})
    assert Tokenizer.from_dir(listed).render_chat(CONVERSATIONS["plain"][:1]) == "<|user|>\nWhat is (2+2)*3?</s>\n"
    (listed / "chat_template.jinja").write_text(PHI3.replace("<|end|>", "</s>"))
    assert Tokenizer.from_dir(listed).render_chat(CONVERSATIONS["plain"][:1]) == "<|user|>\nWhat is (2+2)*3?</s>\n</s>"


@pytest.mark.parametrize("name", ["gemma2", "mistral_v0.3", "phi3", "llama2"])
def test_every_chat_mode_lays_out_through_the_jinja_path(family_dirs, name):
    """Labels, steps, the jepa views and the STP path all read the Jinja encoding; a template that needs a user
    turn first gets the Code view as a user message (the official code's Gemma treatment)."""
    from jepa.data.layouts import LayoutConfig, build_chat_row
    from jepa.losses import IGNORE_INDEX

    tok = load(family_dirs[name])
    record = CONVERSATIONS["plain"]
    enc = tok.encode_chat(record)
    lm = build_chat_row(record, tok, LayoutConfig(mode="regular", predictors=0))
    trained = [enc.ids[t + 1] for t, m in enumerate(enc.assistant_mask[1:]) if m]
    assert [label for label in lm.labels if label != IGNORE_INDEX] == trained  # labels = the mask, shifted
    step = build_chat_row(record, tok, LayoutConfig(mode="step", predictors=2))
    first_step, second_step = step_token_ranges(enc)[:2]
    target = step.input_ids[step.jepa_pairs[0][1] - (second_step[1] - second_step[0]) : step.jepa_pairs[0][1] + 1]
    assert tok.decode(target).strip() == STEPS.split("\n\n")[1]
    jepa = build_chat_row(record, tok, LayoutConfig(mode="jepa", predictors=1))
    code_view = [i for i, s in zip(jepa.input_ids, jepa.segment_ids, strict=True) if s == jepa.segment_ids[-1]]
    assert STEPS in tok.decode(code_view) and tok.decode([jepa.input_ids[jepa.jepa_pairs[0][1]]]) in STEPS
    stp = build_chat_row(record, tok, LayoutConfig(mode="stp"))
    assert stp.stp_paths and stp.stp_paths[0].length >= 2

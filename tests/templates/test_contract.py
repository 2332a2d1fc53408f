"""The content contract of every registered chat template (jepa/templates/base.py), and the registry itself.

Step detection reads a span's `content` and `offsets`; these properties are what it relies on, checked for each
template in TEMPLATES, so a new template is held to them without a new test.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from jepa.data.layouts import step_token_ranges
from jepa.templates import TEMPLATES, ChatLayout, ChatTemplate, Piece, detect_template, register_template
from jepa.tokenizer import Tokenizer
from tests.test_tokenizer import build_byte_level_dir

EVERY_SPECIAL = ["<|endoftext|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                 "<|eot_id|>", "<|eom_id|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|system|>",
                 "<|user|>", "<|assistant|>", "### "]  # fmt: skip
STEPS = ["First, 2 + 2 = 4.", "Then 4 * 3 = 12.", "So the answer is 12."]
CONVERSATIONS = {
    "steps": [{"role": "user", "content": "What is (2+2)*3?"}, {"role": "assistant", "content": "\n\n".join(STEPS)}],
    "padded": [{"role": "system", "content": "  Be terse.\n"}, {"role": "user", "content": " Hi there \n"},
               {"role": "assistant", "content": "\n" + "\n\n".join(STEPS) + "  "}],
    "multi_turn": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."},
                   {"role": "user", "content": "And (2+2)*3?"},
                   {"role": "assistant", "content": "<think>\nadd, then multiply\n</think>\n\n" + "\n\n".join(STEPS)}],
}  # fmt: skip


@pytest.fixture(scope="module")
def vocabulary_dir(tmp_path_factory):
    return build_byte_level_dir(tmp_path_factory.mktemp("every_special"), EVERY_SPECIAL)


@contextmanager
def registered(cls: type[ChatTemplate]) -> Iterator[type[ChatTemplate]]:
    """Register a throwaway template for one test and remove it after."""
    register_template(cls)
    try:
        yield cls
    finally:
        del TEMPLATES[cls.name]


class Hashes(ChatTemplate):
    """A throwaway template, as a researcher would add one: ``### {role}\\n{content}<|endoftext|>`` per message.

    Declaring it is all it takes: detection, stop ids, bos/eos defaults and the content contract follow."""

    name = "hashes"
    priority = 5
    stop_tokens = ("<|endoftext|>",)
    eos_candidates = ("<|endoftext|>",)

    @classmethod
    def detects(cls, vocabulary, jinja_source):
        return "### {{ message['role'] }}" in jinja_source

    def pieces(self, messages, add_generation_prompt):
        layout = ChatLayout()
        for message in messages:
            span = layout.open_span(message["role"], message["content"].strip())
            layout.pieces += [Piece("### ", special=True, span=span), Piece(message["role"] + "\n", span=span),
                              Piece(message["content"].strip(), span=span, is_content=True),
                              Piece("<|endoftext|>", special=True, span=span, is_end_of_turn=True)]  # fmt: skip
        if add_generation_prompt:
            layout.pieces += [Piece("### ", special=True), Piece("assistant\n")]
        return layout


def check_content_contract(tok: Tokenizer, messages: list[dict]) -> None:
    enc = tok.encode_chat(messages)
    assert len(enc.ids) == len(enc.assistant_mask)
    # the spans of the messages are the last ones (a template may insert a system span before them)
    assert len(enc.spans) >= len(messages)
    expected_mask = [False] * len(enc.ids)
    for span, message in zip(enc.spans[-len(messages) :], messages, strict=True):
        assert span.role == message["role"]
        raw = message["content"]
        # the template may trim around a content or move a think block out of it, never edit inside it
        assert span.content.strip() in (raw.strip(), raw.split("</think>")[-1].strip())
        content_ids = enc.ids[span.content_start : span.content_end]
        assert tok.decode(content_ids) == span.content
        assert len(span.offsets) == len(content_ids)
        assert "".join(span.content[a:b] for a, b in span.offsets) == span.content
        assert span.start <= span.content_start <= span.content_end < span.end
        if span.role == "assistant":
            assert enc.ids[span.content_end] in tok.stop_ids  # the end-of-turn token follows the content
            expected_mask[span.content_start : span.content_end + 1] = [True] * (len(content_ids) + 1)
    assert enc.assistant_mask == expected_mask  # content + end of turn of every assistant turn, nothing else
    if messages[-1]["content"].count("\n\n") >= 2:  # the step separators survive: the steps are found
        paragraphs = [p.strip() for p in enc.spans[-1].content.split("\n\n") if p.strip()]
        assert paragraphs[-len(STEPS) :] == STEPS  # a kept think block is one more paragraph before them
        ranges = step_token_ranges(enc)
        assert len(ranges) == len(paragraphs)
        for (first, last), step in zip(ranges, paragraphs, strict=True):
            assert step in tok.decode(enc.ids[first : last + 1])


@pytest.mark.parametrize("case", list(CONVERSATIONS))
@pytest.mark.parametrize("name", [name for name in TEMPLATES if name != "jinja"])  # jinja: test_jinja.py
def test_every_template_keeps_the_content_contract(vocabulary_dir, name, case):
    tok = Tokenizer.from_dir(vocabulary_dir, chat_template=name)
    check_content_contract(tok, CONVERSATIONS[case])


def test_detection_follows_priority():
    vocabulary = {token: i for i, token in enumerate(EVERY_SPECIAL)}
    assert detect_template(vocabulary, "") == "llama3"  # the lowest priority that recognises it
    chatml_only = {"<|im_start|>": 0, "<|im_end|>": 1}
    assert detect_template(chatml_only, "") == "chatml"
    assert detect_template({**chatml_only, "<think>": 2}, "") == "qwen3"  # tried before the ChatML it extends
    assert detect_template({"<|endoftext|>": 0}, "") is None


def test_a_new_template_is_one_declaration(vocabulary_dir, tmp_path):
    with registered(Hashes):
        (vocabulary_dir / "tokenizer_config.json").write_text('{"chat_template": "### {{ message[\'role\'] }}"}')
        try:
            tok = Tokenizer.from_dir(vocabulary_dir)
        finally:
            (vocabulary_dir / "tokenizer_config.json").unlink()
        assert tok.chat_template == "hashes" and tok.eos_id == tok.token_to_id("<|endoftext|>")
        assert tok.render_chat(CONVERSATIONS["steps"][:1], add_generation_prompt=True) == (
            "### user\nWhat is (2+2)*3?<|endoftext|>### assistant\n"
        )
        for messages in CONVERSATIONS.values():
            check_content_contract(tok, messages)
        with pytest.raises(ValueError, match="registered twice"):
            register_template(Hashes)
    assert "hashes" not in TEMPLATES


def test_a_template_that_edits_content_breaks_the_contract(vocabulary_dir):
    """The contract check can fail: a template that rewrites separators inside a content is caught."""

    class Squash(Hashes):
        name = "squash"

        def pieces(self, messages, add_generation_prompt):
            squashed = [{**m, "content": m["content"].replace("\n\n", " ")} for m in messages]
            return super().pieces(squashed, add_generation_prompt)

    with registered(Squash):
        tok = Tokenizer.from_dir(vocabulary_dir, chat_template="squash")
        with pytest.raises(AssertionError):
            check_content_contract(tok, CONVERSATIONS["steps"])

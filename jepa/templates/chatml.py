"""ChatML (SmolLM2, Qwen2 / Qwen2.5) and Qwen3, which extends it with a thinking block.

- ``chatml``: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, content untrimmed; the Jinja template's
  default system message when the first message is not a system message (SmolLM2: "You are a helpful AI assistant
  named SmolLM, trained by Hugging Face"; Qwen2.5: "You are Qwen, created by Alibaba Cloud. You are a helpful
  assistant."); generation prompt ``<|im_start|>assistant\\n``. The "\\n" after ``<|im_end|>`` is glue between
  turns, outside every span and the assistant mask.
- ``qwen3``: ChatML without a default system message. An assistant turn after the last user message carries its
  thinking block: ``<|im_start|>assistant\\n<think>\\n{reasoning}\\n</think>\\n\\n{content}`` where the reasoning is
  what a ``<think>...</think>`` inside the content held (empty for plain answers, as in training data without
  reasoning); earlier assistant turns drop it. The think block is template glue, outside the content and the
  assistant mask, and the generation prompt is the non-thinking one (Qwen3's ``enable_thinking=False``), so a model
  trained on plain answers is asked for plain answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from jepa.templates.base import ChatLayout, ChatTemplate, Piece, register_template

# SmolLM2's and Qwen2.5's Jinja templates insert "<|im_start|>system\n...<|im_end|>" (a literal, no Jinja inside)
# when no system message is given.
DEFAULT_SYSTEM_LITERAL = re.compile(r"<\|im_start\|>system(?:\n|\\n)([^'\"{}%<]*?)<\|im_end\|>")


class _ChatMLFamily(ChatTemplate):
    """The turn layout both share; `think_block` says what glue (if any) opens an assistant turn's content."""

    stop_tokens = ("<|im_end|>",)
    eos_candidates = ("<|im_end|>",)
    generation_glue: tuple[Piece, ...] = ()

    def think_block(
        self, index: int, last_query: int, messages: Sequence[Mapping[str, str]]
    ) -> tuple[str, list[Piece]]:
        """(content as rendered, the glue pieces between the header and the content) of assistant message `index`."""
        return messages[index]["content"], []

    def pieces(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> ChatLayout:
        layout = ChatLayout()
        system = self.context.default_system_message
        if messages[0]["role"] != "system" and system is not None:
            messages = [{"role": "system", "content": system}, *messages]
        last_query = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
        for index, message in enumerate(messages):
            role, content = message["role"], message["content"]
            glue: list[Piece] = []
            if role == "assistant":
                content, glue = self.think_block(index, last_query, messages)
            span = layout.open_span(role, content)
            layout.pieces += [Piece("<|im_start|>", special=True, span=span), Piece(role + "\n", span=span)]
            layout.pieces += [Piece(p.text, special=p.special, span=span) for p in glue]
            layout.pieces.append(Piece(content, span=span, is_content=True))
            layout.pieces.append(Piece("<|im_end|>", special=True, span=span, is_end_of_turn=True))
            layout.pieces.append(Piece("\n"))  # glue between turns: outside the span and the assistant mask
        if add_generation_prompt:
            layout.pieces += [Piece("<|im_start|>", special=True), Piece("assistant\n"), *self.generation_glue]
        return layout


@register_template
class ChatML(_ChatMLFamily):
    name = "chatml"
    priority = 90  # the generic one: after every template that extends it

    @classmethod
    def detects(cls, vocabulary: Mapping[str, int], jinja_source: str) -> bool:
        return "<|im_start|>" in vocabulary

    @classmethod
    def default_system_message(cls, jinja_source: str) -> str | None:
        match = DEFAULT_SYSTEM_LITERAL.search(jinja_source)
        return match.group(1) if match else None


@register_template
class Qwen3(_ChatMLFamily):
    name = "qwen3"
    priority = 30
    generation_glue = (Piece("<think>", special=True), Piece("\n\n"), Piece("</think>", special=True), Piece("\n\n"))

    @classmethod
    def detects(cls, vocabulary: Mapping[str, int], jinja_source: str) -> bool:
        return "<|im_start|>" in vocabulary and "<think>" in vocabulary

    def think_block(
        self, index: int, last_query: int, messages: Sequence[Mapping[str, str]]
    ) -> tuple[str, list[Piece]]:
        content, reasoning = messages[index]["content"], ""
        if "</think>" in content:
            head, content = content.split("</think>")[0], content.split("</think>")[-1].lstrip("\n")
            reasoning = head.rstrip("\n").split("<think>")[-1].lstrip("\n")
        if index > last_query and (index == len(messages) - 1 or reasoning):
            glue = [Piece("<think>", special=True), Piece("\n" + reasoning.strip("\n") + "\n"),
                    Piece("</think>", special=True), Piece("\n\n")]  # fmt: skip
            return content.lstrip("\n"), glue
        return content, []

"""Llama-3.1 / 3.2 Instruct, reproducing the official Jinja template for plain text messages (no tools)::

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n
    Cutting Knowledge Date: December 2023\\nToday Date: {date_string}\\n\\n{system content | trim}<|eot_id|>
    <|start_header_id|>{role}<|end_header_id|>\\n\\n{content | trim}<|eot_id|>   (per later message)
    <|start_header_id|>assistant<|end_header_id|>\\n\\n                            (generation prompt)

The system block is always present (empty content without a system message). The date is fixed by `date_string`
instead of today's date so runs are reproducible. `| trim` is Python's str.strip().
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jepa.templates.base import ChatLayout, ChatTemplate, Piece, register_template

KNOWLEDGE_CUTOFF = "December 2023"


@register_template
class Llama3(ChatTemplate):
    name = "llama3"
    priority = 10
    stop_tokens = ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>")
    bos_candidates = ("<|begin_of_text|>",)
    eos_candidates = ("<|eot_id|>", "<|end_of_text|>")

    @classmethod
    def detects(cls, vocabulary: Mapping[str, int], jinja_source: str) -> bool:
        return "<|start_header_id|>" in vocabulary

    def pieces(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> ChatLayout:
        layout = ChatLayout([Piece("<|begin_of_text|>", special=True)])

        def block(role: str, content: str, preamble: str = "") -> None:
            span = layout.open_span(role, content)
            layout.pieces.extend([
                Piece("<|start_header_id|>", special=True, span=span),
                Piece(role, span=span),
                Piece("<|end_header_id|>", special=True, span=span),
                Piece("\n\n" + preamble, span=span),
                Piece(content, span=span, is_content=True),
                Piece("<|eot_id|>", special=True, span=span, is_end_of_turn=True),
            ])  # fmt: skip

        system_content = ""
        if messages[0]["role"] == "system":
            system_content, messages = messages[0]["content"].strip(), messages[1:]
        date = self.context.date_string
        block("system", system_content, preamble=f"Cutting Knowledge Date: {KNOWLEDGE_CUTOFF}\nToday Date: {date}\n\n")
        for message in messages:
            if message["role"] in ("tool", "ipython") or "tool_calls" in message:
                raise ValueError(f"llama3 template: tool messages are not supported (role {message['role']!r})")
            block(message["role"], message["content"].strip())
        if add_generation_prompt:
            layout.pieces += [Piece("<|start_header_id|>", special=True), Piece("assistant"),
                              Piece("<|end_header_id|>", special=True), Piece("\n\n")]  # fmt: skip
        return layout

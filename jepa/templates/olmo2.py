"""OLMo-2 Instruct (the Tulu 3 format): ``{bos}`` then ``<|system|>\\n{content}\\n``, ``<|user|>\\n{content}\\n``,
``<|assistant|>\\n{content}{eos}`` (+ ``\\n`` unless it is the last message); generation prompt ``<|assistant|>\\n``.
The role markers are single tokens where the vocabulary has them, else text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jepa.templates.base import ChatLayout, ChatTemplate, Piece, register_template


@register_template
class Olmo2(ChatTemplate):
    name = "olmo2"
    priority = 20
    bos_candidates = ("<|endoftext|>",)
    eos_candidates = ("<|endoftext|>",)

    @classmethod
    def detects(cls, vocabulary: Mapping[str, int], jinja_source: str) -> bool:
        return "<|assistant|>" in jinja_source or "<|assistant|>" in vocabulary

    def pieces(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> ChatLayout:
        bos, eos = self.context.bos_token, self.context.eos_token
        if bos is None or eos is None:
            raise ValueError("olmo2 template: the tokenizer needs a bos_token and an eos_token")
        layout = ChatLayout([Piece(bos, special=True)])

        def marker(role: str, span: int | None) -> Piece:  # one token where the vocabulary has it
            text = f"<|{role}|>"
            return Piece(text, special=self.context.in_vocabulary(text), span=span)

        for index, message in enumerate(messages):
            role, content = message["role"], message["content"]
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"olmo2 template: role {role!r} is not supported (system, user, assistant)")
            span = layout.open_span(role, content)
            layout.pieces += [marker(role, span), Piece("\n", span=span), Piece(content, span=span, is_content=True)]
            if role == "assistant":
                layout.pieces.append(Piece(eos, special=True, span=span, is_end_of_turn=True))
                if index < len(messages) - 1:
                    layout.pieces.append(Piece("\n"))
            else:
                layout.pieces.append(Piece("\n", span=span))
        if add_generation_prompt:
            layout.pieces += [marker("assistant", None), Piece("\n")]
        return layout

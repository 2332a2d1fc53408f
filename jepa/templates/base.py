"""The chat-template contract: what one template declares, and the registry that picks one.

A template is one small class (a registered unit): the special tokens it stops on, its usual bos/eos, how it is
recognised from a tokenizer directory, its default system message, and `pieces`, which lays a conversation out as
pieces. The tokenizer encodes every piece on its own (special tokens by id), so token boundaries never cross a
piece and content offsets are exact.

The content contract that step detection relies on (`jepa.data.layouts.step_token_ranges` reads `content` and
`offsets` of the assistant span) holds for every registered template and is tested for each
(tests/templates/test_contract.py):

- a span's content tokens decode to exactly its `content`, and their character offsets tile `content`;
- `content` is the message's content with at most surrounding whitespace removed (or, for a thinking template, the
  think block moved out into template glue): the template never edits the inside of a content, so separators such
  as "\\n\\n" between reasoning steps stay where the data put them;
- the assistant mask covers an assistant span's content and its end-of-turn token, and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class Piece:
    """A unit of a rendered chat: one special token (encoded by id) or a text encoded on its own.

    `span` indexes the message span it belongs to (None: glue outside every span); `is_content` marks the
    message's content, `is_end_of_turn` the token that closes an assistant turn (both trained on for assistants).
    """

    text: str
    special: bool = False
    span: int | None = None
    is_content: bool = False
    is_end_of_turn: bool = False


@dataclass
class ChatLayout:
    """What `ChatTemplate.pieces` returns: the pieces in order and, per span, (role, content as rendered)."""

    pieces: list[Piece] = field(default_factory=list)
    spans: list[tuple[str, str]] = field(default_factory=list)

    def open_span(self, role: str, content: str) -> int:
        """Start a message span; returns its index for the pieces that belong to it."""
        self.spans.append((role, content))
        return len(self.spans) - 1


@dataclass(frozen=True)
class TemplateContext:
    """What a template may read from its tokenizer: the fixed date of Llama-3's system block, the default
    system message (read from the tokenizer's Jinja template), the special-token strings, a vocabulary lookup,
    and for the Jinja path the template source and every special (added) token string."""

    date_string: str = "26 Jul 2024"
    default_system_message: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None
    in_vocabulary: Callable[[str], bool] = lambda token: False
    jinja_source: str = ""
    special_tokens: tuple[str, ...] = ()


class ChatTemplate:
    """One chat template. Subclasses set the class attributes and implement `pieces`; `@register_template`
    adds them to TEMPLATES.

    `priority`: detection order (lower first), so a specific template (Qwen3) is tried before the generic one it
    extends (ChatML). `stop_tokens`: the tokens that end a generated turn (those in the vocabulary are used,
    plus eos). `bos_candidates` / `eos_candidates`: the usual bos/eos, the first in the vocabulary wins, used
    when no tokenizer_config.json names them.
    """

    name: ClassVar[str]
    priority: ClassVar[int] = 50
    stop_tokens: ClassVar[tuple[str, ...]] = ()
    bos_candidates: ClassVar[tuple[str, ...]] = ()
    eos_candidates: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: TemplateContext) -> None:
        self.context = context

    @classmethod
    def detects(cls, vocabulary: Mapping[str, int], jinja_source: str) -> bool:
        """Whether a tokenizer with this vocabulary and tokenizer_config.json template source uses this template."""
        return False

    @classmethod
    def default_system_message(cls, jinja_source: str) -> str | None:
        """The system message the Jinja template inserts when the conversation has none (None: it inserts none)."""
        return None

    def turn_stop_tokens(self) -> tuple[str, ...]:
        """The tokens that end a generated turn (the class's `stop_tokens`; the Jinja template finds its own)."""
        return self.stop_tokens

    def pieces(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> ChatLayout:
        """The conversation as pieces; `messages` are validated {"role", "content"} dicts, never empty."""
        raise NotImplementedError


TEMPLATES: dict[str, type[ChatTemplate]] = {}


def register_template(cls: type[ChatTemplate]) -> type[ChatTemplate]:
    """Class decorator: add a template to TEMPLATES under its `name` (a name taken twice is an error)."""
    if cls.name in TEMPLATES:
        raise ValueError(f"chat template {cls.name!r} is registered twice")
    TEMPLATES[cls.name] = cls
    return cls


def template_class(name: str) -> type[ChatTemplate]:
    """The registered template called `name`; an unknown name: ValueError listing the known ones."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown chat_template {name!r}; expected one of {tuple(TEMPLATES)}")
    return TEMPLATES[name]


def detect_template(vocabulary: Mapping[str, int], jinja_source: str) -> str | None:
    """The name of the first registered template (by priority) that recognises the tokenizer, else None."""
    for cls in sorted(TEMPLATES.values(), key=lambda c: c.priority):
        if cls.detects(vocabulary, jinja_source):
            return cls.name
    return None

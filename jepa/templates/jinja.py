"""The tokenizer's own Jinja chat template, for any chat model no hand-written template claims.

The template is rendered as transformers' `apply_chat_template` renders it (a sandboxed jinja2 environment with
`trim_blocks`, `lstrip_blocks`, `loopcontrols`, a `{% generation %}` tag, `raise_exception`, `strftime_now`, a
non-escaping `tojson`; variables `messages`, `tools=None`, `documents=None`, `add_generation_prompt`, the special
tokens by name and `date_string`, which fixes Llama-3's "Today Date" so data is reproducible). The tokenizer then
encodes the whole rendered string at once, as transformers does, so the ids are transformers' ids.

Where each message sits is recovered, not assumed:

- **Content**: the conversation is rendered once more with every content replaced by a unique sentinel; each
  sentinel must appear exactly once, in message order. The glue between sentinels is the template's own text, and
  the real rendering must be that glue with each content in place (as given, or with its surrounding whitespace
  stripped, as `| trim` does). A template that edits a content (DeepSeek-R1's drops the reasoning before
  ``</think>``) fails this for that conversation, with one line.
- **Message blocks**: the rendering of the first k messages must be a prefix of the rendering of the first k + 1
  (up to a closing text the template appends only at the very end, as Phi-3's eos), so message k's block is where
  the two part. A template that rewrites earlier turns as the conversation grows (Qwen3's and R1's drop past
  reasoning; Mistral v0.3's moves the system message to the last user turn) fails this and is refused with one
  line, unless a hand-written template claims the tokenizer first.
- **End of turn**: the first special token after an assistant content, inside that message's block (Mistral's
  ``</s>``, Gemma's ``<end_of_turn>``, Phi-3's ``<|end|>``). The assistant mask is the content plus that token, as
  for the hand-written templates; it is also what generation stops on. A template that closes an assistant turn
  with no special token is refused: there would be no end of turn to learn.

A message's content as rendered may be cut by a token that also holds template glue (Llama-2's ``' ' + content``
is one token ``" Hello"`` with a byte-level or SentencePiece vocabulary); such a token belongs to the content (it
overlaps it, the rule transformers' `return_assistant_tokens_mask` uses) and its character offsets are clipped to
the content.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from jepa.templates.base import ChatLayout, ChatTemplate, TemplateContext, register_template

SENTINEL = "\ue000{index}\ue001"  # private-use characters: no template or dataset writes them


class ChatTemplateError(ValueError):
    """A conversation (or the template itself) that the Jinja path cannot encode exactly; one line, says why."""


class TemplateRaised(ChatTemplateError):
    """The template itself refused the conversation (`raise_exception`, or an error inside it)."""


@dataclass(frozen=True)
class RenderedMessage:
    """One message in a RenderedChat; character ranges [start, end) into its `text`.

    `start`..`end`: the message's block (where the renderings of the conversation up to it and up to the message
    before it part; a content the template moves into a later block, as Llama-2 and Gemma-3 do with the system
    message, widens its own block to cover it). `content_start`..`content_end`: the content as rendered.
    `end_of_turn`: the range of the special token that closes an assistant turn (None for other roles).
    """

    role: str
    start: int
    end: int
    content_start: int
    content_end: int
    end_of_turn: tuple[int, int] | None


@dataclass(frozen=True)
class RenderedChat:
    """A conversation rendered by the Jinja template: the exact text and where each message lies in it."""

    text: str
    messages: list[RenderedMessage]


@dataclass(frozen=True)
class _Structure:
    """What the sentinel renderings tell about one sequence of roles: the glue between contents (len n + 1), each
    message's block as (start, end) character offsets into the sentinel rendering, and the end-of-turn token
    string of each assistant message with its offset into the glue after the content."""

    glue: list[str]
    block_starts: list[int]  # in the sentinel rendering
    block_ends: list[int]
    end_of_turn: list[tuple[int, str] | None]  # (offset into glue[i + 1], token string)


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask marker): renders its body unchanged.
    The mask here is recovered from the rendering instead (see the module docstring)."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return str(caller())


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:  # fmt: skip
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def compile_template(source: str) -> jinja2.Template:
    """The template compiled in a sandbox with the globals and filters chat templates expect."""
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return environment.from_string(source)


def render_source(
    compiled: jinja2.Template,
    context: TemplateContext,
    messages: Sequence[Mapping[str, str]],
    add_generation_prompt: bool,
) -> str:
    """`compiled` rendered with the variables transformers passes (special tokens by name) and `date_string`;
    a template error is one ChatTemplateError line."""
    variables: dict[str, Any] = {
        "messages": [dict(m) for m in messages],
        "tools": None,
        "documents": None,
        "add_generation_prompt": add_generation_prompt,
        "date_string": context.date_string,
    }
    for name, value in (("bos_token", context.bos_token), ("eos_token", context.eos_token),
                        ("pad_token", context.pad_token), ("unk_token", context.unk_token)):  # fmt: skip
        if value is not None:
            variables[name] = value
    try:
        return str(compiled.render(**variables))
    except jinja2.exceptions.TemplateError as exc:
        raise TemplateRaised(f"chat template: {exc}") from None


PROBES = (
    [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
     {"role": "assistant", "content": "Hi."}],
    [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."},
     {"role": "user", "content": "And 2 + 2?"}, {"role": "assistant", "content": "4."}],
)  # fmt: skip


def renders_as(template: ChatTemplate, compiled: jinja2.Template) -> bool:
    """Whether a hand-written template renders the probe conversations (no generation prompt) as the Jinja
    template does: False on the first that differs (detection by vocabulary alone would take Phi-3's <|assistant|>
    for OLMo-2). A probe the Jinja template refuses (Gemma-2's system message) is skipped; a source that renders
    no probe at all is not a chat template to compare with, and the hand-written one stands."""
    for messages in PROBES:
        try:
            expected = render_source(compiled, template.context, messages, add_generation_prompt=False)
        except ChatTemplateError:
            continue
        try:
            layout = template.pieces(messages, add_generation_prompt=False)
        except ValueError:
            return False
        if "".join(piece.text for piece in layout.pieces) != expected:
            return False
    return True


def _common_prefix(a: str, b: str, specials: Sequence[str]) -> int:
    """Length of the common prefix of a and b, moved back to the start of a special token it would cut
    ("<|endoftext|>" and "<|user|>" share "<|", which belongs to neither message)."""
    n = 0
    limit = min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    for token in specials:
        for q in range(max(0, n - len(token) + 1), n):
            if a.startswith(token, q) or b.startswith(token, q):
                n = min(n, q)
    return n


@register_template
class JinjaTemplate(ChatTemplate):
    """The tokenizer's Jinja template (see the module docstring); claims any tokenizer that ships one, after every
    hand-written template. Its `render` replaces `pieces`: the tokenizer encodes the rendered string whole."""

    name = "jinja"
    priority = 1000  # the last resort: hand-written templates are verified and keep their piecewise encoding

    @classmethod
    def detects(cls, vocabulary: Mapping[str, int], jinja_source: str) -> bool:
        return bool(jinja_source.strip())

    def __init__(self, context: TemplateContext) -> None:
        super().__init__(context)
        if not context.jinja_source.strip():
            raise ChatTemplateError("chat_template 'jinja': the tokenizer ships no Jinja chat template")
        try:
            self.compiled = compile_template(context.jinja_source)
        except jinja2.exceptions.TemplateSyntaxError as exc:
            raise ChatTemplateError(f"chat template: Jinja syntax error on line {exc.lineno}: {exc.message}") from None
        # Longest first, so a token is never taken for a shorter one it starts with.
        self.specials = sorted(context.special_tokens, key=len, reverse=True)
        self._structures: dict[tuple[tuple[str, ...], bool], _Structure] = {}
        self._closing = ""  # what the template appends only at the very end (Phi-3's eos), learnt from the probe
        self.merges_system = self._refuses_system()
        self._merge_announced = False
        probe = self._structure(("user", "assistant", "user", "assistant"), add_generation_prompt=False)
        self.end_of_turn_tokens = tuple(dict.fromkeys(e[1] for e in probe.end_of_turn if e is not None))
        self._check_generation_prompt(probe)

    def turn_stop_tokens(self) -> tuple[str, ...]:
        return self.end_of_turn_tokens

    def pieces(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> ChatLayout:
        raise NotImplementedError("the Jinja template renders whole strings: use render()")

    # ------------------------------------------------------------------------------------------- rendering
    def _refuses_system(self) -> bool:
        """Whether the template raises on a system message it would otherwise render (Gemma-2's "System role not
        supported")."""
        user = [{"role": "user", "content": "Hello"}]
        try:
            render_source(self.compiled, self.context, user, add_generation_prompt=True)
        except ChatTemplateError:
            return False
        try:
            render_source(self.compiled, self.context, [{"role": "system", "content": "Be brief."}, *user], True)
        except TemplateRaised:
            return True
        return False

    def conversation(self, messages: Sequence[Mapping[str, str]]) -> Sequence[Mapping[str, str]]:
        """The messages as the template is given them. A template that refuses the system role gets the system
        content prepended to the first user message with a blank line, as Gemma-3's template does itself and as
        the official LLM-JEPA code does for Gemma (a warning says so once); otherwise `messages` unchanged."""
        if not (self.merges_system and len(messages) >= 2 and messages[0]["role"] == "system"):
            return messages
        if messages[1]["role"] != "user":
            return messages
        if not self._merge_announced:
            warnings.warn(
                "chat template: it refuses a system message; the system content is prepended to the first user "
                "message with a blank line (as Gemma-3's template and the official LLM-JEPA code for Gemma do)",
                stacklevel=4,
            )
            self._merge_announced = True
        merged = {"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}
        return [merged, *messages[2:]]

    def render_text(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        """The template's string for `messages` (after `conversation`); a template error is one line."""
        return render_source(self.compiled, self.context, self.conversation(messages), add_generation_prompt)

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> RenderedChat:
        """The conversation rendered, with each message's block, content and end of turn located in the text
        (one RenderedMessage per message of `conversation(messages)`)."""
        messages = self.conversation(messages)
        roles = tuple(m["role"] for m in messages)
        structure = self._structure(roles, add_generation_prompt)
        text = render_source(self.compiled, self.context, messages, add_generation_prompt)
        content_ranges: list[tuple[int, int]] = []
        position = 0
        for index, message in enumerate(messages):
            glue, next_glue = structure.glue[index], structure.glue[index + 1]
            if not text.startswith(glue, position):
                raise self._edited(index, message["role"])
            position += len(glue)
            content = message["content"]
            for variant in dict.fromkeys((content, content.strip(), content.rstrip(), content.lstrip())):
                end = position + len(variant)
                if text.startswith(variant, position) and (
                    text.startswith(next_glue, end) if index + 1 < len(messages) else text[end:] == next_glue
                ):
                    break
            else:
                raise self._edited(index, message["role"])
            content_ranges.append((position, end))
            position = end
        # Offsets measured in the sentinel rendering move with the length of every content before them.
        shift = [0]
        for index, (a, b) in enumerate(content_ranges):
            shift.append(shift[-1] + (b - a) - len(SENTINEL.format(index=index)))
        sentinel_starts = self._sentinel_starts(structure)
        rendered = []
        for index, (role, (a, b)) in enumerate(zip(roles, content_ranges, strict=True)):
            eot = structure.end_of_turn[index]
            end_of_turn = (b + eot[0], b + eot[0] + len(eot[1])) if eot is not None else None
            start = self._moved(structure.block_starts[index], sentinel_starts, shift)
            end = self._moved(structure.block_ends[index], sentinel_starts, shift)
            rendered.append(RenderedMessage(role=role, start=min(start, a), end=max(end, b), content_start=a,
                                            content_end=b, end_of_turn=end_of_turn))  # fmt: skip
        return RenderedChat(text=text, messages=rendered)

    @staticmethod
    def _sentinel_starts(structure: _Structure) -> list[int]:
        starts, position = [], 0
        for index, glue in enumerate(structure.glue[:-1]):
            position += len(glue)
            starts.append(position)
            position += len(SENTINEL.format(index=index))
        return starts

    @staticmethod
    def _moved(offset: int, sentinel_starts: list[int], shift: list[int]) -> int:
        """A sentinel-rendering offset in the real rendering: moved by the growth of every content before it."""
        before = sum(1 for s in sentinel_starts if s < offset)
        return offset + shift[before]

    @staticmethod
    def _edited(index: int, role: str) -> ChatTemplateError:
        return ChatTemplateError(
            f"chat template: messages[{index}] ({role}) is not rendered as its content (the template edits it, as "
            "DeepSeek-R1's drops reasoning before </think>); give plain contents or use a hand-written template"
        )

    # ------------------------------------------------------------------------------------------- structure
    def _sentinels(self, roles: Sequence[str]) -> list[dict[str, str]]:
        return [{"role": role, "content": SENTINEL.format(index=i)} for i, role in enumerate(roles)]

    def _structure(self, roles: tuple[str, ...], add_generation_prompt: bool) -> _Structure:
        """The glue, blocks and ends of turn of this sequence of roles (cached), or one ChatTemplateError line."""
        key = (roles, add_generation_prompt)
        if key in self._structures:
            return self._structures[key]
        messages = self._sentinels(roles)
        full = render_source(self.compiled, self.context, messages, add_generation_prompt)
        glue, content_ends, position = [], [], 0
        for index, role in enumerate(roles):
            sentinel = SENTINEL.format(index=index)
            found = full.find(sentinel, position)
            if found < 0 or full.count(sentinel) != 1:
                how = "drops" if sentinel not in full else "repeats or reorders"
                raise ChatTemplateError(f"chat template: it {how} the content of messages[{index}] ({role})")
            glue.append(full[position:found])
            position = found + len(sentinel)
            content_ends.append(position)
        glue.append(full[position:])
        # Blocks: the rendering of the first k messages (no generation prompt) must run on into that of k + 1.
        prefixes = [render_source(self.compiled, self.context, messages[: k + 1], False) for k in range(len(roles))]
        without_prompt = prefixes[-1]
        ends: list[int] = []
        closing: str | None = None
        for k in range(len(roles) - 1):
            common = _common_prefix(prefixes[k], prefixes[k + 1], self.specials)
            tail = prefixes[k][common:]
            if any(SENTINEL.format(index=i) in tail for i in range(k + 1)) or (
                closing is not None and tail != closing
            ) or not without_prompt.endswith(tail):  # fmt: skip
                raise ChatTemplateError(
                    f"chat template: rendering {k + 2} messages rewrites the first {k + 1} (roles "
                    f"{', '.join(roles[: k + 2])}); this template changes earlier turns as a conversation grows, "
                    "which the Jinja path cannot encode exactly"
                )
            closing = tail
            ends.append(common)
        if closing is None:  # one message: no pair to compare, the probe's closing text applies
            closing = self._closing if without_prompt.endswith(self._closing) else ""
        self._closing = self._closing or closing
        ends.append(len(without_prompt) - len(closing))
        if not without_prompt.endswith(closing) or not full.startswith(without_prompt[: ends[-1]]):
            raise ChatTemplateError(
                "chat template: its generation prompt rewrites the conversation before it; the Jinja path cannot "
                "encode it exactly"
            )
        starts = [0, *ends[:-1]]
        end_of_turn: list[tuple[int, str] | None] = []
        for index, role in enumerate(roles):
            if role != "assistant":
                end_of_turn.append(None)
                continue
            after = content_ends[index]
            found_token = self._first_special(full, after, ends[index])
            if found_token is None:
                raise ChatTemplateError(
                    f"chat template: no special token closes the assistant turn (messages[{index}]) before the next "
                    "message: there is no end of turn to learn or to stop on"
                )
            end_of_turn.append((found_token[0] - after, found_token[1]))
        structure = _Structure(glue=glue, block_starts=starts, block_ends=ends, end_of_turn=end_of_turn)
        self._structures[key] = structure
        return structure

    def _first_special(self, text: str, start: int, end: int) -> tuple[int, str] | None:
        """(offset, token) of the first special token inside text[start:end], else None."""
        best: tuple[int, str] | None = None
        for token in self.specials:
            found = text.find(token, start, end)
            if found >= 0 and (best is None or found < best[0]):
                best = (found, token)
        return best

    def _check_generation_prompt(self, probe: _Structure) -> None:
        """Warn (one line) when the generation prompt is not how the template opens an assistant turn it trains on
        (R1-Distill's prompt adds "<think>\\n"): evaluation then asks for something training did not teach."""
        first_content_end = len(SENTINEL.format(index=0))  # glue[1] starts there, after glue[0]
        single = self._structure(("user",), add_generation_prompt=True)
        prompt = single.glue[1][single.block_ends[0] - len(single.glue[0]) - first_content_end :]
        opening = probe.glue[1][probe.block_starts[1] - len(probe.glue[0]) - first_content_end :]
        if not opening.startswith(prompt):
            warnings.warn(
                f"chat template: its generation prompt {prompt!r} is not how it opens an assistant turn in training "
                f"({opening!r}); evaluation prompts end with the generation prompt",
                stacklevel=2,
            )

"""Tokenizer: a thin wrapper over `tokenizers.Tokenizer` whose chat templates are registered units.

The hand-written templates (`jepa.templates`: llama3, chatml, qwen3, olmo2) reproduce the official Jinja templates
for plain text messages (no tools); each module's docstring gives its exact rendering, and `jepa.templates.base`
states the content contract that step detection relies on. `encode_chat` builds their ids piece by piece (special
tokens by id, header text and each content encoded on their own), so token boundaries never cross a message
boundary and content offsets are exact. Decoding its ids gives `render_chat`'s string. Re-tokenising that string
gives the same ids except where a piece boundary would otherwise merge: a ChatML content that starts with
whitespace ("user\\n" + "  Hi": the whole string pre-tokenises as "\\n " + " Hi", the pieces as "\\n" + " " + " Hi").
Llama-3 contents are trimmed, so there this cannot happen at content starts.

Any other chat model goes through its own Jinja template (`jepa.templates.jinja`): rendered as transformers renders
it and encoded as one string, as `apply_chat_template(tokenize=True)` does, with each message's content and end of
turn located in the text and mapped to tokens through their character offsets.

Special-token strings inside content are tokenised as special tokens, as transformers' apply_chat_template does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _BackendTokenizer

from jepa.io import read_json_object
from jepa.templates import TEMPLATES, ChatLayout, ChatTemplate, TemplateContext, detect_template, template_class
from jepa.templates.jinja import ChatTemplateError, JinjaTemplate, RenderedChat, compile_template, renders_as


@dataclass
class MessageSpan:
    """One rendered message block in a ChatEncoding; token ranges are [start, end) into `ids`.

    `start`..`end` covers the header through the end-of-turn token (<|eot_id|> / <|im_end|>); for ChatML the
    "\\n" after <|im_end|> is template glue outside every span (the Jinja path: the message's block, see
    `jepa.templates.jinja.RenderedMessage`). `content_start`..`content_end` covers the
    content tokens only. `offsets[k]` is the (char start, char end) of content token k inside `content`, the
    content string as rendered (trimmed for llama3).
    """

    role: str
    start: int
    end: int
    content_start: int
    content_end: int
    offsets: list[tuple[int, int]]
    content: str


@dataclass
class ChatEncoding:
    """Token ids of a rendered conversation.

    `assistant_mask[t]` is True on assistant content tokens and on the assistant's closing end-of-turn token
    (<|eot_id|> or <|im_end|>, never the ChatML "\\n" after it; the Jinja path: content through its end-of-turn
    token, with any glue between them, as Llama-2's " " before "</s>"): the tokens a model must generate.
    `spans` lists every rendered message block in order, including llama3's always-present system block and
    ChatML's default system message.
    """

    ids: list[int]
    assistant_mask: list[bool]
    spans: list[MessageSpan]


def _token_content(value: Any) -> str | None:
    """A special-token entry of tokenizer_config.json: either "<tok>" or {"content": "<tok>", ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _jinja_source(path: Path, config: dict[str, Any]) -> tuple[Path, str]:
    """(the file it came from, the tokenizer's Jinja chat template or ""): chat_template.jinja wins over
    tokenizer_config.json's "chat_template" (a string, or a list of {"name", "template"}: the "default" one), as in
    transformers."""
    if (path / "chat_template.jinja").is_file():
        return path / "chat_template.jinja", (path / "chat_template.jinja").read_text(encoding="utf-8")
    source = config.get("chat_template")
    if isinstance(source, list):
        named = {entry.get("name"): entry.get("template") for entry in source if isinstance(entry, dict)}
        source = named.get("default")
    return path / "tokenizer_config.json", source if isinstance(source, str) else ""


class Tokenizer:
    """Byte-level tokenizer plus chat templates; see the module docstring for the exact renderings."""

    def __init__(
        self,
        backend: _BackendTokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        chat_template: str | None = None,
        date_string: str = "26 Jul 2024",
        default_system_message: str | None = None,
        jinja_source: str = "",
        unk_token: str | None = None,
    ) -> None:
        """`chat_template` names a registered template (`jepa.templates.TEMPLATES`) or is None (no template:
        render_chat raises). `default_system_message` is inserted, by templates that have one, when the first
        message is not a system message. `jinja_source`: the tokenizer's Jinja template (the `jinja` template
        renders it). A template that cannot be used: ChatTemplateError, one line.
        """
        template_cls = template_class(chat_template) if chat_template is not None else None
        self.backend = backend
        self.chat_template = chat_template
        self.date_string = date_string
        self.default_system_message = default_system_message
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        self.bos_id: int | None = self._id_or_error(bos_token, "bos_token")
        self.eos_id: int | None = self._id_or_error(eos_token, "eos_token")
        pad_id = self._id_or_error(pad_token, "pad_token")
        if pad_id is None:
            pad_id = self.eos_id  # the usual convention when a model has no pad token
        if pad_id is None:
            raise ValueError("tokenizer has neither a pad_token nor an eos_token to pad with")
        self.pad_id: int = pad_id
        self.template: ChatTemplate | None = None
        if template_cls is not None:
            added = backend.get_added_tokens_decoder().values()
            context = TemplateContext(
                date_string=date_string,
                default_system_message=default_system_message,
                bos_token=bos_token,
                eos_token=eos_token,
                pad_token=pad_token,
                unk_token=unk_token,
                in_vocabulary=lambda token: self.token_to_id(token) is not None,
                jinja_source=jinja_source,
                special_tokens=tuple(token.content for token in added if token.special),
            )
            self.template = template_cls(context)
        stop_tokens = self.template.turn_stop_tokens() if self.template is not None else ()
        stop_ids = [i for i in (self.token_to_id(t) for t in stop_tokens) if i is not None]
        if self.eos_id is not None:
            stop_ids.append(self.eos_id)
        self.stop_ids: list[int] = list(dict.fromkeys(stop_ids))  # dedupe, keep order

    def _id_or_error(self, token: str | None, what: str) -> int | None:
        if token is None:
            return None
        token_id = self.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{what} {token!r} is not in the vocabulary")
        return token_id

    @classmethod
    def from_dir(
        cls, path: str | Path, chat_template: str | None = None, date_string: str = "26 Jul 2024"
    ) -> Tokenizer:
        """Load `path`/tokenizer.json, with bos/eos/pad from tokenizer_config.json or special_tokens_map.json.

        `chat_template` None picks the first registered template (by priority) that recognises the vocabulary and
        the tokenizer's Jinja template (`jepa.templates.detect_template`): a hand-written one, else `jinja` when the
        tokenizer ships a template (chat_template.jinja, else tokenizer_config.json's "chat_template", its
        "default" entry when it is a list), else no template. Without config files, bos/eos default to the
        template's usual tokens (its `bos_candidates` / `eos_candidates`, then <|endoftext|> or </s> for eos).
        Missing files: FileNotFoundError; a template that cannot be used: ChatTemplateError naming the file.
        """
        path = Path(path)
        tokenizer_file = path / "tokenizer.json"
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer directory not found: {path}")
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {tokenizer_file}")
        try:
            backend = _BackendTokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"{tokenizer_file}: cannot load tokenizer: {exc}") from exc

        config: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
            if (path / name).is_file():
                config.update({k: v for k, v in read_json_object(path / name).items() if v is not None})
        vocab = backend.get_vocab(with_added_tokens=True)

        template_file, template_source = _jinja_source(path, config)
        detected = chat_template is None
        if chat_template is None:
            chat_template = detect_template(vocab, template_source)
        template_cls = template_class(chat_template) if chat_template is not None else None

        def present(*tokens: str) -> str | None:
            return next((t for t in tokens if t in vocab), None)

        default_bos = present(*template_cls.bos_candidates) if template_cls is not None else None
        default_eos = present(*template_cls.eos_candidates) if template_cls is not None else None
        default_eos = default_eos or present("<|endoftext|>", "</s>")
        bos = _token_content(config["bos_token"]) if "bos_token" in config else default_bos
        eos = _token_content(config["eos_token"]) if "eos_token" in config else default_eos
        pad = _token_content(config.get("pad_token"))
        default_system = template_cls.default_system_message(template_source) if template_cls is not None else None
        try:
            tokenizer = cls(
                backend,
                bos_token=bos,
                eos_token=eos,
                pad_token=pad,
                unk_token=_token_content(config.get("unk_token")),
                chat_template=chat_template,
                date_string=date_string,
                default_system_message=default_system,
                jinja_source=template_source,
            )
        except ChatTemplateError as exc:
            raise ChatTemplateError(f"{template_file}: {exc}") from None
        # A detected hand-written template must render as the tokenizer's own; else the Jinja path renders it.
        template = tokenizer.template
        if detected and template is not None and not isinstance(template, JinjaTemplate) and template_source.strip():
            if not renders_as(template, compile_template(template_source)):
                return cls.from_dir(path, chat_template=JinjaTemplate.name, date_string=date_string)
        return tokenizer

    # ----------------------------------------------------------------------------------------- plain text
    def token_to_id(self, token: str) -> int | None:
        """Id of a token string (including added/special tokens), None when absent."""
        return self.backend.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; never adds BOS/EOS or any other special token."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of `text` and each token's (start, end) character offsets into `text`.

        A token holding part of a multi-byte character reports that character's offsets.
        """
        encoding = self.backend.encode(text, add_special_tokens=False)
        return encoding.ids, [(start, end) for start, end in encoding.offsets]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; special tokens appear as their strings unless `skip_special_tokens`."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ----------------------------------------------------------------------------------------- chat
    def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
        """The exact string the official chat template renders for `messages` ({"role", "content"} dicts)."""
        template = self._checked_template(messages)
        if isinstance(template, JinjaTemplate):
            return template.render_text(messages, add_generation_prompt)
        return "".join(piece.text for piece in template.pieces(messages, add_generation_prompt).pieces)

    def encode_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> ChatEncoding:
        """Token ids, assistant mask and per-message spans of the rendered chat (see ChatEncoding)."""
        template = self._checked_template(messages)
        if isinstance(template, JinjaTemplate):
            return self._encode_rendered(template.render(messages, add_generation_prompt))
        return self._encode_pieces(template.pieces(messages, add_generation_prompt))

    def _encode_pieces(self, layout: ChatLayout) -> ChatEncoding:
        """A hand-written template's pieces encoded one by one (see the module docstring)."""
        pieces, span_meta = layout.pieces, layout.spans
        ids: list[int] = []
        assistant_mask: list[bool] = []
        bounds: list[dict[str, Any]] = [{} for _ in span_meta]
        for piece in pieces:
            if piece.special:
                token_id = self.token_to_id(piece.text)
                if token_id is None:
                    raise ValueError(
                        f"chat template {self.chat_template!r} needs {piece.text!r}, not in the vocabulary"
                    )
                piece_ids, piece_offsets = [token_id], [(0, len(piece.text))]
            else:
                piece_ids, piece_offsets = self.encode_with_offsets(piece.text)
            start = len(ids)
            ids.extend(piece_ids)
            in_assistant = piece.span is not None and span_meta[piece.span][0] == "assistant"
            assistant_mask.extend([in_assistant and (piece.is_content or piece.is_end_of_turn)] * len(piece_ids))
            if piece.span is not None:
                bound = bounds[piece.span]
                bound.setdefault("start", start)
                bound["end"] = len(ids)
                if piece.is_content:
                    bound["content_start"], bound["content_end"] = start, len(ids)
                    bound["offsets"] = piece_offsets
        spans = [
            MessageSpan(
                role=role,
                start=bound["start"],
                end=bound["end"],
                content_start=bound["content_start"],
                content_end=bound["content_end"],
                offsets=bound["offsets"],
                content=content,
            )
            for (role, content), bound in zip(span_meta, bounds, strict=True)
        ]
        return ChatEncoding(ids=ids, assistant_mask=assistant_mask, spans=spans)

    def _encode_rendered(self, chat: RenderedChat) -> ChatEncoding:
        """A Jinja rendering encoded whole (transformers' ids); character ranges become token ranges by overlap: a
        token belongs to a range when it shares a character with it (transformers' assistant-mask rule)."""
        ids, offsets = self.encode_with_offsets(chat.text)

        def tokens(start: int, end: int) -> tuple[int, int]:
            """[first, last + 1) of the tokens overlapping chars [start, end); empty: where `start` falls."""
            first = next((t for t, (a, b) in enumerate(offsets) if b > start or a >= start), len(ids))
            last = first
            while last < len(ids) and offsets[last][0] < end and offsets[last][1] > start:
                last += 1
            return first, max(first, last)

        assistant_mask = [False] * len(ids)
        spans = []
        for message in chat.messages:
            content_first, content_last = tokens(message.content_start, message.content_end)
            if message.end_of_turn is not None:
                mask_last = tokens(*message.end_of_turn)[1]
                assistant_mask[content_first:mask_last] = [True] * (mask_last - content_first)
            length = message.content_end - message.content_start
            spans.append(
                MessageSpan(
                    role=message.role,
                    start=tokens(message.start, message.end)[0],
                    end=tokens(message.start, message.end)[1],
                    content_start=content_first,
                    content_end=content_last,
                    offsets=[
                        (min(max(a - message.content_start, 0), length), min(max(b - message.content_start, 0), length))
                        for a, b in offsets[content_first:content_last]
                    ],
                    content=chat.text[message.content_start : message.content_end],
                )
            )
        return ChatEncoding(ids=ids, assistant_mask=assistant_mask, spans=spans)

    def _checked_template(self, messages: list[dict[str, Any]]) -> ChatTemplate:
        """The template, after checking the messages."""
        if self.template is None:
            raise ValueError(f"this tokenizer has no chat template (pass chat_template=one of {tuple(TEMPLATES)})")
        if not messages:
            raise ValueError("messages is empty")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ValueError(f"messages[{index}]: expected a dict with a string 'role'")
            if not isinstance(message.get("content"), str):
                raise ValueError(f"messages[{index}] (role {message['role']!r}): 'content' must be a string")
        return self.template

"""Tokenizer: a thin wrapper over `tokenizers.Tokenizer` with chat templates written in Python.

Two templates, reproducing the official Jinja templates for plain text messages (no tools):

- ``llama3`` (Llama-3.1/3.2 Instruct)::

      <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n
      Cutting Knowledge Date: December 2023\\nToday Date: {date_string}\\n\\n{system content | trim}<|eot_id|>
      <|start_header_id|>{role}<|end_header_id|>\\n\\n{content | trim}<|eot_id|>   (per later message)
      <|start_header_id|>assistant<|end_header_id|>\\n\\n                            (generation prompt)

  The system block is always present (empty content without a system message). The date is fixed by
  ``date_string`` instead of today's date so runs are reproducible.
- ``chatml`` (SmolLM2, Qwen2 / Qwen2.5): ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, content
  untrimmed; the template's default system message when the first message is not a system message (SmolLM2:
  "You are a helpful AI assistant named SmolLM, trained by Hugging Face"; Qwen2.5: "You are Qwen, created by
  Alibaba Cloud. You are a helpful assistant."), read from tokenizer_config.json's Jinja template; generation
  prompt ``<|im_start|>assistant\\n``.
- ``qwen3`` (Qwen3): ChatML without a default system message. An assistant turn after the last user message
  carries its thinking block: ``<|im_start|>assistant\\n<think>\\n{reasoning}\\n</think>\\n\\n{content}`` where the
  reasoning is what a ``<think>...</think>`` inside the content held (empty for plain answers, as in training
  data without reasoning); earlier assistant turns drop it. The think block is template glue, outside the
  content and the assistant mask, and the generation prompt is the non-thinking one,
  ``<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n`` (Qwen3's ``enable_thinking=False``), so a model trained on
  plain answers is asked for plain answers.
- ``olmo2`` (OLMo-2 Instruct, the Tulu 3 format): ``{bos}`` then ``<|system|>\\n{content}\\n``,
  ``<|user|>\\n{content}\\n``, ``<|assistant|>\\n{content}{eos}`` (+ ``\\n`` unless it is the last message);
  generation prompt ``<|assistant|>\\n``. The role markers are single tokens where the vocabulary has them, else
  text.

`encode_chat` builds ids piece by piece (special tokens by id, header text and each content encoded on their
own), so token boundaries never cross a message boundary and content offsets are exact. Decoding its ids gives
`render_chat`'s string. Re-tokenising that string gives the same ids except where a piece boundary would
otherwise merge: a ChatML content that starts with whitespace ("user\\n" + "  Hi": the whole string
pre-tokenises as "\\n " + " Hi", the pieces as "\\n" + " " + " Hi"). Llama-3 contents are trimmed, so there this
cannot happen at content starts. Special-token strings inside content are tokenised as special tokens, as
`transformers`' apply_chat_template(tokenize=True) does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _BackendTokenizer

from jepa.io import read_json_object

CHAT_TEMPLATES = ("llama3", "chatml", "qwen3", "olmo2")
LLAMA3_KNOWLEDGE_CUTOFF = "December 2023"


@dataclass
class MessageSpan:
    """One rendered message block in a ChatEncoding; token ranges are [start, end) into `ids`.

    `start`..`end` covers the header through the end-of-turn token (<|eot_id|> / <|im_end|>); for ChatML the
    "\\n" after <|im_end|> is template glue outside every span. `content_start`..`content_end` covers the
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
    (<|eot_id|> or <|im_end|>, never the ChatML "\\n" after it): the tokens a model must generate.
    `spans` lists every rendered message block in order, including llama3's always-present system block and
    ChatML's default system message.
    """

    ids: list[int]
    assistant_mask: list[bool]
    spans: list[MessageSpan]


@dataclass
class _Piece:
    """A unit of a rendered chat: one special token (encoded by id) or a text encoded on its own."""

    text: str
    special: bool = False
    span: int | None = None  # index of the MessageSpan it belongs to
    is_content: bool = False
    is_end_of_turn: bool = False


def _token_content(value: Any) -> str | None:
    """A special-token entry of tokenizer_config.json: either "<tok>" or {"content": "<tok>", ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


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
    ) -> None:
        """`chat_template` is one of CHAT_TEMPLATES or None (no template: render_chat raises).

        `default_system_message` is used by chatml only, when the first message is not a system message.
        """
        if chat_template is not None and chat_template not in CHAT_TEMPLATES:
            raise ValueError(f"unknown chat_template {chat_template!r}; expected one of {CHAT_TEMPLATES}")
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
        stop_tokens = {"llama3": ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"], "chatml": ["<|im_end|>"],
                       "qwen3": ["<|im_end|>"]}.get(chat_template, [])  # fmt: skip
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

        `chat_template` None picks from the vocabulary and tokenizer_config.json's Jinja template: "llama3" with
        <|start_header_id|>, "olmo2" when the template writes <|assistant|>, "qwen3" with <|im_start|> and
        <think>, "chatml" with <|im_start|>, else no template. Without config files, bos/eos default to the
        template's usual tokens (<|begin_of_text|>/<|eot_id|>, -/<|im_end|>, <|endoftext|>). Missing files:
        FileNotFoundError.
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

        template_source = config.get("chat_template")
        template_source = template_source if isinstance(template_source, str) else ""
        if chat_template is None and "<｜Assistant｜>" in template_source:  # DeepSeek-R1(-Distill)
            raise ValueError(
                f"{path / 'tokenizer_config.json'}: the DeepSeek-R1 chat template (<｜User｜> / <｜Assistant｜>) is "
                f"not implemented here; supported templates: {', '.join(CHAT_TEMPLATES)}"
            )
        if chat_template is None:
            if "<|start_header_id|>" in vocab:
                chat_template = "llama3"
            elif "<|assistant|>" in template_source or "<|assistant|>" in vocab:
                chat_template = "olmo2"
            elif "<|im_start|>" in vocab:
                chat_template = "qwen3" if "<think>" in vocab else "chatml"

        def present(*tokens: str) -> str | None:
            return next((t for t in tokens if t in vocab), None)

        if chat_template == "llama3":
            default_bos, default_eos = present("<|begin_of_text|>"), present("<|eot_id|>", "<|end_of_text|>")
        elif chat_template in ("chatml", "qwen3"):
            default_bos, default_eos = None, present("<|im_end|>")
        elif chat_template == "olmo2":
            default_bos, default_eos = present("<|endoftext|>"), present("<|endoftext|>")
        else:
            default_bos, default_eos = None, None
        default_eos = default_eos or present("<|endoftext|>", "</s>")
        bos = _token_content(config["bos_token"]) if "bos_token" in config else default_bos
        eos = _token_content(config["eos_token"]) if "eos_token" in config else default_eos
        pad = _token_content(config.get("pad_token"))

        default_system = None
        if chat_template == "chatml":
            # SmolLM2's and Qwen2.5's Jinja templates insert "<|im_start|>system\n...<|im_end|>" (a literal, no
            # Jinja inside) when no system message is given.
            literal = r"<\|im_start\|>system(?:\n|\\n)([^'\"{}%<]*?)<\|im_end\|>"
            match = re.search(literal, template_source)
            if match:
                default_system = match.group(1)
        return cls(
            backend,
            bos_token=bos,
            eos_token=eos,
            pad_token=pad,
            chat_template=chat_template,
            date_string=date_string,
            default_system_message=default_system,
        )

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
        return encoding.ids, [tuple(offset) for offset in encoding.offsets]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; special tokens appear as their strings unless `skip_special_tokens`."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ----------------------------------------------------------------------------------------- chat
    def render_chat(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The exact string the official chat template renders for `messages` ({"role", "content"} dicts)."""
        return "".join(piece.text for piece in self._chat_pieces(messages, add_generation_prompt)[0])

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = False) -> ChatEncoding:
        """Token ids, assistant mask and per-message spans of the rendered chat (see ChatEncoding)."""
        pieces, span_meta = self._chat_pieces(messages, add_generation_prompt)
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

    def _chat_pieces(
        self, messages: list[dict], add_generation_prompt: bool
    ) -> tuple[list[_Piece], list[tuple[str, str]]]:
        """Pieces of the rendered chat and (role, rendered content) per span."""
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template (pass chat_template='llama3' or 'chatml')")
        if not messages:
            raise ValueError("messages is empty")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ValueError(f"messages[{index}]: expected a dict with a string 'role'")
            if not isinstance(message.get("content"), str):
                raise ValueError(f"messages[{index}] (role {message['role']!r}): 'content' must be a string")
        pieces = {"llama3": self._llama3_pieces, "chatml": self._chatml_pieces, "qwen3": self._qwen3_pieces,
                  "olmo2": self._olmo2_pieces}[self.chat_template]  # fmt: skip
        return pieces(messages, add_generation_prompt)

    def _llama3_pieces(
        self, messages: list[dict], add_generation_prompt: bool
    ) -> tuple[list[_Piece], list[tuple[str, str]]]:
        pieces: list[_Piece] = [_Piece("<|begin_of_text|>", special=True)]
        spans: list[tuple[str, str]] = []

        def block(role: str, content: str, preamble: str = "") -> None:
            span = len(spans)
            spans.append((role, content))
            pieces.append(_Piece("<|start_header_id|>", special=True, span=span))
            pieces.append(_Piece(role, span=span))
            pieces.append(_Piece("<|end_header_id|>", special=True, span=span))
            pieces.append(_Piece("\n\n" + preamble, span=span))
            pieces.append(_Piece(content, span=span, is_content=True))
            pieces.append(_Piece("<|eot_id|>", special=True, span=span, is_end_of_turn=True))

        # The official template always emits the system block; `| trim` is Python's str.strip().
        system_content = ""
        if messages[0]["role"] == "system":
            system_content, messages = messages[0]["content"].strip(), messages[1:]
        block(
            "system",
            system_content,
            preamble=f"Cutting Knowledge Date: {LLAMA3_KNOWLEDGE_CUTOFF}\nToday Date: {self.date_string}\n\n",
        )
        for message in messages:
            if message["role"] in ("tool", "ipython") or "tool_calls" in message:
                raise ValueError(f"llama3 template: tool messages are not supported (role {message['role']!r})")
            block(message["role"], message["content"].strip())
        if add_generation_prompt:
            pieces += [
                _Piece("<|start_header_id|>", special=True),
                _Piece("assistant"),
                _Piece("<|end_header_id|>", special=True),
                _Piece("\n\n"),
            ]
        return pieces, spans

    def _chatml_pieces(
        self, messages: list[dict], add_generation_prompt: bool
    ) -> tuple[list[_Piece], list[tuple[str, str]]]:
        pieces: list[_Piece] = []
        spans: list[tuple[str, str]] = []
        if messages[0]["role"] != "system" and self.default_system_message is not None:
            messages = [{"role": "system", "content": self.default_system_message}, *messages]
        for message in messages:
            span = len(spans)
            spans.append((message["role"], message["content"]))
            pieces.append(_Piece("<|im_start|>", special=True, span=span))
            pieces.append(_Piece(message["role"] + "\n", span=span))
            pieces.append(_Piece(message["content"], span=span, is_content=True))
            pieces.append(_Piece("<|im_end|>", special=True, span=span, is_end_of_turn=True))
            pieces.append(_Piece("\n"))  # glue between turns: outside the span and the assistant mask
        if add_generation_prompt:
            pieces += [_Piece("<|im_start|>", special=True), _Piece("assistant\n")]
        return pieces, spans

    def _qwen3_pieces(
        self, messages: list[dict], add_generation_prompt: bool
    ) -> tuple[list[_Piece], list[tuple[str, str]]]:
        pieces: list[_Piece] = []
        spans: list[tuple[str, str]] = []
        last_query = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
        for index, message in enumerate(messages):
            role, content = message["role"], message["content"]
            think = None
            if role == "assistant":
                reasoning = ""
                if "</think>" in content:
                    head, content = content.split("</think>")[0], content.split("</think>")[-1].lstrip("\n")
                    reasoning = head.rstrip("\n").split("<think>")[-1].lstrip("\n")
                if index > last_query and (index == len(messages) - 1 or reasoning):
                    think, content = reasoning.strip("\n"), content.lstrip("\n")
            span = len(spans)
            spans.append((role, content))
            pieces.append(_Piece("<|im_start|>", special=True, span=span))
            pieces.append(_Piece(role + "\n", span=span))
            if think is not None:  # template glue: neither content nor trained on
                pieces += [_Piece("<think>", special=True, span=span), _Piece("\n" + think + "\n", span=span),
                           _Piece("</think>", special=True, span=span), _Piece("\n\n", span=span)]  # fmt: skip
            pieces.append(_Piece(content, span=span, is_content=True))
            pieces.append(_Piece("<|im_end|>", special=True, span=span, is_end_of_turn=True))
            pieces.append(_Piece("\n"))
        if add_generation_prompt:  # non-thinking, like enable_thinking=False
            pieces += [_Piece("<|im_start|>", special=True), _Piece("assistant\n"), _Piece("<think>", special=True),
                       _Piece("\n\n"), _Piece("</think>", special=True), _Piece("\n\n")]  # fmt: skip
        return pieces, spans

    def _olmo2_pieces(
        self, messages: list[dict], add_generation_prompt: bool
    ) -> tuple[list[_Piece], list[tuple[str, str]]]:
        if self.bos_id is None or self.eos_id is None:
            raise ValueError("olmo2 template: the tokenizer needs a bos_token and an eos_token")
        bos, eos = self.decode([self.bos_id]), self.decode([self.eos_id])
        pieces: list[_Piece] = [_Piece(bos, special=True)]
        spans: list[tuple[str, str]] = []

        def marker(role: str, span: int | None) -> _Piece:  # one token where the vocabulary has it
            text = f"<|{role}|>"
            return _Piece(text, special=self.token_to_id(text) is not None, span=span)

        for index, message in enumerate(messages):
            role, content = message["role"], message["content"]
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"olmo2 template: role {role!r} is not supported (system, user, assistant)")
            span = len(spans)
            spans.append((role, content))
            pieces += [marker(role, span), _Piece("\n", span=span), _Piece(content, span=span, is_content=True)]
            if role == "assistant":
                pieces.append(_Piece(eos, special=True, span=span, is_end_of_turn=True))
                if index < len(messages) - 1:
                    pieces.append(_Piece("\n"))
            else:
                pieces.append(_Piece("\n", span=span))
        if add_generation_prompt:
            pieces += [marker("assistant", None), _Piece("\n")]
        return pieces, spans

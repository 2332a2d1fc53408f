"""The packed single-pass layouts (docs/method.md §2): one row per example = the untouched LM sequence followed by the
JEPA segments, with a segment visibility table, explicit position ids and pre-shifted LM labels.

Token i may attend to token j iff j <= i in packed order and segment(j) is visible to segment(i)
(`attention_mask` in jepa/data/collator.py builds the 4-D mask from this). Predictor token k is written as
the id `-(k + 1)`; `jepa.objective.PredictorEmbeddings` resolves it, so predictors never enter the vocabulary,
are never an LM target, and do not exist at inference.

    mode       segments (sees)                              prediction          target
    regular    M (M)                                        -                   -
    step       A (A) | B (A,B) | P (A,P) | C (C)            last of P           last of C = step 2 copy
    jepa       M (M) | T (T) = user view + P | D (D)        last predictor      last content token of D
    reversal   F (F) | P (F,P) | R (R)                      last of P           last of R = reverse fact
    stp        M (M)                                        chords of the LM sequence's own hidden states

STP (Semantic Tube Prediction) adds no segment: a row carries its path (`StpPath`: the user content followed by
the answer content), and every optimizer step draws a span on it (`draw_stp_spans`); the objective reads the
chords of the span and of the whole path off the LM pass (docs/method.md §2).

Each mode is one `Mode` declaration (`register_mode`, at the end of this file): its row builder and what the rest
of the library needs to know about it (which data it reads, whether it has a JEPA term, trains predictor tokens,
has view pairs, which views its evaluation reads). Adding a mode is a row builder and a declaration here; the
dataset, the config checks, the trainer and the evaluation hooks read the declaration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from jepa.data.sources import STEP_SEPARATOR, BadRecord
from jepa.losses import IGNORE_INDEX
from jepa.settings import Section, setting
from jepa.templates.jinja import TemplateRaised
from jepa.tokenizer import ChatEncoding, Tokenizer

LM_LABELS = ("assistant", "all", "paper")
STEP_PAIRS = ("first", "all")


@dataclass
class LayoutConfig(Section):
    """How an example becomes a packed row (docs/method.md); checked on construction (`__post_init__`)."""

    section: ClassVar[str] = "layout"
    mode: str = setting(
        "step",
        "regular | jepa (Text <-> Code views) | step (Step-JEPA) | stp (semantic tube "
        "prediction) | reversal (GPT2-JEPA)",
    )
    predictors: int = setting(2, "K predictor tokens; 0 = view A's own last token is the prediction")
    isolated_positions: str = setting(
        "restart",
        "positions of an isolated view: restart at 0, or continue after the previous segment (the seed code's)",
    )
    front_pred: bool = setting(False, "jepa mode: predictors before the user content instead of after it")
    lm_labels: str = setting(
        "assistant",
        "assistant: content + end of turn; all: every token; paper: every token "
        "but the pad token, as the official LLM-JEPA collator trains (pad = end of turn for "
        "Llama-3 and SmolLM2: those are never targets)",
    )
    last_token: int | None = setting(
        None, "jepa mode: null = the last content token; k < 0 = the official `real_length + k`"
    )
    max_length: int = setting(1024, "truncates the LM sequence; JEPA segments come on top of it")
    step_separator: str = setting(STEP_SEPARATOR, "what separates reasoning steps inside an assistant content")
    step_pairs: str = setting(
        "first",
        "step mode: first = the pair (step 1 -> step 2), the seed's Step-JEPA; all "
        "= every consecutive pair, each with its own K predictor tokens and isolated copy of "
        "step k+1, in the same row",
    )
    stp_zero: bool = setting(
        False, "stp mode: every span starts at the path's start (the STP paper's \"zero\" ablation) instead of anywhere"
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"layout.mode must be one of {tuple(MODES)}, got {self.mode!r}")
        if self.isolated_positions not in ("restart", "continue"):
            raise ValueError(
                f"layout.isolated_positions must be 'restart' or 'continue', got {self.isolated_positions!r}"
            )
        if self.step_pairs not in STEP_PAIRS:
            raise ValueError(f"layout.step_pairs must be one of {', '.join(STEP_PAIRS)}, got {self.step_pairs!r}")
        if self.lm_labels not in LM_LABELS:
            raise ValueError(f"layout.lm_labels must be one of {', '.join(LM_LABELS)}, got {self.lm_labels!r}")
        if self.predictors < 0:
            raise ValueError(f"layout.predictors must be >= 0, got {self.predictors}")
        if self.max_length < 1:  # a negative length would slice tokens off the end, silently
            raise ValueError(f"layout.max_length must be >= 1, got {self.max_length}")
        if self.last_token is not None and self.last_token >= 0:
            raise ValueError(
                f"layout.last_token must be negative (an offset from the view's end), got {self.last_token}"
            )


@dataclass(frozen=True)
class StpPath:
    """One example's STP path: its messages' content tokens one after another (template tokens excluded), as
    (anchor, last) token indices per message: the content is anchor + 1 .. last, and the anchor is the token just
    before it, whose hidden state starts the message's chord. `span` = [start, stop) path offsets, drawn per step
    (`draw_stp_spans`); None until drawn."""

    messages: tuple[tuple[int, int], ...]
    zero: bool = False  # spans start at offset 0
    span: tuple[int, int] | None = None

    @property
    def length(self) -> int:
        return sum(last - anchor for anchor, last in self.messages)

    def shifted(self, by: int) -> StpPath:
        return replace(self, messages=tuple((a + by, b + by) for a, b in self.messages))

    def displacement(self, offset: int) -> list[tuple[int, int]]:
        """Phi(offset) as (token index, sign) terms: the sum of the chords h[last] - h[anchor] of the messages the
        first `offset` path tokens cover, the last one cut at the offset. The span's chord is Phi(stop) -
        Phi(start), the whole path's Phi(length) (STP's official `get_embeddings`, written as one function)."""
        terms, start = [], 0
        for anchor, last in self.messages:
            n = last - anchor
            if offset > start:
                terms += [(anchor + min(offset - start, n), 1), (anchor, -1)]
            start += n
        return terms


def draw_span(length: int, *, seed: int, step: int, example: int, zero: bool = False) -> tuple[int, int]:
    """[start, stop) on a path of `length` >= 2 tokens: never empty, never the whole path. As the official
    `stp.py` draws it: start uniform in [0, length) (0 with `zero`), stop uniform in (start, length], redrawn
    while the span would be the whole path. A pure function of (seed, step, example), so a resumed run and any
    number of processes draw alike."""
    if length < 2:
        raise ValueError(f"an STP path needs at least 2 tokens, got {length}")
    rng = np.random.default_rng([seed, step, example, 0x57B])
    start = 0 if zero else int(rng.integers(0, length))
    while True:
        stop = int(rng.integers(start + 1, length + 1))
        if stop - start < length:
            return start, stop


def draw_stp_spans(row: Row, seed: int, step: int, example: int) -> Row:
    """A copy of `row` whose STP paths carry this step's spans (the row itself, shared, is left alone)."""
    if not row.stp_paths:
        return row
    paths = [
        replace(p, span=draw_span(p.length, seed=seed, step=step, example=example, zero=p.zero)) for p in row.stp_paths
    ]
    return replace(row, stp_paths=paths)


@dataclass
class Row:
    """One packed example. All per-token lists have the same length."""

    input_ids: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    segment_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # pre-shifted: labels[t] = token predicted at t
    segment_names: list[str] = field(default_factory=list)
    visible: list[tuple[int, ...]] = field(default_factory=list)  # visible[s] = segments that segment s sees
    main_length: int = 0  # the LM sequence is the prefix [0, main_length); JEPA segments follow
    jepa_pairs: list[tuple[int, int]] = field(default_factory=list)  # (prediction, target) token index, per example
    stp_paths: list[StpPath] = field(default_factory=list)  # stp mode: one path per example

    @property
    def has_jepa(self) -> bool:
        """Whether the row has a JEPA term (a view pair or an STP path)."""
        return bool(self.jepa_pairs or self.stp_paths)

    @property
    def pred_index(self) -> int | None:
        """The prediction token of a one-example row (None without a JEPA term)."""
        return self.jepa_pairs[0][0] if self.jepa_pairs else None

    @property
    def target_index(self) -> int | None:
        return self.jepa_pairs[0][1] if self.jepa_pairs else None

    def add_segment(
        self, name: str, ids: list[int], positions: list[int], *, sees: tuple[str, ...], labels: list[int] | None = None
    ) -> int:
        """Append a segment; `sees` names earlier segments (itself is implied). Returns its first index."""
        seg = len(self.segment_names)
        self.segment_names.append(name)
        self.visible.append(tuple(self.segment_names.index(s) for s in sees) + (seg,))
        start = len(self.input_ids)
        self.input_ids += ids
        self.position_ids += positions
        self.segment_ids += [seg] * len(ids)
        self.labels += labels if labels is not None else [IGNORE_INDEX] * len(ids)
        return start

    def lm_only(self) -> Row:
        """The same example without its JEPA segments (jepa_ratio < 1 skips, truncated views)."""
        n, keep = self.main_length, sorted(set(self.segment_ids[: self.main_length]))
        return Row(
            input_ids=self.input_ids[:n],
            position_ids=self.position_ids[:n],
            segment_ids=self.segment_ids[:n],
            labels=self.labels[:n],
            segment_names=self.segment_names[: len(keep)],
            visible=self.visible[: len(keep)],
            main_length=n,
        )


def predictor_ids(k: int) -> list[int]:
    return [-(i + 1) for i in range(k)]


def shifted_labels(ids: list[int], trainable: list[bool]) -> list[int]:
    """labels[t] = ids[t + 1] where token t + 1 is trained on, else IGNORE_INDEX."""
    out = [IGNORE_INDEX] * len(ids)
    for t in range(len(ids) - 1):
        if trainable[t + 1]:
            out[t] = ids[t + 1]
    return out


def main_sequence(enc: ChatEncoding, cfg: LayoutConfig, pad_id: int | None = None) -> tuple[list[int], list[int]]:
    """The LM sequence of a chat (truncated to max_length) and its pre-shifted labels (`cfg.lm_labels`; "paper"
    needs the tokenizer's `pad_id`)."""
    ids = enc.ids[: cfg.max_length]
    if cfg.lm_labels == "all":
        trainable = [True] * len(ids)
    elif cfg.lm_labels == "paper":
        if pad_id is None:
            raise ValueError("layout.lm_labels=paper needs the tokenizer's pad id")
        trainable = [token != pad_id for token in ids]
    else:
        trainable = enc.assistant_mask[: cfg.max_length]
    return ids, shifted_labels(ids, trainable)


def step_token_ranges(enc: ChatEncoding, separator: str = STEP_SEPARATOR) -> list[tuple[int, int]]:
    """[start, end] token indices (inclusive) of each step of the assistant message.

    Steps are found in the assistant *content* only (never in the template), by characters; a step ends at the
    token that contains the first character of its separator (BPE merges ".\\n\\n" into one token), and the next
    step starts at the following token.
    """
    span = next((s for s in reversed(enc.spans) if s.role == "assistant"), None)
    if span is None:
        raise BadRecord("no assistant message", "no assistant message to find steps in")
    text, offsets = span.content, span.offsets
    ends, pos = [], 0
    while (hit := text.find(separator, pos)) != -1:
        if text[pos:hit].strip():
            ends.append(hit)
        pos = hit + len(separator)
    if text[pos:].strip():
        ends.append(len(text) - 1)  # the last step ends at the content's last character
    ranges, start_tok = [], 0
    for char in ends:
        end_tok = next((i for i, (a, b) in enumerate(offsets) if a <= char < b or a > char), len(offsets) - 1)
        if end_tok >= start_tok:
            ranges.append((span.content_start + start_tok, span.content_start + end_tok))
        start_tok = end_tok + 1
    return ranges


def isolated_positions(n: int, previous_end: int, cfg: LayoutConfig) -> list[int]:
    start = 0 if cfg.isolated_positions == "restart" else previous_end
    return list(range(start, start + n))


def build_regular_row(enc: ChatEncoding, cfg: LayoutConfig, pad_id: int | None = None) -> Row:
    ids, labels = main_sequence(enc, cfg, pad_id)
    row = Row()
    row.add_segment("M", ids, list(range(len(ids))), sees=(), labels=labels)
    row.main_length = len(ids)
    return row


def build_step_row(enc: ChatEncoding, cfg: LayoutConfig, pad_id: int | None = None) -> Row:
    """Step-JEPA: prediction = K predictors after system+user+step k, target = step k+1 encoded alone; for the
    pair (1 -> 2) with `step_pairs: first`, for every consecutive pair with `all`.

    Segments: the LM sequence cut after each step k that predicts ("A", then "A2", "A3" ... ; the rest "B"), each
    seeing every earlier one; per pair k a predictor segment ("P", "P2" ...) seeing the LM sequence up to the end
    of step k, at positions continuing from there; and the isolated step k+1 ("C", "C2" ...). A pair whose step
    k+1 does not fit in max_length is left out; with none left the row is the plain LM row.
    """
    ids, labels = main_sequence(enc, cfg, pad_id)
    steps = step_token_ranges(enc, cfg.step_separator)
    if len(steps) < 2:
        raise BadRecord(
            "fewer than 2 steps",
            f"step mode needs at least 2 assistant steps separated by {cfg.step_separator!r}, found {len(steps)}",
        )
    pairs = [k for k in range(len(steps) - 1) if steps[k + 1][1] < len(ids)]  # step k+1 within max_length
    pairs = pairs if cfg.step_pairs == "all" else [k for k in pairs[:1] if k == 0]
    if not pairs:  # max_length cut into step 1 or step 2: the plain LM row, LM loss only
        return build_regular_row(enc, cfg, pad_id)

    def suffix(n: int) -> str:  # A, A2, A3 ...
        return "" if n == 0 else str(n + 1)

    cuts = [steps[k][1] + 1 for k in pairs]
    row, main = Row(), list[str]()
    for n, (start, stop) in enumerate(zip([0, *cuts], [*cuts, len(ids)])):
        name = f"A{suffix(n)}" if n < len(cuts) else "B"
        row.add_segment(name, ids[start:stop], list(range(start, stop)), sees=tuple(main), labels=labels[start:stop])
        main.append(name)
    row.main_length = len(ids)
    k = cfg.predictors
    for n, (pair, cut) in enumerate(zip(pairs, cuts)):
        p_start = row.add_segment(
            f"P{suffix(n)}", predictor_ids(k), list(range(cut, cut + k)), sees=tuple(main[: n + 1])
        )
        target_start, target_end = steps[pair + 1]
        target = enc.ids[target_start : target_end + 1]
        c_start = row.add_segment(f"C{suffix(n)}", target, isolated_positions(len(target), cut + k, cfg), sees=())
        row.jepa_pairs.append((p_start + k - 1 if k else cut - 1, c_start + len(target) - 1))
    return row


def build_stp_row(enc: ChatEncoding, cfg: LayoutConfig, pad_id: int | None = None) -> Row:
    """STP: the plain LM row plus its path, the first user message's content followed by the last assistant
    message's content (what max_length keeps of it). A path shorter than 2 tokens has no span: LM loss only."""
    row = build_regular_row(enc, cfg, pad_id)
    user = next((s for s in enc.spans if s.role == "user"), None)
    assistant = next((s for s in reversed(enc.spans) if s.role == "assistant"), None)
    if user is None or assistant is None:
        raise BadRecord("no user or assistant message", "stp mode needs a user and an assistant message")
    messages = []
    for span in (user, assistant):
        end = min(span.content_end, row.main_length)  # content tokens [content_start, end)
        if end > span.content_start:
            messages.append((span.content_start - 1, end - 1))
    path = StpPath(tuple(messages), zero=cfg.stp_zero)
    if path.length >= 2:
        row.stp_paths.append(path)
    return row


def build_jepa_row(messages: list[dict[str, Any]], tokenizer: Tokenizer, cfg: LayoutConfig) -> Row:
    """Original LLM-JEPA: Text view (user message alone + K predictors) vs Code view (assistant message alone)."""
    enc = tokenizer.encode_chat(messages)
    ids, labels = main_sequence(enc, cfg, tokenizer.pad_id)
    row = Row()
    row.add_segment("M", ids, list(range(len(ids))), sees=(), labels=labels)
    row.main_length = len(ids)
    user = next((m for m in messages if m["role"] == "user"), None)
    assistant = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
    if user is None or assistant is None:
        raise BadRecord("no user or assistant message", "jepa mode needs a user and an assistant message")
    k = cfg.predictors
    text = tokenizer.encode_chat([user])
    u = text.spans[-1]
    insert_at = u.content_start if cfg.front_pred else u.content_end
    t_ids = text.ids[:insert_at] + predictor_ids(k) + text.ids[insert_at:]
    try:
        code = tokenizer.encode_chat([assistant])
    except TemplateRaised:  # a template that needs a user turn first (Gemma, Mistral, Llama-2): the official
        # code's Gemma treatment, the assistant content as a user message
        code = tokenizer.encode_chat([{"role": "user", "content": assistant["content"]}])
    d_ids = code.ids
    if len(t_ids) > cfg.max_length or len(d_ids) > cfg.max_length:
        return row  # a view does not fit: LM loss only
    t_start = row.add_segment("T", t_ids, isolated_positions(len(t_ids), len(ids), cfg), sees=())
    d_start = row.add_segment("D", d_ids, isolated_positions(len(d_ids), len(ids) + len(t_ids), cfg), sees=())
    if cfg.last_token is not None:  # the official code's `real_length + last_token`
        row.jepa_pairs.append((t_start + len(t_ids) + cfg.last_token, d_start + len(d_ids) + cfg.last_token))
    else:  # the last predictor (front_pred: the last content token, which the predictors shifted by k)
        row.jepa_pairs.append((t_start + u.content_end - 1 + k, d_start + code.spans[-1].content_end - 1))
    return row


def build_reversal_row(
    item: dict[str, Any], inverse_relation: dict[int, int], cfg: LayoutConfig, with_jepa: bool | None = None
) -> Row:
    """GPT2-JEPA: forward fact [e1, r, <mask>, e2] with LM labels on e2's two tokens; prediction = K predictors
    after it; target = the reverse fact [e2, r_inv, <mask>, e1] encoded alone. JEPA only on `train` items."""
    (e1, (rel,), (mask,)), (e2,) = item["input_text"], item["target_text"]
    ids = list(e1) + [rel, mask] + list(e2)
    trainable = [False] * (len(ids) - len(e2)) + [True] * len(e2)
    row = Row()
    row.add_segment("F", ids, list(range(len(ids))), sees=(), labels=shifted_labels(ids, trainable))
    row.main_length = len(ids)
    if with_jepa is None:
        with_jepa = item.get("type") == "train"
    if not with_jepa:
        return row
    k = cfg.predictors
    p_start = row.add_segment("P", predictor_ids(k), list(range(len(ids), len(ids) + k)), sees=("F",))
    reverse = list(e2) + [inverse_relation[rel], mask] + list(e1)
    r_start = row.add_segment("R", reverse, isolated_positions(len(reverse), len(ids) + k, cfg), sees=())
    row.jepa_pairs.append((p_start + k - 1 if k else len(ids) - 1, r_start + len(reverse) - 1))
    return row


def build_chat_row(messages: list[dict[str, Any]], tokenizer: Tokenizer, cfg: LayoutConfig) -> Row:
    """A chat record ({"messages": [...]}) laid out by its mode's row builder."""
    chat_row = MODES[cfg.mode].chat_row
    if chat_row is None:
        raise ValueError(f"mode {cfg.mode!r} does not take chat records")
    return chat_row(messages, tokenizer, cfg)


def pack_rows(rows: list[Row], pack_length: int) -> list[Row]:
    """Examples packed into the fewest rows of at most `pack_length` tokens, balanced so the rows end up about
    equally long (padding to the longest row is what packing saves): longest example first onto the currently
    shortest row (ties by position), each row keeping its examples in the given order. An example longer than
    `pack_length` gets a row of its own. A packed row concatenates its examples: segment ids and visibility are
    renumbered so no example sees another's segments; positions, labels and JEPA pairs stay per example."""
    lengths = [len(r.input_ids) for r in rows]
    n_rows = max(1, -(-sum(lengths) // pack_length))
    while True:
        groups: list[list[int]] = [[] for _ in range(n_rows)]
        filled = [0] * n_rows
        for i in sorted(range(len(rows)), key=lambda i: (-lengths[i], i)):
            g = min(range(n_rows), key=lambda g: (filled[g], g))
            groups[g].append(i)
            filled[g] += lengths[i]
        if all(f <= pack_length or len(g) == 1 for f, g in zip(filled, groups)):
            break
        n_rows += 1
    groups = sorted((sorted(g) for g in groups if g), key=lambda g: g[0])
    return [concat_rows([rows[i] for i in g]) if len(g) > 1 else rows[g[0]] for g in groups]


def concat_rows(rows: list[Row]) -> Row:
    """One row holding `rows` one after another, each attending only within itself (see `pack_rows`)."""
    out = Row()
    for row in rows:
        tokens, segments = len(out.input_ids), len(out.segment_names)
        out.input_ids += row.input_ids
        out.position_ids += row.position_ids
        out.segment_ids += [s + segments for s in row.segment_ids]
        out.labels += row.labels
        out.segment_names += row.segment_names
        out.visible += [tuple(s + segments for s in sees) for sees in row.visible]
        out.jepa_pairs += [(p + tokens, t + tokens) for p, t in row.jepa_pairs]
        out.stp_paths += [path.shifted(tokens) for path in row.stp_paths]
    out.main_length = len(out.input_ids)
    return out


# ------------------------------------------------------------------------------------------------ the modes


@dataclass(frozen=True)
class Mode:
    """A layout mode, declared once: how its rows are built and what the rest of the library reads about it.

    `source`: the data it lays out, "chat" ({"messages": [...]} records, through `chat_row`) or "reversal" (the
    GPT2-JEPA items, through `build_reversal_row`). `jepa_term`: its rows carry a JEPA term when jepa.lambda > 0
    (a row that lost it to truncation is counted). `predictor_tokens`: it trains the K predictor-token
    embeddings. `view_pairs`: its JEPA term compares (prediction, target) hidden states that the `views`
    diagnostics can read. `eval_views`: the views the evaluation hooks' diagnostics cut for a run of this mode
    when eval.views is null. `lambda_zero_warning`: said at start-up when it is trained with jepa.lambda = 0.
    """

    name: str
    doc: str
    source: str
    chat_row: Callable[[list[dict[str, Any]], Tokenizer, LayoutConfig], Row] | None = None
    jepa_term: bool = True
    predictor_tokens: bool = True
    view_pairs: bool = True
    eval_views: str = "jepa"
    lambda_zero_warning: str | None = None


MODES: dict[str, Mode] = {}
SOURCES = ("chat", "reversal")


def register_mode(mode: Mode) -> Mode:
    """Add a mode to MODES (its name once; a source the datasets know)."""
    if mode.name in MODES:
        raise ValueError(f"layout mode {mode.name!r} is registered twice")
    if mode.source not in SOURCES or (mode.source == "chat") != (mode.chat_row is not None):
        raise ValueError(f"layout mode {mode.name!r}: source must be one of {SOURCES}, with a chat_row for chat")
    MODES[mode.name] = mode
    return mode


def _encoded(build: Callable[[ChatEncoding, LayoutConfig, int | None], Row]) -> Callable[..., Row]:
    """A row builder over the encoded chat, as a chat_row (messages, tokenizer, cfg) -> Row."""
    return lambda messages, tokenizer, cfg: build(tokenizer.encode_chat(messages), cfg, tokenizer.pad_id)


register_mode(
    Mode(
        "regular",
        "plain fine-tuning: the LM sequence only",
        source="chat",
        chat_row=_encoded(build_regular_row),
        jepa_term=False,
        predictor_tokens=False,
        view_pairs=False,
    )
)
register_mode(
    Mode(
        "jepa",
        "LLM-JEPA: the Text view (user message + K predictors) against the Code view (the answer alone)",
        source="chat",
        chat_row=build_jepa_row,
    )
)
register_mode(
    Mode(
        "step",
        "Step-JEPA: system + user + step k + K predictors against step k+1 alone",
        source="chat",
        chat_row=_encoded(build_step_row),
        eval_views="step",
    )
)
register_mode(
    Mode("reversal", "GPT2-JEPA: the forward fact + K predictors against the reverse fact alone", source="reversal")
)
register_mode(
    Mode(
        "stp",
        "STP: the chord of a drawn span against the rest of the path, read off the LM pass",
        source="chat",
        chat_row=_encoded(build_stp_row),
        predictor_tokens=False,
        view_pairs=False,
        lambda_zero_warning="layout.mode: stp with jepa.lambda=0 trains plain SFT rows (no STP term); the "
        "released STP runs use jepa.lambda=0.02",
    )
)

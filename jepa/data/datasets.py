"""Training data sources: one class per kind of data, each turning its files into packed rows for a layout.

    ChatDataset      source "chat": a chat jsonl ({"messages": [...]} per line) + a tokenizer directory
    ReversalDataset  source "reversal": a reversal directory (train.json, valid.json, vocab.json), no tokenizer

A source knows the paths it needs (`check_paths`: one line naming the key and what to put there), its rows, its
pad id and vocabulary size (a model trained from scratch is built for it), and the files a run exports next to
the model (`export_files`). `dataset_class(mode)` picks the class that `reads` the source the layout mode
declares (`jepa.data.layouts.Mode`), so a new kind of data is a new class here, not a branch in the trainer.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from jepa.data.layouts import MODES, LayoutConfig, Row, build_chat_row, build_reversal_row
from jepa.data.reversal import load_reversal, relation_inverses
from jepa.data.sources import SkippedLines, chat_record, iter_jsonl
from jepa.losses import IGNORE_INDEX
from jepa.settings import Section, setting
from jepa.templates import TEMPLATES
from jepa.tokenizer import Tokenizer

# What a chat run exports next to the model, from its tokenizer directory.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
)


@dataclass
class DataConfig(Section):
    section: ClassVar[str] = "data"
    train: str = setting(
        "", 'chat jsonl ({"messages": [...]}) for regular / jepa / step / stp; the reversal directory for reversal'
    )
    limit: int | None = setting(None, "use the first N records only (a subset for quick runs)")
    skip_bad: bool = setting(False, "skip and count records that cannot be laid out, instead of failing")
    shuffle: bool = setting(True, "reshuffle every epoch (seeded by run.seed and the epoch)")
    date_string: str = setting(
        "26 Jul 2024", 'the Llama-3 templates\' "Today Date" (hand-written and Jinja), fixed for reproducibility'
    )
    chat_template: str | None = setting(
        None,
        "a registered chat template (llama3, chatml, qwen3, olmo2, or jinja: the tokenizer's own); None: detected",
    )
    pad_to_multiple: int = setting(1, "pad micro-batches to a multiple of this length (e.g. 8 on GPU)", resume=True)
    pack_length: int = setting(0, "> 0: pack each micro-batch's examples into rows of at most this many tokens")
    prefetch: int = setting(
        2, "optimizer steps collated ahead in a background thread (0 = collate in the loop)", resume=True
    )

    def check(self) -> None:
        super().check()
        self.require(bool(self.train), "train", "must name the training data (a jsonl file or a directory)")
        self.require(self.limit is None or self.limit >= 1, "limit", "must be >= 1")
        self.require(self.pad_to_multiple >= 1, "pad_to_multiple", "must be >= 1")
        self.require(self.pack_length >= 0, "pack_length", "must be >= 0 (0 = no packing)")
        self.require(self.prefetch >= 0, "prefetch", "must be >= 0 (0 = collate in the loop)")
        known = tuple(TEMPLATES)
        self.require(self.chat_template in (None, *known), "chat_template", f"must be one of {known} or null")


@dataclass
class Dataset:
    """Packed rows of one training set plus what the trainer and the start-up summary need."""

    reads: ClassVar[str] = ""  # the `Mode.source` it lays out

    rows: list[Row]
    pad_id: int
    vocab_size: int  # the ids the rows use are < vocab_size
    jepa_truncated: int = 0  # rows whose JEPA view did not survive max_length: they train with L_LM only
    skipped: SkippedLines = field(default_factory=SkippedLines)  # data.skip_bad: reason -> count, where
    source: str = ""  # the data path, for messages

    @staticmethod
    def check_paths(cfg: DataConfig, tokenizer_dir: str | None) -> None:
        """FileNotFoundError naming the config key when a file the source needs is missing."""
        raise NotImplementedError

    @classmethod
    def load(cls, cfg: DataConfig, layout: LayoutConfig, tokenizer_dir: str | None) -> Dataset:
        raise NotImplementedError

    def export_files(self, out_dir: Path) -> None:
        """Copy what a user of the exported model needs besides the weights (tokenizer or vocabulary)."""
        raise NotImplementedError

    @property
    def rows_without_labels(self) -> int:
        """Rows that truncation left without a single LM label token."""
        return sum(all(label == IGNORE_INDEX for label in r.labels) for r in self.rows)

    def truncation_problems(self, max_length: int, threshold: float = 0.05) -> list[str]:
        """Start-up warnings when more than `threshold` of the rows lost their JEPA term or every LM label to
        `layout.max_length`. Raises ValueError when no row keeps an LM label: nothing would be trained."""
        n = len(self.rows)
        no_labels = self.rows_without_labels
        if no_labels == n:
            raise ValueError(
                f"layout.max_length: {max_length} truncates all {n} rows of {self.source} before their first LM "
                "label; nothing would be trained (raise layout.max_length)"
            )
        problems = []
        for count, what in ((self.jepa_truncated, "their JEPA term"), (no_labels, "every LM label")):
            if count > threshold * n:
                problems.append(f"{count} of {n} rows ({count / n:.0%}) lose {what} to layout.max_length={max_length}")
        return problems

    def summary(self) -> str:
        n_jepa = sum(r.has_jepa for r in self.rows)
        text = f"{len(self.rows)} rows ({n_jepa} with a JEPA term"
        if self.jepa_truncated:
            text += f", {self.jepa_truncated} LM-only because their JEPA view was truncated by max_length"
        text += ")"
        if self.skipped:
            text += f"; skipped {sum(self.skipped.values())} records: {self.skipped.summary()}"
        return text


def _check_messages(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's messages, checked by the rules `prepare.py chat` applies (`chat_record`): training never
    takes a record that preparing would refuse (an empty answer would make a template token the JEPA target)."""
    return chat_record(obj)["messages"]


@dataclass
class ChatDataset(Dataset):
    reads: ClassVar[str] = "chat"
    tokenizer_dir: Path = Path()

    @staticmethod
    def check_paths(cfg: DataConfig, tokenizer_dir: str | None) -> None:
        tok = Path(tokenizer_dir or "")
        if not (tok / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"model.tokenizer: {tok / 'tokenizer.json'} not found (set model.tokenizer to a "
                "directory with tokenizer.json and tokenizer_config.json)"
            )
        if not Path(cfg.train).is_file():
            raise FileNotFoundError(f"data.train: {cfg.train} not found (a chat jsonl; GSM8K: python prepare.py gsm8k)")

    @classmethod
    def load(cls, cfg: DataConfig, layout: LayoutConfig, tokenizer_dir: str | None) -> ChatDataset:
        """Rows of the chat jsonl `cfg.train`. A record that cannot be laid out (e.g. fewer than 2 steps in step
        mode) raises ValueError("path:LINE: reason"), or is skipped and counted with `cfg.skip_bad`."""
        cls.check_paths(cfg, tokenizer_dir)
        assert tokenizer_dir is not None  # check_paths refuses a missing one
        tokenizer = Tokenizer.from_dir(tokenizer_dir, chat_template=cfg.chat_template, date_string=cfg.date_string)
        rows = tokenize_chats(cfg.train, tokenizer, layout, limit=cfg.limit, skip_bad=cfg.skip_bad)
        return cls(*rows, source=cfg.train, tokenizer_dir=Path(tokenizer_dir))

    def export_files(self, out_dir: Path) -> None:
        for name in TOKENIZER_FILES:
            if (self.tokenizer_dir / name).is_file():
                shutil.copy(self.tokenizer_dir / name, out_dir / name)


def tokenize_chats(
    path: str | Path, tokenizer: Tokenizer, layout: LayoutConfig, *, limit: int | None = None, skip_bad: bool = False
) -> tuple[list[Row], int, int, int, SkippedLines]:
    """(rows, pad id, vocabulary size, rows with a truncated view, skipped-by-reason) of a chat jsonl."""
    rows, skipped, truncated = [], SkippedLines(), 0
    for line_number, obj in iter_jsonl(path, (), skip_bad, skipped):
        where = f"{path}:{line_number}"
        try:
            row = build_chat_row(_check_messages(obj), tokenizer, layout)
        except ValueError as exc:  # BadRecord carries a short reason to group by
            if not skip_bad:
                raise ValueError(f"{where}: {exc}" if not str(exc).startswith(str(path)) else str(exc)) from None
            skipped.add(getattr(exc, "reason", str(exc)), where)
            continue
        if MODES[layout.mode].jepa_term and not row.has_jepa:
            truncated += 1
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if tokenizer.pad_id is None:
        raise ValueError(f"{path}: the tokenizer has no pad token and no eos token to pad with")
    return rows, tokenizer.pad_id, tokenizer.vocab_size, truncated, skipped


@dataclass
class ReversalDataset(Dataset):
    reads: ClassVar[str] = "reversal"
    data_dir: Path = Path()

    @staticmethod
    def check_paths(cfg: DataConfig, tokenizer_dir: str | None) -> None:
        if not Path(cfg.train).is_dir():
            raise FileNotFoundError(
                f"data.train: reversal directory {cfg.train} not found "
                f"(make it with: python prepare.py reversal [--preset small])"
            )

    @classmethod
    def load(cls, cfg: DataConfig, layout: LayoutConfig, tokenizer_dir: str | None = None) -> ReversalDataset:
        """Rows of the reversal training set (`train.json`); JEPA only on `train` items (docs/method.md §5).
        The vocabulary is the directory's vocab.json: no tokenizer."""
        cls.check_paths(cfg, tokenizer_dir)
        items, _, vocab = load_reversal(cfg.train)
        inverses = relation_inverses(vocab)
        items = items[: cfg.limit] if cfg.limit is not None else items
        rows = [build_reversal_row(item, inverses, layout) for item in items]
        return cls(rows, vocab["<pad>"], len(vocab), source=cfg.train, data_dir=Path(cfg.train))

    def export_files(self, out_dir: Path) -> None:
        shutil.copy(self.data_dir / "vocab.json", out_dir / "vocab.json")


DATASETS: tuple[type[Dataset], ...] = (ChatDataset, ReversalDataset)


def dataset_class(mode: str) -> type[Dataset]:
    """The dataset that reads the data `layout.mode` lays out (its Mode's `source`)."""
    return next(cls for cls in DATASETS if cls.reads == MODES[mode].source)

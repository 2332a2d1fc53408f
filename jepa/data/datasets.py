"""Training data sources: one class per kind of data, each turning its files into packed rows for a layout.

    ChatDataset      source "chat": a chat jsonl ({"messages": [...]} per line) + a tokenizer directory
    ReversalDataset  source "reversal": a reversal directory (train.json, valid.json, vocab.json), no tokenizer

A source knows the paths it needs (`check_paths`: one line naming the key and what to put there), its rows, its
pad id and vocabulary size (a model trained from scratch is built for it), and the files a run exports next to
the model (`export_files`). `dataset_class(mode)` picks the class that `reads` the source the layout mode
declares (`jepa.data.layouts.Mode`), so a new kind of data is a new class here, not a branch in the trainer.

Rows are laid out once: `load_dataset` reads them from the row cache (jepa/data/cache.py, memory-mapped arrays
keyed by the inputs' content, the settings and the layout code) and lays out and caches them only on a miss. A
source names the files its rows depend on (`cache_inputs`) and how to come back from its cached facts
(`cache_facts` / `from_cache`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from tqdm import tqdm

from jepa.data.cache import CorruptCache, RowCache, cache_key, default_cache_root
from jepa.data.layouts import MODES, LayoutConfig, build_chat_row, build_reversal_row
from jepa.data.reversal import load_reversal, relation_inverses
from jepa.data.rowstore import RowStore, RowStoreBuilder
from jepa.data.sources import SkippedLines, chat_record, iter_jsonl
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
    cache: bool = setting(
        True, "keep the laid-out rows in the row cache: later starts, resumes and other ranks memory-map them"
    )
    cache_dir: str | None = setting(
        None, "the row cache's directory; None: $JEPA_CACHE_DIR, else $XDG_CACHE_HOME/jepa/rows or ~/.cache/jepa/rows"
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
    """Laid-out rows of one training set plus what the trainer and the start-up summary need."""

    reads: ClassVar[str] = ""  # the `Mode.source` it lays out

    rows: RowStore
    pad_id: int
    vocab_size: int  # the ids the rows use are < vocab_size
    jepa_truncated: int = 0  # rows whose JEPA view did not survive max_length: they train with L_LM only
    skipped: SkippedLines = field(default_factory=SkippedLines)  # data.skip_bad: reason -> count, where
    source: str = ""  # the data path, for messages
    origin: str = ""  # how the rows were obtained (laid out, or read from the row cache), for the start-up line

    @staticmethod
    def check_paths(cfg: DataConfig, tokenizer_dir: str | None) -> None:
        """FileNotFoundError naming the config key when a file the source needs is missing."""
        raise NotImplementedError

    @classmethod
    def load(cls, cfg: DataConfig, layout: LayoutConfig, tokenizer_dir: str | None, progress: bool = False) -> Dataset:
        """Lay out the rows of `cfg.train` (`progress`: a progress bar on a terminal)."""
        raise NotImplementedError

    @staticmethod
    def cache_inputs(cfg: DataConfig, tokenizer_dir: str | None) -> list[Path]:
        """The files the rows depend on (their content is part of the row cache's key)."""
        raise NotImplementedError

    def cache_facts(self) -> dict[str, Any]:
        """What the row cache keeps besides the rows (JSON): what `from_cache` needs to rebuild this dataset."""
        return {
            "pad_id": self.pad_id,
            "vocab_size": self.vocab_size,
            "jepa_truncated": self.jepa_truncated,
            "skipped": dict(self.skipped),
            "skipped_where": self.skipped.where,
        }

    @classmethod
    def from_cache(cls, rows: RowStore, facts: dict[str, Any], cfg: DataConfig, tokenizer_dir: str | None) -> Dataset:
        skipped = SkippedLines()
        skipped.update(facts["skipped"])
        skipped.where = facts["skipped_where"]
        dataset = cls(
            rows=rows,
            pad_id=facts["pad_id"],
            vocab_size=facts["vocab_size"],
            jepa_truncated=facts["jepa_truncated"],
            skipped=skipped,
            source=cfg.train,
        )
        dataset.attach(cfg, tokenizer_dir)
        return dataset

    def attach(self, cfg: DataConfig, tokenizer_dir: str | None) -> None:
        """Set the source-specific paths a cached dataset needs for `export_files`."""

    def export_files(self, out_dir: Path) -> None:
        """Copy what a user of the exported model needs besides the weights (tokenizer or vocabulary)."""
        raise NotImplementedError

    @property
    def rows_without_labels(self) -> int:
        """Rows that truncation left without a single LM label token."""
        return self.rows.rows_without_labels()

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
        n_jepa = self.rows.rows_with_jepa()
        text = f"{len(self.rows)} rows ({n_jepa} with a JEPA term"
        if self.jepa_truncated:
            text += f", {self.jepa_truncated} LM-only because their JEPA view was truncated by max_length"
        text += ")"
        if self.skipped:
            text += f"; skipped {sum(self.skipped.values())} records: {self.skipped.summary()}"
        return text + (f"; {self.origin}" if self.origin else "")


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
    def load(
        cls, cfg: DataConfig, layout: LayoutConfig, tokenizer_dir: str | None, progress: bool = False
    ) -> ChatDataset:
        """Rows of the chat jsonl `cfg.train`. A record that cannot be laid out (e.g. fewer than 2 steps in step
        mode) raises ValueError("path:LINE: reason"), or is skipped and counted with `cfg.skip_bad`."""
        cls.check_paths(cfg, tokenizer_dir)
        assert tokenizer_dir is not None  # check_paths refuses a missing one
        tokenizer = Tokenizer.from_dir(tokenizer_dir, chat_template=cfg.chat_template, date_string=cfg.date_string)
        rows = tokenize_chats(cfg.train, tokenizer, layout, limit=cfg.limit, skip_bad=cfg.skip_bad, progress=progress)
        return cls(*rows, source=cfg.train, tokenizer_dir=Path(tokenizer_dir))

    @staticmethod
    def cache_inputs(cfg: DataConfig, tokenizer_dir: str | None) -> list[Path]:
        tokenizer = Path(tokenizer_dir or "")
        return [Path(cfg.train)] + [tokenizer / name for name in TOKENIZER_FILES if (tokenizer / name).is_file()]

    def attach(self, cfg: DataConfig, tokenizer_dir: str | None) -> None:
        self.tokenizer_dir = Path(tokenizer_dir or "")

    def export_files(self, out_dir: Path) -> None:
        for name in TOKENIZER_FILES:
            if (self.tokenizer_dir / name).is_file():
                shutil.copy(self.tokenizer_dir / name, out_dir / name)


def tokenize_chats(
    path: str | Path,
    tokenizer: Tokenizer,
    layout: LayoutConfig,
    *,
    limit: int | None = None,
    skip_bad: bool = False,
    progress: bool = False,
) -> tuple[RowStore, int, int, int, SkippedLines]:
    """(rows, pad id, vocabulary size, rows with a truncated view, skipped-by-reason) of a chat jsonl."""
    rows, skipped, truncated = RowStoreBuilder(), SkippedLines(), 0
    records = iter_jsonl(path, (), skip_bad, skipped)
    for line_number, obj in with_progress(records, progress, f"laying out {path}", total=limit):
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
    return rows.build(), tokenizer.pad_id, tokenizer.vocab_size, truncated, skipped


T = TypeVar("T")


def with_progress(items: Iterable[T], progress: bool, what: str, total: int | None = None) -> Iterator[T]:
    """`items`, with a progress bar on stderr when `progress` and stderr is a terminal (tqdm's own test)."""
    if not progress:
        yield from items
        return
    yield from tqdm(items, desc=what, total=total, unit=" records", mininterval=1.0, leave=False, disable=None)


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
    def load(
        cls, cfg: DataConfig, layout: LayoutConfig, tokenizer_dir: str | None = None, progress: bool = False
    ) -> ReversalDataset:
        """Rows of the reversal training set (`train.json`); JEPA only on `train` items (docs/method.md §5).
        The vocabulary is the directory's vocab.json: no tokenizer."""
        cls.check_paths(cfg, tokenizer_dir)
        items, _, vocab = load_reversal(cfg.train)
        inverses = relation_inverses(vocab)
        items = items[: cfg.limit] if cfg.limit is not None else items
        rows = RowStoreBuilder()
        for item in with_progress(items, progress, f"laying out {cfg.train}", total=len(items)):
            rows.append(build_reversal_row(item, inverses, layout))
        return cls(rows.build(), vocab["<pad>"], len(vocab), source=cfg.train, data_dir=Path(cfg.train))

    @staticmethod
    def cache_inputs(cfg: DataConfig, tokenizer_dir: str | None) -> list[Path]:
        return [Path(cfg.train) / "train.json", Path(cfg.train) / "vocab.json"]

    def attach(self, cfg: DataConfig, tokenizer_dir: str | None) -> None:
        self.data_dir = Path(cfg.train)

    def export_files(self, out_dir: Path) -> None:
        shutil.copy(self.data_dir / "vocab.json", out_dir / "vocab.json")


DATASETS: tuple[type[Dataset], ...] = (ChatDataset, ReversalDataset)


def dataset_class(mode: str) -> type[Dataset]:
    """The dataset that reads the data `layout.mode` lays out (its Mode's `source`)."""
    return next(cls for cls in DATASETS if cls.reads == MODES[mode].source)


def load_dataset(
    cfg: DataConfig,
    layout: LayoutConfig,
    tokenizer_dir: str | None,
    *,
    progress: bool = False,
    warn: Callable[[str], None] = print,
) -> Dataset:
    """The dataset of `cfg.train` laid out for `layout.mode`: from the row cache when `cfg.cache` and an entry for
    these inputs, settings and layout code exists (checked against its sha256s), else laid out (`progress`: a
    progress bar) and written there. A corrupt entry is said through `warn` and rebuilt; a cache directory that
    cannot be written is said and the run goes on uncached."""
    cls = dataset_class(layout.mode)
    started = time.perf_counter()
    if not cfg.cache:
        return cls.load(cfg, layout, tokenizer_dir, progress)
    cls.check_paths(cfg, tokenizer_dir)
    cache = RowCache(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_root())
    settings = {
        "layout": asdict(layout),
        "data": {k: getattr(cfg, k) for k in ("train", "limit", "skip_bad", "chat_template", "date_string")},
    }
    key = cache_key(kind=cls.reads, inputs=cls.cache_inputs(cfg, tokenizer_dir), settings=settings)
    try:
        hit = cache.read(key)
    except CorruptCache as exc:
        warn(f"data.cache_dir: the cached rows of {cfg.train} are corrupt ({exc}); laying them out again")
        hit = None
    if hit is not None:
        dataset = cls.from_cache(*hit, cfg, tokenizer_dir)
        dataset.origin = f"read from the row cache {cache.path(key)} in {time.perf_counter() - started:.1f} s"
        return dataset
    dataset = cls.load(cfg, layout, tokenizer_dir, progress)
    laid_out = time.perf_counter() - started
    try:
        entry = cache.write(key, dataset.rows, dataset.cache_facts())
        dataset.origin = f"laid out in {laid_out:.1f} s and cached in {entry}"
    except OSError as exc:
        warn(f"data.cache_dir: cannot write the row cache in {cache.root} ({exc}); the rows are not cached")
        dataset.origin = f"laid out in {laid_out:.1f} s"
    return dataset

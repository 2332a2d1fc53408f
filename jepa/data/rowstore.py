"""A dataset's laid-out rows as flat numpy arrays: compact in memory, saved and memory-mapped by the row cache.

A `RowStore` is a read-only sequence of `Row`s (jepa/data/layouts.py). Indexing one materialises that `Row` (its
lists from array slices, a few microseconds), so the collator, packing and STP spans see exactly the rows the
layout built; whole-set questions (largest token id, rows without labels) are answered on the arrays.

Arrays (n rows, N tokens, P JEPA pairs, Q STP paths, M path messages), all C-contiguous:

    token_offsets    int64 [n + 1]   row i's tokens are [token_offsets[i], token_offsets[i + 1])
    input_ids        int32 [N]       predictor tokens as -(k + 1), as in a Row
    position_ids     int32 [N]
    segment_ids      int16 [N]
    labels           int32 [N]       pre-shifted, IGNORE_INDEX where not trained
    main_length      int32 [n]
    structure        int32 [n]       index into `structures`: (segment_names, visible) of the row
    pair_offsets     int64 [n + 1]   into pairs
    pairs            int32 [P, 2]    (prediction, target) token indices within the row
    path_offsets     int64 [n + 1]   into path_zero / message_offsets
    path_zero        bool  [Q]
    message_offsets  int64 [Q + 1]   into messages
    messages         int32 [M, 2]    (anchor, last) of each STP path message

Rows with several segments share their (names, visibility) structure: a dataset has a handful of them (reversal:
two, step: one per number of pairs), so they are kept once, as data, in `structures`. STP spans are never stored
(they are drawn per optimizer step).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from typing import Any, overload

import numpy as np

from jepa.data.layouts import Row, StpPath
from jepa.losses import IGNORE_INDEX

Structure = tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]  # (segment_names, visible)

ARRAY_DTYPES: dict[str, Any] = {
    "token_offsets": np.int64,
    "input_ids": np.int32,
    "position_ids": np.int32,
    "segment_ids": np.int16,
    "labels": np.int32,
    "main_length": np.int32,
    "structure": np.int32,
    "pair_offsets": np.int64,
    "pairs": np.int32,
    "path_offsets": np.int64,
    "path_zero": np.bool_,
    "message_offsets": np.int64,
    "messages": np.int32,
}
PAIRED = ("pairs", "messages")  # [*, 2] arrays


class RowStoreBuilder:
    """Appends rows into compact buffers (array.array, 4 bytes a token id, not a Python int each), so laying out a
    large set never holds it as lists of Python ints."""

    def __init__(self) -> None:
        self.buffers: dict[str, array[Any]] = {
            "input_ids": array("i"),
            "position_ids": array("i"),
            "segment_ids": array("h"),
            "labels": array("i"),
            "main_length": array("i"),
            "structure": array("i"),
            "pairs": array("i"),
            "path_zero": array("b"),
            "messages": array("i"),
            "token_offsets": array("q", [0]),
            "pair_offsets": array("q", [0]),
            "path_offsets": array("q", [0]),
            "message_offsets": array("q", [0]),
        }
        self.structures: dict[Structure, int] = {}

    def __len__(self) -> int:
        return len(self.buffers["main_length"])

    def append(self, row: Row) -> None:
        if any(path.span is not None for path in row.stp_paths):
            raise ValueError("a RowStore keeps rows as laid out: STP spans are drawn per step, never stored")
        if len(row.segment_names) > np.iinfo(np.int16).max:
            raise ValueError(f"a row has {len(row.segment_names)} segments; a RowStore keeps at most 32767")
        b = self.buffers
        b["input_ids"].extend(row.input_ids)
        b["position_ids"].extend(row.position_ids)
        b["segment_ids"].extend(row.segment_ids)
        b["labels"].extend(row.labels)
        b["token_offsets"].append(len(b["input_ids"]))
        b["main_length"].append(row.main_length)
        key = (tuple(row.segment_names), tuple(tuple(v) for v in row.visible))
        b["structure"].append(self.structures.setdefault(key, len(self.structures)))
        for pair in row.jepa_pairs:
            b["pairs"].extend(pair)
        b["pair_offsets"].append(len(b["pairs"]) // 2)
        for path in row.stp_paths:
            b["path_zero"].append(path.zero)
            for message in path.messages:
                b["messages"].extend(message)
            b["message_offsets"].append(len(b["messages"]) // 2)
        b["path_offsets"].append(len(b["path_zero"]))

    def build(self) -> RowStore:
        arrays = {}
        for name, buffer in self.buffers.items():
            values = np.frombuffer(buffer, dtype=buffer.typecode).astype(ARRAY_DTYPES[name])
            arrays[name] = values.reshape(-1, 2) if name in PAIRED else values
        return RowStore(arrays, list(self.structures))


class RowStore(Sequence[Row]):
    """Read-only rows over the arrays of the module docstring. `lm_only`: every row as `Row.lm_only()` (a view,
    the arrays are shared). `store[i]` is a fresh `Row` (safe to modify); `store[a:b]` a list of them."""

    def __init__(self, arrays: dict[str, np.ndarray], structures: list[Structure], lm_only: bool = False) -> None:
        missing = set(ARRAY_DTYPES) - set(arrays)
        if missing:
            raise ValueError(f"RowStore: missing arrays {sorted(missing)}")
        self.arrays, self.structures, self.lm_only_rows = arrays, structures, lm_only
        self.n = len(arrays["main_length"])

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> RowStore:
        builder = RowStoreBuilder()
        for row in rows:
            builder.append(row)
        return builder.build()

    def lm_only(self) -> RowStore:
        return RowStore(self.arrays, self.structures, lm_only=True)

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, index: int) -> Row: ...

    @overload
    def __getitem__(self, index: slice) -> list[Row]: ...

    def __getitem__(self, index: int | slice) -> Row | list[Row]:
        if isinstance(index, slice):
            return [self.row(i) for i in range(*index.indices(self.n))]
        if not -self.n <= index < self.n:
            raise IndexError(f"row {index} of {self.n}")
        return self.row(index % self.n)

    def row(self, i: int) -> Row:
        a = self.arrays
        start, stop = int(a["token_offsets"][i]), int(a["token_offsets"][i + 1])
        names, visible = self.structures[int(a["structure"][i])]
        paths = []
        for p in range(int(a["path_offsets"][i]), int(a["path_offsets"][i + 1])):
            m0, m1 = int(a["message_offsets"][p]), int(a["message_offsets"][p + 1])
            messages = tuple((int(anchor), int(last)) for anchor, last in a["messages"][m0:m1])
            paths.append(StpPath(messages, zero=bool(a["path_zero"][p])))
        p0, p1 = int(a["pair_offsets"][i]), int(a["pair_offsets"][i + 1])
        row = Row(
            input_ids=a["input_ids"][start:stop].tolist(),
            position_ids=a["position_ids"][start:stop].tolist(),
            segment_ids=a["segment_ids"][start:stop].tolist(),
            labels=a["labels"][start:stop].tolist(),
            segment_names=list(names),
            visible=list(visible),
            main_length=int(a["main_length"][i]),
            jepa_pairs=[(int(p), int(t)) for p, t in a["pairs"][p0:p1]],
            stp_paths=paths,
        )
        return row.lm_only() if self.lm_only_rows else row

    # ------------------------------------------------------------------------------ whole-set questions

    def _token_mask(self) -> np.ndarray | slice:
        """The tokens the rows have: all, or each row's LM prefix when `lm_only`."""
        if not self.lm_only_rows:
            return slice(None)
        offsets = self.arrays["token_offsets"]
        lengths = np.diff(offsets)
        within = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths)
        return within < np.repeat(self.arrays["main_length"], lengths)

    def max_token_id(self) -> int:
        ids = self.arrays["input_ids"][self._token_mask()]
        return int(ids.max()) if ids.size else 0

    def max_position(self) -> int:
        positions = self.arrays["position_ids"][self._token_mask()]
        return int(positions.max()) if positions.size else 0

    def rows_without_labels(self) -> int:
        """Rows with no LM label token (JEPA segments never carry labels, so `lm_only` does not change it)."""
        labelled = np.concatenate([[0], np.cumsum(self.arrays["labels"] != IGNORE_INDEX)])
        offsets = self.arrays["token_offsets"]
        return int(np.count_nonzero(labelled[offsets[1:]] == labelled[offsets[:-1]]))

    def rows_with_jepa(self) -> int:
        """Rows with a JEPA term (a view pair or an STP path), as `Row.has_jepa`."""
        if self.lm_only_rows:
            return 0
        has = (np.diff(self.arrays["pair_offsets"]) > 0) | (np.diff(self.arrays["path_offsets"]) > 0)
        return int(np.count_nonzero(has))

    def nbytes(self) -> int:
        return sum(int(v.nbytes) for v in self.arrays.values())

"""RowStore: the rows every mode lays out, stored as arrays, come back equal to the rows the builders made."""

import numpy as np
import pytest

from jepa.data.layouts import LayoutConfig, Row, StpPath, build_chat_row, build_reversal_row, draw_stp_spans
from jepa.data.reversal import generate_reversal, load_reversal, relation_inverses
from jepa.data.rowstore import RowStore
from jepa.data.sources import gsm8k_record
from jepa.losses import IGNORE_INDEX
from jepa.tokenizer import Tokenizer

CHAT_LAYOUTS = {
    "regular": LayoutConfig(mode="regular"),
    "jepa": LayoutConfig(mode="jepa", predictors=2),
    "step_all_pairs": LayoutConfig(mode="step", step_pairs="all", predictors=3),
    "step_truncated": LayoutConfig(mode="step", max_length=100),  # the third row loses its view
    "stp": LayoutConfig(mode="stp", stp_zero=True),
}


RECORDS = [
    gsm8k_record("What is 2 + 3?", "Two plus three.\nIt is 5.\n#### 5"),
    gsm8k_record("Tom has 3 apples and buys 5 more. How many?", "He had 3.\nHe buys 5.\n3 + 5 = 8.\n#### 8"),
    gsm8k_record(
        "A box holds 4 rows of 6 eggs. How many eggs?", f"{'Each row has six eggs. ' * 12}\n4 * 6 = 24.\n#### 24"
    ),
]


def chat_rows(smollm2_dir, layout):
    tokenizer = Tokenizer.from_dir(smollm2_dir)
    return [build_chat_row(record["messages"], tokenizer, layout) for record in RECORDS]


def check_equal(store: RowStore, rows: list[Row]) -> None:
    assert len(store) == len(rows)
    for i, row in enumerate(rows):
        assert store[i] == row, f"row {i}"
    assert store[-1] == rows[-1] and store[1:3] == rows[1:3]
    with pytest.raises(IndexError):
        store[len(rows)]
    # the whole-set questions, against the rows
    assert store.max_token_id() == max(max(r.input_ids) for r in rows)
    assert store.max_position() == max(max(r.position_ids) for r in rows)
    assert store.rows_with_jepa() == sum(r.has_jepa for r in rows)
    assert store.rows_without_labels() == sum(all(x == IGNORE_INDEX for x in r.labels) for r in rows)


@pytest.mark.parametrize("name", CHAT_LAYOUTS)
def test_chat_rows_of_every_mode_round_trip(smollm2_dir, name):
    rows = chat_rows(smollm2_dir, CHAT_LAYOUTS[name])
    assert any(r.has_jepa for r in rows) == (name != "regular")
    store = RowStore.from_rows(rows)
    check_equal(store, rows)
    lm_only = [r.lm_only() for r in rows]
    check_equal(store.lm_only(), lm_only)
    assert store.lm_only().rows_with_jepa() == 0


def test_reversal_rows_round_trip_and_are_compact(tmp_path):
    generate_reversal(
        tmp_path / "rev", n_learning=20, n_test=10, n_first=10, n_last=10, comb=3, n_relations=2, n_valid=5
    )
    items, _, vocab = load_reversal(tmp_path / "rev")
    rows = [build_reversal_row(item, relation_inverses(vocab), LayoutConfig(mode="reversal")) for item in items]
    assert {r.has_jepa for r in rows} == {True, False}  # train items have the reverse view, test items not
    store = RowStore.from_rows(rows)
    check_equal(store, rows)
    assert len(store.structures) == 2  # two (segments, visibility) shapes shared by all rows
    assert store.nbytes() < 20 * sum(len(r.input_ids) for r in rows)  # ~14 bytes a token


def test_stp_paths_keep_their_messages_and_spans_are_drawn_on_the_copy():
    row = Row()
    row.add_segment("M", [5, 6, 7, 8, 9], [0, 1, 2, 3, 4], sees=(), labels=[6, 7, 8, 9, IGNORE_INDEX])
    row.main_length = 5
    row.stp_paths.append(StpPath(((0, 2), (2, 4)), zero=False))
    store = RowStore.from_rows([row, row.lm_only()])
    assert store[0] == row and store[1] == row.lm_only()
    drawn = draw_stp_spans(store[0], seed=1, step=3, example=0)
    assert drawn.stp_paths[0].span is not None and store[0].stp_paths[0].span is None
    with pytest.raises(ValueError, match="spans are drawn per step"):
        RowStore.from_rows([drawn])


def test_rows_are_fresh_objects():
    row = Row()
    row.add_segment("M", [1, 2], [0, 1], sees=(), labels=[2, IGNORE_INDEX])
    row.main_length = 2
    store = RowStore.from_rows([row])
    first = store[0]
    first.input_ids.append(3)
    assert store[0] == row
    assert isinstance(store.arrays["input_ids"], np.ndarray) and store.arrays["input_ids"].dtype == np.int32

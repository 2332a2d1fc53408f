"""Chat data in the formats people have (jepa/data/formats.py), through `prepare.py chat` / `jepa prepare chat`."""

import csv
import json

import pytest

from jepa.cli.prepare import main as prepare_main
from jepa.data.formats import CHAT_FORMATS, parse_fields, prepare_chat

ANSWER = "First, 2 + 2 = 4.\n\nSo it is 4."
EXPECTED = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": ANSWER}]


def read_out(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sharegpt_alpaca_and_messages_become_the_same_chat_records(tmp_path):
    sharegpt = {"conversations": [{"from": "human", "value": "What is 2 + 2?"}, {"from": "gpt", "value": ANSWER}],
                "id": 7}  # fmt: skip
    alpaca = {"instruction": "What is 2 + 2?", "input": "", "output": ANSWER}
    messages = {"messages": EXPECTED}
    src = tmp_path / "mixed.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in (sharegpt, alpaca, messages)))
    summary = prepare_chat([src], tmp_path / "out")  # auto: detected per record
    records = read_out(tmp_path / "out" / "mixed.jsonl")
    assert [r["messages"] for r in records] == [EXPECTED] * 3 and records[0]["id"] == 7
    assert summary["splits"]["mixed"]["steps_histogram"] == {2: 3}
    with_input = prepare_chat([_json(tmp_path / "a.json", [{**alpaca, "input": "Show steps."}])], tmp_path / "o2")
    assert read_out(tmp_path / "o2" / "a.jsonl")[0]["messages"][0]["content"] == "What is 2 + 2?\n\nShow steps."
    assert with_input["splits"]["a"]["records"] == 1 and set(CHAT_FORMATS) >= {"messages", "sharegpt", "alpaca"}


def _json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_named_fields_from_csv_and_json(tmp_path):
    src = tmp_path / "qa.csv"
    with src.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["question", "answer", "context"])
        writer.writeheader()
        writer.writerow({"question": "What is 2 + 2?", "answer": ANSWER, "context": "Be brief."})
    fields = parse_fields("system=context, user=question,assistant=answer")
    prepare_chat([src], tmp_path / "out", format="fields", fields=fields)
    (record,) = read_out(tmp_path / "out" / "qa.jsonl")
    assert record["messages"] == [{"role": "system", "content": "Be brief."}, *EXPECTED] and "question" not in record
    with pytest.raises(ValueError, match="--fields 'user:question'"):
        parse_fields("user:question")
    with pytest.raises(ValueError, match="--format fields needs --fields user=KEY,assistant=KEY"):
        prepare_chat([src], tmp_path / "o", format="fields", fields={"user": "question"})


def test_every_bad_record_names_its_place_or_is_skipped_and_counted(tmp_path):
    good = {"instruction": "What is 2 + 2?", "output": ANSWER}
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(good) + "\n" + json.dumps({"conversations": [{"from": "bot", "value": "x"}]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: conversations\[0\]: 'from' 'bot' is not one of"):
        prepare_chat([src], tmp_path / "o1")
    summary = prepare_chat([src], tmp_path / "o2", skip_bad=True)
    assert summary["splits"]["bad"]["records"] == 1 and summary["splits"]["bad"]["dropped"] == {"bad role": 1}
    array = _json(tmp_path / "arr.json", [good, {"instruction": "Hi"}, "text"])
    with pytest.raises(ValueError, match=r"arr.json\[1\]: expected a string field 'output'"):
        prepare_chat([array], tmp_path / "o3", format="alpaca")
    summary = prepare_chat([array], tmp_path / "o4", skip_bad=True, format="alpaca")
    assert summary["splits"]["arr"]["dropped"] == {"missing field 'output'": 1, "not an object": 1}
    rows = tmp_path / "rows.csv"
    rows.write_text("q,a\nWhat is 2 + 2?,\n")
    with pytest.raises(ValueError, match=r"rows.csv:2: no non-empty assistant message"):
        prepare_chat([rows], tmp_path / "o5", format="fields", fields={"user": "q", "assistant": "a"})
    unknown = _json(tmp_path / "u.json", [{"prompt": "x", "completion": "y"}])
    with pytest.raises(ValueError, match=r"u.json\[0\]: a record with none of messages / conversations"):
        prepare_chat([unknown], tmp_path / "o6")
    with pytest.raises(ValueError, match=r"notes.txt: unknown file type '.txt'"):
        prepare_chat([_json(tmp_path / "notes.txt", [])], tmp_path / "o7")


def test_parquet_reads_with_the_extra_or_says_which_extra(tmp_path):
    path = tmp_path / "data.parquet"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path.write_bytes(b"PAR1")
        with pytest.raises(
            ValueError, match=r"data.parquet: reading parquet needs pyarrow: pip install 'jepa\[parquet\]'"
        ):
            prepare_chat([path], tmp_path / "out")
        return
    pq.write_table(pa.Table.from_pylist([{"instruction": "What is 2 + 2?", "output": ANSWER}]), path)
    prepare_chat([path], tmp_path / "out")
    assert read_out(tmp_path / "out" / "data.jsonl")[0]["messages"] == EXPECTED


def test_the_command_line_takes_a_format_and_fields(tmp_path, capsys):
    src = _json(tmp_path / "qa.json", [{"q": "What is 2 + 2?", "a": ANSWER}])
    out = tmp_path / "out"
    assert prepare_main(["chat", "--src", str(src), "--out", str(out), "--format", "fields", "--fields",
                         "user=q,assistant=a"]) == 0  # fmt: skip
    assert read_out(out / "qa.jsonl")[0]["messages"] == EXPECTED
    assert prepare_main(["chat", "--src", str(src), "--out", str(tmp_path / "o2")]) == 2  # auto cannot tell
    assert "qa.json[0]: a record with none of" in capsys.readouterr().err

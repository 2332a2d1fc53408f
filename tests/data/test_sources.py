import json
import subprocess
import sys
from pathlib import Path

import pytest

from jepa.data import sources
from jepa.data.sources import (
    GSM8K_SYSTEM_PROMPT,
    SEED_SYSTEM_PROMPT,
    STEP_SEPARATOR,
    BadRecord,
    assistant_steps,
    chat_record,
    gsm8k_record,
    prepare_gsm8k,
    prepare_steps,
    read_jsonl,
    split_seed_response,
    steps_record,
)

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
REAL_GSM8K = REPO.parent / "shared" / "data" / "gsm8k"


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ GSM8K


def test_gsm8k_record_shape_and_calculator_stripping():
    record = gsm8k_record(" Q? ", "Half is 48/2 = <<48/2=24>>24.\n\nTotal 48+24 = <<48+24=72>>72.\n#### 72")
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
    assert record["messages"][0]["content"] == GSM8K_SYSTEM_PROMPT
    assert record["messages"][1]["content"] == "Q?"
    assert record["messages"][2]["content"] == "Half is 48/2 = 24.\n\nTotal 48+24 = 72.\n\n#### 72"
    assert record["answer"] == "72"
    kept = gsm8k_record("Q?", "Half is 48/2 = <<48/2=24>>24.\nTotal 48+24 = <<48+24=72>>72.\n#### 72", True)
    assert assistant_steps(kept)[0] == "Half is 48/2 = <<48/2=24>>24."


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("One step = <<1=1>>1.\n#### 1", "fewer than 2 steps"),
        ("a.\nb.\nno final line", "empty answer"),
        ("a.\nb.\n####   ", "empty answer"),
    ],
)
def test_gsm8k_record_bad(answer, reason):
    with pytest.raises(BadRecord) as info:
        gsm8k_record("Q?", answer)
    assert info.value.reason == reason


@pytest.mark.skipif(not (REAL_GSM8K / "train.jsonl").is_file(), reason="real GSM8K not present")
def test_prepare_real_gsm8k(tmp_path):
    summary = prepare_gsm8k(REAL_GSM8K, tmp_path)
    assert summary["splits"]["train"]["records"] == 7473
    assert summary["splits"]["test"]["records"] == 1319
    assert summary["splits"]["train"]["dropped"] == {}
    assert min(summary["splits"]["train"]["steps_histogram"]) >= 2
    for split in ("train", "test"):
        records = read_lines(tmp_path / f"{split}.jsonl")
        for record in records:
            steps = assistant_steps(record)
            assert len(steps) >= 3  # >= 2 reasoning steps + the "#### N" line
            assert all(step and step == step.strip() and STEP_SEPARATOR not in step for step in steps)
            assert steps[-1] == f"#### {record['answer']}" and record["answer"]
            assert "<<" not in record["messages"][2]["content"]
    first = read_lines(tmp_path / "train.jsonl")[0]
    assert first["messages"][2]["content"].startswith("Natalia sold 48/2 = 24 clips in May.\n\n")


def test_prepare_gsm8k_bad_lines(tmp_path):
    src = FIXTURES / "gsm8k_bad"
    with pytest.raises(ValueError, match=r"gsm8k_bad/train\.jsonl:2: not JSON"):
        prepare_gsm8k(src, tmp_path)
    assert not (tmp_path / "train.jsonl").exists()  # nothing half-written

    summary = prepare_gsm8k(src, tmp_path, skip_bad=True)
    train = summary["splits"]["train"]
    assert train["records"] == 2
    assert train["dropped"] == {"not JSON": 1, "missing field 'answer'": 1, "empty answer": 2, "fewer than 2 steps": 1}
    records = read_lines(tmp_path / "train.jsonl")
    assert [r["answer"] for r in records] == ["10", "1,200"]
    # a blank line inside the source answer never becomes an empty step
    assert assistant_steps(records[1]) == ["We add 1000 + 200 = 1200.", "So the total is 1,200.", "#### 1,200"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "q", "answer": ', "x.jsonl:1: not JSON"),
        ('["a"]', "x.jsonl:1: not a JSON object"),
        ('{"question": "q"}', "x.jsonl:1: missing field 'answer'"),
        ('{"question": "q", "answer": "  "}', "x.jsonl:1: empty field 'answer'"),
        ('{"question": "q", "answer": 3}', "x.jsonl:1: field 'answer' is not a string"),
    ],
)
def test_read_jsonl_errors(tmp_path, line, message):
    path = tmp_path / "x.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError) as info:
        read_jsonl(path, ("question", "answer"), skip_bad=False)
    assert str(info.value).startswith(f"{tmp_path}/{message}")
    records, bad = read_jsonl(path, ("question", "answer"), skip_bad=True)
    assert records == [] and sum(bad.values()) == 1


def test_read_jsonl_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl", ("question",))


def test_gsm8k_download_failure_gives_one_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(sources.urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match=r"pass --src DIR.*train\.jsonl and test\.jsonl"):
        prepare_gsm8k(None, tmp_path)


def test_gsm8k_src_without_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train\.jsonl: no such file; --src must be a directory"):
        prepare_gsm8k(tmp_path, tmp_path / "out")


# -------------------------------------------------------------------------------------- the seed's format


def test_seed_markers_and_continuations():
    response = (
        "**Step 1:** First we look at the numbers.\n\nAn unmarked paragraph continues it.\n\n"
        "Step 2: Second marker form is used here.\n\n2. Third marker form, numbered list.\n\n"
        "STEP 4: upper-case marker is also a marker.\n\n**step 5:** lower-case bold marker too."
    )
    assert split_seed_response(response) == [
        "**Step 1:** First we look at the numbers.\nAn unmarked paragraph continues it.",
        "Step 2: Second marker form is used here.",
        "2. Third marker form, numbered list.",
        "STEP 4: upper-case marker is also a marker.",
        "**step 5:** lower-case bold marker too.",
    ]


def test_seed_think_paragraphs_dropped():
    response = (
        "<think>\nhidden reasoning here, long enough\n\n</think>\n\nStep 1: visible step number one.\n\n"
        "Step 2: visible step number two."
    )
    assert split_seed_response(response) == ["Step 1: visible step number one.", "Step 2: visible step number two."]
    # The rule is per paragraph (docs/method.md §3): only paragraphs *starting* with a think tag go.
    inner = "<think>\nfirst\n\nthe middle of a long thinking block\n\n</think>\n\nStep 1: visible step number one."
    assert split_seed_response(inner) == ["the middle of a long thinking block", "Step 1: visible step number one."]


def test_seed_length_rules():
    # preamble of exactly 30 chars is dropped, 31 kept; steps of exactly 20 chars dropped, 21 kept
    p30, p31 = "a" * 30, "b" * 31
    s20, s21 = "Step 1: " + "x" * 12, "Step 2: " + "y" * 13
    assert (len(s20), len(s21)) == (20, 21)
    assert split_seed_response(f"{p30}\n\n{s20}\n\n{s21}") == [s21]
    assert split_seed_response(f"{p31}\n\n{s20}\n\n{s21}") == [p31, s21]
    # the preamble is every unmarked paragraph before the first marker, joined
    assert split_seed_response("short one here.\n\nshort two, still.\n\n" + s21) == [
        "short one here.\nshort two, still.",
        s21,
    ]


def test_seed_decimal_is_not_a_marker():
    assert split_seed_response("1. The rope is seven metres long.\n\n3.5 metres for each of the pieces.") == [
        "1. The rope is seven metres long.\n3.5 metres for each of the pieces."
    ]


def test_steps_record_fixture():
    records = [json.loads(line) for line in (FIXTURES / "seed_steps.jsonl").read_text().splitlines()]
    out = [steps_record(r["question"], r["answer"], r["deepseek_response"]) for r in records]
    assert all(o["messages"][0]["content"] == SEED_SYSTEM_PROMPT for o in out)
    assert [o["answer"] for o in out] == ["8", "24", "3.5"]
    assert assistant_steps(out[0]) == [
        "We need to add the apples Tom has and buys.",
        "**Step 1:** Tom starts with 3 apples in his basket.",
        "**Step 2:** He buys 5 more, so 3 + 5 = 8 apples.\n\\boxed{8}",
    ]
    assert assistant_steps(out[1]) == [
        "step 1: Each row has 6 eggs in it.\nThere are 4 rows in the box.",
        "Step 3: Multiply: 4 * 6 = 24 eggs in total.\n\\boxed{24}",
    ]
    assert assistant_steps(out[2]) == [
        "1. The rope is 7 metres long before cutting.",
        "2. Cutting in half divides the length by 2.\n3.5 metres is what we get for each piece.",
        "3. So each piece is \\boxed{3.5} metres.",
    ]


def test_steps_record_fewer_than_two_steps_and_empty_answer():
    assert steps_record("q", "5", "**Step 1:** the only step long enough.\n\n\\boxed{5}") is None
    with pytest.raises(BadRecord, match="empty answer"):
        steps_record("q", "#### ", "Step 1: long enough step one.\n\nStep 2: long enough step two.")


def test_prepare_steps_bad_lines(tmp_path):
    src = FIXTURES / "seed_mixed.jsonl"
    with pytest.raises(ValueError, match=r"seed_mixed\.jsonl:2: not JSON"):
        prepare_steps([src], tmp_path)
    summary = prepare_steps([src], tmp_path, skip_bad=True)
    split = summary["splits"]["seed_mixed"]
    assert split["records"] == 2
    assert split["steps_histogram"] == {2: 1, 3: 1}
    assert split["dropped"] == {
        "not JSON": 1,
        "missing field 'deepseek_response'": 1,
        "empty answer": 1,
        "fewer than 2 steps": 1,
        "not an object": 1,
    }
    assert len(read_lines(tmp_path / "seed_mixed.jsonl")) == 2


@pytest.mark.parametrize(("line_no", "message"), [(4, "empty answer"), (5, "fewer than 2 steps")])
def test_prepare_steps_record_errors_name_the_line(tmp_path, line_no, message):
    lines = (FIXTURES / "seed_mixed.jsonl").read_text().splitlines()
    src = tmp_path / "one.jsonl"
    src.write_text(lines[0] + "\n" + lines[line_no - 1] + "\n")
    with pytest.raises(ValueError, match=rf"one\.jsonl:2: {message}"):
        prepare_steps([src], tmp_path / "out")


# ------------------------------------------------------------------------------------------------------ CLI


def run_prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "prepare.py"), *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


@pytest.mark.slow  # a new process
def test_cli_error_is_one_line_exit_2(tmp_path):
    result = run_prepare("steps", "--src", str(FIXTURES / "seed_mixed.jsonl"), "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {FIXTURES / 'seed_mixed.jsonl'}:2: not JSON (Expecting value)"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # a new process
def test_cli_steps_success_then_skip(tmp_path):
    args = ("steps", "--src", str(FIXTURES / "seed_steps.jsonl"), "--out", str(tmp_path))
    result = run_prepare(*args)
    assert result.returncode == 0, result.stderr
    assert "seed_steps: 3 records" in result.stdout
    assert len(read_lines(tmp_path / "seed_steps.jsonl")) == 3
    again = run_prepare(*args)
    assert again.returncode == 0 and "exists, skipping" in again.stdout


# ------------------------------------------------------------------------------- encodings and the skip summary


def _write_lines(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_invalid_utf8_names_the_line_or_is_skipped(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"question": "q", "answer": "a"}).encode()
    _write_lines(path, [good, b'{"question": "caf\xe9", "answer": "a"}', good])
    with pytest.raises(ValueError, match=rf"^{path}:2: not UTF-8 \(byte 18 of the line\)$"):
        read_jsonl(path, ("question", "answer"))
    records, skipped = read_jsonl(path, ("question", "answer"), skip_bad=True)
    assert len(records) == 2 and skipped == {"not UTF-8": 1} and skipped.where == {"not UTF-8": [f"{path}:2"]}


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    _write_lines(
        path,
        [
            b"\xef\xbb\xbf" + json.dumps({"question": "q1", "answer": "a"}).encode(),
            json.dumps({"question": "q2", "answer": "a"}).encode(),
        ],
    )
    for skip_bad in (False, True):
        records, skipped = read_jsonl(path, ("question", "answer"), skip_bad=skip_bad)
        assert [r["question"] for r in records] == ["q1", "q2"] and not skipped


def test_the_skip_summary_groups_by_reason_with_the_first_lines(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = json.dumps({"question": "q", "answer": "a"}).encode()
    _write_lines(path, [b"{", good, b"[1]", b"{", b"{", b"{", json.dumps({"question": "q"}).encode()])
    _, skipped = read_jsonl(path, ("question", "answer"), skip_bad=True)
    assert skipped.summary() == (
        f"4 not JSON ({path}:1, {path}:4, {path}:5, ...); "
        f"1 not an object ({path}:3); 1 missing field 'answer' ({path}:7)"
    )


def test_chat_records_without_an_assistant_are_skipped_and_grouped(tmp_path, smollm2_dir):
    from jepa.data.datasets import ChatDataset, DataConfig
    from jepa.data.layouts import LayoutConfig

    path = tmp_path / "chat.jsonl"
    no_assistant = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    good = json.dumps(gsm8k_record("What is 2 + 3?", "Two plus three.\nIt is 5.\n#### 5"))
    path.write_text("\n".join([no_assistant, good, no_assistant, "{}"]) + "\n")
    for mode in ("step", "jepa"):
        with pytest.raises(ValueError, match=rf"^{path}:1: "):
            ChatDataset.load(DataConfig(train=str(path)), LayoutConfig(mode=mode), str(smollm2_dir))
        data = ChatDataset.load(DataConfig(train=str(path), skip_bad=True), LayoutConfig(mode=mode), str(smollm2_dir))
        assert len(data.rows) == 1 and sum(data.skipped.values()) == 3
        assert f"2 no assistant answer ({path}:1, {path}:3)" in data.summary()  # prepare.py chat's reason
        assert f"1 no messages ({path}:4)" in data.summary()


@pytest.mark.parametrize("content", [b"", b"\n  \n\n"])
def test_an_empty_or_blank_source_is_an_error(tmp_path, content):
    src = tmp_path / "src"
    src.mkdir()
    for split in ("train", "test"):
        (src / f"{split}.jsonl").write_bytes(content)
    with pytest.raises(ValueError, match=r"train.jsonl: no usable records \(the file is empty or blank\)"):
        prepare_gsm8k(src, tmp_path / "out")
    (src / "seed.jsonl").write_bytes(content)
    with pytest.raises(ValueError, match=r"seed.jsonl: no usable records"):
        prepare_steps([src / "seed.jsonl"], tmp_path / "out2")
    assert not (tmp_path / "out2" / "seed.jsonl").exists()


def test_a_source_whose_every_line_is_skipped_is_an_error(tmp_path):
    src = tmp_path / "seed.jsonl"
    src.write_text("{\n[1]\n")
    with pytest.raises(ValueError, match=r"no usable records \(2 skipped: 1 not JSON .*; 1 not an object"):
        prepare_steps([src], tmp_path / "out", skip_bad=True)


def test_the_prepare_summary_shows_steps_only_where_answers_have_them(tmp_path, capsys):
    import prepare

    def chat(answer: str) -> str:
        return json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}]})

    (tmp_path / "regex.jsonl").write_text(chat("[A-Z].*") + "\n" + chat("dog.*") + "\n")  # NL-RX: one line each
    assert prepare.main(["chat", "--src", str(tmp_path / "regex.jsonl"), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "2 records" in out and "steps histogram" not in out
    (tmp_path / "steps.jsonl").write_text(chat("First 2.\n\nThen 3.\n\n#### 5") + "\n")
    assert prepare.main(["chat", "--src", str(tmp_path / "steps.jsonl"), "--out", str(tmp_path / "b")]) == 0
    assert "steps histogram (steps:records)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "messages, reason",
    [
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}], "no non-empty assistant"),
        ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}], "no non-empty assistant"),
        ([{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}], "the first user message is empty"),
    ],
)
def test_training_refuses_the_records_prepare_refuses(tmp_path, smollm2_dir, messages, reason):
    """An empty answer would make a template token the JEPA target: train.py applies prepare.py chat's rules."""
    from jepa.data.datasets import ChatDataset, DataConfig
    from jepa.data.layouts import LayoutConfig

    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": messages}) + "\n")
    with pytest.raises(ValueError, match=rf"^{path}:1: .*{reason}"):
        ChatDataset.load(DataConfig(train=str(path)), LayoutConfig(mode="jepa"), str(smollm2_dir))
    with pytest.raises(BadRecord, match=reason):
        chat_record({"messages": messages})


def test_a_negative_max_length_is_refused():
    from jepa.data.layouts import LayoutConfig

    with pytest.raises(ValueError, match="layout.max_length must be >= 1, got -5"):
        LayoutConfig(max_length=-5)

"""prepare.py all: every asset on its own, then what is ready and what is missing, and how to provide it."""

import prepare


def test_a_missing_asset_does_not_stop_the_others(tmp_path, capsys):
    args = ["all", "--root", str(tmp_path), "--gsm8k-src", str(tmp_path / "no_gsm8k"), "--assets", "gsm8k",
            "reversal_tiny"]  # fmt: skip
    assert prepare.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert (tmp_path / "reversal_tiny" / "train.json").is_file()  # prepared after GSM8K failed
    assert out[-2] == f"ready under {tmp_path}: reversal_tiny"
    assert out[-1].startswith("MISSING gsm8k: ") and "no_gsm8k" in out[-1]
    assert "to provide it: put GSM8K's train.jsonl and test.jsonl in a directory DIR and run make prepare" in out[-1]
    assert prepare.main(args) == 0  # again: the ready asset is kept, not redone
    assert "exists, skipping" in capsys.readouterr().out


def _chat(question: str, answer: str) -> str:
    import json

    messages = [{"role": "system", "content": "S."}, {"role": "user", "content": question},
                {"role": "assistant", "content": answer}]  # fmt: skip
    return json.dumps({"messages": messages}) + "\n"


def test_chat_files_are_checked_copied_and_bad_lines_named_or_counted(tmp_path, capsys):
    src = tmp_path / "synth_train.jsonl"
    src.write_text(_chat("a", "x") + '{"messages": [{"role": "user", "content": "q"}]}\n' + _chat("b", "y"))
    assert prepare.main(["chat", "--src", str(src), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"error: {src}:2: no non-empty assistant message after the user message\n")
    assert prepare.main(["chat", "--src", str(src), "--out", str(tmp_path / "out"), "--skip-bad"]) == 0
    assert "dropped: 1 no assistant answer" in capsys.readouterr().out
    assert (tmp_path / "out" / "synth_train.jsonl").read_text() == _chat("a", "x") + _chat("b", "y")
    src.write_text(_chat("a", "x").replace('"system"', '"tool"'))
    assert prepare.main(["chat", "--src", str(src), "--out", str(tmp_path / "bad")]) == 2
    assert "synth_train.jsonl:1: messages[0]: role 'tool' is not one of" in capsys.readouterr().err


def test_the_llm_jepa_asset_takes_the_six_task_files(tmp_path, capsys):
    src = tmp_path / "llm_jepa"
    src.mkdir()
    for name in prepare.LLM_JEPA_FILES[:-1]:
        (src / name).write_text(_chat("q", "a"))
    args = ["all", "--root", str(tmp_path / "data"), "--llm-jepa-src", str(src), "--assets", "llm_jepa"]
    assert prepare.main(args) == 0
    missing = capsys.readouterr().out.splitlines()[-1]
    assert missing.startswith(f"MISSING llm_jepa: {src / 'nq_open_test.jsonl'}: no such file (1 of 6 missing)")
    (src / prepare.LLM_JEPA_FILES[-1]).write_text(_chat("q", "a"))
    assert prepare.main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"ready under {tmp_path / 'data'}: llm_jepa"
    assert sorted(p.name for p in (tmp_path / "data" / "llm_jepa").iterdir()) == sorted(prepare.LLM_JEPA_FILES)


def test_a_validation_split_is_cut_from_train_seeded_and_disjoint(tmp_path, capsys):
    src = tmp_path / "synth_train.jsonl"
    lines = [_chat(f"q{i}", f"a{i}").strip() for i in range(20)]
    src.write_text("\n".join(lines) + "\n\n")  # a blank line is not a record
    out = tmp_path / "split"
    assert prepare.main(["split", "--src", str(src), "--out", str(out), "--valid", "5", "--seed", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"train: 15 records -> {out / 'synth_train.jsonl'}",
                                                    f"valid: 5 records -> {out / 'synth_valid.jsonl'}"]  # fmt: skip
    train = (out / "synth_train.jsonl").read_text().splitlines()
    valid = (out / "synth_valid.jsonl").read_text().splitlines()
    assert sorted(train + valid) == sorted(lines) and not set(train) & set(valid)
    assert train == [line for line in lines if line in train]  # the rest keeps its order
    again = tmp_path / "again"
    prepare.main(["split", "--src", str(src), "--out", str(again), "--valid", "5", "--seed", "3"])
    assert (again / "synth_valid.jsonl").read_text().splitlines() == valid  # the seed fixes the draw
    assert prepare.main(["split", "--src", str(src), "--out", str(tmp_path), "--valid", "5"]) == 2
    assert "would overwrite its source" in capsys.readouterr().err
    assert prepare.main(["split", "--src", str(src), "--out", str(out), "--valid", "20"]) == 2
    assert "--valid must be between 1 and 19 (the file has 20 records)" in capsys.readouterr().err

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

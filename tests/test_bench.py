"""The benchmark scripts run end to end at toy shapes (they measure nothing here; the code is what is checked)."""

import json
import subprocess
import sys

import pytest

from jepa.data.sources import gsm8k_record
from tests.train.helpers import reversal_dir


@pytest.mark.slow  # one process per setting
def test_gpu_check_runs_every_setting_and_writes_its_figures(tmp_path, repo_root, smollm2_dir):
    chats = tmp_path / "train.jsonl"
    records = [gsm8k_record(f"What is {i} + 3?", f"Add {'them ' * (i % 7)}.\nIt is {i + 3}.\n#### {i + 3}")
               for i in range(32)]  # fmt: skip
    chats.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--tiny", "--cpu", "--skip-tests", "--steps", "1", "--out", str(out),
         "--chat-data", str(chats), "--tokenizer", str(smollm2_dir), "--reversal-data", str(reversal_dir(tmp_path))],
        cwd=repo_root, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    expected = ["step sdpa padded", "step sdpa packed", "step sdpa packed fsdp", "jepa sdpa padded",
                "jepa sdpa packed", "reversal padded", "reversal packed"]  # fmt: skip
    assert set(report["runs"]) == set(expected)
    for name, run in report["runs"].items():
        assert run["steps_s"] > 0 and run["tokens_s"] > 0 and run["tflops"] > 0, name
    assert report["runs"]["step sdpa packed"]["real"] > report["runs"]["step sdpa padded"]["real"]
    assert report["ratios"]["jepa packed / padded tokens/s"] > 0

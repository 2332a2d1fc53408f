"""The benchmark scripts run end to end at toy shapes (they measure nothing here; the code is what is checked)."""

import json
import subprocess
import sys

import pytest

from jepa.data.sources import gsm8k_record
from tests.train.helpers import reversal_dir


def _gpu_check(tmp_path, repo_root, smollm2_dir, *extra):
    chats = tmp_path / "train.jsonl"
    records = [gsm8k_record(f"What is {i} + 3?", f"Add {'them ' * (i % 7)}.\nIt is {i + 3}.\n#### {i + 3}")
               for i in range(32)]  # fmt: skip
    chats.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--tiny", "--cpu", "--skip-tests", "--steps", "1", "--out", str(out),
         "--chat-data", str(chats), "--tokenizer", str(smollm2_dir), "--reversal-data", str(reversal_dir(tmp_path)),
         *extra],
        cwd=repo_root, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_the_default_gpu_check_plan_fits_eight_minutes(repo_root):
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--plan"], cwd=repo_root, capture_output=True,
                          text=True)  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    stages = [line.split("\t") for line in lines[:-1]]
    assert [s[0] for s in stages] == ["probe", "cuda tests", "step 1B", "fsdp", "extras"]
    total = lines[-1].split("\t")
    assert total[0] == "total" and int(total[1]) == sum(int(s[1]) for s in stages) <= 480


@pytest.mark.slow  # one process per setting
def test_gpu_check_runs_its_default_plan_stage_by_stage(tmp_path, repo_root, smollm2_dir):
    proc, report = _gpu_check(tmp_path, repo_root, smollm2_dir)
    assert list(report["stages"]) == ["probe", "cuda tests", "step 1B", "fsdp", "extras"]
    for name, stage in report["stages"].items():
        assert stage["seconds"] <= stage["timeout_s"] + 15, name  # each stage kept (about) to its budget
    assert report["probe"]["torch"] == __import__("torch").__version__ and "flex_autocast" in report["probe"]
    expected = [
        "step seed padded",
        "step recipe eager sdpa fsdp",
        "step recipe eager sdpa",
        "jepa sdpa packed",
        "reversal packed",
    ]  # fmt: skip (the recipe itself and flex: CUDA only)
    assert set(report["runs"]) == set(expected)
    for name, run in report["runs"].items():
        assert run["steps_s"] > 0 and run["tokens_s"] > 0 and run["tflops"] > 0, name
    assert "stage" in proc.stdout and "wrote" in proc.stdout  # the short table, printed last


@pytest.mark.slow  # one process per setting
def test_gpu_check_full_runs_every_setting_and_writes_its_figures(tmp_path, repo_root, smollm2_dir):
    _, report = _gpu_check(tmp_path, repo_root, smollm2_dir, "--full")
    expected = ["step seed padded", "step recipe eager sdpa", "step recipe eager sdpa fsdp", "jepa sdpa padded",
                "jepa sdpa packed", "reversal padded", "reversal packed"]  # fmt: skip
    assert set(report["runs"]) == set(expected)
    for name, run in report["runs"].items():
        assert run["steps_s"] > 0 and run["tokens_s"] > 0 and run["tflops"] > 0, name
    recipe, seed = report["runs"]["step recipe eager sdpa"], report["runs"]["step seed padded"]
    assert recipe["real"] > seed["real"] and recipe["rows"] == seed["rows"]  # packed: the same rows a step
    assert recipe["mfu_6n"] is None  # CPU: no peak is known, so no MFU
    assert report["ratios"]["jepa packed / padded tokens/s"] > 0
    assert set(report["goals"]) == {"step recipe mfu_6n >= 0.40", "step recipe / seed padded tokens/s >= 3"}


def test_softcap_attention_bench_runs(repo_root):
    proc = subprocess.run(
        [sys.executable, "bench/softcap_attention.py", "--lengths", "16", "--repeats", "1", "--head-dim", "8"],
        cwd=repo_root, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    length, sdpa, softcap, ratio = proc.stdout.strip().splitlines()[-1].split("\t")
    assert length == "16" and float(sdpa) > 0 and float(softcap) > 0 and float(ratio) > 0


def test_optimizer_step_bench_runs(repo_root):
    proc = subprocess.run([sys.executable, "bench/optimizer_step.py", "--layers", "1", "--repeats", "1"],
                          cwd=repo_root, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    foreach, fused, speedup = proc.stdout.strip().splitlines()[-1].split("\t")
    assert float(foreach) > 0 and float(fused) > 0 and float(speedup) > 0


def test_data_startup_bench_runs_every_case(tmp_path, repo_root):
    proc = subprocess.run(
        [sys.executable, "bench/data_startup.py", "--config", "gpt2_reversal_small.yaml",
         f"data.train={reversal_dir(tmp_path)}"],
        cwd=repo_root, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line.split("\t") for line in proc.stdout.strip().splitlines()[1:]]
    assert [line[1] for line in lines] == ["every_start", "cold", "warm", "ratio every_start/warm"]
    assert lines[0][3] == lines[1][3] == lines[2][3] and int(lines[2][3]) > 0  # the same rows each way


def test_generation_bench_compares_with_transformers(tmp_path, repo_root, smollm2_dir):
    chats = tmp_path / "prompts.jsonl"
    records = [gsm8k_record(f"What is {i} + 3?", f"Add.\nIt is {i + 3}.\n#### {i + 3}") for i in range(3)]
    chats.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = subprocess.run(
        [sys.executable, "bench/generation.py", "--model", str(smollm2_dir), "--data", str(chats), "--batch", "1",
         "--batch", "3", "--new-tokens", "6", "--repeats", "1"],
        cwd=repo_root, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("\t") for line in proc.stdout.strip().splitlines()[1:]]
    assert [r[0] for r in rows] == ["1", "3"]
    assert [r[6] for r in rows] == ["1/1", "3/3"]  # greedy: token for token equal to transformers'
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)


def test_cpu_mfu_bench_reports_both_modes(tmp_path, repo_root, smollm2_dir):
    import yaml

    from tests.train.helpers import stp_chat_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(stp_chat_config(tmp_path, smollm2_dir)))
    proc = subprocess.run(
        [sys.executable, "bench/cpu_mfu.py", "--config", str(config), "--batch", "2", "--steps", "1", "--repeats",
         "1", "--threads", "1", "--top-ops", "3"],
        cwd=repo_root, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("\t") for line in proc.stdout.strip().splitlines()[1:3]]
    assert [r[0] for r in rows] == ["regular", "jepa"]
    for r in rows:
        assert 0 < float(r[4]) and 0 < float(r[5]) and r[6].endswith("%") and len(r[7].split(", ")) == 3
    assert int(rows[1][2]) > int(rows[0][2])  # jepa mode adds the view tokens to the same examples


def test_step_spread_bench_runs_every_setting(tmp_path, repo_root, smollm2_dir):
    import yaml

    from tests.train.helpers import stp_chat_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(stp_chat_config(tmp_path, smollm2_dir)))
    proc = subprocess.run([sys.executable, "bench/step_spread.py", "--config", str(config), "--repeats", "2"],
                          cwd=repo_root, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("\t") for line in proc.stdout.strip().splitlines()[1:]]
    assert [r[0] for r in rows] == ["default", "malloc_keep", "prefetching"]
    for r in rows:
        assert 0 < float(r[1]) <= float(r[2]) <= float(r[3]) and r[4].endswith("%") and float(r[5]) >= 0

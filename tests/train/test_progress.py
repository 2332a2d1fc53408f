"""Console progress (jepa/train/progress.py): a bar at a terminal, plain lines in a log or a pipe."""

import subprocess
import sys

import yaml

from jepa.train.progress import StepProgress, format_duration
from tests.train.helpers import reversal_config

METRICS = {"loss": 1.23456, "lm": 1.2, "jepa": 0.0345, "lr": 2e-5, "tokens_per_s": 1234.5}


def test_plain_lines_every_log_every_steps_and_at_the_last(capsys):
    progress = StepProgress(total=5, initial=0, enabled=True, log_every=2, interactive=False)
    for step in range(1, 6):
        progress.update(step, METRICS)
    progress.close()
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split()[1] for line in lines] == ["2/5", "4/5", "5/5"] and err == ""
    assert lines[0].startswith("step 2/5  loss 1.2346  lm 1.2000  jepa 0.0345  lr 2.00e-05  tokens/s 1234  eta ")
    assert "\r" not in out and lines[-1].endswith("eta 0:00:00")


def test_a_terminal_gets_the_bar_and_no_lines(capsys):
    progress = StepProgress(total=3, initial=1, enabled=True, log_every=1, interactive=True)
    for step in (2, 3):
        progress.update(step, METRICS)
    progress.close()
    out, err = capsys.readouterr()
    assert out == "" and "3/3" in err and "loss=1.2346" in err
    quiet = StepProgress(total=3, initial=0, enabled=False, log_every=1, interactive=False)
    quiet.update(1, METRICS)
    assert capsys.readouterr() == ("", "")


def test_format_duration():
    assert format_duration(3725.9) == "1:02:05" and format_duration(-3) == "0:00:00"


def test_train_py_piped_prints_plain_lines(tmp_path, repo_root):
    """stdout is a pipe here (as in a SLURM log or `| tee`): no carriage returns, one line per log_every steps."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(reversal_config(tmp_path, schedule={"max_steps": 4})))
    proc = subprocess.run([sys.executable, "train.py", "--config", str(config), "run.log_every=2"], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("step ")]
    assert steps == ["2/4", "4/4"]
    assert "\r" not in proc.stdout + proc.stderr


def test_each_step_logs_its_time_split_and_the_run_ends_with_it_in_words(tmp_path, capsys):
    """metrics.jsonl: data_wait_s, forward_backward_s, optimizer_s per step (the last two sum to step_s); the end
    of the run says where the time went."""
    import json

    from jepa.train.config import config_from_dict
    from jepa.train.loop import train
    from jepa.train.progress import TimeSplit

    raw = reversal_config(tmp_path, schedule={"max_steps": 3}, eval={"every": 2, "fn": "jepa.eval.hooks:reversal"})
    train(config_from_dict(raw), progress=True)
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if r.get("kind") == "train"]
    assert len(steps) == 3
    for r in steps:
        assert r["data_wait_s"] >= 0 and r["forward_backward_s"] > 0 and r["optimizer_s"] >= 0
        assert abs(r["forward_backward_s"] + r["optimizer_s"] - r["step_s"]) < 1e-6
    (line,) = [line for line in out.splitlines() if line.startswith("time: ")]
    assert "forward+backward" in line and "optimizer" in line and "waiting for data" in line and "evaluation" in line
    shares = [int(part.rsplit(" ", 1)[1].rstrip("%")) for part in line.split("; ", 1)[1].split(", ")]
    assert 97 <= sum(shares) <= 103  # the parts and "other" make up the whole (rounding)
    assert (
        TimeSplit(data=1, forward_backward=2, optimizer=1, evaluation=0, total=4)
        .describe()
        .startswith("time: 4.0 s; forward+backward 50%, optimizer 25%, waiting for data 25%, evaluation 0%")
    )


def test_run_profile_writes_a_chrome_trace_and_the_top_ops_of_its_window(tmp_path, capsys):
    import json

    import pytest

    from jepa.train.config import config_from_dict
    from jepa.train.loop import train

    raw = reversal_config(
        tmp_path, schedule={"max_steps": 4}, run={"name": "prof", "profile": {"start": 1, "steps": 2}}
    )
    train(config_from_dict(raw), progress=True)
    folder = tmp_path / "runs" / "prof" / "profile"
    trace = json.loads((folder / "trace.json").read_text())
    assert trace["traceEvents"] and "aten::" in (folder / "top_ops.txt").read_text()
    assert f"profile of steps 2-3: {folder}" in capsys.readouterr().out
    late = reversal_config(
        tmp_path, schedule={"max_steps": 2}, run={"name": "late", "profile": {"start": 1, "steps": 5}}
    )
    train(config_from_dict(late), progress=False)  # the run ends inside the window: what was recorded is written
    assert (tmp_path / "runs" / "late" / "profile" / "trace.json").is_file()
    with pytest.raises(ValueError, match=r"run.profile: must be \{start: S >= 0, steps: N >= 1\}"):
        config_from_dict(reversal_config(tmp_path, run={"name": "x", "profile": {"start": 1}}))

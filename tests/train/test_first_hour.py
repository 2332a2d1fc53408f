"""What a newcomer meets in the first hour (issue 22): evaluations that show progress and stop on a signal, a
finished run that prints its result again, failed starts that leave nothing, a closed stdout, the reversal
verdict derived from the numbers."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jepa.eval.hooks import chance_mrr, reversal_headline
from jepa.train.config import config_from_dict
from jepa.train.loop import train
from jepa.train.state import Interrupted
from tests.train.helpers import reversal_config

ROOT = Path(__file__).resolve().parents[2]


def counting_hook(interrupt_at_call: int | None = None):
    """An eval hook that counts its calls, with a headline; on call `interrupt_at_call` it sends itself SIGINT
    and keeps working, as a long evaluation would."""
    calls = []

    def hook(model, predictors, step):
        calls.append(step)
        if len(calls) == interrupt_at_call:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the handler raises inside this loop; the evaluation never finishes
                sum(range(10_000))
            raise AssertionError("the signal did not stop the evaluation")
        return {"eval/score": float(step)}

    hook.headline = lambda result: f"score {result['eval/score']:.0f}"
    hook.calls = calls
    return hook


def test_a_finished_run_prints_its_stored_result_without_evaluating_again(tmp_path, capsys):
    raw = reversal_config(tmp_path, schedule={"max_steps": 2})
    hook = counting_hook()
    train(config_from_dict(raw), eval_hook=hook, progress=True)
    assert hook.calls == [2] and "result: score 2" in capsys.readouterr().out
    train(config_from_dict(raw), eval_hook=hook, progress=True)
    out = capsys.readouterr().out
    assert hook.calls == [2]  # not evaluated again
    assert "complete (2 of 2 steps); nothing to train" in out and "result (stored): score 2" in out


def test_a_signal_stops_the_final_evaluation_at_once_and_the_next_run_evaluates_again(tmp_path, capsys):
    raw = reversal_config(tmp_path, schedule={"max_steps": 2})
    with pytest.raises(Interrupted, match="interrupted by SIGINT during the evaluation at step 2") as caught:
        train(config_from_dict(raw), eval_hook=counting_hook(interrupt_at_call=1), progress=False)
    assert caught.value.signum == signal.SIGINT
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "step_2").is_dir()  # the checkpoint came before the evaluation
    hook = counting_hook()
    result = train(config_from_dict(raw), eval_hook=hook, progress=True)
    assert hook.calls == [2] and result.steps == 2
    assert "result: score 2" in capsys.readouterr().out


def test_an_interrupted_periodic_evaluation_runs_first_on_resume(tmp_path):
    raw = reversal_config(tmp_path, schedule={"max_steps": 4}, eval={"every": 2}, checkpoint={"every": 2})
    with pytest.raises(Interrupted, match="during the evaluation at step 2"):
        train(config_from_dict(raw), eval_hook=counting_hook(interrupt_at_call=1), progress=False)
    hook = counting_hook()
    train(config_from_dict(raw), eval_hook=hook, progress=False)
    assert hook.calls == [2, 4]
    lines = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r.get("kind") == "eval"] == [2, 4]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4]


def test_the_trainer_shows_evaluation_progress_unless_quiet(tmp_path, capsys):
    from jepa.data.reversal import load_probes
    from jepa.eval.reversal import evaluate_reversal

    data = Path(reversal_config(tmp_path)["data"]["train"])
    valid, _ = load_probes(data / "valid.json", data / "vocab.json")

    def probes(model, predictors, step):
        return {"eval/n": float(len(evaluate_reversal(model, valid)[0]))}

    raw = reversal_config(tmp_path, schedule={"max_steps": 1})
    train(config_from_dict(raw), eval_hook=probes, progress=True)
    err = capsys.readouterr().err
    assert "reversal probes" in err and "tok_s" in err
    raw["run"]["name"] = "quiet"
    train(config_from_dict(raw), eval_hook=probes, progress=False)
    assert "reversal probes" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "section, values, error",
    [
        ("model", {"path": "no/such/model", "arch": None}, FileNotFoundError),
        ("run", {"device": "cuda"}, ValueError),
    ],
)
def test_a_failed_start_leaves_no_run_directory(tmp_path, section, values, error):
    if section == "run":
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("needs a machine without CUDA")
    raw = reversal_config(tmp_path)
    raw["run"]["dir"] = str(tmp_path / "fresh" / "runs")
    raw[section].update(values)
    with pytest.raises(error):
        train(config_from_dict(raw), progress=False)
    assert not (tmp_path / "fresh").exists()


def test_a_failed_start_in_an_existing_run_keeps_its_files(tmp_path):
    raw = reversal_config(tmp_path, schedule={"max_steps": 2})
    train(config_from_dict(raw), progress=False)
    raw["model"] = {"path": "no/such/model"}
    with pytest.raises(FileNotFoundError):
        train(config_from_dict(raw), progress=False)
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "step_2").is_dir() and not (run_dir / ".lock").exists()


def test_a_closed_stdout_stops_the_run_with_a_checkpoint_and_keeps_the_config(tmp_path):
    """`train.py ... | head`: the reader is gone before the first line; the run stops like a signal (exit 141,
    one line on stderr) and config.yaml keeps the settings the checkpoints were made with."""
    raw = reversal_config(tmp_path, schedule={"max_steps": 4, "stop_at_step": 2})
    train(config_from_dict(raw), progress=False)
    run_dir = tmp_path / "runs" / "tiny"
    config_file = tmp_path / "base.yaml"
    raw["schedule"].pop("stop_at_step")
    config_file.write_text(yaml.safe_dump(raw))
    before = (run_dir / "config.yaml").read_text()
    proc = subprocess.Popen(
        [sys.executable, "train.py", "--config", str(config_file), "run.log_every=3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    proc.stdout.close()  # the reader exits before the run prints anything
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGPIPE, err
    assert err.strip().splitlines()[-1].startswith("interrupted by a closed stdout (SIGPIPE) at step 2")
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert (run_dir / "config.yaml").read_text() == before
    assert (run_dir / "step_2").is_dir() and not (run_dir / "step_3").exists()


@pytest.mark.parametrize(
    "forward, reverse, verdict",
    [
        (0.043, 0.038, "nothing learnt yet"),
        (0.95, 0.09, "the reversal curse (forward learnt"),
        (0.95, 0.30, "a partial reversal curse"),
        (0.95, 0.80, "no reversal curse"),
    ],
)
def test_the_reversal_verdict_follows_the_numbers(forward, reverse, verdict):
    vocab = {f"<f_{i}>": i for i in range(60)} | {f"<l_{i}>": 60 + i for i in range(60)} | {"<mask>": 120}
    chance = chance_mrr(vocab)
    assert chance == pytest.approx(0.0780, abs=1e-4)  # H_60 / 60
    result = {"eval/atomic/mrr": forward, "eval/atomic/joint_accuracy": 0.0, "eval/test/mrr": reverse,
              "eval/test/joint_accuracy": 0.0}  # fmt: skip
    line = reversal_headline(result, chance)
    assert verdict in line and "chance 0.078" in line


def test_the_lr_a_diverged_run_is_told_to_lower_can_be_lowered_on_resume(tmp_path, capsys):
    """The NaN stop advises a lower optim.lr: resume accepts it and rescales the restored schedule to it."""
    whole = reversal_config(tmp_path / "whole", schedule={"max_steps": 4})
    train(config_from_dict(whole), progress=False)
    raw = reversal_config(tmp_path, schedule={"max_steps": 4, "stop_at_step": 2})
    train(config_from_dict(raw), progress=False)
    raw["schedule"].pop("stop_at_step")
    raw["optim"]["lr"] /= 2
    train(config_from_dict(raw), progress=True)
    assert "optim.lr: 0.01 -> 0.005 from step 2" in capsys.readouterr().out

    def lrs(root):
        lines = (root / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["lr"] for line in lines if "lr" in json.loads(line)]

    expected = lrs(tmp_path / "whole")
    assert lrs(tmp_path) == pytest.approx(expected[:2] + [lr / 2 for lr in expected[2:]])


def test_the_export_shares_the_last_checkpoints_weights_instead_of_a_second_copy(tmp_path):
    from jepa.models import load_pretrained

    raw = reversal_config(tmp_path, schedule={"max_steps": 2}, checkpoint={"export": "hf"})
    result = train(config_from_dict(raw), progress=False)
    exported, checkpointed = (
        result.final_dir / "model.safetensors",
        result.last_checkpoint / "model" / "model.safetensors",
    )
    assert exported.stat().st_ino == checkpointed.stat().st_ino  # one copy on disk, two names
    assert load_pretrained(result.final_dir).config == load_pretrained(checkpointed.parent).config
    assert (result.final_dir / "vocab.json").is_file() and (result.final_dir / "predictors.safetensors").is_file()


def test_a_lock_whose_pid_now_belongs_to_a_younger_process_is_taken_over(tmp_path):
    import socket
    import time

    from jepa.train.lock import RunLock

    lock = tmp_path / ".lock"
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    lock.write_text(json.dumps({**me, "time": time.time()}))  # written by this (live) process: respected
    with pytest.raises(ValueError, match="is in use by process"):
        RunLock(tmp_path).__enter__()
    lock.write_text(json.dumps({**me, "time": time.time() - 10 * 24 * 3600}))  # older than this process: reused pid
    with RunLock(tmp_path):
        assert json.loads(lock.read_text())["time"] > time.time() - 60
    assert not lock.exists()

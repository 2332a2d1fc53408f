"""Faults during training and resume: each ends in one clear line, and nothing good is lost."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import SafetensorError

import train as train_cli
from jepa.train import checkpoint as checkpoint_module
from jepa.train import loop as loop_module
from jepa.train.config import config_from_dict
from jepa.train.loop import train
from jepa.train.state import CheckpointNotWritten, TrainingDiverged, TrainingStopped
from tests.train.helpers import reversal_config


def _run(tmp_path, **sections):
    sections.setdefault("checkpoint", {"every": 2, "keep_last": 5, "export": "none"})
    return train(config_from_dict(reversal_config(tmp_path, **sections)), progress=False)


def _steps(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------- 8: damaged checkpoints


@pytest.mark.parametrize("damage", ["truncate", "garble", "no_manifest_entry_file"])
def test_auto_resume_skips_a_damaged_checkpoint_and_says_why(tmp_path, capsys, damage):
    _run(tmp_path, schedule={"max_steps": 4})
    run_dir = tmp_path / "runs" / "tiny"
    victim = run_dir / "step_4" / ("optimizer.pt" if damage != "no_manifest_entry_file" else "rng.pt")
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "garble":  # same size, so only reading it finds the damage
        victim.write_bytes(data[:10] + bytes(len(data) - 20) + data[-10:])
    else:
        victim.unlink()
    result = _run(tmp_path, schedule={"max_steps": 6})
    err = capsys.readouterr().err
    assert f"warning: skipping checkpoint step_4: {run_dir / 'step_4'}" in err
    assert {
        "truncate": "optimizer.pt has",
        "garble": "optimizer.pt: unreadable",
        "no_manifest_entry_file": "rng.pt is missing",
    }[damage] in err
    assert result.steps == 6 and _steps(run_dir) == [1, 2, 3, 4, 5, 6]  # redone from step_2


def test_an_explicit_invalid_resume_path_is_one_line_naming_the_file(tmp_path):
    _run(tmp_path, schedule={"max_steps": 2})
    step = tmp_path / "runs" / "tiny" / "step_2"
    (step / "scheduler.pt").write_bytes(b"not a torch file, but the same size as..."[:10])
    raw = reversal_config(tmp_path, run={"name": "other"}, checkpoint={"resume": str(step), "export": "none"})
    with pytest.raises(ValueError, match=r"^checkpoint.resume: .*step_2: scheduler.pt has 10 bytes, the manifest says"):
        train(config_from_dict(raw), progress=False)


def test_checkpoints_without_a_manifest_still_resume(tmp_path):
    _run(tmp_path, schedule={"max_steps": 2})
    (tmp_path / "runs" / "tiny" / "step_2" / "manifest.json").unlink()  # as written before manifests existed
    assert _run(tmp_path, schedule={"max_steps": 3}).steps == 3


# ---------------------------------------------------------------------------------- 9: another config


def test_resuming_with_settings_that_change_the_run_is_refused(tmp_path):
    _run(tmp_path, schedule={"max_steps": 2})
    config_before = (tmp_path / "runs" / "tiny" / "config.yaml").read_text()
    with pytest.raises(ValueError) as err:
        _run(tmp_path, schedule={"max_steps": 4}, layout={"predictors": 2}, jepa={"loss": "infonce"})
    message = str(err.value)
    assert "\n" not in message and "jepa.loss: 'cosine' -> 'infonce'" in message
    assert "layout.predictors: 1 -> 2" in message
    assert (tmp_path / "runs" / "tiny" / "config.yaml").read_text() == config_before
    # Logging, evaluation, checkpointing and the schedule's length may change.
    assert _run(tmp_path, schedule={"max_steps": 4}, eval={"every": 3}, run={"log_every": 2}).steps == 4


# ---------------------------------------------------------------------------------- 10: a full disk


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path, capsys):
    _run(tmp_path, schedule={"max_steps": 4, "stop_at_step": 2})
    metrics = tmp_path / "runs" / "tiny" / "metrics.jsonl"
    with metrics.open("a") as f:
        f.write('{"loss": 2.1, "lm": ')  # what a full disk leaves
    _run(tmp_path, schedule={"max_steps": 4})
    assert "dropped a torn last line" in capsys.readouterr().err
    assert _steps(tmp_path / "runs" / "tiny") == [1, 2, 3, 4]


# What a full disk raises from each writer: Python's OSError, torch.save's C++ RuntimeError, safetensors' error.
DISK_FULL = {
    "oserror": (OSError(28, "No space left on device"), "No space left on device"),
    "torch_save": (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 2432 vs 2330\nframe"),
                   "[enforce fail at inline_container.cc:664] . unexpected pos 2432 vs 2330"),
    "safetensors": (SafetensorError("Error while serializing: IoError(No space left on device)"),
                    "Error while serializing: IoError(No space left on device)"),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(DISK_FULL))
def test_a_checkpoint_that_cannot_be_written_is_one_line_and_leaves_no_temporary_directory(tmp_path, monkeypatch,
                                                                                           kind):  # fmt: skip
    real_save = torch.save
    error, text = DISK_FULL[kind]

    def save(obj, path, *args, **kwargs):
        if str(path).endswith("optimizer.pt") and ".step_4.tmp" in str(path):
            raise error
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    with pytest.raises(CheckpointNotWritten) as err:
        _run(tmp_path, schedule={"max_steps": 6})
    message = str(err.value)
    assert message.startswith(f"checkpoint step_4 not written: {text} (")
    assert len(message.splitlines()) == 1
    assert "last good checkpoint: " in message and message.endswith("step_2")
    assert not list((tmp_path / "runs" / "tiny").glob(".step_*"))
    assert (tmp_path / "runs" / "tiny" / "step_2" / "manifest.json").is_file()


# ---------------------------------------------------------------------------------- 11: two runs at once


def test_a_second_run_on_the_same_directory_names_the_holder(tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (run_dir / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(ValueError, match=rf"run.dir: {run_dir} is in use by process {holder.pid} on"):
            _run(tmp_path, schedule={"max_steps": 2})
    finally:
        holder.kill()
        holder.wait()
    assert _run(tmp_path, schedule={"max_steps": 2}).steps == 2  # the holder died: its lock is stale
    assert not (run_dir / ".lock").exists()


# ---------------------------------------------------------------------------------- 13: never save NaN


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    def poison(model, predictors, step):  # after step 2: the next update turns a weight into NaN
        optimizer_state = poison.state.optimizer.state
        next(iter(optimizer_state.values()))["exp_avg"].fill_(float("nan"))
        return {}

    raw = reversal_config(tmp_path, checkpoint={"every": 3, "export": "none"}, eval={"every": 2},
                          schedule={"max_steps": 6})  # fmt: skip
    real_build = loop_module.build

    def build(*args, **kwargs):
        state = real_build(*args, **kwargs)
        poison.state = state
        return state

    loop_module.build, saved_build = build, loop_module.build
    try:
        with pytest.raises(TrainingDiverged) as err:
            train(config_from_dict(raw), eval_hook=poison, progress=False)
    finally:
        loop_module.build = saved_build
    assert "hold NaN or inf; no checkpoint written; last good checkpoint: none" in str(err.value)
    assert "lower optim.lr" in str(err.value)
    assert not (tmp_path / "runs" / "tiny" / "step_3").exists()


# ---------------------------------------------------------------------------------- 14, 22: the final export


def test_an_interrupted_export_leaves_no_partial_final_and_a_rerun_completes_it(tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loop_module, "save_predictors", fail)
    sections = {"checkpoint": {"export": "hf"}, "schedule": {"max_steps": 3}}
    with pytest.raises(TrainingStopped, match=r"final: export not written \(No space left on device\); the trained"):
        _run(tmp_path, **sections)
    run_dir = tmp_path / "runs" / "tiny"
    assert not (run_dir / "final").exists() and not (run_dir / ".final.tmp").exists()
    monkeypatch.undo()
    result = _run(tmp_path, **sections)  # the finished run: export only
    assert result.final_dir == run_dir / "final" and (run_dir / "final" / "predictors.safetensors").is_file()
    assert (run_dir / "final" / "vocab.json").is_file()
    mtime = (run_dir / "final" / "model.safetensors").stat().st_mtime_ns
    again = _run(tmp_path, **sections)
    assert again.steps == 3 and (run_dir / "final" / "model.safetensors").stat().st_mtime_ns == mtime
    assert _steps(run_dir) == [1, 2, 3]


def test_rerunning_a_finished_run_says_so(tmp_path, capsys):
    raw = reversal_config(tmp_path, schedule={"max_steps": 2}, checkpoint={"export": "none"})
    for _ in range(2):
        train(config_from_dict(raw), progress=True)
    out = capsys.readouterr().out
    assert "done: 2 steps in" in out and "complete (2 of 2 steps); nothing to train" in out


# ---------------------------------------------------------------------------------- 15: the run directory


def test_a_run_dir_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a directory")
    args = ["--config", "gpt2_reversal_tiny.yaml", f"run.dir={tmp_path / 'runs'}", "data.train=/nonexistent"]
    assert train_cli.main(args) == 2
    assert (
        capsys.readouterr().err
        == f"error: run.dir: {tmp_path / 'runs'} is a file, not a directory (choose another run.dir)\n"
    )


# ---------------------------------------------------------------------------------- 12: signals


@pytest.mark.slow  # a training process to signal
@pytest.mark.parametrize("signum, code", [(2, 130), (15, 143)])
def test_a_signal_finishes_the_step_writes_a_checkpoint_and_exits_with_one_line(tmp_path, repo_root, signum, code):
    import yaml

    cfg_file = tmp_path / "long.yaml"
    raw = reversal_config(tmp_path, schedule={"max_steps": 100000}, checkpoint={"every": 0, "export": "none"})
    cfg_file.write_text(yaml.safe_dump(raw))
    proc = subprocess.Popen([sys.executable, "train.py", "--config", str(cfg_file), "--quiet"], cwd=repo_root,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = tmp_path / "runs" / "tiny" / "metrics.jsonl"
    import time

    deadline = time.time() + 60
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.05)
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    step = _steps(tmp_path / "runs" / "tiny")[-1]
    name = {2: "SIGINT", 15: "SIGTERM"}[signum]
    # On a loaded machine the run's time estimate (steps x seconds a step) may add its own warning line first.
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: at ")]
    assert lines == [
        f"interrupted by {name} at step {step}; checkpoint: {tmp_path / 'runs' / 'tiny' / f'step_{step}'}; "
        "the same command resumes"
    ]
    saved = json.loads((tmp_path / "runs" / "tiny" / f"step_{step}" / "trainer_state.json").read_text())
    assert saved["step"] == step
    # The sampler position of the consumed steps (3 steps of 8 rows per epoch of 25), not the prefetch thread's.
    assert (saved["sampler"]["epoch"], saved["sampler"]["step_in_epoch"]) == divmod(step, 3)


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_a_merged_lora_export_is_in_the_working_dtype(tmp_path, smollm2_dir, precision, dtype):
    from safetensors.torch import load_file

    from tests.train.helpers import chat_config, tiny_chat_model_dir

    data = tmp_path / "train.jsonl"
    record = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "One.\n\nTwo."}]}
    data.write_text((json.dumps(record) + "\n") * 4)
    raw = chat_config(tmp_path, tiny_chat_model_dir(tmp_path, smollm2_dir), data, precision={"mode": precision},
                      schedule={"max_steps": 1, "batch_size": 2, "grad_accum": 1})  # fmt: skip
    final = train(config_from_dict(raw), progress=False).final_dir
    assert {t.dtype for t in load_file(str(final / "model.safetensors")).values()} == {dtype}


def test_a_run_dir_that_is_not_writable_is_refused_before_any_work(tmp_path, monkeypatch):
    from pathlib import Path

    real_write_text = Path.write_text

    def write_text(self, *args, **kwargs):  # root ignores chmod, so the refusal is simulated
        if self.name.startswith(".write_test"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(
        ValueError, match=r"^run.dir: .*runs/tiny cannot be made: .* is not writable \(Permission denied\)$"
    ):
        _run(tmp_path)


@pytest.mark.parametrize("victim", ["metrics_dir", "lock_dir", "config_dir"])
def test_a_path_the_trainer_must_write_being_a_directory_is_one_line(tmp_path, victim):
    run_dir = tmp_path / "runs" / "tiny"
    name = {"metrics_dir": "metrics.jsonl", "lock_dir": ".lock", "config_dir": "config.yaml"}[victim]
    (run_dir / name).mkdir(parents=True)
    with pytest.raises((ValueError, TrainingStopped)) as err:
        _run(tmp_path, schedule={"max_steps": 2})
    message = str(err.value)
    assert str(run_dir / name) in message and len(message.splitlines()) == 1


def test_a_lock_that_cannot_be_released_is_a_warning_not_a_traceback(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    real_unlink = Path.unlink

    def unlink(self, *args, **kwargs):  # the run directory turned read-only while the run was going
        if self.name == ".lock":
            raise OSError(30, "Read-only file system", str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    result = _run(tmp_path, schedule={"max_steps": 2})
    assert result.steps == 2
    err = capsys.readouterr().err
    assert "lock not removed (Read-only file system); the next run takes it over" in err and "Traceback" not in err

"""Experiment trackers (jepa/train/trackers.py), read back with each package's own reader, across a resume."""

import json

import pytest

from jepa.train.config import config_from_dict
from jepa.train.loop import train
from jepa.train.trackers import check_installed, numeric
from tests.train.helpers import reversal_config

TRACKERS = ["jsonl", "tensorboard", "wandb", "mlflow"]


def wandb_records(file):
    """The protobuf records of a W&B offline run file: a 7-byte header (":W&B", magic, version), then LevelDB-log
    style blocks of 32 KiB holding records with a 7-byte header (checksum, length, type: full / first / middle /
    last fragment). wandb 0.31 has no Python reader of its own any more; its protobuf messages decode them."""
    data, position, pending = file.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        payload = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 1:
            yield payload
        elif kind in (2, 3):
            pending = (b"" if kind == 2 else pending) + payload
        elif kind == 4:
            yield pending + payload


def wandb_history(run_dir):
    """({step: {key: value}}, run ids) from W&B's offline run files, decoded with W&B's own protobuf messages."""
    from wandb.proto import wandb_internal_pb2

    history, ids = {}, set()
    for file in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        ids.add(file.stem.removeprefix("run-"))
        for data in wandb_records(file):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                history.setdefault(int(items["_step"]), {}).update(items)
    return history, ids


def test_every_tracker_gets_every_metric_and_a_resume_continues_the_same_run(tmp_path, monkeypatch):
    for package in ("tensorboard", "wandb", "mlflow"):
        pytest.importorskip(package)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    schedule = {"max_steps": 4, "stop_at_step": 2}
    raw = reversal_config(tmp_path, run={"name": "tracked", "loggers": TRACKERS},
                          eval={"fn": "jepa.eval.hooks:reversal"}, schedule=schedule)  # fmt: skip
    train(config_from_dict(raw), progress=False)  # stops at step 2 with a checkpoint
    raw["schedule"].pop("stop_at_step")
    train(config_from_dict(raw), progress=False)  # resumes: steps 3, 4, the final evaluation
    run_dir = tmp_path / "runs" / "tracked"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_loss = {r["step"]: r["loss"] for r in records if r.get("kind") != "eval"}
    evals = [numeric(r) for r in records if r.get("kind") == "eval"]
    assert sorted(train_loss) == [1, 2, 3, 4] and evals and all(evals)
    state = json.loads(next(run_dir.glob("step_4/trainer_state.json")).read_text())
    assert set(state["trackers"]) == {"wandb", "mlflow"}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [e.step for e in scalars] == [1, 2, 3, 4]  # the resume's purge_step: no step twice
    assert [e.value for e in scalars] == pytest.approx([train_loss[s] for s in (1, 2, 3, 4)])
    assert set(evals[-1]) <= set(events.Tags()["scalars"]) and "config" in str(events.Tags()["tensors"])

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    history = client.get_metric_history(state["trackers"]["mlflow"], "train/loss")
    assert sorted({m.step for m in history}) == [1, 2, 3, 4]  # one run across the resume
    assert {m.step: m.value for m in history} == pytest.approx(train_loss)
    run = client.get_run(state["trackers"]["mlflow"])
    assert run.data.params["optim.lr"] == str(raw["optim"]["lr"]) and run.info.status == "FINISHED"
    assert set(evals[-1]) <= set(run.data.metrics)

    logged, ids = wandb_history(run_dir)
    assert ids == {state["trackers"]["wandb"]}  # the resumed process logged into the run it started
    assert {s: logged[s]["train/loss"] for s in (1, 2, 3, 4)} == pytest.approx(train_loss)
    assert any(set(evals[-1]) <= set(v) for v in logged.values())


def test_a_missing_package_or_an_unknown_tracker_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ValueError, match=r"run.loggers: wandb needs the wandb package: pip install 'jepa\[wandb\]'"):
        check_installed(["jsonl", "wandb"])
    with pytest.raises(ValueError, match=r"run.loggers: \['neptune'\] is not one of"):
        config_from_dict(reversal_config(tmp_path, run={"name": "x", "loggers": ["neptune"]}))


def test_numbers_go_under_train_or_their_eval_keys():
    assert numeric({"step": 3, "loss": 1.5, "lr": 1e-4, "epoch": 0, "note": "x", "flag": True}) == {
        "train/loss": 1.5, "train/lr": 1e-4}  # fmt: skip
    assert numeric({"step": 4, "kind": "eval", "eval/test/mrr": 0.5}) == {"eval/test/mrr": 0.5}

import json

import pytest
import torch

from jepa.train.config import config_from_dict
from jepa.train.loop import TrainingDiverged, train
from tests.train.helpers import reversal_config


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    raw = reversal_config(tmp_path, checkpoint={"every": 2, "keep_last": 5, "export": "none"}, eval={"every": 3})

    def poison(model, predictors, step):  # the eval hook runs after step 3: step 4's loss becomes NaN
        with torch.no_grad():
            model.transformer.wte.weight[0, 0] = float("nan")
        return {"poisoned": 1}

    with pytest.raises(TrainingDiverged) as err:
        train(config_from_dict(raw), eval_hook=poison, progress=False)
    message = str(err.value)
    assert "loss is nan at step 4" in message and "step_2" in message
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "step_2" / "trainer_state.json").is_file()
    assert not (run_dir / "step_4").exists()
    assert '"kind": "eval", "poisoned": 1' in (run_dir / "metrics.jsonl").read_text()


def test_eval_fn_from_the_config_lands_in_metrics(tmp_path):
    raw = reversal_config(
        tmp_path, eval={"every": 4, "fn": "tests.train.helpers:constant_eval"}, schedule={"max_steps": 6}
    )
    train(config_from_dict(raw), progress=False)
    lines = [json.loads(ln) for ln in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in lines if m["kind"] == "eval"]
    assert [(m["step"], m["seen_step"], m["seed"], m["training"]) for m in evals] == [
        (4, 4, 1, False),
        (6, 6, 1, False),
    ]
    assert [m["step"] for m in lines if m["kind"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_eval_fn_that_cannot_be_imported_is_a_config_error(tmp_path):
    raw = reversal_config(tmp_path, eval={"fn": "tests.train.helpers:nope"})
    with pytest.raises(ValueError, match="eval.fn: cannot import tests.train.helpers:nope"):
        train(config_from_dict(raw), progress=False)

"""`model.compile`: each block compiled in place (fullgraph) trains exactly like the eager model. The graph
capture runs for real; the backend is aot_eager so no C++ build is needed (inductor's kernels are its own
business, run by `make gpu-check` on a GPU)."""

import json

import pytest
import torch
from torch._dynamo.utils import counters

from jepa.data.sources import gsm8k_record
from jepa.train import build as build_module
from jepa.train.build import build
from jepa.train.step import next_micro_batches, train_step
from tests.train.helpers import chat_config, reversal_config, tiny_chat_model_dir, typed


def _configs(tmp_path, smollm2_dir, kind):
    if kind == "gpt2 reversal, full FT, packed":
        return reversal_config(tmp_path, data={"pack_length": 32})
    data = tmp_path / "train.jsonl"
    records = [gsm8k_record(f"What is {i} + 3?", f"Add them.\nIt is {i + 3}.\n#### {i + 3}") for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    return chat_config(tmp_path, tiny_chat_model_dir(tmp_path, smollm2_dir), data, layout={"mode": "jepa"},
                       lora={"dropout": 0.0}, model={"gradient_checkpointing": True})  # fmt: skip


@pytest.mark.parametrize("kind", ["gpt2 reversal, full FT, packed", "llama jepa, LoRA, gradient checkpointing"])
def test_compiled_blocks_train_like_eager_ones(tmp_path, smollm2_dir, monkeypatch, kind):
    monkeypatch.setattr(build_module, "COMPILE_BACKEND", "aot_eager")
    raw = _configs(tmp_path, smollm2_dir, kind)
    runs = {}
    for compiled in (False, True):
        raw["run"]["dir"] = str(tmp_path / f"runs_{compiled}")
        raw["model"] = {**raw.get("model", {}), "compile": compiled}
        state = build(typed(raw), verbose=False)
        torch._dynamo.reset()
        counters.clear()
        losses = [train_step(state, next_micro_batches(state))["loss"] for _ in range(3)]
        runs[compiled] = (losses, state.objective.state_dict(), dict(counters["stats"]))
    (eager_losses, eager_params, _), (losses, params, stats) = runs[False], runs[True]
    assert stats.get("unique_graphs", 0) >= 1  # the compiled path ran ...
    assert stats["unique_graphs"] <= 3  # ... with one graph for all blocks (plus dynamic-shape ones), not one each
    assert params.keys() == eager_params.keys()  # checkpoints and exports keep their names
    assert losses == pytest.approx(eager_losses, rel=1e-6, abs=1e-6)
    for name, value in params.items():
        torch.testing.assert_close(value, eager_params[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_compiled_run_evaluates_by_generation_without_recompiling(tmp_path, smollm2_dir, monkeypatch):
    """Evaluation runs the model eagerly: greedy generation over prompts of many (batch, length) shapes, with a KV
    cache and in eval mode, would otherwise recompile the fullgraph blocks per shape until torch's recompile limit
    (8) and then fail (FailOnRecompileLimitHit). The compiled training graphs stay as they were."""
    from jepa.models.generate import generate
    from jepa.train.loop import train

    monkeypatch.setattr(build_module, "COMPILE_BACKEND", "aot_eager")
    outputs = []

    def generating_hook(model, predictors, step):  # a dozen prompt shapes, as a generation task's batches give
        prompts = [[[(3 * i + j) % 40 + 1 for j in range(2 + (i * 7 + b) % 23)] for b in range(1 + i % 4)]
                   for i in range(12)]  # fmt: skip
        outputs.append([generate(model, batch, 3 + i) for i, batch in enumerate(prompts)])
        return {"generated": sum(len(o) for o in outputs[-1])}

    raw = _configs(tmp_path, smollm2_dir, "llama jepa, LoRA, gradient checkpointing")
    raw["model"] = {**raw.get("model", {}), "compile": True}
    raw["eval"] = {"every": 2}
    raw["schedule"] = {**raw["schedule"], "max_steps": 4}
    torch._dynamo.reset()
    counters.clear()
    train(typed(raw), eval_hook=generating_hook, progress=False)
    assert len(outputs) == 2 and all(len(o) == 12 for o in outputs)  # evaluated at steps 2 and 4
    assert 1 <= counters["stats"]["unique_graphs"] <= 3  # the training graphs only

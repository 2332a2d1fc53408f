"""distributed.strategy=fsdp (FSDP2 on CPU with gloo): the same training as one process and as DDP, exact resume
from sharded checkpoints in new processes, a gathered export that transformers loads, LoRA."""

import json

import pytest
import torch
from safetensors.torch import load_file

from jepa.train.config import config_from_dict
from jepa.train.loop import train
from tests.train.helpers import assert_same_weights, reversal_config, spawn_training

LORA = {"enabled": True, "rank": 4, "alpha": 8, "dropout": 0.0}


def _config(root, name, strategy="fsdp", **sections):
    # Global batch 8: 1 process x 2 micro-batches x 4 rows, or 2 processes x 1 micro-batch x 4 rows.
    sections.setdefault("schedule", {})
    sections["schedule"] = {"max_steps": 4, "grad_accum": 1, **sections["schedule"]}
    return reversal_config(root, run={"name": name}, distributed={"strategy": strategy},
                           checkpoint={"every": 2, "export": "hf"}, **sections)  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    for name, extra in (("single", {}), ("single_lora", {"lora": LORA})):
        train(config_from_dict(_config(root, name, "ddp", schedule={"grad_accum": 2}, **extra)), progress=False)
    spawn_training(
        [
            _config(root, "fsdp"),
            _config(root, "fsdp_lora", lora=LORA),
            _config(root, "ddp", "ddp"),
            _config(root, "fsdp_cut", schedule={"stop_at_step": 2}),
            _config(root, "fsdp_lora_cut", lora=LORA, schedule={"stop_at_step": 2}),
        ],
        nprocs=2,
    )
    # Resumed in new processes from the sharded step_2 checkpoints.
    spawn_training([_config(root, "fsdp_cut"), _config(root, "fsdp_lora_cut", lora=LORA)], nprocs=2)
    # Evaluation (3 s on rank 0) under a 2 s collective timeout: the other rank waits on the long-timeout group.
    evaluated = {"every": 2, "fn": "tests.train.helpers:slow_weight_eval"}
    train(config_from_dict(_config(root, "single_eval", "ddp", schedule={"grad_accum": 2}, eval=evaluated)),
          progress=False)  # fmt: skip
    spawn_training([_config(root, f"{s}_eval", s, eval=evaluated) for s in ("ddp", "fsdp")], nprocs=2, timeout_s=2)
    return root / "runs"


def _losses(run_dir) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _final(run_dir) -> dict[str, torch.Tensor]:
    tensors = load_file(str(run_dir / "final" / "model.safetensors"))
    return {**tensors, **load_file(str(run_dir / "final" / "predictors.safetensors"))}


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_fsdp_over_two_processes_equals_one_process(runs, lora):
    suffix = "_lora" if lora else ""
    one, two = runs / f"single{suffix}", runs / f"fsdp{suffix}"
    assert _losses(two) == pytest.approx(_losses(one), rel=0, abs=1e-6)
    assert_same_weights(_final(one), _final(two))  # the gathered export of the sharded model


@pytest.mark.slow
def test_ddp_and_fsdp_give_the_same_losses(runs):
    assert _losses(runs / "fsdp") == pytest.approx(_losses(runs / "ddp"), rel=0, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_fsdp_resumes_exactly_from_its_sharded_checkpoint_in_new_processes(runs, lora):
    suffix = "_lora" if lora else ""
    whole, resumed = runs / f"fsdp{suffix}", runs / f"fsdp{suffix}_cut"
    assert _losses(resumed) == _losses(whole)
    final_whole, final_resumed = _final(whole), _final(resumed)
    assert all(torch.equal(final_whole[k], final_resumed[k]) for k in final_whole)


@pytest.mark.slow
def test_fsdp_checkpoints_are_sharded_and_lora_ones_hold_only_trainable_tensors(runs):
    full, lora = runs / "fsdp" / "step_4", runs / "fsdp_lora" / "step_4"
    for step in (full, lora):
        assert sorted(p.name for p in (step / "sharded").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
        assert not (step / "optimizer.pt").exists() and not (step / "model").exists()
        assert "sharded/.metadata" in json.loads((step / "manifest.json").read_text())["files"]
    from torch.distributed.checkpoint import FileSystemReader

    saved = FileSystemReader(str(lora / "sharded")).read_metadata().state_dict_metadata
    weights = [k for k in saved if k.startswith("model.")]
    assert "model.predictors.weight" in weights and any(k.endswith(".lora_A") for k in weights)
    assert all(k.endswith((".lora_A", ".lora_B", "predictors.weight")) for k in weights), weights


@pytest.mark.slow
def test_the_gathered_fsdp_export_loads_in_transformers_with_the_same_logits(runs):
    transformers = pytest.importorskip("transformers")

    from jepa.models import load_pretrained

    final = runs / "fsdp" / "final"
    ours = load_pretrained(final).eval()
    theirs = transformers.GPT2LMHeadModel.from_pretrained(final).eval()
    ids = torch.tensor([[1, 5, 7, 2, 9, 3]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids) @ ours.lm_head.weight.T, theirs(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_sharded_checkpoint_is_refused_by_a_ddp_run_with_one_line(runs, tmp_path):
    import shutil

    from jepa.train.build import build

    raw = _config(tmp_path, "fsdp", "ddp")
    shutil.copytree(runs / "fsdp" / "step_2", tmp_path / "runs" / "fsdp" / "step_2")
    with pytest.raises(
        ValueError, match=r"^checkpoint.resume: .*step_2: written with distributed.strategy=fsdp, this run uses ddp$"
    ):
        build(config_from_dict(raw), verbose=False)


def test_fsdp_needs_torchrun_and_refuses_fp16_with_one_line(tmp_path, monkeypatch):
    from jepa.train.build import build

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match=r"^distributed.strategy: fsdp runs under torchrun, also for one process"):
        build(config_from_dict(_config(tmp_path, "one")), verbose=False)
    with pytest.raises(ValueError, match=r"^precision.mode: fp16 is not supported with distributed.strategy=fsdp"):
        config_from_dict(_config(tmp_path, "fp16", precision={"mode": "fp16"}))


@pytest.mark.slow
def test_evaluation_sees_the_whole_model_and_the_others_wait_past_the_collective_timeout(runs):
    def evals(name):
        lines = [json.loads(ln) for ln in (runs / name / "metrics.jsonl").read_text().splitlines()]
        return [e for e in lines if e["kind"] == "eval"]

    one, ddp, fsdp = evals("single_eval"), evals("ddp_eval"), evals("fsdp_eval")
    assert [e["step"] for e in fsdp] == [e["step"] for e in one] == [2, 4]  # every 2 steps, the end once
    for a, b, c in zip(one, ddp, fsdp):
        assert b["plain"] and c["plain"] and not c["grad_enabled"]  # FSDP: an unsharded copy, no grad
        assert c["weight_sum"] == pytest.approx(a["weight_sum"], rel=1e-6)
        assert c["predictor_sum"] == pytest.approx(a["predictor_sum"], rel=1e-6)
        assert b["weight_sum"] == pytest.approx(a["weight_sum"], rel=1e-6)

"""The CUDA paths (`pytest -m cuda`, run by `make gpu-check`; skipped without a GPU): FlexAttention with
gradients, the step on CUDA against the step on CPU, no host sync inside a micro-batch, the padded lengths,
inductor-compiled blocks, the two-pass reference and pinned prefetching."""

import json

import pytest
import torch

from jepa.data.collator import collate
from jepa.data.sources import gsm8k_record
from jepa.train.build import build
from jepa.train.prefetch import Prefetcher
from jepa.train.step import forward_backward, next_micro_batches, train_step
from tests.train.helpers import chat_config, reversal_config, tiny_chat_model_dir, typed

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _reversal(tmp_path, name, device="cuda", **sections):
    raw = reversal_config(tmp_path, **sections)
    raw["run"] = {**raw["run"], "dir": str(tmp_path / name), "device": device}
    return raw


def _chat(tmp_path, smollm2_tokenizer_dir, name, **sections):
    data = tmp_path / "train.jsonl"
    records = [gsm8k_record(f"What is {i} + 3?", f"Add them.\nIt is {i + 3}.\n#### {i + 3}") for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    raw = chat_config(tmp_path, tiny_chat_model_dir(tmp_path, smollm2_tokenizer_dir), data, layout={"mode": "jepa"},
                      lora={"dropout": 0.0}, **sections)  # fmt: skip
    raw["run"] = {**raw["run"], "dir": str(tmp_path / name), "device": "cuda"}
    return raw


def _grads(state) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().float().cpu() for n, p in state.objective.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_flex_attention_gives_sdpa_losses_and_gradients(tmp_path, smollm2_tokenizer_dir, arch):
    """fp32, packed rows: the FlexAttention block mask (compiled) against the dense-mask SDPA path."""
    results = {}
    for attention in ("sdpa", "flex"):
        if arch == "gpt2":
            raw = _reversal(tmp_path, attention, model={"attention": attention}, data={"pack_length": 32})
        else:
            raw = _chat(
                tmp_path, smollm2_tokenizer_dir, attention, model={"attention": attention}, data={"pack_length": 256}
            )
        state = build(typed(raw), verbose=False)
        totals = forward_backward(state, next_micro_batches(state)).read()
        results[attention] = (totals, _grads(state))
    (dense, dense_grads), (flex, flex_grads) = results["sdpa"], results["flex"]
    assert flex.counts == dense.counts
    assert (flex.lm_sum, flex.jepa_sum) == pytest.approx((dense.lm_sum, dense.jepa_sum), rel=1e-4, abs=1e-4)
    assert flex_grads.keys() == dense_grads.keys()
    for name, grad in dense_grads.items():
        torch.testing.assert_close(flex_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)


def test_a_cuda_step_equals_the_cpu_step(tmp_path):
    """fp32 without TF32: three optimizer steps on CUDA and on CPU give the same losses and parameters."""
    runs = {}
    for device in ("cpu", "cuda"):
        state = build(typed(_reversal(tmp_path, device, device=device)), verbose=False)
        losses = [train_step(state, next_micro_batches(state))["loss"] for _ in range(3)]
        runs[device] = (losses, {k: v.cpu() for k, v in state.objective.state_dict().items()})
    assert runs["cuda"][0] == pytest.approx(runs["cpu"][0], rel=1e-4, abs=1e-5)
    for name, value in runs["cpu"][1].items():
        torch.testing.assert_close(runs["cuda"][1][name], value, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
def test_no_host_sync_inside_the_micro_batches(tmp_path, smollm2_tokenizer_dir, attention):
    """CUDA's own sync detector: any synchronizing call inside forward_backward raises."""
    raw = _chat(tmp_path, smollm2_tokenizer_dir, attention, model={"attention": attention}, data={"pack_length": 256},
                precision={"mode": "bf16"})  # fmt: skip
    state = build(typed(raw), verbose=False)
    with Prefetcher(state, steps=2, depth=1) as batches:
        forward_backward(state, batches.next())  # warm-up: compiles flex, allocates
        micro_batches = batches.next()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        forward_backward(state, micro_batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_bf16_steps_pad_to_128_and_stay_finite(tmp_path, smollm2_tokenizer_dir):
    """SDPA with a mask at T % 128 == 64 gives NaN on cuDNN (pytorch issue 196678): CUDA batches are padded to
    a multiple of 128, and a bf16 step is finite."""
    state = build(typed(_chat(tmp_path, smollm2_tokenizer_dir, "bf16", precision={"mode": "bf16"})), verbose=False)
    micro_batches = next_micro_batches(state)
    assert all(b["input_ids"].shape[1] % 128 == 0 for b in micro_batches)
    metrics = train_step(state, micro_batches)
    assert torch.isfinite(torch.tensor([metrics["loss"], metrics["grad_norm"]])).all()


def test_inductor_compiled_blocks_train_like_eager_ones(tmp_path):
    runs = {}
    for compiled in (False, True):
        raw = _reversal(tmp_path, f"compiled_{compiled}", model={"compile": compiled}, data={"pack_length": 32})
        state = build(typed(raw), verbose=False)
        runs[compiled] = [train_step(state, next_micro_batches(state))["loss"] for _ in range(3)]
    assert runs[True] == pytest.approx(runs[False], rel=1e-4, abs=1e-5)


def test_the_two_pass_reference_runs_on_cuda_and_equals_the_packed_pass(tmp_path):
    state = build(typed(_reversal(tmp_path, "two_pass", jepa={"lambda": 1.0, "ratio": 1.0})), verbose=False)
    rows = state.dataset.rows[:6]
    with torch.no_grad():
        packed = state.objective(collate(rows, state.dataset.pad_id).to("cuda"))
        separate = state.objective.two_pass(rows, state.dataset.pad_id)
    assert separate.lm_sum.device.type == "cuda"
    torch.testing.assert_close(packed.lm_sum, separate.lm_sum, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.pred, separate.pred, rtol=1e-5, atol=1e-5)


def test_prefetched_batches_are_pinned(tmp_path):
    state = build(typed(_reversal(tmp_path, "pinned")), verbose=False)
    with Prefetcher(state, steps=1, depth=1) as batches:
        batch = batches.next()[0]
    assert all(v.is_pinned() for v in batch.values() if torch.is_tensor(v))


def test_fsdp_runs_on_cuda_in_one_process_like_ddp(tmp_path):
    """The FSDP2 CUDA path (NCCL, bf16 mixed-precision policy) in one torchrun-like process: the losses of a
    single-process ddp run with bf16 autocast, to bf16 rounding."""
    from jepa.train.config import config_from_dict
    from jepa.train.loop import train
    from tests.train.helpers import spawn_training

    def losses(name):
        lines = (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(ln)["loss"] for ln in lines]

    common = {"precision": {"mode": "bf16"}, "checkpoint": {"every": 2, "export": "hf"}}
    train(config_from_dict(reversal_config(tmp_path, run={"name": "ddp", "device": "cuda"}, **common)), progress=False)
    fsdp = reversal_config(tmp_path, run={"name": "fsdp", "device": "cuda"}, distributed={"strategy": "fsdp"}, **common)
    spawn_training([fsdp], nprocs=1)
    assert losses("fsdp") == pytest.approx(losses("ddp"), rel=2e-2)
    assert (tmp_path / "runs" / "fsdp" / "step_2" / "sharded").is_dir()
    assert (tmp_path / "runs" / "fsdp" / "final" / "model.safetensors").is_file()

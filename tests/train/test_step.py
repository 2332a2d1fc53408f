"""Gradient accumulation through the step the loop runs: micro-batches of uneven sizes == one big batch."""

import copy
import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from jepa.data.collator import collate, dense_mask
from jepa.losses import IGNORE_INDEX
from jepa.train.build import build
from jepa.train.step import forward_backward, next_micro_batches, train_step
from tests.train.helpers import reversal_config, typed


def test_accumulated_step_equals_one_big_batch(tmp_path):
    cfg = typed(reversal_config(tmp_path, jepa={"lambda": 0.7, "gamma": 1.3}))
    rows = [copy.deepcopy(r) for r in build(cfg, verbose=False).dataset.rows[:9]]
    for r in rows[:4]:  # uneven label-token counts: 1 token in these rows, 2 in the others
        first = next(i for i, y in enumerate(r.labels) if y != IGNORE_INDEX)
        r.labels[first] = IGNORE_INDEX
    big = [rows]
    micro = [rows[:2], rows[2:7], rows[7:]]  # uneven sizes, padding lengths and JEPA-row counts
    assert len({sum(int(y != IGNORE_INDEX) for r in m for y in r.labels) for m in micro}) > 1
    assert len({sum(r.has_jepa for r in m) for m in micro}) > 1

    def gradients(micro_rows):  # the first half of train_step, on a freshly built (identically seeded) state
        state = build(cfg, verbose=False)
        sums = forward_backward(state, [collate(m, state.dataset.pad_id) for m in micro_rows])
        logged = sums.read().metrics(cfg.jepa.gamma, cfg.jepa.lam)
        return logged, {n: p.grad.clone() for n, p in state.objective.named_parameters()}

    (big_logged, big_grads), (acc_logged, acc_grads) = gradients(big), gradients(micro)
    for key in ("loss", "lm", "jepa"):
        assert abs(big_logged[key] - acc_logged[key]) < 1e-6 * max(1.0, abs(big_logged[key])), key
    assert big_logged["lm_tokens"] == acc_logged["lm_tokens"] == 14
    for name in big_grads:
        torch.testing.assert_close(acc_grads[name], big_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    assert any(g.abs().sum() > 0 for g in big_grads.values())

    def one_step(micro_rows):  # the whole train_step: clip, AdamW, schedule
        state = build(cfg, verbose=False)
        metrics = train_step(state, [collate(m, state.dataset.pad_id) for m in micro_rows])
        return state, metrics, {n: p.detach().clone() for n, p in state.objective.named_parameters()}

    (s_big, m_big, p_big), (s_acc, m_acc, p_acc) = one_step(big), one_step(micro)
    assert s_big.step == s_acc.step == 1
    # The gradient norm is what a mean of micro-batch means would get wrong (Adam's first update would not).
    assert abs(m_big["grad_norm"] - m_acc["grad_norm"]) < 1e-5 * m_big["grad_norm"]
    for name in p_big:
        torch.testing.assert_close(p_acc[name], p_big[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_built_objective_is_the_one_the_contract_holds_for(tmp_path):
    """The module train_step calls, as build() makes it for a run: its packed pass over the run's own rows
    equals the two-pass reference (LM sum, views, JEPA sum)."""
    state = build(typed(reversal_config(tmp_path, jepa={"lambda": 1.0, "loss": "infonce"})), verbose=False)
    rows = state.dataset.rows[:6]
    assert any(r.has_jepa for r in rows) and not all(r.has_jepa for r in rows)
    with torch.no_grad():
        packed = state.objective(collate(rows, state.dataset.pad_id))
        separate = state.objective.two_pass(rows, state.dataset.pad_id)
    assert packed.lm_tokens == separate.lm_tokens and packed.jepa_rows == separate.jepa_rows
    torch.testing.assert_close(packed.lm_sum, separate.lm_sum, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.pred, separate.pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.jepa_sum, separate.jepa_sum, rtol=1e-5, atol=1e-5)


def _chat_run(tmp_path, smollm2_dir, **sections):
    import json

    from jepa.data.sources import gsm8k_record
    from tests.train.helpers import chat_config, tiny_chat_model_dir

    data = tmp_path / "train.jsonl"
    long = "word " * 40
    records = [gsm8k_record(f"What is {i} + 3?", f"Add them.\nIt is {i + 3}.\n#### {i + 3}") for i in range(6)]
    records += [gsm8k_record("And 4 + 4?", f"{long}\n{long}\n#### 8")] * 2
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    return typed(chat_config(tmp_path, tiny_chat_model_dir(tmp_path, smollm2_dir), data, **sections))


def test_nothing_left_to_train_is_refused_before_any_step(tmp_path, smollm2_dir):
    cfg = _chat_run(tmp_path, smollm2_dir, layout={"mode": "jepa", "max_length": 16})
    with pytest.raises(ValueError, match=r"layout.max_length: 16 truncates all 8 rows of .*train.jsonl before"):
        build(cfg, verbose=False)


def test_truncated_views_are_a_startup_warning_with_counts(tmp_path, smollm2_dir, capsys):
    build(_chat_run(tmp_path, smollm2_dir, layout={"mode": "step", "max_length": 90}), verbose=True)
    err = capsys.readouterr().err
    assert "warning: 2 of 8 rows (25%) lose their JEPA term to layout.max_length=90" in err
    build(_chat_run(tmp_path, smollm2_dir, layout={"mode": "step", "max_length": 512}), verbose=True)
    assert "warning" not in capsys.readouterr().err


class SyncCounter(TorchDispatchMode):
    """Counts the ops that make a CUDA host wait for the device: reading a value (`.item()`, `bool()`,
    `float()`), `nonzero`, and indexing by a boolean mask (its output shape depends on the data)."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        # aten.index / index_put take (source, indices, ...): a sync only when an index is a boolean mask.
        bool_index = name.startswith(("aten.index.", "aten.index_put")) and any(
            torch.is_tensor(t) and t.dtype == torch.bool for t in args[1]
        )
        if bool_index or name.startswith(("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select")):
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_a_training_step_never_waits_for_the_device_inside_its_micro_batches(tmp_path):
    state = build(typed(reversal_config(tmp_path, jepa={"lambda": 1.0, "ratio": 1.0})), verbose=False)
    micro_batches = next_micro_batches(state)
    assert any(b.counts.jepa_rows for b in micro_batches) and len(micro_batches) == 2
    with SyncCounter() as counter:
        totals = forward_backward(state, micro_batches)  # both micro-batches, forward and backward
    assert counter.syncs == []
    # The whole step, but AdamW's own update: on CPU it reads its step counters, which live on the host by design
    # (on CUDA the fused AdamW reads nothing back). The step's one read of the device is a .tolist().
    adamw_step = state.optimizer.step

    def uncounted_step(*args, **kwargs):
        with _disable_current_modes():
            return adamw_step(*args, **kwargs)

    state.optimizer.step = uncounted_step
    micro_batches = next_micro_batches(state)  # host-side collate: nothing on the device yet
    with SyncCounter() as counter:
        metrics = train_step(state, micro_batches)
    assert counter.syncs == [] and totals.losses.shape == (2,) and metrics["jepa_rows"] > 0
    assert state.step == 1


def test_the_logged_loss_with_packing_equals_the_loss_without_it(tmp_path):
    """Same examples per step, several per row: the logged losses match (1e-5) and far fewer positions are padding."""
    from jepa.train.loop import train

    runs = {}
    for name, pack_length in (("padded", 0), ("packed", 128)):  # 8 examples of 6-13 tokens: one row
        raw = reversal_config(tmp_path, run={"name": name}, data={"pack_length": pack_length},
                              schedule={"max_steps": 4, "batch_size": 8, "grad_accum": 1})  # fmt: skip
        train(typed(raw), progress=False)
        lines = (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()
        runs[name] = [json.loads(line) for line in lines]
    for a, b in zip(runs["padded"], runs["packed"], strict=True):
        assert (a["lm_tokens"], a["jepa_rows"], a["tokens"]) == (b["lm_tokens"], b["jepa_rows"], b["tokens"])
        for key in ("loss", "lm", "jepa"):
            assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(a[key])), (key, a[key], b[key])
    assert all(m["real_token_fraction"] == 1.0 for m in runs["packed"])
    assert sum(m["real_token_fraction"] for m in runs["padded"]) / 4 < 0.9


def test_the_step_logs_model_flops_counted_by_hand(tmp_path):
    """tflops = (6 x block weights x tokens + 6 x head x label tokens + 12 x layers x width x attended pairs) /
    step time; mfu appears when the device's peak is known (run.peak_tflops)."""
    state = build(typed(reversal_config(tmp_path, run={"peak_tflops": 1.0})), verbose=False)
    micro_batches = next_micro_batches(state)
    metrics = train_step(state, micro_batches)
    arch, vocab = state.cfg.model.arch, state.dataset.vocab_size
    d, layers = arch["n_embd"], arch["n_layer"]
    block_weights = layers * (d * 3 * d + d * d + d * 4 * d + 4 * d * d)  # c_attn, attn c_proj, c_fc, mlp c_proj
    pairs = 0
    for batch in micro_batches:  # (query, key) pairs the masks allow among real tokens
        real = batch.input_ids != state.dataset.pad_id
        pairs += int((dense_mask(batch)[:, 0] & real[:, :, None] & real[:, None, :]).sum())
    flops = 6 * block_weights * metrics["tokens"] + 6 * vocab * d * metrics["lm_tokens"] + 12 * layers * d * pairs
    assert metrics["tflops"] == pytest.approx(flops / metrics["step_s"] / 1e12, rel=1e-2)
    assert metrics["mfu"] == pytest.approx(metrics["tflops"] / 1.0)
    assert "tflops_6n" not in metrics  # full fine-tuning: the one count is already 6N
    plain = build(typed(reversal_config(tmp_path / "cpu")), verbose=False)
    assert "mfu" not in train_step(plain, next_micro_batches(plain))  # CPU, no peak given: no MFU
    # LoRA: the weights are counted 4x (no weight gradient), and the 6N figure is logged beside it
    lora = build(typed(reversal_config(tmp_path / "lora", run={"peak_tflops": 1.0},
                                       lora={"enabled": True, "rank": 2, "alpha": 4})), verbose=False)  # fmt: skip
    micro_batches = next_micro_batches(lora)
    attention = (
        12
        * layers
        * d
        * sum(
            int((dense_mask(b)[:, 0] & (b.input_ids != pad)[:, :, None] & (b.input_ids != pad)[:, None, :]).sum())
            for b, pad in ((b, lora.dataset.pad_id) for b in micro_batches)
        )
    )
    metrics = train_step(lora, micro_batches)
    counted_4n = 4 * block_weights * metrics["tokens"] + 4 * vocab * d * metrics["lm_tokens"] + attention
    counted_6n = 6 * block_weights * metrics["tokens"] + 6 * vocab * d * metrics["lm_tokens"] + attention
    assert metrics["tflops"] == pytest.approx(counted_4n / metrics["step_s"] / 1e12, rel=1e-2)
    assert metrics["tflops_6n"] == pytest.approx(counted_6n / metrics["step_s"] / 1e12, rel=1e-2)
    assert metrics["mfu_6n"] == pytest.approx(metrics["tflops_6n"] / 1.0) and metrics["mfu_6n"] > metrics["mfu"]


def test_only_cudnn_sdpa_batches_are_padded_to_a_multiple_of_128():
    from jepa.train.step import pad_multiple

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for precision in ("bf16", "fp16", "pure_bf16"):  # cuDNN's SDPA: the T % 128 == 64 NaN
        assert pad_multiple(1, cuda, precision=precision, attention="sdpa") == 128
    assert pad_multiple(96, cuda, precision="bf16", attention="sdpa") == 384
    assert pad_multiple(8, cuda, precision="fp32", attention="sdpa") == 8  # fp32 never runs cuDNN
    assert pad_multiple(8, cuda, precision="bf16", attention="flex") == 8  # FlexAttention is not SDPA
    assert pad_multiple(8, cpu, precision="bf16", attention="sdpa") == 8


def test_frozen_lora_bases_in_the_compute_dtype_change_nothing_but_their_storage(tmp_path, monkeypatch):
    """bf16 autocast would cast the frozen base weights to bf16 on every forward; stored in bf16 once, a step gives
    the same loss, gradient norm and adapter update (to bf16 rounding: the two paths may pick different kernels,
    so the comparison is never bitwise)."""
    from jepa.train import build as build_module

    raw = reversal_config(tmp_path, lora={"enabled": True, "rank": 2, "alpha": 4}, precision={"mode": "bf16"})
    results = {}
    for cast in (True, False):
        if not cast:
            monkeypatch.setattr(build_module, "cast_frozen_bases", lambda model, dtype: 0)
        state = build(typed(raw), verbose=False)
        bases = {p.dtype for n, p in state.model.named_parameters() if ".base." in n}
        metrics = train_step(state, next_micro_batches(state))
        adapters = {n: p.detach().clone() for n, p in state.model.named_parameters() if p.requires_grad}
        results[cast] = (bases, metrics["loss"], metrics["grad_norm"], adapters)
    assert results[True][0] == {torch.bfloat16} and results[False][0] == {torch.float32}
    assert results[True][1:3] == pytest.approx(results[False][1:3], rel=1e-3)
    for name, value in results[True][3].items():
        torch.testing.assert_close(value, results[False][3][name], rtol=1e-3, atol=1e-6, msg=name)


def test_the_optimizer_is_fused_on_cpu_and_steps_as_the_foreach_one_does():
    """Fused AdamW on CPU (one kernel): the same update as torch's foreach step, up to rounding."""
    import copy

    from jepa.train.config import OptimConfig
    from jepa.train.optim import make_optimizer
    from tests.models.tiny import tiny_llama

    cfg, cpu = OptimConfig(lr=1e-2, weight_decay=0.1), torch.device("cpu")
    a = tiny_llama()
    b = copy.deepcopy(a)
    fused, foreach = make_optimizer(cfg, a, None, cpu), make_optimizer(cfg, b, None, cpu, fused=False)
    assert fused.defaults["fused"] and not foreach.defaults["fused"]
    for _ in range(3):
        for model in (a, b):
            for p in model.parameters():
                p.grad = torch.ones_like(p) * 0.01 + p.detach() * 0.1
        fused.step(), foreach.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert any((p - q0).abs().max() > 1e-3 for p, q0 in zip(a.parameters(), tiny_llama().parameters()))


def test_the_gpu_recipe_of_llama1b_step_is_the_seeds_step_in_one_packed_micro_batch(tmp_path, smollm2_dir):
    """configs/llama1b_step.yaml trains the seed's 16 rows a step (batch 4 x accumulation 4) as ONE micro-batch
    packed into rows of up to `data.pack_length` tokens, compiled, with FlexAttention: fewer, larger kernels. The
    loss is normalised over the step, so the math is the seed's: on a tiny chat model with Step-JEPA rows the two
    layouts give the same losses and weights over 2 steps (LoRA dropout off; sdpa and eager here, the CPU's)."""
    from jepa.data.sources import gsm8k_record
    from jepa.train.config import load_config
    from tests.train.helpers import chat_config, tiny_chat_model_dir

    recipe = load_config("llama1b_step.yaml")
    assert (recipe.schedule.batch_size, recipe.schedule.grad_accum) == (16, 1)  # the seed's 4 x 4
    assert recipe.data.pack_length >= 4 * recipe.layout.max_length
    assert (recipe.model.compile, recipe.model.attention) == (True, "flex")
    data = tmp_path / "train.jsonl"
    steps = ["\n".join(f"Step {k}: add {k} to {i}." for k in range(2 + i % 3)) for i in range(32)]  # uneven rows
    records = [gsm8k_record(f"What is {i} + {i % 5}?", f"{steps[i]}\n#### {i + i % 5}") for i in range(32)]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    model_dir = tiny_chat_model_dir(tmp_path, smollm2_dir)
    runs = {}
    layouts = {
        "seed": ({"batch_size": 4, "grad_accum": 4}, 0),
        "recipe": ({"batch_size": recipe.schedule.batch_size, "grad_accum": 1}, recipe.data.pack_length),
    }
    for name, (schedule, pack_length) in layouts.items():
        raw = chat_config(tmp_path / name, model_dir, data, data={"limit": 32, "pack_length": pack_length},
                          schedule={**schedule, "max_steps": 2}, lora={"dropout": 0.0})  # fmt: skip
        state = build(typed(raw), verbose=False)
        initial = {key: value.clone() for key, value in state.objective.state_dict().items()}
        batches = [next_micro_batches(state) for _ in range(2)]
        losses = [train_step(state, micro_batches)["loss"] for micro_batches in batches]
        runs[name] = (losses, state.objective.state_dict(), batches[0])
    (seed_losses, seed_weights, seed_batches), (losses, weights, batches) = runs["seed"], runs["recipe"]
    assert len(seed_batches) == 4 and len(batches) == 1 and batches[0].input_ids.shape[0] < 16  # packed
    assert losses == pytest.approx(seed_losses, rel=1e-5)
    for key, value in weights.items():
        torch.testing.assert_close(value, seed_weights[key], rtol=1e-5, atol=1e-6, msg=key)
    assert max((value - initial[key]).abs().max().item() for key, value in weights.items()) > 1e-4  # it trained

"""Tiny training setups for the tests: a 25-item reversal dataset and a 2-layer GPT-2 / Llama."""

from __future__ import annotations

import shutil
from pathlib import Path

from jepa.data.reversal import generate_reversal
from jepa.models import save_pretrained
from jepa.train.config import TrainConfig, config_from_dict
from tests.models.tiny import tiny_llama

TINY_GPT2 = {
    "model_type": "gpt2",
    "n_embd": 32,
    "n_head": 2,
    "n_layer": 2,
    "n_positions": 16,
    "resid_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "attn_pdrop": 0.0,
}


def reversal_dir(root: Path) -> Path:
    """25 training items (20 train facts with a JEPA term, 5 atomic), 31-token vocabulary."""
    out = root / "reversal"
    if not (out / "vocab.json").is_file():
        generate_reversal(out, n_learning=20, n_test=10, n_first=10, n_last=10, comb=3, n_relations=1, n_valid=5)
    return out


def reversal_config(root: Path, **sections) -> dict:
    """Raw config dict for a tiny GPT-2 reversal run in `root`; `sections` are merged into the defaults."""
    cfg = {
        "run": {"name": "tiny", "dir": str(root / "runs"), "seed": 1, "device": "cpu"},
        "model": {"arch": dict(TINY_GPT2)},
        "data": {"train": str(reversal_dir(root))},
        "layout": {"mode": "reversal", "predictors": 1},
        "optim": {"lr": 1e-2, "weight_decay": 0.01},
        "schedule": {"kind": "cosine", "warmup_steps": 2, "max_steps": 10, "batch_size": 4, "grad_accum": 2},
        "jepa": {"lambda": 1.0},
        "checkpoint": {"every": 0, "keep_last": 5, "export": "none"},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def typed(cfg: dict) -> TrainConfig:
    return config_from_dict(cfg)


def tiny_chat_model_dir(root: Path, smollm2_dir: Path) -> Path:
    """A 2-layer Llama with SmolLM2's vocabulary and tokenizer files, saved in HF format (head_dim 16, grouped
    query attention: 2 query heads share 1 key/value head)."""
    out = root / "tiny_llama"
    if not (out / "config.json").is_file():
        model = tiny_llama(
            seed=0,
            vocab_size=49152,
            hidden_size=32,
            intermediate_size=48,
            num_attention_heads=2,  # head_dim 16: inductor's CUDA FlexAttention kernels need >= 16
            num_key_value_heads=1,
            tie_word_embeddings=True,
            max_position_embeddings=512,
        )
        save_pretrained(model, out)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(smollm2_dir / name, out / name)
    return out


def chat_config(root: Path, model_dir: Path, data_file: Path, **sections) -> dict:
    cfg = {
        "run": {"name": "chat", "dir": str(root / "runs"), "seed": 3, "device": "cpu"},
        "model": {"path": str(model_dir)},
        "data": {"train": str(data_file), "limit": 8},
        "layout": {"mode": "step", "predictors": 2, "max_length": 256},
        "optim": {"lr": 1e-3},
        "schedule": {"kind": "linear", "max_steps": 3, "batch_size": 2, "grad_accum": 2},
        "jepa": {"lambda": 0.5},
        "lora": {"enabled": True, "rank": 4, "alpha": 8, "dropout": 0.1},
        "checkpoint": {"export": "hf"},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def constant_eval(cfg: TrainConfig):
    """An `eval.fn` factory for the tests: the hook reports the step and the run's seed."""
    return lambda model, predictors, step: {"seen_step": step, "seed": cfg.run.seed, "training": model.training}


def assert_same_weights(ta: dict, tb: dict, atol: float = 1e-6) -> None:
    """Two state dicts of the same run computed two ways (processes, strategies) agree to `atol`.

    GPT-2's key bias gets an exactly-zero gradient in exact arithmetic (softmax is shift invariant); Adam divides
    the rounding noise by its own magnitude, so only that slice of `attn.c_attn.bias` is held to 1e-4."""
    import torch

    assert ta.keys() == tb.keys()
    for key in ta:
        a, b = ta[key], tb[key]
        if key.endswith("attn.c_attn.bias"):
            d = a.numel() // 3
            torch.testing.assert_close(a[d : 2 * d], b[d : 2 * d], rtol=0, atol=1e-4, msg=key)
            a, b = torch.cat([a[:d], a[2 * d :]]), torch.cat([b[:d], b[2 * d :]])
        torch.testing.assert_close(a, b, rtol=0, atol=atol, msg=key)


def slow_weight_eval(cfg: TrainConfig):
    """An `eval.fn` factory: the hook takes 3 s (longer than the tests' 2 s collective timeout) and reports
    sums of the whole model's and predictors' weights, and whether it got a plain (unsharded) model."""
    import time

    import torch
    from torch.distributed.tensor import DTensor

    def hook(model, predictors, step):
        time.sleep(3.0)
        params = list(model.parameters())
        return {
            "weight_sum": sum(float(p.double().sum()) for p in params),
            "predictor_sum": float(predictors.weight.double().sum()) if predictors is not None else 0.0,
            "plain": not any(isinstance(p, DTensor) for p in params),
            "grad_enabled": torch.is_grad_enabled(),
        }

    return hook


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_worker(
    rank: int, world_size: int, port: int, configs: list[dict], timeout_s: float | None, slow_checkpoint_s: float
) -> None:
    import os
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from jepa.train.loop import train

    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    if slow_checkpoint_s:  # rank 0's part of every checkpoint takes this long (a large model's files)
        import time

        from jepa.train import checkpoint

        finish = checkpoint.finish_checkpoint

        def slow_finish(*args, **kwargs):
            time.sleep(slow_checkpoint_s)
            return finish(*args, **kwargs)

        checkpoint.finish_checkpoint = slow_finish
    if timeout_s is not None:  # a short collective timeout, to show who would wait past it
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
    try:
        for raw in configs:  # several runs per spawn: starting processes is the slow part
            train(config_from_dict(raw), progress=False)
    finally:
        if dist.is_initialized():
            dist.barrier()  # leave together: gloo aborts a process whose peer tears down first
            dist.destroy_process_group()


def spawn_training(
    configs: list[dict], nprocs: int, timeout_s: float | None = None, slow_checkpoint_s: float = 0.0
) -> None:
    """Train each raw config in turn in `nprocs` gloo processes, with torchrun's environment; `timeout_s`: the
    process group's collective timeout (torch's default otherwise); `slow_checkpoint_s`: rank 0 takes that much
    longer to write each checkpoint."""
    import torch.multiprocessing as mp

    args = (nprocs, _free_port(), configs, timeout_s, slow_checkpoint_s)
    mp.spawn(_train_worker, args=args, nprocs=nprocs, join=True)


def stp_chat_config(root: Path, smollm2_dir: Path, **sections) -> dict:
    """A tiny full fine-tuning run in stp mode (lambda 1 so the term matters) on 8 short chat records."""
    import json

    data = root / "stp_train.jsonl"
    records = [{"messages": [{"role": "user", "content": f"What is {i} + 3?"},
                             {"role": "assistant", "content": f"It is {i + 3}."}]} for i in range(8)]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    base = {
        "layout": {"mode": "stp", "max_length": 256},
        "jepa": {"lambda": 1.0},
        "lora": {"enabled": False},
        "run": {"threads": 1},
        "schedule": {"max_steps": 4},
        "checkpoint": {"export": "none", "keep_last": 5},
    }
    cfg = chat_config(root, tiny_chat_model_dir(root, smollm2_dir), data, **base)
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg

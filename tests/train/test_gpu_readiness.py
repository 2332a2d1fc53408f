"""What the CUDA tests (tests/train/test_cuda.py, skipped without a GPU) need of their setup, checked on any
machine so a GPU hour is not spent finding it out."""

import torch

from jepa.train.build import build
from tests.train.helpers import typed
from tests.train.test_cuda import _chat, _reversal


def test_the_cuda_tests_models_have_head_dim_of_at_least_16(tmp_path, smollm2_tokenizer_dir):
    """Inductor's CUDA FlexAttention kernels need head_dim >= 16; the flex and no-sync tests failed to compile at 8."""
    for raw in (_reversal(tmp_path, "r"), _chat(tmp_path, smollm2_tokenizer_dir, "c")):
        raw["run"]["device"] = "cpu"  # the same models, built here
        model = build(typed(raw), verbose=False).model
        config = model.config
        heads = getattr(config, "num_attention_heads", None) or config.n_head
        layers, width = model.attention_shape()
        assert width // heads >= 16, (raw["run"]["dir"], width, heads)
        assert torch.isfinite(model.lm_head.weight).all()


def test_the_gpu_stage_folder_carries_everything_the_check_reads_in_8_mib(tmp_path, repo_root, smollm2_dir):
    """`make gpu-stage`: tokenizer files, chat rows and the small reversal set, within what one GPU call carries;
    the CUDA tests' setup works from its tokenizer folder alone (no weights)."""
    import json
    import subprocess
    import sys

    from jepa.data.sources import gsm8k_record

    chats = tmp_path / "train.jsonl"
    records = [gsm8k_record(f"What is {i} + 3?", f"Add.\nIt is {i + 3}.\n#### {i + 3}") for i in range(300)]
    chats.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "gpu_stage"
    proc = subprocess.run([sys.executable, "bench/gpu_stage.py", "--out", str(out), "--chat-data", str(chats),
                           "--tokenizer", str(smollm2_dir)], cwd=repo_root, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert size <= 8 * 2**20
    assert sorted(p.name for p in (out / "tokenizer").iterdir()) == ["config.json", "tokenizer.json",
                                                                    "tokenizer_config.json"]  # fmt: skip
    assert len((out / "gsm8k_steps.jsonl").read_text().splitlines()) == 256
    assert (out / "reversal_small" / "train.json").is_file()
    (tmp_path / "from_stage").mkdir()
    raw = _chat(tmp_path / "from_stage", out / "tokenizer", "c")
    raw["run"]["device"] = "cpu"
    assert build(typed(raw), verbose=False).model.config.vocab_size == 49152


def test_init_on_device_draws_a_from_scratch_models_weights_where_the_run_trains(tmp_path, monkeypatch):
    """`model.init_on: device` builds a `model.arch` model on the run's device (a 1B model's random init then
    takes seconds on the GPU, not minutes on its host's CPU); `cpu`, the default, builds it on the CPU whatever the
    device, so a seed gives the same initial weights everywhere. The device here is `meta` (no memory): only
    where the weights were first drawn tells the two apart."""
    from types import SimpleNamespace

    from jepa.train import build as build_module
    from tests.train.helpers import reversal_config

    drawn_on = []
    real_build_model = build_module.build_model

    def spy(arch, source):
        model = real_build_model(arch, source)
        drawn_on.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(build_module, "build_model", spy)
    for init_on in ("cpu", "device"):
        cfg = typed(reversal_config(tmp_path, model={"init_on": init_on}))
        model = build_module.build_train_model(cfg, SimpleNamespace(vocab_size=64), torch.device("meta"),
                                               SimpleNamespace(casts_for_compute=False))  # fmt: skip
        assert next(model.parameters()).device.type == "meta"
    assert drawn_on == ["cpu", "meta"]

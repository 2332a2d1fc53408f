import json
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from jepa.data.sources import gsm8k_record
from jepa.eval.loading import load_for_eval
from jepa.models import load_pretrained
from jepa.models.lora import apply_lora, load_adapter, lora_state_dict, merge_lora
from jepa.models.predictors import PredictorEmbeddings
from tests.train.helpers import chat_config, tiny_chat_model_dir

pytestmark = pytest.mark.slow  # runs train.py in a new process


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, smollm2_dir, repo_root):
    """`python train.py --config tiny.yaml`: Step-JEPA + LoRA on a 2-layer Llama with SmolLM2's tokenizer."""
    root = tmp_path_factory.mktemp("chat")
    data = root / "train.jsonl"
    with data.open("w") as f:
        for i in range(10):
            answer = (
                f"There are {i} apples and {i + 2} pears.\nSo {i} + {i + 2} = {2 * i + 2} fruits.\n#### {2 * i + 2}"
            )
            f.write(json.dumps(gsm8k_record(f"How many fruits are there in basket {i}?", answer)) + "\n")
    model_dir = tiny_chat_model_dir(root, smollm2_dir)
    cfg_file = root / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(chat_config(root, model_dir, data, checkpoint={"every": 2})))
    proc = subprocess.run(
        [sys.executable, "train.py", "--config", str(cfg_file), "--quiet"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return root, model_dir


def test_end_to_end_run_writes_metrics_config_checkpoints(chat_run):
    root, _ = chat_run
    run_dir = root / "runs" / "chat"
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]
    assert all(m["jepa_rows"] > 0 and m["lm_tokens"] > 0 for m in lines)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["jepa"]["lambda"] == 0.5
    assert sorted(p.name for p in run_dir.glob("step_*")) == ["step_2", "step_3"]
    assert {p.name for p in (run_dir / "step_3").iterdir()} >= {
        "adapter_model.safetensors",
        "adapter_config.json",
        "predictors.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng.pt",
        "trainer_state.json",
    }


def test_lora_freezes_the_base_and_trains_the_predictors(chat_run):
    root, model_dir = chat_run
    step = root / "runs" / "chat" / "step_3"
    adapter = load_file(str(step / "adapter_model.safetensors"))  # PEFT's layout
    assert len(adapter) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at zero
    trained = load_file(str(step / "predictors.safetensors"))["weight"]
    base = load_pretrained(model_dir)
    initial = PredictorEmbeddings(2, base.embed_tokens, seed=0).weight
    assert not torch.allclose(trained, initial)
    assert not torch.equal(trained[0], trained[1])

    # Gradients never reach the base: after apply_lora only adapter tensors require grad.
    apply_lora(base, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], 4, 8.0)
    assert {n for n, p in base.named_parameters() if p.requires_grad} == set(lora_state_dict(base))


def test_merged_export_loads_in_transformers_with_the_same_logits(chat_run):
    transformers = pytest.importorskip("transformers")
    root, model_dir = chat_run
    adapted = load_pretrained(model_dir)
    apply_lora(adapted, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], 4, 8.0)
    load_adapter(adapted, root / "runs" / "chat" / "step_3")
    ids = torch.tensor([[1, 50, 300, 7, 2048, 9, 11]])
    with torch.no_grad():
        ours = adapted.lm_head(adapted.eval()(ids))
        hf = transformers.AutoModelForCausalLM.from_pretrained(root / "runs" / "chat" / "final").eval()
        theirs = hf(ids).logits
        plain = load_pretrained(model_dir)
        base_logits = plain.lm_head(plain(ids))
        merged = merge_lora(adapted)
        again = merged.lm_head(merged(ids))
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(again, ours, rtol=1e-4, atol=1e-4)
    assert (ours - base_logits).abs().max() > 1e-3  # the adapter did change the model
    assert (root / "runs" / "chat" / "final" / "tokenizer.json").is_file()


def test_lora_step_checkpoint_loads_for_eval_like_the_merged_export(chat_run):
    root, model_dir = chat_run
    run_dir = root / "runs" / "chat"
    loaded = load_for_eval(run_dir / "step_3", device="cpu")  # adapter + config.yaml's model.path, merged
    final = load_for_eval(run_dir / "final", device="cpu")
    ids = torch.tensor([[1, 50, 300, 7, 2048, 9, 11]])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model.lm_head(loaded.model(ids)), final.model.lm_head(final.model(ids)), rtol=1e-5, atol=1e-5
        )
    assert torch.equal(loaded.predictors.weight, final.predictors.weight)
    assert loaded.tokenizer_dir == model_dir

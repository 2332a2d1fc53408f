"""LoRA adapters in PEFT's layout (jepa/models/lora.py): PEFT loads ours onto transformers' model and gives the
logits of our merged export; the earlier layout still reads."""

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from jepa.models import load_pretrained, save_pretrained
from jepa.models.lora import adapter_settings, apply_lora, lora_state_dict, read_adapter, save_adapter, save_merged
from tests.models.tiny import tiny_llama

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def adapted_model():
    base = tiny_llama()
    model = copy.deepcopy(base)
    apply_lora(model, TARGETS, rank=4, alpha=8.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.05)  # B starts at zero: give the adapter something to say
    return base, model


def test_peft_loads_our_adapter_onto_transformers_model_with_our_merged_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    base, model = adapted_model()
    save_pretrained(base, tmp_path / "base")
    save_adapter(model, tmp_path / "adapter", extra={"base_model_name_or_path": str(tmp_path / "base")})
    save_merged(model, tmp_path / "merged")
    ids = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
        peft_model = peft.PeftModel.from_pretrained(reference, tmp_path / "adapter").eval()
        theirs = peft_model(input_ids=ids).logits
        merged = load_pretrained(tmp_path / "merged")
        ours = merged.logits(merged(ids))
        plain = base.logits(base(ids))
    assert (theirs - ours).abs().max() < 1e-4
    assert (ours - plain).abs().max() > 1e-2  # the adapter changes the logits: the check can fail
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8.0
    assert sorted(config["target_modules"]) == sorted(TARGETS)


def test_the_earlier_layout_still_reads(tmp_path):
    _, model = adapted_model()
    state = {k: v.contiguous() for k, v in lora_state_dict(model).items()}
    save_file(state, str(tmp_path / "adapter.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"rank": 4, "alpha": 8.0, "modules": sorted({k.rsplit(".", 1)[0] for k in state})}))  # fmt: skip
    assert set(read_adapter(tmp_path)) == set(state)
    targets, rank, alpha = adapter_settings(tmp_path)
    assert sorted(targets) == sorted(TARGETS) and (rank, alpha) == (4, 8.0)
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="adapter_config.json: not a LoRA adapter config"):
        adapter_settings(tmp_path)

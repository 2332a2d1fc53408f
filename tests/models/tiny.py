import torch

from jepa.models import GPT2, Gemma, GemmaConfig, GPT2Config, Llama, LlamaConfig

LLAMA_VARIANTS = {
    "gqa_tied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "mha_untied": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),
    "llama3_rope": dict(
        num_attention_heads=4,
        num_key_value_heads=1,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
    "head_dim_bias": dict(num_attention_heads=4, num_key_value_heads=2, head_dim=24, attention_bias=True),
    # The Llama-shaped decoders (jepa.models.llama.VARIANTS).
    "qwen2": dict(
        model_type="qwen2", num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6, tie_word_embeddings=True
    ),  # fmt: skip
    "qwen3": dict(model_type="qwen3", num_attention_heads=4, num_key_value_heads=2, head_dim=24, rope_theta=1e6),
    "olmo2": dict(model_type="olmo2", num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6),
    # a window shorter than the test sequences (40 tokens), so it changes the logits
    "mistral": dict(model_type="mistral", num_attention_heads=4, num_key_value_heads=2, sliding_window=7),
    "mistral_v0.3": dict(model_type="mistral", num_attention_heads=4, num_key_value_heads=1, sliding_window=None),
    "phi3": dict(model_type="phi3", num_attention_heads=4, num_key_value_heads=2, sliding_window=9),
}


def tiny_llama(seed: int = 0, **overrides) -> Llama:
    torch.manual_seed(seed)
    cfg = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
    )
    cfg.update(overrides)
    return scramble_weights(Llama(LlamaConfig(**cfg))).eval()


def scramble_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Norm weights in [0.5, 1.5], everything else (biases too) N(0, 0.1): a norm on the wrong tensor or axis,
    or a bias left out, shows in the logits. Works on our modules and on transformers' alike."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.1)
    return model


def tiny_gpt2(seed: int = 0, **overrides) -> GPT2:
    torch.manual_seed(seed)
    cfg = dict(
        vocab_size=97, n_positions=64, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    cfg.update(overrides)
    model = GPT2(GPT2Config(**cfg))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1)
    return model.eval()


GEMMA_VARIANTS = {
    # windows of 6 positions, shorter than the test sequences; caps low enough that tanh bends the scores
    "gemma2": dict(model_type="gemma2", attn_logit_softcapping=1.5, final_logit_softcapping=2.0),
    "gemma3": dict(model_type="gemma3_text", num_hidden_layers=3, layer_types=None, rope_theta=1e6,
                   rope_local_base_freq=1e4, rope_scaling={"rope_type": "linear", "factor": 8.0},
                   attn_logit_softcapping=None, final_logit_softcapping=None, query_pre_attn_scalar=16),
}  # fmt: skip


def tiny_gemma(seed: int = 0, **overrides) -> Gemma:
    """Gemma-2 by default: 2 layers (sliding, global), GQA, head_dim 24, query_pre_attn_scalar 20."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=24, max_position_embeddings=128, query_pre_attn_scalar=20,
               sliding_window=6, bos_token_id=None, eos_token_id=None, pad_token_id=None)  # fmt: skip
    cfg.update(overrides)
    if cfg["model_type"] == "gemma3_text":
        cfg["extra"] = {"sliding_window_pattern": 2}  # 3 layers: sliding, global, sliding
    return scramble_weights(Gemma(GemmaConfig(**cfg))).eval()

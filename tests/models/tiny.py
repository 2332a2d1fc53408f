import torch

from jepa.models import GPT2, GPT2Config, Llama, LlamaConfig

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

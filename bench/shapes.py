"""Model shapes shared by the benchmarks (random weights of these shapes; no checkpoint needed)."""

# SmolLM2-135M-Instruct: 30 layers, d=576, 9 heads / 3 KV heads, vocabulary 49,152, tied head.
SMOLLM2 = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
)

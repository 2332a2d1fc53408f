"""4-D masks, explicit positions, KV-cache generation."""

import pytest
import torch

from jepa.models import generate, save_pretrained
from tests.models.tiny import GEMMA_VARIANTS, LLAMA_VARIANTS, tiny_gemma, tiny_gpt2, tiny_llama

MODELS = {
    "llama": tiny_llama,
    "gpt2": tiny_gpt2,
    "mistral_window": lambda: tiny_llama(**LLAMA_VARIANTS["mistral"]),  # a window of 7 positions: shorter than
    "gemma2": lambda: tiny_gemma(**GEMMA_VARIANTS["gemma2"]),  # the sequences below, so it matters
    "gemma3": lambda: tiny_gemma(**GEMMA_VARIANTS["gemma3"]),  # (test_a_sliding_window_changes_what_a_layer_sees)
}


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_block_diagonal_mask_equals_separate_runs(arch):
    model = MODELS[arch]()
    a, b = torch.randint(0, 97, (1, 9)), torch.randint(0, 97, (1, 6))
    ids = torch.cat([a, b], dim=1)
    seg = torch.tensor([0] * 9 + [1] * 6)
    mask = (seg[:, None] == seg[None, :]) & torch.ones(15, 15, dtype=torch.bool).tril()
    positions = torch.cat([torch.arange(9), torch.arange(6)])[None]
    with torch.no_grad():
        packed = model(ids, attn_mask=mask[None, None], position_ids=positions)
        assert (packed[:, :9] - model(a)).abs().max() < 1e-5
        assert (packed[:, 9:] - model(b)).abs().max() < 1e-5
        # GPT-2's absolute positions: without the restart the second block differs (the test can tell).
        # RoPE is relative, so for Llama an isolated block is position-shift invariant up to rounding.
        shifted = model(ids, attn_mask=mask[None, None])
        gap = (shifted[:, 9:] - model(b)).abs().max()
        assert gap > 1e-3 if arch == "gpt2" else gap < 1e-4


def test_additive_float_mask_equals_boolean_mask():
    model = tiny_llama()
    ids = torch.randint(0, 97, (2, 10))
    allowed = torch.rand(2, 1, 10, 10) > 0.4
    allowed |= torch.eye(10, dtype=torch.bool)
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
    with torch.no_grad():
        assert torch.allclose(model(ids, attn_mask=allowed), model(ids, attn_mask=additive), atol=1e-6)


def greedy_uncached(model, prompt, n):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model.logits(model(torch.tensor([ids])))[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_cached_batched_greedy_equals_uncached(arch):
    model = MODELS[arch]()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [3, 4], [20, 21, 22, 23]]
    batched = generate(model, prompts, max_new_tokens=12)
    for prompt, got in zip(prompts, batched):
        assert got == greedy_uncached(model, prompt, 12)


@pytest.mark.parametrize("variant", ["llama", "qwen2", "qwen3", "olmo2", "mistral", "phi3", "gemma2", "gemma3"])
def test_greedy_equals_transformers_generate(tmp_path, variant):
    transformers = pytest.importorskip("transformers")
    if variant in GEMMA_VARIANTS:
        model = tiny_gemma(**GEMMA_VARIANTS[variant])
    else:
        model = tiny_llama(**LLAMA_VARIANTS.get(variant, {}))
    save_pretrained(model, tmp_path)
    # eager: transformers' reference path (5.17 picks SDPA for Gemma-2 by default, which drops its soft-cap)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    prompt = [5, 6, 7, 8, 9]
    with torch.no_grad():
        expected = ref.generate(
            torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, 5:].tolist()
    assert generate(model, [prompt], max_new_tokens=10)[0] == expected


def test_a_sliding_window_changes_what_a_layer_sees():
    """The window tests above can fail: 7 positions of 15 change the late logits, and leave the first 7 alone."""
    windowed = tiny_llama(**LLAMA_VARIANTS["mistral"])
    wide = tiny_llama(**{**LLAMA_VARIANTS["mistral"], "sliding_window": 100})  # same seed: the same weights
    ids = torch.randint(0, 97, (1, 15))
    with torch.no_grad():
        a, b = windowed(ids), wide(ids)
    assert (a[:, :7] - b[:, :7]).abs().max() < 1e-5 and (a[:, 7:] - b[:, 7:]).abs().max() > 1e-3


def test_stop_tokens_and_sampling():
    model = tiny_llama()
    free = generate(model, [[1, 2, 3]], max_new_tokens=8)[0]
    stopped = generate(model, [[1, 2, 3]], max_new_tokens=8, stop_ids=[free[3]])[0]
    assert stopped == free[: free.index(free[3])]
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    s1 = generate(model, [[1, 2, 3]] * 2, 8, temperature=1.0, top_p=0.9, generator=g1)
    s2 = generate(model, [[1, 2, 3]] * 2, 8, temperature=1.0, top_p=0.9, generator=g2)
    assert s1 == s2 and all(len(s) == 8 for s in s1)
    # top_p -> 0 keeps only the most likely token: sampling becomes greedy.
    assert generate(model, [[1, 2, 3]], 8, temperature=1.0, top_p=1e-6)[0] == free


def test_every_decoding_step_reports_its_tokens_and_the_sequences_it_ended():
    """Progress moves per generated token batch: `on_step` sees each step's new tokens and each sequence once,
    when it ends (at its stop token or at max_new_tokens)."""
    model = tiny_llama()
    free = generate(model, [[1, 2, 3]], max_new_tokens=8)[0]
    steps = []
    out = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=8, stop_ids=[free[2]],
                   on_step=lambda tokens, ended: steps.append((tokens, ended)))  # fmt: skip
    assert sum(t for t, _ in steps) == sum(map(len, out))
    assert sum(e for _, e in steps) == 2
    assert steps[2][1] >= 1  # the first prompt ended at its third token, not at the end of the batch


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_attention_gets_one_dtype_under_bf16_autocast(monkeypatch, arch):
    """q, k and v reach attention in one dtype under autocast (RoPE runs in the fp32 residual stream's dtype)."""
    import jepa.models.gpt2 as gpt2_module
    import jepa.models.llama as llama_module

    module = llama_module if arch == "llama" else gpt2_module
    seen = []
    real_attend = module.attend

    def spy(q, k, v, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype))
        return real_attend(q, k, v, **kwargs)

    monkeypatch.setattr(module, "attend", spy)
    model = tiny_llama(seed=0) if arch == "llama" else tiny_gpt2(seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.tensor([[1, 2, 3, 4]]))
    assert seen and all(dtypes == (torch.bfloat16,) * 3 for dtypes in seen), seen


def test_compiled_flex_attention_does_not_compile_a_graph_per_shape():
    """A dozen (batch, length) shapes, as packed jepa rows give in an epoch, compile a few graphs, not twelve
    (which would pass torch's recompile limit of 8 and fall back to the unfused kernel). aot_eager on CPU."""
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch.nn.attention.flex_attention import create_block_mask

    from jepa.models.attention import compiled_flex_attention

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    flex = compiled_flex_attention(backend=counter)
    for i, T in enumerate(range(16, 208, 16)):
        B = 2 + i % 2
        q, k, v = (torch.randn(B, 2, T, 16) for _ in range(3))
        block_mask = create_block_mask(lambda b, h, q_idx, kv_idx: kv_idx <= q_idx, B, None, T, T, device="cpu")
        flex(q, k, v, block_mask=block_mask)
    assert 1 <= counter.frame_count <= 3, counter.frame_count


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_rows_stop_at_their_own_stop_token_and_the_others_continue_unchanged(arch):
    """Batched greedy outputs with stop tokens (found in the step's one host read) == each prompt's own uncached
    greedy continuation cut at its first stop token, rows ending at different steps."""
    model = MODELS[arch]()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [3, 4], [20, 21, 22, 23], [7], [30, 31, 32], [9, 8, 7, 6], [40, 41]]
    free = [greedy_uncached(model, p, 12) for p in prompts]
    stops = {free[0][2], free[1][4]}  # rows end at different steps (or run to the end)
    expected = [row[: next((k for k, t in enumerate(row) if t in stops), len(row))] for row in free]
    assert len({len(row) for row in expected}) > 1
    assert generate(model, prompts, 12, stop_ids=sorted(stops)) == expected

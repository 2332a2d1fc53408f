import math

import pytest
import torch

from jepa.losses import IGNORE_INDEX, JEPA_LOSSES, jepa_loss_fn, lm_loss_at, lm_loss_reference, lm_loss_sum


@pytest.mark.parametrize("softcap", [None, 1.5])  # Gemma-2's final-logit cap, low enough to bend the logits
@pytest.mark.parametrize("chunk", [3, 1024])
def test_fused_lm_loss_matches_full_logits(chunk, softcap):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    h = torch.randn(2, 7, 16, requires_grad=True)
    labels = torch.randint(0, 50, (2, 7))
    labels[0, :3] = IGNORE_INDEX
    total, n = lm_loss_sum(h, labels, head, chunk=chunk, softcap=softcap)
    assert n == 11
    (g_h, g_w) = torch.autograd.grad(total * 0.5, (h, head.weight))
    ref = lm_loss_reference(h, labels, head, softcap=softcap)  # autograd through tanh: the independent gradient
    if softcap is not None:
        assert (ref - lm_loss_reference(h, labels, head)).abs() > 0.1  # the cap changes the loss
    r_h, r_w = torch.autograd.grad(ref * 0.5, (h, head.weight))
    assert torch.allclose(total, ref, atol=1e-5)
    assert torch.allclose(g_h, r_h, atol=1e-6) and torch.allclose(g_w, r_w, atol=1e-6)
    assert g_h[0, :3].abs().max() == 0  # no gradient where there is no label


def test_frozen_head_gets_no_gradient():
    head = torch.nn.Linear(8, 20, bias=False).requires_grad_(False)
    h = torch.randn(1, 4, 8, requires_grad=True)
    total, _ = lm_loss_sum(h, torch.randint(0, 20, (1, 4)), head)
    total.backward()
    assert head.weight.grad is None and h.grad is not None


def test_jepa_losses_by_name():
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    assert torch.allclose(jepa_loss_fn("cosine")(a, a), torch.zeros(5), atol=1e-6)
    assert torch.allclose(jepa_loss_fn("l2")(a, b), (a - b).norm(dim=-1))
    assert torch.allclose(jepa_loss_fn("mse")(a, b).mean(), torch.nn.functional.mse_loss(a, b))
    # InfoNCE: aligned, well-separated pairs give ~0 loss; shuffled targets a large one.
    eye = torch.eye(5, 8) * 10
    assert jepa_loss_fn("infonce")(eye, eye).max() < 1e-3
    assert jepa_loss_fn("infonce")(eye, eye.roll(1, 0)).min() > 5
    assert set(JEPA_LOSSES) == {"cosine", "l2", "mse", "infonce"}
    with pytest.raises(ValueError, match="unknown JEPA loss 'cos'"):
        jepa_loss_fn("cos")


def test_fp16_gradients_formed_in_the_forward_do_not_underflow():
    """logits [0, -18, -18], target 0: the non-target probabilities e^-18 = 1.5e-8 lie below fp16's smallest
    subnormal. Under a GradScaler (here 2**16) the gradient must still come out, as fp32 gives it."""
    from jepa.losses import LinearCrossEntropySum

    w = torch.tensor([[0.0, 0.0], [-1.0, 0.0], [0.0, -1.0]])
    targets = torch.tensor([0])
    grads = {}
    for dtype in (torch.float32, torch.float16):
        h = torch.tensor([[18.0, 18.0]], dtype=dtype, requires_grad=True)
        (LinearCrossEntropySum.apply(h, w.to(dtype), targets, 16, None) * 2.0**16).backward()
        grads[dtype] = h.grad.float() / 2.0**16  # the scaler's unscale, in fp32
    expected = torch.tensor([[-math.exp(-18), -math.exp(-18)]])  # (softmax - onehot) @ w, to first order
    torch.testing.assert_close(grads[torch.float32], expected, rtol=1e-3, atol=0)
    torch.testing.assert_close(grads[torch.float16], grads[torch.float32], rtol=2e-2, atol=0)


def test_logit_chunks_fill_gpu_tiles_and_bound_memory():
    from jepa.losses import logit_chunk_rows

    for vocab in (50257, 49152, 128256, 151936, 262144):
        cpu, cuda = logit_chunk_rows(vocab, "cpu"), logit_chunk_rows(vocab, "cuda")
        assert cpu * vocab <= 2**24 < (cpu + 1) * vocab  # 64 MiB of fp32 logits on CPU
        assert cuda % 128 == 0 and cuda * vocab <= 2**26 and cuda >= cpu  # whole tiles, 256 MiB on CUDA


def test_the_fused_lm_loss_casts_a_frozen_head_once_under_autocast():
    """Autocast's cast cache skips weights that do not require grad (a frozen tied embedding under LoRA), so each
    chunk's two matmuls would cast the whole head again; the fused loss casts it once per call, with the same
    result as autocast's own casts."""
    from torch.utils._python_dispatch import TorchDispatchMode

    torch.manual_seed(0)
    vocab, width, rows = 64, 16, 12
    head = torch.nn.Linear(width, vocab, bias=False)
    head.weight.requires_grad_(False)  # frozen, as under LoRA
    h = torch.randn(1, rows, width, requires_grad=True)
    index, targets = torch.arange(rows), torch.randint(0, vocab, (rows,))

    class CountHeadCasts(TorchDispatchMode):
        casts = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.startswith("_to_copy") and tuple(args[0].shape) == (vocab, width):
                CountHeadCasts.casts += 1
            return func(*args, **(kwargs or {}))

    with torch.autocast("cpu", dtype=torch.bfloat16), CountHeadCasts():
        loss = lm_loss_at(h, index, targets, head, chunk=3)  # 4 chunks
    loss.backward()
    assert CountHeadCasts.casts == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(h[0].to(torch.bfloat16)).float()
    reference = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    torch.testing.assert_close(loss, reference, rtol=1e-2, atol=1e-2)
    assert h.grad is not None and torch.isfinite(h.grad).all()

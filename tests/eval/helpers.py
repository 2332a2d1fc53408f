"""Shared helpers for the evaluation tests: a tiny ChatML tokenizer and a matching tiny Llama."""

from pathlib import Path

from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from jepa.tokenizer import Tokenizer
from tests.models.tiny import tiny_llama

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_chatml_tokenizer(tmp_dir: Path) -> Tokenizer:
    """A byte-level BPE (~300 tokens) trained on a few math sentences, with ChatML special tokens."""
    backend = BackendTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=CHATML_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [
        "Solve the problem. Tom has 3 apples and buys 4 more. How many apples? #### 7",
        "system user assistant \\boxed{12} the answer is 1,080 dollars.",
    ] * 5
    backend.train_from_iterator(corpus, trainer=trainer)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    backend.save(str(tmp_dir / "tokenizer.json"))
    return Tokenizer.from_dir(tmp_dir)


def tiny_model_for(tokenizer: Tokenizer, seed: int = 0):
    return tiny_llama(seed=seed, vocab_size=tokenizer.vocab_size, max_position_embeddings=512)

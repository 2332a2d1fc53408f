"""Fixtures of the evaluation tests."""

import shutil

import pytest

from jepa.models import save_pretrained
from tests.eval.helpers import tiny_chatml_tokenizer, tiny_model_for


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory):
    """A tiny Llama saved in HF format next to its tokenizer.json."""
    tok_dir = tmp_path_factory.mktemp("tok")
    tokenizer = tiny_chatml_tokenizer(tok_dir)
    model_dir = save_pretrained(tiny_model_for(tokenizer), tmp_path_factory.mktemp("llama"))
    shutil.copy(tok_dir / "tokenizer.json", model_dir / "tokenizer.json")
    return model_dir

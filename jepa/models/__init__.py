"""Minimal Llama (and its variants), Gemma-2/3 and GPT-2 that load Hugging Face checkpoints and accept 4-D masks
and explicit positions."""

from jepa.models.attention import KVCache
from jepa.models.base import CausalLM
from jepa.models.checkpoint import build_model, load_pretrained, save_pretrained
from jepa.models.gemma import Gemma, GemmaConfig
from jepa.models.generate import generate
from jepa.models.gpt2 import GPT2, GPT2Config
from jepa.models.llama import Llama, LlamaConfig

__all__ = [
    "GPT2",
    "CausalLM",
    "Gemma",
    "GemmaConfig",
    "GPT2Config",
    "KVCache",
    "Llama",
    "LlamaConfig",
    "build_model",
    "generate",
    "load_pretrained",
    "save_pretrained",
]

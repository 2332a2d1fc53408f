"""jepa: JEPA-style fine-tuning of language models in pure PyTorch."""

__version__ = "0.1.0"

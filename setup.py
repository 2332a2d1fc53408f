from setuptools import find_packages, setup

setup(
    name="jepa",
    version="0.1.0",
    description="Small, fast, pure-PyTorch JEPA fine-tuning of language models (LLM-JEPA, Step-JEPA, GPT2-JEPA).",
    packages=find_packages(include=["jepa", "jepa.*"]),
    python_requires=">=3.10",
    # torch is pinned by the Makefile (a bare `torch` requirement pulls a multi-GB CUDA build on a CPU box).
    install_requires=["torch>=2.5", "tokenizers>=0.15", "safetensors>=0.4", "numpy", "tqdm", "pyyaml"],
    extras_require={
        "test": ["pytest", "transformers>=4.45", "ruff", "mypy>=2.4,<3", "matplotlib"],
        "assets": ["gguf>=0.10"],
        "plot": ["matplotlib"],
    },
)

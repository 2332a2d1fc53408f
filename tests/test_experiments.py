"""Every shipped sweep spec reads, and every run it would start, under every protocol, has a valid config (no
training here)."""

from pathlib import Path

import pytest

from jepa.sweep import SweepSpec
from jepa.train.config import load_config

SPECS = sorted((Path(__file__).resolve().parent.parent / "experiments" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_sweep_specs_give_valid_configs(spec_path):
    """The spec as written and under each of its protocols (the GPU ones included)."""
    for protocol in [None, *SweepSpec.read(spec_path).protocols]:
        spec = SweepSpec.read(spec_path, protocol)
        for _, seed, args in spec.runs():
            cfg = load_config(args[1], args[2:])  # ["--config", CONFIG, overrides...]
            assert cfg.run.seed == seed and cfg.run.dir == spec.runs_dir

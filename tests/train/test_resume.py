import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from jepa.train.config import config_from_dict
from jepa.train.loop import train
from tests.train.helpers import TINY_GPT2, reversal_config

pytestmark = pytest.mark.slow  # resumes in a new process

RUN = (
    "import json, sys; from jepa.train.config import config_from_dict; from jepa.train.loop import train; "
    "train(config_from_dict(json.loads(sys.argv[1])), progress=False)"
)


def _tensors(step_dir):
    files = sorted(step_dir.glob("**/*.safetensors"))
    assert files
    return {f"{f.relative_to(step_dir)}:{k}": v for f in files for k, v in load_file(str(f)).items()}


@pytest.mark.parametrize("variant", ["full", "lora", "packed"])
def test_ten_steps_equal_five_plus_resume_in_a_new_process(tmp_path, repo_root, variant):
    # 25 rows / global batch 8 = 3 steps per epoch: step 5 is mid-epoch. Dropout and jepa_ratio < 1 make the
    # RNG states and the per-micro-batch JEPA decision part of what must be restored.
    arch = dict(TINY_GPT2, resid_pdrop=0.1, attn_pdrop=0.1)
    sections = dict(model={"arch": arch}, jepa={"lambda": 1.0, "ratio": 0.5})
    if variant == "lora":
        sections["lora"] = {"enabled": True, "rank": 2, "alpha": 4, "dropout": 0.2}
    if variant == "packed":
        sections["data"] = {"pack_length": 24}
    # One thread in both processes: the same reduction order, so the comparison can be bitwise whatever thread
    # count an earlier test left in this process.
    straight = reversal_config(tmp_path, run={"name": "straight", "threads": 1}, **sections)
    train(config_from_dict(straight), progress=False)

    split = reversal_config(tmp_path, run={"name": "split", "threads": 1}, **sections)
    split["schedule"]["stop_at_step"] = 5
    train(config_from_dict(split), progress=False)
    run_dir = tmp_path / "runs" / "split"
    assert (run_dir / "step_5").is_dir() and not (run_dir / "step_10").exists()
    del split["schedule"]["stop_at_step"]
    subprocess.run([sys.executable, "-c", RUN, json.dumps(split)], cwd=repo_root, check=True, timeout=120)

    a, b = _tensors(tmp_path / "runs" / "straight" / "step_10"), _tensors(run_dir / "step_10")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = [
        [json.loads(ln) for ln in (tmp_path / "runs" / n / "metrics.jsonl").read_text().splitlines()]
        for n in ("straight", "split")
    ]
    assert [m["loss"] for m in lines[0]] == [m["loss"] for m in lines[1]]
    assert [m["step"] for m in lines[1]] == list(range(1, 11))


def test_stp_resume_draws_the_same_spans(tmp_path, repo_root, smollm2_dir):
    """STP's spans are keyed by (seed, step, example): a run resumed in a new process draws what the uninterrupted
    one drew, so it ends with the same weights and logs the same losses."""
    from tests.train.helpers import stp_chat_config

    straight = stp_chat_config(tmp_path, smollm2_dir, run={"name": "straight"})
    train(config_from_dict(straight), progress=False)
    split = stp_chat_config(tmp_path, smollm2_dir, run={"name": "split"}, schedule={"stop_at_step": 2})
    train(config_from_dict(split), progress=False)
    del split["schedule"]["stop_at_step"]
    subprocess.run([sys.executable, "-c", RUN, json.dumps(split)], cwd=repo_root, check=True, timeout=120)
    a, b = _tensors(tmp_path / "runs" / "straight" / "step_4"), _tensors(tmp_path / "runs" / "split" / "step_4")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = [
        [json.loads(ln) for ln in (tmp_path / "runs" / n / "metrics.jsonl").read_text().splitlines()]
        for n in ("straight", "split")
    ]
    assert [m["jepa"] for m in lines[0]] == [m["jepa"] for m in lines[1]]
    assert all(m["jepa_rows"] == 4 and m["jepa"] > 0 for m in lines[0])  # every example has a span, every step

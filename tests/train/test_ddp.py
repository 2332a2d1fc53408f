import json

import pytest
from safetensors.torch import load_file

from jepa.train.config import config_from_dict
from jepa.train.loop import train
from tests.train.helpers import assert_same_weights, reversal_config, spawn_training, stp_chat_config

pytestmark = pytest.mark.slow  # spawns 2 gloo processes


INFONCE = {"loss": "infonce", "temperature": 0.5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, smollm2_dir):
    """The same tiny runs in 1 process (in this one) and in 2 gloo processes (spawned once)."""
    root = tmp_path_factory.mktemp("ddp")
    # Global batch 8 either way: 1 process x 2 micro-batches x 4 rows, or 2 processes x 1 micro-batch x 4 rows.
    train(
        config_from_dict(reversal_config(root, run={"name": "single"}, schedule={"max_steps": 4, "grad_accum": 2})),
        progress=False,
    )
    train(
        config_from_dict(
            reversal_config(
                root,
                run={"name": "single_infonce"},
                jepa=INFONCE,
                schedule={"max_steps": 1, "batch_size": 8, "grad_accum": 1},
            )
        ),
        progress=False,
    )
    # STP on chat records: global batch 4 = 1 process x 2 micro-batches x 2 rows, or 2 processes x 1 x 2.
    train(config_from_dict(stp_chat_config(root, smollm2_dir, run={"name": "stp_single"})), progress=False)
    two = [
        stp_chat_config(root, smollm2_dir, run={"name": "stp_double"}, schedule={"grad_accum": 1}),
        reversal_config(
            root,
            run={"name": "double"},
            schedule={"max_steps": 4, "grad_accum": 1},
            data={"cache_dir": str(root / "rowcache")},  # empty: rank 0 lays out, rank 1 waits and reads
        ),
        reversal_config(
            root,
            run={"name": "gathered"},
            jepa=dict(INFONCE, gather_negatives=True),
            schedule={"max_steps": 1, "batch_size": 4, "grad_accum": 1},
        ),
        reversal_config(
            root, run={"name": "local"}, jepa=INFONCE, schedule={"max_steps": 1, "batch_size": 4, "grad_accum": 1}
        ),
    ]
    spawn_training(two, nprocs=2)
    return root / "runs"


def _losses(run_dir) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_share_one_row_cache_entry(runs):
    entries = list((runs.parent / "rowcache").iterdir())
    assert len(entries) == 1 and (entries[0] / "manifest.json").is_file()  # one entry, no half-written copy


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(runs):
    one, two = runs / "single", runs / "double"
    for a, b in zip(_losses(one), _losses(two), strict=True):
        assert abs(a - b) < 1e-6, (a, b)
    for name in ("model/model.safetensors", "predictors.safetensors"):
        assert_same_weights(load_file(str(one / "step_4" / name)), load_file(str(two / "step_4" / name)))


def test_stp_in_two_processes_draws_the_spans_of_one(runs):
    one, two = runs / "stp_single", runs / "stp_double"
    for a, b in zip(_losses(one), _losses(two), strict=True):
        assert abs(a - b) < 1e-5, (a, b)
    assert_same_weights(load_file(str(one / "step_4" / "model" / "model.safetensors")),
                        load_file(str(two / "step_4" / "model" / "model.safetensors")), atol=1e-5)  # fmt: skip


def test_infonce_gathers_negatives_across_ranks(runs):
    # With negatives gathered, each rank's InfoNCE logits span the whole global batch, so the first step's loss
    # equals one process's in-batch loss over the same 8 rows (gradients differ: other ranks' targets are
    # detached, see gather_other_targets). Without gathering each row has fewer negatives: another loss.
    one, gathered, local = (_losses(runs / n)[0] for n in ("single_infonce", "gathered", "local"))
    assert abs(one - gathered) < 1e-6
    assert abs(one - local) > 1e-4


@pytest.mark.slow
def test_the_other_ranks_wait_out_a_long_checkpoint_write(tmp_path):
    """Rank 0 writes a DDP checkpoint alone (a large model's files take minutes); the other ranks wait on the
    long-timeout group, not in a collective that would time out: here a 3 s write under a 2 s collective timeout."""
    raw = reversal_config(tmp_path, run={"name": "slow_write"}, schedule={"max_steps": 2, "grad_accum": 1},
                          checkpoint={"every": 1, "keep_last": 5, "export": "none"})  # fmt: skip
    spawn_training([raw], nprocs=2, timeout_s=2, slow_checkpoint_s=3)
    assert (tmp_path / "runs" / "slow_write" / "step_1").is_dir()
    assert (tmp_path / "runs" / "slow_write" / "step_2").is_dir()

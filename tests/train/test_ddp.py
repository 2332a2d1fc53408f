import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from jepa.train.config import config_from_dict
from jepa.train.loop import train
from tests.train.helpers import reversal_config

pytestmark = pytest.mark.slow  # spawns 2 gloo processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, configs: list[dict]) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    try:
        for raw in configs:  # several runs per spawn: starting processes is the slow part
            train(config_from_dict(raw), progress=False)
    finally:
        dist.barrier()  # leave together: gloo aborts a process whose peer tears down first
        dist.destroy_process_group()


INFONCE = {"loss": "infonce", "temperature": 0.5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
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
    two = [
        reversal_config(root, run={"name": "double"}, schedule={"max_steps": 4, "grad_accum": 1}),
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
    mp.spawn(_worker, args=(2, _free_port(), two), nprocs=2, join=True)
    return root / "runs"


def _losses(run_dir) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(runs):
    one, two = runs / "single", runs / "double"
    for a, b in zip(_losses(one), _losses(two), strict=True):
        assert abs(a - b) < 1e-6, (a, b)
    for name in ("model/model.safetensors", "predictors.safetensors"):
        ta, tb = load_file(str(one / "step_4" / name)), load_file(str(two / "step_4" / name))
        for key in ta:
            a, b = ta[key], tb[key]
            if key.endswith("attn.c_attn.bias"):
                # The key bias gets an exactly-zero gradient in exact arithmetic (softmax is shift invariant);
                # Adam divides the rounding noise by its own magnitude, so only that slice is held to 1e-4.
                d = a.numel() // 3
                torch.testing.assert_close(a[d : 2 * d], b[d : 2 * d], rtol=0, atol=1e-4, msg=key)
                a, b = torch.cat([a[:d], a[2 * d :]]), torch.cat([b[:d], b[2 * d :]])
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=key)


def test_infonce_gathers_negatives_across_ranks(runs):
    # With negatives gathered, each rank's InfoNCE logits span the whole global batch, so the first step's loss
    # equals one process's in-batch loss over the same 8 rows (gradients differ: other ranks' targets are
    # detached, see gather_other_targets). Without gathering each row has fewer negatives: another loss.
    one, gathered, local = (_losses(runs / n)[0] for n in ("single_infonce", "gathered", "local"))
    assert abs(one - gathered) < 1e-6
    assert abs(one - local) > 1e-4

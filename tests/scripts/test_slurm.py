"""scripts/train.sbatch end to end on this machine: SLURM's `srun` and `scontrol` are stand-ins (srun runs its
command, scontrol names this host and records the requeue), torchrun and the FSDP training are real. SIGTERM to
the batch script must end in a checkpoint of the step the workers were at and a requeue; the requeued script
resumes from that checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.train.helpers import _free_port, reversal_config

pytestmark = pytest.mark.slow  # torchrun with 2 processes, twice

SRUN = """#!/bin/bash
while [[ "$1" == --* ]]; do shift; done  # srun's own options
exec "$@"
"""
SCONTROL = """#!/bin/bash
case "$1" in
  show) echo localhost ;;
  requeue) echo "$2" >> "$REQUEUED" ;;
esac
"""


def _run(tmp_path, repo_root, config, *overrides):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    if not (bin_dir / "torchrun").exists():  # this interpreter's torchrun, whatever PATH says
        (bin_dir / "torchrun").symlink_to(os.path.join(os.path.dirname(sys.executable), "torchrun"))
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="4242", SLURM_NNODES="1",
               SLURM_JOB_NODELIST="localhost", NPROC_PER_NODE="2", MASTER_PORT=str(_free_port()), CONFIG=str(config),
               REQUEUED=str(tmp_path / "requeued"), OMP_NUM_THREADS="1", TORCHRUN_SHUTDOWN_TIMEOUT="60")  # fmt: skip
    return subprocess.Popen(["bash", "scripts/train.sbatch", *overrides], cwd=repo_root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def test_sigterm_checkpoints_requeues_and_the_requeued_job_resumes(tmp_path, repo_root):
    raw = reversal_config(tmp_path, schedule={"max_steps": 100000}, checkpoint={"every": 0, "export": "none"})
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "runs" / "tiny"
    job = _run(tmp_path, repo_root, config, "--quiet")
    deadline = time.time() + 120
    metrics = run_dir / "metrics.jsonl"
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.1)
    job.send_signal(signal.SIGTERM)
    out, _ = job.communicate(timeout=120)
    assert job.returncode == 0, out
    assert (tmp_path / "requeued").read_text().split() == ["4242"], out
    steps = sorted(int(p.name.split("_")[1]) for p in run_dir.glob("step_*"))
    assert len(steps) == 1 and steps[0] >= 3, out
    saved = json.loads((run_dir / f"step_{steps[0]}" / "trainer_state.json").read_text())
    assert saved["world_size"] == 2 and (run_dir / f"step_{steps[0]}" / "sharded").is_dir()

    # The requeued job: the same script (told to stop 2 steps later, to end the test) resumes from it.
    job = _run(tmp_path, repo_root, config, f"schedule.stop_at_step={steps[0] + 2}")
    out, _ = job.communicate(timeout=120)
    assert job.returncode == 0, out
    assert f"resumed from {run_dir / f'step_{steps[0]}'} (step {steps[0]})" in out
    assert (run_dir / f"step_{steps[0] + 2}" / "sharded").is_dir()

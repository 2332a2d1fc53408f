"""Train a model with the JEPA objective from a YAML config.

    jepa train --config gpt2_reversal_small.yaml [section.key=value ...]      (or python train.py ... in a checkout)
    torchrun --nproc_per_node=N train.py --config NAME.yaml      # DistributedDataParallel

A bare config name resolves in ./configs/, then in the configs shipped with the package. Bad configs or data:
`error: ...` and exit code 2, before any work; a run that cannot go on (NaN/inf loss, a checkpoint that cannot be
written): `error: ...` and exit code 1; Ctrl-C or SIGTERM: the step finishes, a checkpoint is written, one line,
exit code 130 / 143 (the same command resumes).
"""

from __future__ import annotations

import argparse
import sys

import torch.distributed as dist

from jepa.train.config import dump_config, load_config
from jepa.train.loop import Interrupted, TrainingStopped, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML file, or a name in configs/")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="typed by the config schema")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary lines")
    args = parser.parse_intermixed_args(argv)  # overrides may come before and after the flags
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(dump_config(cfg), end="")
            return 0
        train(cfg, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:  # SIGINT / SIGTERM: checkpointed; 130 / 143 as a shell reports a signal
        print(exc, file=sys.stderr)
        return 128 + exc.signum
    except TrainingStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():  # torchrun: leave the process group cleanly, together
            try:
                dist.barrier()  # gloo aborts a process whose peer tears the group down first
            finally:
                dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train a model with the JEPA objective from a YAML config (the same as `jepa train`; see jepa/cli/train.py).

python train.py --config gpt2_reversal_small.yaml [section.key=value ...]
torchrun --nproc_per_node=N train.py --config NAME.yaml      # DistributedDataParallel
"""

import sys

from jepa.cli.train import main

if __name__ == "__main__":
    sys.exit(main())

"""Prepare data and model assets (the same as `jepa prepare`; see jepa/cli/prepare.py):
``python prepare.py {all,gsm8k,steps,chat,split,reversal,smollm2} --help``."""

import sys

from jepa.cli.prepare import LLM_JEPA_FILES, build_parser, main

__all__ = ["LLM_JEPA_FILES", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())

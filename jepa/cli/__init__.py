"""The `jepa` command: one entry point for every tool of the library.

    jepa train    --config NAME.yaml [section.key=value ...]   train (jepa/cli/train.py; python train.py)
    jepa prepare  {all,gsm8k,steps,chat,split,reversal,smollm2}   data and model assets (python prepare.py)
    jepa eval     {gsm8k,generate,reversal,...}                   evaluate a model (python -m jepa.eval)
    jepa sweep    SPEC.yaml                                       a seeds x cells grid (python -m jepa.sweep)
    jepa plot     RUN_DIR ...                                     curves and cells (python -m jepa.plot)
    jepa show     --config NAME.yaml [--index N]                  one packed row under a config's layout
    jepa chat     --model DIR [--prompt TEXT]                     talk to a model (REPL; streams its answers)

Each subcommand is the module's own `main(argv)`, so `jepa X --help` is that tool's help.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("jepa.cli.train", "train a model from a YAML config"),
    "prepare": ("jepa.cli.prepare", "prepare data and model assets"),
    "eval": ("jepa.eval.__main__", "evaluate a model (GSM8K, NL-RX, NQ-Open, reversal, held-out loss)"),
    "sweep": ("jepa.sweep", "run a seeds x cells grid and tabulate it"),
    "plot": ("jepa.plot", "plot a run's curves or a sweep's cells"),
    "show": ("jepa.cli.show", "show one packed row (segments, mask, labels) under a config's layout"),
    "chat": ("jepa.cli.chat", "talk to a model through its chat template (a REPL, or --prompt once)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: jepa COMMAND [ARGS ...]   (jepa COMMAND --help for its options)\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    program = sys.argv[0]
    sys.argv[0] = f"jepa {name}"  # what argparse names the program in usage lines
    try:
        return int(module.main(rest) or 0)
    finally:
        sys.argv[0] = program


if __name__ == "__main__":
    sys.exit(main())

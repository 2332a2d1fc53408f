"""`jepa show --config NAME.yaml [--index N]`: record N of a config's training data as the packed row the trainer
sees (segments, positions, trained labels, the JEPA views and the attention mask), for any layout mode. Rows
longer than the terminal allows are shown as their first and last tokens."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace

from jepa.data.datasets import dataset_class
from jepa.data.show import show_row
from jepa.tokenizer import Tokenizer
from jepa.train.config import load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML file, or a name in configs/")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="typed by the config schema")
    parser.add_argument("--index", type=int, default=0, help="which record, from 0 (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, help="tokens shown (default: what fits the terminal)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    try:
        if args.index < 0:
            raise ValueError(f"--index must be >= 0, got {args.index}")
        cfg = load_config(args.config, args.overrides)
        data = replace(cfg.data, limit=args.index + 1)  # lay out only as far as the record shown
        dataset = dataset_class(cfg.layout.mode).load(data, cfg.layout, cfg.tokenizer_dir)
        if args.index >= len(dataset.rows):
            raise ValueError(f"{cfg.data.train}: --index {args.index}, but it has {len(dataset.rows)} records")
        token_text: Callable[[int], str] | None = None
        if cfg.tokenizer_dir is not None and dataset_class(cfg.layout.mode).reads == "chat":
            tokenizer = Tokenizer.from_dir(cfg.tokenizer_dir, chat_template=cfg.data.chat_template)

            def token_text(token: int) -> str:
                return tokenizer.decode([token])

        max_tokens = args.max_tokens or max(8, shutil.get_terminal_size().columns - 8)
        print(show_row(dataset.rows[args.index], token_text, max_tokens=max_tokens))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

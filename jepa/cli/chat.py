"""`jepa chat --model DIR`: talk to a model you trained (a run's `final/`, an HF directory, or a `step_N/`
checkpoint, LoRA merged as evaluation does), through its chat template.

A REPL: each line you type is a user turn; the answer streams as it is generated and joins the conversation.
`/reset` starts a new conversation, `/exit` (or end of input) leaves. `--prompt TEXT` answers once and exits
(scriptable). Greedy by default; `--temperature` (> 0) samples, with `--top-p`. Bad input: one `error: ...` line,
exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from jepa.eval.loading import load_for_eval
from jepa.models import generate
from jepa.tokenizer import Tokenizer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="final/, an HF directory, or a step_N/ checkpoint")
    parser.add_argument("--system", help="a system message opening every conversation")
    parser.add_argument("--prompt", help="answer this one message and exit")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="per answer (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    parser.add_argument("--base", help="the base model of a LoRA adapter copied away from its run directory")
    return parser


class Chat:
    """A conversation with one model: `reply(text)` streams the answer to `out` and keeps both turns."""

    def __init__(self, model: Any, tokenizer: Tokenizer, args: argparse.Namespace, out: Any) -> None:
        self.model, self.tokenizer, self.args, self.out = model, tokenizer, args, out
        self.generator = torch.Generator(device=next(model.parameters()).device).manual_seed(args.seed)
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.args.system}] if self.args.system else []

    def reply(self, text: str) -> str:
        self.messages.append({"role": "user", "content": text})
        prompt = self.tokenizer.encode_chat(self.messages, add_generation_prompt=True).ids
        ids: list[int] = []
        shown = ""

        def stream(row: int, token: int) -> None:  # decode all so far: a character may span tokens
            nonlocal shown
            ids.append(token)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the rest
                self.out.write(text[len(shown) :])
                self.out.flush()
                shown = text

        generate(self.model, [prompt], self.args.max_new_tokens, stop_ids=self.tokenizer.stop_ids,
                 temperature=self.args.temperature, top_p=self.args.top_p, pad_id=self.tokenizer.pad_id,
                 generator=self.generator if self.args.temperature > 0 else None, on_token=stream)  # fmt: skip
        answer = self.tokenizer.decode(ids, skip_special_tokens=True)
        self.out.write(answer[len(shown) :] + "\n")
        self.out.flush()
        self.messages.append({"role": "assistant", "content": answer})
        return answer


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.max_new_tokens < 1 or args.temperature < 0 or not 0 < args.top_p <= 1:
            raise ValueError("--max-new-tokens must be >= 1, --temperature >= 0 and --top-p in (0, 1]")
        loaded = load_for_eval(args.model, base=args.base)
        tokenizer = Tokenizer.from_dir(loaded.tokenizer_dir)
        if tokenizer.template is None:
            raise ValueError(f"{loaded.tokenizer_dir}: the tokenizer has no chat template to talk through")
        chat = Chat(loaded.model.eval(), tokenizer, args, sys.stdout)
        with torch.no_grad():
            if args.prompt is not None:
                chat.reply(args.prompt)
                return 0
            interactive = sys.stdin.isatty()
            while True:
                if interactive:
                    print("> ", end="", flush=True)
                line = sys.stdin.readline()
                if not line or line.strip() == "/exit":
                    return 0
                if line.strip() == "/reset":
                    chat.reset()
                    print("(new conversation)")
                    continue
                if line.strip():
                    chat.reply(line.rstrip("\n"))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

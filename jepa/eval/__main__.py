"""Evaluation command line.

    python -m jepa.eval generate --task synth|turk|nq_open|gsm8k --model DIR --data FILE [--limit N]
                                 [--batch-size B] [--max-new-tokens T] [--out DIR]
    python -m jepa.eval gsm8k    --model DIR --data FILE [--limit N] [--batch-size B] [--protocol default|paper]
                                 [--max-new-tokens T] [--system gsm8k|seed] [--out DIR]
    python -m jepa.eval reversal --model DIR --valid FILE --vocab FILE [--batch-size B] [--out DIR]
    python -m jepa.eval views    --model DIR --mode step|jepa --data FILE [--limit N] [--predictors K] [--out DIR]
    python -m jepa.eval views    --model DIR --mode reversal --valid FILE --vocab FILE [--limit N] [--out DIR]
    python -m jepa.eval loss     --model DIR --data FILE [--limit N] [--max-length T] [--out DIR]

The summary JSON goes to stdout; with ``--out DIR`` also ``DIR/<command>_summary.json`` and the per-example
``DIR/<command>.jsonl``. generate and gsm8k show progress in examples and tokens and, with ``--out``, write each
example's result to ``DIR/<name>.partial.jsonl`` as it finishes: the same command after an interruption scores
only the rest. generate's scorers and protocols: jepa/eval/tasks.py.
Bad input (including ``--device`` and ``--out``, checked before the model loads): one ``error: ...`` line on
stderr, exit status 2; a write that fails later: one line, exit status 1. ``--base DIR``: the base model of a LoRA
adapter copied away from its run directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from jepa.data.datasets import tokenize_chats
from jepa.data.layouts import MODES, LayoutConfig, Row, build_reversal_row
from jepa.data.reversal import load_probes, relation_inverses
from jepa.data.sources import GSM8K_SYSTEM_PROMPT, SEED_SYSTEM_PROMPT
from jepa.eval.diagnostics import collect_views, view_diagnostics
from jepa.eval.gsm8k import evaluate_gsm8k, load_gsm8k_records
from jepa.eval.heldout import heldout_lm_loss
from jepa.eval.loading import DTYPES, EvalModel, load_for_eval
from jepa.eval.report import PartialResults, write_results
from jepa.eval.reversal import evaluate_reversal
from jepa.eval.tasks import TASKS, evaluate_task, load_task_records
from jepa.tokenizer import Tokenizer


def _load(args: argparse.Namespace) -> EvalModel:
    dtype = DTYPES[args.dtype] if args.dtype else None
    return load_for_eval(args.model, dtype=dtype, device=args.device, base=args.base)


def check_device(name: str | None) -> None:
    """--device names a device torch knows and this machine has; else ValueError naming --device."""
    if name is None:
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device (cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def check_out(out: Path | None) -> None:
    """--out is a directory this process can write (made if missing), checked before any model is loaded."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"--out {out}: not writable ({exc.strerror or exc})") from None


def _tokenizer(loaded: EvalModel) -> Tokenizer:
    return Tokenizer.from_dir(loaded.tokenizer_dir)


def _check_vocab(loaded: EvalModel, vocab: dict[str, int], vocab_path: str) -> None:
    model_vocab, size = loaded.model.lm_head.weight.shape[0], max(vocab.values(), default=-1) + 1
    if size != model_vocab:  # a model trained on another vocabulary scores noise, not the curse
        raise ValueError(
            f"{vocab_path}: {size} tokens but the model's vocabulary has {model_vocab}; evaluate a model trained "
            "with this vocab.json"
        )


def run_gsm8k(args: argparse.Namespace) -> None:
    system = {"gsm8k": GSM8K_SYSTEM_PROMPT, "seed": SEED_SYSTEM_PROMPT}[args.system]
    records = load_gsm8k_records(args.data, system_prompt=system)
    loaded = _load(args)
    settings = {k: str(getattr(args, k)) for k in ("model", "data", "limit", "protocol", "max_new_tokens", "system")}
    partial = PartialResults(args.out, "gsm8k", settings)  # with --out: an interrupted run picks up from here
    done = partial.load()
    if done:
        print(f"resuming: {len(done)} problems already scored in {partial.path}", file=sys.stderr)
    examples, summary = evaluate_gsm8k(
        loaded.model, _tokenizer(loaded), records, limit=args.limit, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, protocol=args.protocol, progress=True, done=done, on_example=partial.add,
    )  # fmt: skip
    summary = {"model": str(args.model), "data": str(args.data), **summary}
    print(write_results(args.out, "gsm8k", examples, summary))
    partial.finish()


def run_generate(args: argparse.Namespace) -> None:
    records = load_task_records(args.data, TASKS[args.task], limit=args.limit)
    loaded = _load(args)
    settings = {k: str(getattr(args, k)) for k in ("model", "data", "limit", "task", "max_new_tokens")}
    partial = PartialResults(args.out, args.task, settings)
    done = partial.load()
    if done:
        print(f"resuming: {len(done)} examples already scored in {partial.path}", file=sys.stderr)
    examples, summary = evaluate_task(loaded.model, _tokenizer(loaded), args.task, records, batch_size=args.batch_size,
                                      max_new_tokens=args.max_new_tokens, progress=True, done=done,
                                      on_example=partial.add)  # fmt: skip
    print(write_results(args.out, args.task, examples, {"model": str(args.model), "data": str(args.data), **summary}))
    partial.finish()


def run_reversal(args: argparse.Namespace) -> None:
    probes, vocab = load_probes(args.valid, args.vocab)
    loaded = _load(args)
    _check_vocab(loaded, vocab, args.vocab)
    examples, summary = evaluate_reversal(loaded.model, probes, batch_size=args.batch_size)
    print(
        write_results(args.out, "reversal", examples, {"model": str(args.model), "valid": str(args.valid), **summary})
    )


def reversal_view_rows(args: argparse.Namespace) -> tuple[EvalModel, LayoutConfig, Sequence[Row], int]:
    """The JEPA rows of the `train` probes in --valid (forward fact + predictors vs the reverse fact)."""
    if not (args.valid and args.vocab):
        raise ValueError("views --mode reversal needs --valid FILE and --vocab FILE")
    probes, vocab = load_probes(args.valid, args.vocab)
    if "train" not in probes:
        raise ValueError(f"{args.valid}: no 'train' probes (JEPA rows are built from train facts)")
    loaded = _load(args)
    _check_vocab(loaded, vocab, args.vocab)
    cfg = LayoutConfig(
        mode="reversal", predictors=_predictors(args, loaded), isolated_positions=args.isolated_positions
    )
    inverses = relation_inverses(vocab)
    rows = [build_reversal_row(item, inverses, cfg, with_jepa=True) for item in probes["train"][: args.limit]]
    return loaded, cfg, rows, vocab["<pad>"] if "<pad>" in vocab else 0


def chat_view_rows(args: argparse.Namespace) -> tuple[EvalModel, LayoutConfig, Sequence[Row], int]:
    """The rows of the first --limit chat records ({"messages": [...]}) in --data, laid out for --mode (step or
    jepa) exactly as training lays them out."""
    if not args.data:
        raise ValueError(f"views --mode {args.mode} needs --data FILE (chat records)")
    loaded = _load(args)
    cfg = LayoutConfig(mode=args.mode, predictors=_predictors(args, loaded), isolated_positions=args.isolated_positions)
    rows, pad_id, *_ = tokenize_chats(args.data, _tokenizer(loaded), cfg, limit=args.limit)
    return loaded, cfg, rows, pad_id


# A mode's source -> how its rows are read: the reversal probes or prepared chat records.
VIEW_ROWS = {"chat": chat_view_rows, "reversal": reversal_view_rows}
VIEW_MODES = sorted(name for name, mode in MODES.items() if mode.view_pairs)  # what `views --mode` takes


def run_views(args: argparse.Namespace) -> None:
    loaded, cfg, rows, pad_id = VIEW_ROWS[MODES[args.mode].source](args)
    pred, target = collect_views(loaded.model, loaded.predictors, rows, pad_id, batch_size=args.batch_size)
    cosines = torch.nn.functional.cosine_similarity(pred.double(), target.double(), dim=-1).tolist()
    examples = [{"row": i, "cosine": c} for i, c in zip([i for i, r in enumerate(rows) if r.has_jepa], cosines)]
    summary = {"model": str(args.model), "mode": args.mode, "predictors": cfg.predictors}
    print(write_results(args.out, "views", examples, {**summary, **view_diagnostics(pred, target)}))


def run_loss(args: argparse.Namespace) -> None:
    loaded = _load(args)
    cfg = LayoutConfig(mode="regular", predictors=0, max_length=args.max_length)
    tokenizer = _tokenizer(loaded)
    rows, pad_id, *_ = tokenize_chats(args.data, tokenizer, cfg, limit=args.limit)
    examples, summary = heldout_lm_loss(loaded.model, rows, pad_id, batch_size=args.batch_size,
                                        stop_ids=tokenizer.stop_ids)  # fmt: skip
    settings = {"model": str(args.model), "data": str(args.data), "max_length": args.max_length}
    print(write_results(args.out, "loss", examples, {**settings, **summary}))


def _predictors(args: argparse.Namespace, loaded: EvalModel) -> int:
    """K: the checkpoint's trained predictor count; without trained predictors only K = 0 is meaningful."""
    if loaded.predictors is not None:
        k = loaded.predictors.weight.shape[0]
        if args.predictors is not None and args.predictors != k:
            raise ValueError(f"--predictors {args.predictors} but the checkpoint has {k} predictor embeddings")
        return k
    if args.predictors:
        raise ValueError(f"--predictors {args.predictors}: {args.model} has no trained predictor embeddings")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jepa.eval", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, batch_size: int) -> None:
        p.add_argument("--model", required=True, type=Path, help="HF-format model directory (or run checkpoint)")
        p.add_argument("--out", type=Path, help="directory for the per-example jsonl and the summary json")
        p.add_argument("--batch-size", type=int, default=batch_size)
        p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
        p.add_argument("--dtype", choices=sorted(DTYPES), help="default: bfloat16 on CUDA, float32 on CPU")
        p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
        p.add_argument("--base", type=Path, help="a LoRA adapter's base model (default: model.path of its run)")

    task = commands.add_parser("generate", help="a generation task's accuracy (NL-RX, NQ-Open, GSM8K), 95 %% interval")
    common(task, 16)
    task.add_argument("--task", required=True, choices=sorted(TASKS))
    task.add_argument("--data", required=True, type=Path, help='chat jsonl ({"messages": [...]}; gsm8k: + "answer")')
    task.add_argument("--limit", type=int, help="score the first N records")
    task.add_argument("--max-new-tokens", type=int, help="default: the task's (128; gsm8k 512)")
    task.set_defaults(run=run_generate)

    gsm8k = commands.add_parser("gsm8k", help="GSM8K accuracy by greedy generation")
    common(gsm8k, 16)
    gsm8k.add_argument("--data", required=True, type=Path, help="prepared chat records or raw GSM8K jsonl")
    gsm8k.add_argument("--limit", type=int, help="score the first N records")
    gsm8k.add_argument("--protocol", choices=("default", "paper"), default="default")
    gsm8k.add_argument(
        "--system",
        choices=("gsm8k", "seed"),
        default="gsm8k",
        help="system prompt for raw GSM8K lines (prepared records carry their own): the GSM8K "
        "'#### N' prompt or the seed's \\boxed{} Step-JEPA prompt",
    )
    gsm8k.add_argument("--max-new-tokens", type=int, help="default: 512 (default protocol), 128 (paper)")
    gsm8k.set_defaults(run=run_gsm8k)

    reversal = commands.add_parser("reversal", help="reversal-curse MRR / joint accuracy / joint NLL")
    common(reversal, 256)
    reversal.add_argument("--valid", required=True, type=Path, help="seed-format valid.json")
    reversal.add_argument("--vocab", required=True, type=Path, help="seed-format vocab.json")
    reversal.set_defaults(run=run_reversal)

    views = commands.add_parser("views", help="view cosine, effective ranks, linear-map error of a JEPA mode")
    common(views, 16)
    views.add_argument("--mode", required=True, choices=VIEW_MODES)
    views.add_argument("--data", type=Path, help="prepared chat records (step, jepa)")
    views.add_argument("--valid", type=Path, help="valid.json (reversal: its train probes)")
    views.add_argument("--vocab", type=Path, help="vocab.json (reversal)")
    views.add_argument("--limit", type=int, default=1000, help="rows to use (default 1000)")
    views.add_argument("--predictors", type=int, help="K (default: the checkpoint's, else 0)")
    views.add_argument("--isolated-positions", choices=("restart", "continue"), default="restart")
    views.set_defaults(run=run_views)

    loss = commands.add_parser("loss", help="held-out LM loss: teacher-forced CE per answer token of chat records")
    common(loss, 16)
    loss.add_argument("--data", required=True, type=Path, help='chat jsonl ({"messages": [...]})')
    loss.add_argument("--limit", type=int, help="score the first N records")
    loss.add_argument("--max-length", type=int, default=LayoutConfig.max_length, help="truncate as training did")
    loss.set_defaults(run=run_loss)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("limit", "batch_size", "max_new_tokens", "threads", "max_length"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1, got {value}", file=sys.stderr)
            return 2
    if args.threads:
        # On a shared CPU, fewer threads than cores avoids OpenMP spin-waiting on busy cores.
        torch.set_num_threads(args.threads)
    try:
        check_device(args.device)
        check_out(args.out)
        args.run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write that failed midway (disk full, --out removed): one line, no traceback
        print(f"error: {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

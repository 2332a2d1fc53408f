"""Every command line's `--help`, and each subcommand's, renders (an unescaped `%` in a help string crashes
argparse only when the help is printed)."""

import argparse
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def command_lines() -> list[str]:
    """Every script of the repository that builds an argparse parser (found, not listed: a new one is covered)."""
    scripts = [p for p in ROOT.glob("*.py") if p.name != "setup.py"]
    for folder in ("jepa", "bench", "experiments"):
        scripts += ROOT.joinpath(folder).rglob("*.py")
    return sorted(str(p.relative_to(ROOT)) for p in scripts if "ArgumentParser(" in p.read_text())


class Captured(Exception):
    pass


def parser_of(script: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser `script` builds when run as `__main__`, captured where it would parse its arguments."""

    def capture(self, *args, **kwargs):
        raise Captured(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(Captured) as caught:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    return caught.value.args[0]


def with_subcommands(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from with_subcommands(sub)


def test_the_scan_finds_the_command_lines():
    found = command_lines()
    assert {"jepa/cli/train.py", "jepa/cli/prepare.py", "jepa/cli/show.py", "jepa/eval/__main__.py", "jepa/sweep.py",
            "jepa/plot.py"} <= set(found)  # fmt: skip


@pytest.mark.parametrize("script", command_lines())
def test_help_renders_for_every_command_and_subcommand(script, monkeypatch):
    parsers = list(with_subcommands(parser_of(script, monkeypatch)))
    for parser in parsers:
        text = parser.format_help()  # what --help prints; raises on a bad format string
        assert text.startswith("usage:"), parser.prog
    if script in ("jepa/cli/prepare.py", "jepa/eval/__main__.py"):
        assert len(parsers) > 3  # the subcommands were reached


def test_help_of_the_eval_command_line_exits_zero():
    """The reported crash, end to end: `python -m jepa.eval generate --help` prints the help and exits 0."""
    out = subprocess.run(
        [sys.executable, "-m", "jepa.eval", "generate", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert (
        "95 % interval"
        in subprocess.run(
            [sys.executable, "-m", "jepa.eval", "--help"], cwd=ROOT, capture_output=True, text=True
        ).stdout
    )

"""The `jepa` command (jepa/cli): one entry point, each subcommand the tool's own main; bare config names."""

import importlib.util
import os
import subprocess
import sys

import pytest
import yaml

from jepa.cli import COMMANDS, main
from jepa.train.config import resolve_config_path
from tests.train.helpers import reversal_config


def test_help_lists_every_command_and_an_unknown_one_is_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in COMMANDS)
    assert main(["trian"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown command 'trian'")
    assert main([]) == 2


def test_subcommands_are_the_tools_mains(capsys):
    assert main(["train", "--config", "gpt2_reversal_tiny.yaml", "--print-config"]) == 0
    assert "reversal" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "--help"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: jepa prepare")


def test_python_dash_m_jepa_runs_the_command(repo_root, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jepa", "train", "--config", "gpt2_reversal_tiny.yaml",
                           "--print-config"], cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr  # from outside the checkout: the package's (here the checkout's) configs
    assert "reversal" in proc.stdout


def test_a_bare_config_name_resolves_in_the_working_directory_first(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "gpt2_reversal_tiny.yaml").write_text("run:\n  name: mine\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("gpt2_reversal_tiny") == tmp_path / "configs" / "gpt2_reversal_tiny.yaml"
    assert resolve_config_path("gpt2_reversal_small.yaml").parent.name == "configs"  # the shipped ones after it
    with pytest.raises(FileNotFoundError, match="config file not found: nope.yaml .*gpt2_reversal_small.yaml"):
        resolve_config_path("nope.yaml")


def test_show_prints_a_packed_row_abbreviated_to_fit(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(reversal_config(tmp_path)))
    assert main(["show", "--config", str(config), "--index", "1", "--max-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(" idx seg pos lab view  token") and "tokens left out" in out and "|" in out
    assert "tgt" in out and "mask (rows = queries" in out
    assert main(["show", "--config", str(config), "--index", "100000"]) == 2
    assert "--index 100000, but it has" in capsys.readouterr().err


def test_show_a_chat_row_decodes_its_tokens(tmp_path, capsys, smollm2_dir):
    from tests.train.helpers import chat_config, tiny_chat_model_dir

    data = tmp_path / "chat.jsonl"
    record = {"messages": [{"role": "user", "content": "What is 2 + 2?"},
                           {"role": "assistant", "content": "First, 2 + 2 = 4.\n\nSo the answer is 4."}]}  # fmt: skip
    data.write_text(__import__("json").dumps(record) + "\n")
    config = tmp_path / "chat.yaml"
    config.write_text(yaml.safe_dump(chat_config(tmp_path, tiny_chat_model_dir(tmp_path, smollm2_dir), data)))
    assert main(["show", "--config", str(config), "--max-tokens", "400"]) == 0
    out = capsys.readouterr().out
    assert "<|im_start|>" in out and "<P1>" in out and "pred" in out and "tokens left out" not in out


@pytest.mark.slow  # builds a wheel and a virtual environment
def test_an_installed_wheel_prepares_and_trains_outside_the_checkout(tmp_path, repo_root):
    wheels, venv, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]  # else: registry
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", *isolation, "-w", str(wheels)],
                           cwd=repo_root, capture_output=True, text=True)  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("jepa-*.whl"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but the venv decides what imports
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--force-reinstall", str(wheel)],
                             capture_output=True, text=True, env=env)  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    jepa = venv / "bin" / "jepa"
    where = subprocess.run([str(python), "-c", "import jepa; print(jepa.__file__)"], cwd=work, capture_output=True,
                           text=True, env=env)  # fmt: skip
    assert str(venv) in where.stdout, where.stdout + where.stderr  # the wheel's copy, not the checkout's
    prepare = subprocess.run([str(jepa), "prepare", "reversal", "--preset", "tiny"], cwd=work, capture_output=True,
                             text=True, env=env)  # fmt: skip
    assert prepare.returncode == 0, prepare.stderr[-3000:]
    train = subprocess.run([str(jepa), "train", "--config", "gpt2_reversal_tiny.yaml", "schedule.max_steps=2",
                            "eval.every=0", "--quiet"], cwd=work, capture_output=True, text=True, env=env)  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    assert (work / "runs").is_dir() and any((work / "runs").rglob("step_2"))


def chat_command(model_dir, *args, stdin=""):
    return subprocess.run([sys.executable, "-m", "jepa", "chat", "--model", str(model_dir), "--max-new-tokens", "12",
                           *args], input=stdin, capture_output=True, text=True, timeout=300)  # fmt: skip


def reference_answer(model_dir, messages):
    from jepa.models import generate, load_pretrained
    from jepa.tokenizer import Tokenizer

    model, tokenizer = load_pretrained(model_dir).eval(), Tokenizer.from_dir(model_dir)
    prompt = tokenizer.encode_chat(messages, add_generation_prompt=True).ids
    ids = generate(model, [prompt], 12, stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id)[0]
    return tokenizer.decode(ids, skip_special_tokens=True)


def test_chat_prompt_answers_once_as_greedy_generation_does(tmp_path, smollm2_dir):
    from tests.train.helpers import tiny_chat_model_dir

    model_dir = tiny_chat_model_dir(tmp_path, smollm2_dir)
    proc = chat_command(model_dir, "--prompt", "Hello there", "--system", "Be brief.")
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = reference_answer(model_dir, [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Hello there"}])  # fmt: skip
    assert proc.stdout == expected + "\n" and expected


def test_chat_repl_keeps_the_conversation_resets_and_exits(tmp_path, smollm2_dir):
    from tests.train.helpers import tiny_chat_model_dir

    model_dir = tiny_chat_model_dir(tmp_path, smollm2_dir)
    proc = chat_command(model_dir, stdin="Hello\nWhat is 2 + 2?\n/reset\nWhat is 2 + 2?\n/exit\nnever read\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = reference_answer(model_dir, [{"role": "user", "content": "Hello"}])
    kept = reference_answer(model_dir, [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": first},
                                        {"role": "user", "content": "What is 2 + 2?"}])  # fmt: skip
    fresh = reference_answer(model_dir, [{"role": "user", "content": "What is 2 + 2?"}])
    assert proc.stdout == f"{first}\n{kept}\n(new conversation)\n{fresh}\n"
    assert kept != fresh  # the conversation was kept, then reset
    bad = chat_command(tmp_path / "nowhere", "--prompt", "Hi")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1

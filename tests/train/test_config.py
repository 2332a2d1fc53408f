import dataclasses
import typing
from pathlib import Path
from typing import ClassVar

import pytest
import torch

import train as train_cli
from jepa.data.datasets import DataConfig
from jepa.settings import Section
from jepa.train import config as config_module
from jepa.train.config import (
    EvalConfig,
    JepaConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    apply_override,
    changed_on_resume,
    check_paths,
    config_from_dict,
    config_reference,
    load_config,
    resume_may_change,
)
from tests.train.helpers import reversal_config


def test_overrides_are_typed_by_the_schema(tmp_path):
    raw = reversal_config(tmp_path)
    for override in (
        "optim.lr=3e-5",
        "schedule.batch_size=8",
        "jepa.lambda=0",
        "lora.targets=q_proj,v_proj",
        "schedule.max_steps=null",
        "data.shuffle=false",
    ):
        apply_override(raw, override)
    cfg = config_from_dict(raw)
    assert cfg.optim.lr == 3e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.schedule.batch_size == 8
    assert cfg.jepa.lam == 0.0
    assert cfg.lora.targets == ["q_proj", "v_proj"]
    assert cfg.schedule.max_steps is None
    assert cfg.data.shuffle is False
    assert cfg.to_dict()["jepa"]["lambda"] == 0.0  # the YAML key round-trips


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown config key optim.lrr (did you mean optim.lr?)"),
        ("optimizer.lr=1", "unknown config key optimizer (did you mean optim?)"),
        ("schedule.batch_size=four", "schedule.batch_size: expected int, got 'four'"),
        ("schedule.batch_size=0", "schedule.batch_size: must be >= 1, got 0"),
        ("jepa.loss=cosin", "jepa.loss: must be one of"),
        ("jepa.ratio=1.5", "jepa.ratio: must be in [0, 1], got 1.5"),
        ("layout.mode=nope", "layout.mode must be one of"),
    ],
)
def test_bad_values_name_the_key(tmp_path, override, message):
    raw = reversal_config(tmp_path)
    apply_override(raw, override)
    with pytest.raises(ValueError) as err:
        config_from_dict(raw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_paths_say_what_to_put_there(tmp_path):
    raw = reversal_config(tmp_path, data={"train": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match=r"data.train: reversal directory .*nowhere not found"):
        check_paths(config_from_dict(raw))
    cfg = load_config("llama1b_step.yaml", [f"model.path={tmp_path / 'llama'}"])
    with pytest.raises(FileNotFoundError) as err:
        check_paths(cfg)
    text = str(err.value)
    assert text.startswith("model.path: ") and "Llama-3.2-1B-Instruct" in text and "model.safetensors" in text


def test_shipped_configs_load_and_base_merges():
    shipped = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert len(shipped) >= 12
    for path in shipped:
        load_config(path.name)
    for task in ("synth", "turk", "nq_open"):  # the paper's NL-RX / NQ-Open settings
        cfg = load_config(f"llama1b_{task}.yaml")
        assert (cfg.layout.mode, cfg.layout.predictors, cfg.jepa.lam, cfg.optim.lr, cfg.schedule.epochs) == (
            "jepa",
            1,
            1.0,
            2e-5,
            4,
        )
        assert not cfg.lora.enabled and cfg.eval.fn == f"jepa.eval.hooks:{task}"
    gemma = load_config("gemma2_synth.yaml")  # the paper's Gemma-2-2B SYNTH setting (its Table 12)
    assert (gemma.layout.mode, gemma.layout.predictors, gemma.jepa.lam, gemma.optim.lr) == ("jepa", 4, 2.0, 1e-5)
    assert gemma.model.path == "data/models/gemma-2-2b-it" and gemma.schedule.epochs == 4
    regular = load_config("llama1b_regular.yaml")
    assert regular.layout.mode == "regular" and regular.jepa.lam == 0.0
    assert regular.optim.lr == 2e-5 and regular.schedule.grad_accum == 16  # inherited from llama1b_jepa.yaml
    small = load_config("gpt2_reversal_small")
    assert small.model.arch["n_embd"] == 256 and small.layout.predictors == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "no_such_config.yaml"], "error: config file not found: no_such_config.yaml"),
        (["--config", "gpt2_reversal_small.yaml", "optim.lrr=1"], "error: unknown config key optim.lrr"),
        (["--config", "gpt2_reversal_small.yaml", "optim.lr=fast"], "error: optim.lr: expected float, got 'fast'"),
        (["--config", "gpt2_reversal_small.yaml", "data.train=/nonexistent/dir"], "error: data.train: reversal "),
        (["--config", "llama1b_step.yaml", "model.path=/nonexistent/llama"], "error: model.path: /nonexistent/llama"),
    ],
)
def test_train_py_exits_2_with_one_line(capsys, args, message):
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"run:\n  name: caf\xe9\n")
    with pytest.raises(ValueError, match=rf"^{path}: not UTF-8 \(byte 17\)$"):
        load_config(path)


def test_flex_attention_on_cpu_is_refused_before_any_work(capsys, tmp_path):
    args = ["--config", "gpt2_reversal_tiny.yaml", "model.attention=flex", f"run.dir={tmp_path}"]
    import prepare

    prepare.main(["reversal", "--preset", "tiny", "--out", str(tmp_path / "rev")])
    capsys.readouterr()
    threads = torch.get_num_threads()
    assert train_cli.main([*args, f"data.train={tmp_path / 'rev'}", "run.device=cpu"]) == 2
    assert torch.get_num_threads() == threads  # refused before the config's run.threads was applied
    assert capsys.readouterr().err == (
        "error: model.attention: flex has no backward on CPU (torch 2.13); use sdpa or run on a GPU\n"
    )


@pytest.mark.parametrize("override, key", [("optim.lr=inf", "optim.lr"), ("jepa.lambda=.inf", "jepa.lambda"),
                                           ("jepa.gamma=.nan", "jepa.gamma")])  # fmt: skip
def test_non_finite_numbers_are_refused_naming_the_key(tmp_path, override, key):
    raw = reversal_config(tmp_path)
    apply_override(raw, override)
    with pytest.raises(ValueError, match=rf"^{key}: must be a finite number"):
        config_from_dict(raw)


def test_a_key_written_twice_is_refused_with_its_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("optim:\n  lr: 1.0e-3\n  lr: 1.0e-4\n")
    with pytest.raises(ValueError, match=r"twice.yaml:3: not valid YAML \(key 'lr' appears twice in one section\)"):
        load_config(path)


def test_overrides_after_a_flag_are_kept(tmp_path, capsys):
    import yaml

    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(reversal_config(tmp_path)))
    assert train_cli.main(["--config", str(path), "optim.lr=0.5", "--print-config", "jepa.gamma=0.25"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 0.5 and printed["jepa"]["gamma"] == 0.25


def test_a_warm_up_longer_than_the_run_and_a_long_run_are_warned_about(tmp_path, capsys, monkeypatch):
    from jepa.train import loop as loop_module
    from jepa.train.loop import train

    monkeypatch.setattr(loop_module, "LONG_RUN_HOURS", 0.0)
    raw = reversal_config(tmp_path, schedule={"max_steps": 4, "warmup_steps": 10})
    train(config_from_dict(raw), progress=False)
    err = capsys.readouterr().err
    assert "schedule.warmup_steps: the warm-up (10 steps) is not shorter than the run (4 steps)" in err
    assert "steps take about" in err and "the config's header says what hardware it expects" in err


# ------------------------------------------------------------------------------------------------ the schema


def test_docs_config_md_is_the_generated_reference():
    """docs/config.md is generated from the schema (`make docs`): a key added, removed or re-documented without
    regenerating it fails here."""
    written = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text(encoding="utf-8")
    assert written == config_reference(), "docs/config.md is out of date: run `make docs`"
    for section in dataclasses.fields(TrainConfig):  # every key of every section is in it
        for f in dataclasses.fields(typing.get_type_hints(TrainConfig)[section.name]):
            assert f"| `{section.name}.{f.metadata.get('key', f.name)}` |" in written


def test_a_key_declared_without_its_meaning_is_refused(monkeypatch):
    @dataclasses.dataclass
    class Undocumented(Section):
        section: ClassVar[str] = "extra"
        knob: int = 3  # a plain field: no setting(...), no doc

    @dataclasses.dataclass
    class Extended(TrainConfig):
        extra: Undocumented = dataclasses.field(default_factory=Undocumented)

    monkeypatch.setattr(config_module, "TrainConfig", Extended)
    with pytest.raises(ValueError, match="extra.knob: declared without a doc"):
        config_module.config_reference()


def test_what_a_resume_may_change_is_read_off_the_fields():
    may_change = resume_may_change()
    # where the run lives, how it logs, checkpoints, evaluates, and how long it runs
    assert {"run.dir", "run.name", "optim.lr", "optim.clip", "schedule.max_steps", "checkpoint.every",
            "eval.every", "data.prefetch", "model.compile"} <= may_change  # fmt: skip
    # what would change the model, the optimizer state or the data order
    fixed = {"run.seed", "optim.beta1", "optim.weight_decay", "jepa.lambda", "layout.mode", "data.train",
             "data.pack_length", "schedule.batch_size", "model.path", "lora.rank"}  # fmt: skip
    assert not may_change & fixed
    keys = {f"{s.name}.{f.metadata.get('key', f.name)}" for s in dataclasses.fields(TrainConfig)
            for f in dataclasses.fields(typing.get_type_hints(TrainConfig)[s.name])}  # fmt: skip
    assert may_change <= keys
    saved = TrainConfig(data=DataConfig(train="x"), model=ModelConfig(path="m")).to_dict()
    changed = dataclasses.replace(config_from_dict(saved), run=RunConfig(dir="elsewhere", seed=7))
    assert changed_on_resume(saved, changed) == ["run.seed: 42 -> 7"]


@pytest.mark.parametrize("section,message", [
    (OptimConfig(lr=-1.0), "optim.lr: must be > 0, got -1.0"),
    (ScheduleConfig(warmup_ratio=1.5), r"schedule.warmup_ratio: must be in \[0, 1\), got 1.5"),
    (JepaConfig(lam=float("nan")), "jepa.lambda: must be a finite number, got nan"),
    (DataConfig(train="x", pack_length=-1), "data.pack_length: must be >= 0"),
    (EvalConfig(views="other"), "eval.views: must be jepa, step or null"),
])  # fmt: skip
def test_every_section_checks_itself_naming_its_key(section, message):
    with pytest.raises(ValueError, match=message):
        section.check()

"""Model shapes, tokenizer vs embedding, positions and checkpoints that used to crash in the first forward pass
or in loading: each is one line naming the key or the file before any work, or a checkpoint skipped with a
warning (issue 22, section 3)."""

import json

import pytest

from jepa.models import build_model, load_pretrained, save_pretrained
from jepa.train.config import config_from_dict
from jepa.train.loop import train
from tests.models.tiny import tiny_llama
from tests.train.helpers import TINY_GPT2, reversal_config


@pytest.mark.parametrize(
    "arch, message",
    [
        ({**TINY_GPT2, "n_embd": 30, "n_head": 4}, r"n_embd \(30\) must be a multiple of n_head \(4\)"),
        ({**TINY_GPT2, "n_head": 0}, "n_head: must be an integer >= 1, got 0"),
        ({**TINY_GPT2, "n_layer": -1}, "n_layer: must be an integer >= 1, got -1"),
        ({"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 0},
         "num_key_value_heads: must be an integer >= 1, got 0"),
        ({"model_type": "llama", "hidden_size": 30, "num_attention_heads": 4}, r"hidden_size \(30\) must be a"),
    ],
)  # fmt: skip
def test_impossible_model_shapes_are_one_line_naming_the_key(arch, message):
    with pytest.raises(ValueError, match=f"^model.arch: {message}"):
        build_model({"vocab_size": 31, **arch}, source="model.arch")


def test_positions_beyond_the_models_table_are_refused_before_any_step(tmp_path):
    raw = reversal_config(tmp_path, layout={"mode": "reversal", "predictors": 20})  # 6 + 20 + 6 > 16 positions
    with pytest.raises(ValueError, match=r"reach position \d+ but the model has 16 positions"):
        train(config_from_dict(raw), progress=False)


def test_a_tokenizer_with_more_ids_than_the_weights_is_refused(tmp_path, smollm2_dir):
    model_dir = tmp_path / "narrow"
    save_pretrained(tiny_llama(vocab_size=1000), model_dir)  # SmolLM2's tokenizer has 49,152 ids
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_dir / name).write_bytes((smollm2_dir / name).read_bytes())
    data = tmp_path / "chat.jsonl"
    messages = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]
    data.write_text(json.dumps({"messages": messages}) + "\n")
    raw = {"run": {"name": "narrow", "dir": str(tmp_path / "runs"), "device": "cpu"}, "model": {"path": str(model_dir)},
           "data": {"train": str(data)}, "layout": {"mode": "regular", "predictors": 0},
           "schedule": {"max_steps": 1, "batch_size": 1}}  # fmt: skip
    with pytest.raises(
        ValueError, match=r"^model.path: .*narrow: the data uses token id \d+ but the model's embedding"
    ):
        train(config_from_dict(raw), progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_sharded_index_without_weight_map_names_the_file(tmp_path):
    save_pretrained(tiny_llama(), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match=r"model.safetensors.index.json: no \"weight_map\" object"):
        load_pretrained(tmp_path)


def _run(tmp_path, **arch):
    raw = reversal_config(tmp_path, schedule={"max_steps": 4}, checkpoint={"every": 2, "keep_last": 5})
    raw["model"]["arch"].update(arch)
    return train(config_from_dict(raw), progress=False)


def test_auto_resume_skips_a_newest_checkpoint_of_another_model(tmp_path, capsys):
    """A step_N of a narrower model without config.yaml or manifest (what an older version or a copy leaves):
    skipped with a warning naming it, and the older valid checkpoint is the one resumed."""
    _run(tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    other = tmp_path / "other"
    _run(other, n_embd=16)
    (run_dir / "step_4").rename(run_dir / "old_step_4")
    foreign = other / "runs" / "tiny" / "step_4"
    for name in ("config.yaml", "manifest.json"):
        (foreign / name).unlink()
    foreign.rename(run_dir / "step_9")
    raw = reversal_config(tmp_path, schedule={"max_steps": 4}, checkpoint={"every": 2, "keep_last": 5})
    result = train(config_from_dict(raw), progress=False)
    err = capsys.readouterr().err
    assert "skipping checkpoint step_9:" in err and "has shape" in err and "Traceback" not in err
    assert result.steps == 4


def test_auto_resume_skips_a_trainer_state_without_its_sampler(tmp_path, capsys):
    _run(tmp_path)
    state_file = tmp_path / "runs" / "tiny" / "step_4" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["sampler"]
    state_file.write_text(json.dumps(state))
    manifest = state_file.parent / "manifest.json"
    files = json.loads(manifest.read_text())
    files["files"]["trainer_state.json"] = state_file.stat().st_size
    manifest.write_text(json.dumps(files))
    raw = reversal_config(tmp_path, schedule={"max_steps": 4}, checkpoint={"every": 2, "keep_last": 5})
    train(config_from_dict(raw), progress=False)
    assert "skipping checkpoint step_4: " in capsys.readouterr().err


def test_a_resume_path_that_does_not_exist_says_so(tmp_path):
    raw = reversal_config(tmp_path, checkpoint={"resume": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match="nowhere: no such checkpoint directory"):
        train(config_from_dict(raw), progress=False)

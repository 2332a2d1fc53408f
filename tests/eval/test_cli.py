"""`python -m jepa.eval`: gsm8k / reversal / views end to end on tiny saved models, and its error handling."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jepa.data.reversal import generate_reversal
from jepa.eval.__main__ import main
from jepa.models import save_pretrained
from tests.models.tiny import tiny_gpt2


@pytest.fixture(scope="module")
def reversal_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("reversal")
    generate_reversal(data, n_learning=20, n_test=10, n_first=10, n_last=10, comb=3, n_relations=1, n_valid=4)
    return data


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, reversal_dir):
    vocab = json.loads((reversal_dir / "vocab.json").read_text())
    return save_pretrained(tiny_gpt2(vocab_size=len(vocab)), tmp_path_factory.mktemp("gpt2"))


@pytest.fixture
def gsm8k_file(tmp_path):
    path = tmp_path / "test.jsonl"
    lines = [
        {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "3+4=7\n#### 7"},
        {"question": "How many?", "answer": "#### 1,080"},
        {"question": "Tom buys 4.", "answer": "#### 4"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_gsm8k_writes_examples_and_summary(chat_model_dir, gsm8k_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "gsm8k",
            "--model",
            str(chat_model_dir),
            "--data",
            str(gsm8k_file),
            "--limit",
            "2",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "5",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    examples = [json.loads(line) for line in (out / "gsm8k.jsonl").read_text().splitlines()]
    summary = json.loads((out / "gsm8k_summary.json").read_text())
    assert json.loads(capsys.readouterr().out) == summary
    assert [e["gold"] for e in examples] == ["7", "1,080"]
    assert all(e["n_tokens"] <= 5 for e in examples)
    assert summary["n"] == 2 and summary["protocol"] == "default" and summary["max_new_tokens"] == 5
    assert 0 <= summary["accuracy"] <= 1 and summary["model"] == str(chat_model_dir)


def test_reversal_writes_all_splits(gpt2_dir, reversal_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "reversal",
            "--model",
            str(gpt2_dir),
            "--valid",
            str(reversal_dir / "valid.json"),
            "--vocab",
            str(reversal_dir / "vocab.json"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    examples = (out / "reversal.jsonl").read_text().splitlines()
    summary = json.loads((out / "reversal_summary.json").read_text())
    assert len(examples) == 12 and {json.loads(e)["split"] for e in examples} == {"train", "atomic", "test"}
    assert set(summary["test"]) == {"direction", "n", "mrr_token1", "mrr_token2", "mrr", "joint_accuracy", "joint_nll"}
    assert summary["atomic"]["direction"].startswith("forward") and summary["test"]["direction"].startswith("reverse")
    capsys.readouterr()


def reversal_views(model, reversal_dir) -> list[str]:
    """argv of `views --mode reversal` on the fixture's probes."""
    valid, vocab = reversal_dir / "valid.json", reversal_dir / "vocab.json"
    return ["views", "--model", str(model), "--mode", "reversal", "--valid", str(valid), "--vocab", str(vocab)]


def test_views_reversal_mode(gpt2_dir, reversal_dir, capsys):
    assert main(reversal_views(gpt2_dir, reversal_dir)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 4 and summary["predictors"] == 0 and summary["linear_error"] is None  # NaN -> null
    assert -1 <= summary["cosine"] <= 1 and summary["erank_pred"] >= 1


def test_views_step_mode_on_prepared_records(chat_model_dir, tmp_path, capsys):
    path = tmp_path / "prepared.jsonl"
    record = {
        "messages": [
            {"role": "system", "content": "Solve the problem."},
            {"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples?"},
            {"role": "assistant", "content": "He has 3 apples.\n\nHe buys 4 more.\n\n#### 7"},
        ],
        "answer": "7",
    }
    path.write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    assert main(["views", "--model", str(chat_model_dir), "--mode", "step", "--data", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["gsm8k", "--model", "{tmp}/missing", "--data", "{data}"], "missing: model directory not found"),
        (["gsm8k", "--model", "{model}", "--data", "{tmp}/none.jsonl"], "none.jsonl: no such file"),
        (["gsm8k", "--model", "{model}", "--data", "{bad}"], "bad.jsonl:2: not JSON"),
        (["gsm8k", "--model", "{model}", "--data", "{data}", "--limit", "0"], "--limit must be >= 1"),
        (["gsm8k", "--model", "{model}", "--data", "{data}", "--device", "gpu0"], "--device gpu0: not a device"),
        (["gsm8k", "--model", "{model}", "--data", "{data}", "--out", "{data}"], "test.jsonl: a file, not a directory"),
        (
            ["reversal", "--model", "{model}", "--valid", "{rev}/valid.json", "--vocab", "{big}"],
            "big_vocab.json: 400 tokens but the model's vocabulary has 300",
        ),
        (["views", "--model", "{model}", "--mode", "step", "--data", "{data}"], 'test.jsonl:1: expected "messages"'),
        (
            ["reversal", "--model", "{model}", "--valid", "{rev}/valid.json", "--vocab", "{rev}/vocab.json"],
            "tokens but the model's vocabulary has 300; evaluate a model trained with this vocab.json",
        ),
        (
            [
                "views",
                "--model",
                "{gpt2}",
                "--mode",
                "reversal",
                "--valid",
                "{rev}/valid.json",
                "--vocab",
                "{rev}/vocab.json",
                "--predictors",
                "2",
            ],
            "has no trained predictor embeddings",
        ),
    ],
)
def test_bad_input_is_one_error_line(
    chat_model_dir, gpt2_dir, gsm8k_file, reversal_dir, tmp_path, capsys, args, message
):
    (tmp_path / "bad.jsonl").write_text(gsm8k_file.read_text().splitlines()[0] + "\n{oops\n")
    (tmp_path / "big_vocab.json").write_text(json.dumps({f"t{i}": i for i in range(400)}))
    values = {
        "tmp": tmp_path,
        "data": gsm8k_file,
        "model": chat_model_dir,
        "gpt2": gpt2_dir,
        "bad": tmp_path / "bad.jsonl",
        "rev": reversal_dir,
        "big": tmp_path / "big_vocab.json",
    }
    assert main([a.format(**values) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.slow  # a new process
def test_module_entry_point_exit_status(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jepa.eval",
            "reversal",
            "--model",
            str(tmp_path / "nope"),
            "--valid",
            str(tmp_path / "v.json"),
            "--vocab",
            str(tmp_path / "vocab.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'vocab.json'}: no such file"


def test_load_for_eval_checkpoint_layouts(tmp_path):
    import torch
    from safetensors.torch import save_file

    from jepa.eval.loading import load_for_eval

    model = tiny_gpt2(vocab_size=30)
    weight = torch.randn(2, 64)
    # an HF export with predictors next to it
    final = save_pretrained(model, tmp_path / "final")
    save_file({"weight": weight}, str(final / "predictors.safetensors"))
    loaded = load_for_eval(final, device="cpu")
    torch.testing.assert_close(loaded.predictors.weight.data, weight)
    assert loaded.tokenizer_dir == final and not loaded.model.training
    # a full fine-tuning checkpoint: step_N/model/ + step_N/predictors.safetensors
    step = tmp_path / "step_5"
    save_pretrained(model, step / "model")
    save_file({"weight": weight}, str(step / "predictors.safetensors"))
    loaded = load_for_eval(step, device="cpu")
    assert loaded.predictors.weight.shape == (2, 64) and loaded.tokenizer_dir == step
    # no predictors file: none
    assert load_for_eval(save_pretrained(model, tmp_path / "plain"), device="cpu").predictors is None
    # errors
    save_file({"weight": torch.randn(2, 5)}, str(final / "predictors.safetensors"))
    with pytest.raises(ValueError, match=r"predictors.safetensors: expected a tensor 'weight' of shape \[K, 64\]"):
        load_for_eval(final, device="cpu")
    lora = tmp_path / "lora"
    lora.mkdir()
    save_file({"x": torch.zeros(1)}, str(lora / "adapter.safetensors"))
    with pytest.raises(FileNotFoundError, match="a LoRA adapter without .*config.yaml"):
        load_for_eval(lora, device="cpu")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_for_eval(tmp_path, device="cpu")


def test_views_uses_the_checkpoint_predictors(gpt2_dir, reversal_dir, tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    run = tmp_path / "with_predictors"
    shutil.copytree(gpt2_dir, run)
    save_file({"weight": torch.randn(3, 64)}, str(run / "predictors.safetensors"))
    args = reversal_views(run, reversal_dir)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["predictors"] == 3
    assert main(args + ["--predictors", "2"]) == 2
    assert "--predictors 2 but the checkpoint has 3 predictor embeddings" in capsys.readouterr().err


def test_views_on_plain_message_records(chat_model_dir, tmp_path, capsys):
    """A chat jsonl without "answer" fields, as any chat data set has it, works like prepared records."""
    data = tmp_path / "chat.jsonl"
    record = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "One.\n\nTwo."}]}
    data.write_text((json.dumps(record) + "\n") * 3)
    args = ["views", "--model", str(chat_model_dir), "--mode", "jepa", "--data", str(data), "--limit", "2"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2


def test_an_interrupted_gsm8k_evaluation_resumes_from_its_partial_results(chat_model_dir, gsm8k_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["gsm8k", "--model", str(chat_model_dir), "--data", str(gsm8k_file), "--max-new-tokens", "4", "--out",
            str(out), "--batch-size", "1"]  # fmt: skip
    assert main(args) == 0
    first = [json.loads(line) for line in (out / "gsm8k.jsonl").read_text().splitlines()]
    assert not (out / "gsm8k.partial.jsonl").exists()
    assert "problem" in capsys.readouterr().err  # progress counts problems
    # An interruption after problem 1: its line (marked here) is kept, the rest is generated again.
    settings = {k: str(v) for k, v in {"model": chat_model_dir, "data": gsm8k_file, "limit": None, "protocol":
                "default", "max_new_tokens": 4, "system": "gsm8k"}.items()}  # fmt: skip
    kept = dict(first[1], generation="MARKED")
    (out / "gsm8k.partial.jsonl").write_text(
        json.dumps({"settings": settings}) + "\n" + json.dumps(kept) + "\n" + '{"index": 2, "torn'
    )
    assert main(args) == 0
    assert "resuming: 1 problems already scored" in capsys.readouterr().err
    again = [json.loads(line) for line in (out / "gsm8k.jsonl").read_text().splitlines()]
    assert [e["generation"] for e in again] == [first[0]["generation"], "MARKED", first[2]["generation"]]
    # Other settings: the partial results are not used.
    (out / "gsm8k.partial.jsonl").write_text(json.dumps({"settings": {}}) + "\n" + json.dumps(kept) + "\n")
    assert main(args) == 0
    assert [e["generation"] for e in (json.loads(x) for x in (out / "gsm8k.jsonl").read_text().splitlines())] == [
        e["generation"] for e in first
    ]


def test_views_out_writes_the_per_example_jsonl(gpt2_dir, reversal_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = reversal_views(gpt2_dir, reversal_dir) + ["--out", str(out)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in (out / "views.jsonl").read_text().splitlines()]
    assert len(rows) == summary["n"] > 0
    assert abs(sum(r["cosine"] for r in rows) / len(rows) - summary["cosine"]) < 1e-9


def test_cuda_without_a_gpu_and_an_unwritable_out_are_one_line_before_loading(chat_model_dir, gsm8k_file, tmp_path,
                                                                             capsys, monkeypatch):  # fmt: skip
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["gsm8k", "--model", str(chat_model_dir), "--data", str(gsm8k_file)]
    assert main([*args, "--device", "cuda"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: --device cuda: CUDA is not available on this machine (use --device cpu)"
    )
    real_write_text = Path.write_text

    def read_only(self, *a, **kw):  # root ignores permissions: a read-only file system, simulated
        if self.name.startswith(".write_test"):
            raise OSError(30, "Read-only file system", str(self))
        return real_write_text(self, *a, **kw)

    monkeypatch.setattr(Path, "write_text", read_only)
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {tmp_path / 'out'}: not writable (Read-only file system)"

"""GSM8K evaluation: record loading, prompts, batching, scoring and the summary."""

import json

import pytest

import jepa.eval.generation as generation_module
from jepa.data.sources import GSM8K_SYSTEM_PROMPT
from jepa.eval.generation import prompt_messages
from jepa.eval.gsm8k import evaluate_gsm8k, load_gsm8k_records
from tests.eval.helpers import tiny_chatml_tokenizer, tiny_model_for

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples?",
    "How many?",
    "Solve the problem. Tom has 3 apples, buys 4 more apples and then 12 more. How many apples?",
    "Tom buys 4.",
    "How many apples and dollars?",
]


def chat_record(question: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "Solve the problem."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": f"Some step.\n\n#### {answer}"},
        ],
        "answer": answer,
    }


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_chatml_tokenizer(tmp_path_factory.mktemp("tok"))


def test_load_raw_and_prepared_records(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"question": " What is 2+2? ", "answer": "2+2=4\n#### 4"}),
        "",
        json.dumps(chat_record("What is 3+3?", "1,080")),
    ]
    path.write_text("\n".join(lines) + "\n")
    raw, prepared = load_gsm8k_records(path)
    assert raw == {
        "messages": [{"role": "system", "content": GSM8K_SYSTEM_PROMPT}, {"role": "user", "content": "What is 2+2?"}],
        "answer": "4",
    }
    assert prepared["answer"] == "1,080" and len(prepared["messages"]) == 3
    assert prompt_messages(prepared) == prepared["messages"][:2]
    raw, prepared_again = load_gsm8k_records(path, system_prompt="Box it.")
    assert raw["messages"][0] == {"role": "system", "content": "Box it."} and prepared_again == prepared


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "bad.jsonl:2: not JSON"),
        (json.dumps({"question": "q"}), "bad.jsonl:2: missing field 'answer'"),
        (json.dumps({"answer": "4"}), "bad.jsonl:2: expected 'messages'"),
        (json.dumps({"messages": [{"role": "system", "content": "s"}], "answer": "4"}), "bad.jsonl:2: 'messages'"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        load_gsm8k_records(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl: no such file"):
        load_gsm8k_records(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="empty.jsonl: no records"):
        load_gsm8k_records(tmp_path / "empty.jsonl")


def test_generations_do_not_depend_on_batching(tokenizer):
    model = tiny_model_for(tokenizer)
    records = [chat_record(q, "7") for q in QUESTIONS]
    one, _ = evaluate_gsm8k(model, tokenizer, records, batch_size=1, max_new_tokens=12)
    three, summary = evaluate_gsm8k(model, tokenizer, records, batch_size=3, max_new_tokens=12)
    assert [e["generation"] for e in one] == [e["generation"] for e in three]
    assert [e["question"] for e in three] == QUESTIONS  # record order restored after length sorting
    assert [e["index"] for e in three] == list(range(5))
    assert all(0 <= e["n_tokens"] <= 12 for e in three)
    assert summary["n"] == 5 and summary["max_new_tokens"] == 12
    assert summary["mean_tokens"] == pytest.approx(sum(e["n_tokens"] for e in three) / 5)
    assert summary["truncated"] == sum(e["n_tokens"] == 12 for e in three)


CANNED = {  # question -> (generation, gold, correct under default, correct under paper)
    QUESTIONS[0]: ("3 + 4 = 7\n#### 7", "7", True, True),
    QUESTIONS[1]: ("It is \\boxed{\\$1,080}.", "1,080", True, False),
    QUESTIONS[2]: ("I do not know.", "19", False, False),
    QUESTIONS[3]: ("Step.\n#### 4.0", "4", True, False),
    QUESTIONS[4]: ("Maybe 5, maybe 6", "5", False, False),
}


@pytest.fixture
def canned_generate(monkeypatch, tokenizer):
    """Replace generation by canned answers looked up from the prompt; record the batches it was called with."""
    calls = []

    def fake_generate(model, prompts, max_new_tokens, stop_ids, pad_id, on_step=None):
        calls.append({"prompts": prompts, "max_new_tokens": max_new_tokens, "stop_ids": stop_ids, "pad_id": pad_id})
        out = []
        for prompt in prompts:
            text = tokenizer.decode(prompt)
            question = next(q for q in CANNED if f"user\n{q}<|im_end|>" in text)
            out.append(tokenizer.encode(CANNED[question][0])[:max_new_tokens])
        if on_step is not None:
            on_step(sum(map(len, out)), len(out))
        return out

    monkeypatch.setattr(generation_module, "generate", fake_generate)
    return calls


@pytest.mark.parametrize("protocol", ["default", "paper"])
def test_scoring_and_summary(tokenizer, canned_generate, protocol):
    records = [chat_record(q, CANNED[q][1]) for q in QUESTIONS]
    examples, summary = evaluate_gsm8k(tiny_model_for(tokenizer), tokenizer, records, batch_size=2, protocol=protocol)
    expected_default = [CANNED[q][2] for q in QUESTIONS]
    expected_paper = [CANNED[q][3] for q in QUESTIONS]
    assert [e["correct_default"] for e in examples] == expected_default
    assert [e["correct_paper"] for e in examples] == expected_paper
    chosen = expected_default if protocol == "default" else expected_paper
    assert [e["correct"] for e in examples] == chosen
    assert summary["accuracy"] == pytest.approx(sum(chosen) / 5)
    assert summary["accuracy_default"] == pytest.approx(0.6) and summary["accuracy_paper"] == pytest.approx(0.2)
    # default: only "I do not know." has no answer ("Maybe 5, maybe 6" -> 6); paper: 4 lack a final "#### X"
    assert summary["unparseable"] == (1 if protocol == "default" else 3)
    assert examples[1]["predicted"] == ("\\$1,080" if protocol == "default" else None)
    assert examples[1]["gold"] == "1,080"
    # prompts: system + user through the template with the generation prompt, no assistant content
    prompts = [p for call in canned_generate for p in call["prompts"]]
    text = tokenizer.decode(prompts[0])
    assert text.startswith("<|im_start|>system\nSolve the problem.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n") and "Some step." not in text
    # batching: longest prompts first, each batch at most batch_size, stop at end-of-turn, paper = 128 tokens
    lengths = [len(p) for p in prompts]
    assert lengths == sorted(lengths, reverse=True) and [len(c["prompts"]) for c in canned_generate] == [2, 2, 1]
    assert canned_generate[0]["stop_ids"] == tokenizer.stop_ids
    assert canned_generate[0]["max_new_tokens"] == (512 if protocol == "default" else 128)


def test_limit_and_bad_arguments(tokenizer, canned_generate):
    records = [chat_record(q, CANNED[q][1]) for q in QUESTIONS]
    examples, summary = evaluate_gsm8k(tiny_model_for(tokenizer), tokenizer, records, limit=2)
    assert summary["n"] == 2 and len(examples) == 2
    with pytest.raises(ValueError, match="protocol must be one of default, paper"):
        evaluate_gsm8k(tiny_model_for(tokenizer), tokenizer, records, protocol="strict")

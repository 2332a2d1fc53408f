"""Generation tasks (jepa/eval/tasks.py): scorers, intervals, record checks, the `generate` command end to end,
and training on the three paper tasks' record shapes."""

import json
import math

import pytest

import jepa.eval.generation as generation_module
from jepa.eval.__main__ import main
from jepa.eval.generation import response_ending
from jepa.eval.tasks import TASKS, evaluate_task, load_task_records, score_exact, score_nq_open, wilson_interval
from tests.eval.helpers import tiny_chatml_tokenizer, tiny_model_for

SYNTH = [("lines with a vowel", "([AEIOUaeiou]).*"), ("lines with the string 'dog'", ".*dog.*"),
         ("lines with a number", ".*[0-9].*")]  # fmt: skip
NQ = [("how many 5 star generals are there in the us", "Nine"),
      ("on the 6th day of christmas my true love sent to me", "6 geese a-laying; maids a-milking")]  # fmt: skip


def chat_lines(pairs, system):
    return "".join(
        json.dumps({"messages": [{"role": "system", "content": system}, {"role": "user", "content": q},
                                 {"role": "assistant", "content": a}]}) + "\n"
        for q, a in pairs
    )  # fmt: skip


def test_nl_rx_is_exact_match_and_whitespace_and_startswith_are_the_extras():
    assert score_exact("(a)|(b)", "(a)|(b)") == {"correct": True, "normalised": True, "startswith": True}
    assert score_exact("(a) | (b)", "(a)|(b)") == {"correct": False, "normalised": True, "startswith": False}
    assert score_exact("(a)|(c)", "(a)|(b)") == {"correct": False, "normalised": False, "startswith": False}
    assert score_exact("(a)|(b)) extra", "(a)|(b)") == {"correct": False, "normalised": False, "startswith": True}


def test_nq_open_is_a_substring_of_the_reference_and_the_normalised_extra_is_exact_match():
    reference = "6 geese a-laying; maids a-milking"
    assert score_nq_open("geese", reference)["correct"]  # a part of the response inside the reference
    assert score_nq_open("swans; maids a-milking", reference)["correct"]  # any "; " part
    assert not score_nq_open("The Geese A-Laying", reference)["correct"]  # case matters to the paper ...
    assert not score_nq_open("The Geese A-Laying", reference)["normalised"]  # ... and a part is not an answer
    assert score_nq_open("Maids a-milking!", reference)["normalised"]  # SQuAD normalisation: equal answers
    assert score_nq_open("", reference) == {"correct": False, "normalised": False}  # "" is in every string


def test_wilson_interval():
    low, high = wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    assert wilson_interval(0, 20)[0] == 0.0 and 0 < wilson_interval(0, 20)[1] < 0.2
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_task_records_name_the_bad_line(tmp_path):
    path = tmp_path / "synth.jsonl"
    path.write_text(chat_lines(SYNTH[:1], "Convert.") + json.dumps({"messages": [{"role": "user", "content": "q"}]}))
    with pytest.raises(ValueError, match=r"synth.jsonl:2: no non-empty assistant message after the user message"):
        load_task_records(path, TASKS["synth"])
    path.write_text('{"messages": "hello"}\n')
    with pytest.raises(ValueError, match=r"synth.jsonl:1: expected \"messages\""):
        load_task_records(path, TASKS["synth"])
    path.write_text(chat_lines(SYNTH, "Convert."))
    records = load_task_records(path, TASKS["synth"], limit=2)
    assert [r["reference"] for r in records] == [a for _, a in SYNTH[:2]]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_chatml_tokenizer(tmp_path_factory.mktemp("tok"))


def evaluate_canned(tokenizer, monkeypatch, tmp_path, task, pairs, answers):
    """`evaluate_task` on `pairs` where the model's response to question q is `answers[q]` (generation replaced)."""

    def canned(model, prompts, max_new_tokens, stop_ids, pad_id, on_step=None):
        texts = [tokenizer.decode(p) for p in prompts]
        return [tokenizer.encode(next(a for q, a in answers.items() if f"user\n{q}<|im_end|>" in t)) for t in texts]

    monkeypatch.setattr(generation_module, "generate", canned)
    path = tmp_path / "test.jsonl"
    path.write_text(chat_lines(pairs, "System."))
    return evaluate_task(tiny_model_for(tokenizer), tokenizer, task, load_task_records(path, TASKS[task]))


@pytest.mark.parametrize("task,pairs,answers", [
    ("synth", SYNTH, {SYNTH[0][0]: SYNTH[0][1], SYNTH[1][0]: " .*dog.* ", SYNTH[2][0]: ".* [0-9] .*"}),
    ("nq_open", NQ, {NQ[0][0]: "nine", NQ[1][0]: "maids a-milking"}),
])  # fmt: skip
def test_evaluate_task_scores_the_stripped_responses(tokenizer, monkeypatch, tmp_path, task, pairs, answers):
    examples, summary = evaluate_canned(tokenizer, monkeypatch, tmp_path, task, pairs, answers)
    if task == "synth":  # exact; the stripped " .*dog.* " is right, ".* [0-9] .*" only once spaces are removed
        assert [e["correct"] for e in examples] == [True, True, False]
        assert [e["normalised"] for e in examples] == [True, True, True]
    else:  # "nine" is not in "Nine" (the paper's check) but is the same answer; "maids a-milking" is in both
        assert [e["correct"] for e in examples] == [False, True]
        assert [e["normalised"] for e in examples] == [True, True]
    n = len(pairs)
    assert summary["accuracy"] == sum(e["correct"] for e in examples) / n and summary["n"] == n
    assert summary["accuracy_ci_low"] <= summary["accuracy"] <= summary["accuracy_ci_high"]
    assert summary["accuracy_normalised"] == sum(e["normalised"] for e in examples) / n
    if task == "synth":  # every criterion of the scorer is summarised, with its interval
        assert summary["accuracy_startswith"] == sum(e["startswith"] for e in examples) / n
        assert summary["accuracy_startswith_ci_low"] <= summary["accuracy_startswith"]
    assert examples[0]["response"] == examples[0]["response"].strip()


@pytest.mark.parametrize("task", ["synth", "turk", "nq_open"])
def test_the_generate_command_writes_results_and_resumes(chat_model_dir, tmp_path, capsys, task):
    data, out = tmp_path / f"{task}_test.jsonl", tmp_path / "out"
    data.write_text(chat_lines(NQ if task == "nq_open" else SYNTH, "System."))
    args = ["generate", "--task", task, "--model", str(chat_model_dir), "--data", str(data), "--max-new-tokens",
            "6", "--out", str(out), "--batch-size", "2"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == task and summary["n"] == data.read_text().count("\n")
    examples = [json.loads(line) for line in (out / f"{task}.jsonl").read_text().splitlines()]
    assert [e["index"] for e in examples] == list(range(summary["n"])) and all(e["n_tokens"] <= 6 for e in examples)
    assert not (out / f"{task}.partial.jsonl").exists()
    # An interruption after example 0: its line (marked) is kept, the rest generated again.
    settings = {k: str(v) for k, v in {"model": chat_model_dir, "data": data, "limit": None, "task": task,
                                       "max_new_tokens": 6}.items()}  # fmt: skip
    kept = dict(examples[0], response="MARKED")
    (out / f"{task}.partial.jsonl").write_text(json.dumps({"settings": settings}) + "\n" + json.dumps(kept) + "\n")
    assert main(args) == 0
    again = [json.loads(line) for line in (out / f"{task}.jsonl").read_text().splitlines()]
    assert again[0]["response"] == "MARKED" and again[1:] == examples[1:]


@pytest.mark.parametrize("pairs,system", [(SYNTH, "Convert natural language to regular expression."),
                                          (NQ, "Answer the question below.")])  # fmt: skip
def test_the_paper_tasks_train_in_jepa_mode(tmp_path, smollm2_dir, pairs, system):
    """A few optimizer steps on each task's record shape: the user text and the answer as the two views."""
    from jepa.train.build import build
    from jepa.train.step import next_micro_batches, train_step
    from tests.train.helpers import chat_config, tiny_chat_model_dir, typed

    data = tmp_path / "train.jsonl"
    data.write_text(chat_lines(pairs * 4, system))
    raw = chat_config(tmp_path, tiny_chat_model_dir(tmp_path, smollm2_dir), data, layout={"mode": "jepa",
                      "predictors": 1}, jepa={"lambda": 1.0}, lora={"enabled": False})  # fmt: skip
    state = build(typed(raw), verbose=False)
    metrics = [train_step(state, next_micro_batches(state)) for _ in range(2)]
    assert all(m["jepa_rows"] == 4 and math.isfinite(m["loss"]) and m["jepa"] > 0 for m in metrics)


def test_how_a_response_ends_on_hand_made_cases():
    ref = "(dog).*"
    assert response_ending(ref, ref, 5, 128) == {"contains": True, "overgeneration": False, "truncated": False}
    # the answer, then more: the model did not stop
    assert response_ending(ref + "\nassistant\n(dog).*", ref, 128, 128) == {
        "contains": True, "overgeneration": True, "truncated": True}  # fmt: skip
    assert response_ending("x" + ref, ref, 9, 128) == {"contains": True, "overgeneration": False, "truncated": False}
    assert response_ending("(cat).*", ref, 9, 9) == {"contains": False, "overgeneration": False, "truncated": True}


def test_the_summary_reports_contains_overgeneration_and_truncation(tokenizer, monkeypatch, tmp_path):
    answers = {SYNTH[0][0]: SYNTH[0][1], SYNTH[1][0]: SYNTH[1][1] + " and more", SYNTH[2][0]: "no"}
    examples, summary = evaluate_canned(tokenizer, monkeypatch, tmp_path, "synth", SYNTH, answers)
    assert [(e["correct"], e["contains"], e["overgeneration"]) for e in examples] == [
        (True, True, False), (False, True, True), (False, False, False)]  # fmt: skip
    assert summary["contains"] == 2 / 3 and summary["overgeneration"] == 1 / 3
    assert summary["contains_ci_low"] <= 2 / 3 <= summary["contains_ci_high"]
    lengths = [len(tokenizer.encode(answers[q])) for q, _ in SYNTH]
    assert summary["mean_tokens"] == sum(lengths) / 3
    assert summary["truncated_fraction"] == sum(n >= 128 for n in lengths) / 3 == 0

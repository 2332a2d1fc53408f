"""Reversal metrics: exact ranks on a hand-built lookup model, batching, real models, seed-format files."""

import json
import math

import pytest
import torch
from torch import nn

from jepa.data.reversal import generate_reversal, load_probes
from jepa.eval.report import flat_metrics
from jepa.eval.reversal import evaluate_reversal, ranks_of
from jepa.models.base import CausalLM
from tests.models.tiny import tiny_gpt2

V, MASK, REL = 8, 7, 6


class LookupModel(CausalLM):
    """logits at a position = TABLE[token at that position]: hidden = one-hot token, lm_head = TABLE^T."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, V)
        self.lm_head = nn.Linear(V, V, bias=False)
        with torch.no_grad():
            self.embed.weight.copy_(torch.eye(V))
            self.lm_head.weight.copy_(table.T)

    def forward(self, input_ids, attn_mask=None, position_ids=None):
        return self.embed(input_ids)


TABLE = torch.zeros(V, V)
TABLE[MASK] = torch.tensor([0.0, 5.0, 3.0, 3.0, 1.0, 9.0, 0.0, 0.0])  # ranks: 5→1, 1→2, 2,3→3 (tie), 4→5, 0→6
TABLE[5] = torch.tensor([0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0])  # after e2_f=5: 4→1, others→2
TABLE[1] = torch.arange(1.0, 9.0)  # after e2_f=1: token k has rank 8 - k
# TABLE[3] is all zeros: every token ties, so every rank is 1


def item(e2: tuple[int, int], e1: tuple[int, int] = (0, 2), kind: str = "test") -> dict:
    return {"input_text": [list(e1), [REL], [MASK]], "target_text": [list(e2)], "type": kind}


def nll(first: int, last: int) -> float:
    def neg_log_prob(row: torch.Tensor, k: int) -> float:
        values = row.tolist()
        return math.log(sum(math.exp(v) for v in values)) - values[k]

    return neg_log_prob(TABLE[MASK], first) + neg_log_prob(TABLE[first], last)


def test_ranks_of_counts_strictly_larger_logits():
    logits = torch.tensor([[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    assert ranks_of(logits, torch.tensor([1, 3])).tolist() == [1, 1]
    assert ranks_of(logits, torch.tensor([3, 0])).tolist() == [3, 1]
    assert ranks_of(logits, torch.tensor([0, 2])).tolist() == [4, 1]


def test_exact_metrics_on_lookup_model():
    probes = [item((5, 4)), item((1, 4)), item((3, 0))]
    examples, summary = evaluate_reversal(LookupModel(TABLE), {"test": probes}, batch_size=2)
    assert [(e["rank1"], e["rank2"]) for e in examples] == [(1, 1), (2, 4), (3, 1)]
    metrics = summary["test"]
    assert metrics["n"] == 3
    assert metrics["mrr_token1"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert metrics["mrr_token2"] == pytest.approx((1 + 1 / 4 + 1) / 3)
    assert metrics["mrr"] == pytest.approx((metrics["mrr_token1"] + metrics["mrr_token2"]) / 2)
    assert metrics["joint_accuracy"] == pytest.approx(1 / 3)
    assert metrics["joint_nll"] == pytest.approx((nll(5, 4) + nll(1, 4) + nll(3, 0)) / 3, rel=1e-5)
    assert [e["nll"] for e in examples] == pytest.approx([nll(5, 4), nll(1, 4), nll(3, 0)], rel=1e-5)
    assert examples[1] == {
        "split": "test",
        "index": 1,
        "e1": [0, 2],
        "r": REL,
        "e2": [1, 4],
        "rank1": 2,
        "rank2": 4,
        "nll": pytest.approx(nll(1, 4), rel=1e-5),
    }


def test_splits_kept_apart_and_flattened():
    valid = {"train": [item((5, 4), kind="train")], "atomic": [item((1, 0), kind="atomic")], "test": []}
    _, summary = evaluate_reversal(LookupModel(TABLE), valid)
    assert summary["train"]["mrr"] == 1.0 and summary["train"]["joint_accuracy"] == 1.0
    assert summary["atomic"]["mrr_token1"] == 0.5 and summary["atomic"]["mrr_token2"] == 1 / 8
    assert summary["test"]["n"] == 0 and math.isnan(summary["test"]["mrr"])
    flat = flat_metrics(summary)
    assert flat["eval/atomic/mrr_token2"] == 1 / 8 and "eval/train/n" not in flat
    assert len(flat) == 15


def test_tiny_gpt2_matches_full_sequence_logits_and_batching():
    model = tiny_gpt2(vocab_size=V)
    gen = torch.Generator().manual_seed(0)
    probes = [
        item(
            tuple(torch.randint(0, 6, (2,), generator=gen).tolist()),
            tuple(torch.randint(0, 6, (2,), generator=gen).tolist()),
        )
        for _ in range(7)
    ]
    one, s1 = evaluate_reversal(model, {"test": probes}, batch_size=1)
    many, s7 = evaluate_reversal(model, {"test": probes}, batch_size=256)
    assert [(e["rank1"], e["rank2"]) for e in one] == [(e["rank1"], e["rank2"]) for e in many]
    assert s1["test"]["joint_nll"] == pytest.approx(s7["test"]["joint_nll"], rel=1e-5)
    # reference: one pass over the full 6-token sequence, ranks by sorting
    with torch.no_grad():
        for p, e in zip(probes, many):
            ids = torch.tensor([p["input_text"][0] + p["input_text"][1] + p["input_text"][2] + p["target_text"][0]])
            logits = model.lm_head(model(ids))[0]
            for position, target, rank in ((3, ids[0, 4], e["rank1"]), (4, ids[0, 5], e["rank2"])):
                order = logits[position].argsort(descending=True).tolist()
                assert order.index(int(target)) + 1 == rank
    assert not model.training


def test_reads_generated_seed_files(tmp_path):
    generate_reversal(
        tmp_path, n_learning=20, n_test=10, n_first=10, n_last=10, comb=3, n_relations=1, n_valid=4, seed=1
    )
    probes, vocab = load_probes(tmp_path / "valid.json", tmp_path / "vocab.json")
    assert set(probes) == {"train", "atomic", "test"} and all(len(v) == 4 for v in probes.values())
    _, summary = evaluate_reversal(tiny_gpt2(vocab_size=len(vocab)), probes)
    for split in ("train", "atomic", "test"):
        assert 0 < summary[split]["mrr"] <= 1 and summary[split]["joint_nll"] > 0


@pytest.mark.parametrize(
    "valid, message",
    [
        ([], "expected an object with lists under train, atomic, test"),
        ({"test": {}}, r"valid.json\[test\]: expected a list"),
        (
            {"test": [{"input_text": [[0, 1], [6], [7]], "target_text": [[0, 99]]}]},
            r"valid.json\[test\]\[0\]: .*ids < 8",
        ),
        (
            {"atomic": [item((1, 2)), {"input_text": [[0], [6], [7]], "target_text": [[0, 1]]}]},
            r"valid.json\[atomic\]\[1\]",
        ),
    ],
)
def test_bad_probe_files(tmp_path, valid, message):
    (tmp_path / "vocab.json").write_text(json.dumps({f"t{i}": i for i in range(V)}))
    (tmp_path / "valid.json").write_text(json.dumps(valid))
    with pytest.raises(ValueError, match=message):
        load_probes(tmp_path / "valid.json", tmp_path / "vocab.json")


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json: no such file"):
        load_probes(tmp_path / "valid.json", tmp_path / "vocab.json")
    (tmp_path / "vocab.json").write_text("{broken")
    with pytest.raises(ValueError, match="vocab.json: not JSON"):
        load_probes(tmp_path / "valid.json", tmp_path / "vocab.json")


def test_flat_metrics_nested_and_flat_summaries():
    nested = {"test": {"n": 3, "mrr": 0.5, "joint_nll": float("nan")}, "model": "dir"}
    flat = flat_metrics(nested)
    assert flat["eval/test/mrr"] == 0.5 and math.isnan(flat["eval/test/joint_nll"]) and len(flat) == 2
    gsm8k = {"n": 10, "accuracy": 0.3, "protocol": "default", "truncated": 2, "ok": True}
    assert flat_metrics(gsm8k, prefix="eval/gsm8k/") == {"eval/gsm8k/accuracy": 0.3, "eval/gsm8k/truncated": 2}

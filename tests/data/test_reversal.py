import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from jepa.data.reversal import (
    REVERSAL_PRESETS,
    generate_reversal,
    load_reversal,
    relation_inverses,
    reversal_vocab,
    reverse_item,
)

REPO = Path(__file__).resolve().parents[2]
# 200 entities over 20 + 20 name tokens; n_valid equals the atomic/test pool (3 * 80 / 2), so valid.json holds
# every atomic and every test fact and the reverse relation between them can be checked exhaustively.
TINY = dict(n_learning=120, n_test=80, n_first=20, n_last=20, comb=10, n_relations=3, n_valid=120)


def key(item: dict) -> tuple:
    (e1, (r,), (m,)), (e2,) = item["input_text"], item["target_text"]
    return (tuple(e1), r, m, tuple(e2))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    summary = generate_reversal(out, seed=3, **TINY)
    return out, summary, *load_reversal(out)


def test_vocab_ids_match_spec_at_paper_size():
    vocab = reversal_vocab(8_000, 8_000, 6)
    assert len(vocab) == 16_015
    assert (vocab["<f_0>"], vocab["<f_2>"], vocab["<f_10>"], vocab["<f_7999>"]) == (0, 2, 10, 7999)
    assert (vocab["<l_0>"], vocab["<l_7999>"]) == (8000, 15999)
    assert vocab["<mask>"] == 16000
    assert [vocab[f"<r_{i}>"] for i in range(6)] == [16001 + 2 * i for i in range(6)]
    assert [vocab[f"<r_{i}_inv>"] for i in range(6)] == [16002 + 2 * i for i in range(6)]
    assert (vocab["<pad>"], vocab["<PRED>"]) == (16013, 16014)
    assert list(vocab.values()) == list(range(16_015))


def test_counts_and_item_shape(tiny):
    out, summary, train, valid, vocab = tiny
    assert summary["train_items"] == len(train) == 3 * (120 + 40)
    assert Counter(item["type"] for item in train) == {"train": 360, "atomic": 120}
    assert {k: len(v) for k, v in valid.items()} == {"train": 120, "atomic": 120, "test": 120}
    assert json.loads((out / "vocab.json").read_text()) == vocab
    item = train[0]
    assert set(item) == {"input_text", "target_text", "type"}
    assert item["input_text"][2] == [vocab["<mask>"]]


def test_names_shared_by_exactly_comb_entities(tiny):
    _, _, train, _, vocab = tiny
    entities = {tuple(it["input_text"][0]) for it in train} | {tuple(it["target_text"][0]) for it in train}
    assert len(entities) == 200  # every entity occurs, and no (first, last) pair is repeated
    firsts, lasts = Counter(f for f, _ in entities), Counter(la for _, la in entities)
    assert set(firsts) == set(range(20)) and set(lasts) == set(range(20, 40))
    assert set(firsts.values()) == {10} and set(lasts.values()) == {10}


def test_learning_entities_have_n_relations_train_facts_both_directions(tiny):
    _, _, train, _, vocab = tiny
    inverses = relation_inverses(vocab)
    facts = [it for it in train if it["type"] == "train"]
    subjects = Counter(tuple(it["input_text"][0]) for it in facts)
    assert len(subjects) == 120 and set(subjects.values()) == {3}
    keys = {key(it) for it in facts}
    assert all(key(reverse_item(it, inverses)) in keys for it in facts)
    # each learning entity is in exactly one pair per relation pair
    for r in range(3):
        forward = [it for it in facts if it["input_text"][1] == [vocab[f"<r_{r}>"]]]
        assert len(forward) == 60
    atomic_entities = {tuple(it["input_text"][0]) for it in train if it["type"] == "atomic"}
    assert not atomic_entities & set(subjects)  # learning and test entities are disjoint


def test_atomic_and_test_are_exact_reverses(tiny):
    _, _, train, valid, vocab = tiny
    inverses = relation_inverses(vocab)
    atomic = [it for it in train if it["type"] == "atomic"]
    assert sorted(map(key, valid["atomic"])) == sorted(map(key, atomic))
    reversed_atomic = sorted(key(reverse_item(it, inverses, "test")) for it in atomic)
    assert reversed_atomic == sorted(map(key, valid["test"]))
    assert not {key(it) for it in valid["test"]} & {key(it) for it in train}  # test facts are held out
    # both directions occur among atomic facts (the direction is random per pair)
    relations = Counter(it["input_text"][1][0] for it in atomic)
    assert all(relations[vocab[f"<r_{r}>"]] > 0 and relations[vocab[f"<r_{r}_inv>"]] > 0 for r in range(3))


def test_valid_probes_come_from_the_right_splits(tmp_path):
    generate_reversal(tmp_path, seed=1, **REVERSAL_PRESETS["small"])
    train, valid, vocab = load_reversal(tmp_path)
    inverses = relation_inverses(vocab)
    by_type = {t: {key(it) for it in train if it["type"] == t} for t in ("train", "atomic")}
    assert all(len(v) == 200 for v in valid.values())
    assert all(it["type"] == "train" and key(it) in by_type["train"] for it in valid["train"])
    assert all(it["type"] == "atomic" and key(it) in by_type["atomic"] for it in valid["atomic"])
    for it in valid["test"]:
        assert it["type"] == "test" and key(it) not in by_type["train"] | by_type["atomic"]
        assert key(reverse_item(it, inverses)) in by_type["atomic"]
    assert len({key(it) for it in valid["train"]}) == 200  # drawn without replacement


def test_deterministic(tmp_path):
    small = dict(REVERSAL_PRESETS["small"])
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_reversal(tmp_path / name, seed=seed, **small)
    for file in ("train.json", "valid.json", "vocab.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert (tmp_path / "a" / "train.json").read_bytes() != (tmp_path / "c" / "train.json").read_bytes()
    assert (tmp_path / "a" / "valid.json").read_bytes() != (tmp_path / "c" / "valid.json").read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(n_last=21), "n_first .20. must equal n_last"),
        (dict(n_test=90), r"n_learning \+ n_test .* must equal n_first \* comb"),
        (dict(n_learning=119, n_test=81), "must be even"),
        (dict(n_valid=121), "n_valid .121. exceeds the 120 atomic facts"),
        (dict(n_first=5, n_last=5, comb=40), r"comb .40. cannot exceed n_last"),
        (dict(n_relations=0), "n_relations must be a positive integer"),
    ],
)
def test_bad_sizes(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        generate_reversal(tmp_path, **{**TINY, **change})
    assert not (tmp_path / "train.json").exists()


# ----------------------------------------------------------------------------------------------- loading


@pytest.fixture
def copy_of_tiny(tiny, tmp_path):
    for name in ("train.json", "valid.json", "vocab.json"):
        (tmp_path / name).write_bytes((tiny[0] / name).read_bytes())
    return tmp_path


def edit(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def test_load_missing_file(copy_of_tiny):
    (copy_of_tiny / "valid.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"valid\.json: no such file"):
        load_reversal(copy_of_tiny)


def test_load_not_json(copy_of_tiny):
    (copy_of_tiny / "train.json").write_text("[{")
    with pytest.raises(ValueError, match=r"train\.json: not JSON"):
        load_reversal(copy_of_tiny)


@pytest.mark.parametrize(
    ("file", "mutate", "message"),
    [
        ("train.json", lambda o: o[3].update(input_text=[[1, 2], [41]]), r"train\.json\[3\]: bad shape"),
        ("train.json", lambda o: o[5]["target_text"][0].__setitem__(1, 99_999), r"train\.json\[5\]: bad shape or id"),
        ("train.json", lambda o: o[0]["input_text"].__setitem__(2, [0]), r"train\.json\[0\]: third input token"),
        ("train.json", lambda o: o[1]["input_text"].__setitem__(1, [3]), r"train\.json\[1\]: relation id 3"),
        ("train.json", lambda o: o[2].update(type="test"), r"train\.json\[2\]: type 'test'"),
        ("valid.json", lambda o: o["test"][12].pop("target_text"), r"valid\.json\[test\]\[12\]: bad shape"),
        ("valid.json", lambda o: o.pop("atomic"), r"valid\.json: expected an object with lists"),
        ("vocab.json", lambda o: o.update({"<extra>": 7}), r"vocab\.json: ids must be exactly"),
        ("vocab.json", lambda o: o.pop("<PRED>"), r"vocab\.json: missing token <PRED>"),
    ],
)
def test_load_bad_content_names_file_and_index(copy_of_tiny, file, mutate, message):
    edit(copy_of_tiny / file, mutate)
    with pytest.raises(ValueError, match=message):
        load_reversal(copy_of_tiny)


def test_relation_inverses(tiny):
    vocab = tiny[4]
    inverses = relation_inverses(vocab)
    assert inverses[vocab["<r_0>"]] == vocab["<r_0_inv>"] and inverses[vocab["<r_2_inv>"]] == vocab["<r_2>"]
    assert len(inverses) == 6


# -------------------------------------------------------------------------------------------------- CLI


def run_prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "prepare.py"), *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


@pytest.mark.slow  # a new process
def test_cli_reversal_success_and_error(tmp_path):
    ok = run_prepare("reversal", "--preset", "small", "--out", str(tmp_path / "r"), "--seed", "2")
    assert ok.returncode == 0, ok.stderr
    assert "5000 training items" in ok.stdout
    assert load_reversal(tmp_path / "r")[0]
    skipped = run_prepare("reversal", "--preset", "small", "--out", str(tmp_path / "r"))
    assert "exists, skipping" in skipped.stdout

    bad = run_prepare("reversal", "--preset", "small", "--out", str(tmp_path / "bad"), "--n-test", "10")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("error: reversal: n_learning")
    assert "Traceback" not in bad.stderr


def test_load_not_utf8(copy_of_tiny):
    (copy_of_tiny / "vocab.json").write_bytes(b'{"caf\xe9": 0}')
    with pytest.raises(ValueError, match=r"vocab\.json: not UTF-8 \(byte 6\)"):
        load_reversal(copy_of_tiny)

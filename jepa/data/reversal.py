"""Reversal-curse data (docs/method.md §5): a seeded, deterministic port of the binding paper's generator.

Files are written in the seed's format:

- ``vocab.json``: token → id. Ids: first-name tokens ``<f_0>..<f_{F-1}>`` are ``0..F-1`` and last-name tokens
  ``<l_0>..<l_{L-1}>`` are ``F..F+L-1`` (ordered by kind, then by numeric index — not by string, so
  ``<f_2>`` comes before ``<f_10>``); then ``<mask>`` = F+L, ``<r_i>`` = F+L+1+2i, ``<r_i_inv>`` = F+L+2+2i,
  ``<pad>``, ``<PRED>``. Paper sizes: 16,000 names, ``<mask>`` 16000, ``<pad>`` 16013, ``<PRED>`` 16014.
- ``train.json``: a list of items (``train`` facts, both directions, and ``atomic`` facts), shuffled::

      {"input_text": [[e1_f, e1_l], [r], [mask]], "target_text": [[e2_f, e2_l]], "type": "train"}

  (all values are vocab ids).
- ``valid.json``: ``{"train": [...], "atomic": [...], "test": [...]}`` — ``n_valid`` probes each, drawn without
  replacement from the train facts, the atomic facts and the held-out test facts respectively.

Same parameters and seed ⇒ byte-identical files (numpy ``default_rng(seed)``, fixed draw order).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from jepa.io import read_json

REVERSAL_FILES = ("train.json", "valid.json", "vocab.json")
PROBE_SPLITS = ("train", "atomic", "test")

# "paper": docs/method.md §5 / the binding paper (390,000 training items; generated in ~5 s).
# "small": CPU runs (`make demo` on 2 cores). It keeps the paper's structure — comb=10, so each name token is
# still shared by 10 entities and names are not unique keys — at 1/26 of the entities: 3,000 entities over
# 300+300 name tokens, 2 relation pairs, so 2 × (2,000 + 500) = 5,000 training items (~20 batches of 256 per
# epoch), a 607-token vocabulary, and 200 probes per split (pool: 1,000 atomic/test facts). Compute, not data,
# bounds a CPU run: one fwd+bwd of a d=768 4-layer GPT-2 at batch 256 took ~6.7 s on 2 (shared) cores, so
# the demo config should use a narrower model (d=128..256) and expect the pipeline to run, not memorisation.
REVERSAL_PRESETS: dict[str, dict[str, int]] = {
    "paper": dict(n_learning=50_000, n_test=30_000, n_first=8_000, n_last=8_000, comb=10, n_relations=6, n_valid=3_000),
    "small": dict(n_learning=2_000, n_test=1_000, n_first=300, n_last=300, comb=10, n_relations=2, n_valid=200),
    # The reversal-curse experiment (docs/results.md) and `make demo`: a d=128 GPT-2 memorises it in ~40 CPU epochs.
    "tiny": dict(n_learning=400, n_test=200, n_first=60, n_last=60, comb=10, n_relations=2, n_valid=100),
}

_MAX_REPAIR_ROUNDS = 1_000


def reversal_vocab(n_first: int, n_last: int, n_relations: int) -> dict[str, int]:
    """The token → id table described in the module docstring (insertion order = id order)."""
    tokens = [f"<f_{i}>" for i in range(n_first)] + [f"<l_{j}>" for j in range(n_last)] + ["<mask>"]
    for i in range(n_relations):
        tokens += [f"<r_{i}>", f"<r_{i}_inv>"]
    tokens += ["<pad>", "<PRED>"]
    return {token: idx for idx, token in enumerate(tokens)}


def _check_sizes(
    *, n_learning: int, n_test: int, n_first: int, n_last: int, comb: int, n_relations: int, n_valid: int
) -> None:
    sizes = dict(locals())  # every argument by name, for the messages
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"reversal: {name} must be a positive integer, got {value!r}")
    if n_first != n_last:
        raise ValueError(
            f"reversal: n_first ({n_first}) must equal n_last ({n_last}): each name token is shared "
            "by exactly comb entities, so n_first * comb = n_last * comb = number of entities"
        )
    if n_learning + n_test != n_first * comb:
        raise ValueError(
            f"reversal: n_learning + n_test ({n_learning} + {n_test} = {n_learning + n_test}) must "
            f"equal n_first * comb ({n_first} * {comb} = {n_first * comb})"
        )
    if n_learning % 2 or n_test % 2:
        raise ValueError(
            f"reversal: n_learning ({n_learning}) and n_test ({n_test}) must be even (entities are paired)"
        )
    if comb > n_last:
        raise ValueError(
            f"reversal: comb ({comb}) cannot exceed n_last ({n_last}) without repeating a (first, last) pair"
        )
    pools = {"train": n_relations * n_learning, "atomic": n_relations * n_test // 2}
    for split, pool in pools.items():
        if n_valid > pool:
            raise ValueError(f"reversal: n_valid ({n_valid}) exceeds the {pool} {split} facts to draw probes from")


def _draw_names(rng: np.random.Generator, n_first: int, n_last: int, comb: int) -> tuple[np.ndarray, np.ndarray]:
    """Entity → (first index, last index): every name used by exactly ``comb`` entities, no repeated pair.

    A random bijection between the comb copies of each first name and the comb copies of each last name,
    then any repeated pair is repaired by swapping its last name with a random entity's (a swap keeps every
    last name's count at comb), until none is left.
    """
    first = np.repeat(np.arange(n_first), comb)
    last = rng.permutation(np.repeat(np.arange(n_last), comb))
    n = len(first)
    for _ in range(_MAX_REPAIR_ROUNDS):
        key = first * n_last + last
        order = np.argsort(key, kind="stable")
        repeated = order[1:][key[order][1:] == key[order][:-1]]
        if len(repeated) == 0:
            return first, last
        partners = rng.integers(0, n, size=len(repeated))
        for i, j in zip(repeated.tolist(), partners.tolist()):
            last[i], last[j] = last[j], last[i]
    raise ValueError(
        f"reversal: could not draw names without repeated pairs (n_last={n_last}, comb={comb}); "
        "use more name tokens or a smaller comb"
    )


def _items(
    facts: np.ndarray, kind: str, *, first_id: np.ndarray, last_id: np.ndarray, mask_id: int
) -> list[dict[str, Any]]:
    """facts [M, 3] int (e1 entity, relation id, e2 entity) → seed-format items of type ``kind``."""
    rows = np.stack(
        [first_id[facts[:, 0]], last_id[facts[:, 0]], facts[:, 1], first_id[facts[:, 2]], last_id[facts[:, 2]]], axis=1
    ).tolist()
    return [
        {"input_text": [[e1f, e1l], [r], [mask_id]], "target_text": [[e2f, e2l]], "type": kind}
        for e1f, e1l, r, e2f, e2l in rows
    ]


def _write_json(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    os.replace(tmp, path)


def generate_reversal(
    out_dir: str | Path,
    n_learning: int = 50_000,
    n_test: int = 30_000,
    n_first: int = 8_000,
    n_last: int = 8_000,
    comb: int = 10,
    n_relations: int = 6,
    n_valid: int = 3_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``train.json``, ``valid.json``, ``vocab.json`` (seed format, see module docstring) to ``out_dir``.

    Learning entities (EA): per relation pair, shuffled into n_learning/2 pairs, both directions ``train``, so
    each learning entity is the subject of exactly ``n_relations`` train facts. Test entities (EB): per pair,
    n_test/2 pairs, one random direction ``atomic`` (in train.json), the other ``test`` (held out; probes only).
    Raises ValueError for inconsistent sizes. Returns a summary (counts, vocab size, seconds).
    """
    start = time.perf_counter()
    _check_sizes(n_learning=n_learning, n_test=n_test, n_first=n_first, n_last=n_last, comb=comb,
                 n_relations=n_relations, n_valid=n_valid)  # fmt: skip
    rng = np.random.default_rng(seed)
    vocab = reversal_vocab(n_first, n_last, n_relations)
    mask_id = vocab["<mask>"]

    first, last = _draw_names(rng, n_first, n_last, comb)
    first_id, last_id = first, last + n_first
    entities = rng.permutation(n_learning + n_test)
    learning, held = entities[:n_learning], entities[n_learning:]

    train_facts, atomic_facts, test_facts = [], [], []
    for i in range(n_relations):
        r, r_inv = vocab[f"<r_{i}>"], vocab[f"<r_{i}_inv>"]
        pairs = rng.permutation(learning).reshape(-1, 2)
        forward = np.stack([pairs[:, 0], np.full(len(pairs), r), pairs[:, 1]], axis=1)
        backward = np.stack([pairs[:, 1], np.full(len(pairs), r_inv), pairs[:, 0]], axis=1)
        train_facts.append(np.concatenate([forward, backward]))

        pairs = rng.permutation(held).reshape(-1, 2)
        forward = np.stack([pairs[:, 0], np.full(len(pairs), r), pairs[:, 1]], axis=1)
        backward = np.stack([pairs[:, 1], np.full(len(pairs), r_inv), pairs[:, 0]], axis=1)
        atomic_is_forward = rng.integers(0, 2, size=len(pairs)).astype(bool)[:, None]
        atomic_facts.append(np.where(atomic_is_forward, forward, backward))
        test_facts.append(np.where(atomic_is_forward, backward, forward))

    facts = {
        "train": np.concatenate(train_facts),
        "atomic": np.concatenate(atomic_facts),
        "test": np.concatenate(test_facts),
    }
    items = {kind: _items(f, kind, first_id=first_id, last_id=last_id, mask_id=mask_id) for kind, f in facts.items()}

    train_items = items["train"] + items["atomic"]
    train_items = [train_items[k] for k in rng.permutation(len(train_items)).tolist()]
    valid = {}
    for split in PROBE_SPLITS:
        chosen = np.sort(rng.choice(len(items[split]), size=n_valid, replace=False)).tolist()
        valid[split] = [items[split][k] for k in chosen]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "vocab.json", vocab)
    _write_json(out_dir / "valid.json", valid)
    _write_json(out_dir / "train.json", train_items)  # last: its presence means the set is complete
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "entities": n_learning + n_test,
        "train_items": len(train_items),
        "items_by_type": {kind: len(items[kind]) for kind in PROBE_SPLITS},
        "valid_probes": {split: len(v) for split, v in valid.items()},
        "vocab_size": len(vocab),
        "seconds": round(time.perf_counter() - start, 2),
    }


# ------------------------------------------------------------------------------------------------ loading


def relation_inverses(vocab: dict[str, int]) -> dict[int, int]:
    """Relation id → its inverse's id, both ways (``<r_i>`` ↔ ``<r_i_inv>``), from the token names."""
    inverses = {}
    for token, idx in vocab.items():
        match = re.fullmatch(r"<r_(\d+)>", token)
        if match:
            inverse = f"<r_{match.group(1)}_inv>"
            if inverse not in vocab:
                raise ValueError(f"vocab: {token} has no {inverse}")
            inverses[idx] = vocab[inverse]
            inverses[vocab[inverse]] = idx
    return inverses


def reverse_item(item: dict[str, Any], inverses: dict[int, int], kind: str | None = None) -> dict[str, Any]:
    """The reverse fact of an item: entities swapped, relation flipped; ``type`` = ``kind`` or unchanged."""
    (e1, (r,), mask), (e2,) = item["input_text"], item["target_text"]
    return {
        "input_text": [list(e2), [inverses[r]], list(mask)],
        "target_text": [list(e1)],
        "type": kind or item["type"],
    }


def _is_ids(value: object, length: int, vocab_size: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == length
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < vocab_size for v in value)
    )


def _check_item(
    item: object,
    where: str,
    vocab_size: int,
    *,
    mask_id: int | None = None,
    relation_ids: set[int] | None = None,
    types: tuple[str, ...] | None = None,
) -> None:
    """Raise ValueError naming ``where`` unless ``item`` has the seed's item shape with ids < vocab_size; the
    ``<mask>`` position, the relation and the ``type`` are checked when given."""
    shape = (
        '{"input_text": [[e1_f, e1_l], [r], [mask]], "target_text": [[e2_f, e2_l]], "type": ...} '
        f"with ids < {vocab_size}"
    )
    if not isinstance(item, dict):
        raise ValueError(f"{where}: not an object; expected {shape}")
    inp, tgt = item.get("input_text"), item.get("target_text")
    if not (
        isinstance(inp, list)
        and len(inp) == 3
        and _is_ids(inp[0], 2, vocab_size)
        and _is_ids(inp[1], 1, vocab_size)
        and _is_ids(inp[2], 1, vocab_size)
        and isinstance(tgt, list)
        and len(tgt) == 1
        and _is_ids(tgt[0], 2, vocab_size)
    ):
        raise ValueError(f"{where}: bad shape or id; expected {shape}")
    if mask_id is not None and inp[2][0] != mask_id:
        raise ValueError(f"{where}: third input token is {inp[2][0]}, expected <mask> id {mask_id}")
    if relation_ids is not None and inp[1][0] not in relation_ids:
        raise ValueError(f"{where}: relation id {inp[1][0]} is not a relation token")
    if types is not None and item.get("type") not in types:
        raise ValueError(f"{where}: type {item.get('type')!r} is not one of {', '.join(types)}")


def _read_probes(
    valid_path: Path, vocab_size: int, require_all: bool, hint: str = "", **checks: Any
) -> dict[str, list[dict[str, Any]]]:
    """The probe splits of a ``valid.json``, every item checked (``_check_item``); at least one split, or all
    three with ``require_all``."""
    valid = read_json(valid_path, hint)
    present = [s for s in PROBE_SPLITS if isinstance(valid, dict) and s in valid]
    if not present or (require_all and len(present) < len(PROBE_SPLITS)):
        raise ValueError(f"{valid_path}: expected an object with lists under {', '.join(PROBE_SPLITS)}")
    for split in present:
        if not isinstance(valid[split], list):
            raise ValueError(f"{valid_path}[{split}]: expected a list of items")
        for k, item in enumerate(valid[split]):
            _check_item(item, f"{valid_path}[{split}][{k}]", vocab_size, **checks)
    return {split: valid[split] for split in present}


def load_probes(
    valid_path: str | Path, vocab_path: str | Path
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Probes to score a model on: a seed-format ``valid.json`` (any of ``train``, ``atomic``, ``test``) and the
    ``vocab.json`` its ids refer to (any token names). Checks shapes and that every id is a vocabulary id; a
    bad item raises ValueError naming the file and ``[split][index]``."""
    valid_path, vocab_path = Path(valid_path), Path(vocab_path)
    vocab = read_json(vocab_path)
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise ValueError(f"{vocab_path}: expected an object mapping tokens to integer ids")
    vocab_size = max(vocab.values(), default=-1) + 1
    return _read_probes(valid_path, vocab_size, require_all=False), vocab


def load_reversal(data_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Read ``train.json``, ``valid.json``, ``vocab.json`` in the seed's format (whoever wrote them).

    Returns ``(train_items, valid, vocab)`` with ``valid`` = ``{"train", "atomic", "test"}`` → items. Every item
    is validated (shape, ids in range, ``<mask>`` in third place, a relation token); a bad one raises
    ValueError naming the file and the index (``valid.json[test][12]``). A missing file → FileNotFoundError.
    """
    data_dir = Path(data_dir)
    vocab_path = data_dir / "vocab.json"
    hint = f" (expected {', '.join(REVERSAL_FILES)} from prepare.py reversal)"
    vocab = read_json(vocab_path, hint)
    if not isinstance(vocab, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
        raise ValueError(f"{vocab_path}: expected an object mapping token strings to integer ids")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"{vocab_path}: ids must be exactly 0..{len(vocab) - 1}, each used once")
    for token in ("<mask>", "<pad>", "<PRED>"):
        if token not in vocab:
            raise ValueError(f"{vocab_path}: missing token {token}")
    try:
        relation_ids = set(relation_inverses(vocab))
    except ValueError as exc:
        raise ValueError(f"{vocab_path}: {exc}") from None
    if not relation_ids:
        raise ValueError(f"{vocab_path}: no relation tokens <r_i>/<r_i_inv>")
    mask_id, vocab_size = vocab["<mask>"], len(vocab)

    train_path = data_dir / "train.json"
    train_items = read_json(train_path, hint)
    if not isinstance(train_items, list):
        raise ValueError(f"{train_path}: expected a list of items")
    for k, item in enumerate(train_items):
        _check_item(item, f"{train_path}[{k}]", vocab_size, mask_id=mask_id, relation_ids=relation_ids,
                    types=("train", "atomic"))  # fmt: skip

    valid = _read_probes(
        data_dir / "valid.json",
        vocab_size,
        require_all=True,
        hint=hint,
        mask_id=mask_id,
        relation_ids=relation_ids,
        types=PROBE_SPLITS,
    )
    return train_items, valid, vocab

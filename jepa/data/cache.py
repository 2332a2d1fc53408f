"""The row cache: a dataset's laid-out rows written once, memory-mapped at every later start (issue 28 §2).

An entry is `ROOT/<key>/`: one `.npy` file per `RowStore` array and `manifest.json` (the dataset's other facts,
the rows' shared structures, and each array file's sha256). The key is a sha256 over everything the rows depend
on (`cache_key`): the dataset kind, each input file's path and content digest (the data, the tokenizer files), the
layout config, the data settings that change rows, and the digest of the library source that tokenizes and lays
rows out, so an edit to a data file, a tokenizer, a setting or the layout code makes a new key: a stale entry is
never found, let alone used.

An entry is written into a temporary directory and renamed into place, so a reader sees a whole entry or none.
Reading checks every array file against its sha256 in the manifest; an entry that fails (truncated, edited, a
half-copied directory) raises `CorruptCache` with the reason, and the caller rebuilds it with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from jepa.data.rowstore import ARRAY_DTYPES, RowStore

CACHE_FORMAT = 1
# The library source the rows depend on (relative to the package): any edit makes new keys.
ROW_SOURCES = ("data", "templates", "tokenizer.py", "losses.py")


class CorruptCache(Exception):
    """A cache entry that cannot be trusted: its message says which file and why."""


def default_cache_root() -> Path:
    """$JEPA_CACHE_DIR, else $XDG_CACHE_HOME/jepa/rows, else ~/.cache/jepa/rows."""
    if os.environ.get("JEPA_CACHE_DIR"):
        return Path(os.environ["JEPA_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jepa" / "rows"


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def code_digest() -> str:
    """sha256 over the library source files that tokenize and lay out rows (`ROW_SOURCES`), in path order."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in ROW_SOURCES:
        path = package / name
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(source.relative_to(package)).encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def cache_key(*, kind: str, inputs: list[Path], settings: dict[str, Any]) -> str:
    """The entry name for rows of `kind` laid out from the files `inputs` under `settings` (JSON-able)."""
    parts = {
        "format": CACHE_FORMAT,
        "kind": kind,
        "inputs": {str(p.resolve()): file_digest(p) for p in inputs},
        "settings": settings,
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class RowCache:
    """Entries under `root` (created on the first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str) -> tuple[RowStore, dict[str, Any]] | None:
        """(rows, the dataset facts written with them), memory-mapped; None when there is no entry; CorruptCache
        when there is one that does not check out."""
        entry = self.path(key)
        if not entry.exists():
            return None
        try:
            manifest = json.loads((entry / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise CorruptCache(f"{entry / 'manifest.json'}: unreadable ({exc})") from None
        if manifest.get("key") != key or manifest.get("format") != CACHE_FORMAT:
            raise CorruptCache(f"{entry / 'manifest.json'}: written for another key or format")
        arrays = {}
        for name, dtype in ARRAY_DTYPES.items():
            path = entry / f"{name}.npy"
            expected = manifest.get("arrays", {}).get(name)
            if not path.is_file() or expected is None:
                raise CorruptCache(f"{path}: missing")
            if file_digest(path) != expected:
                raise CorruptCache(f"{path}: its sha256 does not match the manifest (changed or truncated)")
            try:
                arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise CorruptCache(f"{path}: unreadable ({exc})") from None
            if arrays[name].dtype != np.dtype(dtype):
                raise CorruptCache(f"{path}: dtype {arrays[name].dtype}, expected {np.dtype(dtype)}")
        structures = [(tuple(names), tuple(tuple(v) for v in visible)) for names, visible in manifest["structures"]]
        return RowStore(arrays, structures), manifest["dataset"]

    def write(self, key: str, rows: RowStore, dataset: dict[str, Any]) -> Path:
        """Write the entry for `key` (replacing a corrupt one); OSError when the root is not writable."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.root))
        try:
            digests = {}
            for name, values in rows.arrays.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(values), allow_pickle=False)
                digests[name] = file_digest(tmp / f"{name}.npy")
            manifest = {
                "format": CACHE_FORMAT,
                "key": key,
                "arrays": digests,
                "structures": [[list(names), [list(v) for v in visible]] for names, visible in rows.structures],
                "dataset": dataset,
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest))
            entry = self.path(key)
            if entry.exists():  # a corrupt entry the caller is rebuilding, or one another process just wrote
                shutil.rmtree(entry, ignore_errors=True)
            try:
                tmp.rename(entry)
            except OSError:
                if not (entry / "manifest.json").is_file():  # not a concurrent writer's complete entry
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return entry

"""Chat data in the formats people have: the record layouts (registered units) and the file types that hold them.

Record formats (`CHAT_FORMATS`), each a function record -> {"messages": [...]} (other keys kept):

    messages   OpenAI style: {"messages": [{"role", "content"}, ...]} (what training reads)
    sharegpt   {"conversations": [{"from": "human" | "gpt" | "system", "value": ...}, ...]}
    alpaca     {"instruction", "input" (optional), "output"}: the user turn is the instruction, a blank line and
               the input when there is one; the assistant turn is the output
    fields     a user-named mapping (`--fields user=question,assistant=answer[,system=context]`)
    auto       per record, the first of messages / sharegpt / alpaca whose keys it has

File types (`iter_records`): .jsonl (one record a line), .json (an array of records), .csv (a header row, then a
record a row) and .parquet (needs the `parquet` extra: `pip install jepa[parquet]`). Every record that cannot be
read or converted is one line naming FILE:LINE (jsonl, csv), FILE[index] (json) or FILE row N (parquet), or is
skipped and counted with `--skip-bad`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from jepa.data.sources import BadRecord, SkippedLines, _convert_files, assistant_steps, chat_record, iter_jsonl

ChatFormat = Callable[[dict[str, Any], Mapping[str, str]], dict[str, Any]]
CHAT_FORMATS: dict[str, ChatFormat] = {}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "system": "system"}  # fmt: skip


def register_format(name: str) -> Callable[[ChatFormat], ChatFormat]:
    """Decorator: add a record format to CHAT_FORMATS under `name`."""

    def add(fn: ChatFormat) -> ChatFormat:
        if name in CHAT_FORMATS:
            raise ValueError(f"chat format {name!r} is registered twice")
        CHAT_FORMATS[name] = fn
        return fn

    return add


def _text(record: dict[str, Any], key: str, *, optional: bool = False) -> str:
    value = record.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise BadRecord(f"missing field {key!r}", f"expected a string field {key!r}, got {type(value).__name__}")
    return value


@register_format("messages")
def from_messages(record: dict[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    return record


@register_format("sharegpt")
def from_sharegpt(record: dict[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise BadRecord("no conversations", 'expected "conversations": a non-empty list of {"from", "value"}')
    messages = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise BadRecord("bad turn", f"conversations[{index}]: expected {{'from', 'value'}} with a string value")
        role = SHAREGPT_ROLES.get(str(turn.get("from")))
        if role is None:
            raise BadRecord("bad role", f"conversations[{index}]: 'from' {turn.get('from')!r} is not one of "
                                        f"{tuple(SHAREGPT_ROLES)}")  # fmt: skip
        messages.append({"role": role, "content": turn["value"]})
    rest = {k: v for k, v in record.items() if k != "conversations"}
    return {**rest, "messages": messages}


@register_format("alpaca")
def from_alpaca(record: dict[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    instruction, extra = _text(record, "instruction"), _text(record, "input", optional=True)
    user = instruction + ("\n\n" + extra if extra.strip() else "")
    rest = {k: v for k, v in record.items() if k not in ("instruction", "input", "output")}
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": _text(record, "output")}]
    return {**rest, "messages": messages}


@register_format("fields")
def from_fields(record: dict[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    if not {"user", "assistant"} <= set(fields):
        raise ValueError("--format fields needs --fields user=KEY,assistant=KEY[,system=KEY]")
    messages = [{"role": role, "content": _text(record, fields[role])}
                for role in ("system", "user", "assistant") if role in fields]  # fmt: skip
    rest = {k: v for k, v in record.items() if k not in fields.values()}
    return {**rest, "messages": messages}


@register_format("auto")
def from_any(record: dict[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    for keys, name in ((("messages",), "messages"), (("conversations",), "sharegpt"),
                       (("instruction", "output"), "alpaca")):  # fmt: skip
        if all(k in record for k in keys):
            return CHAT_FORMATS[name](record, fields)
    if fields:
        return from_fields(record, fields)
    hint = "name its fields with --format fields --fields user=KEY,assistant=KEY"
    raise BadRecord("unknown format", f"a record with none of messages / conversations / instruction+output ({hint})")


def parse_fields(text: str | None) -> dict[str, str]:
    """`user=question,assistant=answer` -> {"user": "question", "assistant": "answer"}; a bad item: ValueError."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        role, sep, key = item.partition("=")
        if not sep or role.strip() not in ("system", "user", "assistant") or not key.strip():
            raise ValueError(f"--fields {text!r}: expected ROLE=KEY items, ROLE one of system, user, assistant")
        out[role.strip()] = key.strip()
    return out


# ------------------------------------------------------------------------------------------------ file types
def iter_records(path: Path, skip_bad: bool, bad: SkippedLines) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) for every record of a .jsonl / .json / .csv / .parquet file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for line, record in iter_jsonl(path, (), skip_bad, bad):
            yield f"{path}:{line}", record
        return
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a JSON file ({' '.join(str(exc).split())[:120]})") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
        rows: Iterator[tuple[str, Any]] = ((f"{path}[{i}]", r) for i, r in enumerate(data))
    elif suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = iter([(f"{path}:{reader.line_num}", dict(r)) for r in reader])
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"{path}: reading parquet needs pyarrow: pip install 'jepa[parquet]'") from None
        table = pq.read_table(path).to_pylist()
        rows = ((f"{path} row {i + 1}", r) for i, r in enumerate(table))
    else:
        raise ValueError(f"{path}: unknown file type {path.suffix!r} (.jsonl, .json, .csv, .parquet)")
    for where, record in rows:
        if not isinstance(record, dict):
            if not skip_bad:
                raise ValueError(f"{where}: not a record (a JSON object), got {type(record).__name__}")
            bad.add("not an object", where)
            continue
        yield where, record


def prepare_chat(
    src_files: list[Path], out_dir: Path, skip_bad: bool = False, *, format: str = "auto",
    fields: Mapping[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Chat files (any file type above, records in `format`) -> checked chat records (`chat_record`), each input
    ``NAME.<ext>`` to ``out_dir/NAME.jsonl`` (e.g. the LLM-JEPA paper's NL-RX and NQ-Open files). The histogram
    counts the assistant answer's steps (paragraphs), what step mode would see."""
    if format not in CHAT_FORMATS:
        raise ValueError(f"--format {format!r}: expected one of {', '.join(CHAT_FORMATS)}")
    convert, mapping = CHAT_FORMATS[format], dict(fields or {})
    if format == "fields" and not {"user", "assistant"} <= set(mapping):
        raise ValueError("--format fields needs --fields user=KEY,assistant=KEY[,system=KEY]")

    def build(obj: dict[str, Any]) -> tuple[dict[str, Any], int]:
        record = chat_record(convert(obj, mapping))
        return record, len(assistant_steps(record))

    return _convert_files(src_files, out_dir, required=(), build=build, skip_bad=skip_bad, read=iter_records)

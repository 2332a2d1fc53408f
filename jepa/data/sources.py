"""Step-JEPA data sources → chat records (docs/method.md §3).

A prepared record is one JSON object per line::

    {"messages": [{"role": "system", "content": ...},
                  {"role": "user", "content": question},
                  {"role": "assistant", "content": step_1 + "\\n\\n" + step_2 + ...}],
     "answer": "72"}

``answer`` is the ground-truth string exactly as the source gives it (e.g. ``"1,080"``; evaluation normalises).
The assistant content is the steps joined by :data:`STEP_SEPARATOR`, and no step contains the separator
itself, so a layout recovers the steps with ``content.split(STEP_SEPARATOR)`` — character offsets inside the
assistant text only, never inside the chat template.

Bad input never crashes later in training: every bad line raises ``ValueError("path:LINE: reason")`` or, with
``skip_bad``, is skipped and counted by reason in :class:`SkippedLines`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

STEP_SEPARATOR = "\n\n"

# The seed's Step-JEPA system prompt, verbatim (docs/method.md §3).
SEED_SYSTEM_PROMPT = (
    "Please solve the problem step by step (separate steps with double newlines), but keep it short and put "
    "your final answer (do not include any other text or units) within \\boxed{}."
)

# Our GSM8K prompt describes exactly the format of the prepared assistant text: one short step per paragraph,
# blank lines between steps, and GSM8K's own "#### N" answer line last.
GSM8K_SYSTEM_PROMPT = (
    "Solve the math problem step by step. Write each step as one short line and separate steps with a blank "
    "line. End with a final line of the form #### <number>, giving only the number (no units or other text)."
)

GSM8K_URL = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/{split}.jsonl"
GSM8K_SPLITS = ("train", "test")

# A converter's per-record function: the record as written, and its number of assistant steps (a histogram).
RecordBuilder = Callable[[dict[str, Any]], tuple[dict[str, Any], int]]


class SkippedLines(Counter[str]):
    """Input lines skipped with ``skip_bad``: a count per short reason ("not JSON", "missing field 'answer'",
    ...) and the first few ``FILE:LINE`` of each reason, for a summary a person can act on."""

    FIRST = 3  # locations kept per reason

    def __init__(self) -> None:
        super().__init__()
        self.where: dict[str, list[str]] = {}

    def add(self, reason: str, where: str) -> None:
        self[reason] += 1
        examples = self.where.setdefault(reason, [])
        if len(examples) < self.FIRST:
            examples.append(where)

    def summary(self) -> str:
        """``2 not JSON (a.jsonl:3, a.jsonl:9); 1 no assistant message (a.jsonl:4)``, most frequent first."""
        parts = []
        for reason, n in self.most_common():
            where = self.where.get(reason, [])
            more = ", ..." if n > len(where) else ""
            parts.append(f"{n} {reason}" + (f" ({', '.join(where)}{more})" if where else ""))
        return "; ".join(parts)


_CALCULATOR = re.compile(r"<<[^<>]*>>")
# A paragraph opens a new step when it starts with "**Step N:**", "Step N:" or "N." (case-insensitive).
# "N." must be followed by whitespace or the end, so a paragraph opening with a decimal ("3.5 apples ...")
# is not mistaken for a numbered step.
_STEP_MARKER = re.compile(r"(?:\*\*\s*step\s*\d+\s*:\s*\*\*|step\s*\d+\s*:|\d+\.(?=\s|$))", re.IGNORECASE)
_PRE_MARKER_MIN_CHARS = 30  # text before the first marker is a step only if longer than this
_STEP_MIN_CHARS = 20  # steps of this many characters or fewer are dropped


class BadRecord(ValueError):
    """A record that cannot become a training example; ``reason`` is the short key used in :class:`SkippedLines`."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason


def _normalise_step(text: str) -> str:
    """Strip a step and collapse blank-line runs inside it to one newline, so it never contains the separator."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"\n\s*\n", "\n", text).strip()


def _chat(system: str, question: str, steps: list[str], answer: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question.strip()},
            {"role": "assistant", "content": STEP_SEPARATOR.join(steps)},
        ],
        "answer": answer,
    }


def assistant_steps(record: dict[str, Any]) -> list[str]:
    """The steps of a prepared record: its assistant content split on :data:`STEP_SEPARATOR`."""
    return record["messages"][-1]["content"].split(STEP_SEPARATOR)


# ---------------------------------------------------------------------------------------------------- GSM8K


def split_gsm8k_answer(answer: str, keep_calculator: bool = False) -> tuple[list[str], str]:
    """GSM8K ``answer`` text → (steps, final answer string).

    Steps are the non-empty lines before the last ``#### N`` line, calculator annotations ``<<48/2=24>>``
    removed unless ``keep_calculator``. Raises :class:`BadRecord` when there is no ``#### N`` line or N is empty.
    """
    lines = answer.replace("\r\n", "\n").split("\n")
    final_idx = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].strip().startswith("####")), None)
    if final_idx is None:
        raise BadRecord("empty answer", "empty answer: no '#### N' line")
    final = lines[final_idx].strip()[4:].strip()
    if not final:
        raise BadRecord("empty answer", "empty answer: nothing after '####'")
    steps = []
    for line in lines[:final_idx]:
        if not keep_calculator:
            line = _CALCULATOR.sub("", line)
        line = _normalise_step(line)
        if line:
            steps.append(line)
    return steps, final


def gsm8k_record(question: str, answer: str, keep_calculator: bool = False) -> dict[str, Any]:
    """One GSM8K example → chat record; assistant = steps, then the ``#### N`` line, all joined by "\\n\\n".

    Raises :class:`BadRecord` for an empty answer or fewer than 2 steps (the ``#### N`` line is not a step).
    """
    steps, final = split_gsm8k_answer(answer, keep_calculator)
    if len(steps) < 2:
        raise BadRecord("fewer than 2 steps", f"fewer than 2 steps ({len(steps)})")
    return _chat(GSM8K_SYSTEM_PROMPT, question, [*steps, f"#### {final}"], final)


# ------------------------------------------------------------------------------------ the seed's format


def split_seed_response(response: str) -> list[str]:
    """The seed's step rules (docs/method.md §3) applied to a ``deepseek_response``; returns the surviving steps.

    Paragraphs are split on "\\n\\n" and stripped; empty ones and those starting with ``<think>``/``</think>``
    are dropped. A paragraph starting with ``**Step N:**``, ``Step N:`` or ``N.`` opens a new step; unmarked
    paragraphs join the open step with a single "\\n" (a step may not contain "\\n\\n", the step separator).
    Unmarked paragraphs before the first marker form one step if longer than 30 characters. Steps of 20
    characters or fewer are then dropped.
    """
    paragraphs = [p.strip() for p in response.replace("\r\n", "\n").split(STEP_SEPARATOR)]
    before_marker: list[str] = []
    marked: list[list[str]] = []
    for paragraph in paragraphs:
        if not paragraph or paragraph.startswith(("<think>", "</think>")):
            continue
        if _STEP_MARKER.match(paragraph):
            marked.append([paragraph])
        elif marked:
            marked[-1].append(paragraph)
        else:
            before_marker.append(paragraph)
    steps = []
    preamble = _normalise_step("\n".join(before_marker))
    if len(preamble) > _PRE_MARKER_MIN_CHARS:
        steps.append(preamble)
    steps += [_normalise_step("\n".join(step)) for step in marked]
    return [step for step in steps if len(step) > _STEP_MIN_CHARS]


def _final_answer(answer: str) -> str:
    """The ground truth of a seed record: the text after the last ``####`` if there is one, else the whole."""
    return answer.rsplit("####", 1)[-1].strip()


def steps_record(question: str, answer: str, deepseek_response: str) -> dict[str, Any] | None:
    """One seed-format example → chat record with :data:`SEED_SYSTEM_PROMPT`, or None if < 2 steps survive.

    The assistant content is the steps only (the response's own ``\\boxed{}`` stays inside its last step);
    ``answer`` is the ground truth (text after ``####`` when the source answer is a full GSM8K solution).
    Raises :class:`BadRecord` for an empty answer.
    """
    final = _final_answer(answer)
    if not final:
        raise BadRecord("empty answer")
    steps = split_seed_response(deepseek_response)
    if len(steps) < 2:
        return None
    return _chat(SEED_SYSTEM_PROMPT, question, steps, final)


# ------------------------------------------------------------------------------------------ reading jsonl


def _bad(where: str, reason: str, detail: str | None, *, skip_bad: bool, bad: SkippedLines) -> None:
    """Count a bad line when skipping, else raise the one-line error naming file and line."""
    if not skip_bad:
        raise ValueError(f"{where}: {detail or reason}")
    bad.add(reason, where)


def iter_jsonl(
    path: str | Path, required: tuple[str, ...], skip_bad: bool, bad: SkippedLines
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each JSON-object line of ``path`` whose ``required`` fields are
    non-empty strings. Bad lines (not UTF-8, not JSON, not an object, a missing field) raise
    ``ValueError("path:LINE: reason")`` or are counted in ``bad``. Whitespace-only lines are not records and are
    ignored; a UTF-8 byte-order mark at the start of the file is accepted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open("rb") as lines:
        for line_number, raw in enumerate(lines, start=1):
            where = f"{path}:{line_number}"
            if line_number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                _bad(where, "not UTF-8", f"not UTF-8 (byte {exc.start + 1} of the line)", skip_bad=skip_bad, bad=bad)
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                _bad(where, "not JSON", f"not JSON ({exc.msg})", skip_bad=skip_bad, bad=bad)
                continue
            if not isinstance(obj, dict):
                _bad(where, "not an object", f"not a JSON object ({type(obj).__name__})", skip_bad=skip_bad, bad=bad)
                continue
            problem = None
            for field in required:
                if field not in obj:
                    problem = f"missing field '{field}'"
                elif not isinstance(obj[field], str):
                    problem = f"field '{field}' is not a string"
                elif not obj[field].strip():
                    problem = f"empty field '{field}'"
                if problem:
                    break
            if problem:
                _bad(where, problem, None, skip_bad=skip_bad, bad=bad)
                continue
            yield line_number, obj


def read_jsonl(
    path: str | Path, required: tuple[str, ...], skip_bad: bool = False
) -> tuple[list[dict[str, Any]], SkippedLines]:
    """All good records of a jsonl file (see :func:`iter_jsonl`) and the skipped lines by reason."""
    bad = SkippedLines()
    records = [obj for _, obj in iter_jsonl(path, required, skip_bad=skip_bad, bad=bad)]
    return records, bad


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write atomically (temporary file + rename) so an interrupted run never leaves a file that looks done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for record in records:
            # ASCII escapes keep U+2028 and friends out of the file: str.splitlines() would break lines there.
            out.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


RecordReader = Callable[[Path, bool, SkippedLines], Iterator[tuple[str, dict[str, Any]]]]


def _jsonl_records(required: tuple[str, ...]) -> RecordReader:
    def read(src: Path, skip_bad: bool, bad: SkippedLines) -> Iterator[tuple[str, dict[str, Any]]]:
        for line_number, obj in iter_jsonl(src, required, skip_bad=skip_bad, bad=bad):
            yield f"{src}:{line_number}", obj

    return read


def _convert_file(
    src: Path,
    dst: Path,
    *,
    required: tuple[str, ...],
    build: RecordBuilder,
    skip_bad: bool,
    read: RecordReader | None = None,
) -> dict[str, Any]:
    """Turn each record of ``src`` (jsonl lines, or what `read` yields as (where, object)) into a record with
    ``build(obj)`` and write ``dst``; returns the split summary."""
    bad = SkippedLines()
    records = []
    histogram: Counter[int] = Counter()
    for where, obj in (read or _jsonl_records(required))(src, skip_bad, bad):
        try:
            record, n_steps = build(obj)
        except BadRecord as exc:
            _bad(where, exc.reason, str(exc), skip_bad=skip_bad, bad=bad)
            continue
        records.append(record)
        histogram[n_steps] += 1
    if not records:  # an empty jsonl would only fail later, in training
        skipped = f" ({sum(bad.values())} skipped: {bad.summary()})" if bad else " (the file is empty or blank)"
        raise ValueError(f"{src}: no usable records{skipped}")
    _write_jsonl(dst, records)
    return {
        "source": str(src),
        "path": str(dst),
        "records": len(records),
        "steps_histogram": dict(sorted(histogram.items())),
        "dropped": dict(sorted(bad.items())),
        "dropped_summary": bad.summary(),
    }


# ------------------------------------------------------------------------------------------------ prepare


def _download_gsm8k(dest: Path, timeout_s: float = 10.0) -> None:
    """Fetch the public GSM8K files into ``dest``; one clear error when that is not possible."""
    for split in GSM8K_SPLITS:
        url = GSM8K_URL.format(split=split)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                (dest / f"{split}.jsonl").write_bytes(response.read())
        except Exception as exc:  # any network failure gets the same actionable message
            raise FileNotFoundError(
                f"GSM8K not available: downloading {url} failed ({exc}); "
                "pass --src DIR, a directory containing GSM8K's train.jsonl and test.jsonl"
            ) from None


def prepare_gsm8k(
    src: Path | None, out_dir: Path, keep_calculator: bool = False, skip_bad: bool = False
) -> dict[str, Any]:
    """GSM8K ``{train,test}.jsonl`` (``question``/``answer``) in ``src`` → chat records in ``out_dir``.

    With ``src=None`` the files are downloaded from the openai/grade-school-math repository. Returns
    ``{"splits": {split: {"records", "steps_histogram", "dropped", "path", "source"}}, "out_dir"}``;
    the histogram counts reasoning steps (the ``#### N`` line excluded).
    """
    out_dir = Path(out_dir)

    def build(obj: dict[str, Any]) -> tuple[dict[str, Any], int]:
        record = gsm8k_record(obj["question"], obj["answer"], keep_calculator)
        return record, len(assistant_steps(record)) - 1

    def convert(src_dir: Path) -> dict[str, Any]:
        missing = [str(src_dir / f"{s}.jsonl") for s in GSM8K_SPLITS if not (src_dir / f"{s}.jsonl").is_file()]
        if missing:
            raise FileNotFoundError(
                f"{missing[0]}: no such file; --src must be a directory containing train.jsonl and test.jsonl"
            )
        splits = {
            split: _convert_file(
                src_dir / f"{split}.jsonl",
                out_dir / f"{split}.jsonl",
                required=("question", "answer"),
                build=build,
                skip_bad=skip_bad,
            )
            for split in GSM8K_SPLITS
        }
        return {"out_dir": str(out_dir), "splits": splits}

    if src is not None:
        return convert(Path(src))
    with tempfile.TemporaryDirectory() as tmp:
        _download_gsm8k(Path(tmp))
        return convert(Path(tmp))


def prepare_steps(src_files: Iterable[Path], out_dir: Path, skip_bad: bool = False) -> dict[str, Any]:
    """Seed-format jsonl files (``question``, ``answer``, ``deepseek_response``) → chat records, each input
    ``NAME.jsonl`` to ``out_dir/NAME.jsonl``. Records with fewer than 2 steps are bad records."""

    def build(obj: dict[str, Any]) -> tuple[dict[str, Any], int]:
        record = steps_record(obj["question"], obj["answer"], obj["deepseek_response"])
        if record is None:
            raise BadRecord("fewer than 2 steps")
        return record, len(assistant_steps(record))

    return _convert_files(src_files, out_dir, required=("question", "answer", "deepseek_response"), build=build,
                          skip_bad=skip_bad)  # fmt: skip


def _convert_files(
    src_files: Iterable[Path],
    out_dir: Path,
    *,
    required: tuple[str, ...],
    build: RecordBuilder,
    skip_bad: bool,
    read: RecordReader | None = None,
) -> dict[str, Any]:
    """`_convert_file` for each input ``NAME.<ext>`` into ``out_dir/NAME.jsonl`` (so a train/test pair keeps its
    split names); two inputs with the same name are an error."""
    out_dir = Path(out_dir)
    src_files = [Path(f) for f in src_files]
    names = [f.stem + ".jsonl" for f in src_files]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two input files would both be written to {out_dir / duplicates[0]}; rename one")
    splits = {
        Path(n).stem: _convert_file(src, out_dir / n, required=required, build=build, skip_bad=skip_bad, read=read)
        for src, n in zip(src_files, names)
    }
    return {"out_dir": str(out_dir), "splits": splits}


CHAT_ROLES = ("system", "user", "assistant")


def chat_record(obj: dict[str, Any]) -> dict[str, Any]:
    """A chat record ``{"messages": [...], ...}`` checked: messages with roles in CHAT_ROLES and string contents,
    a user message and a non-empty assistant message after it. Other keys are kept. BadRecord otherwise."""
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRecord("no messages", 'expected "messages": a non-empty list of {"role", "content"}')
    for index, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("content"), str)):
            raise BadRecord("bad message", f"messages[{index}]: expected {{'role', 'content'}} with string content")
        if m.get("role") not in CHAT_ROLES:
            raise BadRecord("bad role", f"messages[{index}]: role {m.get('role')!r} is not one of {CHAT_ROLES}")
    roles = [m["role"] for m in messages]
    if "user" not in roles:
        raise BadRecord("no user message")
    if not messages[roles.index("user")]["content"].strip():
        raise BadRecord("empty user message", "the first user message is empty")
    after = roles.index("user") + 1
    if "assistant" not in roles[after:] or not messages[roles.index("assistant", after)]["content"].strip():
        raise BadRecord("no assistant answer", "no non-empty assistant message after the user message")
    return obj


def split_jsonl(src: Path, out_dir: Path, n_valid: int, seed: int = 0) -> dict[str, Any]:
    """A validation split cut from a training file, for choosing hyper-parameters without the test set:
    ``n_valid`` records drawn with a seeded permutation -> ``out_dir/NAME_valid.jsonl``, the rest (in their
    original order) -> ``out_dir/NAME_train.jsonl``. Blank lines are not records; lines are copied verbatim."""
    import numpy as np

    src, out_dir = Path(src), Path(out_dir)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    lines = [line for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not 0 < n_valid < len(lines):
        raise ValueError(f"{src}: --valid must be between 1 and {len(lines) - 1} (the file has {len(lines)} records)")
    chosen = set(np.random.default_rng(seed).permutation(len(lines))[:n_valid].tolist())
    stem = src.stem.removesuffix("_train")
    paths = {"train": out_dir / f"{stem}_train.jsonl", "valid": out_dir / f"{stem}_valid.jsonl"}
    if paths["train"].resolve() == src.resolve():
        raise ValueError(f"{src}: the split would overwrite its source; choose another --out")
    for split, keep in (("train", False), ("valid", True)):
        _write_lines(paths[split], [line for i, line in enumerate(lines) if (i in chosen) == keep])
    return {"train": (str(paths["train"]), len(lines) - n_valid), "valid": (str(paths["valid"]), n_valid)}


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)

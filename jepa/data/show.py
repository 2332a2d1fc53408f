"""Text pictures of packed rows, for debugging and the README."""

from __future__ import annotations

from collections.abc import Callable

from jepa.data.collator import attention_mask
from jepa.data.layouts import Row
from jepa.losses import IGNORE_INDEX


def show_row(
    row: Row, token_text: Callable[[int], str] | None = None, width: int = 12, max_tokens: int | None = None
) -> str:
    """One line per token (index, segment, position, label flag, view marker, token) followed by the mask
    grid: `#` = may attend, `.` = masked. Predictor tokens print as <P1>, <P2>, ... A row longer than
    `max_tokens` shows its first and last max_tokens / 2 tokens (lines, and mask rows and columns), with the
    number left out where they part."""

    def text(tok: int) -> str:
        if tok < 0:
            return f"<P{-tok}>"
        return repr(token_text(tok))[1:-1][:width] if token_text else str(tok)

    n = len(row.input_ids)
    keep = list(range(n))
    if max_tokens is not None and n > max_tokens:
        half = max(1, max_tokens // 2)
        keep = keep[:half] + keep[n - half :]
    gap = next((k for k in range(1, len(keep)) if keep[k] != keep[k - 1] + 1), None)  # where the cut is
    lines = [" idx seg pos lab view  token"]
    for k, i in enumerate(keep):
        if k == gap:
            lines.append(f"   ... {keep[k] - keep[k - 1] - 1} tokens left out ...")
        view = "pred" if i == row.pred_index else "tgt" if i == row.target_index else ""
        lab = "*" if row.labels[i] != IGNORE_INDEX else " "
        lines.append(
            f"{i:4d} {row.segment_names[row.segment_ids[i]]:>3} {row.position_ids[i]:3d}  {lab}  "
            f"{view:4}  {text(row.input_ids[i])}"
        )
    mask = attention_mask(row, n)[keep][:, keep].tolist()
    lines.append("")
    lines.append("mask (rows = queries, columns = keys; '*' labels mark tokens whose logits are trained)")

    def cut(cells: list[str]) -> str:  # a '|' where tokens were left out
        return "".join(("|" if k == gap else "") + c for k, c in enumerate(cells))

    lines.append("     " + cut([row.segment_names[row.segment_ids[i]][0] for i in keep]))
    for k, i in enumerate(keep):
        if k == gap:
            lines.append("  ...")
        lines.append(f"{i:4d} " + cut(["#" if m else "." for m in mask[k]]))
    return "\n".join(lines)

"""Text pictures of packed rows, for debugging and the README."""

from __future__ import annotations

from collections.abc import Callable

from jepa.data.collator import attention_mask
from jepa.data.layouts import Row
from jepa.losses import IGNORE_INDEX


def show_row(row: Row, token_text: Callable[[int], str] | None = None, width: int = 12) -> str:
    """One line per token (index, segment, position, label flag, view marker, token) followed by the mask
    grid: `#` = may attend, `.` = masked. Predictor tokens print as <P1>, <P2>, ..."""

    def text(tok: int) -> str:
        if tok < 0:
            return f"<P{-tok}>"
        return repr(token_text(tok))[1:-1][:width] if token_text else str(tok)

    n = len(row.input_ids)
    lines = [" idx seg pos lab view  token"]
    for i in range(n):
        view = "pred" if i == row.pred_index else "tgt" if i == row.target_index else ""
        lab = "*" if row.labels[i] != IGNORE_INDEX else " "
        lines.append(
            f"{i:4d} {row.segment_names[row.segment_ids[i]]:>3} {row.position_ids[i]:3d}  {lab}  "
            f"{view:4}  {text(row.input_ids[i])}"
        )
    mask = attention_mask(row, n)
    lines.append("")
    lines.append("mask (rows = queries, columns = keys; '*' labels mark tokens whose logits are trained)")
    lines.append("     " + "".join(row.segment_names[s][0] for s in row.segment_ids))
    for i in range(n):
        lines.append(f"{i:4d} " + "".join("#" if m else "." for m in mask[i].tolist()))
    return "\n".join(lines)

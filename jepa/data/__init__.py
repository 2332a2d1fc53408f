"""Data: preparing sources into chat records, the reversal generator, and the packed JEPA layouts."""

from jepa.data.collator import collate
from jepa.data.layouts import LayoutConfig, Row, build_chat_row, build_reversal_row
from jepa.data.show import show_row

__all__ = ["LayoutConfig", "Row", "build_chat_row", "build_reversal_row", "collate", "show_row"]

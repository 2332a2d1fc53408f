"""Data: preparing sources into chat records, the reversal generator, and the packed JEPA layouts."""

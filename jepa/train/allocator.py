"""glibc's allocator told to keep the memory a CPU training step frees, for the next step (issue 28 §3).

A training step allocates and frees its activations every step. glibc hands large freed blocks back to the
kernel (blocks above its mmap threshold, which it raises and lowers as it goes, and the top of the heap beyond its
trim threshold), and the next step faults them back in, zero-filled: ~300,000 minor page faults a step (1.2 GB)
for SmolLM2-135M in jepa mode at batch 2 (`bench/step_spread.py`). Keeping them costs nothing but the process
holding its peak memory between steps, which it reaches every step anyway.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int: ~2 GiB of free heap top kept before any is returned
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (64-bit); a fixed value also stops its dynamic adjustment


def keep_freed_memory() -> bool:
    """Set the thresholds; True when glibc took them, False where there is no glibc (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))

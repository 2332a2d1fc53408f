"""run.keep_freed_memory: glibc takes the thresholds (mallopt answers 1 for each) where there is glibc."""

import platform
import sys

import pytest

from jepa.train.allocator import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_the_thresholds():
    assert keep_freed_memory() is True


def test_elsewhere_nothing_changes(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False

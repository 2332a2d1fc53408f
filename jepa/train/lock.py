"""One run per run directory: `run_dir/.lock` names the process that holds it.

A second run on the same directory gets one line naming the holder. A lock left by a process that no longer
exists on this host is taken over; a lock from another host is respected (its liveness cannot be checked here),
and the message says which file to remove once that process is gone.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """Context manager holding `run_dir/.lock` (created with O_EXCL) for this process; `enabled=False` (other
    ranks of a distributed run) does nothing."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.path, self.enabled = Path(run_dir) / LOCK_FILE, enabled
        self.me = {"pid": os.getpid(), "host": socket.gethostname()}

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and (holder["host"] != self.me["host"] or _alive(holder["pid"])):
                    raise ValueError(
                        f"run.dir: {self.path.parent} is in use by process {holder['pid']} on {holder['host']} "
                        f"(remove {self.path} if that process is gone, or choose another run.name)"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is dead; take it over
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
            return self

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder.get("pid"), int) and isinstance(holder.get("host"), str) else None
        except (OSError, ValueError, AttributeError):
            return None  # unreadable (a crash while writing it): stale

    def __exit__(self, *exc) -> None:
        if self.enabled and self._holder() == self.me:
            self.path.unlink(missing_ok=True)

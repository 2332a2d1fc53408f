"""One run per run directory: `run_dir/.lock` names the process that holds it.

A second run on the same directory gets one line naming the holder. A lock left by a process that no longer
exists on this host (or whose pid now belongs to a process started after the lock was written) is taken over; a
lock from another host is respected (its liveness cannot be checked here), and the message says which file to
remove once that process is gone.

The lock also owns the run directory's creation: directories it made for a run that then fails to start (a bad
model, no GPU) are removed again, so a failed start leaves nothing behind. `keep()` marks the start.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

LOCK_FILE = ".lock"


def _alive(pid: int, since: float | None = None) -> bool:
    """Whether process `pid` exists and, when `since` (the lock's time) is known, started no later than it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    started = _start_time(pid)
    return since is None or started is None or started <= since + 1.0


def _start_time(pid: int) -> float | None:
    """The process's start as a Unix time (Linux /proc), or None where that cannot be read."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))  # fmt: skip
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


class RunLock:
    """Context manager holding `run_dir/.lock` (created with O_EXCL) for this process; `enabled=False` (other
    ranks of a distributed run) does nothing."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.path, self.enabled = Path(run_dir) / LOCK_FILE, enabled
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        self.created: list[Path] = []  # directories this lock made, deepest first
        self.started = False

    def keep(self) -> None:
        """The run has started: its directory stays after the run."""
        self.started = True

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        run_dir = self.path.parent
        self.created = [d for d in (run_dir, *run_dir.parents) if not d.exists()]
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._take()
        except OSError as exc:
            self._remove_created()
            raise ValueError(f"run.dir: {self.path} could not be written ({exc.strerror or exc})") from None
        except BaseException:
            self._remove_created()
            raise
        return self

    def _take(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self.path.is_dir():
                    raise ValueError(f"run.dir: {self.path} is a directory; remove it (the lock goes there)") from None
                holder = self._holder()
                if holder is not None and (
                    holder["host"] != self.me["host"] or _alive(holder["pid"], holder.get("time"))
                ):
                    raise ValueError(
                        f"run.dir: {self.path.parent} is in use by process {holder['pid']} on {holder['host']} "
                        f"(remove {self.path} if that process is gone, or choose another run.name)"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone; take it over
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(self.me, f)
            except OSError:  # a full disk: no half-written lock left behind
                self.path.unlink(missing_ok=True)
                raise
            return

    def _holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder.get("pid"), int) and isinstance(holder.get("host"), str) else None
        except (OSError, ValueError, AttributeError):
            return None  # unreadable (a crash while writing it): stale

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        try:
            if self._holder() == self.me:
                self.path.unlink(missing_ok=True)
        except OSError as error:  # a directory turned read-only: the run's own message matters more
            print(f"warning: {self.path}: lock not removed ({error.strerror}); the next run takes it over",
                  file=sys.stderr)  # fmt: skip
        if not self.started:
            self._remove_created()

    def _remove_created(self) -> None:
        """Remove the directories this lock made, if still empty (a failed start wrote nothing into them)."""
        for directory in self.created:
            try:
                directory.rmdir()
            except OSError:
                return

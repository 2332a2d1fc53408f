"""`run.profile: {start: S, steps: N}`: a torch.profiler trace of optimizer steps S+1 .. S+N (1-based, as
metrics.jsonl counts them), written to `RUN_DIR/profile/`: `trace.json` (a Chrome trace: chrome://tracing or
Perfetto) and `top_ops.txt` (the operators by their own time, CPU and, on a GPU, CUDA). Main process only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile


class StepProfiler:
    """Opens the profiler before step `start + 1` and writes its files after step `start + steps`."""

    def __init__(self, window: dict[str, int] | None, run_dir: Path, enabled: bool) -> None:
        self.start, self.steps = (window["start"], window["steps"]) if window and enabled else (0, 0)
        self.out = run_dir / "profile"
        self.active: Any = None

    def before(self, step: int) -> None:
        """Before optimizer step `step + 1` (`step` = steps done so far)."""
        if self.steps and step == self.start and self.active is None:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self.active = profile(activities=activities)
            self.active.__enter__()

    def after(self, step: int) -> Path | None:
        """After optimizer step `step`: at the window's end, write the files; returns their folder then."""
        if self.active is None or step < self.start + self.steps:
            return None
        return self.finish()

    def finish(self) -> Path | None:
        """Write what was recorded (also when the run ends inside the window)."""
        if self.active is None:
            return None
        self.active.__exit__(None, None, None)
        self.out.mkdir(parents=True, exist_ok=True)
        self.active.export_chrome_trace(str(self.out / "trace.json"))
        sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        table = self.active.key_averages().table(sort_by=sort, row_limit=30)
        (self.out / "top_ops.txt").write_text(table + "\n")
        self.active = None
        return self.out

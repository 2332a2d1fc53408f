"""Training curves of one or more runs: ``python -m jepa.plot runs/NAME [runs/OTHER ...] [--out FILE.png]
[--eval GLOB ...]``.

Reads each run's ``metrics.jsonl`` (one JSON object per line with an integer ``step``; training lines carry any
of ``loss``, ``lm``, ``jepa``, ``lr``; evaluation lines carry keys starting with ``eval/``) and draws one panel
per quantity — total loss, LM loss, JEPA loss, then every ``eval/`` metric — with the runs overlaid in the
same colour in every panel. A quantity no run logged gets no panel. Needs matplotlib (``pip install
matplotlib`` or the ``plot`` extra); bad input gives ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import sys
from pathlib import Path
from typing import Any

from jepa.data.sources import SkippedLines, iter_jsonl

TRAIN_KEYS = {"loss": "total loss", "lm": "LM loss", "jepa": "JEPA loss"}
MAX_COLUMNS = 3


def read_metrics(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``run_dir/metrics.jsonl`` (or a metrics file given directly) -> {key: [(step, value), ...]} sorted by step.

    Only numeric values are kept (strings, lists, nulls and NaN are skipped). A line that is not a JSON object
    with an integer ``step`` raises ValueError("path:LINE: reason").
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a run directory must contain metrics.jsonl)")
    series: dict[str, list[tuple[int, float]]] = {}
    data = path.read_bytes()
    last_line = len(data.splitlines())
    skipped = SkippedLines()
    # A last line without its newline is a write cut short (a kill, a full disk): dropped with a warning, as
    # resume drops it. Any other bad line is an error.
    for number, obj in iter_jsonl(path, (), skip_bad=not data.endswith(b"\n"), bad=skipped):
        if sum(skipped.values()):
            break
        step = obj.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            raise ValueError(f"{path}:{number}: missing or non-integer 'step'")
        for key, value in obj.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                series.setdefault(key, []).append((step, float(value)))
    if sum(skipped.values()):
        where = next(iter(skipped.where.values()))[0]
        if where != f"{path}:{last_line}":
            raise ValueError(f"{where}: {next(iter(skipped))}")
        print(f"warning: {where}: dropped a torn last line (a write was cut short)", file=sys.stderr)
    for points in series.values():
        points.sort(key=lambda p: p[0])
    return series


def panel_keys(
    runs: dict[str, dict[str, list[tuple[int, float]]]],
    eval_patterns: list[str] | None = None,
) -> list[str]:
    """Keys to draw, in order: loss, lm, jepa (those any run has), then the eval/ keys sorted — only those
    matching one of the glob ``eval_patterns`` (e.g. ``eval/*/mrr``) when given."""
    present = set().union(*(series.keys() for series in runs.values())) if runs else set()
    evals = sorted(k for k in present if k.startswith("eval/"))
    if eval_patterns:
        evals = [k for k in evals if any(fnmatch.fnmatchcase(k, p) for p in eval_patterns)]
    return [k for k in TRAIN_KEYS if k in present] + evals


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend; ValueError naming the extra when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("matplotlib is not installed (pip install matplotlib, or pip install -e '.[plot]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_runs(run_dirs: list[str | Path], out: str | Path, eval_patterns: list[str] | None = None) -> Path:
    """Draw the runs' curves (see module docstring; ``eval_patterns`` as in `panel_keys`) into the PNG ``out``;
    returns its path."""
    plt = pyplot()

    runs = {}
    for run_dir in run_dirs:
        name = Path(run_dir).name if Path(run_dir).is_dir() else Path(run_dir).parent.name
        if name in runs:  # two runs/x/seed_0 dirs: use the longer path as the label
            name = str(run_dir)
        runs[name] = read_metrics(run_dir)
    keys = panel_keys(runs, eval_patterns)
    if not keys:
        raise ValueError(f"no loss or eval/ metrics to plot in {', '.join(str(r) for r in run_dirs)}")
    columns = min(MAX_COLUMNS if len(keys) <= 9 else MAX_COLUMNS + 1, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.8 * columns, 3.4 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, key in enumerate(keys):
        ax = axes[index // columns][index % columns]
        for run_index, (name, series) in enumerate(runs.items()):
            if key in series:
                steps, values = zip(*series[key])
                style = "-" if key in TRAIN_KEYS and len(steps) > 1 else "o-"
                ax.plot(
                    steps,
                    values,
                    style,
                    label=name,
                    color=colours[run_index % len(colours)],
                    markersize=3,
                    linewidth=1.2,
                    alpha=0.85,
                )
        ax.set_title(TRAIN_KEYS.get(key, key.removeprefix("eval/")), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for index in range(len(keys), rows * columns):
        axes[index // columns][index % columns].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:  # a run missing from the first panel still needs a legend entry
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    legend_columns = min(len(labels), 2 * columns)
    legend_rows = -(-len(labels) // legend_columns)
    fig.legend(handles, labels, loc="upper center", ncol=legend_columns, frameon=False)
    # keep ~0.22 in per legend row free above the panels so the legend never covers a title
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.12 + 0.22 * legend_rows) / (3.4 * rows)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_cells(table: dict[str, Any], metrics: list[str], out: str | Path) -> Path:
    """The final metrics of a sweep, one panel per metric: each cell's runs as dots (one per seed) and its mean as
    a bar (`table` as `jepa.sweep.summarise` returns it: cell -> metric -> {"by_seed", "mean"}). Returns the PNG."""
    plt = pyplot()

    keys = [m for m in metrics if any(table[cell][m]["by_seed"] for cell in table)]
    if not keys:
        raise ValueError("no cell has a value of any metric")
    cells = list(table)
    columns = min(MAX_COLUMNS, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(0.9 * len(cells) * columns + 1.5, 3.2 * rows), squeeze=False)
    for index, key in enumerate(keys):
        ax = axes[index // columns][index % columns]
        for x, cell in enumerate(cells):
            values = list(table[cell][key]["by_seed"].values())
            if values:
                ax.bar(x, sum(values) / len(values), color="0.85", width=0.7)
                ax.plot([x] * len(values), values, "o", color="C0", markersize=3.5)
        ax.set_xticks(range(len(cells)), cells, rotation=35, ha="right", fontsize=8)
        ax.set_title(key.removeprefix("eval/"), fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    for index in range(len(keys), rows * columns):
        axes[index // columns][index % columns].axis("off")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jepa.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding metrics.jsonl")
    parser.add_argument("--out", type=Path, help="PNG to write (default: RUN/curves.png of the first run)")
    parser.add_argument(
        "--eval",
        nargs="+",
        metavar="GLOB",
        dest="eval_patterns",
        help="only these eval metrics, e.g. 'eval/*/mrr' 'eval/test/*' (default: all)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    first = args.runs[0] if args.runs[0].is_dir() else args.runs[0].parent
    out = args.out or first / "curves.png"
    try:
        path = plot_runs(args.runs, out, args.eval_patterns)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # --out not writable (read-only file system, a directory in the way)
        print(f"error: --out {out}: not written ({exc.strerror or exc})", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

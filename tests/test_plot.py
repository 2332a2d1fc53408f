"""`python -m jepa.plot`: metrics.jsonl parsing, panel choice, the PNG, and errors."""

import json

import pytest

from jepa.plot import main, panel_keys, plot_cells, read_metrics


def write_run(run_dir, lines):
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run_dir


def test_read_metrics_keeps_numbers_sorted_by_step(tmp_path):
    run = write_run(
        tmp_path / "a",
        [
            {"step": 20, "loss": 1.0, "lm": 0.8, "note": "text", "flag": True},
            {"step": 10, "loss": 2.0, "lm": 1.5, "jepa": float("nan"), "lr": 1e-4},
            {"step": 20, "eval/test/mrr": 0.25, "eval/samples": [1, 2], "eval/gsm8k/accuracy": None},
        ],
    )
    series = read_metrics(run)
    assert series == {
        "loss": [(10, 2.0), (20, 1.0)],
        "lm": [(10, 1.5), (20, 0.8)],
        "lr": [(10, 1e-4)],
        "eval/test/mrr": [(20, 0.25)],
    }


def test_panel_keys_order():
    runs = {"a": {"lm": [], "eval/z": [], "lr": []}, "b": {"jepa": [], "loss": [], "eval/a": []}}
    assert panel_keys(runs) == ["loss", "lm", "jepa", "eval/a", "eval/z"]
    assert panel_keys(runs, ["eval/z*"]) == ["loss", "lm", "jepa", "eval/z"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{oops", "metrics.jsonl:2: not JSON"),
        ("[1, 2]", "metrics.jsonl:2: not a JSON object"),
        ('{"loss": 1.0}', "metrics.jsonl:2: missing or non-integer 'step'"),
        ('{"step": 1.5, "loss": 1.0}', "metrics.jsonl:2: missing or non-integer 'step'"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "loss": 1}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_metrics(tmp_path)


def test_writes_png_with_runs_overlaid(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    a = write_run(
        tmp_path / "runs" / "lambda0",
        [{"step": s, "loss": 5 - s / 10, "lm": 5 - s / 10} for s in range(10)] + [{"step": 9, "eval/test/mrr": 0.1}],
    )
    b = write_run(
        tmp_path / "runs" / "cosine",
        [{"step": s, "loss": 6 - s / 10, "lm": 5 - s / 10, "jepa": 1 - s / 10} for s in range(10)]
        + [{"step": 9, "eval/test/mrr": 0.4}],
    )
    out = tmp_path / "fig" / "curves.png"
    assert main([str(a), str(b), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert main([str(a)]) == 0 and (a / "curves.png").is_file()  # default: next to the first run


def test_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert (
        capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing'}: no such file "
        "(a run directory must contain metrics.jsonl)"
    )
    pytest.importorskip("matplotlib")
    empty = write_run(tmp_path / "empty", [{"step": 0, "lr": 0.1}])
    assert main([str(empty)]) == 2
    assert "error: no loss or eval/ metrics to plot" in capsys.readouterr().err


def test_a_torn_last_line_is_dropped_with_a_warning_like_resume_does(tmp_path, capsys):
    run = write_run(tmp_path / "a", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')  # a write cut short
    assert read_metrics(run) == {"loss": [(1, 2.0), (2, 1.5)]}
    assert "metrics.jsonl:3: dropped a torn last line" in capsys.readouterr().err
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{oops\n{"step": 3, "loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not JSON"):
        read_metrics(run)


def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    run = write_run(tmp_path / "a", [{"step": 1, "loss": 2.0}])
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([str(run), "--out", str(blocker / "curves.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --out {blocker / 'curves.png'}: not written") and len(err.splitlines()) == 1


def test_the_cells_plot_draws_every_metric_any_cell_has(tmp_path):
    pytest.importorskip("matplotlib")
    table = {
        "regular": {"exact": {"by_seed": {1: 0.5, 2: 0.52}}, "never": {"by_seed": {}}},
        "jepa": {"exact": {"by_seed": {1: 0.1}}, "never": {"by_seed": {}}},
    }
    out = plot_cells(table, ["exact", "never"], tmp_path / "cells.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    with pytest.raises(ValueError, match="no cell has a value"):
        plot_cells(table, ["never"], tmp_path / "none.png")

"""python -m jepa.sweep: the statistics against known values, spec errors, and a tiny sweep end to end."""

import json
import math

import pytest
import yaml

from jepa.eval.hooks import examples_path, write_examples
from jepa.sweep import (
    SweepSpec,
    compare,
    main,
    markdown,
    mcnemar_p,
    paired_difference,
    paired_examples,
    summarise,
    t_quantile_975,
    t_two_sided_p,
)
from tests.train.helpers import reversal_config


def test_student_t_against_table_values():
    # Two-sided 5 % critical values from any t table.
    for df, t in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)):
        assert t_quantile_975(df) == pytest.approx(t, abs=1e-4)
    assert t_two_sided_p(1.0, 10) == pytest.approx(0.3409, abs=1e-4)
    assert t_two_sided_p(0.0, 5) == pytest.approx(1.0)


def test_paired_difference_is_taken_seed_by_seed():
    baseline = {1: 0.5, 2: 0.6, 3: 0.7, 4: 0.9}
    cell = {1: 1.5, 2: 2.6, 3: 3.7}  # seed 4 missing: left out of the pairing
    d = paired_difference(cell, baseline)
    assert d["n"] == 3 and d["mean"] == pytest.approx(2.0)
    half = 4.3027 * 1.0 / math.sqrt(3)  # t(0.975, 2) x sd / sqrt(n), sd of (1, 2, 3) = 1
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-3)
    assert d["p"] == pytest.approx(0.0742, abs=1e-3)  # t = 2 / (1 / sqrt 3) = 3.464, df 2
    assert math.isnan(paired_difference({1: 1.0}, {1: 0.0})["p"])


def test_a_bad_spec_is_one_line(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"config": "x.yaml", "seeds": [1], "cells": {"a": []}}))
    assert main([str(spec)]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {spec}: metrics: missing or not the right type (see python -m jepa.sweep --help)\n"
    )
    spec.write_text(yaml.safe_dump({"config": "x.yaml", "seeds": [1], "cells": {"a": []}, "metrics": ["m"],
                                    "baseline": "b"}))  # fmt: skip
    assert main([str(spec)]) == 2
    assert "baseline 'b' is not one of the cells (a)" in capsys.readouterr().err


def test_a_protocol_appends_its_overrides_and_runs_apart(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"config": "c.yaml", "seeds": [7], "cells": {"a": ["x.y=1"]}, "metrics": ["m"],
                                    "overrides": ["o.p=2"], "protocols": {"gpu": ["schedule.epochs=4"]}}))  # fmt: skip
    ((cell, seed, args),) = SweepSpec.read(spec, "gpu").runs()
    assert args == ["--config", "c.yaml", "o.p=2", "schedule.epochs=4", "x.y=1", "run.seed=7", "run.name=a_s7",
                    "run.dir=runs/sweep_s_gpu"]  # fmt: skip
    assert SweepSpec.read(spec).runs()[0][2][2:4] == ["o.p=2", "x.y=1"]  # no protocol: the spec as written
    assert main([str(spec), "--protocol", "tpu", "--dry-run"]) == 2
    assert capsys.readouterr().err == f"error: {spec}: protocols: no protocol 'tpu' (the spec has: gpu)\n"


def test_cells_selects_a_part_of_the_grid_and_keeps_the_baseline(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"config": "c.yaml", "seeds": [1, 2], "metrics": ["m"], "baseline": "lm",
                                    "cells": {"lm": [], "a": ["x=1"], "b": ["x=2"]}}, sort_keys=False))  # fmt: skip
    assert main([str(spec), "--cells", "b", "--dry-run"]) == 0
    names = [line.split("run.name=")[1].split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["lm_s1", "b_s1", "lm_s2", "b_s2"]
    assert main([str(spec), "--cells", "b,c", "--dry-run"]) == 2
    assert capsys.readouterr().err == "error: --cells: no cell 'c' (the spec has: lm, a, b)\n"


@pytest.mark.slow  # 4 tiny training runs in their own processes
def test_a_tiny_sweep_tabulates_cells_and_skips_finished_runs(tmp_path, capsys):
    base = reversal_config(tmp_path, schedule={"max_steps": 3}, checkpoint={"every": 0, "export": "none"},
                           eval={"fn": "jepa.eval.hooks:reversal"})  # fmt: skip
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {
        "config": str(tmp_path / "base.yaml"),
        "seeds": [1, 2],
        "metrics": ["eval/test/mrr", "eval/atomic/mrr"],
        "cells": {"lm": ["jepa.lambda=0"], "cosine": ["jepa.lambda=1"]},
        "runs_dir": str(tmp_path / "sweep"),
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))  # cells in order: lm first
    assert main([str(tmp_path / "spec.yaml")]) == 0
    table = capsys.readouterr().out
    assert "| lm | " in table and "| cosine − lm | eval/test/mrr |" in table
    results = json.loads((tmp_path / "sweep" / "results.json").read_text())
    for cell in ("lm", "cosine"):
        mrr = results["cells"][cell]["eval/test/mrr"]
        assert mrr["n"] == 2 and 0 < mrr["mean"] <= 1
        finals = [
            json.loads(ln) for ln in (tmp_path / "sweep" / f"{cell}_s1" / "metrics.jsonl").read_text().splitlines()
        ]
        assert finals[-1]["kind"] == "eval" and finals[-1]["step"] == 3
    assert results["comparisons"]["cosine - lm"]["eval/test/mrr"]["n"] == 2
    mtime = (tmp_path / "sweep" / "lm_s1" / "metrics.jsonl").stat().st_mtime_ns
    assert main([str(tmp_path / "spec.yaml")]) == 0  # everything done: nothing is trained again
    assert (tmp_path / "sweep" / "lm_s1" / "metrics.jsonl").stat().st_mtime_ns == mtime
    assert SweepSpec.read(tmp_path / "spec.yaml").baseline == "lm"  # the first cell by default


def test_every_runs_config_is_checked_before_the_first_run_trains(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(reversal_config(tmp_path)))
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"config": str(base), "seeds": [1], "metrics": ["eval/x"],
                                    "runs_dir": str(tmp_path / "sweep"),
                                    "cells": {"good": ["jepa.lambda=0"], "bad": ["optim.lrr=1"]}}))  # fmt: skip
    assert main([str(spec)]) == 2
    assert capsys.readouterr().err.startswith("error: run bad_s1: unknown config key optim.lrr")
    assert not (tmp_path / "sweep" / "good_s1").exists()  # nothing trained


def test_mcnemar_exact_p_values():
    assert mcnemar_p(0, 6) == 2 / 64  # all 6 discordant pairs one way: 2 * 0.5**6
    assert mcnemar_p(1, 9) == 2 * (1 + 10) / 1024
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(9, 1) == mcnemar_p(1, 9)
    # pooled over many seeds: more than 1,023 discordant pairs (2.0**n overflowed there)
    assert mcnemar_p(0, 1131) == 0.0  # 2**-1130 is below the smallest float
    assert mcnemar_p(1200, 1200) == 1.0
    z = (abs(560 - 640) - 1) / math.sqrt(1200)  # the normal approximation with continuity correction
    assert mcnemar_p(560, 640) == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.05)


def test_runs_are_paired_example_by_example(tmp_path):
    """Hand-made per-example results of two cells x two seeds: discordant counts per seed and pooled, the
    accuracy difference and McNemar's p; a run without its examples file leaves its seed out."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"config": "c.yaml", "seeds": [1, 2, 3], "metrics": ["m"],
                                         "cells": {"base": [], "new": ["x=1"]}, "examples": "synth",
                                         "comparisons": ["new - base"], "runs_dir": str(tmp_path)}))  # fmt: skip
    spec = SweepSpec.read(spec_file)
    correct = {("base", 1): [1, 0, 0, 0, 1, 0], ("new", 1): [1, 1, 1, 1, 1, 0],  # b = 3, c = 0
               ("base", 2): [1, 1, 0, 0, 0, 0], ("new", 2): [0, 1, 1, 0, 0, 0],  # b = 1, c = 1
               ("base", 3): [1, 1, 1, 1, 1, 1]}  # fmt: skip
    for (cell, seed), marks in correct.items():
        write_examples(examples_path(tmp_path / f"{cell}_s{seed}", "synth", 100),
                       [{"index": i, "correct": bool(m), "response": ""} for i, m in enumerate(marks)])  # fmt: skip
    evaluations = {key: {"step": 100} for key in [*correct, ("new", 3)]}
    result = paired_examples(spec, evaluations)["new - base"]
    assert set(result["by_seed"]) == {1, 2}  # seed 3's "new" run has no examples file
    assert result["by_seed"][1] == {"n": 6, "b": 3, "c": 0, "difference": 0.5, "p": 2 / 8}
    assert result["pooled"] == {"n": 12, "b": 4, "c": 1, "difference": 3 / 12, "p": mcnemar_p(4, 1)}
    text = markdown(spec, summarise(spec, {}), compare(spec, summarise(spec, {})), {"new - base": result})
    assert "| new − base | pooled | 12 | 4 | 1 | +0.25 | 0.375 |" in text


def test_comparisons_must_name_two_cells(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"config": "c.yaml", "seeds": [1], "metrics": ["m"], "cells": {"a": [], "b": []},
                                    "comparisons": ["a - c"]}))  # fmt: skip
    assert main([str(spec), "--dry-run"]) == 2
    assert "comparisons: 'a - c' is not 'cell - other' with two of the cells (a, b)" in capsys.readouterr().err
    spec.write_text(yaml.safe_dump({"config": "c.yaml", "seeds": [1, 2], "metrics": ["m"], "cells": {"a": []}}))
    assert main([str(spec), "--seeds", "2", "--dry-run"]) == 0
    assert "run.seed=2" in capsys.readouterr().out
    assert main([str(spec), "--seeds", "3", "--dry-run"]) == 2
    assert capsys.readouterr().err == "error: --seeds: no seed 3 (the spec has: 1, 2)\n"

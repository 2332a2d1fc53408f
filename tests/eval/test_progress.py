"""Evaluation progress (jepa/eval/progress.py): shown when asked, or when the surrounding run shows its own."""

import torch

from jepa.eval.progress import Progress, showing_progress
from jepa.eval.reversal import evaluate_reversal


def test_progress_follows_the_run_unless_the_caller_says(capsys):
    for enabled, context, shown in (
        (None, False, False),
        (None, True, True),
        (False, True, False),
        (True, False, True),
    ):
        with showing_progress(context), Progress(3, "probe-bar", enabled=enabled) as bar:
            bar.update(3)
        assert ("probe-bar" in capsys.readouterr().err) is shown, (enabled, context)


def test_reversal_probes_show_examples_and_tokens_per_second(capsys):
    probe = {"input_text": [[1, 2], [3], [6]], "target_text": [[4, 5]]}
    valid = {"atomic": [probe] * 3, "test": [probe] * 2}
    logits = lambda ids: torch.zeros(ids.shape[0], ids.shape[1], 8)  # noqa: E731
    with showing_progress(True):
        evaluate_reversal(logits, valid, batch_size=2)
    err = capsys.readouterr().err
    assert "reversal probes" in err and "/5 " in err and "tok_s" in err  # 5 probes: atomic + test
    evaluate_reversal(logits, valid, batch_size=2)  # outside a run that shows progress: silent
    assert capsys.readouterr().err == ""

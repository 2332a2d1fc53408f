"""Evaluation: GSM8K accuracy by generation, reversal-curse ranks, representation diagnostics.

What each metric means: docs/method.md §4, §5.
"""

from jepa.data.reversal import load_probes
from jepa.eval.answers import extract_answer, parse_number, score_default, score_paper
from jepa.eval.diagnostics import collect_views, effective_rank, linear_map_error, mean_cosine, view_diagnostics
from jepa.eval.gsm8k import evaluate_gsm8k, load_gsm8k_records
from jepa.eval.loading import EvalModel, load_for_eval
from jepa.eval.report import flat_metrics, json_safe, write_results
from jepa.eval.reversal import evaluate_reversal

__all__ = [
    "EvalModel",
    "collect_views",
    "effective_rank",
    "evaluate_gsm8k",
    "evaluate_reversal",
    "extract_answer",
    "flat_metrics",
    "json_safe",
    "linear_map_error",
    "load_for_eval",
    "load_gsm8k_records",
    "load_probes",
    "mean_cosine",
    "parse_number",
    "score_default",
    "score_paper",
    "view_diagnostics",
    "write_results",
]

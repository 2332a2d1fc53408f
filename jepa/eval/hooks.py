"""Evaluation during training: factories for the trainer's `eval.fn` hook.

`eval.fn: jepa.eval.hooks:reversal` (or `:gsm8k`, `:views`, `:synth`, `:turk`, `:nq_open`); each factory takes
the TrainConfig and returns
`hook(model, predictors, step) -> dict` whose flat keys (`eval/test/mrr`, `eval/gsm8k/accuracy`,
`eval/views/cosine`, `eval/heldout/lm_loss` ...) land in metrics.jsonl. Held-out data: `eval.data` (reversal: the
directory holding valid.json, default the training directory; the others: a chat jsonl), `eval.limit` examples.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from jepa.data.datasets import tokenize_chats
from jepa.data.layouts import MODES, build_reversal_row
from jepa.data.reversal import load_probes, relation_inverses
from jepa.eval.diagnostics import evaluate_views
from jepa.eval.gsm8k import evaluate_gsm8k, load_gsm8k_records
from jepa.eval.heldout import heldout_lm_loss
from jepa.eval.report import flat_metrics
from jepa.eval.reversal import evaluate_reversal
from jepa.eval.tasks import TASKS, evaluate_task, load_task_records
from jepa.models.base import CausalLM
from jepa.models.predictors import PredictorEmbeddings
from jepa.tokenizer import Tokenizer

# What the trainer calls every `eval.every` steps and at the end (model in eval mode, under no_grad):
# hook(model, predictors, step) -> flat metrics for metrics.jsonl. A hook may carry `headline(result) -> str`,
# the one line printed after the final evaluation (`Headlined`).
EvalHook = Callable[[CausalLM, PredictorEmbeddings | None, int], dict[str, Any]]


@dataclass(frozen=True)
class Headlined:
    """A hook with the one line the trainer prints after the final evaluation, `headline(result)`."""

    hook: EvalHook
    headline: Callable[[dict[str, Any]], str]

    def __call__(self, model: CausalLM, predictors: PredictorEmbeddings | None, step: int) -> dict[str, Any]:
        return self.hook(model, predictors, step)


def _eval_path(cfg: Any) -> Path:
    return Path(cfg.eval.data or cfg.data.train)


def _tokenizer(cfg: Any) -> Tokenizer:
    return Tokenizer.from_dir(cfg.tokenizer_dir, chat_template=cfg.data.chat_template, date_string=cfg.data.date_string)


def reversal(cfg: Any) -> EvalHook:
    """MRR / joint accuracy on the train, atomic (forward) and test (reverse) probes, plus the view
    diagnostics of the `train` probes (prediction after the forward fact vs the reverse fact)."""
    data_dir = _eval_path(cfg)
    valid, vocab = load_probes(data_dir / "valid.json", data_dir / "vocab.json")
    if cfg.eval.limit:
        valid = {split: items[: cfg.eval.limit] for split, items in valid.items()}
    inverses = relation_inverses(vocab)
    view_rows = [build_reversal_row(item, inverses, cfg.layout, with_jepa=True) for item in valid.get("train", [])]
    pad_id = vocab["<pad>"]

    def hook(model: CausalLM, predictors: PredictorEmbeddings | None, step: int) -> dict[str, Any]:
        _, summary = evaluate_reversal(model, valid)
        out = flat_metrics(summary, prefix="eval/")
        if view_rows and (predictors is not None or cfg.layout.predictors == 0):  # K = 0: no predictor tokens
            out.update(flat_metrics(evaluate_views(model, predictors, view_rows, pad_id), prefix="eval/views/"))
        return out

    chance = chance_mrr(vocab)
    return Headlined(hook, lambda result: reversal_headline(result, chance))


def chance_mrr(vocab: dict[str, int]) -> float:
    """The MRR of a model that ranks the name tokens uniformly at random: each name token is scored among its own
    kind (first names for token 1, last names for token 2), and a uniform rank among N has mean 1/rank H_N / N."""
    counts = [sum(token.startswith(prefix) for token in vocab) for prefix in ("<f_", "<l_")]
    return sum(sum(1 / k for k in range(1, n + 1)) / n for n in counts if n) / 2


def reversal_headline(result: dict[str, Any], chance: float) -> str:
    """One line a person reads at the end of a run: forward vs reverse MRR and exact match, and the verdict they
    support, derived from the numbers: "near chance" means an MRR below twice the chance level; the curse is a
    reverse MRR near chance (or below half the forward one) while the forward facts are learnt."""
    forward, reverse = result.get("eval/atomic/mrr"), result.get("eval/test/mrr")

    def split(name: str, label: str) -> str:
        mrr, exact = result.get(f"eval/{name}/mrr"), result.get(f"eval/{name}/joint_accuracy")
        return f"{label} MRR {mrr:.3f}, exact {exact:.1%}" if mrr is not None else f"{label} not scored"

    if forward is None or reverse is None:
        verdict = "no verdict without both splits"
    elif forward < 2 * chance:
        verdict = "nothing learnt yet (forward near chance)"
    elif reverse < 2 * chance:
        verdict = "the reversal curse (forward learnt, reverse near chance)"
    elif reverse < forward / 2:
        verdict = "a partial reversal curse (reverse < half of forward)"
    else:
        verdict = "no reversal curse (reverse >= half of forward)"
    return (f"{split('atomic', 'forward (atomic)')} | {split('test', 'reverse (test)')} | chance {chance:.3f}: "
            f"{verdict}")  # fmt: skip


def gsm8k(cfg: Any) -> EvalHook:
    """GSM8K accuracy by greedy generation on the first `eval.limit` records of `eval.data` (+ `eval.views`)."""
    tokenizer = _tokenizer(cfg)
    records = load_gsm8k_records(_eval_path(cfg))
    view_metrics, loss_metrics = _view_metrics(cfg, cfg.eval.views), _loss_metrics(cfg)

    def hook(model: CausalLM, predictors: PredictorEmbeddings | None, step: int) -> dict[str, Any]:
        _, summary = evaluate_gsm8k(
            model, tokenizer, records, limit=cfg.eval.limit, max_new_tokens=cfg.eval.max_new_tokens
        )
        return flat_metrics(summary, prefix="eval/gsm8k/") | view_metrics(model, predictors) | loss_metrics(model)

    return hook


def views(cfg: Any) -> EvalHook:
    """Representation diagnostics (cosine, effective ranks, linear-map error) on held-out chat records, the views
    cut as `eval.views` (default: the views layout.mode's declaration names, `Mode.eval_views`)."""
    mode = cfg.eval.views or MODES[cfg.layout.mode].eval_views
    view_metrics, loss_metrics = _view_metrics(cfg, mode), _loss_metrics(cfg)
    return lambda model, predictors, step: view_metrics(model, predictors) | loss_metrics(model)


def _view_metrics(cfg: Any, mode: str | None) -> Callable[[CausalLM, PredictorEmbeddings | None], dict[str, Any]]:
    """(model, predictors) -> `eval/views/*` of the first `eval.limit` chat records of `eval.data`, laid out in
    `mode` (jepa | step; None: no diagnostics, {}). A run without trained predictors (regular, lambda 0, K 0) is
    measured with K = 0: its "prediction" is the last token of the first view itself."""
    if mode is None:
        return lambda model, predictors: {}
    tokenizer = _tokenizer(cfg)
    layout = dataclasses.replace(cfg.layout, mode=mode, predictors=cfg.trained_predictors)
    rows, *_ = tokenize_chats(_eval_path(cfg), tokenizer, layout, limit=cfg.eval.limit)

    @torch.no_grad()
    def view_metrics(model: CausalLM, predictors: PredictorEmbeddings | None) -> dict[str, Any]:
        return flat_metrics(evaluate_views(model, predictors, rows, tokenizer.pad_id), prefix="eval/views/")

    return view_metrics


def _loss_metrics(cfg: Any) -> Callable[[CausalLM], dict[str, Any]]:
    """model -> `eval/heldout/*` (lm_loss, perplexity, label_tokens, rows) of the first `eval.limit` chat records
    of `eval.data` as regular rows with the answer's labels (`lm_labels: assistant`: the same tokens whatever a run
    trained on), the end-of-turn token's CE and probability apart (eot_loss, eot_prob, answer_loss); {} unless
    `eval.heldout_loss`."""
    if not cfg.eval.heldout_loss:
        return lambda model: {}
    tokenizer = _tokenizer(cfg)
    layout = dataclasses.replace(cfg.layout, mode="regular", predictors=0, lm_labels="assistant")
    rows, *_ = tokenize_chats(_eval_path(cfg), tokenizer, layout, limit=cfg.eval.limit)

    def loss_metrics(model: CausalLM) -> dict[str, Any]:
        summary = heldout_lm_loss(model, rows, tokenizer.pad_id, stop_ids=tokenizer.stop_ids)[1]
        return flat_metrics(summary, prefix="eval/heldout/")

    return loss_metrics


EXAMPLE_FIELDS = ("index", "correct", "normalised", "startswith", "contains", "overgeneration", "truncated",
                  "n_tokens", "response")  # fmt: skip


def examples_path(run_dir: Path, task: str, step: int) -> Path:
    """Where a generation hook keeps the per-example results of its evaluation at `step` (paired tests read them)."""
    return run_dir / "eval" / f"{task}_step{step}.jsonl"


def write_examples(path: Path, examples: list[dict[str, Any]]) -> None:
    """One JSON line per example (EXAMPLE_FIELDS it has), written whole or not at all (a temporary file renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    lines = [json.dumps({k: e[k] for k in EXAMPLE_FIELDS if k in e}, ensure_ascii=False) for e in examples]
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(path)


def generation_task(name: str) -> Callable[[Any], EvalHook]:
    """The hook factory of a generation task in jepa.eval.tasks.TASKS: its accuracy (paper's criterion and the
    normalised one, with 95 % intervals) and how the responses end on the first `eval.limit` records of
    `eval.data`; every evaluation's per-example results go to `examples_path(run dir, task, step)`."""

    def factory(cfg: Any) -> EvalHook:
        tokenizer = _tokenizer(cfg)
        records = load_task_records(_eval_path(cfg), TASKS[name], limit=cfg.eval.limit)
        view_metrics, loss_metrics = _view_metrics(cfg, cfg.eval.views), _loss_metrics(cfg)

        def hook(model: CausalLM, predictors: PredictorEmbeddings | None, step: int) -> dict[str, Any]:
            examples, summary = evaluate_task(model, tokenizer, name, records, max_new_tokens=cfg.eval.max_new_tokens)
            try:
                write_examples(examples_path(cfg.run_dir, name, step), examples)
            except OSError as exc:  # the summary still lands in metrics.jsonl
                print(f"warning: {examples_path(cfg.run_dir, name, step)}: not written ({exc})", file=sys.stderr)
            return flat_metrics(summary, prefix=f"eval/{name}/") | view_metrics(model, predictors) | loss_metrics(model)

        def headline(result: dict[str, Any]) -> str:
            key = f"eval/{name}/accuracy"
            ending = f"eval/{name}/"
            return (f"{name} accuracy {result[key]:.1%} (95 % CI {result[key + '_ci_low']:.1%} to "
                    f"{result[key + '_ci_high']:.1%}); normalised {result[key + '_normalised']:.1%}; contains "
                    f"{result[ending + 'contains']:.1%}, over-generated {result[ending + 'overgeneration']:.1%}, "
                    f"truncated {result[ending + 'truncated_fraction']:.1%}")  # fmt: skip

        return Headlined(hook, headline)

    factory.__doc__ = f"{name}: accuracy by greedy generation (jepa/eval/tasks.py)."
    return factory


synth, turk, nq_open = (generation_task(name) for name in ("synth", "turk", "nq_open"))

import copy

import torch

from jepa.data.collator import collate
from jepa.losses import IGNORE_INDEX
from jepa.train.data import load_train_data
from jepa.train.loop import Processes, TrainModule, accumulate_gradients, build_train_model, make_predictors
from tests.train.helpers import reversal_config, typed


def test_accumulated_gradient_equals_one_big_batch(tmp_path):
    cfg = typed(reversal_config(tmp_path, jepa={"lambda": 0.7, "gamma": 1.3}))
    data = load_train_data(cfg.data.train, cfg.layout, None)
    rows = [copy.deepcopy(r) for r in data.rows[:9]]
    for r in rows[:4]:  # uneven label-token counts: 1 token in these rows, 2 in the others
        first = next(i for i, y in enumerate(r.labels) if y != IGNORE_INDEX)
        r.labels[first] = IGNORE_INDEX
    torch.manual_seed(0)
    model = build_train_model(cfg, data, torch.device("cpu"))
    module = TrainModule(model, make_predictors(cfg, model), cfg.jepa.loss, cfg.jepa.temperature, False)
    procs = Processes(0, 1, torch.device("cpu"))

    def grads(micro_rows: list[list]) -> tuple[dict, dict]:
        module.zero_grad(set_to_none=True)
        logged = accumulate_gradients(module, [collate(m, data.pad_id) for m in micro_rows], cfg, procs)
        return logged, {n: p.grad.clone() for n, p in module.named_parameters()}

    big_logged, big = grads([rows])
    micro = [rows[:2], rows[2:7], rows[7:]]  # uneven sizes, padding lengths and JEPA-row counts
    assert len({sum(int(y != IGNORE_INDEX) for r in m for y in r.labels) for m in micro}) > 1
    assert len({sum(r.has_jepa for r in m) for m in micro}) > 1
    acc_logged, acc = grads(micro)
    for key in ("loss", "lm", "jepa"):
        assert abs(big_logged[key] - acc_logged[key]) < 1e-6 * max(1.0, abs(big_logged[key])), key
    assert big_logged["lm_tokens"] == acc_logged["lm_tokens"] == 14
    for name in big:
        torch.testing.assert_close(acc[name], big[name], rtol=1e-5, atol=1e-7, msg=name)
    # The loss really depends on the normalisation: a mean of micro-batch means would differ.
    assert any(p.abs().sum() > 0 for p in big.values())

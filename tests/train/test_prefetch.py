import dataclasses

import pytest
import torch

from jepa.data.batch import Batch
from jepa.train import prefetch
from jepa.train.build import build
from jepa.train.prefetch import Prefetcher
from jepa.train.step import next_micro_batches
from tests.train.helpers import reversal_config, typed


def _state(tmp_path, name):
    # 25 rows, 8 per step: 3 steps per epoch, so 7 steps cross two epoch boundaries; ratio 0.5 makes the
    # LM-only choice depend on the step number, packing makes the rows depend on the choice.
    cfg = reversal_config(tmp_path / name, jepa={"lambda": 1.0, "ratio": 0.5}, data={"pack_length": 32})
    return build(typed(cfg), verbose=False)


def _same(a: list[Batch], b: list[Batch]) -> bool:
    def equal(u, v) -> bool:
        return torch.equal(u, v) if torch.is_tensor(u) else u == v

    return len(a) == len(b) and all(
        all(equal(getattr(x, f.name), getattr(y, f.name)) for f in dataclasses.fields(x)) for x, y in zip(a, b)
    )


def test_prefetched_batches_and_sampler_positions_are_the_synchronous_ones(tmp_path):
    ahead, inline = _state(tmp_path, "ahead"), _state(tmp_path, "inline")
    with Prefetcher(ahead, steps=7, depth=3) as batches:
        for step in range(7):
            got = batches.next()
            assert _same(got, next_micro_batches(inline)), f"step {step}"
            # What a checkpoint saves is the consumed position, not the thread's read-ahead one.
            assert ahead.sampler.state_dict() == inline.sampler.state_dict()
            ahead.step = inline.step = step + 1
    assert inline.sampler.epoch == 2


def test_a_collation_error_is_raised_by_the_step_that_needed_it(tmp_path, monkeypatch):
    state = _state(tmp_path, "run")
    collate_step = prefetch.step_micro_batches

    def failing(state, indices, step):
        if step == 2:
            raise ValueError("bad row")
        return collate_step(state, indices, step)

    monkeypatch.setattr(prefetch, "step_micro_batches", failing)
    with Prefetcher(state, steps=5, depth=2) as batches:
        batches.next(), batches.next()
        with pytest.raises(ValueError, match="bad row"):
            batches.next()


def test_closing_ends_the_thread_while_it_waits_on_a_full_queue(tmp_path):
    state = _state(tmp_path, "run")
    batches = Prefetcher(state, steps=100, depth=1)
    batches.next()
    batches.close()
    assert not batches.thread.is_alive()
    assert state.sampler.step_in_epoch == 1  # only the consumed batch moved the run's sampler


def test_no_prefetch_collates_in_next_without_a_thread(tmp_path):
    state, inline = _state(tmp_path, "run"), _state(tmp_path, "inline")
    with Prefetcher(state, steps=3, depth=0) as batches:
        assert batches.thread is None
        assert _same(batches.next(), next_micro_batches(inline))

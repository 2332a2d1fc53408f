import pytest

from jepa.train.data import EpochSampler, use_jepa


def test_sampler_covers_each_epoch_and_resumes_from_its_position():
    sampler = EpochSampler(10, 3, seed=7)
    assert sampler.steps_per_epoch == 3
    epoch0 = [sampler.next_batch() for _ in range(3)]
    assert len(set(sum(epoch0, []))) == 9  # a permutation, tail of 1 dropped
    assert sampler.epoch == 1 and sampler.step_in_epoch == 0
    first = sampler.next_batch()
    state = sampler.state_dict()
    rest = [sampler.next_batch() for _ in range(4)]
    again = EpochSampler(10, 3, seed=7)
    again.load_state_dict(state)
    assert [again.next_batch() for _ in range(4)] == rest
    assert first != epoch0[0]  # reshuffled per epoch
    with pytest.raises(ValueError, match="global_batch was 3"):
        EpochSampler(10, 4, seed=7).load_state_dict(state)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        EpochSampler(2, 3, seed=7)


def test_jepa_ratio_decisions_are_seeded_and_follow_the_ratio():
    draws = [use_jepa(1, step, micro, 0.3) for step in range(500) for micro in range(2)]
    assert draws == [use_jepa(1, step, micro, 0.3) for step in range(500) for micro in range(2)]
    assert 0.25 < sum(draws) / len(draws) < 0.35
    assert use_jepa(1, 0, 0, 1.0) and not use_jepa(1, 0, 0, 0.0)

"""Shapes of the LR schedules: warm-up, peak, decay, cycles; and their use through LambdaLR."""

import math
from itertools import pairwise

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from training.core.schedules import SCHEDULES, Horizon, ScheduleParams, build_scheduler, multiplier, warmup_steps_for

N, W = 200, 20
PARAMS = ScheduleParams(final_lr_ratio=0.01, cycle_steps=45, cycle_gamma=0.5)


def curve(name: str, total: int = N, warmup: int = W, params: ScheduleParams = PARAMS) -> list[float]:
    f = multiplier(name, Horizon(total, warmup), params)
    return [f(s) for s in range(total)]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_warmup_rises_monotonically_to_the_peak(name: str) -> None:
    lr = curve(name)
    assert all(a < b for a, b in pairwise(lr[: W + 1]))
    assert lr[W] == pytest.approx(1.0)
    assert max(lr) == pytest.approx(1.0)
    assert lr[0] < 0.2


@pytest.mark.parametrize("name", ["onecycle", "exponential"])
def test_decays_monotonically_to_the_final_ratio(name: str) -> None:
    lr = curve(name)
    assert all(a > b for a, b in pairwise(lr[W:]))
    assert lr[-1] == pytest.approx(0.01, rel=1e-6)


def test_onecycle_is_a_cosine_after_the_peak() -> None:
    lr = curve("onecycle")
    middle = W + (N - 1 - W) // 2
    assert lr[middle] == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi * (middle - W) / (N - 1 - W))) / 2)


def test_exponential_has_a_constant_ratio_and_explicit_gamma() -> None:
    lr = curve("exponential", params=ScheduleParams(gamma=0.9))
    ratios = [b / a for a, b in pairwise(lr[W:])]
    assert ratios == pytest.approx([0.9] * len(ratios))


def test_cyclic_exponential_restarts_with_decaying_peaks() -> None:
    lr = curve("cyclic_exponential")
    starts = list(range(W, N, 45))
    peaks = [lr[s] for s in starts]
    assert peaks == pytest.approx([0.5**c for c in range(len(starts))])
    for s in starts[1:]:
        assert lr[s] > lr[s - 1], "a new cycle restarts above the end of the previous one"
    for a, b in pairwise(starts):
        assert all(x > y for x, y in pairwise(lr[a:b])), "decays within a cycle"


def test_constant_after_warmup() -> None:
    assert curve("constant")[W:] == [1.0] * (N - W)


def test_wsd_holds_the_peak_then_decays_linearly_over_its_last_fraction() -> None:
    lr = curve("wsd", params=ScheduleParams(final_lr_ratio=0.1, decay_fraction=0.25))
    decay_length = N - 1 - W
    start = W + math.ceil(0.75 * decay_length)  # the first step past p = 1 − d
    assert lr[W:start] == [1.0] * (start - W)
    tail = lr[start:]
    assert all(a > b for a, b in pairwise(tail)) and lr[-1] == pytest.approx(0.1)
    steps = [a - b for a, b in pairwise(tail)]
    assert steps == pytest.approx([0.9 / (0.25 * decay_length)] * len(steps))
    # a shorter horizon (a time budget) moves the decay earlier: the last step still lands on the final ratio
    short = curve("wsd", total=120, params=ScheduleParams(final_lr_ratio=0.1, decay_fraction=0.25))
    assert short[-1] == pytest.approx(0.1) and short[W + 70] == 1.0 > short[W + 80]


@given(
    name=st.sampled_from(sorted(SCHEDULES)),
    total=st.integers(1, 500),
    ratio=st.floats(0.0, 0.5),
)
def test_multipliers_stay_in_zero_one(name: str, total: int, ratio: float) -> None:
    warmup = warmup_steps_for(total, None, ratio)
    assert 0 <= warmup < max(total, 1)
    assert all(0.0 < x <= 1.0 + 1e-12 for x in curve(name, total, warmup, ScheduleParams()))


def test_shrinking_the_horizon_reshapes_the_schedule() -> None:
    horizon = Horizon(100, 10)
    f = multiplier("onecycle", horizon, ScheduleParams(final_lr_ratio=0.0))
    before = f(50)
    horizon.total_steps = 51
    assert before > 0.4
    assert f(50) == pytest.approx(0.0, abs=1e-12)


def test_lambda_lr_applies_the_multiplier_to_the_peak_lr() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5)
    scheduler = build_scheduler(optimizer, "exponential", Horizon(10, 2), ScheduleParams(final_lr_ratio=0.1))
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[2] == pytest.approx(0.5) and seen[-1] == pytest.approx(0.05)


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown schedule"):
        multiplier("linear", Horizon(10, 1), ScheduleParams())

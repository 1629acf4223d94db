"""The service-time sampler's defaults and edges, and the replay's joined windows and count limits:
what mutation testing found unpinned (issue 17).

A mutmut run over ``sim/service.py`` and ``traces/arrivals.py`` left mutants alive. Each test here
pins one thing a simulation depends on: a draw that gives no start time is at time 0 and one that
gives no idle time is back to back (callers that leave them out get the measured distribution);
an idle time below 0 (a start a hair before the last end) is served back to back instead of
extrapolated below the measured latencies; a quantile that rounds to 1.0 takes the largest measured
value instead of reading past the grid; the block of pre-drawn variates is only a speed device
(batch n takes the generator's n-th variate, as if drawn one at a time, so a seed gives the same
service times whatever the block); a counts trace plays a list of windows one after another; a
list of starts on a timestamps trace and a count past int64 are each refused with a message that
names the right place. Every expected value is derived by hand from a few measured values, from
the generator's own variates drawn one at a time, or from a trace of consecutive integers.
Mutants that no test can tell apart are listed with their reasons in ``docs/mutation.md``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.service import BLOCK, MeasuredSampler, ParametricSampler
from traces.arrivals import Replay
from traces.distributions import Exponential
from traces.errors import InputError
from traces.profiles import LatencyProfile, SlowSpells

HOT_MS = np.array([1.0, 2.0, 3.0, 4.0])  # one batch size, four runs timed back to back
IDLE_GAP_S = 0.004                        # the one idle class: runs timed after 4 ms idle, ten times slower
DRAWS = 400


def _profile(spells: SlowSpells = SlowSpells()) -> LatencyProfile:
    idle = LatencyProfile({1: HOT_MS * 10.0}, measured=True)
    return LatencyProfile({1: HOT_MS.copy()}, measured=True, spells=spells, after_idle=((IDLE_GAP_S, idle),))


def _all_back_to_back(draws_s: list[float]) -> bool:
    return all(any(math.isclose(d * 1000.0, v) for v in HOT_MS) for d in draws_s)


# ---------------------------------------------------------------- the sampler's defaults and edges


def test_a_draw_without_a_start_time_is_at_time_zero():
    """With the whole variation in slow spells (share 1) the quantile is the spell level, which does
    not move in zero time: a first draw that leaves ``now_s`` out and a second at 0.0 s take the
    same measured value."""
    profile = LatencyProfile({1: np.arange(1.0, 1001.0)}, measured=True, spells=SlowSpells(1.0, 1.0))
    sampler = MeasuredSampler(profile, 1, np.random.default_rng(5))
    first = sampler.draw_s(1)
    assert sampler.draw_s(1, 0.0) == first


def test_a_draw_without_an_idle_time_is_back_to_back():
    """Leaving ``idle_s`` out means no idleness: only the back-to-back runs come back, never the
    ten times slower runs timed after an idle gap."""
    sampler = MeasuredSampler(_profile(), 1, np.random.default_rng(6))
    draws = [sampler.draw_s(1) for _ in range(DRAWS)]
    assert _all_back_to_back(draws)
    assert {round(d * 1000.0) for d in draws} == {1, 2, 3, 4}  # each of them, over 400 draws


@pytest.mark.parametrize("spells", [SlowSpells(), SlowSpells(0.5, 1.0)])
def test_an_idle_time_below_zero_is_served_back_to_back(spells):
    """A replica that starts a hair before its last batch ended (idle -4 ms from float rounding)
    is served as back to back: interpolating towards the idle class at weight -1 would give
    2 x hot - idle = -8 x hot, a negative service time."""
    sampler = MeasuredSampler(_profile(spells), 1, np.random.default_rng(7))
    draws = [sampler.draw_s(1, 0.01 * i, -IDLE_GAP_S) for i in range(DRAWS)]
    assert _all_back_to_back(draws)


class _FarRightTail:
    """A generator whose normal scores are all 9: z = sqrt(share) level + sqrt(1 - share) noise
    is then at least 9 (the level stays at 9 or above), where Phi(z) rounds to exactly 1.0."""

    def standard_normal(self, n: int) -> np.ndarray:
        return np.full(n, 9.0)


@pytest.mark.parametrize("idle_s, expected_ms", [
    (0.0, 4.0),                          # back to back: the largest hot run
    (IDLE_GAP_S, 40.0),                  # at the idle class: its largest run
    (IDLE_GAP_S / 2, 0.5 * 4.0 + 0.5 * 40.0),  # halfway: the mean of the two largest
])
def test_a_quantile_that_rounds_to_one_takes_the_largest_measured_value(idle_s, expected_ms):
    """Phi(z) for z > 8.3 is 1.0 in floating point, so int(u * len) is one past the grid; the
    sampler clamps it to the last (largest) value in each class it reads."""
    assert 0.5 * math.erfc(-9.0 / math.sqrt(2.0)) == 1.0  # the rounding this test relies on
    sampler = MeasuredSampler(_profile(SlowSpells(0.5, 1.0)), 1, _FarRightTail())
    for i in range(3):
        assert sampler.draw_s(1, 0.5 * i, idle_s) * 1000.0 == pytest.approx(expected_ms, rel=1e-12)


# ---------------------------------------------------------------- the block is only a speed device

STREAM = BLOCK + 100                     # past one refill of the block
GRID_MS = np.arange(1.0, 1001.0)         # one batch size, 1000 distinct measured runs


def _one_at_a_time(draw: str, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(getattr(rng, draw)()) for _ in range(STREAM)]


def test_measured_draws_take_the_generators_uniforms_in_order():
    """Without slow spells, batch n takes the measured run at quantile u_n, the generator's n-th
    uniform: the run at index floor(u_n x 1000) of the sorted grid."""
    sampler = MeasuredSampler(LatencyProfile({1: GRID_MS}, measured=True), 1, np.random.default_rng(9))
    got = [sampler.draw_s(1) * 1000.0 for _ in range(STREAM)]
    assert got == pytest.approx([GRID_MS[int(u * GRID_MS.size)] for u in _one_at_a_time("random", 9)], rel=1e-12)


def test_batches_at_one_instant_share_the_spell_and_take_fresh_noise_in_order():
    """With slow spells, each batch takes a pair of normal scores from the stream (the spell's
    innovation, then its own noise). At one instant the spell does not move: batch n has
    z = sqrt(share) x score 0 + sqrt(1 - share) x score 2n + 1."""
    share = 0.36
    sampler = MeasuredSampler(LatencyProfile({1: GRID_MS}, measured=True, spells=SlowSpells(share, 1.0)), 1,
                              np.random.default_rng(10))
    got = [sampler.draw_s(1, 2.0) * 1000.0 for _ in range(STREAM // 2)]
    scores = _one_at_a_time("standard_normal", 10)
    z = [math.sqrt(share) * scores[0] + math.sqrt(1.0 - share) * scores[2 * n + 1] for n in range(STREAM // 2)]
    quantiles = [0.5 * math.erfc(-x / math.sqrt(2.0)) for x in z]
    assert got == pytest.approx([GRID_MS[min(int(u * GRID_MS.size), GRID_MS.size - 1)] for u in quantiles], rel=1e-12)


def test_parametric_draws_take_the_distributions_unit_draws_in_order():
    """Batch n of size 3 takes the n-th unit exponential times the batch mean, 2 + 1 x (3 - 1) ms."""
    sampler = ParametricSampler(Exponential(mean_ms=2.0, per_item_ms=1.0), 3, np.random.default_rng(11))
    got = [sampler.draw_s(3) for _ in range(STREAM)]
    assert got == pytest.approx([e * 0.004 for e in _one_at_a_time("standard_exponential", 11)], rel=1e-12)


# ---------------------------------------------------------------- the replay's inputs


def _counts_trace(tmp_path, counts) -> str:
    path = tmp_path / "counts.txt"
    path.write_text(" ".join(map(str, counts)) + "\n")
    return path


def test_a_counts_trace_plays_a_list_of_windows_one_after_another(tmp_path):
    """start_s = [6, 0, 6] with 2 s windows over a trace whose second i holds 10 + i requests:
    seconds 6, 7, then 0, 1, then 6, 7 again, from time 0, each second's count exactly."""
    path = _counts_trace(tmp_path, [10 + i for i in range(8)])
    joined = Replay(path, start_s=[6, 0, 6], length_s=2)
    assert (joined.start_s, joined.length_s, joined.span_s) == (0.0, 6.0, 6.0)
    times = joined.times_s(6.0, np.random.default_rng(8))
    assert np.bincount(times.astype(int), minlength=6).tolist() == [16, 17, 10, 11, 16, 17]
    assert joined.mean_rate_rps(6.0) == pytest.approx((16 + 17 + 10 + 11 + 16 + 17) / 6.0, rel=1e-12)


def test_a_list_of_starts_on_a_timestamps_trace_is_refused(tmp_path):
    path = tmp_path / "stamps.csv"
    path.write_text("t\n0.0\n0.5\n1.5\n")
    with pytest.raises(InputError) as info:
        Replay(path, start_s=[0, 1], length_s=1, where="scenario.arrivals")
    assert (info.value.where, info.value.problem) == (
        "scenario.arrivals.start_s", f"a list of starts applies only to a counts trace; {path} is timestamps")


def test_the_largest_int64_count_is_valid_and_not_blamed_for_the_one_past_it(tmp_path):
    """9223372036854775807 (2**63 - 1) is a count a trace may hold; 2**63, after it, is not, and the
    error names that third value."""
    largest = 2**63 - 1
    assert Replay(_counts_trace(tmp_path, [1, largest]), format="counts").counts.tolist() == [1, largest]
    path = _counts_trace(tmp_path, [1, largest, largest + 1])
    with pytest.raises(InputError) as info:
        Replay(path, format="counts")
    assert info.value.where == f"{path} value 3"
    assert info.value.problem == f"expected a non-negative integer count, got '{largest + 1}'"


@pytest.mark.parametrize("kwargs, where, problem", [
    ({"start_s": [1, 2]}, "s.length_s", "is required with a list of starts (each window's length)"),
    ({"start_s": [], "length_s": 2}, "s.start_s", "needs at least one start"),
    ({"start_s": [1], "length_s": 2.5}, "s.length_s", "must be whole seconds for a counts trace, got 2.5"),
    ({"start_s": [1, "x"], "length_s": 2}, "s.start_s[1]", "must be a number >= 0, got 'x'"),
    ({"start_s": [0, 1.5], "length_s": 2}, "s.start_s[1]",
     "window [1.5, 3.5) s must start on a whole second and lie inside the trace span of 8 s in {path}"),
    ({"start_s": [7], "length_s": 2}, "s.start_s[0]",
     "window [7, 9) s must start on a whole second and lie inside the trace span of 8 s in {path}"),
])
def test_each_refusal_of_a_list_of_windows_names_its_field_and_what_is_expected(tmp_path, kwargs, where, problem):
    """The joined replay's refusals, word for word: the field (the list itself, or the one window
    at fault) and what it must be, with the window worked out from the start and the length."""
    path = _counts_trace(tmp_path, [10 + i for i in range(8)])
    with pytest.raises(InputError) as info:
        Replay(path, where="s", **kwargs)
    assert (info.value.where, info.value.problem) == (where, problem.format(path=path))


def test_a_window_that_ends_exactly_at_the_trace_end_is_accepted(tmp_path):
    joined = Replay(_counts_trace(tmp_path, [10 + i for i in range(8)]), start_s=[6, 0], length_s=2)
    assert joined.counts.tolist() == [16, 17, 10, 11]


def test_each_arrival_process_shows_its_settings_in_its_repr(tmp_path):
    """What error messages and run listings show of a scenario's arrivals."""
    from traces.arrivals import Bursty, Piecewise, Poisson

    assert repr(Poisson(200.0)) == "Poisson(rate_rps=200.0)"
    assert repr(Bursty([5.0, 50.0], [2.0, 0.5])) == "Bursty(rates_rps=[5.0, 50.0], mean_dwell_s=[2.0, 0.5])"
    assert repr(Piecewise([10.0, 20.0], 1.5)) == "Piecewise(rates_rps=[10.0, 20.0], interval_s=1.5, repeat=True)"
    path = _counts_trace(tmp_path, [1, 2, 3])
    assert repr(Replay(path, start_s=1, length_s=2)) == (
        f"Replay(path={path!r}, format='counts', start_s=1.0, length_s=2.0, rate_scale=1.0)")

"""Multi-tenant scheduling pieces: token-bucket admission, strict priority, VTC fair sharing.

Each is checked against an independent computation: the token bucket against exact rational
arithmetic (a closed form for evenly spaced arrivals, a ``Fraction`` recurrence otherwise); the
priority queue against a brute-force model that sorts everything waiting (Hypothesis drives the
pushes and takes); the fair queue against FIFO for one tenant, against hand-worked lifts, and on a
small discrete-event loop of c replicas against the service-gap bound derived in
``sim/core/tenancy.py`` and against the weights its shares must converge to.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from sim.core.queues import FifoQueue
from sim.core.tenancy import FairQueue, PriorityQueue, TokenBucket
from traces.errors import InputError

if not os.getenv("HYPOTHESIS_STORAGE_DIRECTORY"):  # keep Hypothesis's caches out of the working tree
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "servesim-hypothesis")

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None)


# --- token bucket -------------------------------------------------------------------------------

def exact_admits(times: list[Fraction], rate: Fraction, burst: int) -> list[bool]:
    """The token bucket in exact arithmetic: the reference the float one must match."""
    tokens, last, out = Fraction(burst), Fraction(0), []  # full at time 0, as TokenBucket starts
    for t in times:
        tokens = min(Fraction(burst), tokens + rate * (t - last))
        last = t
        out.append(tokens >= 1)
        if tokens >= 1:
            tokens -= 1
    return out


@pytest.mark.parametrize("burst, rate, spacing", [
    (1, "10", "0.1"),     # a token due exactly at each arrival: all admitted despite float rounding
    (5, "3", "0.1"),      # a burst of 5, then 3 in every 10 arrivals
    (3, "7", "0.1"),
    (2, "1", "0.25"),
    (4, "2.5", "0.1"),
    (1, "0", "0.01"),     # no refill: the burst only
    (3, "30", "0.05"),    # refill faster than arrivals: all admitted
])
def test_token_bucket_evenly_spaced_arrivals_match_the_closed_form(burst, rate, spacing):
    """Arrivals at 0, d, 2d, ...: while r*d < 1 the bucket, full at the start, never reaches its cap
    again, so the first n arrivals admit min(n, B + floor(r*d*(n-1))) (all n when r*d >= 1)."""
    r, d, n = Fraction(rate), Fraction(spacing), 400
    bucket = TokenBucket(float(rate), burst)
    got = [bucket.admit(i * float(spacing)) for i in range(n)]
    if r * d >= 1:
        expected_total = list(range(1, n + 1))
    else:
        expected_total = [min(k, burst + math.floor(r * d * (k - 1))) for k in range(1, n + 1)]
    assert list(itertools.accumulate(got)) == expected_total
    assert got == exact_admits([i * d for i in range(n)], r, burst)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_token_bucket_random_arrivals_match_exact_arithmetic(seed):
    """Bursty arrivals on a millisecond grid (exact as fractions), with idle spells that fill the bucket to its cap."""
    rng = np.random.default_rng(seed)
    rate_rps, burst = [(5, 3), (40, 1), (12, 8), (100, 2)][seed]
    gaps_ms = np.where(rng.random(3000) < 0.05, rng.integers(500, 3000, 3000), rng.integers(0, 60, 3000))
    times_ms = np.cumsum(gaps_ms).tolist()
    bucket = TokenBucket(float(rate_rps), burst)
    got = [bucket.admit(t / 1000) for t in times_ms]
    expected = exact_admits([Fraction(t, 1000) for t in times_ms], Fraction(rate_rps), burst)
    assert got == expected
    assert 0 < sum(got) < len(got)  # both decisions occur: the comparison is telling


@pytest.mark.parametrize("rate, burst", [(-1.0, 1), (math.inf, 1), (1.0, 0), (1.0, 2.5), (1.0, True)])
def test_token_bucket_rejects_bad_settings(rate, burst):
    with pytest.raises(InputError):
        TokenBucket(rate, burst)


# --- priority queue -----------------------------------------------------------------------------

@st.composite
def priority_scripts(draw):
    """Tenants with levels, deadlines, optional per-level limits, and a script of pushes and takes."""
    priority_of = draw(st.lists(st.integers(1, 4), min_size=1, max_size=5))
    limits = draw(st.dictionaries(st.integers(1, 4), st.integers(0, 4), max_size=3))
    ops = draw(st.lists(st.one_of(
        st.tuples(st.just("push"), st.integers(0, len(priority_of) - 1), st.integers(0, 20)),
        st.tuples(st.just("take"), st.integers(1, 6), st.just(0))), min_size=1, max_size=80))
    return priority_of, limits, ops


@PROPERTY
@given(script=priority_scripts(), within=st.sampled_from(["fifo", "edf"]))
def test_priority_queue_matches_a_brute_force_model(script, within):
    priority_of, limits, ops = script
    tenant_of: list[int] = []
    deadlines_s: list[float] = []
    queue = PriorityQueue(tenant_of, priority_of, deadlines_s, within=within, level_limits=limits)
    waiting: list[tuple] = []  # the model: (level, order key, arrival, enqueue_s, request)
    taken: list[tuple[int, int]] = []  # (level, arrival) in take order
    now = 0.0
    for arrival, (op, a, b) in enumerate(ops):
        now += 0.5
        if op == "push":
            request = len(tenant_of)
            tenant_of.append(a)
            deadlines_s.append(now + b)
            level = priority_of[a]
            full = limits.get(level, 0) and sum(w[0] == level for w in waiting) >= limits[level]
            assert queue.push(request, now) is (False if full else None)
            if not full:
                waiting.append((level, deadlines_s[request] if within == "edf" else 0.0, arrival, now, request))
        else:
            n = min(a, len(waiting))
            got = queue.take() if n == 1 and a == 1 else queue.take_n(n)
            got = [got] if isinstance(got, int) else got
            waiting.sort()
            assert got == [w[4] for w in waiting[:n]]
            taken += [(w[0], w[2]) for w in waiting[:n]]
            del waiting[:n]
        assert len(queue) == len(waiting) and bool(queue) == bool(waiting)
        if waiting:
            assert queue.oldest_s() == min(w[3] for w in waiting)
    # premium is never taken after a lower level's request that arrived later
    for i, (level_i, arrival_i) in enumerate(taken):
        assert not any(level_j < level_i and arrival_j < arrival_i for level_j, arrival_j in taken[i + 1:])
    waiting.sort()
    assert queue.drain() == [w[4] for w in waiting]
    assert len(queue) == 0 and not queue


def test_priority_queue_edf_within_a_level_fifo_between_equal_deadlines():
    tenant_of = [1, 0, 0, 0, 1, 0]  # tenant 0 premium (level 1), tenant 1 level 2
    deadlines_s = [1.0, 9.0, 5.0, 5.0, 0.5, 7.0]
    queue = PriorityQueue(tenant_of, [1, 2], deadlines_s, within="edf")
    for request in range(6):
        queue.push(request, 0.1 * request)
    assert queue.oldest_s() == 0.0  # request 0, though it is served last-but-one
    assert queue.take_n(3) == [2, 3, 5]  # level 1 by deadline, 2 before 3 (same deadline, earlier)
    assert queue.oldest_s() == 0.0
    assert queue.take_n(5) == [1, 4, 0]  # the rest of level 1, then level 2 by deadline
    assert not queue


@pytest.mark.parametrize("discipline, order", [
    ("priority-edf", [2, 3, 5, 1, 4, 0]),   # level 1 by deadline, then level 2 by deadline
    ("priority", [1, 2, 3, 5, 0, 4]),       # level 1 in arrival order, then level 2
    ("edf", [4, 0, 2, 3, 5, 1]),            # by deadline alone
    ("fifo", [0, 1, 2, 3, 4, 5]),
])
def test_each_queue_discipline_of_a_scenario_builds_its_order(discipline, order):
    """A deployment's ``queue`` names its order (``docs/tenants.md``): the queue ``make_queue``
    builds for each name serves the same six requests in that order."""
    from sim.core.admission import QueueTenancy
    from sim.core.queues import make_queue

    tenant_of = [1, 0, 0, 0, 1, 0]  # tenant 0 premium (level 1), tenant 1 level 2
    deadlines_s = [1.0, 9.0, 5.0, 5.0, 0.5, 7.0]
    queue = make_queue(discipline, deadlines_s, QueueTenancy(tenant_of, (1, 2), (1.0, 1.0), {}, {}))
    for request in range(6):
        queue.push(request, 0.1 * request)
    assert queue.take_n(6) == order


def test_priority_queue_takes_numpy_arrays():
    tenant_of, deadlines_s = np.array([0, 1, 0]), np.array([3.0, 2.0, 1.0])
    queue = PriorityQueue(tenant_of, np.array([2, 1]), deadlines_s, within="edf", level_limits={np.int64(2): 1})
    assert [queue.push(np.int64(r), 0.0) for r in range(3)] == [None, None, False]
    assert queue.levels == (1, 2) and queue.drain() == [1, 0]


def test_priority_queue_level_limits_refuse_only_the_full_level():
    tenant_of = [0, 0, 0, 1, 1, 1, 2, 2]
    queue = PriorityQueue(tenant_of, [1, 2, 1], [0.0] * 8, level_limits={1: 3, 2: 0})
    assert [queue.push(r, float(r)) for r in (0, 1, 6, 2)] == [None, None, None, False]  # level 1 holds 3
    assert [queue.push(r, float(r)) for r in (3, 4, 5)] == [None, None, None]  # level 2 unbounded
    assert (queue.waiting(1), queue.waiting(2), len(queue)) == (3, 3, 6)
    assert queue.take() == 0
    assert queue.push(2, 9.0) is None  # a slot freed
    assert queue.drain() == [1, 6, 2, 3, 4, 5]


@pytest.mark.parametrize("kwargs", [dict(within="lifo"), dict(priority_of=[0, 1]), dict(priority_of=[1.0]),
                                    dict(level_limits={0: 3}), dict(level_limits={1: -1})])
def test_priority_queue_rejects_bad_settings(kwargs):
    args = dict(tenant_of=[0], priority_of=[1, 2], deadlines_s=[0.0]) | kwargs
    with pytest.raises(InputError):
        PriorityQueue(**args)


# --- fair queue ---------------------------------------------------------------------------------

def test_fair_queue_with_one_tenant_is_fifo():
    rng = np.random.default_rng(7)
    fair, fifo = FairQueue([0] * 500, [2.0], 1), FifoQueue()
    pushed, now = 0, 0.0
    for _ in range(300):
        now += float(rng.exponential(1.0))
        if rng.random() < 0.55 and pushed < 500:
            fair.push(pushed, now)
            fifo.push(pushed, now)
            pushed += 1
        elif fifo:
            n = int(rng.integers(1, 5))
            n = min(n, len(fifo))
            batch = fair.take_n(n)
            assert batch == fifo.take_n(n)
            fair.served(batch, float(rng.exponential(1.0)))
        assert len(fair) == len(fifo) and bool(fair) == bool(fifo)
        if fifo:
            assert fair.oldest_s() == fifo.oldest_s()
    assert fair.drain() == fifo.drain()


def test_fair_queue_counters_are_real_service_over_weight():
    """Estimates charged at the take are replaced by the real share when the batch ends."""
    rng = np.random.default_rng(3)
    weights = [1.0, 3.0, 0.5]
    tenant_of = rng.integers(0, 3, 600).tolist()
    queue = FairQueue(tenant_of, weights, 3)
    for request in range(600):
        queue.push(request, 0.0)
    received_s = [0.0, 0.0, 0.0]
    in_flight = []
    while queue or in_flight:
        if queue and (len(in_flight) < 3 or rng.random() < 0.5):
            in_flight.append(queue.take_n(int(rng.integers(1, 6))))
            continue
        batch = in_flight.pop(int(rng.integers(len(in_flight))))
        service_s = float(rng.gamma(2.0, 0.01 * len(batch)))
        queue.served(batch, service_s)
        for request in batch:
            received_s[tenant_of[request]] += service_s / len(batch)
    assert queue.counters == pytest.approx([s / w for s, w in zip(received_s, weights)], rel=1e-9)


def test_fair_queue_lift_leaves_no_banked_credit():
    tenant_of = [0] * 100 + [1] * 40
    queue = FairQueue(tenant_of, [1.0, 1.0], 2)
    for request in range(100):
        queue.push(request, 0.0)
    for _ in range(60):  # tenant 1 idle while tenant 0 is served 60 s
        queue.served([queue.take()], 1.0)
    assert queue.counters == (60.0, 0.0)
    for request in range(100, 140):
        queue.push(request, 60.0)
    assert queue.counters == (60.0, 60.0)  # lifted to the smallest backlogged counter
    picks = []
    for _ in range(20):
        request = queue.take()
        picks.append(tenant_of[request])
        queue.served([request], 1.0)
    assert picks == [0, 1] * 10  # they alternate: tenant 1 does not get 60 s in a row


def test_fair_queue_lift_with_nobody_backlogged_uses_the_last_served_and_never_lowers():
    tenant_of = [0, 0, 1, 2]
    queue = FairQueue(tenant_of, [1.0, 2.0, 1.0], 3)
    queue.push(0, 0.0)
    queue.push(2, 0.0)
    assert queue.take() == 0  # counters tie at 0: the lowest tenant index
    queue.served([0], 4.0)
    assert queue.take() == 2  # tenant 1 now has the smallest counter
    queue.served([2], 4.0)
    assert queue.counters == (4.0, 2.0, 0.0)
    queue.push(3, 1.0)  # nobody waits: tenant 2 lifted to the last-taken tenant 1's counter
    assert queue.counters == (4.0, 2.0, 2.0)
    assert queue.take() == 3  # charged the mean share so far, 4 s
    queue.served([3], 1.0)  # then 1 s in place of the 4
    assert queue.counters == (4.0, 2.0, 3.0)
    queue.push(1, 2.0)  # tenant 0 is ahead of the last-taken tenant 2: no lift, and none downwards
    assert queue.counters == (4.0, 2.0, 3.0)


def test_fair_queue_lift_goes_to_the_smallest_backlogged_counter_not_the_last_taken():
    queue = FairQueue([0, 1, 1, 0, 2], [1.0, 1.0, 1.0], 3)
    for request in range(4):
        queue.push(request, 0.0)
    assert queue.take() == 0
    queue.served([0], 4.0)
    assert queue.take() == 1  # charged the mean share, 4 s
    queue.served([1], 1.0)  # corrected to 1 s: the mean share is now 2.5 s
    assert queue.take() == 2  # tenant 1 (counter 1) again, charged 2.5 s; its line is now empty
    assert queue.counters == (4.0, 3.5, 0.0)
    queue.push(4, 1.0)  # only tenant 0 waits: tenant 2 is lifted to its 4, not to tenant 1's 3.5
    assert queue.counters == (4.0, 3.5, 4.0)


def test_fair_queue_refund_takes_the_estimate_back():
    queue = FairQueue([0, 1, 0, 1, 0], [1.0, 1.0], 2)
    for request in range(4):
        queue.push(request, 0.0)
    assert queue.take() == 0
    queue.served([0], 1.0)
    assert queue.counters == (1.0, 0.0)
    dropped = queue.take()  # tenant 1, charged the mean share so far, 1 s
    assert (dropped, queue.counters) == (1, (1.0, 1.0))
    queue.refund([dropped])
    assert queue.counters == (1.0, 0.0)
    queue.push(4, 1.0)
    assert queue.drain() == [2, 3, 4] and not queue  # oldest first


@pytest.mark.parametrize("weights, n", [([1.0, 0.0], 2), ([1.0], 2), ([1.0, math.nan], 2), ([], 0)])
def test_fair_queue_rejects_bad_settings(weights, n):
    with pytest.raises(InputError):
        FairQueue([0], weights, n)


def shared_queue_run(weights: list[float], replicas: int, max_batch: int, n_batches: int, seed: int,
                     large: tuple[int, ...] = (), charge_real_service: bool = True
                     ) -> tuple[list[float], list[list[float]], float]:
    """c replicas serve one FairQueue of always-backlogged tenants. A free replica takes requests
    until it holds a random k in 1..B (what memory allows) or has taken a request of a ``large``
    tenant (which fills the memory); the batch lasts 1 ms plus 1 ms per request (5 ms per large
    one), times a gamma draw of mean 1. Returns each
    tenant's service seconds, the normalised service vectors after every batch end, and the largest
    per-request share s / k. With ``charge_real_service`` False the queue is charged 1 ms per
    request whatever the batch lasted: request counting, the mutation the checks must catch."""
    rng = np.random.default_rng(seed)
    n_tenants = len(weights)
    tenant_of: list[int] = []
    queue = FairQueue(tenant_of, weights, n_tenants)

    def arrive(tenant: int, now: float) -> None:
        tenant_of.append(tenant)
        queue.push(len(tenant_of) - 1, now)

    for tenant in range(n_tenants):
        for _ in range(2 * replicas * max_batch):  # a batch never empties a tenant's line: always backlogged
            arrive(tenant, 0.0)
    received_s = [0.0] * n_tenants
    normalised = [[0.0] * n_tenants]
    ends: list[tuple[float, int, list[int], float]] = []
    share_max_s, seq = 0.0, itertools.count()

    def start(now: float) -> None:
        batch, k = [], int(rng.integers(1, max_batch + 1))
        while len(batch) < k and not (batch and tenant_of[batch[-1]] in large):
            batch.append(queue.take())
            arrive(tenant_of[batch[-1]], now)
        work_ms = 1 + sum(5 if tenant_of[r] in large else 1 for r in batch)
        service_s = 1e-3 * work_ms * float(rng.gamma(2.0, 0.5))
        heapq.heappush(ends, (now + service_s, next(seq), batch, service_s))

    for _ in range(replicas):
        start(0.0)
    for _ in range(n_batches):
        now, _, batch, service_s = heapq.heappop(ends)
        share_s = service_s / len(batch)
        share_max_s = max(share_max_s, share_s)
        queue.served(batch, service_s if charge_real_service else 1e-3 * len(batch))
        for request in batch:
            received_s[tenant_of[request]] += share_s
        normalised.append([s / w for s, w in zip(received_s, weights)])
        start(now)
    return received_s, normalised, share_max_s


def widest_gap(normalised: list[list[float]], i: int, j: int) -> float:
    """max over t1, t2 of D(t2) - D(t1), D = N_i - N_j: max D - min D."""
    gaps = [n[i] - n[j] for n in normalised]
    return max(gaps) - min(gaps)


CASES = [([1.0, 3.0], 2, 4, (), 1), ([1.0, 2.0, 5.0], 3, 8, (), 2), ([1.0, 1.0], 1, 1, (), 3),
         ([2.0, 1.0, 1.0], 4, 2, (), 4), ([1.0, 3.0], 2, 4, (0,), 5)]


@pytest.mark.parametrize("weights, replicas, max_batch, large, seed", CASES)
def test_fair_queue_shares_converge_to_the_weights_within_the_gap_bound(weights, replicas, max_batch, large, seed):
    received_s, normalised, share_max_s = shared_queue_run(weights, replicas, max_batch, 8000, seed, large)
    total_s = sum(received_s)
    for tenant, w in enumerate(weights):
        assert received_s[tenant] / total_s == pytest.approx(w / sum(weights), rel=0.03)
    for i, j in itertools.combinations(range(len(weights)), 2):
        bound = 2 * replicas * max_batch * share_max_s / min(weights[i], weights[j])
        assert widest_gap(normalised, i, j) <= bound


def test_counting_requests_instead_of_service_fails_both_checks():
    """The checks can fail: when tenant 0's requests are large (each costs 5 times more and rides
    alone), charging requests rather than service gives tenant 0 far more than its weight, and the
    normalised services drift apart without bound."""
    weights, replicas, max_batch = [1.0, 3.0], 2, 4
    received_s, normalised, share_max_s = shared_queue_run(weights, replicas, max_batch, 8000, 5, (0,),
                                                           charge_real_service=False)
    assert received_s[0] / sum(received_s) > 0.25 + 0.15
    assert widest_gap(normalised, 0, 1) > 10 * 2 * replicas * max_batch * share_max_s / min(weights)

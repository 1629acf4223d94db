"""Tests for traces.arrivals: statistics of each generator, replay semantics, strict config errors.

Statistical bands are 4 sigma of the quantity's sampling distribution (computed in each test),
so a correct generator fails a given assertion with probability < 1e-4 -- and the seeds are
fixed, so the suite is deterministic anyway.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest

from conftest import SHARED
from traces.arrivals import Bursty, Piecewise, Poisson, Replay, from_config
from traces.errors import InputError

TWITTER = SHARED / "data" / "twitter_trace_ipa" / "workload.txt"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------- Poisson


def test_poisson_count_interarrival_and_cv():
    rate, dur = 50.0, 2000.0
    t = Poisson(rate).times_s(dur, rng(1))
    n, mean_n = len(t), rate * dur
    # N ~ Poisson(1e5): sd = sqrt(1e5) ~ 316
    assert abs(n - mean_n) < 4 * math.sqrt(mean_n)
    gaps = np.diff(t)
    # mean of N iid Exp(rate) gaps has relative sd 1/sqrt(N) ~ 0.32%
    assert abs(gaps.mean() * rate - 1) < 4 / math.sqrt(n)
    # sample CV of exponential gaps has sd ~ 1/sqrt(N) ~ 0.003; a regular or bursty process is far off
    assert abs(gaps.std() / gaps.mean() - 1) < 0.02
    assert Poisson(rate).mean_rate_rps(dur) == rate


# ---------------------------------------------------------------- Bursty

BURSTY = dict(rates_rps=[2.0, 50.0], mean_dwell_s=[10.0, 2.0])  # pi = (5/6, 1/6): mean 10 rps


def test_bursty_mean_rate_and_dispersion():
    b = Bursty(**BURSTY)
    assert b.mean_rate_rps(1.0) == pytest.approx(10.0)
    dur = 100_000.0
    t = b.times_s(dur, rng(2))
    # Var N(T) ~ T * (mean + 2 pi0 pi1 (r1 - r0)^2 / (1/d0 + 1/d1)) = T * (10 + 1067) for an MMPP
    var_n = dur * (10 + 2 * (5 / 6) * (1 / 6) * 48**2 / (0.1 + 0.5))
    assert abs(len(t) - 10 * dur) < 4 * math.sqrt(var_n)  # ~4.2% band
    counts = np.bincount(t.astype(np.int64), minlength=int(dur))
    # Poisson gives 1 +- ~0.005 over 1e5 bins; this MMPP gives ~20
    assert counts.var() / counts.mean() > 5


def test_poisson_dispersion_is_one_as_control():
    t = Poisson(10.0).times_s(100_000.0, rng(3))
    counts = np.bincount(t.astype(np.int64), minlength=100_000)
    # dispersion index of Poisson counts over 1e5 bins has sd ~ sqrt(2/1e5) ~ 0.0045
    assert abs(counts.var() / counts.mean() - 1) < 0.02


def test_bursty_starts_in_stationary_state():
    # mean count in [0, 0.2) over many seeds must match the stationary mean 10 * 0.2 = 2;
    # starting always in the low state would give ~0.5. Per-seed variance <~ 15, so SE ~ 0.09.
    b = Bursty(**BURSTY)
    mean = np.mean([len(b.times_s(0.2, rng(s))) for s in range(2000)])
    assert abs(mean - 2.0) < 0.4


# ---------------------------------------------------------------- Piecewise


def test_piecewise_counts_per_interval_repeat():
    p = Piecewise([10.0, 0.0, 40.0], interval_s=100.0)
    t = p.times_s(600.0, rng(4))
    counts = np.bincount((t // 100).astype(int), minlength=6)
    for got, lam in zip(counts, [1000, 0, 4000, 1000, 0, 4000]):
        assert abs(got - lam) < 4 * math.sqrt(lam) + 1e-9  # Poisson(lam); rate 0 -> exactly 0
    assert p.mean_rate_rps(600.0) == pytest.approx(10000 / 600)
    assert p.mean_rate_rps(250.0) == pytest.approx(3000 / 250)  # partial last interval


def test_piecewise_hold_last_rate():
    p = Piecewise([10.0, 0.0, 40.0], interval_s=100.0, repeat=False)
    counts = np.bincount((p.times_s(500.0, rng(5)) // 100).astype(int), minlength=5)
    assert counts[1] == 0
    for got in counts[2:]:
        assert abs(got - 4000) < 4 * math.sqrt(4000)  # Poisson(4000): sd 63
    assert p.mean_rate_rps(500.0) == pytest.approx((1000 + 3 * 4000) / 500)


# ---------------------------------------------------------------- Replay: counts


def test_replay_counts_scale_one_exact(tmp_path):
    write(tmp_path, "w.txt", "3 0 5 2 7 1 4")  # no trailing newline, like the Twitter file
    r = from_config({"kind": "replay", "path": "w.txt"}, tmp_path)  # relative to base_dir
    assert r.format == "counts"
    t = r.times_s(7.0, rng(6))
    assert np.bincount(np.floor(t).astype(int), minlength=7).tolist() == [3, 0, 5, 2, 7, 1, 4]
    assert r.mean_rate_rps(7.0) == pytest.approx(22 / 7)


def test_replay_counts_half_scale_binomial_band(tmp_path):
    write(tmp_path, "w.txt", " ".join(["3", "7"] * 1000) + "\n")
    r = Replay(tmp_path / "w.txt", rate_scale=0.5)
    t = r.times_s(2000.0, rng(7))
    # each second: floor(c/2) + Bernoulli(0.5); total mean 5000, variance 2000 * 0.25 -> sd 22.4
    assert abs(len(t) - 5000) < 4 * math.sqrt(500)
    per_sec = np.bincount(np.floor(t).astype(int), minlength=2000)
    assert set(per_sec[0::2]) <= {1, 2} and set(per_sec[1::2]) <= {3, 4}  # floor or floor + 1
    assert r.mean_rate_rps(2000.0) == pytest.approx(2.5)


def test_replay_counts_window(tmp_path):
    write(tmp_path, "w.txt", " ".join(str(i) for i in range(10)))
    r = Replay(tmp_path / "w.txt", start_s=3, length_s=4)
    t = r.times_s(10.0, rng(8))  # duration longer than the window: nothing after 4 s
    assert np.bincount(np.floor(t).astype(int)).tolist() == [3, 4, 5, 6]
    assert r.mean_rate_rps(4.0) == pytest.approx(18 / 4)
    r2 = Replay(tmp_path / "w.txt", start_s=5)  # length defaults to the duration
    assert np.bincount(np.floor(r2.times_s(3.0, rng(8))).astype(int)).tolist() == [5, 6, 7]
    assert r2.mean_rate_rps(2.5) == pytest.approx((5 + 6 + 7 * 0.5) / 2.5)  # last second cut in half


# ---------------------------------------------------------------- Replay: timestamps


def test_replay_csv_seconds_window_exact(tmp_path):
    write(tmp_path, "t.csv", "t,x\n10.0,1\n10.5,1\n11.2,1\n13.0,1\n15.9,1\n")
    r = from_config({"kind": "replay", "path": "t.csv", "start_s": 1.0, "length_s": 4.0}, tmp_path)
    np.testing.assert_allclose(r.times_s(100.0, rng(9)), [0.2, 2.0])
    assert r.mean_rate_rps(4.0) == pytest.approx(2 / 4)


def test_replay_datetime_csv(tmp_path):
    write(tmp_path, "az.csv", "ContextTokens,TIMESTAMP\n374,2023-11-16 18:15:46.6805900\n"
          "396,2023-11-16 18:15:50.9951690\n10,2023-11-16 18:16:46.6805900\n")
    r = Replay(tmp_path / "az.csv", column="TIMESTAMP")
    assert r.span_s == pytest.approx(60.0)
    np.testing.assert_allclose(r.times_s(60.0, rng(10)), [0.0, 4.314579], atol=1e-9)  # [0, span)
    r = Replay(tmp_path / "az.csv", column="TIMESTAMP", start_s=4.0, length_s=56.0)
    np.testing.assert_allclose(r.times_s(100.0, rng(10)), [0.314579], atol=1e-9)


def test_replay_jsonl_ms(tmp_path):
    rows = [{"timestamp": ms, "input_length": 5} for ms in (0, 1500, 2500, 9000)]
    write(tmp_path, "m.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    r = from_config({"kind": "replay", "path": "m.jsonl", "unit": "ms"}, tmp_path)
    np.testing.assert_allclose(r.times_s(5.0, rng(11)), [0.0, 1.5, 2.5])


def test_replay_parquet_default_first_column(tmp_path):
    pd = pytest.importorskip("pandas")
    pd.DataFrame({"us": [0, 2_000_000, 3_500_000], "other": [1, 2, 3]}).to_parquet(tmp_path / "p.parquet")
    r = Replay(tmp_path / "p.parquet", unit="us")
    np.testing.assert_allclose(r.times_s(3.0, rng(12)), [0.0, 2.0])


def test_replay_timestamps_thinning_and_copies(tmp_path):
    base = np.concatenate(([0.0], np.sort(rng(13).uniform(0, 1000, 3999))))  # time 0 = first stamp
    span = base[-1]
    write(tmp_path, "t.csv", "t\n" + "\n".join(repr(float(x)) for x in base) + "\n")
    thin = Replay(tmp_path / "t.csv", rate_scale=0.25).times_s(span, rng(14))
    n = int((base < base[-1]).sum())  # window [0, span) excludes the last stamp
    assert np.isin(thin, base).all()  # thinning only drops
    assert abs(len(thin) - 0.25 * n) < 4 * math.sqrt(n * 0.25 * 0.75)  # Binomial(n, 0.25)
    up = Replay(tmp_path / "t.csv", rate_scale=2.5)
    t = up.times_s(span, rng(15))
    # each stamp: itself + 1 copy + Bernoulli(0.5) more; extra count ~ n + Binomial(n, 0.5)
    assert np.isin(base[:-1], t).all()
    assert abs(len(t) - 2.5 * n) < 4 * math.sqrt(n * 0.25)
    # copies stay in their source's 1 s bin, so every bin holds >= 2x and <= 3x its original count
    orig = np.bincount(base[:-1].astype(int), minlength=1000)
    got = np.bincount(t.astype(int), minlength=1000)
    assert (got >= 2 * orig).all() and (got <= 3 * orig).all()
    assert up.mean_rate_rps(span) == pytest.approx(2.5 * n / span)


# ---------------------------------------------------------------- common properties


def all_kinds(tmp_path: pathlib.Path) -> list:
    write(tmp_path, "w.txt", " ".join(["4", "9", "0", "13"] * 30))
    write(tmp_path, "t.csv", "t\n" + "\n".join(str(0.37 * i) for i in range(400)))
    return [Poisson(20.0), Bursty(**BURSTY), Piecewise([5.0, 0.0, 30.0], 7.0),
            Replay(tmp_path / "w.txt", rate_scale=1.7), Replay(tmp_path / "t.csv", rate_scale=1.3)]


def test_sorted_in_range_and_deterministic(tmp_path):
    for proc in all_kinds(tmp_path):
        a = proc.times_s(97.3, rng(42))
        assert a.dtype == np.float64 and len(a) > 0, proc
        assert (np.diff(a) >= 0).all() and a[0] >= 0 and a[-1] < 97.3, proc
        np.testing.assert_array_equal(a, proc.times_s(97.3, rng(42)))
        assert not np.array_equal(a, proc.times_s(97.3, rng(43))), proc


def test_a_uniform_position_that_rounds_up_to_the_segment_end_is_kept_inside():
    """Positions are lo + u (hi - lo) with u < 1, but in floating point the largest u below 1 on
    [3, 7) gives exactly 7.0 (half an ulp, rounded to even): the clamp keeps it at the last double
    below 7, so an arrival never lands on a window's end (the window is half-open)."""
    from traces.arrivals import _uniform

    class LargestBelowOne:
        def random(self, n):
            return np.full(n, 1.0 - 2.0 ** -53)

    assert 3.0 + (1.0 - 2.0 ** -53) * 4.0 == 7.0                       # the rounding this guards against
    assert _uniform(np.array([3.0]), np.array([7.0]), LargestBelowOne()).tolist() == [np.nextafter(7.0, 0.0)]


def test_mean_rate_matches_empirical_over_seeds(tmp_path):
    # averaged over 40 seeds every generator's count should match mean_rate_rps * duration;
    # counts here are at most ~Poisson with some overdispersion, so use a generous 5-sigma band
    # with the empirical variance across seeds.
    for proc in all_kinds(tmp_path):
        n = np.array([len(proc.times_s(97.3, rng(s))) for s in range(40)])
        expect = proc.mean_rate_rps(97.3) * 97.3
        assert abs(n.mean() - expect) < 5 * max(n.std(), 1.0) / math.sqrt(40), proc


# ---------------------------------------------------------------- bad input


def raises(cfg: dict, base: pathlib.Path, *fragments: str) -> str:
    with pytest.raises(InputError) as e:
        from_config(cfg, base)
    msg = str(e.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)
    return msg


@pytest.mark.parametrize("cfg, where, message", [
    ([1], "arrivals", "arrivals: must be a table, got list"),
    ({"rate_rps": 1}, "arrivals", "arrivals.kind: required; one of bursty, piecewise, poisson, replay"),
    ({"kind": "gamma"}, "arrivals", "arrivals.kind: must be one of bursty, piecewise, poisson, replay; got 'gamma'"),
    ({"kind": 5}, "arrivals", "arrivals.kind: must be one of bursty, piecewise, poisson, replay; got 5"),
    ({"kind": "poisson", "rate_rps": 1, "rate": 2}, "arrivals",
     "arrivals.rate: unknown key for kind 'poisson'; allowed keys: kind, rate_rps"),
    ({"kind": "bursty", "rates_rps": [1]}, "arrivals", "arrivals.mean_dwell_s: required for kind 'bursty', missing"),
    ({"kind": "replay", "path": ""}, "arrivals", "arrivals.path: must be a non-empty string, got ''"),
    ({"kind": "replay", "path": 5}, "arrivals", "arrivals.path: must be a non-empty string, got 5"),
    ({"kind": "poisson", "rate_rps": -5}, "tenants[1].arrivals", "tenants[1].arrivals.rate_rps: must be a number > 0, got -5"),
])
def test_each_refusal_of_an_arrivals_table_word_for_word(tmp_path, cfg, where, message):
    """The whole line a user reads for each malformed ``[arrivals]`` table, named by where it is
    (a tenant's own table is named as such, down to the generator's own checks)."""
    with pytest.raises(InputError) as e:
        from_config(cfg, tmp_path, where)
    assert str(e.value) == message


def test_unknown_key(tmp_path):
    raises({"kind": "poisson", "rate_rps": 1, "rate": 2}, tmp_path, "arrivals.rate:", "allowed keys", "rate_rps")


def test_unknown_and_missing_kind(tmp_path):
    raises({"kind": "gamma"}, tmp_path, "arrivals.kind", "'gamma'", "poisson")
    raises({"rate_rps": 1}, tmp_path, "arrivals.kind", "required")


def test_negative_and_bad_rates(tmp_path):
    raises({"kind": "poisson", "rate_rps": -5}, tmp_path, "arrivals.rate_rps: must be a number > 0, got -5")
    raises({"kind": "poisson", "rate_rps": "5"}, tmp_path, "arrivals.rate_rps", "'5'")
    raises({"kind": "poisson", "rate_rps": True}, tmp_path, "arrivals.rate_rps")
    raises({"kind": "poisson", "rate_rps": float("nan")}, tmp_path, "arrivals.rate_rps", "nan")
    raises({"kind": "poisson"}, tmp_path, "arrivals.rate_rps", "missing")
    raises({"kind": "piecewise", "rates_rps": [0, 0], "interval_s": 1}, tmp_path, "arrivals.rates_rps", "> 0")
    raises({"kind": "piecewise", "rates_rps": [1, -2], "interval_s": 1}, tmp_path, "arrivals.rates_rps[1]")
    raises({"kind": "piecewise", "rates_rps": [], "interval_s": 1}, tmp_path, "arrivals.rates_rps", "non-empty")
    raises({"kind": "piecewise", "rates_rps": [1], "interval_s": 1, "repeat": "yes"}, tmp_path, "arrivals.repeat")
    raises({"kind": "bursty", "rates_rps": [1, 2, 3], "mean_dwell_s": [1, 1]}, tmp_path, "arrivals.rates_rps", "2")


def test_zero_dwell(tmp_path):
    raises({"kind": "bursty", "rates_rps": [1, 5], "mean_dwell_s": [0, 2]}, tmp_path,
           "arrivals.mean_dwell_s[0]", "> 0", "got 0")


def test_missing_file(tmp_path):
    raises({"kind": "replay", "path": "nope.txt"}, tmp_path, str(tmp_path / "nope.txt"), "file not found")


def test_missing_column(tmp_path):
    write(tmp_path, "t.csv", "a,b\n1,2\n")
    raises({"kind": "replay", "path": "t.csv", "column": "TIMESTAMP"}, tmp_path,
           "t.csv column 'TIMESTAMP'", "available columns: a, b")


def test_unsorted_timestamps_names_row(tmp_path):
    write(tmp_path, "t.csv", "t\n1\n2\n3\n2.5\n4\n")
    raises({"kind": "replay", "path": "t.csv"}, tmp_path, "t.csv row 4", "non-decreasing")


def test_empty_timestamps(tmp_path):
    write(tmp_path, "t.csv", "t\n")
    raises({"kind": "replay", "path": "t.csv"}, tmp_path, "t.csv", "found none")


def test_non_numeric_timestamp(tmp_path):
    write(tmp_path, "t.csv", "t\n1\n2\nx\n")
    raises({"kind": "replay", "path": "t.csv", "unit": "s"}, tmp_path, "t.csv row 3", "'x'")


def test_non_numeric_count(tmp_path):
    write(tmp_path, "w.txt", "1 2 3 4.5 6")
    raises({"kind": "replay", "path": "w.txt"}, tmp_path, "w.txt value 4", "'4.5'")
    write(tmp_path, "n.txt", "1 -2 3")
    raises({"kind": "replay", "path": "n.txt"}, tmp_path, "n.txt value 2", "non-negative")


def test_bad_replay_options(tmp_path):
    write(tmp_path, "w.txt", "1 2 3 4")
    raises({"kind": "replay", "path": "w.txt", "start_s": 0.5}, tmp_path, "arrivals.start_s", "whole seconds")
    raises({"kind": "replay", "path": "w.txt", "format": "csv"}, tmp_path, "arrivals.format", "timestamps")
    raises({"kind": "replay", "path": "w.txt", "rate_scale": 0}, tmp_path, "arrivals.rate_scale", "> 0")
    raises({"kind": "replay", "path": "w.txt", "column": "t"}, tmp_path, "arrivals.column", "timestamps")
    write(tmp_path, "x.txt", "hello")
    raises({"kind": "replay", "path": "x.txt"}, tmp_path, "arrivals.format", "cannot tell")


def test_window_beyond_trace(tmp_path):
    write(tmp_path, "w.txt", "1 2 3 4 5 6 7 8 9 10")
    r = from_config({"kind": "replay", "path": "w.txt", "start_s": 4, "length_s": 7}, tmp_path)
    with pytest.raises(InputError, match=r"arrivals.length_s: .*span of 10 s"):
        r.times_s(7.0, rng())
    r = from_config({"kind": "replay", "path": "w.txt", "start_s": 4}, tmp_path)  # length = duration
    r.times_s(6.0, rng())  # exactly fits
    with pytest.raises(InputError, match=r"span of 10 s"):
        r.mean_rate_rps(6.5)


# ---------------------------------------------------------------- real trace


def test_twitter_trace_ipa_window():
    if not TWITTER.is_file():
        pytest.skip(f"../shared/data not present: {TWITTER} is missing, so the real Twitter trace is not replayed")
    cfg = {"kind": "replay", "path": str(TWITTER), "start_s": 1301160, "length_s": 1200, "rate_scale": 0.125}
    r = from_config(cfg, pathlib.Path("/nonexistent"))  # absolute path ignores base_dir
    # IPA replays this window at 12.0 rps (integer-divided by 8); unbiased scaling gives ~12.5
    assert abs(r.mean_rate_rps(1200.0) - 12.0) <= 1.0
    t = r.times_s(1200.0, rng(16))
    # total ~ 15,000 + sum of Bernoulli noise (variance <= 1200/4): sd <= 17, i.e. 0.015 rps
    assert abs(len(t) / 1200 - r.mean_rate_rps(1200.0)) < 4 * math.sqrt(300) / 1200


@pytest.mark.parametrize("name, text", [("t.csv", b"timestamp\n0.0\n\xe9\n"), ("t.jsonl", b'{"timestamp": 0}\n\xe9\n'),
                                        ("c.txt", b"3\n4\n\xe9 5\n")])
def test_replay_trace_that_is_not_utf8_is_named(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text)
    with pytest.raises(InputError, match=rf"{name}: not UTF-8 text \(byte 0xe9"):  # (on line 3 where known)
        from_config({"kind": "replay", "path": name}, tmp_path)


def test_segments_count_what_drawing_builds():
    assert Poisson(5.0).segments(1e9) == 1
    assert Piecewise([1.0, 2.0], 0.5).segments(10.0) == 20
    assert Bursty([1.0, 2.0], [1.0, 3.0]).segments(100.0) == 2 * (100.0 / 2.0 + 8)


# ---------------------------------------------------------------- exact messages of the generators


def _error(fn, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    return info.value.where, info.value.problem


def test_bursty_and_piecewise_messages_name_the_default_where():
    assert _error(Bursty, [0, 0], [1, 1]) == ("arrivals.rates_rps", "at least one rate must be > 0, got [0, 0]")
    assert _error(Bursty, [1, 2], [1, 1, 1]) == ("arrivals.mean_dwell_s", "must be a list of 2 numbers, got 3: [1, 1, 1]")
    assert _error(Bursty, 5, [1, 1]) == ("arrivals.rates_rps", "must be a non-empty list of numbers, got 5")
    assert _error(Piecewise, [0, 0], 1) == ("arrivals.rates_rps", "at least one rate must be > 0, got all 0")
    assert _error(Piecewise, [1], 0) == ("arrivals.interval_s", "must be a number > 0, got 0")
    assert _error(Piecewise, [1], 1, repeat="yes") == ("arrivals.repeat", "must be true or false, got 'yes'")


def test_piecewise_shorter_than_one_interval():
    p = Piecewise([1.0, 3.0], 10.0)
    assert p.segments(5.0) == 1.0
    assert p.mean_rate_rps(5.0) == 1.0  # only the first interval's rate applies, over [0, 5)
    starts, ends, rates = p._intervals(5.0)
    assert (starts.tolist(), ends.tolist(), rates.tolist()) == ([0.0], [5.0], [1.0])

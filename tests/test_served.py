"""A bundle from a run's served batches: what the simulator replays to test its queueing alone."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FAST_MS, SLOW_MS
from sim.cli import main as simulate_main
from traces.bundle import TraceBundle
from traces.runoutput import read_run
from traces.served import served_batches, served_bundle


def _cascade(tmp_path, tiny_bundle, rate_rps=40.0):
    scenario = tmp_path / "s.toml"
    scenario.write_text(f"""seed = 4
duration_s = 20.0
bundle = "{tiny_bundle}"
[arrivals]
kind = "poisson"
rate_rps = {rate_rps}
[requests]
deadline_ms = 500.0
[[deployments]]
name = "small"
variant = "fast/int8/cpu"
max_batch_size = 4
batch_wait_timeout_ms = 1.0
[[deployments]]
name = "big"
variant = "slow/fp32/cpu"
max_batch_size = 4
[policy]
name = "static"
cascade = ["small", "big"]
threshold = 0.8
""")
    assert simulate_main(["run", str(scenario), "--out", str(tmp_path / "run")]) == 0
    return tmp_path / "run" / "seed-4", scenario


def test_every_hops_batches_are_found_once_with_their_replicas_idle_time(tmp_path, tiny_bundle):
    run, _ = _cascade(tmp_path, tiny_bundle)
    _, requests, _ = read_run(run)
    batches = served_batches(requests)
    assert set(batches["deployment"]) == {"small", "big"}
    for name, hop in (("small", 0), ("big", 1)):
        rows = batches[batches["deployment"] == name]
        taken = requests[requests[f"hop{hop}_deployment"] == name]
        assert rows["batch_size"].sum() == len(taken)  # every request in exactly one batch
        table = FAST_MS if name == "small" else SLOW_MS
        np.testing.assert_allclose(rows["service_ms"], rows["batch_size"].map(table), rtol=1e-6)
        idle = rows["idle_ms"].to_numpy()
        assert np.isnan(idle[0]) and (idle[1:] >= -1e-9).all()


def test_the_served_bundle_replaces_sizes_served_often_enough_and_keeps_the_rest(tmp_path, tiny_bundle):
    run, _ = _cascade(tmp_path, tiny_bundle)
    base = TraceBundle.load(tiny_bundle)
    served = served_bundle(run, base, min_batches=5)
    served.save(tmp_path / "served")
    again = TraceBundle.load(tmp_path / "served")
    _, requests, _ = read_run(run)
    counts = served_batches(requests).groupby(["deployment", "batch_size"]).size()
    for variant, name in (("fast/int8/cpu", "small"), ("slow/fp32/cpu", "big")):
        rows = again.service[again.service["variant"] == variant]
        for b in (1, 2, 4):
            n = int(counts.get((name, b), 0))
            source = set(rows[rows["batch_size"] == b]["source"])
            assert source == ({"served"} if n >= 5 else {"profile"})
            if n >= 5:
                assert (rows["batch_size"] == b).sum() == n
    # the tiny bundle has no start times; served batches keep theirs, so the run's timeline replays
    assert set(again.timeline("fast/int8/cpu")) == {b for b in (1, 2, 4) if counts.get(("small", b), 0) >= 5}
    pd_preds = again.predictions.sort_values(["variant", "sample_id"]).reset_index(drop=True)
    assert pd_preds["pred"].tolist() == base.predictions.sort_values(["variant", "sample_id"])["pred"].tolist()


def test_replaying_a_run_on_its_own_service_times_reproduces_it(tmp_path, tiny_bundle):
    """The tiny bundle's times are constant, so the replay must give the very same latencies."""
    run, scenario = _cascade(tmp_path, tiny_bundle)
    served_bundle(run, TraceBundle.load(tiny_bundle)).save(tmp_path / "served")
    replay = tmp_path / "replay.toml"
    replay.write_text(scenario.read_text().replace(str(tiny_bundle), str(tmp_path / "served")))
    assert simulate_main(["run", str(replay), "--out", str(tmp_path / "again")]) == 0
    first = read_run(run)[1]["latency_ms"].to_numpy()
    second = read_run(tmp_path / "again" / "seed-4")[1]["latency_ms"].to_numpy()
    np.testing.assert_allclose(second, first, rtol=1e-9)
    assert first.size > 500 and np.ptp(first) > 0


def test_a_missing_run_is_one_clear_error(tmp_path, tiny_bundle):
    from traces.errors import InputError

    with pytest.raises(InputError, match="not a run output"):
        served_bundle(tmp_path / "nowhere", TraceBundle.load(tiny_bundle))


def test_a_timeline_replays_each_batch_at_the_time_it_ran(tmp_path, tiny_bundle):
    """Service times that change over the run (slow for the first 5 s) come back in time order."""
    import pandas as pd

    base = TraceBundle.load(tiny_bundle)
    starts = np.arange(0.0, 20.0, 0.01)
    rows = pd.DataFrame({"variant": "fast/int8/cpu", "model": "fast", "precision": "int8", "device": "cpu",
                         "batch_size": 1, "latency_ms": np.where(starts < 5.0, 9.0, 1.0), "started_at_s": starts})
    others = base.service[base.service["batch_size"] != 1].assign(started_at_s=np.nan)
    TraceBundle(meta={"name": "timeline"}, service=pd.concat([rows, others], ignore_index=True),
                predictions=base.predictions).save(tmp_path / "t")
    scenario = tmp_path / "s.toml"
    scenario.write_text(f"""seed = 2
duration_s = 20.0
bundle = "{tmp_path / 't'}"
[arrivals]
kind = "poisson"
rate_rps = 20.0
[requests]
deadline_ms = 500.0
[[deployments]]
name = "small"
variant = "fast/int8/cpu"
max_batch_size = 1
service_order = "timeline"
[policy]
name = "static"
""")
    assert simulate_main(["run", str(scenario), "--out", str(tmp_path / "run")]) == 0
    _, requests, _ = read_run(tmp_path / "run" / "seed-2")
    served_ms = (requests["hop0_finish_s"] - requests["hop0_start_s"]) * 1000
    start = requests["hop0_start_s"]
    assert np.allclose(served_ms[start < 4.99], 9.0) and np.allclose(served_ms[start > 5.01], 1.0)
    # drawn at random instead, slow and fast batches mix over the whole run
    scenario.write_text(scenario.read_text().replace('service_order = "timeline"\n', ""))
    assert simulate_main(["run", str(scenario), "--out", str(tmp_path / "random")]) == 0
    _, requests, _ = read_run(tmp_path / "random" / "seed-2")
    late = requests[requests["hop0_start_s"] > 5.01]
    assert ((late["hop0_finish_s"] - late["hop0_start_s"]) * 1000 > 8.0).mean() > 0.1


def test_a_timeline_on_another_clock_is_refused(tmp_path, tiny_bundle):
    """A profile's start times are Unix seconds: replaying them as a run's timeline is a mistake."""
    from traces.errors import InputError
    from sim.core.prepare import check_against_bundle
    from traces.scenario import scenario_from_dict

    base = TraceBundle.load(tiny_bundle)
    service = base.service.assign(started_at_s=1.7e9 + np.arange(len(base.service)) * 0.01)
    TraceBundle(meta={"name": "unix"}, service=service, predictions=base.predictions).save(tmp_path / "u")
    raw = {"duration_s": 10.0, "bundle": str(tmp_path / "u"), "arrivals": {"kind": "poisson", "rate_rps": 10.0},
           "requests": {"deadline_ms": 100.0}, "policy": {"name": "static"},
           "deployments": [{"name": "m", "variant": "fast/int8/cpu", "max_batch_size": 4, "service_order": "timeline"}]}
    with pytest.raises(InputError, match="service_order.*outside"):
        check_against_bundle(scenario_from_dict(raw))


# --- the timeline sampler on its own: the run nearest in time, ties to the earlier one ----------

def _timeline_sampler(fallback=None):
    """Size-1 runs started at 0, 1 and 3 s took 10, 20 and 30 ms."""
    from sim.service import TimelineSampler

    timeline = {1: (np.array([0.0, 1.0, 3.0]), np.array([10.0, 20.0, 30.0]))}
    return TimelineSampler(timeline, fallback)


@pytest.mark.parametrize(("now_s", "want_ms"), [
    (-0.5, 10.0), (0.0, 10.0), (0.4, 10.0), (0.5, 10.0), (0.6, 20.0), (1.0, 20.0), (2.0, 20.0),
    (2.5, 30.0), (3.0, 30.0), (5.0, 30.0)])
def test_a_timeline_batch_takes_the_run_started_nearest_it(now_s, want_ms):
    # before the first run: the first; after the last: the last; halfway (0.5, 2.0): the earlier
    assert _timeline_sampler().draw_s(1, now_s) * 1000.0 == pytest.approx(want_ms, rel=1e-12)


def test_a_timeline_batch_without_a_time_is_at_the_runs_start():
    assert _timeline_sampler().draw_s(1) * 1000.0 == pytest.approx(10.0, rel=1e-12)


def test_sizes_the_timeline_lacks_are_drawn_by_the_fallback_with_their_time_and_idleness():
    """The fallback (slow spells, an idle class) gets each call's size, time and idle time: its
    draws are those of a twin sampler asked the same."""
    from sim.service import MeasuredSampler
    from traces.profiles import LatencyProfile, SlowSpells

    def sampler():
        idle = LatencyProfile({1: np.linspace(5.0, 6.0, 1001), 2: np.linspace(7.0, 9.0, 1001)}, measured=True)
        profile = LatencyProfile({1: np.linspace(1.0, 2.0, 1001), 2: np.linspace(2.0, 4.0, 1001)}, measured=True,
                                 spells=SlowSpells(0.6, 0.2), after_idle=((0.01, idle),))
        return MeasuredSampler(profile, 2, np.random.default_rng(5))

    replay, twin = _timeline_sampler(sampler()), sampler()
    assert replay.draw_s(2) == twin.draw_s(2, 0.0, 0.0)  # no time, no idleness
    for now_s, idle_s in ((0.05, 0.0), (0.30, 0.005), (0.31, 0.02), (0.90, 0.0), (0.91, 0.001)):
        assert replay.draw_s(2, now_s, idle_s) == twin.draw_s(2, now_s, idle_s)


def test_a_timeline_sampler_grows_its_fallback_with_the_batch():
    """A plan that raises the batch cap past the timeline's sizes: the fallback is grown to it."""
    class Fallback:
        grown: list[int] = []

        def ensure_batch(self, max_batch_size):
            self.grown.append(max_batch_size)

    fallback = Fallback()
    _timeline_sampler(fallback).ensure_batch(12)
    assert fallback.grown == [12]

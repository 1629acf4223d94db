"""Replica start-up times: the bundle's optional ``startup`` table, ``StartupProfile``, and
``measure startup`` on a tiny zoo (real replica processes, timed spawn to ready)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traces.bundle import TraceBundle
from traces.errors import InputError

from conftest import QUICK_LATENCY, write_profile
from traces.startup import PHASE_COLUMNS, StartupProfile, save_startup

FAST, SLOW = "fast/int8/cpu", "slow/fp32/cpu"


def _write_startup(bundle: Path, rows: list[dict]) -> Path:
    path = bundle / "startup.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


# --- the table ------------------------------------------------------------------------------------

def test_a_bundle_without_the_table_loads_as_before_and_saves_without_one(tiny_bundle, tmp_path):
    bundle = TraceBundle.load(tiny_bundle)
    assert bundle.startup.empty and list(bundle.startup.columns) == ["variant", "startup_s"]
    saved = bundle.save(tmp_path / "again", fmt="csv")
    assert not any(p.name.startswith("startup") for p in saved.iterdir())
    for stem in ("service", "predictions"):
        assert (saved / f"{stem}.csv").read_bytes() == (tiny_bundle / f"{stem}.csv").read_bytes()
    with pytest.raises(KeyError, match="no start-up times"):
        StartupProfile.from_bundle(bundle, FAST)


def test_a_valid_table_loads_with_its_phases(tiny_bundle):
    _write_startup(tiny_bundle, [
        {"variant": FAST, "startup_s": 2.0, "spawn_s": 0.1, "import_s": 1.2, "load_s": 0.2, "build_s": 0.4, "warmup_s": 0.1},
        {"variant": FAST, "startup_s": 3.0, "spawn_s": None, "import_s": 1.0, "load_s": 0.2, "build_s": 0.4, "warmup_s": 0.1},
        {"variant": SLOW, "startup_s": 5.5, "spawn_s": 0.1, "import_s": 1.1, "load_s": 0.2, "build_s": 4.0, "warmup_s": 0.1},
    ])
    startup = TraceBundle.load(tiny_bundle).startup
    assert startup["variant"].tolist() == [FAST, FAST, SLOW]
    assert startup["startup_s"].tolist() == [2.0, 3.0, 5.5]
    assert np.isnan(startup["spawn_s"].iloc[1]) and startup["build_s"].iloc[2] == 4.0


@pytest.mark.parametrize("row, where, problem", [
    ({"variant": FAST, "startup_s": -1.0}, "row 2", "startup_s must be a finite number > 0, got -1.0"),
    ({"variant": FAST, "startup_s": 0.0}, "row 2", "startup_s must be a finite number > 0, got 0.0"),
    ({"variant": FAST, "startup_s": float("nan")}, "row 2", "startup_s must be a finite number > 0"),
    ({"variant": FAST, "startup_s": "slow"}, "row 2", "startup_s must be a finite number > 0, got 'slow'"),
    ({"variant": FAST, "startup_s": 2.0, "warmup_s": -0.5}, "row 2", "warmup_s must be a finite number >= 0, got -0.5"),
    ({"variant": FAST, "startup_s": 2.0, "load_s": 1.5, "build_s": 1.0}, "row 2",
     "the phases ['load_s', 'build_s'] add up to 2.5 s, more than startup_s 2.0"),
    ({"variant": "other/fp32/cpu", "startup_s": 2.0}, "row 2", "variant 'other/fp32/cpu' has no rows in the bundle's service"),
    ({"variant": " ", "startup_s": 2.0}, "row 2", "variant must be a non-empty string"),
])
def test_a_bad_row_is_refused_naming_file_row_and_column(tiny_bundle, row, where, problem):
    path = _write_startup(tiny_bundle, [{"variant": SLOW, "startup_s": 4.0}, row])
    with pytest.raises(InputError) as caught:
        TraceBundle.load(tiny_bundle)
    assert caught.value.where == f"{path} {where}"
    assert problem in caught.value.problem


def test_a_table_without_its_columns_or_rows_is_refused(tiny_bundle):
    path = tiny_bundle / "startup.csv"
    path.write_text("variant,seconds\nfast/int8/cpu,2.0\n")
    with pytest.raises(InputError, match=r"missing column\(s\) \['startup_s'\]") as caught:
        TraceBundle.load(tiny_bundle)
    assert caught.value.where == str(path)
    path.write_text("variant,startup_s\n")
    with pytest.raises(InputError, match="has no rows"):
        TraceBundle.load(tiny_bundle)


def test_save_keeps_the_table_and_save_startup_keeps_every_other_file_byte_for_byte(tiny_bundle, tmp_path):
    bundle = TraceBundle.load(tiny_bundle)
    bundle.startup = pd.DataFrame({"variant": [FAST, SLOW], "startup_s": [1.5, 4.5]})
    parquet = bundle.save(tmp_path / "pq")
    assert TraceBundle.load(parquet).startup["startup_s"].tolist() == [1.5, 4.5]

    before = _digests(tiny_bundle)
    table = pd.DataFrame({"variant": [SLOW, SLOW], "startup_s": [4.0, 6.0], "build_s": [3.0, 5.0]})
    save_startup(tiny_bundle, table, {**bundle.meta, "startup": {"repeats": 2}})
    after = _digests(tiny_bundle)
    for name in ("service.csv", "predictions.csv"):
        assert after[name] == before[name]
    assert "startup.csv" in after  # the service table's format
    loaded = TraceBundle.load(tiny_bundle)
    assert loaded.startup["build_s"].tolist() == [3.0, 5.0] and loaded.meta["startup"] == {"repeats": 2}

    bad = pd.DataFrame({"variant": ["other/fp32/cpu"], "startup_s": [1.0]})
    with pytest.raises(InputError, match="no rows in the bundle's service table"):
        save_startup(tiny_bundle, bad, bundle.meta)
    assert _digests(tiny_bundle) == after  # refused before the swap: nothing changed
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- StartupProfile ------------------------------------------------------------------------------

def test_startup_profile_draws_only_observed_times_evenly_and_reproducibly():
    profile = StartupProfile(FAST, np.array([3.0, 1.0, 2.0, 2.0]))
    assert profile.samples_s.tolist() == [1.0, 2.0, 2.0, 3.0] and profile.count == 4
    assert profile.mean_s == pytest.approx(2.0)
    draws = np.array([profile.draw_s(np.random.default_rng(7)) for _ in range(3)])
    assert len(set(draws)) == 1  # the same seed, the same draw
    rng = np.random.default_rng(1)
    n = 40_000
    draws = np.array([profile.draw_s(rng) for _ in range(n)])
    assert set(np.unique(draws)) == {1.0, 2.0, 3.0}
    # each observation is equally likely: 1/4, 1/2, 1/4 (binomial sd at n = 40000 is about 0.0025)
    for value, share in ((1.0, 0.25), (2.0, 0.5), (3.0, 0.25)):
        assert abs(np.mean(draws == value) - share) < 0.015
    assert profile.percentile_s(50) == 2.0 and profile.percentile_s(100) == 3.0


def test_startup_profile_from_bundle_and_its_refusals(tiny_bundle):
    _write_startup(tiny_bundle, [{"variant": FAST, "startup_s": 2.0}, {"variant": SLOW, "startup_s": 5.0},
                                 {"variant": FAST, "startup_s": 4.0}])
    bundle = TraceBundle.load(tiny_bundle)
    fast = StartupProfile.from_bundle(bundle, FAST)
    assert fast.samples_s.tolist() == [2.0, 4.0] and fast.mean_s == 3.0
    assert StartupProfile.from_bundle(bundle, SLOW).mean_s == 5.0
    for bad in ([], [0.0, 1.0], [np.nan]):
        with pytest.raises(ValueError, match="positive, finite"):
            StartupProfile(FAST, np.array(bad))


# --- measure startup -----------------------------------------------------------------------------

def test_measure_startup_refuses_bad_arguments_and_what_is_not_a_bundle(tmp_path, capsys, tiny_bundle):
    from measure.cli import main as measure_main

    profile = tmp_path / "p.toml"
    profile.write_text('name = "x"\n[data]\ntask = "digits"\n[[variants]]\nmodel = "cnn-small"\n')
    assert measure_main(["startup", str(profile), "--out", str(tiny_bundle), "--repeats", "0"]) == 2
    assert "error: --repeats: must be an integer from 1 to 1000, got 0" in capsys.readouterr().err
    assert measure_main(["startup", str(profile), "--out", str(tmp_path / "none")]) == 2
    assert "not a trace bundle (no bundle.json)" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert measure_main(["startup", str(profile), "--out", str(mine)]) == 2
    assert "is not an output of ours" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
    before = _digests(tiny_bundle)
    assert measure_main(["startup", str(profile), "--out", str(tiny_bundle)]) == 2  # none of its variants
    assert "holds none of the variants" in capsys.readouterr().err
    assert _digests(tiny_bundle) == before


def test_measure_startup_times_real_replicas_into_the_bundle_atomically(tmp_path, zoo, capsys, monkeypatch):
    from measure import startup as startup_module
    from measure.cli import main as measure_main

    profile = write_profile(tmp_path / "profile.toml", zoo, precisions=("fp32", "fp16"), latency=QUICK_LATENCY)
    out = tmp_path / "bundle"
    assert measure_main(["latency", str(profile), "--out", str(out)]) == 0
    tables = _digests(out)
    capsys.readouterr()

    assert measure_main(["startup", str(profile), "--out", str(out), "--repeats", "2", "--max-batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert "skipped cnn-small/fp16/cpu: the bundle has no service rows for it" in printed
    assert "  cnn-small/fp32/cpu: startup median" in printed and "(2 start-ups of 1 variants)" in printed
    bundle = TraceBundle.load(out)
    startup = bundle.startup
    assert startup["variant"].tolist() == ["cnn-small/fp32/cpu"] * 2
    assert (startup["startup_s"] > 0).all()
    phases = startup[list(PHASE_COLUMNS)]
    assert (phases >= 0).all().all() and (phases["import_s"] > 0).all() and (phases["warmup_s"] > 0).all()
    np.testing.assert_allclose(phases.sum(axis=1), startup["startup_s"], rtol=1e-9)
    assert startup["started_at_s"].is_monotonic_increasing
    after = _digests(out)
    for name in ("service.parquet",):  # the measured tables are untouched
        assert after[name] == tables[name]
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["startup"]["repeats"] == 2 and meta["startup"]["max_batch_size"] == 2
    assert set(meta["startup"]["median_s"]) == {"cnn-small/fp32/cpu"}
    assert meta["command"].startswith("measure latency") and meta["commands"][-1].startswith("measure startup")
    assert meta["units"]["startup"] == "s"

    # a second run refuses to overwrite the table without --force, before timing anything
    assert measure_main(["startup", str(profile), "--out", str(out), "--repeats", "1"]) == 2
    assert "already has a startup table; pass --force to replace it" in capsys.readouterr().err
    assert _digests(out) == after

    # interrupted while timing (Ctrl-C), nothing is written and no staging is left
    def interrupted(recipe):
        raise KeyboardInterrupt

    monkeypatch.setattr(startup_module, "time_startup", interrupted)
    assert measure_main(["startup", str(profile), "--out", str(out), "--repeats", "1", "--force"]) == 130
    assert _digests(out) == after
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".bundle.")) == []
    monkeypatch.undo()

    # with --force the table is timed afresh; resuming the bundle (measure accuracy) keeps it
    assert measure_main(["startup", str(profile), "--out", str(out), "--repeats", "1", "--force"]) == 0
    again = TraceBundle.load(out).startup
    assert len(again) == 1 and again["started_at_s"].iloc[0] > startup["started_at_s"].max()
    assert _digests(out)["service.parquet"] == tables["service.parquet"]
    assert measure_main(["accuracy", str(profile), "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(TraceBundle.load(out).startup, again)

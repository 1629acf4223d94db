"""The measurement profile and the `measure` CLI's handling of bad input (no model is built here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from measure.cli import main
from measure.profile import VariantSpec, load_profile

REPO = Path(__file__).resolve().parents[1]

GOOD = """name = "p"
zoo_dir = "zoo"
[data]
task = "digits"
[latency]
batch_sizes = [1, 2, 4]
[[variants]]
model = "cnn-small"
precisions = ["fp32", "int8"]
pruning = ["none", "l1"]
"""


def test_shipped_profiles_load():
    for name in ("digits-cpu", "sst2-cpu"):
        profile = load_profile(REPO / "examples" / "profiles" / f"{name}.toml")
        assert len(profile.variants) >= 8
        assert profile.latency.batch_sizes == (1, 2, 4, 8, 16, 32)
        assert profile.zoo_dir == (REPO / "zoo").resolve()


def test_variant_grid_and_ids(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(GOOD)
    profile = load_profile(path)
    assert [v.id for v in profile.variants] == ["cnn-small/fp32/cpu", "cnn-small/int8/cpu",
                                                "cnn-small-l1/fp32/cpu", "cnn-small-l1/int8/cpu"]
    for spec in profile.variants:
        assert VariantSpec.parse(spec.id) == spec


@pytest.mark.parametrize("edit, where", [
    (("[data]\ntask = \"digits\"", "[data]\ntask = \"imagenet\""), "data.task"),
    (("batch_sizes = [1, 2, 4]", "batch_sizes = [4, 2]"), "latency.batch_sizes"),
    (("precisions = [\"fp32\", \"int8\"]", "precisions = [\"fp8\"]"), "variants[0].precisions"),
    (("pruning = [\"none\", \"l1\"]", "pruning = [\"magic\"]"), "variants[0].pruning"),
    (("name = \"p\"", "name = \"p\"\ncolour = 3"), "colour"),
    (("[latency]", "[latency]\ntimed_runs = 1"), "latency.timed_runs"),
    (("[latency]", "[latency]\ntimed_runs = 10\nmin_timed_runs = 11"), "latency.min_timed_runs"),
    (("[latency]", "[latency]\nmin_timed_runs = 2"), "latency.min_timed_runs"),
    (("[latency]", "[latency]\nidle_gaps_ms = [5, 1]"), "latency.idle_gaps_ms"),
    (("[latency]", "[latency]\nidle_gaps_ms = [-1]"), "latency.idle_gaps_ms"),
    (("[latency]", "[latency]\nidle_gaps_ms = [1, 10]"), "latency.idle_gaps_ms"),
])
def test_bad_profile_is_one_clear_line(tmp_path, capsys, edit, where):
    path = tmp_path / "p.toml"
    path.write_text(GOOD.replace(*edit))
    assert main(["latency", str(path), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and where in err[0] and str(path) in err[0]
    assert not (tmp_path / "b").exists()


def test_missing_profile_file(tmp_path, capsys):
    assert main(["all", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "b")]) == 2
    assert "not found" in capsys.readouterr().err


def test_bad_variant_id():
    with pytest.raises(Exception, match="model\\[-pruning\\]/precision/device"):
        VariantSpec.parse("resnet18/int4/cpu")


def test_min_timed_runs_defaults_to_twenty_or_timed_runs(tmp_path):
    path = tmp_path / "p.toml"
    for extra, want in (("", 20), ("timed_runs = 8", 8), ("min_timed_runs = 25", 25)):
        path.write_text(GOOD.replace("[latency]", f"[latency]\n{extra}"))
        assert load_profile(path).latency.min_timed_runs == want


class _SlowRunner:
    """Stands in for a model: every batch of size b takes b ms."""

    def __init__(self):
        self.calls: list[int] = []

    def run(self, ids):
        import time

        time.sleep(len(ids) / 1000.0)
        self.calls.append(len(ids))
        return [0] * len(ids), [1.0] * len(ids)


def test_the_time_cap_never_stops_a_size_below_min_timed_runs(tmp_path):
    pytest.importorskip("torch")  # measure.harness imports torch
    from measure.harness import time_batches

    path = tmp_path / "p.toml"
    path.write_text(GOOD.replace("[latency]", "[latency]\nwarmup_runs = 0\ntimed_runs = 12\nmin_timed_runs = 5\n"
                                 "max_seconds_per_config = 0.004\nidle_gaps_ms = [0, 1]"))
    profile = load_profile(path)
    frames = time_batches(_SlowRunner(), profile, profile.variants[0], [1, 4], n_samples=10)
    # 4 ms a batch of 4 passes the 4 ms cap at once, yet 5 runs per gap are kept: 10 rows;
    # a batch of 1 reaches the cap after 5 runs of 1 ms (more than 4 ms) too, so also 10
    assert {b: len(f) for b, f in frames.items()} == {1: 10, 4: 10}
    assert sorted(frames[4]["idle_ms"].value_counts().to_dict().items()) == [(0.0, 5), (1.0, 5)]

"""`analyse ablation` and the ablation sweeps in examples/ablation/.

The effects are checked against a hand computation (scipy's paired t-test and t quantile) on a
small results table written here, with its rows shuffled and a seed missing on each side; the
sweeps are checked by reading their files: every variation changes exactly the factor its label
names, to the level it names, and the base scenario passes `simulate validate`.
"""

from __future__ import annotations

import argparse
import copy
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import ablation
from analysis.cli import main as analyse_main
from traces.cli import run_command
from traces.errors import InputError
from traces.scenario import set_path

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted(p for p in (ROOT / "examples" / "ablation").glob("*.toml")
                if "groups" in tomllib.loads(p.read_text()))
METRICS = list(ablation.KEYS)


def _analyse(argv: list[str]) -> int:
    """The subcommand as `analyse ablation` runs it (one line and exit 2 on bad input)."""
    parser = argparse.ArgumentParser()
    ablation.add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: ablation.run(args))


# --- labels ------------------------------------------------------------------------------------

@pytest.mark.parametrize("label, expected", [
    ("precision=int8", ("precision", "int8")),
    ("max_batch_size=16", ("max_batch_size", "16")),
    ("threshold=0.95", ("threshold", "0.95")),
    ("device=cuda", ("device", "cuda")),
    ("model=resnet18-channel/fp32", ("model", "resnet18-channel/fp32")),
    ("policy.threshold=0.9 high", ("policy.threshold", "0.9 high")),
])
def test_labels_parse_into_factor_and_level(label, expected):
    assert ablation.parse_variation(label) == expected


@pytest.mark.parametrize("label", ["base", "int8", "=int8", "precision=", "precision =int8", "a b=c",
                                   "precision=int8=fast", "precision= int8", "precision=int8 ", "9lives=x"])
def test_labels_that_do_not_parse_are_refused_by_name(label):
    with pytest.raises(InputError) as caught:
        ablation.parse_variation(label)
    assert repr(label) in str(caught.value)


# --- effects against a hand computation -------------------------------------------------------

def _runs(label: str, seeds: list[int], rng: np.random.Generator) -> list[dict]:
    return [{"run_id": f"{label}-{s}", "variation": label, "seed": s, "requests": 1000,
             "hit_rate": rng.uniform(0.8, 1.0), "accuracy": rng.uniform(0.9, 1.0),
             "ontime_accuracy": rng.uniform(0.7, 0.95), "latency_ms.p99": rng.uniform(20, 200),
             "cost.total": rng.uniform(0.01, 0.05)} for s in seeds]


@pytest.fixture
def results(tmp_path) -> Path:
    """Base on seeds 1-4, int8 on 1-3 and 5 (4 and 5 unpaired), two batch sizes on 1-4; rows shuffled."""
    rng = np.random.default_rng(7)
    rows = (_runs("base", [1, 2, 3, 4], rng) + _runs("precision=int8", [1, 2, 3, 5], rng)
            + _runs("max_batch_size=1", [1, 2, 3, 4], rng) + _runs("max_batch_size=16", [1, 2, 3, 4], rng))
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    frame.to_parquet(sweep / "results.parquet")
    return sweep


def _hand_effect(frame: pd.DataFrame, label: str, metric: str) -> dict:
    base = {r.seed: r for r in frame[frame.variation == "base"].itertuples()}
    level = {r.seed: r for r in frame[frame.variation == label].itertuples()}
    seeds = sorted(set(base) & set(level))
    a = np.array([frame.loc[frame.run_id == f"{label}-{s}", metric].item() for s in seeds])
    b = np.array([frame.loc[frame.run_id == f"base-{s}", metric].item() for s in seeds])
    d = a - b
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return {"seeds": seeds, "difference": d.mean(), "half_width": half, "p_value": stats.ttest_rel(a, b).pvalue,
            "higher": int((a > b).sum()), "lower": int((a < b).sum()), "base_mean": b.mean(), "level_mean": a.mean()}


def test_effects_are_paired_by_seed_as_a_hand_computation(results):
    frame = pd.read_parquet(results / "results.parquet")
    result = ablation.ablation_effects(frame)
    assert result.factors() == list(dict.fromkeys(ablation.parse_variation(v)[0]
                                                  for v in frame.variation if v != "base"))
    assert sorted(result.levels("max_batch_size")) == ["1", "16"]
    for label in ("precision=int8", "max_batch_size=1", "max_batch_size=16"):
        factor, level = ablation.parse_variation(label)
        effects = {e.metric.key: e for e in result.of(factor, level)}
        assert list(effects) == METRICS
        for metric in METRICS:
            hand, effect = _hand_effect(frame, label, metric), effects[metric]
            assert list(effect.seeds) == hand["seeds"]
            # the differences are rounded to 12 significant digits of the largest value (stats.DIFFERENCE_DIGITS)
            assert effect.difference.difference.mean == pytest.approx(hand["difference"], rel=1e-9)
            assert effect.difference.difference.half_width == pytest.approx(hand["half_width"], rel=1e-9)
            assert effect.difference.p_value == pytest.approx(hand["p_value"], rel=1e-9)
            assert (effect.difference.wins, effect.difference.losses) == (hand["higher"], hand["lower"])
            assert effect.base.mean == pytest.approx(hand["base_mean"])
    assert len(result.of("precision", "int8")[0].seeds) == 3  # seed 4 (base only) and 5 (int8 only) left out
    # the base row of the tables is over all four base seeds, not only the paired ones
    assert result.base["hit_rate"].mean == pytest.approx(frame.loc[frame.variation == "base", "hit_rate"].mean())
    assert result.base_seeds == (1, 2, 3, 4)


def test_the_overview_names_the_largest_effect_per_metric(results):
    frame = pd.read_parquet(results / "results.parquet")
    result = ablation.ablation_effects(frame)
    table = ablation.overview_table(result)
    for column, metric in enumerate(METRICS, start=2):
        hand = {label: _hand_effect(frame, label, metric)["difference"]
                for label in ("precision=int8", "max_batch_size=1", "max_batch_size=16")}
        largest = max(hand, key=lambda label: abs(hand[label]))
        factor = ablation.parse_variation(largest)[0]
        bold = [line for line in table.splitlines() if line.split("|")[column].strip().startswith("**")]
        assert len(bold) == 1 and bold[0].startswith(f"| {factor} |")


def test_the_command_writes_the_report_csv_and_a_png_per_factor(results, tmp_path, capsys):
    out = tmp_path / "report"
    assert _analyse([str(results), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    written = (out / "ablation.md").read_text()
    assert written in printed and "### precision" in written and "### max_batch_size" in written
    frame = pd.read_parquet(results / "results.parquet")
    csv = pd.read_csv(out / "ablation.csv", dtype={"level": str})
    assert len(csv) == 3 * len(METRICS)
    for row in csv.itertuples():
        hand = _hand_effect(frame, f"{row.factor}={row.level}", row.metric)
        assert row.difference == pytest.approx(hand["difference"], rel=1e-9)
        assert (row.low, row.high) == pytest.approx((hand["difference"] - hand["half_width"],
                                                     hand["difference"] + hand["half_width"]), rel=1e-9)
        assert row.level_mean - row.base_mean == pytest.approx(row.difference, rel=1e-9)
        assert (row.higher, row.lower, row.pairs) == (hand["higher"], hand["lower"], len(hand["seeds"]))
    import matplotlib.image

    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["ablation-max_batch_size.png", "ablation-precision.png"]
    for name in pngs:
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 100 and image.shape[1] > 500 and image[..., :3].std() > 0.05


def test_the_subcommand_is_registered(results, capsys):
    assert analyse_main(["ablation", str(results / "results.parquet")]) == 0
    assert "| base (mean) | 4 |" in capsys.readouterr().out


def test_another_axis_must_be_pinned_with_where(results, capsys):
    frame = pd.read_parquet(results / "results.parquet")
    both = pd.concat([frame.assign(deadline="20.0"), frame.assign(deadline="50.0")])
    both = both[["run_id", "variation", "deadline", *[c for c in both if c not in ("run_id", "variation", "deadline")]]]
    both.to_parquet(results / "results.parquet")
    assert _analyse([str(results)]) == 2
    assert "--where deadline=VALUE" in capsys.readouterr().err
    assert _analyse([str(results), "--where", "deadline=50.0"]) == 0
    assert "| base (mean) | 4 |" in capsys.readouterr().out
    assert _analyse([str(results), "--where", "deadline=50"]) == 0    # a number matches its label "50.0"
    assert "| base (mean) | 4 |" in capsys.readouterr().out
    assert _analyse([str(results), "--where", "deadline=30"]) == 2
    assert "it has 20.0, 50.0" in capsys.readouterr().err


def test_the_report_says_its_verdicts_are_not_adjusted_for_multiple_comparisons(results):
    text = ablation.report(ablation.ablation_effects(pd.read_parquet(results / "results.parquet")))
    line = next(line for line in text.splitlines() if line.startswith("Better/worse"))
    assert "95% interval" in line and "unadjusted for multiple comparisons" in line


def test_nothing_is_printed_when_the_report_cannot_be_built(results, tmp_path, capsys, monkeypatch):
    """--out: the figures are built and the directory written before the report is printed."""
    def broken(*_):
        raise InputError("figure", "cannot be drawn")

    monkeypatch.setattr(ablation, "factor_figure", broken)
    assert _analyse([str(results), "--out", str(tmp_path / "report")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "cannot be drawn" in captured.err and not (tmp_path / "report").exists()


# --- bad input ---------------------------------------------------------------------------------

def _write(directory: Path, frame: pd.DataFrame) -> Path:
    directory.mkdir(exist_ok=True)
    frame.to_parquet(directory / "results.parquet")
    return directory


@pytest.mark.parametrize("case, needle", [
    ("label", "'int8'"), ("no-base", "--base base"), ("only-base", "only the base"), ("axis", "--axis"),
    ("twice", "2 runs of variation=base, seed 2"), ("missing", "file not found"), ("metric", "'cost.total'"),
    ("text", "must hold numbers"), ("where", "--where nope=1"),
])
def test_bad_input_is_one_line_and_exit_2_and_nothing_written(case, needle, tmp_path, capsys):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(_runs("base", [1, 2, 3], rng) + _runs("precision=int8", [1, 2, 3], rng))
    argv = []
    if case == "label":
        frame.loc[frame.variation == "precision=int8", "variation"] = "int8"
    elif case == "no-base":
        frame = frame[frame.variation != "base"]
    elif case == "only-base":
        frame = frame[frame.variation == "base"]
    elif case == "axis":
        argv = ["--axis", "policy"]
    elif case == "twice":
        frame.loc[frame.run_id == "base-3", "seed"] = 2
    elif case == "metric":
        frame = frame.drop(columns="cost.total")
    elif case == "text":
        frame["cost.total"] = "cheap"
    elif case == "where":
        argv = ["--where", "nope=1"]
    sweep = tmp_path / "sweep"
    if case != "missing":
        _write(sweep, frame)
    out = tmp_path / "report"
    assert _analyse([str(sweep), *argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert not out.exists()


def test_an_existing_report_is_replaced_only_with_force(results, tmp_path, capsys):
    out = tmp_path / "report"
    assert _analyse([str(results), "--out", str(out)]) == 0
    assert _analyse([str(results), "--out", str(out)]) == 2
    assert _analyse([str(results), "--out", str(out), "--force"]) == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert _analyse([str(results), "--out", str(foreign), "--force"]) == 2
    assert (foreign / "notes.txt").read_text() == "keep"


# --- the shipped sweeps -------------------------------------------------------------------------

def _variant_parts(variant: str) -> dict[str, str]:
    """A variant id ``model[-kd][-pruning]/precision/device[/backend]`` as the factors an ablation names."""
    name, precision, device, *rest = variant.split("/")
    pruning = "none"
    for method in ("channel", "l1"):
        if name.endswith(f"-{method}"):
            name, pruning = name[: -len(method) - 1], method
    distillation = "kd" if name.endswith("-kd") else "none"
    return {"model": name.removesuffix("-kd"), "distillation": distillation, "pruning": pruning,
            "precision": precision, "device": device, "backend": rest[0] if rest else "eager"}


def _facets(raw, path: str = "") -> dict[str, object]:
    """Every leaf of a scenario by its dotted path (deployments by name; a variant as its parts)."""
    if isinstance(raw, dict):
        items = raw.items()
    elif isinstance(raw, list) and all(isinstance(item, dict) and "name" in item for item in raw):
        items = ((item["name"], item) for item in raw)
    else:
        if path.endswith(".variant") and isinstance(raw, str):
            return {f"{path}.{k}": v for k, v in _variant_parts(raw).items()}
        return {path: raw}
    found = {}
    for key, value in items:
        found.update(_facets(value, f"{path}.{key}" if path else str(key)))
    return found


def _level(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_each_variation_changes_exactly_the_factor_it_names(path):
    sweep = tomllib.loads(path.read_text())
    base = tomllib.loads((path.parent / sweep["base"]).read_text())
    assert list(sweep["groups"]) == ["variation"] and "axes" not in sweep
    assert sweep["seeds"] == [1, 2, 3, 4, 5]
    variations = sweep["groups"]["variation"]
    assert variations["base"] == {}
    base_facets = _facets(base)
    factors = set()
    for label, keys in variations.items():
        if label == "base":
            continue
        factor, level = ablation.parse_variation(label)
        factors.add(factor)
        raw = copy.deepcopy(base)
        for key, value in keys.items():
            set_path(raw, key, value)
        facets = _facets(raw)
        changed = {k for k in base_facets.keys() | facets.keys() if base_facets.get(k) != facets.get(k)}
        allowed = {"bundle"} if factor == "device" else set()  # another device: its bundle may come too
        names = {k.rsplit(".", 1)[-1] for k in changed} - allowed
        assert names == {factor}, f"{label} changes {sorted(changed)}"
        assert {_level(facets[k]) for k in changed if k.rsplit(".", 1)[-1] == factor} == {level}, label
    assert {"model", "precision", "pruning", "distillation", "backend", "max_batch_size", "threshold"} <= factors


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_variant_is_measured_and_the_base_validates(path):
    sweep = tomllib.loads(path.read_text())
    measured = set()
    for table in (ROOT / "traces" / "data").glob("*/service.parquet"):
        measured |= set(pd.read_parquet(table, columns=["variant"])["variant"])
    for label, keys in sweep["groups"]["variation"].items():
        for key, value in keys.items():
            if key.endswith(".variant"):
                assert value in measured, f"{label}: {value} is in no bundled bundle"
    base = path.parent / sweep["base"]
    done = subprocess.run([sys.executable, "-m", "sim", "validate", str(base)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"scenario {base}: ok")


def test_the_sweeps_are_found():
    assert {p.name for p in SWEEPS} >= {"digits.toml", "sst2.toml"}

"""The bundle's per-sample ``features`` table, the features ``measure`` computes, and the
query-difficulty estimator fitted on them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from policies.difficulty import (DifficultyModel, _penalised_loss, auc, fit_difficulty,
                                 split_samples)
from traces.bundle import TraceBundle
from traces.errors import InputError

from conftest import QUICK_LATENCY, write_profile
from traces.features import add_features
from traces.profiles import PredictionTable

REPO = Path(__file__).resolve().parents[1]
FAST, SLOW = "fast/int8/cpu", "slow/fp32/cpu"


def _write_features(bundle: Path, frame: pd.DataFrame) -> Path:
    path = bundle / "features.csv"
    frame.to_csv(path, index=False)
    return path


# --- the contract ------------------------------------------------------------------------------

@pytest.mark.parametrize("column, row, value, problem", [
    ("size", 2, "nan", "size must be a finite number"),
    ("size", 3, "inf", "size must be a finite number"),
    ("size", 1, "big", "size must be a finite number"),
    ("sample_id", 2, "", "sample_id must be a non-empty string"),
    ("sample_id", 4, "0", "duplicate sample_id '0'"),
    ("sample_id", 3, "7", "sample_id '7' has no prediction in the bundle"),
])
def test_a_bad_row_is_refused_naming_file_row_and_column(tiny_bundle, column, row, value, problem):
    frame = pd.DataFrame({"sample_id": ["0", "1", "2", "3"], "size": ["1.5", "2", "3", "4"]})
    frame.loc[row - 1, column] = value
    path = _write_features(tiny_bundle, frame)
    with pytest.raises(InputError) as err:
        TraceBundle.load(tiny_bundle)
    assert err.value.where == f"{path} row {row}"
    assert problem in err.value.problem


@pytest.mark.parametrize("frame, problem", [
    (pd.DataFrame({"id": ["0"], "size": [1.0]}), r"missing column\(s\) \['sample_id'\]"),
    (pd.DataFrame({"sample_id": ["0"]}), "no feature column"),
    (pd.DataFrame({"sample_id": ["0"], "two words": [1.0]}), "not identifiers"),
    (pd.DataFrame({"sample_id": [], "size": []}), "has no rows"),
])
def test_a_table_without_its_columns_or_rows_is_refused(tiny_bundle, frame, problem):
    path = _write_features(tiny_bundle, frame)
    with pytest.raises(InputError, match=problem) as err:
        TraceBundle.load(tiny_bundle)
    assert err.value.where == str(path)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_features_round_trip_and_a_bundle_without_them_saves_none(tiny_bundle, tmp_path, fmt):
    plain = TraceBundle.load(tiny_bundle)
    assert plain.features.empty
    plain.save(tmp_path / "plain", fmt=fmt)
    assert not list((tmp_path / "plain").glob("features.*"))
    plain.features = pd.DataFrame({"sample_id": ["3", "1", "0", "2"], "size": [3.0, 1.0, 0.0, 2.0],
                                   "share": [0.25, -1e-9, 1e12, 0.5]})
    again = TraceBundle.load(plain.save(tmp_path / "with", fmt=fmt))
    pd.testing.assert_frame_equal(again.features, plain.features, check_dtype=False)
    assert (tmp_path / "with" / f"features.{fmt}").is_file()


def test_prediction_table_aligns_a_shuffled_features_table(tiny_bundle, tmp_path):
    bundle = TraceBundle.load(tiny_bundle)
    ids = np.random.default_rng(3).permutation(4)
    bundle.features = pd.DataFrame({"sample_id": ids.astype(str), "ten_x": 10.0 * ids, "minus": -ids.astype(float)})
    bundle.save(tmp_path / "b")
    table = PredictionTable.from_bundle(TraceBundle.load(tmp_path / "b"), [FAST, SLOW])
    assert table.feature_names == ("ten_x", "minus")
    assert table.features.dtype == np.float64 and table.features.shape == (4, 2)
    np.testing.assert_array_equal(table.features[:, 0], 10.0 * table.sample_ids.astype(float))
    np.testing.assert_array_equal(table.features[:, 1], -table.sample_ids.astype(float))
    assert PredictionTable.from_bundle(TraceBundle.load(tiny_bundle), [FAST]).features is None

    bundle.features = bundle.features.iloc[1:]   # one evaluated sample without features
    lacking = ids[0]
    bundle.save(tmp_path / "short")
    with pytest.raises(InputError, match=f"no row for sample_id '{lacking}'") as err:
        PredictionTable.from_bundle(TraceBundle.load(tmp_path / "short"), [FAST, SLOW])
    assert str(tmp_path / "short") in err.value.where


def test_add_features_writes_one_file_and_never_replaces_one(tiny_bundle):
    before = {p.name: p.read_bytes() for p in tiny_bundle.iterdir()}
    frame = pd.DataFrame({"sample_id": ["0", "1", "2", "3"], "size": [1.0, 2.0, 3.0, 4.0]})
    written = add_features(tiny_bundle, frame)
    assert written == tiny_bundle / "features.csv"  # the format of the bundle's service table
    after = {p.name: p.read_bytes() for p in tiny_bundle.iterdir()}
    assert set(after) - set(before) == {"features.csv"}
    assert all(after[name] == data for name, data in before.items())
    with pytest.raises(InputError, match="already has a features table"):
        add_features(tiny_bundle, frame.assign(size=0.0))
    assert (tiny_bundle / "features.csv").read_bytes() == after["features.csv"]


# --- the features measure computes -------------------------------------------------------------

def test_image_and_token_features_by_hand():
    torch = pytest.importorskip("torch", reason="measure.features needs the 'measure' extra")
    from measure.data import TaskData
    from measure.features import sample_features, token_features

    images = torch.tensor([[[0.0, 1.0], [0.0, 1.0]],      # right column lit
                           [[0.0, 0.0], [0.0, 0.0]],      # blank
                           [[1.0, 0.0], [0.0, 0.0]]]).unsqueeze(1)  # one corner pixel
    task = TaskData("t", "image", 2, images, torch.zeros(3), images, torch.zeros(3), ["a", "b", "c"])
    got = sample_features(task).set_index("sample_id")
    want = pd.DataFrame({
        "mean_intensity": [0.5, 0.0, 0.25],
        "intensity_std": [0.5, 0.0, np.sqrt(0.25 * 0.75)],
        "ink_share": [0.5, 0.0, 0.25],
        # (mean |right - left| + mean |down - up|) / 2: (1 + 0) / 2, 0, (0.5 + 0.5) / 2
        "edge_energy": [0.5, 0.0, 0.5],
        # centre of mass (row 1.0, col 1.5) vs (1, 1); blank: the centre; corner (0.5, 0.5); over side 2
        "centroid_offset": [0.25, 0.0, np.hypot(0.5, 0.5) / 2],
    }, index=pd.Index(["a", "b", "c"], name="sample_id"))
    pd.testing.assert_frame_equal(got, want)

    ids = np.array([[2, 5, 1, 1, 3, 0],       # [CLS] w [UNK] [UNK] [SEP] [PAD]
                    [2, 7, 8, 9, 10, 3],      # fills max_len: truncated; 8, 9 are ## pieces
                    [2, 3, 0, 0, 0, 0]])      # empty text
    tokens = token_features(ids, continuation_ids=np.array([8, 9, 11]))
    np.testing.assert_array_equal(tokens["token_count"], [3, 4, 0])
    np.testing.assert_allclose(tokens["oov_share"], [2 / 3, 0, 0])
    np.testing.assert_array_equal(tokens["truncated"], [0, 1, 0])
    np.testing.assert_allclose(tokens["subword_share"], [0, 0.5, 0])
    task = TaskData("t", "tokens", 2, torch.tensor(ids), torch.zeros(3), torch.tensor(ids), torch.zeros(3),
                    ["x", "y", "z"], meta={})
    assert list(sample_features(task).columns) == ["sample_id", "token_count", "oov_share", "truncated"]


def _digits_profile(tmp_path: Path, **data) -> Path:
    path = tmp_path / "profile.toml"
    extra = "".join(f"{k} = {v}\n" for k, v in data.items())
    path.write_text(f'name = "d"\nzoo_dir = "{tmp_path / "no-zoo"}"\n[data]\ntask = "digits"\n{extra}'
                    '[[variants]]\nmodel = "cnn-small"\nprecisions = ["fp32"]\n')
    return path


def test_measure_features_adds_a_table_to_a_copy_and_refuses_to_replace_it(tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="measure needs the 'measure' extra")  # noqa: F841
    from measure.cli import main as measure_main
    from measure.data import DataConfig, load_task

    copy = tmp_path / "digits"
    shutil.copytree(REPO / "traces" / "data" / "digits-cpu", copy)
    (copy / "features.parquet").unlink(missing_ok=True)
    wrong = _digits_profile(tmp_path, max_eval=100)  # other evaluation ids: refused, nothing written
    assert measure_main(["features", str(wrong), "--bundle", str(copy)]) == 2
    assert "its 540 prediction sample ids are not the 100 evaluation ids" in capsys.readouterr().err
    assert not (copy / "features.parquet").exists()

    assert measure_main(["features", str(_digits_profile(tmp_path)), "--bundle", str(copy)]) == 0
    bundle = TraceBundle.load(copy)
    data = load_task("digits", DataConfig(seed=0), tmp_path)
    assert bundle.features["sample_id"].tolist() == data.eval_ids
    assert set(bundle.features["sample_id"]) == set(bundle.predictions["sample_id"])
    pixels = data.x_eval.numpy().reshape(len(data.eval_ids), -1)
    np.testing.assert_allclose(bundle.features["mean_intensity"], pixels.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(bundle.features["ink_share"], (pixels > 0.5).mean(axis=1))

    written = (copy / "features.parquet").read_bytes()
    capsys.readouterr()
    assert measure_main(["features", str(_digits_profile(tmp_path)), "--bundle", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already has a features table" in err
    assert (copy / "features.parquet").read_bytes() == written


def test_measure_accuracy_records_the_features_of_the_samples_it_evaluates(tmp_path, zoo):
    from measure.cli import main as measure_main
    from measure.features import sample_features
    from measure.zoo import load_zoo_task

    profile = write_profile(tmp_path / "tiny.toml", zoo, latency=QUICK_LATENCY)
    out = tmp_path / "bundle"
    assert measure_main(["latency", str(profile), "--out", str(out)]) == 0
    assert TraceBundle.load(out).features.empty          # no predictions, no features
    assert measure_main(["accuracy", str(profile), "--out", str(out)]) == 0
    bundle = TraceBundle.load(out)
    want = sample_features(load_zoo_task(zoo, "digits"))
    assert len(want) == 64 and set(want["sample_id"]) == set(bundle.predictions["sample_id"])
    pd.testing.assert_frame_equal(bundle.features, want, check_dtype=False)


# --- the estimator -----------------------------------------------------------------------------

def _synthetic_table(n: int, seed: int, slope, intercept: float) -> PredictionTable:
    """Features of three scales; the fast variant is right with probability sigmoid(x @ slope + c)."""
    rng = np.random.default_rng(seed)
    x = rng.normal([5.0, -2.0, 100.0], [2.0, 0.5, 30.0], size=(n, 3))
    right = rng.random(n) < 1.0 / (1.0 + np.exp(-(x @ slope + intercept)))
    ids = np.arange(n)
    return PredictionTable(ids, {"fast": right.astype(int), "slow": np.ones(n, dtype=int)},
                           {"fast": np.full(n, 0.9), "slow": np.full(n, 0.9)},
                           {"fast": right, "slow": np.ones(n, dtype=bool)}, np.ones(n, dtype=int),
                           x, ("a", "b", "c"))


def test_the_fit_recovers_a_known_logistic_model_and_ranks_held_out_samples():
    slope, intercept = np.array([0.8, -3.0, 0.02]), -12.0  # mean logit about 0
    table = _synthetic_table(8000, seed=11, slope=slope, intercept=intercept)
    train = split_samples(8000, seed=5)
    model = fit_difficulty(table, "fast", train)
    assert model.feature_names == ("a", "b", "c")
    raw_slope = model.weights / model.scale                       # back to the raw features
    np.testing.assert_allclose(raw_slope, slope, rtol=0.15)
    centre = table.features.mean(axis=0)   # the intercept shows where the data are, not at x = 0
    assert abs(model.logit(centre) - (centre @ slope + intercept)) < 0.15
    p = model.probability_fast_correct(table.features)
    truth = 1.0 / (1.0 + np.exp(-(table.features @ slope + intercept)))
    assert np.mean(np.abs(p - truth)) < 0.02
    assert auc(p[~train], table.correct["fast"][~train]) > 0.8


def test_the_fit_is_the_penalised_optimum_sklearn_finds_and_its_gradient_is_exact():
    table = _synthetic_table(600, seed=2, slope=np.array([0.5, 1.0, -0.01]), intercept=0.0)
    train = split_samples(600, seed=0)
    z = (table.features[train] - table.features[train].mean(0)) / table.features[train].std(0)
    y = table.correct["fast"][train].astype(float)
    theta = np.array([0.3, -0.2, 0.1, 0.05])
    assert optimize.check_grad(lambda t: _penalised_loss(t, z, y, 2.0)[0],
                               lambda t: _penalised_loss(t, z, y, 2.0)[1], theta) < 1e-4
    linear_model = pytest.importorskip("sklearn.linear_model", reason="the reference fit is scikit-learn's")
    for l2 in (0.5, 4.0):
        model = fit_difficulty(table, "fast", train, l2=l2)
        reference = linear_model.LogisticRegression(C=1.0 / l2, tol=1e-10, max_iter=10000).fit(z, y)
        np.testing.assert_allclose(model.weights, reference.coef_[0], atol=1e-4)
        assert abs(model.bias - reference.intercept_[0]) < 1e-4


def test_the_fit_refuses_what_it_cannot_learn_from():
    table = _synthetic_table(40, seed=1, slope=np.zeros(3), intercept=0.0)
    train = split_samples(40, seed=0)
    bare = PredictionTable(table.sample_ids, table.pred, table.confidence, table.correct)
    with pytest.raises(InputError, match="no per-sample features"):
        fit_difficulty(bare, "fast", train)
    with pytest.raises(InputError, match="unknown variant 'medium'"):
        fit_difficulty(table, "medium", train)
    with pytest.raises(InputError, match="boolean mask of 40"):
        fit_difficulty(table, "fast", np.ones(39, dtype=bool))
    with pytest.raises(InputError, match="needs both outcomes"):
        fit_difficulty(table, "slow", train)   # right everywhere


def test_auc_is_the_pairwise_share_with_ties_counting_half():
    rng = np.random.default_rng(4)
    scores = np.round(rng.random(60), 1)        # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert auc(scores, labels) == pytest.approx(brute, abs=1e-12)
    assert auc(np.arange(4.0), np.array([False, False, True, True])) == 1.0
    assert np.isnan(auc(np.arange(3.0), np.ones(3, dtype=bool)))


def test_split_samples_is_a_seeded_half():
    a, b = split_samples(11, seed=7), split_samples(11, seed=7)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == bool and a.sum() == 5
    assert any(not np.array_equal(split_samples(11, seed=s), a) for s in range(8, 12))


def test_the_model_round_trips_through_plain_arrays_and_an_npz(tmp_path):
    model = DifficultyModel(("token_count", "oov_share"), np.array([20.0, 0.01]), np.array([10.0, 0.02]),
                            np.array([-0.4, -1.2]), 1.5)
    np.savez(tmp_path / "m.npz", other=np.zeros(2), **model.to_arrays("difficulty_"))
    with np.load(tmp_path / "m.npz") as arrays:
        back = DifficultyModel.from_arrays(arrays, "difficulty_")
    assert back.feature_names == model.feature_names and back.bias == model.bias
    for name in ("mean", "scale", "weights"):
        np.testing.assert_array_equal(getattr(back, name), getattr(model, name))
    x = np.array([[30.0, 0.0], [5.0, 0.1]])
    z = (x - model.mean) / model.scale
    np.testing.assert_allclose(back.probability_fast_correct(x), 1 / (1 + np.exp(-(z @ model.weights + 1.5))))
    with pytest.raises(InputError, match="missing"):
        DifficultyModel.from_arrays(model.to_arrays(), "difficulty_")   # stored without the prefix
    with pytest.raises(InputError, match="2 columns"):
        model.probability_fast_correct(np.zeros((1, 3)))

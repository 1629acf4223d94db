"""The trace bundle: measured per-batch latencies and per-sample predictions of model variants.

A bundle is a directory with ``bundle.json`` (name, description, hardware, software, created_at,
units) and two tables, each Parquet or CSV:

- ``service``: one row per timed batch run (variant, model, precision, device, batch_size,
  latency_ms, optional threads, optional started_at_s: when the run started, Unix seconds, empty
  where unknown; optional idle_ms: how long the replica sat idle before the run, 0 or empty for
  back to back; each distinct value is a class of its own, see ``measure.profile``);
- ``predictions``: one row per (variant, evaluated sample) (variant, sample_id, label, pred,
  confidence, correct);
- optional ``startup``: one row per timed replica start-up (variant, startup_s, optional phases),
  see ``traces.startup``; a bundle without it has an empty ``TraceBundle.startup``;
- optional ``features``: one row per evaluated sample (sample_id, then cheap numeric input
  features such as token_count), see ``traces.features``; absent: an empty ``TraceBundle.features``.

Loading validates every row; an error names the file, the row and the column. Beyond types and
ranges, a row must agree with itself: ``correct`` is ``label == pred``, and a service row's model,
precision and device are those its variant id ``model[-pruning]/precision/device[/backend]`` names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .checks import read_utf8
from .errors import InputError
from .features import empty_features, load_features
from .outputs import atomic_output
from .startup import empty_startup, load_startup
from .tables import (check_boolean, check_numeric, check_text, find_table, plain,
                     read_table)

SERVICE_COLUMNS = ("variant", "model", "precision", "device", "batch_size", "latency_ms")
PREDICTION_COLUMNS = ("variant", "sample_id", "label", "pred", "confidence", "correct")
META_KEYS = ("name", "description", "hardware", "software", "created_at", "units")


@dataclass
class TraceBundle:
    """A validated bundle in memory. ``predictions`` may be empty for a latency-only bundle,
    ``startup`` (replica start-up times, ``traces.startup``) for one without them, ``features``
    (per-sample input features, ``traces.features``) likewise."""

    meta: dict
    service: pd.DataFrame
    predictions: pd.DataFrame
    path: Path | None = None
    startup: pd.DataFrame = field(default_factory=empty_startup)
    features: pd.DataFrame = field(default_factory=empty_features)
    _samples: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.name if self.path else "bundle"))

    @property
    def variants(self) -> list[str]:
        return sorted(self.service["variant"].unique())

    @property
    def predicted_variants(self) -> list[str]:
        return sorted(self.predictions["variant"].unique())

    def _rows(self, variant: str) -> pd.DataFrame:
        rows = self.service[self.service["variant"] == variant]
        if rows.empty:
            raise KeyError(variant)
        return rows

    def _idle(self, rows: pd.DataFrame) -> np.ndarray:
        if "idle_ms" not in rows:
            return np.zeros(len(rows))
        return rows["idle_ms"].fillna(0.0).to_numpy(dtype=np.float64)

    def idle_classes_ms(self, variant: str) -> tuple[float, ...]:
        """The idle gaps (ms) the variant was timed after, ascending; (0.0,) for back to back only."""
        return tuple(float(g) for g in np.unique(self._idle(self._rows(variant))))

    def latency_samples(self, variant: str, idle_ms: float | None = None) -> dict[int, np.ndarray]:
        """Measured batch latencies (ms) of one variant, sorted, keyed by batch size: the runs timed
        after ``idle_ms`` of idleness (None: the shortest gap measured, usually back to back)."""
        key = (variant, idle_ms)
        if key not in self._samples:
            rows = self._rows(variant)
            idle = self._idle(rows)
            gap = idle.min() if idle_ms is None else idle_ms
            rows = rows[idle == gap]
            if rows.empty:
                raise KeyError(f"{variant} after {idle_ms} ms idle")
            self._samples[key] = {
                int(b): np.sort(g["latency_ms"].to_numpy(dtype=np.float64))
                for b, g in rows.groupby("batch_size")
            }
        return self._samples[key]

    def timeline(self, variant: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Batch size -> (started_at_s, latency_ms) of the variant's back-to-back runs that have a
        start time, in time order."""
        if "started_at_s" not in self.service:
            return {}
        rows = self._rows(variant)
        idle = self._idle(rows)
        rows = rows[(idle == idle.min()) & rows["started_at_s"].notna().to_numpy()].sort_values("started_at_s", kind="stable")
        return {int(b): (g["started_at_s"].to_numpy(dtype=np.float64), g["latency_ms"].to_numpy(dtype=np.float64))
                for b, g in rows.groupby("batch_size")}

    def slow_spells(self, variant: str):
        """The variant's measured slow spells (``traces.profiles.SlowSpells``), from its rows that
        have a run start time (none without them); runs are ranked within their (batch size, idle
        gap) class."""
        from .profiles import SlowSpells, measure_spells

        if "started_at_s" not in self.service:
            return SlowSpells()
        rows = self._rows(variant)
        known = rows["started_at_s"].notna().to_numpy()
        classes = pd.MultiIndex.from_arrays([rows["batch_size"].to_numpy(), self._idle(rows)]).factorize()[0]
        return measure_spells(classes[known], rows["latency_ms"].to_numpy()[known],
                              rows["started_at_s"].to_numpy()[known])

    def common_sample_ids(self, variants: list[str]) -> np.ndarray:
        """Sample ids that every listed variant has a prediction for, sorted."""
        common = None
        for variant in variants:
            ids = set(self.predictions.loc[self.predictions["variant"] == variant, "sample_id"])
            common = ids if common is None else common & ids
        return np.array(sorted(common or ()), dtype=object)

    @classmethod
    def load(cls, path: str | Path) -> "TraceBundle":
        path = Path(path)
        if not path.is_dir():
            raise InputError(str(path), "trace bundle directory not found")
        meta_path = path / "bundle.json"
        if not meta_path.is_file():
            raise InputError(str(path), "not a trace bundle: missing bundle.json")
        try:
            meta = json.loads(read_utf8(meta_path))
        except json.JSONDecodeError as exc:
            raise InputError(str(meta_path), f"invalid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise InputError(str(meta_path), "must hold a JSON object")
        service = _load_service(find_table(path, "service"))
        try:
            pred_path = find_table(path, "predictions")
        except InputError:
            predictions = pd.DataFrame({c: [] for c in PREDICTION_COLUMNS})
        else:
            predictions = _load_predictions(pred_path)
        try:
            startup_path = find_table(path, "startup")
        except InputError:
            startup = empty_startup()
        else:
            startup = load_startup(startup_path, sorted(service["variant"].unique()))
        try:
            features_path = find_table(path, "features")
        except InputError:
            features = empty_features()
        else:
            features = load_features(features_path, predictions["sample_id"].to_numpy())
        return cls(meta=meta, service=service, predictions=predictions, path=path, startup=startup,
                   features=features)

    def save(self, path: str | Path, *, force: bool = False, fmt: str = "parquet") -> Path:
        """Write atomically; ``fmt`` is 'parquet' or 'csv'."""
        path = Path(path)
        with atomic_output(path, force=force, kind="bundle") as staging:
            (staging / "bundle.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n")
            tables = [("service", self.service), ("predictions", self.predictions)]
            tables += [("startup", self.startup)] if len(self.startup) else []
            tables += [("features", self.features)] if len(self.features) else []
            for stem, frame in tables:
                if fmt == "csv":
                    frame.to_csv(staging / f"{stem}.csv", index=False)
                else:
                    frame.to_parquet(staging / f"{stem}.parquet", index=False)
        self.path = path
        return path


def _load_service(path: Path) -> pd.DataFrame:
    frame = read_table(path, SERVICE_COLUMNS)
    if frame.empty:
        raise InputError(str(path), "has no rows; expected one row per timed batch run")
    for column in ("variant", "model", "precision", "device"):
        check_text(frame, path, column)
    frame["batch_size"] = check_numeric(frame, path, "batch_size", low=1, low_inclusive=True,
                                        integer=True).astype(np.int64)
    frame["latency_ms"] = check_numeric(frame, path, "latency_ms", low=0, low_inclusive=False)
    if "threads" in frame.columns:
        frame["threads"] = check_numeric(frame, path, "threads", low=1, low_inclusive=True,
                                         integer=True).astype(np.int64)
    if "started_at_s" in frame.columns:
        frame["started_at_s"] = check_numeric(frame, path, "started_at_s", low=0, low_inclusive=True, missing_ok=True)
    if "idle_ms" in frame.columns:
        frame["idle_ms"] = check_numeric(frame, path, "idle_ms", low=0, low_inclusive=True, missing_ok=True)
    frame["variant"] = frame["variant"].astype(str)
    _check_variant_ids(frame, path)
    return frame


def _check_variant_ids(frame: pd.DataFrame, path: Path) -> None:
    """Each row's model, precision and device columns against its variant id
    (``model[-pruning]/precision/device``, then ``/backend`` unless the backend is eager)."""
    parts = frame["variant"].str.split("/")
    shape = ~parts.map(lambda p: len(p) in (3, 4) and all(x.strip() for x in p)).to_numpy(dtype=bool)
    if shape.any():
        row = int(np.flatnonzero(shape)[0])
        raise InputError(f"{path} row {row + 1}", f"variant {frame['variant'].iloc[row]!r} is not a variant id "
                         "model[-pruning]/precision/device[/backend]")
    base = parts.str[0]
    model = frame["model"].astype(str)
    model_ok = pd.Series([b == m or b.startswith(m + "-") for b, m in zip(base, model)], index=frame.index)
    checks = (("model", model_ok, "model[-pruning]", base),
              ("precision", frame["precision"].astype(str) == parts.str[1], "precision", parts.str[1]),
              ("device", frame["device"].astype(str) == parts.str[2], "device", parts.str[2]))
    for column, agrees, part, expected in checks:
        bad = ~agrees.to_numpy(dtype=bool)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"{path} row {row + 1}", f"{column} {frame[column].iloc[row]!r} disagrees with variant "
                             f"{frame['variant'].iloc[row]!r}, whose {part} is {expected.iloc[row]!r}")


def _load_predictions(path: Path) -> pd.DataFrame:
    frame = read_table(path, PREDICTION_COLUMNS)
    check_text(frame, path, "variant")
    frame["variant"] = frame["variant"].astype(str)
    for column in ("sample_id", "label", "pred"):
        row = np.flatnonzero(frame[column].isna().to_numpy())
        if row.size:
            raise InputError(f"{path} row {row[0] + 1}", f"{column} is missing")
    frame["confidence"] = check_numeric(frame, path, "confidence", low=0, low_inclusive=True, high=1)
    frame["correct"] = check_boolean(frame, path, "correct")
    wrong = frame["correct"].to_numpy(dtype=bool) != (frame["label"] == frame["pred"]).to_numpy(dtype=bool)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise InputError(f"{path} row {row + 1}", f"correct is {bool(frame['correct'].iloc[row])} but label "
                         f"{plain(frame['label'].iloc[row])} and pred {plain(frame['pred'].iloc[row])} "
                         f"{'agree' if not frame['correct'].iloc[row] else 'differ'}; correct must be label == pred")
    duplicated = frame.duplicated(["variant", "sample_id"]).to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise InputError(f"{path} row {row + 1}",
                         f"duplicate prediction for variant {frame['variant'].iloc[row]!r} and "
                         f"sample_id {frame['sample_id'].iloc[row]!r}")
    return frame

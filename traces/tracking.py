"""Experiment tracking: finished run outputs, sweeps and bundles indexed in MLflow.

A run output on disk (``seed-<n>/config.json``, ``summary.json``, ...) stays the record of a run;
MLflow is an index over many of them, to browse, filter and compare in its UI. So tracking reads
what was written, after it was written: ``simulate run --track mlflow`` logs one MLflow run per
seed once every seed is on disk, never a half-done one, and a tracking failure then (a server
down, a locked database) costs the index, not the outputs: one line on stderr, exit status 1.

One MLflow run per seed (or bundle): the resolved scenario (or profile) as params, flattened to
dotted keys (a list of named tables keyed by name, as ``--set`` names them:
``deployments.small.replicas``), the summary's numbers as metrics, the output's files as artifacts.
A sweep is a parent run with a child per grid run (its point as params, its summary as metrics,
only its ``config.json`` and ``summary.json`` as artifacts: its requests would copy the whole
sweep into the store). MLflow's limits (6000 characters a param value, 100 params a request) are
kept here: long values are cut, params go in batches. docs/tracking.md shows a listing.

The default store is ``sqlite:///mlruns.db`` in the current directory (MLflow 3 refuses a plain
file store unless told otherwise), no server needed; artifacts of a SQLite store go beside it,
in ``mlartifacts/``. MLflow is optional (the extra ``track``): it is imported only here, inside
functions, and ``parse_track`` checks it is there before anything runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import posixpath
import re
import sys
import time
import warnings
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping
from urllib.parse import urlparse

from .errors import InputError

DEFAULT_URI = "sqlite:///mlruns.db"
EXTRA = "needs the optional extra 'track': pip install -e '.[track]'"
SEED_FILES = ("config.json", "summary.json", "requests.parquet", "timeline.parquet")
CHILD_FILES = ("config.json", "summary.json")   # a sweep's grid runs: no requests in the store
SWEEP_FILES = ("sweep.json", "results.parquet")
MAX_PARAM_CHARS = 6000     # MLflow's limit on a param value
MAX_KEY_CHARS = 250        # and on a key
PARAMS_PER_BATCH = 100     # params (and tags) in one log_batch request
METRICS_PER_BATCH = 1000   # metrics in one
ARTIFACTS_DIR = "mlartifacts"
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")
_QUIET_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "urllib3", "huey")
_NO_URLS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


@dataclass(frozen=True)
class Target:
    """Where to track: an MLflow tracking URI, and the experiment (None: the input file's stem)."""

    uri: str
    experiment: str | None = None


@dataclass(frozen=True)
class TrackedRun:
    """What one MLflow run gets; ``children`` are logged as its nested runs."""

    name: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str] = field(default_factory=dict)
    artifacts: tuple[Path, ...] = ()
    children: tuple["TrackedRun", ...] = ()


def add_track_arguments(parser: argparse.ArgumentParser) -> None:
    """``--track`` and ``--track-experiment`` on a subcommand."""
    parser.add_argument("--track", metavar="mlflow[:URI]",
                        help="log the finished outputs to MLflow: 'mlflow' (a SQLite store mlruns.db here) or "
                        "'mlflow:<tracking URI>', e.g. mlflow:sqlite:////tmp/x.db, mlflow:http://host:5000 "
                        "(needs the 'track' extra; docs/tracking.md)")
    parser.add_argument("--track-experiment", metavar="NAME",
                        help="the MLflow experiment (default: the input file's name without .toml)")


def parse_track(value: str | None, experiment: str | None = None) -> Target | None:
    """The ``--track`` value as a ``Target`` (None: no tracking), checked before anything runs:
    its form, that MLflow is installed, and that MLflow knows a store for the URI's scheme."""
    if value is None:
        if experiment is not None:
            raise InputError("--track-experiment", "names an MLflow experiment; it needs --track")
        return None
    kind, colon, uri = value.partition(":")
    if kind != "mlflow" or (colon and not uri.strip()):
        raise InputError("--track", f"must be mlflow or mlflow:<tracking URI> (e.g. mlflow:sqlite:///runs.db, "
                         f"mlflow:http://localhost:5000), got {value!r}")
    if experiment is not None and not 0 < len(experiment.strip()) <= 500:
        raise InputError("--track-experiment", f"must be a name of 1 to 500 characters, got {experiment!r}")
    uri = uri.strip() or DEFAULT_URI
    try:
        _import_mlflow()
    except ImportError:
        raise InputError("--track", EXTRA) from None
    _check_uri(uri)
    return Target(uri, experiment.strip() if experiment is not None else None)


def _check_uri(uri: str) -> None:
    """Refuse, without touching any store, a URI that MLflow has no tracking store for."""
    scheme = urlparse(uri).scheme
    if uri.startswith("sqlite:///") and Path(uri[len("sqlite:///"):]).is_dir():
        raise InputError("--track", f"{uri!r} names a directory; a SQLite store is a file, e.g. "
                         f"mlflow:sqlite:///{Path(uri[len('sqlite:///'):]) / 'mlruns.db'}")
    if scheme in ("", "file"):
        import mlflow.environment_variables as env

        allow = getattr(env, "MLFLOW_ALLOW_FILE_STORE", None)  # MLflow 3 refuses a file store by default
        if allow is not None and not allow.get():
            raise InputError("--track", f"{uri!r} is a plain file store, which this MLflow refuses; use a database, "
                             f"e.g. mlflow:{DEFAULT_URI} (the default), or set MLFLOW_ALLOW_FILE_STORE=true")
        return
    if scheme in ("http", "https"):
        _check_server(uri)
        return
    try:  # MLflow's registry of store builders: a lookup, nothing created or connected
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry as registry
    except ImportError:
        return  # another MLflow layout: a bad URI is then reported when tracking starts
    try:
        registry.get_store_builder(uri)
    except Exception:
        raise InputError("--track", f"MLflow has no tracking store for {uri!r} (scheme {scheme!r}); use e.g. "
                         "mlflow:sqlite:///<file>.db or mlflow:http://<host>:<port>") from None


def _check_server(uri: str, timeout_s: float = 5.0) -> None:
    """A tracking server that does not answer at all is refused now, not after a long run (MLflow
    itself retries for minutes). Any HTTP answer, an error status or a login page included, passes."""
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen

    try:
        with urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            pass
    except HTTPError:
        return
    except (URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError("--track", f"the tracking server {uri} does not answer ({reason}); start it "
                         "(mlflow server) or use a local store, e.g. --track mlflow") from None


# -- what is logged -----------------------------------------------------------------------------


def flat_params(config: Mapping, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys; a list of tables that all have distinct
    ``name``s keyed by name (``deployments.small.replicas``), any other list one JSON value."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_params(value, name + ".") if value else {name: "{}"})
        elif isinstance(value, (list, tuple)) and _named_tables(value):
            for item in value:
                flat.update(flat_params({k: v for k, v in item.items() if k != "name"}, f"{name}.{item['name']}."))
        else:
            flat[name] = _text(value)
    return flat


def _named_tables(items) -> bool:
    names = [item.get("name") for item in items if isinstance(item, Mapping)]
    return bool(items) and len(names) == len(items) and all(isinstance(n, str) for n in names) \
        and len(set(names)) == len(names)


def _text(value) -> str:
    text = str(value) if isinstance(value, (str, Path)) else json.dumps(value, default=str)
    return text if len(text) <= MAX_PARAM_CHARS else text[:MAX_PARAM_CHARS - 3] + "..."


def numeric_metrics(summary: Mapping) -> dict[str, float]:
    """The numeric values of a (nested) summary, flattened; booleans, text and nulls left out."""
    from .summary import flatten  # (numpy, scipy: only when tracking)

    return {k: float(v) for k, v in flatten(dict(summary)).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def mlflow_key(name: str) -> str:
    """A param, metric or tag key MLflow accepts: odd characters become ``_``, and a key that is
    not a clean relative path (``a//b``, ``../x``) loses its slashes."""
    key = _BAD_KEY_CHARS.sub("_", name)[:MAX_KEY_CHARS] or "_"
    if posixpath.normpath(key) != key or key.startswith(("/", ".")):
        key = "_" + key.replace("/", "_") if key.startswith(".") else key.replace("/", "_")
    return key


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(str(path), f"cannot be read as JSON ({exc})") from None


def output_run(directory: Path, name: str, *, files: tuple[str, ...] = SEED_FILES,
               params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None) -> TrackedRun:
    """One run output directory: its ``config.json`` as params (unless ``params`` given), its
    ``summary.json`` as metrics, and those of ``files`` that exist as artifacts."""
    directory = Path(directory)
    return TrackedRun(name=name,
                      params=flat_params(_read_json(directory / "config.json")) if params is None else dict(params),
                      metrics=numeric_metrics(_read_json(directory / "summary.json")),
                      tags={"servesim.output": str(directory.resolve()), **(tags or {})},
                      artifacts=tuple(directory / f for f in files if (directory / f).is_file()))


def seed_runs(out: Path, seeds: list[int], label: str) -> list[TrackedRun]:
    """``simulate run``'s output: one run per seed, named ``<label> seed <n>``."""
    return [output_run(Path(out) / f"seed-{seed}", f"{label} seed {seed}",
                       tags={"servesim.kind": "simulate run", "servesim.seed": str(seed)}) for seed in seeds]


def sweep_run(out: Path, run_ids: list[str], sweep_file: Path) -> TrackedRun:
    """``simulate sweep``'s output: a parent run (the sweep file as params; ``sweep.json``,
    ``results.parquet`` and the sweep file as artifacts) with one child per grid run."""
    from .scenario import read_toml

    out, sweep_file = Path(out), Path(sweep_file)
    children = []
    for run_id in run_ids:
        directory = out / "runs" / run_id
        point = {str(k): _text(v) for k, v in _read_json(directory / "summary.json").get("point", {}).items()}
        children.append(output_run(directory, " ".join(f"{k}={v}" for k, v in point.items()) or run_id,
                                   files=CHILD_FILES, params=point,
                                   tags={"servesim.kind": "sweep run", "servesim.run_id": run_id,
                                         **{f"point.{k}": v for k, v in point.items()}}))
    record = _read_json(out / "sweep.json")
    return TrackedRun(name=sweep_file.stem, params=flat_params(read_toml(sweep_file)), metrics={"runs": len(run_ids)},
                      tags={"servesim.kind": "simulate sweep", "servesim.output": str(out.resolve()),
                            "servesim.sweep_identity": str(record.get("identity", ""))},
                      artifacts=tuple(out / f for f in SWEEP_FILES if (out / f).is_file()) + (sweep_file,),
                      children=tuple(children))


def bundle_metrics(bundle) -> dict[str, float]:
    """Per variant of a ``TraceBundle``: ``<variant>.accuracy`` (share correct) and
    ``<variant>.latency_ms.b<batch>.p50`` / ``.p99`` (back to back) per measured batch size;
    and the bundle's row counts."""
    from .profiles import LatencyProfile

    metrics = {"service_rows": float(len(bundle.service)), "predictions": float(len(bundle.predictions)),
               "variants": float(len(bundle.variants)), "failed_variants": float(len(bundle.meta.get("failed", [])))}
    accuracy = bundle.predictions.groupby("variant")["correct"].mean() if len(bundle.predictions) else {}
    for variant in bundle.variants:
        profile = LatencyProfile.from_bundle(bundle, variant, idle_classes=False)
        for b in profile.measured_batch_sizes:
            for q in (50, 99):
                metrics[f"{variant}.latency_ms.b{b}.p{q}"] = float(profile.percentile_ms(b, q))
        if variant in accuracy:
            metrics[f"{variant}.accuracy"] = float(accuracy[variant])
    return metrics


def bundle_run(directory: Path, profile: Mapping) -> TrackedRun:
    """``measure all``'s bundle: the (resolved) profile as params, ``bundle_metrics`` as metrics,
    the bundle's files (not hidden ones) as artifacts."""
    from .bundle import TraceBundle

    directory = Path(directory)
    bundle = TraceBundle.load(directory)
    files = tuple(sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")))
    return TrackedRun(name=directory.name, params=flat_params(profile), metrics=bundle_metrics(bundle),
                      tags={"servesim.kind": "measure all", "servesim.output": str(directory.resolve())},
                      artifacts=files)


# -- logging to MLflow --------------------------------------------------------------------------


def _import_mlflow() -> None:
    """Import MLflow with its own console logging at ERROR (an explicit MLFLOW_LOGGING_LEVEL wins)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # read when mlflow is first imported
    import mlflow  # noqa: F401


@contextmanager
def quiet() -> Iterator[None]:
    """MLflow's INFO lines (its database migrations on a fresh SQLite store), its warnings and its
    two "View run at" lines per run on a tracking server off the console while tracking; errors
    still come as exceptions."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    added = _NO_URLS not in os.environ
    os.environ.setdefault(_NO_URLS, "true")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _import_mlflow()  # it configures its loggers when first imported: set them after
            for logger in loggers:
                logger.setLevel(logging.ERROR)
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
            if added:
                os.environ.pop(_NO_URLS, None)


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, ``mlartifacts/`` beside its database file; else the store's default."""
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / ARTIFACTS_DIR).as_uri()


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _experiment_id(client, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location(uri))
    if experiment.lifecycle_stage != "active":
        raise InputError(f"experiment {name!r}", "is deleted in this store; restore it (mlflow experiments restore) "
                         "or choose another with --track-experiment")
    return experiment.experiment_id


def _log_one(client, experiment_id: str, run: TrackedRun, parent_id: str | None = None) -> str:
    """Create the MLflow run, log it in batches, finish it; FAILED if logging broke off."""
    from mlflow.entities import Metric, Param

    tags = {mlflow_key(k): _text(v) for k, v in run.tags.items()}
    if parent_id is not None:
        tags["mlflow.parentRunId"] = parent_id
    run_id = client.create_run(experiment_id, run_name=run.name, tags=tags).info.run_id
    try:
        params = [Param(mlflow_key(k), _text(v)) for k, v in run.params.items()]
        for batch in _batches(params, PARAMS_PER_BATCH):
            client.log_batch(run_id, params=batch)
        stamp = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(k), v, stamp, 0) for k, v in run.metrics.items()]
        for batch in _batches(metrics, METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=batch)
        for path in run.artifacts:
            client.log_artifact(run_id, str(path))
    except BaseException:
        _failed(client, run_id)
        raise
    return run_id


def _failed(client, run_id: str) -> None:
    """Mark a run whose logging broke off FAILED, if the store still answers (the first error is the story)."""
    with suppress(Exception):
        client.set_terminated(run_id, "FAILED")


def log_runs(target: Target, experiment: str, runs: list[TrackedRun],
             advance: Callable[[], None] = lambda: None) -> list[str]:
    """Log the runs (and their children, nested) to MLflow; the top-level run ids. Raises what
    MLflow raises; ``advance()`` after each run logged."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=target.uri)
    experiment_id = _experiment_id(client, target.experiment or experiment, target.uri)
    ids = []
    for run in runs:
        run_id = _log_one(client, experiment_id, run)
        try:
            for child in run.children:
                client.set_terminated(_log_one(client, experiment_id, child, run_id))
                advance()
        except BaseException:
            _failed(client, run_id)
            raise
        client.set_terminated(run_id)
        advance()
        ids.append(run_id)
    return ids


def run_count(runs: list[TrackedRun]) -> int:
    return sum(1 + run_count(list(run.children)) for run in runs)


def track(target: Target | None, experiment: str, runs: Callable[[], list[TrackedRun]], outputs: Path) -> int:
    """The CLIs' last step: log ``runs()`` (built from the finished outputs) and say where;
    0, or 1 with one line on stderr when tracking fails (the outputs stay as written)."""
    if target is None:
        return 0
    from .progress import Progress

    name = target.experiment or experiment
    try:
        with quiet():
            tracked = runs()
            with Progress(run_count(tracked), f"tracking to {target.uri}", "runs") as progress:
                log_runs(target, name, tracked, progress.advance)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        reason = reason if isinstance(exc, InputError) else f"{type(exc).__name__}: {reason}".rstrip(": ")
        print(f"error: tracking to {target.uri} failed ({reason}); the outputs in {outputs} are kept", file=sys.stderr)
        return 1
    browse = "" if urlparse(target.uri).scheme.startswith("http") else \
        f" (browse: mlflow ui --backend-store-uri {target.uri})"
    print(f"tracked {run_count(tracked)} MLflow run(s) in experiment {name!r} at {target.uri}{browse}")
    return 0

"""`analyse theory`: queueing theory beside the simulation, per deployment; competitive ratios of a sweep.

Given a run output (``simulate run --out DIR``), each deployment is read as a G/G/c queue and its
mean wait predicted (``traces.queueing``: Allen-Cunneen, and its batching extension) from what the
run itself saw:

- **lambda**, the offered rate: requests that joined its queue (a full queue's rejections did not)
  per second of the measurement window ``[warmup_s, duration_s)``;
- **Ca^2**, the squared coefficient of variation of the interarrival times into it (1 for Poisson;
  above 1 behind a cascade, whose hop passes requests on a batch at a time);
- **c**, its replicas (the time-mean of ready replicas, rounded, when an autoscaler, plan or crash
  changed them: the estimate is then approximate);
- **service**, at the batch sizes it actually served (its batches that started in the window) and
  at its maximum batch size: the bundle's measured back-to-back latencies of its variant
  (``traces.profiles.LatencyProfile``, quantile-interpolated between measured sizes), or a parametric
  service's analytic mean and variance (``traces.distributions``).

Without batching (max_batch_size 1) the estimate is Allen-Cunneen, exact for M/M/c and M/G/1. With
batching, a served batch is the service unit of the residual wait and a full batch that of the queue
ahead (``queueing.batching_wait``); the estimate is then approximate. It leaves out what the
simulator adds: slow spells (correlated service times, which build queues), idle classes (a batch
after idleness is slower, common at low load) and per-replica queues under a balancer other than
``shared`` (the estimate pools them). The simulated mean wait (hop start - hop enqueue, measured
requests) has a 95% interval from 20 batch means in arrival order, which allows for the correlation
of successive waits. rho >= 1 (or, batching, rho_full >= 1) is reported as unstable.

**EDF feasibility.** For each deadline class d of the requests that joined the deployment, with t0
the mean time those requests had spent before joining it (0 at a route's first hop), the class is
feasible here when rho < 1 and rho_full < 1 (the utilisation bound: for EDF, as for any
work-conserving discipline, necessary for a finite wait) and t0 + Wq + E[S_request] <= d, where Wq
is the estimate above and E[S_request] the mean service time a request sees (served batches
weighted by their size). The test is on means, not a guarantee for each request. Under EDF the
overall mean wait is that of FIFO (Kleinrock's conservation law: the same work, in another order),
but EDF moves wait from tight classes to loose ones, so per class the test is pessimistic for the
tightest.

Given a sweep directory instead (``simulate sweep --out DIR``), the command reports each policy's
competitive ratios against the bounds (``analysis.competitive``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from traces import queueing
from traces.errors import InputError

from .runs import SeedRun, markdown_table, read_run
from .stats import Interval, mean_interval

EXAMPLES = """examples:
  analyse theory runs/mmc                     # M/M/4: Erlang C beside the simulated wait
  analyse theory runs/demo --out runs/demo/theory.md
  analyse theory runs/study                   # a sweep: on-time accuracy over the bounds
"""
REPORT_MARKER = "<!-- written by analyse theory; replaced by its --force -->"
LEGEND = ("lambda: requests that joined the queue per second of the measurement window; Ca^2, Cs^2: squared "
          "coefficients of variation of the interarrival and the batch service times; E[S]: mean batch service, "
          "from the bundle (or the parametric service) and as simulated; rho = lambda E[S] / (c mean batch), "
          "rho full: the same at full batches; queue ms: residual + queue ahead; estimate = formation + queue; "
          "simulated: mean of hop start - hop enqueue of the measured requests, ± 95% from 20 batch means.\n\n")
WAIT_BATCHES = 20          # batch means for the interval of the simulated mean wait
HOP_FIELDS = ("deployment", "enqueue_s", "start_s", "finish_s", "batch_size", "replica")


@dataclass
class DeploymentTheory:
    """One deployment in one seed: what the run offered it, the estimate and the simulated wait."""

    name: str
    seed: int
    offered_rps: float
    ca2: float
    servers: int
    simulated_service_ms: float
    service: queueing.BatchService | None = None
    request_service_ms: float = math.nan
    wait: queueing.WaitEstimate | None = None
    simulated_wait: Interval = Interval(math.nan, math.nan, 0)
    classes: list[tuple] = field(default_factory=list)  # (deadline, t0, predicted, simulated, fits)
    notes: list[str] = field(default_factory=list)

    @property
    def stable(self) -> bool:
        return self.wait is not None and self.wait.stable


def hop_rows(requests: pd.DataFrame, name: str) -> pd.DataFrame:
    """Every visit of a request to deployment ``name`` (any hop), one row each: the hop's fields
    plus arrival, deadline, measured and the hop's index. A hop whose full queue rejected the request is left out."""
    parts = []
    for k in range(int(requests["hops"].max()) if len(requests) else 0):
        cols = {f"hop{k}_{f}": f for f in HOP_FIELDS}
        if not set(cols) <= set(requests.columns):
            break
        at = requests[f"hop{k}_deployment"] == name
        rejected = (requests["hops"] == k + 1) & (requests["drop_reason"] == "queue_full")
        rows = requests.loc[at & ~rejected, [*cols, "arrival_s", "deadline_ms", "measured"]]
        parts.append(rows.rename(columns=cols).assign(hop=k))
    if not parts:
        return pd.DataFrame(columns=[*HOP_FIELDS, "arrival_s", "deadline_ms", "measured", "hop"])
    return pd.concat(parts, ignore_index=True)


def _bundle_path(config: dict, deployment: dict, where: str) -> Path:
    given = deployment.get("bundle") or config.get("bundle")
    if not given:
        raise InputError(where, "names a variant but the scenario has no bundle")
    candidates = [Path(given)]
    if config.get("source"):
        candidates.append(Path(config["source"]).parent / given)
    for path in candidates:
        if path.is_dir():
            return path
    raise InputError(where, f"bundle {given!r} not found (looked from the current directory and the scenario's)")


def size_moments(config: dict, deployment: dict, sizes, where: str, bundles: dict) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (ms, ms^2) of the service time at each batch size of ``sizes``: the bundle's
    measured back-to-back latencies of the variant, or the parametric service's analytic moments."""
    sizes = [int(b) for b in sizes]
    if "service" in deployment:
        from traces.distributions import service_from_config

        dist = service_from_config(deployment["service"], f"{where}.service")
        return np.array([dist.mean(b) for b in sizes]), np.array([dist.variance(b) for b in sizes])
    if "variant" not in deployment:
        raise InputError(where, "has neither a variant nor a parametric service")
    from traces.bundle import TraceBundle
    from traces.profiles import LatencyProfile

    path = _bundle_path(config, deployment, where)
    key = str(path.resolve())
    if key not in bundles:
        bundles[key] = TraceBundle.load(path)
    if deployment["variant"] not in bundles[key].variants:
        raise InputError(where, f"variant {deployment['variant']!r} is not in bundle {path}")
    profile = LatencyProfile.from_bundle(bundles[key], deployment["variant"], idle_classes=False)
    try:
        grids = [profile.grid(b) for b in sizes]
    except ValueError as exc:
        raise InputError(where, f"served a batch size the bundle cannot give: {exc}") from None
    return np.array([g.mean() for g in grids]), np.array([g.var() for g in grids])


def batch_service(config: dict, deployment: dict, batch_counts: pd.Series, where: str,
                  bundles: dict) -> tuple[queueing.BatchService, float]:
    """The deployment's ``BatchService`` (served batches mixed by ``batch_counts``: size -> batches;
    full batches at the larger of its max_batch_size and the largest served) and the mean service
    time a request sees (batches weighted by their size)."""
    sizes = batch_counts.index.to_numpy(dtype=np.int64)
    weights = batch_counts.to_numpy(dtype=np.float64) / batch_counts.sum()
    full = max(int(deployment.get("max_batch_size", 1)), int(sizes.max()))
    means, variances = size_moments(config, deployment, [*sizes, full], where, bundles)
    full_mean, full_var = float(means[-1]), float(variances[-1])
    means, variances = means[:-1], variances[:-1]
    mean = float(weights @ means)
    mean_size = float(weights @ sizes)
    service = queueing.BatchService(mean, _cs2(mean, float(weights @ (variances + means**2)) - mean**2), mean_size,
                                    full_mean, _cs2(full_mean, full_var), full)
    return service, float((weights * sizes) @ means) / mean_size


def _cs2(mean: float, variance: float) -> float:
    return variance / mean**2 if mean > 0 else 0.0


def _servers(deployment: dict, timeline: pd.DataFrame | None, window: tuple[float, float]) -> tuple[int, str]:
    replicas = int(deployment.get("replicas", 1))
    if timeline is None or timeline.empty:
        return replicas, ""
    ticks = timeline[(timeline["deployment"] == deployment["name"]) & (timeline["time_s"] >= window[0])
                     & (timeline["time_s"] < window[1])]
    if ticks.empty or (ticks["ready_replicas"] == replicas).all():
        return replicas, ""
    mean = float(ticks["ready_replicas"].mean())
    return max(1, round(mean)), f"ready replicas varied (mean {mean:.2f}); c = {max(1, round(mean))}, approximate"


def _batch_means(waits_ms: np.ndarray) -> Interval:
    """The mean wait and the 95% half-width of ``WAIT_BATCHES`` contiguous batch means (nan when short)."""
    if waits_ms.size < 2 * WAIT_BATCHES:
        return Interval(float(waits_ms.mean()) if waits_ms.size else math.nan, math.nan, int(waits_ms.size))
    spread = mean_interval([chunk.mean() for chunk in np.array_split(waits_ms, WAIT_BATCHES)])
    return Interval(float(waits_ms.mean()), spread.half_width, int(waits_ms.size))


def deployment_theory(run: SeedRun, deployment: dict, requests: pd.DataFrame, timeline: pd.DataFrame | None,
                      bundles: dict) -> DeploymentTheory:
    """The estimate and the simulation of one deployment in one seed (see the module docstring)."""
    name = deployment["name"]
    window = (float(run.config["warmup_s"]), float(run.config["duration_s"]))
    visits = hop_rows(requests, name)
    joined = np.sort(visits["enqueue_s"].to_numpy(dtype=np.float64))
    joined = joined[(joined >= window[0]) & (joined < window[1])]
    servers, note = _servers(deployment, timeline, window)
    served = visits[visits["start_s"].notna()]
    batches = served.drop_duplicates(["replica", "start_s"])
    batches = batches[(batches["start_s"] >= window[0]) & (batches["start_s"] < window[1])]
    sim_service_ms = float((batches["finish_s"] - batches["start_s"]).mean() * 1000.0) if len(batches) else math.nan
    theory = DeploymentTheory(name, run.seed, joined.size / (window[1] - window[0]),
                              queueing.squared_cv(np.diff(joined)), servers, sim_service_ms, notes=[note] if note else [])
    if batches.empty:
        theory.notes.append("served no batch in the measurement window: no estimate")
        return theory
    counts = batches["batch_size"].astype(np.int64).value_counts().sort_index()
    theory.service, theory.request_service_ms = batch_service(
        run.config, deployment, counts, f"{run.path / 'config.json'} deployment {name!r}", bundles)
    ca2 = theory.ca2 if math.isfinite(theory.ca2) else 1.0
    if not math.isfinite(theory.ca2):
        theory.notes.append("too few arrivals in the window to measure Ca^2: Poisson (1) assumed")
    theory.wait = queueing.batching_wait(theory.offered_rps, servers, theory.service, ca2,
                                         float(deployment.get("batch_wait_timeout_ms", 0.0)))
    measured = served[served["measured"].astype(bool)].sort_values("enqueue_s")
    theory.simulated_wait = _batch_means(((measured["start_s"] - measured["enqueue_s"]) * 1000.0).to_numpy())
    theory.classes = _class_fits(theory, visits[visits["measured"].astype(bool)])
    theory.notes += _caveats(deployment, theory.service, fed=bool((visits["hop"] > 0).any()))
    return theory


def _class_fits(theory: DeploymentTheory, visits: pd.DataFrame) -> list[tuple]:
    """Per deadline class: (deadline, t0, predicted mean latency, simulated mean latency, fits)."""
    rows = []
    for deadline, group in visits.groupby("deadline_ms", sort=True):
        before_ms = float((group["enqueue_s"] - group["arrival_s"]).mean() * 1000.0)
        predicted = before_ms + theory.wait.total_ms + theory.request_service_ms
        done = group[group["finish_s"].notna()]
        simulated = float((done["finish_s"] - done["arrival_s"]).mean() * 1000.0) if len(done) else math.nan
        rows.append((float(deadline), before_ms, predicted, simulated, theory.stable and predicted <= deadline))
    return rows


def _caveats(deployment: dict, service: queueing.BatchService, fed: bool) -> list[str]:
    notes = []
    if service.mean_batch_size > 1 or int(deployment.get("max_batch_size", 1)) > 1:
        notes.append("batching: served batches are the unit of the residual wait, full batches that of the queue "
                     "ahead; the estimate is approximate")
    if deployment.get("balancer", "shared") != "shared":
        notes.append(f"balancer {deployment['balancer']!r}: per-replica queues, pooled in the estimate (optimistic)")
    if "variant" in deployment and deployment.get("slow_spells", True):
        notes.append("slow spells correlate service times in the simulation; the estimate assumes independence")
    if deployment.get("queue") == "edf":
        notes.append("EDF queue: the mean wait is that of FIFO, per class it differs")
    if fed:
        notes.append("fed by an earlier hop: arrivals come a batch at a time (see Ca^2)")
    return notes


def _timeline(run: SeedRun) -> pd.DataFrame | None:
    path = run.path / "timeline.parquet"
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path, columns=["time_s", "deployment", "ready_replicas"])
    except Exception as exc:  # noqa: BLE001 - any reader error is a bad file
        raise InputError(str(path), f"cannot read the timeline: {exc}".splitlines()[0]) from None


def run_theory(runs: list[SeedRun]) -> list[DeploymentTheory]:
    """Every deployment of every seed, in the scenario's order, seed by seed."""
    bundles: dict = {}
    out = []
    for run in runs:
        for key in ("warmup_s", "duration_s", "deployments"):
            if key not in run.config:
                raise InputError(str(run.path / "config.json"), f"has no {key!r}; expected a resolved scenario")
        requests = run.requests
        if "hops" not in requests or "drop_reason" not in requests:
            raise InputError(str(run.path / "requests.parquet"), "has no hops/drop_reason column; expected a request "
                             "table of `simulate run`")
        timeline = _timeline(run)
        out += [deployment_theory(run, dep, requests, timeline, bundles) for dep in run.config["deployments"]]
    return out


def _ms(value: float, digits: int = 3) -> str:
    if math.isinf(value):
        return "unstable"
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _row(r: DeploymentTheory) -> list:
    s, w = r.service, r.wait
    if s is None:
        return [r.seed, f"{r.offered_rps:.1f}", _ms(r.ca2), r.servers, *["-"] * 8, r.simulated_wait.format(3)]
    return [r.seed, f"{r.offered_rps:.1f}", _ms(r.ca2), r.servers, _ms(s.mean_batch_size, 2),
            f"{_ms(s.mean_ms)} / {_ms(r.simulated_service_ms)}", _ms(s.cs2), _ms(w.rho), _ms(w.rho_full),
            _ms(w.formation_ms), _ms(w.residual_ms + w.queue_ahead_ms), _ms(w.total_ms), r.simulated_wait.format(3)]


def run_report(results: list[DeploymentTheory]) -> str:
    """Markdown: per deployment, one row per seed (and a mean over seeds), then the EDF check."""
    parts = []
    for name in dict.fromkeys(r.name for r in results):
        rows = [r for r in results if r.name == name]
        header = ["seed", "lambda rps", "Ca^2", "c", "mean batch", "E[S] ms bundle / sim", "Cs^2", "rho",
                  "rho full", "formation ms", "queue ms", "estimate ms", "simulated ms (95%)"]
        table = [_row(r) for r in rows]
        if len(rows) > 1:
            estimates = [r.wait.total_ms if r.wait else math.nan for r in rows]
            table.append(["mean", *[""] * 10,
                          "unstable" if any(math.isinf(e) for e in estimates) else mean_interval(estimates).format(3),
                          mean_interval([r.simulated_wait.mean for r in rows]).format(3)])
        parts += [f"## {name}\n", markdown_table(header, table) + "\n"]
        fits = [[r.seed, _ms(d, 1), _ms(t0), _ms(p), _ms(sim), "yes" if r.stable else "no", "yes" if ok else "no"]
                for r in rows for d, t0, p, sim, ok in r.classes]
        if fits:
            parts.append("EDF feasibility (mean latency: before joining + wait + service):\n")
            parts.append(markdown_table(["seed", "deadline ms", "before joining ms", "predicted ms", "simulated ms",
                                         "rho, rho full < 1", "fits"], fits) + "\n")
        notes = list(dict.fromkeys(n for r in rows for n in r.notes))
        if notes:
            parts.append("\n".join(f"- {n}" for n in notes) + "\n")
    return "\n".join(parts)


def add_arguments(parser) -> None:
    parser.add_argument("path", help="a run output (simulate run --out DIR, or one seed-<n>/ in it), or a sweep "
                                     "directory (simulate sweep --out DIR) or its results.parquet")
    parser.add_argument("--policy-axis", default="policy", help="a sweep's column naming the policy (default: policy)")
    parser.add_argument("--out", help="also write the Markdown to this file (atomically; never over a file not "
                                      "written by this command)")
    parser.add_argument("--force", action="store_true", help="replace an earlier report of this command at --out")


def run(args) -> int:
    from traces.outputs import atomic_file, check_file_target

    if args.out:  # checked before anything is read
        check_file_target(args.out, force=args.force, marker_line=REPORT_MARKER)
    path = Path(args.path)
    results = path / "results.parquet" if path.is_dir() else path
    if results.suffix == ".parquet" and results.is_file():
        from .competitive import competitive_ratios, ratios_report
        from .study import read_results

        text = "# Competitive ratios\n\n" + ratios_report(competitive_ratios(read_results(results), args.policy_axis),
                                                              args.policy_axis)
    else:
        text = "# Queueing theory beside the simulation\n\n" + LEGEND + run_report(run_theory(read_run(path)))
    if args.out:
        with atomic_file(args.out, force=args.force, marker_line=REPORT_MARKER) as tmp:
            tmp.write_text(REPORT_MARKER + "\n" + text)
    print(text, end="")
    return 0

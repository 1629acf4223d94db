"""Per-tenant metrics of a run: what each tenant got, what it cost, and how fairly it was served.

A story: tenants "web" (weight 2) and "batch" (weight 1) share one deployment. The whole-run summary
says 97% of requests met their deadline; here we learn that web met 99.5% and batch 80%, that web
received 62% of the replica time and so carries 62% of the replica cost, and, from the service
gap, how far batch fell behind its share while both had requests waiting.

Definitions, all over a run's ``requests`` table (see ``traces.summary`` for the window and the
measured requests; every figure of a tenant is the whole-run figure over that tenant's rows, so a
run with one tenant gets exactly the whole-run figures):

- **service**: every hop that ran, with its batch started in the window ``[warmup_s, duration_s)``
  (as the deployment stats count batches), gives each of its requests ``(finish - start) /
  batch_size`` seconds: a batch's service is split evenly over the requests in it. Requests of
  the warm-up served inside the window count, as the replica time they used is paid for.
- **attributed replica-seconds**: a deployment's replica-seconds in the window are split over the
  tenants in proportion to the service each received on it (so idle time is paid for by those who
  used the deployment, in their share). A deployment that served nothing in the window splits by
  the tenants' service on all deployments, without any by their measured requests, without those
  equally; the tenants' shares therefore always add up to all the replica-seconds.
- **cost**: attributed replica-seconds / 3600 x price per replica-hour, plus measured requests /
  1000 x the tenant's ``price_per_1k_requests``; ``per_1k_requests`` = total x 1000 / measured.
- **Jain's index** over the tenants' normalised service x_i = service_i / weight_i:
  (sum x)^2 / (n sum x^2); 1 when all are equal, 1/n when one tenant got everything; NaN with no
  tenants or no service. Every tenant counts, so one that sent nothing lowers it.
- **service gap**: a tenant is *backlogged* while one of its requests waits at a hop: from its
  enqueue to its start there (an expired request that never started waited at least until its
  deadline, if the table has ``deadline_ms``; a request turned away never waited). W_i(t) is its
  cumulative service, spread evenly over each hop's service interval (so it is continuous and
  counts service while it happens). For tenants i, j and each maximal interval inside the window
  where both are backlogged, D(t) = W_i(t)/w_i - W_j(t)/w_j; the gap is max D - min D there (the
  packetised fair-queueing measure: how far one pulled ahead of its weighted share while both
  wanted service). ``max_service_gap_s`` is the largest over pairs and intervals.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .errors import InputError
from .summary import Tally

_HOP = re.compile(r"^hop(\d+)_deployment$")
# the columns traces.summary.Tally needs for the whole-run figures we repeat per tenant
_TALLY_COLUMNS = ("measured", "dropped", "hit", "correct", "drop_reason", "latency_ms", "arrival_s", "hop0_start_s")
_RUN_KEYS = ("requests", "completed", "dropped", "dropped_by_reason", "hit_rate", "accuracy", "ontime_accuracy",
             "latency_ms", "wait_ms", "throughput_rps", "offered_rps")


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else math.nan


def _window(window_s) -> tuple[float, float]:
    lo, hi = (float(v) for v in window_s)
    if not lo <= hi:
        raise InputError("window_s", f"expected (warmup_s, duration_s) with warmup_s <= duration_s, got {window_s}")
    return lo, hi


def _check_price(where: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise InputError(where, f"expected a price >= 0, got {value}")


def _tenant_codes(requests: pd.DataFrame, tenants: Sequence[str]) -> np.ndarray:
    """Each row's index into ``tenants``; a row of another tenant is an error."""
    if len(set(tenants)) != len(tenants):
        raise InputError("tenants", f"expected distinct names, got {list(tenants)}")
    if "tenant" not in requests:
        raise InputError("requests", "expected a 'tenant' column")
    codes = pd.Index(list(tenants), dtype=object).get_indexer(requests["tenant"].to_numpy(dtype=object))
    if (codes < 0).any():
        unknown = sorted(set(requests["tenant"][codes < 0].astype(str)))
        raise InputError("requests.tenant", f"expected one of {list(tenants)}, got {unknown}")
    return codes


def _hops(requests: pd.DataFrame, codes: np.ndarray) -> dict[str, np.ndarray]:
    """Every hop every request reached, one row each: tenant code, deployment, enqueue, start,
    finish, batch size and the end of its wait (NaN: it never waited)."""
    ks = sorted(int(m.group(1)) for m in map(_HOP.match, requests.columns) if m)
    expired = (requests["dropped"].to_numpy(dtype=bool)
               & (requests["drop_reason"].to_numpy(dtype=object) == "expired"))
    deadline = np.full(len(requests), np.nan)
    if "deadline_ms" in requests:
        deadline = requests["arrival_s"].to_numpy(np.float64) + requests["deadline_ms"].to_numpy(np.float64) / 1e3
    parts: dict[str, list] = {key: [] for key in ("tenant", "deployment", "enqueue", "start", "finish", "size", "until")}
    for k in ks:
        enqueue = requests[f"hop{k}_enqueue_s"].to_numpy(dtype=np.float64, na_value=np.nan)
        rows = np.isfinite(enqueue)
        start = requests[f"hop{k}_start_s"].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
        parts["tenant"].append(codes[rows])
        parts["deployment"].append(requests[f"hop{k}_deployment"].to_numpy(dtype=object)[rows])
        parts["enqueue"].append(enqueue[rows])
        parts["start"].append(start)
        parts["finish"].append(requests[f"hop{k}_finish_s"].to_numpy(dtype=np.float64, na_value=np.nan)[rows])
        parts["size"].append(requests[f"hop{k}_batch_size"].to_numpy(dtype=np.float64, na_value=np.nan)[rows])
        parts["until"].append(np.where(np.isfinite(start), start, np.where(expired[rows], deadline[rows], np.nan)))
    empty = {"deployment": np.empty(0, dtype=object), "tenant": np.empty(0, dtype=np.int64)}
    return {key: np.concatenate(v) if v else empty.get(key, np.empty(0)) for key, v in parts.items()}


def _served(hops: dict[str, np.ndarray], window_s: tuple[float, float]) -> np.ndarray:
    """Which hops ran a batch started inside the window."""
    lo, hi = window_s
    start, finish, size = hops["start"], hops["finish"], hops["size"]
    with np.errstate(invalid="ignore"):
        return np.isfinite(finish) & (size > 0) & (start >= lo) & (start < hi)


def _share_s(hops: dict[str, np.ndarray]) -> np.ndarray:
    """Each hop's share of its batch's service (NaN where it did not run)."""
    return (hops["finish"] - hops["start"]) / hops["size"]


def service_by_deployment(requests: pd.DataFrame, *, tenants: Sequence[str],
                          window_s) -> tuple[list[str], np.ndarray]:
    """The deployments that served in the window, and the service seconds (tenant x deployment)
    each tenant received on each (see the module docstring)."""
    hops = _hops(requests, _tenant_codes(requests, tenants))
    ran = _served(hops, _window(window_s))
    names, dep = np.unique(hops["deployment"][ran].astype(str), return_inverse=True)
    out = np.zeros((len(tenants), len(names)))
    np.add.at(out, (hops["tenant"][ran], dep), _share_s(hops)[ran])
    return [str(n) for n in names], out


def attribute_replica_seconds(service_s: np.ndarray, replica_s: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Each tenant's part of the deployments' replica-seconds. ``service_s``: tenant x deployment
    service; ``replica_s``: per deployment; ``measured``: measured requests per tenant. A column with
    service splits by it; one without by the tenants' total service, else measured requests, else
    equally. The parts add up to ``replica_s.sum()`` (to rounding)."""
    n_tenants = service_s.shape[0]
    out = np.zeros(n_tenants)
    if n_tenants == 0:
        return out
    fallback = next((v for v in (service_s.sum(axis=1), np.asarray(measured, dtype=np.float64), np.ones(n_tenants))
                     if v.sum() > 0))
    fallback = fallback / fallback.sum()
    for d, seconds in enumerate(replica_s):  # in order, so one tenant's part is exactly sum(replica_s)
        column = service_s[:, d]
        total = column.sum()
        out = out + (column / total if total > 0 else fallback) * seconds
    return out


def tenant_summary(requests: pd.DataFrame, *, tenants: Sequence[str], window_s: tuple[float, float],
                   replica_seconds: dict[str, float], price_per_replica_hour: float,
                   price_per_1k_requests: dict[str, float] | None = None) -> dict[str, dict]:
    """Per tenant (in ``tenants`` order, those without requests too): the whole-run summary's
    request figures over its rows (``requests``, ``completed``, ``dropped``, ``dropped_by_reason``,
    ``hit_rate``, ``accuracy``, ``ontime_accuracy``, ``latency_ms``, ``wait_ms``, ``throughput_rps``,
    ``offered_rps``, computed by ``traces.summary.Tally``), ``goodput_rps`` (measured requests
    completed on time per second of the window), ``service_seconds``, ``replica_seconds``
    (attributed) and ``cost`` (``replica``, ``requests``, ``total``, ``per_1k_requests``).

    How a batch's cost is split: its service time is split evenly over the requests in it, and
    each deployment's replica-seconds in the window (idle ones included) over the tenants in
    proportion to the service they received there; see the module docstring for the fallbacks.
    ``replica_seconds`` must name every deployment that served a batch in the window."""
    lo, hi = _window(window_s)
    codes = _tenant_codes(requests, tenants)
    prices = dict(price_per_1k_requests or {})
    _check_price("price_per_replica_hour", price_per_replica_hour)
    for name, value in prices.items():
        if name not in tenants:
            raise InputError(f"price_per_1k_requests.{name}", f"expected one of the tenants {list(tenants)}")
        _check_price(f"price_per_1k_requests.{name}", value)
    names, service = service_by_deployment(requests, tenants=tenants, window_s=(lo, hi))
    unknown = sorted(set(names) - set(replica_seconds))
    if unknown:
        raise InputError("replica_seconds", f"expected every deployment that served, missing {unknown}")
    deployments = list(replica_seconds)
    columns = {name: j for j, name in enumerate(names)}
    by_deployment = np.zeros((len(tenants), len(deployments)))
    for d, name in enumerate(deployments):
        if name in columns:
            by_deployment[:, d] = service[:, columns[name]]
    frame = requests[[c for c in _TALLY_COLUMNS if c != "correct" or c in requests]]
    if "correct" not in requests:
        frame = frame.assign(correct=pd.array([pd.NA] * len(frame), dtype="boolean"))
    tallies = []
    for t in range(len(tenants)):
        tally = Tally(0)
        tally.add(frame[codes == t])
        tallies.append(tally)
    measured = np.array([tally.measured for tally in tallies], dtype=np.float64)
    attributed = attribute_replica_seconds(by_deployment, np.array([replica_seconds[d] for d in deployments],
                                                                  dtype=np.float64), measured)
    out = {}
    for t, (name, tally) in enumerate(zip(tenants, tallies)):
        run = tally.summary(warmup_s=lo, duration_s=hi, deployments={}, price_per_replica_hour=0.0)
        replica_cost = float(attributed[t]) / 3600.0 * price_per_replica_hour
        request_cost = tally.measured / 1000.0 * prices.get(name, 0.0)
        total = replica_cost + request_cost
        out[name] = {**{key: run[key] for key in _RUN_KEYS},
                     "goodput_rps": _ratio(tally.hits, hi - lo),
                     "service_seconds": float(service[t].sum()),
                     "replica_seconds": float(attributed[t]),
                     "cost": {"replica": replica_cost, "requests": request_cost, "total": total,
                              "per_1k_requests": _ratio(total * 1000.0, tally.measured)}}
    return out


def jain_index(values) -> float:
    """(sum x)^2 / (n sum x^2): 1 when all are equal, 1/n when one has everything; NaN for none
    or all zero."""
    x = np.asarray(values, dtype=np.float64)
    squares = float((x * x).sum())
    return float(x.sum()) ** 2 / (x.size * squares) if x.size and squares > 0 else math.nan


def _merged(begin: np.ndarray, end: np.ndarray, window_s: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The union of the intervals [begin, end) clipped to the window, as sorted disjoint intervals."""
    lo, hi = window_s
    begin, end = np.maximum(begin, lo), np.minimum(end, hi)
    keep = end > begin  # NaN compares false: no wait
    order = np.argsort(begin[keep], kind="stable")
    begin, end = begin[keep][order], end[keep][order]
    if begin.size == 0:
        return begin, end
    reach = np.maximum.accumulate(end)
    first = np.concatenate(([True], begin[1:] > reach[:-1]))
    last = np.concatenate((first[1:], [True]))
    return begin[first], reach[last]


def _both(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The intersection of two sorted disjoint interval lists."""
    (a0, a1), (b0, b1) = a, b
    first = np.searchsorted(b1, a0, side="right")  # b intervals ending after a's begins...
    stop = np.searchsorted(b0, a1, side="left")    # ... and beginning before a's ends
    counts = np.maximum(stop - first, 0)
    i = np.repeat(np.arange(a0.size), counts)
    j = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(first, counts)
    begin, end = np.maximum(a0[i], b0[j]), np.minimum(a1[i], b1[j])
    keep = end > begin
    return begin[keep], end[keep]


class _Cumulative:
    """A tenant's cumulative normalised service W(t)/w: each hop's share accrues at a constant
    rate over its service interval, so W is piecewise linear with knots at starts and finishes."""

    def __init__(self, start: np.ndarray, finish: np.ndarray, share_s: np.ndarray, weight: float):
        ok = np.isfinite(share_s) & (finish > start)
        rate = share_s[ok] / (finish[ok] - start[ok]) / weight
        times = np.concatenate((start[ok], finish[ok]))
        order = np.argsort(times, kind="stable")
        self.times = times[order]
        self.rate = np.cumsum(np.concatenate((rate, -rate))[order])  # the rate after each knot
        self.value = np.concatenate(([0.0], np.cumsum(self.rate[:-1] * np.diff(self.times))))

    def __call__(self, t: np.ndarray) -> np.ndarray:
        if self.times.size == 0:
            return np.zeros_like(t)
        k = np.searchsorted(self.times, t, side="right") - 1
        at = np.maximum(k, 0)
        return np.where(k >= 0, self.value[at] + self.rate[at] * (t - self.times[at]), 0.0)


def _pair_gap(both: tuple[np.ndarray, np.ndarray], wi: _Cumulative, wj: _Cumulative) -> float:
    """max over the intervals of (max D - min D), D = wi - wj; D is linear between the knots of
    either tenant, so its extremes on [a, b] lie at a, b or a knot inside."""
    a, b = both
    if a.size == 0:
        return 0.0
    points = np.sort(np.concatenate((a, b, wi.times, wj.times)))
    interval = np.searchsorted(a, points, side="right") - 1
    keep = interval >= 0
    keep[keep] = points[keep] <= b[interval[keep]]
    points, interval = points[keep], interval[keep]
    gap = wi(points) - wj(points)
    first = np.flatnonzero(np.concatenate(([True], np.diff(interval) != 0)))
    return float((np.maximum.reduceat(gap, first) - np.minimum.reduceat(gap, first)).max())


def fairness(requests: pd.DataFrame, *, weights: dict[str, float], window_s: tuple[float, float]) -> dict:
    """How fairly the tenants (the keys of ``weights``, each's share) were served in the window:
    ``normalised_service_s`` (service / weight per tenant), ``jain_index`` over those,
    ``max_service_gap_s`` and ``max_service_gap_pair`` (see the module docstring; the gap is 0.0
    with the pair None when no two tenants were ever backlogged together, NaN with fewer than two
    tenants). Time O(T n log n) for T tenants and n hops."""
    tenants = list(weights)
    for name, w in weights.items():
        if not (math.isfinite(w) and w > 0):
            raise InputError(f"weights.{name}", f"expected a weight > 0, got {w}")
    lo, hi = _window(window_s)
    hops = _hops(requests, _tenant_codes(requests, tenants))
    share = _share_s(hops)
    ran = _served(hops, (lo, hi))
    service = np.bincount(hops["tenant"][ran], weights=share[ran], minlength=len(tenants))
    normalised = service / np.array([weights[t] for t in tenants], dtype=np.float64)
    backlog, cumulative = [], []
    for t, name in enumerate(tenants):
        mine = hops["tenant"] == t
        backlog.append(_merged(hops["enqueue"][mine], hops["until"][mine], (lo, hi)))
        cumulative.append(_Cumulative(hops["start"][mine], hops["finish"][mine], share[mine], weights[name]))
    best, pair = (math.nan if len(tenants) < 2 else 0.0), None
    for i, j in itertools.combinations(range(len(tenants)), 2):
        gap = _pair_gap(_both(backlog[i], backlog[j]), cumulative[i], cumulative[j])
        if gap > best:
            best, pair = gap, [tenants[i], tenants[j]]
    return {"normalised_service_s": {t: float(x) for t, x in zip(tenants, normalised)},
            "jain_index": jain_index(normalised), "max_service_gap_s": best, "max_service_gap_pair": pair}

"""Open-loop arrival processes: when requests arrive, independent of how the system copes.

Every generator returns a sorted float64 array of arrival times in seconds within
[0, duration_s), and draws all randomness from the ``numpy.random.Generator`` it is given,
so a scenario's seed fully determines its workload. ``from_config`` builds one from the
``[arrivals]`` table of a scenario and rejects anything it does not understand with an
``InputError`` that names the offending key, file or row.
"""

from __future__ import annotations

import abc
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from traces.checks import read_utf8, utf8_problem
from traces.errors import InputError
from traces.tables import plain

__all__ = ["ArrivalProcess", "Poisson", "Bursty", "Piecewise", "Replay", "from_config"]

_INT64_MAX = int(np.iinfo(np.int64).max)  # the largest per-second count a counts trace may hold


def _num(value: Any, where: str, *, positive: bool = False) -> float:
    """A finite real number, >= 0 (or > 0): bools and strings are mistakes, not numbers."""
    bound = "> 0" if positive else ">= 0"
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise InputError(where, f"must be a number {bound}, got {value!r}")
    return float(value)


def _nums(value: Any, where: str, *, positive: bool = False, length: int | None = None) -> np.ndarray:
    """A non-empty list of numbers (of a given length), each checked like ``_num``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or len(value) == 0:
        raise InputError(where, f"must be a non-empty list of numbers, got {value!r}")
    if length is not None and len(value) != length:
        raise InputError(where, f"must be a list of {length} numbers, got {len(value)}: {list(value)!r}")
    return np.array([_num(v, f"{where}[{i}]", positive=positive) for i, v in enumerate(value)])


def _uniform(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform points in [lo, hi), clamped so rounding can never land a point on hi."""
    t = lo + rng.random(len(lo)) * (hi - lo)
    return np.minimum(t, np.nextafter(hi, -np.inf))


def _segments(starts: np.ndarray, ends: np.ndarray, rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exact homogeneous Poisson arrivals on each segment: a Poisson count, then uniform positions."""
    counts = rng.poisson(rates * (ends - starts))
    t = _uniform(np.repeat(starts, counts), np.repeat(ends, counts), rng)
    return np.sort(t)


class ArrivalProcess(abc.ABC):
    """A source of arrival times in [0, duration_s); open loop, so it never sees the server."""

    kind: str
    _shown: tuple[str, ...] = ()  # attributes that __repr__ shows

    def __repr__(self) -> str:
        shown = {k: getattr(self, k) for k in self._shown}
        args = ", ".join(f"{k}={v.tolist() if isinstance(v, np.ndarray) else v!r}" for k, v in shown.items())
        return f"{type(self).__name__}({args})"

    @abc.abstractmethod
    def times_s(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        """Sorted float64 arrival times in [0, duration_s), drawn from ``rng`` only."""

    @abc.abstractmethod
    def mean_rate_rps(self, duration_s: float) -> float:
        """Analytic (or, for replay, exact empirical after scaling) expected arrivals per second
        over [0, duration_s)."""

    def segments(self, duration_s: float) -> float:
        """How many constant-rate pieces drawing arrivals over [0, duration_s) builds (memory and
        time grow with it, apart from the arrivals themselves); checked against the run's limits."""
        return 1.0


class Poisson(ArrivalProcess):
    """Homogeneous Poisson arrivals: the memoryless baseline every queueing result assumes."""

    kind = "poisson"
    _shown = ("rate_rps",)

    def __init__(self, rate_rps: float, *, where: str = "arrivals"):
        self.rate_rps = _num(rate_rps, f"{where}.rate_rps", positive=True)

    def times_s(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        return _segments(np.array([0.0]), np.array([float(duration_s)]), np.array([self.rate_rps]), rng)

    def mean_rate_rps(self, duration_s: float) -> float:
        return self.rate_rps


class Bursty(ArrivalProcess):
    """Two-state Markov-modulated Poisson process: calm and burst periods with exponential dwells.

    The first state is drawn from the stationary distribution (pi_i proportional to the mean
    dwell of state i), and because dwells are memoryless the process is stationary from time 0,
    so the mean rate sum(pi_i * rate_i) holds for any duration.
    """

    kind = "bursty"
    _shown = ("rates_rps", "mean_dwell_s")

    def __init__(self, rates_rps: Sequence[float], mean_dwell_s: Sequence[float], *, where: str = "arrivals"):
        self.rates_rps = _nums(rates_rps, f"{where}.rates_rps", length=2)
        if not self.rates_rps.any():
            raise InputError(f"{where}.rates_rps", f"at least one rate must be > 0, got {list(rates_rps)!r}")
        self.mean_dwell_s = _nums(mean_dwell_s, f"{where}.mean_dwell_s", positive=True, length=2)

    def times_s(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        pi = self.mean_dwell_s / self.mean_dwell_s.sum()
        state = int(rng.random() < pi[1])
        # States alternate, so draw dwells in even-sized chunks until they cover the duration.
        chunk = 2 * (int(duration_s / self.mean_dwell_s.mean()) + 8)
        dwells: list[np.ndarray] = []
        total = 0.0
        while total < duration_s:
            states = (state + np.arange(chunk)) % 2
            d = rng.exponential(self.mean_dwell_s[states])
            dwells.append(d)
            total += float(d.sum())
        d = np.concatenate(dwells)
        ends = np.minimum(np.cumsum(d), duration_s)
        starts = np.concatenate(([0.0], ends[:-1]))
        keep = ends > starts
        states = (state + np.arange(len(d))) % 2
        return _segments(starts[keep], ends[keep], self.rates_rps[states[keep]], rng)

    def mean_rate_rps(self, duration_s: float) -> float:
        return float((self.mean_dwell_s * self.rates_rps).sum() / self.mean_dwell_s.sum())

    def segments(self, duration_s: float) -> float:
        return 2.0 * (duration_s / float(self.mean_dwell_s.mean()) + 8)


class Piecewise(ArrivalProcess):
    """Non-homogeneous Poisson with a step rate: a diurnal or ramp pattern, exact per interval.

    rates_rps[k] applies on [k*interval_s, (k+1)*interval_s); after the last interval the
    pattern repeats (repeat=True) or the last rate holds (repeat=False).
    """

    kind = "piecewise"
    _shown = ("rates_rps", "interval_s", "repeat")

    def __init__(self, rates_rps: Sequence[float], interval_s: float, repeat: bool = True, *, where: str = "arrivals"):
        self.rates_rps = _nums(rates_rps, f"{where}.rates_rps")
        if not self.rates_rps.any():
            raise InputError(f"{where}.rates_rps", "at least one rate must be > 0, got all 0")
        self.interval_s = _num(interval_s, f"{where}.interval_s", positive=True)
        if not isinstance(repeat, (bool, np.bool_)):
            raise InputError(f"{where}.repeat", f"must be true or false, got {repeat!r}")
        self.repeat = bool(repeat)

    def _intervals(self, duration_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = np.arange(max(1, math.ceil(duration_s / self.interval_s)))
        idx = k % len(self.rates_rps) if self.repeat else np.minimum(k, len(self.rates_rps) - 1)
        starts = k * self.interval_s
        ends = np.minimum(starts + self.interval_s, duration_s)
        return starts, ends, self.rates_rps[idx]

    def times_s(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        return _segments(*self._intervals(float(duration_s)), rng)

    def segments(self, duration_s: float) -> float:
        return float(max(1, math.ceil(duration_s / self.interval_s)))

    def mean_rate_rps(self, duration_s: float) -> float:
        starts, ends, rates = self._intervals(float(duration_s))
        return float((rates * (ends - starts)).sum() / duration_s)


class Replay(ArrivalProcess):
    """Replay of a real trace file, so experiments see real burstiness rather than a model of it.

    - counts format (one line of space-separated non-negative integers, value i = requests in
      second i): take seconds [start_s, start_s+length_s) (start_s and length_s must be whole
      seconds); each second's count c is scaled: c*rate_scale -> floor + Bernoulli(fractional
      part) (unbiased, seeded), and that many arrivals are placed uniformly at random inside
      that second. Second start_s maps to time 0.
    - timestamps format: values converted to seconds (datetimes parsed with pandas, relative to
      the first timestamp; numeric by unit), must be non-decreasing, non-empty, finite; time 0 =
      first timestamp + start_s; keep those in [start_s, start_s+length_s). rate_scale < 1:
      independent thinning with probability rate_scale; rate_scale > 1: each arrival kept plus
      floor(s)-1 extra copies plus one more with probability frac(s), each extra copy placed
      uniformly at random in the same 1-second bin; rate_scale == 1: the exact timestamps.
    - the window must lie inside the trace: start_s + length_s may not exceed the trace's span
      (counts: number of seconds; timestamps: last - first).
    - times_s(duration_s, rng) returns window arrivals with t < duration_s (if length_s <
      duration_s there are no arrivals after length_s; if length_s is not given it is duration_s).
    - mean_rate_rps(duration_s): exact expected arrivals per second over [0, duration_s) of the
      scaled window; with length_s == duration_s (the default) that is sum of window counts *
      rate_scale / window length.

    The file is read once, at construction, so bad files fail when the scenario is loaded.
    """

    kind = "replay"
    _shown = ("path", "format", "start_s", "length_s", "rate_scale")

    def __init__(self, path: str | pathlib.Path, format: str = "auto", column: str | None = None,
                 unit: str = "auto", start_s: float = 0.0, length_s: float | None = None,
                 rate_scale: float = 1.0, *, where: str = "arrivals"):
        self.path = pathlib.Path(path)
        self.where = where
        pieces = start_s if isinstance(start_s, list) else None
        start_s = 0.0 if pieces is not None else start_s
        self.start_s = _num(start_s, f"{where}.start_s")
        self.length_s = None if length_s is None else _num(length_s, f"{where}.length_s", positive=True)
        self.rate_scale = _num(rate_scale, f"{where}.rate_scale", positive=True)
        for key, val, allowed in (("format", format, ("auto", "counts", "timestamps")),
                                  ("unit", unit, ("auto", "s", "ms", "us", "datetime"))):
            if val not in allowed:
                raise InputError(f"{where}.{key}", f"must be one of {', '.join(allowed)}; got {val!r}")
        if column is not None and not isinstance(column, str):
            raise InputError(f"{where}.column", f"must be a string, got {column!r}")
        if not self.path.is_file():
            raise InputError(str(self.path), "file not found")
        self.format = self._detect() if format == "auto" else format
        if self.format == "counts":
            for key, val in (("start_s", self.start_s), ("length_s", self.length_s)):
                if val is not None and val != int(val):
                    raise InputError(f"{where}.{key}", f"must be whole seconds for a counts trace, got {val}")
            if column is not None or unit != "auto":
                key = "column" if column is not None else "unit"
                raise InputError(f"{where}.{key}", f"applies only to a timestamps trace; {self.path} is counts")
            self.counts = self._read_counts()
            self.span_s = float(len(self.counts))
            if pieces is not None:
                self._join(pieces)
        elif pieces is not None:
            raise InputError(f"{where}.start_s", f"a list of starts applies only to a counts trace; {self.path} is timestamps")
        else:
            self.stamps = self._read_stamps(column, unit)
            self.span_s = float(self.stamps[-1])

    def _join(self, starts: list) -> None:
        """``start_s = [a, b, ...]``: the windows [a, a + length_s), [b, b + length_s), ... played one
        after another (IPA's fluctuating workload joins two; a window may repeat)."""
        where = f"{self.where}.start_s"
        if self.length_s is None:
            raise InputError(f"{self.where}.length_s", "is required with a list of starts (each window's length)")
        if not starts:
            raise InputError(where, "needs at least one start")
        length = int(self.length_s)  # whole: a counts trace's length_s is checked on construction
        parts = []
        for i, start in enumerate(starts):
            start = _num(start, f"{where}[{i}]")
            if start != int(start) or start + length > self.span_s:
                raise InputError(f"{where}[{i}]", f"window [{start:g}, {start + length:g}) s must start on a whole "
                                 f"second and lie inside the trace span of {self.span_s:g} s in {self.path}")
            parts.append(self.counts[int(start):int(start) + length])
        self.counts = np.concatenate(parts)
        self.span_s = float(len(self.counts))
        self.length_s = self.span_s

    def _detect(self) -> str:
        suffix = self.path.suffix.lower()
        if suffix in (".csv", ".jsonl", ".parquet"):
            return "timestamps"
        if suffix == ".txt":
            with open(self.path, "rb") as f:
                head = f.read(4096).lstrip()
            if head[:1].isdigit():
                return "counts"
        raise InputError(f"{self.where}.format", f"cannot tell the format of {self.path} (expected a .txt line of "
                         "integer counts, or .csv/.jsonl/.parquet timestamps); set format = 'counts' or 'timestamps'")

    def _read_counts(self) -> np.ndarray:
        tokens = self.path.read_bytes().split()
        if not tokens:
            raise InputError(str(self.path), "expected space-separated per-second counts, found none")
        try:
            counts = np.array(tokens, dtype=np.int64)
            bad = next(iter(np.flatnonzero(counts < 0)), None)
        except (ValueError, OverflowError):  # rare, so a slow scan for the culprit is fine
            try:
                self.path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(str(self.path), utf8_problem(exc, whole_file=True)) from None
            bad = next(i for i, t in enumerate(tokens) if not (t.isdigit() and int(t) <= _INT64_MAX))
        if bad is not None:
            raise InputError(f"{self.path} value {bad + 1}",
                             f"expected a non-negative integer count, got {tokens[bad].decode(errors='replace')!r}")
        return counts

    def _read_stamps(self, column: str | None, unit: str) -> np.ndarray:
        """Timestamps in seconds relative to the first one; validated row by row."""
        suffix = self.path.suffix.lower()
        try:
            if suffix in (".jsonl", ".ndjson"):
                df = pd.DataFrame.from_records(self._jsonl_rows())
                column = column or "timestamp"
            elif suffix == ".parquet":
                df = pd.read_parquet(self.path)
            else:
                df = pd.read_csv(self.path)
        except InputError:
            raise
        except UnicodeDecodeError as e:
            raise InputError(str(self.path), utf8_problem(e)) from None
        except (ValueError, OSError, ImportError) as e:
            raise InputError(str(self.path), f"cannot read as a {suffix or 'csv'} table: {e}".splitlines()[0]) from None
        if len(df) == 0 or len(df.columns) == 0:
            raise InputError(str(self.path), "expected at least one timestamp row, found none")
        column = column if column is not None else str(df.columns[0])
        if column not in df.columns:
            raise InputError(f"{self.path} column {column!r}",
                             f"not found; available columns: {', '.join(map(str, df.columns))}")
        col = df[column]
        nums = col if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) \
            else pd.to_numeric(col, errors="coerce")
        is_dt = unit == "datetime" or (unit == "auto" and nums.isna().all() and col.notna().any())
        if is_dt:
            stamps = pd.to_datetime(col, errors="coerce", format="mixed")
            secs = (stamps - stamps.iloc[0]).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            values = nums.to_numpy(dtype=np.float64, na_value=np.nan)
            secs = (values - values[0]) * {"auto": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}[unit]
        bad = np.flatnonzero(~np.isfinite(secs))
        if len(bad):
            got = col.iloc[bad[0]]
            raise InputError(f"{self.path} row {bad[0] + 1}", f"expected {'a datetime' if is_dt else 'a finite number'} "
                             f"in {column!r}, got {'nothing' if pd.isna(got) else repr(str(got))}")
        drops = np.flatnonzero(np.diff(secs) < 0)
        if len(drops):
            r = drops[0] + 2
            raise InputError(f"{self.path} row {r}", f"timestamps must be non-decreasing; {column!r} goes back from "
                             f"{plain(col.iloc[r - 2])} (row {r - 1}) to {plain(col.iloc[r - 1])}")
        return secs

    def _jsonl_rows(self) -> list[dict]:
        rows = []
        for i, line in enumerate(read_utf8(self.path).splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    rows.append(None)
                if not isinstance(rows[-1], dict):
                    raise InputError(f"{self.path} line {i}", f"expected a JSON object, got {line[:60]!r}")
        return rows

    def _window(self, duration_s: float) -> float:
        """The window length, after checking the window lies inside the trace."""
        length = float(duration_s) if self.length_s is None else self.length_s
        if self.start_s + length > self.span_s:
            key = "length_s" if self.length_s is not None else "start_s"
            raise InputError(f"{self.where}.{key}", f"window [{self.start_s:g}, {self.start_s + length:g}) s "
                             f"(length_s defaults to the simulation duration) exceeds the trace span of "
                             f"{self.span_s:g} s in {self.path}")
        return length

    def _stamps_in(self, length: float) -> np.ndarray:
        """Window timestamps, shifted so the window starts at time 0."""
        return self.stamps[(self.stamps >= self.start_s) & (self.stamps < self.start_s + length)] - self.start_s

    def times_s(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        length = self._window(duration_s)
        end = min(length, float(duration_s))
        s = self.rate_scale
        if self.format == "counts":
            start = int(self.start_s)
            c = self.counts[start:start + math.ceil(end)]
            scaled = c * s
            n = np.floor(scaled).astype(np.int64) + (rng.random(len(c)) < scaled - np.floor(scaled))
            sec = np.repeat(np.arange(len(c), dtype=np.float64), n)
            t = _uniform(sec, sec + 1.0, rng)
        else:
            t = self._stamps_in(length)
            if s < 1:
                t = t[rng.random(len(t)) < s]
            elif s > 1:
                extra = int(s) - 1 + (rng.random(len(t)) < s - int(s))
                lo = np.floor(np.repeat(t, extra))
                t = np.concatenate((t, _uniform(lo, np.minimum(lo + 1.0, length), rng)))
        t = np.sort(t)
        return t[t < duration_s]

    def mean_rate_rps(self, duration_s: float) -> float:
        length = self._window(duration_s)
        end = min(length, float(duration_s))
        if self.format == "counts":
            start = int(self.start_s)
            c = self.counts[start:start + math.ceil(end)].astype(np.float64)
            # the last second may be cut by the duration; its arrivals are uniform inside it
            weight = np.minimum(end - np.arange(len(c)), 1.0)
            return float((c * weight).sum() * self.rate_scale / duration_s)
        t = self._stamps_in(length)
        expected = float(min(self.rate_scale, 1.0) * (t < end).sum())
        if self.rate_scale > 1:  # extra copies are uniform in [floor t, min(floor t + 1, length))
            lo = np.floor(t)
            width = np.minimum(lo + 1.0, length) - lo
            expected += (self.rate_scale - 1) * float((np.clip(end - lo, 0.0, width) / width).sum())
        return expected / duration_s


_KINDS: dict[str, type[ArrivalProcess]] = {
    "poisson": Poisson, "bursty": Bursty, "piecewise": Piecewise, "replay": Replay}
_KEYS: dict[str, tuple[str, ...]] = {
    "poisson": ("rate_rps",),
    "bursty": ("rates_rps", "mean_dwell_s"),
    "piecewise": ("rates_rps", "interval_s", "repeat"),
    "replay": ("path", "format", "column", "unit", "start_s", "length_s", "rate_scale"),
}
_OPTIONAL = {"repeat", "format", "column", "unit", "start_s", "length_s", "rate_scale"}


def from_config(cfg: dict, base_dir: pathlib.Path, where: str = "arrivals") -> ArrivalProcess:
    """Build an arrival process from a scenario's ``[arrivals]`` table, strictly validated.

    Strict because a misspelt key silently falling back to a default would run the wrong
    experiment; relative replay paths resolve against ``base_dir`` (the scenario's folder).
    """
    if not isinstance(cfg, dict):
        raise InputError(where, f"must be a table, got {type(cfg).__name__}")
    kind = cfg.get("kind")
    if kind is None:
        raise InputError(f"{where}.kind", f"required; one of {', '.join(sorted(_KEYS))}")
    if not isinstance(kind, str) or kind not in _KEYS:
        raise InputError(f"{where}.kind", f"must be one of {', '.join(sorted(_KEYS))}; got {kind!r}")
    allowed = ("kind",) + _KEYS[kind]
    for key in cfg:
        if key not in allowed:
            raise InputError(f"{where}.{key}", f"unknown key for kind {kind!r}; allowed keys: {', '.join(allowed)}")
    for key in _KEYS[kind]:
        if key not in cfg and key not in _OPTIONAL:
            raise InputError(f"{where}.{key}", f"required for kind {kind!r}, missing")
    args = {k: v for k, v in cfg.items() if k != "kind"}
    if kind == "replay":
        if not isinstance(args["path"], str) or not args["path"]:
            raise InputError(f"{where}.path", f"must be a non-empty string, got {args['path']!r}")
        args["path"] = pathlib.Path(base_dir) / pathlib.Path(args["path"]).expanduser()  # absolute paths win
    return _KINDS[kind](where=where, **args)

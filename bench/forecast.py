"""The load forecasters of ``policies/forecasters.py`` scored on the Twitter trace as IPA scores its LSTM.

IPA (Ghafouri et al., "Inference Pipeline Adaptation") trains its load predictor on the Twitter
trace (../shared/data/README.md, section 1): per-second counts integer-divided by 8, the seconds
that are then 0 dropped (gaps in the archive, and the few seconds of under 8 records), 10 s windows
reduced to their peak, 12 peaks in, the peak of the next 20 s (2 windows) out, days 1-14 for
training and the rest for testing. This script does the same, in this order:

1. counts // damping (``--damping``, 8);
2. the split (``--split``): ``raw`` (the default) cuts at second ``--train-days`` * 86400 of the
   trace as recorded, so training is exactly days 1-14 of the calendar; ``kept`` cuts at the
   (train-days * 86400)-th second kept after step 3, as IPA's training script does, so its
   training runs about 0.3 day past day 14;
3. the seconds that are 0 dropped (before the split for ``kept``, within each part for ``raw``);
4. window peaks of each part (whole ``--window-s`` windows), and every window position of the test
   part, one window apart, with 12 whole windows before it and 2 after it (no partial target).

Each forecaster is fitted on the training part (a no-op for the untrained ones; the AR ones on all
its rows, and once more on the last 4096, the cap an online refit uses) and asked for every test
position through ``predict``, as a policy would. Per forecaster it prints the mean absolute
percentage error, the share of windows predicted below the target (under-provisioned), the mean
over-provisioning (pred - target) / target over the windows predicted at or above it, and the
number of test windows; beside them the figures ../shared/REFERENCE.md quotes.

    python bench/forecast.py [--trace PATH] [--damping 8] [--split raw|kept] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from policies.forecasters import (  # noqa: E402
    HISTORY_WINDOWS, HORIZON_WINDOWS, Forecaster, lagged_windows, make_forecaster, window_peaks)
from traces.cli import run_command  # noqa: E402
from traces.errors import InputError  # noqa: E402
from traces.progress import Progress  # noqa: E402

TRACE = REPO.parent / "shared" / "data" / "twitter_trace_ipa" / "workload.txt"
DAY_S = 86400

# label -> (forecaster, parameters, the REFERENCE.md figures: MAPE %, under-predicted %)
FORECASTERS: dict[str, tuple[str, dict, tuple[float | None, float | None]]] = {
    "reactive": ("reactive", {}, (9.5, 44.0)),
    "window-max 120 s": ("window-max", {"windows": 12}, (16.7, 7.5)),
    "ewma 0.3": ("ewma", {"alpha": 0.3}, (8.7, 65.0)),
    "ar(12)": ("ar", {"max_rows": None}, (9.2, None)),
    "ar(12), last 4096 rows": ("ar", {}, (None, None)),
    "quantile-ar 0.9": ("quantile-ar", {"max_rows": None}, (None, None)),
}
REFERENCE_TEST_WINDOWS = 65_137


@dataclass(frozen=True)
class Score:
    """How a forecaster's predictions compare with the targets of the test windows."""

    mape_pct: float
    under_pct: float  # windows predicted below the target
    over_provision_pct: float  # mean (pred - target) / target over the windows predicted >= target
    windows: int


def score(predicted_rps: np.ndarray, target_rps: np.ndarray) -> Score:
    relative = (predicted_rps - target_rps) / target_rps
    covered = relative >= 0
    over = float(relative[covered].mean()) * 100 if covered.any() else float("nan")
    return Score(float(np.abs(relative).mean()) * 100, float((~covered).mean()) * 100, over, len(target_rps))


def load_counts(path: Path) -> np.ndarray:
    """The per-second counts of the trace file (one line of space-separated integers)."""
    if not path.is_file():
        raise InputError(str(path), "no such file: the Twitter trace of ../shared/data/README.md section 1 "
                                    "(give another with --trace)")
    try:
        return np.array(path.read_text().split(), dtype=np.int64)
    except ValueError:
        raise InputError(str(path), "expected integers separated by spaces") from None


def train_test(counts: np.ndarray, damping: int, train_s: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Damped per-second counts without their zero seconds, split into training and test parts."""
    damped = counts // damping
    if split == "kept":
        damped = damped[damped > 0]
    train, test = damped[:train_s], damped[train_s:]
    return train[train > 0], test[test > 0]


def predictions(forecaster: Forecaster, inputs: np.ndarray, progress: Progress, done: int) -> np.ndarray:
    """``forecaster.predict`` on every row, one call each, as a policy calls it."""
    out = np.empty(len(inputs))
    for i, row in enumerate(inputs):
        out[i] = forecaster.predict(row)
        if i % 8192 == 0:
            progress.update(done + i)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--trace", type=Path, default=TRACE, help="per-second counts (default: %(default)s)")
    parser.add_argument("--damping", type=int, default=8, help="integer divisor of every count (IPA: 8)")
    parser.add_argument("--train-days", type=float, default=14.0, help="days of training (IPA: 14)")
    parser.add_argument("--split", choices=("raw", "kept"), default="raw",
                        help="cut training at a second of the trace as recorded (raw) or among the kept "
                             "seconds after dropping zeros (kept: IPA's training script)")
    parser.add_argument("--window-s", type=int, default=10, help="seconds per window peak (IPA: 10)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.damping < 1 or args.window_s < 1 or args.train_days <= 0:
        raise InputError("--damping, --window-s, --train-days", "must be positive")
    started = time.perf_counter()
    counts = load_counts(args.trace)
    train, test = train_test(counts, args.damping, round(args.train_days * DAY_S), args.split)
    train_peaks, test_peaks = window_peaks(train, args.window_s), window_peaks(test, args.window_s)
    inputs, targets = lagged_windows(test_peaks, HISTORY_WINDOWS, HORIZON_WINDOWS)
    if len(targets) == 0:
        raise InputError(str(args.trace), "leaves no test window after damping and the split")
    print(f"{args.trace.name}: {len(counts):,} s; damping {args.damping}; split {args.split} at "
          f"{args.train_days:g} days; kept {len(train):,} training and {len(test):,} test seconds; "
          f"{len(train_peaks):,} and {len(test_peaks):,} windows of {args.window_s} s; "
          f"{HISTORY_WINDOWS} in, peak of the next {HORIZON_WINDOWS} out")
    progress = Progress(len(FORECASTERS) * len(targets), "forecast", "windows")
    results: dict[str, dict] = {}
    print(f"{'forecaster':24} {'MAPE %':>7} {'under %':>8} {'over %':>7} {'windows':>8}   REFERENCE.md MAPE / under")
    for k, (label, (name, params, quoted)) in enumerate(FORECASTERS.items()):
        forecaster = make_forecaster(name, **params).fit(train_peaks, HORIZON_WINDOWS)
        result = score(predictions(forecaster, inputs, progress, k * len(targets)), targets)
        results[label] = {"forecaster": repr(forecaster), **asdict(result)}
        reference = " / ".join("-" if value is None else f"{value:g}" for value in quoted)
        print(f"{label:24} {result.mape_pct:7.2f} {result.under_pct:8.1f} {result.over_provision_pct:7.1f} "
              f"{result.windows:8,}   {reference}")
    progress.close()
    print(f"REFERENCE.md: {REFERENCE_TEST_WINDOWS:,} test windows; {time.perf_counter() - started:.1f} s")
    if args.json:
        setup = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
                 if key != "json"}
        args.json.write_text(json.dumps({"setup": setup, "forecasters": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))

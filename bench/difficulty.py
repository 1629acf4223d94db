"""How much a query-difficulty estimator could give a router: figures on a bundle's held-out samples.

The estimator (``policies.difficulty``) is fitted on a seeded half of the bundle's evaluated
samples and judged on the other half. It prints, for the held-out half: the AUC of the estimate
(0.5: the features say nothing), the fast and the slow variant's accuracy, and the accuracy when
the X% hardest samples by the estimate go straight to the slow variant and the rest to the fast
one, beside the same share sent at random (what a router gains over a coin), the share the
cascade would escalate by the fast variant's own confidence (which needs the fast stage to run
first), and the best any choice of X% could do (oracle). ``--repeats R`` averages R splits
(seeds S..S+R-1).

    python bench/difficulty.py traces/data/sst2-cpu --fast bert-2-kd/fp32/cpu --slow bert-6/int8/cpu
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from policies.difficulty import auc, fit_difficulty, split_samples  # noqa: E402
from traces.bundle import TraceBundle  # noqa: E402
from traces.cli import run_command  # noqa: E402
from traces.errors import InputError  # noqa: E402
from traces.profiles import PredictionTable  # noqa: E402

SHARES_PCT = (5, 10, 20, 30, 50)
ROUTES = ("estimate", "random", "confidence", "oracle")


@dataclass(frozen=True)
class SplitFigures:
    """One split's held-out figures; ``routed[route][i]``: accuracy with SHARES_PCT[i] sent to slow."""

    auc_held_out: float
    auc_in_sample: float
    auc_confidence: float
    fast_accuracy: float
    slow_accuracy: float
    routed: dict[str, np.ndarray]
    weights: np.ndarray


def routed_accuracy(hardness: np.ndarray, fast_ok: np.ndarray, slow_ok: np.ndarray, share: float) -> float:
    """Accuracy when the ``share`` of samples with the highest ``hardness`` take the slow variant."""
    k = int(round(share * hardness.size))
    to_slow = np.zeros(hardness.size, dtype=bool)
    to_slow[np.argsort(-hardness, kind="stable")[:k]] = True
    return float(np.where(to_slow, slow_ok, fast_ok).mean())


def one_split(table: PredictionTable, fast: str, slow: str, seed: int) -> SplitFigures:
    train = split_samples(table.sample_ids.size, seed)
    test = ~train
    model = fit_difficulty(table, fast, train)
    p_right = model.probability_fast_correct(table.features)
    fast_ok, slow_ok = table.correct[fast], table.correct[slow]
    f, s = fast_ok[test], slow_ok[test]
    gain = f.size and (~f & s).sum() / f.size  # samples that only the slow variant gets right
    routed = {
        "estimate": [routed_accuracy(-p_right[test], f, s, x / 100) for x in SHARES_PCT],
        "random": [f.mean() + x / 100 * (s.mean() - f.mean()) for x in SHARES_PCT],  # its expectation
        "confidence": [routed_accuracy(-table.confidence[fast][test], f, s, x / 100) for x in SHARES_PCT],
        "oracle": [f.mean() + min(round(x / 100 * f.size) / f.size, gain) for x in SHARES_PCT],
    }
    return SplitFigures(auc(p_right[test], f), auc(p_right[train], fast_ok[train]),
                        auc(table.confidence[fast][test], f), float(f.mean()), float(s.mean()),
                        {k: np.asarray(v, dtype=np.float64) for k, v in routed.items()}, model.weights)


def report(bundle_dir: Path, fast: str, slow: str, seed: int, repeats: int) -> None:
    bundle = TraceBundle.load(bundle_dir)
    for variant in (fast, slow):
        if variant not in bundle.predicted_variants:
            raise InputError(variant, f"has no predictions in {bundle_dir}; predicted: {bundle.predicted_variants}")
    table = PredictionTable.from_bundle(bundle, [fast, slow])
    if table.features is None:
        raise InputError(str(bundle_dir), "has no features table (measure features PROFILE --bundle DIR adds one)")
    splits = [one_split(table, fast, slow, seed + r) for r in range(repeats)]
    mean = lambda values: float(np.mean(values))  # noqa: E731
    spread = lambda values: float(np.std(values, ddof=1)) if len(values) > 1 else 0.0  # noqa: E731
    n_test = int((~split_samples(table.sample_ids.size, seed)).sum())
    print(f"bundle {bundle_dir}: {table.sample_ids.size} samples, held-out half {n_test}; "
          f"fast {fast}, slow {slow}; seeds {seed}..{seed + repeats - 1}")
    print(f"features: {', '.join(table.feature_names)}")
    weights = np.mean([s.weights for s in splits], axis=0)
    print("weights (standardised features, mean of splits): "
          + ", ".join(f"{n} {w:+.3f}" for n, w in zip(table.feature_names, weights)))
    for label, values in (("estimator AUC, held out", [s.auc_held_out for s in splits]),
                          ("estimator AUC, in sample", [s.auc_in_sample for s in splits]),
                          ("fast confidence AUC (cascade)", [s.auc_confidence for s in splits])):
        print(f"{label:32s} {mean(values):.3f} (sd {spread(values):.3f})")
    print(f"{'fast accuracy, held out':32s} {mean([s.fast_accuracy for s in splits]):.4f}")
    print(f"{'slow accuracy, held out':32s} {mean([s.slow_accuracy for s in splits]):.4f}")
    print(f"{'to slow':>8s} " + " ".join(f"{route:>10s}" for route in ROUTES))
    for i, share in enumerate(SHARES_PCT):
        print(f"{share:7d}% " + " ".join(f"{mean([s.routed[route][i] for s in splits]):10.4f}" for route in ROUTES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/difficulty.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("bundle", type=Path, help="a trace bundle with predictions and a features table")
    parser.add_argument("--fast", required=True, help="the fast variant (the cascade's first stage)")
    parser.add_argument("--slow", required=True, help="the accurate variant hard requests go to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the half/half split (default 0)")
    parser.add_argument("--repeats", type=int, default=1, help="splits to average, seeds seed.. (default 1)")
    args = parser.parse_args(argv)

    def run() -> int:
        if not 1 <= args.repeats <= 1000:
            raise InputError("--repeats", f"must be from 1 to 1000, got {args.repeats}")
        report(args.bundle, args.fast, args.slow, args.seed, args.repeats)
        return 0

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())

"""Pareto fronts, hypervolume and dominance between sets of points with several objectives.

A serving policy is rarely best at everything: one reaches a higher on-time accuracy, another
costs less. Put each configuration's averages in a point, one coordinate per objective (some to
maximise, like ``ontime_accuracy``, some to minimise, like ``cost.total``). Point ``p`` *dominates*
``q`` when ``p`` is no worse than ``q`` in every objective and strictly better in at least one. The
points no other point dominates form the *Pareto front*: the configurations worth considering; any
other is beaten outright by one on the front.

Two numbers compare whole sets, e.g. the grid points of two policies:

- the *hypervolume* of a set is the volume of objective space its points dominate, bounded by a
  reference point that every counted point must strictly beat. Bigger is better; it rewards both
  reaching far and covering the trade-off evenly. It depends on the reference, so a reported
  hypervolume always states it (``nadir_reference`` gives the usual default);
- the *dominance ratio* of A over B is the share of B's points that some point of A dominates:
  1.0 means A beats everything B offers, 0.0 that A beats none of it. It is not symmetric; both
  directions together say who wins.

The computations are moocore's (exact hypervolume in any dimension, fast non-dominated filtering).
moocore minimises every objective by default, so the functions here first flip the sign of the
maximised objectives (``minimised``) and then work in one, all-minimised space.

Points holding NaN are refused (``ValueError``), not dropped: a configuration missing a metric
would silently vanish from a front. Callers turn the error into an ``InputError`` naming the row.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _check_maximize(maximize: Sequence[bool]) -> tuple[bool, ...]:
    flags = tuple(maximize)
    if not flags:
        raise ValueError("maximize must name at least one objective (one boolean per column)")
    if not all(isinstance(f, (bool, np.bool_)) for f in flags):
        raise ValueError(f"maximize must hold booleans, one per objective, got {flags!r}")
    return flags


def minimised(points, maximize: Sequence[bool], what: str = "points") -> np.ndarray:
    """``points`` as a float array (n, d) with the maximised objectives' signs flipped, so that
    smaller is better in every column. Raises ``ValueError`` for a wrong shape or a NaN."""
    flags = _check_maximize(maximize)
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (one row per point), got {array.ndim} dimension(s)")
    if array.shape[1] != len(flags):
        raise ValueError(f"{what} has {array.shape[1]} objective column(s) but maximize names {len(flags)}")
    bad = np.isnan(array).any(axis=1)
    if bad.any():
        raise ValueError(f"{what} row {int(np.flatnonzero(bad)[0])} holds NaN; "
                         "a point needs a value for every objective")
    return np.where(np.array(flags), -array, array)


def pareto_front(points, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask, shape (n,): True for the rows of ``points`` (n, d) that no other row dominates.

    Exact duplicates of a non-dominated point are all kept (all True): equal points do not
    dominate each other. Infinite values are allowed (a worst or best possible value); NaN is
    refused with ``ValueError``.
    """
    import moocore

    flipped = minimised(points, maximize)
    if flipped.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(moocore.is_nondominated(flipped, keep_weakly=True), dtype=bool)


def nadir_reference(points, maximize: Sequence[bool]) -> np.ndarray:
    """The default hypervolume reference: each objective's worst value over all ``points`` (the
    smallest of a maximised one, the largest of a minimised one), in the points' own units and signs.

    Pass the points of every set being compared, so that all their hypervolumes share it. A point
    at the worst value of some objective lies on the reference's boundary and adds nothing, so the
    extremes of a front count only through the other points; give a slightly worse reference to
    credit them.
    """
    flipped = minimised(points, maximize)
    if flipped.shape[0] == 0:
        raise ValueError("the nadir of no points is undefined; give a reference point")
    worst = flipped.max(axis=0)
    if not np.isfinite(worst).all():
        raise ValueError("an objective's worst value is infinite; give a finite reference point")
    flags = np.array(_check_maximize(maximize))
    return np.where(flags, -worst, worst)


def hypervolume(points, reference, maximize: Sequence[bool]) -> float:
    """The exact volume of objective space that ``points`` (n, d) dominate, bounded by ``reference``
    (d values, finite, in the points' units): the union of the boxes between each point and the
    reference. Only points strictly better than the reference in every objective count; the others
    add nothing. No points (or none that count): 0.0.
    """
    import moocore

    flipped = minimised(points, maximize)
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != (flipped.shape[1],):
        raise ValueError(f"the reference point needs {flipped.shape[1]} value(s), one per objective, "
                         f"got shape {ref.shape}")
    if not np.isfinite(ref).all():
        raise ValueError(f"the reference point must be finite, got {ref.tolist()}")
    ref = np.where(np.array(_check_maximize(maximize)), -ref, ref)
    counted = flipped[(flipped < ref).all(axis=1)]
    if counted.shape[0] == 0:
        return 0.0
    return float(moocore.hypervolume(counted, ref=ref))


def dominance_ratio(a, b, maximize: Sequence[bool]) -> float:
    """The share of the points of ``b`` that at least one point of ``a`` dominates (no worse in
    every objective, strictly better in one): a number of ``b``'s rows over ``len(b)``, in [0, 1].

    A point of ``b`` equal to one of ``a`` is not dominated by it. An empty ``a`` dominates
    nothing (0.0); an empty ``b`` has no share to take (nan). Shapes and NaN are checked as in
    ``pareto_front``.
    """
    import moocore

    left = minimised(a, maximize, "a")
    right = minimised(b, maximize, "b")
    if right.shape[0] == 0:
        return math.nan
    if left.shape[0] == 0:
        return 0.0
    # b's point j is dominated by some point of a exactly when it is off the front of a plus itself
    dominated = sum(not moocore.is_nondominated(np.vstack([left, row]), keep_weakly=True)[-1] for row in right)
    return dominated / right.shape[0]

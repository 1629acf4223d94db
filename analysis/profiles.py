"""What each model variant of a trace bundle costs and what it buys: tidy tables and figures.

A bundle (``traces.bundle``) holds two measurements of every variant: per-batch latencies at each
batch size, and a prediction with its confidence for every evaluated sample. Before simulating, a
reader wants them side by side:

- **latency** (``latency_table``): one row per variant and batch size with the median, p95 and p99
  of the measured batch latencies and ``throughput_rps``, the requests per second that back-to-back
  batches of that size sustain (batch size / mean latency). A bigger batch takes longer but serves
  more per second, until the processor is saturated and throughput flattens;
- **accuracy and confidence** (``accuracy_table``, ``threshold_table``): each variant's accuracy
  with a 95% Wilson interval (an evaluation set is finite: the bundled ones hold 540 and 872
  samples), how confident it is when right and when wrong, and, for every confidence threshold
  tau, the share of samples it is at least that confident about (*coverage*: what the first hop
  of a cascade at tau answers itself) and the accuracy on those (*selective accuracy*). A useful
  first hop is much more accurate on what it keeps than overall;
- **the price of a compression** (``cost_table``): each precision, pruning method and backend
  against the FP32, unpruned, eager PyTorch variant of the same model (the *reference*), as the
  ratio of median latencies at batch 1 and 8 (below 1: faster) and the difference in accuracy on
  the samples both were evaluated on (below 0: less accurate), with its paired interval and
  McNemar's test: two variants that disagree on three samples of 540 are not told apart by them.
  Quantisation that halves latency for a tenth of a point of accuracy is worth it; pruning that
  saves nothing on this hardware is not.

Each has a figure (``latency_figure``, ``confidence_figure``, ``cost_figure``) in the style of
``analysis.figures``: a colour per model, a dash per precision, a marker per pruning method, a
line width per backend.

Every table carries the variant's parts as columns (``model``, ``precision``, ``pruning``,
``device``, ``backend``; a variant id is ``model[-pruning]/precision/device[/backend]``, ``eager``
when the backend is left out), so it can be filtered or pivoted by any of them. Latencies are the
back-to-back runs (``TraceBundle.latency_samples``), the ones the simulator and the policies plan
with; percentiles are numpy's (linear interpolation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from traces.bundle import TraceBundle
from traces.errors import InputError

from .figures import empirical_cdf, log_axis_if_wide, new_figures, series_colors
from .stats import paired_difference

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PERCENTILES = (50, 95, 99)
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
COST_BATCH_SIZES = (1, 8)
PARTS = ("variant", "model", "precision", "pruning", "device", "backend")
REFERENCE_PRECISION = "fp32"
UNPRUNED = "none"
EAGER = "eager"   # the backend of an id without a fourth part
_LINESTYLES = {"fp32": "-", "int8": "--", "bf16": ":", "fp16": "-."}
_MARKERS = {"none": "o", "channel": "s", "l1": "^"}
_LINEWIDTHS = {EAGER: 1.5, "torchscript": 0.8, "onnxruntime": 2.8}
_TOP = 0.9999  # the confidence axes end here: a logit axis cannot reach 1


def variant_table(bundle: TraceBundle) -> pd.DataFrame:
    """One row per variant of the service table: ``PARTS``, sorted by variant. ``pruning`` is what
    the variant id adds to its model (``resnet18-l1`` of model ``resnet18``: ``l1``), else ``none``;
    ``backend`` is the id's fourth part (``resnet18/int8/cpu/onnxruntime``), else ``eager``."""
    rows = bundle.service.drop_duplicates("variant")[["variant", "model", "precision", "device"]]
    ids = rows["variant"].str.split("/")
    pruning = [b[len(m) + 1:] if b != m else UNPRUNED for b, m in zip(ids.str[0], rows["model"])]
    backend = [parts[3] if len(parts) > 3 else EAGER for parts in ids]
    table = rows.assign(pruning=pruning, backend=backend)[list(PARTS)]
    return table.sort_values("variant").reset_index(drop=True)


def latency_table(bundle: TraceBundle, percentiles: Sequence[float] = PERCENTILES) -> pd.DataFrame:
    """One row per (variant, batch size): ``PARTS``, ``batch_size``, ``runs``, ``mean_ms``, a
    ``p<q>_ms`` column per percentile and ``throughput_rps`` = batch size x 1000 / ``mean_ms``."""
    for q in percentiles:
        if not 0 <= q <= 100:
            raise InputError(f"percentile {q}", "expected a number in [0, 100]")
    rows = []
    for part in variant_table(bundle).itertuples(index=False):
        for batch_size, latency_ms in bundle.latency_samples(part.variant).items():
            row = {**part._asdict(), "batch_size": batch_size, "runs": latency_ms.size,
                   "mean_ms": float(latency_ms.mean())}
            row.update({f"p{q:g}_ms": float(np.percentile(latency_ms, q)) for q in percentiles})
            row["throughput_rps"] = batch_size * 1000.0 / row["mean_ms"]
            rows.append(row)
    return pd.DataFrame(rows)


def _predictions(bundle: TraceBundle) -> pd.DataFrame:
    if bundle.predictions.empty:
        raise InputError(str(bundle.path or bundle.name), "has no predictions table; accuracy and confidence "
                         "need one (measure accuracy writes it)")
    parts = variant_table(bundle)
    extra = sorted(set(bundle.predictions["variant"]) - set(parts["variant"]))
    if extra:
        raise InputError(str(bundle.path or bundle.name), f"predictions name variant {extra[0]!r}, which the "
                         "service table lacks")
    return bundle.predictions.merge(parts, on="variant", how="inner")


def accuracy_table(bundle: TraceBundle, level: float = 0.95) -> pd.DataFrame:
    """One row per predicted variant: ``PARTS``, ``samples``, ``accuracy`` with its Wilson interval
    (``accuracy_low``, ``accuracy_high`` at ``level``), ``confidence_median`` and the mean confidence
    of the right and of the wrong predictions (``confidence_right``, ``confidence_wrong``: NaN when
    there are none). A variant that is as confident when wrong as when right is a poor cascade hop."""
    from statsmodels.stats.proportion import proportion_confint

    rows = []
    for keys, group in _predictions(bundle).groupby(list(PARTS), sort=True):
        correct = group["correct"].to_numpy(dtype=bool)
        confidence = group["confidence"].to_numpy(dtype=np.float64)
        low, high = proportion_confint(int(correct.sum()), correct.size, alpha=1 - level, method="wilson")
        rows.append({**dict(zip(PARTS, keys)), "samples": correct.size, "accuracy": float(correct.mean()),
                     "accuracy_low": float(low), "accuracy_high": float(high),
                     "confidence_median": float(np.median(confidence)),
                     "confidence_right": float(confidence[correct].mean()) if correct.any() else np.nan,
                     "confidence_wrong": float(confidence[~correct].mean()) if (~correct).any() else np.nan})
    return pd.DataFrame(rows)


def threshold_table(bundle: TraceBundle, thresholds: Sequence[float] = THRESHOLDS) -> pd.DataFrame:
    """One row per (predicted variant, threshold tau): ``PARTS``, ``threshold``, ``answered`` (samples
    with confidence >= tau, as a cascade hop keeps them), ``coverage`` (their share) and
    ``selective_accuracy`` (the accuracy on them; NaN when none is answered)."""
    taus = np.asarray(thresholds, dtype=np.float64)
    if taus.size == 0 or not np.all((taus >= 0) & (taus <= 1)):
        raise InputError(f"thresholds {list(thresholds)}", "expected one or more numbers in [0, 1]")
    rows = []
    for keys, group in _predictions(bundle).groupby(list(PARTS), sort=True):
        correct = group["correct"].to_numpy(dtype=bool)
        confidence = group["confidence"].to_numpy(dtype=np.float64)
        for tau in taus:
            kept = confidence >= tau
            rows.append({**dict(zip(PARTS, keys)), "threshold": float(tau), "answered": int(kept.sum()),
                         "coverage": float(kept.mean()),
                         "selective_accuracy": float(correct[kept].mean()) if kept.any() else np.nan})
    return pd.DataFrame(rows)


def reference_of(parts: pd.DataFrame) -> pd.Series:
    """Each variant's reference: the FP32, unpruned, eager variant of its model on its device (NaN when
    the bundle has none), indexed like ``parts`` (``variant_table``'s rows). One reference for every
    backend, so that a TorchScript or ONNX Runtime variant is priced against eager PyTorch FP32."""
    plain = parts[(parts["precision"] == REFERENCE_PRECISION) & (parts["pruning"] == UNPRUNED)
                  & (parts["backend"] == EAGER)]
    lookup = dict(zip(zip(plain["model"], plain["device"]), plain["variant"]))
    return pd.Series([lookup.get(key, np.nan) for key in zip(parts["model"], parts["device"])],
                     index=parts.index, dtype=object)


ACCURACY_COLUMNS = ("accuracy_diff", "accuracy_diff_low", "accuracy_diff_high", "gained", "lost", "p_mcnemar",
                    "paired_samples")


def accuracy_difference(bundle: TraceBundle, variant: str, reference: str, level: float = 0.95) -> dict:
    """``variant`` against ``reference`` on the samples both were evaluated on (``ACCURACY_COLUMNS``):
    the accuracy difference with its paired interval over samples (``analysis.stats.paired_difference``
    on the per-sample 0/1 outcomes), the samples the variant gets right and the reference wrong
    (``gained``) and the reverse (``lost``), and McNemar's exact test of gained against lost (only the
    samples on which the two disagree say anything about which is more accurate)."""
    from statsmodels.stats.contingency_tables import mcnemar

    predictions = bundle.predictions
    both = [predictions[predictions["variant"] == v].set_index("sample_id")["correct"] for v in (variant, reference)]
    common = both[0].index.intersection(both[1].index)
    if common.empty:
        return {**dict.fromkeys(ACCURACY_COLUMNS, np.nan), "paired_samples": 0}
    mine, theirs = (side.loc[common].to_numpy(dtype=float) for side in both)
    paired = paired_difference(mine, theirs, level)
    gained, lost = paired.wins, paired.losses
    p_value = float(mcnemar([[0, gained], [lost, 0]], exact=True).pvalue) if gained + lost else 1.0
    interval = paired.difference  # one paired sample has no interval: its bounds stay NaN, not zero-wide
    return {"accuracy_diff": interval.mean, "accuracy_diff_low": interval.mean - interval.half_width,
            "accuracy_diff_high": interval.mean + interval.half_width, "gained": gained, "lost": lost,
            "p_mcnemar": p_value, "paired_samples": int(common.size)}


def cost_table(bundle: TraceBundle, batch_sizes: Sequence[int] = COST_BATCH_SIZES) -> pd.DataFrame:
    """One row per variant that is not its own reference (``reference_of``): ``PARTS``, ``reference``,
    ``latency_ratio_b<n>`` per batch size (the variant's median latency over the reference's; NaN
    when either lacks that size), then ``accuracy_difference``'s columns. A variant whose model has
    no FP32 unpruned variant, or that either lacks predictions for, keeps NaN there."""
    parts = variant_table(bundle)
    parts = parts.assign(reference=reference_of(parts))
    parts = parts[parts["variant"] != parts["reference"]].reset_index(drop=True)
    median = latency_table(bundle, (50,)).set_index(["variant", "batch_size"])["p50_ms"]
    for batch_size in batch_sizes:
        ratios = [median.get((v, batch_size), np.nan) / median.get((r, batch_size), np.nan)
                  if isinstance(r, str) else np.nan for v, r in zip(parts["variant"], parts["reference"])]
        parts[f"latency_ratio_b{batch_size}"] = np.asarray(ratios, dtype=np.float64)
    predicted = set(bundle.predicted_variants)
    missing = {**dict.fromkeys(ACCURACY_COLUMNS, np.nan), "paired_samples": 0}
    rows = [accuracy_difference(bundle, v, r) if isinstance(r, str) and {v, r} <= predicted else missing
            for v, r in zip(parts["variant"], parts["reference"])]
    return pd.concat([parts, pd.DataFrame(rows, columns=list(ACCURACY_COLUMNS), index=parts.index)], axis=1)


def variant_style(row, colors: dict[str, str]) -> dict:
    """A variant's line: its model's colour (``colors``: ``model_colors``), a dash per precision, a
    marker per pruning method, a width per backend (thin TorchScript, thick ONNX Runtime)."""
    return {"color": colors[row.model], "linestyle": _LINESTYLES.get(row.precision, (0, (3, 1, 1, 1))),
            "marker": _MARKERS.get(row.pruning, "D"), "linewidth": _LINEWIDTHS.get(row.backend, 2.0)}


def model_colors(parts: pd.DataFrame) -> dict[str, str]:
    """A colour per model of a table with a ``model`` column, the models in sorted order (so that
    the figures of one bundle agree)."""
    return series_colors(sorted(set(parts["model"])), policies=False)


def _legend(fig: "Figure", ax, columns: int = 3) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(columns, max(len(labels), 1)), fontsize=8)


def latency_figure(latency: pd.DataFrame, percentile: str = "p50_ms", title: str = "") -> "Figure":
    """Two panels against batch size (log axis): ``percentile`` of the batch latency, and the
    throughput back-to-back batches sustain; one line per variant (``latency_table``'s rows)."""
    fig, axes = new_figures(1, 2, width_in=10.0, height_in=4.6)
    colors = model_colors(latency)
    for part, rows in latency.groupby("variant", sort=True):
        rows = rows.sort_values("batch_size")
        style = variant_style(rows.iloc[0], colors)
        axes[0, 0].plot(rows["batch_size"], rows[percentile], label=part, **style)
        axes[0, 1].plot(rows["batch_size"], rows["throughput_rps"], **style)
    sizes = sorted(latency["batch_size"].unique())
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xticks([], minor=True)
        ax.set_xlabel("batch size")
    log_axis_if_wide(axes[0, 0], latency[percentile], "y")
    log_axis_if_wide(axes[0, 1], latency["throughput_rps"], "y")
    axes[0, 0].set_ylabel(f"{percentile.removesuffix('_ms')} batch latency (ms)")
    axes[0, 1].set_ylabel("throughput (requests/s, back to back)")
    _legend(fig, axes[0, 0])
    fig.suptitle((title + ": " if title else "") + "colour: model; dash: precision; marker: pruning; width: backend",
                 fontsize=10)
    return fig


def confidence_figure(bundle: TraceBundle, thresholds: Sequence[float] = THRESHOLDS, title: str = "") -> "Figure":
    """Three panels, one line per variant: the confidence CDF (the share of samples below a confidence),
    and against the threshold tau the coverage and the selective accuracy (``threshold_table``);
    the confidence axes are on a logit scale, which spreads 0.9, 0.99 and 0.999 apart."""
    predictions = _predictions(bundle)
    curve = threshold_table(bundle, thresholds)
    fig, axes = new_figures(1, 3, width_in=12.0, height_in=4.6)
    colors = model_colors(variant_table(bundle))
    low = max(min(0.5, float(curve["threshold"].min())), 0.01)  # the logit axis cannot reach 0
    for part, rows in predictions.groupby("variant", sort=True):
        style = variant_style(rows.iloc[0], colors)
        x, share = empirical_cdf(np.clip(rows["confidence"].to_numpy(dtype=np.float64), low, _TOP))
        axes[0, 0].step(x, share, where="post", color=style["color"], linestyle=style["linestyle"])
        mine = curve[curve["variant"] == part]
        axes[0, 1].plot(mine["threshold"], mine["coverage"], label=part, **style)
        axes[0, 2].plot(mine["threshold"], mine["selective_accuracy"], **style)
    labels = (f"confidence (above {_TOP:g}: at {_TOP:g})", "threshold τ (answer when confidence ≥ τ)", "threshold τ")
    ylabels = ("share of samples with lower confidence", "coverage (share answered)", "accuracy of the answered")
    ticks = [t for t in (0.5, 0.9, 0.99, 0.999, _TOP) if t >= low]
    for ax, xlabel, ylabel in zip(axes[0], labels, ylabels):
        ax.set_xscale("logit", nonpositive="clip")
        ax.set_xlim(low, _TOP)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xticks([], minor=True)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    _legend(fig, axes[0, 1], 4)
    fig.suptitle((title + ": " if title else "") + "confidence of each variant's predictions", fontsize=10)
    return fig


def cost_figure(costs: pd.DataFrame, title: str = "") -> "Figure":
    """Two panels, one row per variant of ``cost_table``: the latency ratio to the
    reference at each batch size of its ``latency_ratio_b<n>`` columns (a log axis when it spans a
    decade; left of 1 is faster), and the accuracy difference in points with its 95% interval (right
    of 0 is more accurate). A compression worth having sits left in the first panel and at 0 in the
    second."""
    rows = costs.sort_values("variant", kind="stable").reset_index(drop=True)
    columns = [c for c in rows.columns if c.startswith("latency_ratio_b")]
    colors = model_colors(rows)
    fig, axes = new_figures(1, 2, width_in=10.0, height_in=1.6 + 0.3 * len(rows), sharey=True)
    ratio_ax, accuracy_ax = axes[0]
    from matplotlib.lines import Line2D

    keys = []
    for k, (column, marker) in enumerate(zip(columns, "os^Dv")):
        filled = k == 0
        ratio_ax.scatter(rows[column], rows.index, marker=marker, s=36, zorder=3,
                         facecolors=[colors[m] if filled else "none" for m in rows["model"]],
                         edgecolors=[colors[m] for m in rows["model"]])
        keys.append(Line2D([], [], marker=marker, linestyle="none", color="#444444",
                           markerfacecolor="#444444" if filled else "none",
                           label=f"batch {column.removeprefix('latency_ratio_b')}"))
    low = (rows["accuracy_diff"] - rows["accuracy_diff_low"]).fillna(0.0)
    high = (rows["accuracy_diff_high"] - rows["accuracy_diff"]).fillna(0.0)
    for k, row in rows.dropna(subset=["accuracy_diff"]).iterrows():
        accuracy_ax.errorbar([100 * row["accuracy_diff"]], [k], xerr=[[100 * low[k]], [100 * high[k]]], fmt="o",
                             color=colors[row["model"]], capsize=3)
    ratio_ax.axvline(1.0, color="#444444", linewidth=1.0)
    accuracy_ax.axvline(0.0, color="#444444", linewidth=1.0)
    log_axis_if_wide(ratio_ax, rows[columns].to_numpy().ravel(), "x")
    ratio_ax.set_yticks(rows.index, [f"{v.split('/')[0]} {p}" + (f" {b}" if b != EAGER else "")
                                     for v, p, b in zip(rows["variant"], rows["precision"], rows["backend"])])
    ratio_ax.invert_yaxis()
    ratio_ax.grid(False, axis="y")
    accuracy_ax.grid(False, axis="y")
    ratio_ax.set_xlabel("median latency / the FP32 unpruned model's")
    accuracy_ax.set_xlabel("accuracy difference (points), 95% interval")
    ratio_ax.legend(handles=keys, loc="best")
    fig.suptitle((title + ": " if title else "") + "what each precision and pruning method costs, "
                 "against the FP32 unpruned model", fontsize=10)
    return fig

"""Cumulative incidence curves of competing risks, with a numbers-at-risk table, and the
exposure-timing forest (baseline vs time-dependent vs landmark hazard ratios)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from pooled.models.competing import CumulativeIncidenceResult
    from pooled.models.landmark import ExposureTimingResult

__all__ = ["RISK_TABLE_LABEL", "cumulative_incidence_plot", "exposure_timing_plot"]

RISK_TABLE_LABEL = "cif_numbers_at_risk"
CURVE_GID = "cif_curve"
RISK_LABEL_GID = "cif_n_at_risk"
_STEPS = (1.0, 3.0, 6.0, 12.0, 24.0, 36.0, 60.0, 120.0, 240.0)


def _ticks(end: float, max_ticks: int = 9) -> list[float]:
    for step in _STEPS:
        if end / step <= max_ticks - 1:
            return [float(t) for t in np.arange(0.0, end + 1e-9, step)]
    return [0.0, end]


def cumulative_incidence_plot(
    result: CumulativeIncidenceResult,
    *,
    ax: Axes | None = None,
    risk_table: bool = True,
    confidence_band: bool = True,
    competing: bool = True,
    group_names: dict[str, str] | None = None,
    title: str = "",
    xlabel: str = "Months",
    ylabel: str = "Cumulative incidence",
    risk_times: Sequence[float] | None = None,
) -> Axes:
    """Cumulative incidence of the event (solid, with its pointwise 95% band) and of the
    competing event (dashed) per group, with Gray's test and a numbers-at-risk table.

    Computes nothing: the curves, bands, Gray's p-values and numbers at risk are read from
    ``result`` (:func:`pooled.models.competing.fit_cumulative_incidence`).

    Parameters
    ----------
    result : CumulativeIncidenceResult
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted. The table is added below it.
    risk_table, confidence_band, competing : bool
        What to draw.
    group_names : dict, optional
        Display names of the group labels (``{"1": "CTC positive"}``).
    title, xlabel, ylabel : str
    risk_times : sequence of float, optional
        Times of the numbers at risk (and x ticks); default every 6, 12, 24, ... months.

    Returns
    -------
    matplotlib Axes
        The main axes.

    References
    ----------
    .. [1] Pintilie M. Competing Risks: A Practical Perspective. Wiley; 2006. Chapter 4.

    Examples
    --------
    >>> # ax = cumulative_incidence_plot(fit_cumulative_incidence(cohort, spec))
    """
    import matplotlib.pyplot as plt
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    from pooled.plots.forest import p_relation

    names = dict(group_names or {})
    steps = result.step_frame()
    labels = [str(label) for label in dict.fromkeys(steps["label"])]
    n_groups = len(labels)
    if ax is None:
        height = 4.6 + (0.28 * n_groups + 0.6 if risk_table else 0.0)
        _fig, ax = plt.subplots(figsize=(8.0, height))
        _fig.subplots_adjust(left=0.2, right=0.96)
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2"])
    spec = result.spec
    event, other = spec.event_label, spec.competing_label
    for i, label in enumerate(labels):
        colour = colours[i % len(colours)]
        curve = steps[steps["label"].astype(str) == label]
        time = curve["time"].to_numpy(dtype=float)
        shown = names.get(label, label)
        (line,) = ax.step(
            time, curve["cif_event"].to_numpy(dtype=float), where="post", color=colour,
            linewidth=1.6, label=f"{shown}: {event}",
        )  # fmt: skip
        line.set_gid(f"{CURVE_GID}:{label}:event")
        if confidence_band:
            ax.fill_between(
                time, curve["ci_lower_event"].to_numpy(dtype=float),
                curve["ci_upper_event"].to_numpy(dtype=float), step="post", color=colour,
                alpha=0.15, lw=0,
            )  # fmt: skip
        if competing:
            (dashed,) = ax.step(
                time, curve["cif_competing"].to_numpy(dtype=float), where="post", color=colour,
                linewidth=1.2, linestyle="--", label=f"{shown}: {other.replace('_', ' ')}",
            )  # fmt: skip
            dashed.set_gid(f"{CURVE_GID}:{label}:competing")
    top = float(np.nanmax(steps[["ci_upper_event", "cif_competing"]].to_numpy(dtype=float)))
    ax.set_ylim(0.0, min(1.0, max(0.1, top * 1.15)))
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", color="0.9")
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    if title:
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    if len(result.gray):
        kind = "Gray's test (stratified)" if spec.strata else "Gray's test"
        texts = [
            f"{spec.label(int(c)).replace('_', ' ')} p {p_relation(p)}"
            for c, p in zip(result.gray["cause"], result.gray["p_value"], strict=True)
        ]
        ax.text(0.98, 0.97, f"{kind}: " + "; ".join(texts), transform=ax.transAxes,
                ha="right", va="top", fontsize=8)  # fmt: skip
    end = float(np.nanmax(steps["time"].to_numpy(dtype=float)))
    ticks = sorted(float(t) for t in risk_times) if risk_times is not None else _ticks(end)
    ax.set_xlim(0.0, max(end, max(ticks)) * 1.02 if end > 0 else 1.0)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel(xlabel)
    if not risk_table:
        return ax
    divider = make_axes_locatable(ax)
    table_ax = divider.append_axes("bottom", size=0.28 * n_groups + 0.25, pad=0.75, sharex=ax)
    table_ax.set_label(RISK_TABLE_LABEL)
    table_ax.set_ylim(n_groups - 0.5, -0.5)
    table_ax.set_yticks(range(n_groups))
    table_ax.set_yticklabels([names.get(label, label) for label in labels])
    for tick, i in zip(table_ax.get_yticklabels(), range(n_groups), strict=True):
        tick.set_color(colours[i % len(colours)])
    table_ax.tick_params(axis="both", length=0)
    table_ax.tick_params(axis="x", labelbottom=False)
    for side in ("left", "right", "top", "bottom"):
        table_ax.spines[side].set_visible(False)
    table_ax.set_title("Number at risk", loc="left", fontsize=9, fontweight="bold")
    at_risk = result.risk_table(tuple(ticks))
    ax.tick_params(axis="x", labelbottom=True)
    for i, label in enumerate(labels):
        rows = at_risk[at_risk["label"].astype(str) == label]
        for t, n in zip(rows["time"], rows["n_risk"], strict=True):
            if float(t) not in ticks:
                continue
            text = table_ax.text(float(t), i, f"{int(n)}", ha="center", va="center", fontsize=9,
                                 color=colours[i % len(colours)])  # fmt: skip
            text.set_gid(RISK_LABEL_GID)
    table_ax.tick_params(axis="y", pad=16.0)
    return ax


def exposure_timing_plot(result: ExposureTimingResult, *, ax: Axes | None = None) -> Axes:
    """The exposure's hazard ratio (95% CI, log scale) by analysis: baseline status,
    time-dependent status, each landmark (and naive whole-series exposures, marked as open
    to immortal-time bias). Reads ``result.table`` only.

    Examples
    --------
    >>> # ax = exposure_timing_plot(compare_exposure_timing(exposure="ctc", baseline=cox, ...))
    """
    import matplotlib.pyplot as plt

    table = result.table
    n = len(table)
    if ax is None:
        _fig, ax = plt.subplots(figsize=(7.0, 0.45 * n + 1.2))
        _fig.subplots_adjust(left=0.38, right=0.96)
    y = np.arange(n)[::-1]
    colours = ["0.55" if immortal else "0.1" for immortal in table["immortal_time"]]
    for yi, (_, row), colour in zip(y, table.iterrows(), colours, strict=True):
        ax.plot([row["ci_lower"], row["ci_upper"]], [yi, yi], color=colour, linewidth=1.4)
        ax.plot([row["hr"]], [yi], marker="s", color=colour, markersize=6)
    ax.axvline(1.0, color="0.6", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    low = float(np.nanmin(np.append(table["ci_lower"].to_numpy(dtype=float), 1.0)))
    high = float(np.nanmax(np.append(table["ci_upper"].to_numpy(dtype=float), 1.0)))
    candidates = (0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 20.0)
    ticks = [t for t in candidates if low / 1.1 <= t <= high * 1.1]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xticks([], minor=True)
    ax.set_yticks(y, [str(label) for label in table["label"]])
    ax.set_xlabel(f"Hazard ratio of {result.exposure} (95% CI)")
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    return ax

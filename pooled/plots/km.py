"""Kaplan-Meier curves with confidence bands, censoring marks and a numbers-at-risk table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from pooled.models.km import KMResult, LogrankResult

__all__ = [
    "RISK_TABLE_LABEL",
    "km_plot",
    "n_at_risk",
    "overlapping_risk_labels",
    "intersecting",
    "risk_label_boxes",
    "risk_table_axes",
    "risk_table_boxes",
    "risk_ticks",
]

RISK_TABLE_LABEL = "numbers_at_risk"
CURVE_GID = "km_curve"
RISK_LABEL_GID = "n_at_risk"


def risk_table_axes(ax: Axes) -> Axes | None:
    """The numbers-at-risk axes that :func:`km_plot` created under ``ax`` (or ``None``)."""
    for other in ax.figure.axes:
        if other.get_label() == RISK_TABLE_LABEL and getattr(other, "_km_main", None) is ax:
            return other
    return None


def km_plot(
    result: KMResult,
    *,
    ax: Axes | None = None,
    risk_table: bool = True,
    confidence_band: bool = True,
    censor_marks: bool = True,
    logrank: LogrankResult | None = None,
    title: str = "",
    xlabel: str = "Months",
    ylabel: str = "Survival probability",
    group_names: dict[str, str] | None = None,
    risk_times: Sequence[float] | None = None,
) -> Axes:
    """Kaplan-Meier curves by group, with a numbers-at-risk table under the plot.

    Each group's survival is drawn as a right-continuous step function from ``result``'s
    curves (starting at 1 at time 0), with its pointwise confidence band and ``+`` marks at
    censoring times. The table below gives the numbers at risk, one row per group, at the x
    ticks, which cover the whole follow-up (0, then every 6, 12, 24, ... months, the finest
    step whose labels do not overprint: the labels' drawn boxes are measured and the ticks
    thinned until no two intersect). The numbers are read from the result (its
    ``risk_table`` at its own times, else its curve: :func:`n_at_risk`).

    Parameters
    ----------
    result : KMResult
        From :func:`pooled.models.km.fit_kaplan_meier`.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted. The risk table is created below ``ax`` (the
        main axes shrink to make room).
    risk_table, confidence_band, censor_marks : bool
        What to draw.
    logrank : LogrankResult, optional
        Its p-value is printed in the plot.
    title, xlabel, ylabel : str
    group_names : dict, optional
        Display names for the groups' labels (e.g. ``{"ctc_positive=1": "CTC positive"}``).
    risk_times : sequence of float, optional
        Times of the numbers at risk (and x ticks) instead of the automatic ticks; thinned
        (every second, third, ... label) when the labels would overprint.

    Returns
    -------
    matplotlib Axes
        The main axes; :func:`risk_table_axes` finds the table axes.

    References
    ----------
    .. [1] Kaplan EL, Meier P. Nonparametric estimation from incomplete observations.
       J Am Stat Assoc 1958;53:457-81.
    .. [2] Pocock SJ, Clayton TC, Altman DG. Survival plots of time-to-event outcomes in
       clinical trials: good practice and pitfalls. Lancet 2002;359:1686-9.

    Examples
    --------
    >>> # res = fit_kaplan_meier(cohort, KMSpec(group="ctc_positive", times=(0, 24, 48)))
    >>> # ax = km_plot(res); risk_table_axes(ax).get_yticklabels()
    """
    import matplotlib.pyplot as plt
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    from pooled.plots.forest import p_relation

    names = dict(group_names or {})
    steps = result.step_frame()
    labels = [str(label) for label in result.summary["label"]]
    n_groups = len(labels)
    if ax is None:
        height = 4.6 + (0.28 * n_groups + 0.6 if risk_table else 0.0)
        _fig, ax = plt.subplots(figsize=(8.0, height))
        _fig.subplots_adjust(left=0.2, right=0.96)
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2"])

    for i, label in enumerate(labels):
        colour = colours[i % len(colours)]
        curve = steps[steps["label"].astype(str) == label]
        time = curve["time"].to_numpy(dtype=float)
        surv = curve["survival"].to_numpy(dtype=float)
        (line,) = ax.step(
            time, surv, where="post", color=colour, linewidth=1.6, label=names.get(label, label)
        )
        line.set_gid(f"{CURVE_GID}:{label}")
        if confidence_band:
            lower = curve["ci_lower"].to_numpy(dtype=float)
            upper = curve["ci_upper"].to_numpy(dtype=float)
            ok = np.isfinite(lower) & np.isfinite(upper)
            ax.fill_between(
                time[ok], lower[ok], upper[ok], step="post", color=colour, alpha=0.15, lw=0
            )
        if censor_marks:
            censored = curve["n_censor"].to_numpy() > 0
            ax.plot(
                time[censored],
                surv[censored],
                linestyle="none",
                marker="|",
                markersize=5,
                color=colour,
                alpha=0.8,
            )

    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(left=0.0)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", color="0.9")
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="lower left", frameon=False)
    if title:
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    if logrank is not None:
        kind = "Stratified log-rank" if logrank.strata else "Log-rank"
        ax.text(
            0.98,
            0.95,
            f"{kind} p {p_relation(logrank.p_value)}",
            transform=ax.transAxes,
            ha="right",
            va="top",
        )

    if not risk_table or result.curves.empty:
        ax.set_xlabel(xlabel)
        return ax

    end = float(np.nanmax(steps["time"].to_numpy(dtype=float)))
    ax.set_xlabel(xlabel)
    divider = make_axes_locatable(ax)
    table_ax = divider.append_axes("bottom", size=0.28 * n_groups + 0.25, pad=0.75, sharex=ax)
    table_ax.set_label(RISK_TABLE_LABEL)
    table_ax._km_main = ax  # type: ignore[attr-defined]  # lets risk_table_axes find it
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

    if risk_times is not None:  # the given times, thinned left to right until they fit
        ticks = sorted(float(t) for t in risk_times)
        _draw_risk_numbers(ax, table_ax, result, labels, ticks, colours)
        _draw_risk_numbers(ax, table_ax, result, labels, _fitting(table_ax, ticks), colours)
        return ax
    for ticks in [risk_ticks(end, step) for step in _tick_steps(end)]:
        _draw_risk_numbers(ax, table_ax, result, labels, ticks, colours)
        if not overlapping_risk_labels(ax):
            break
    return ax


def _fitting(table_ax: Axes, ticks: list[float], pad: float = 2.0) -> list[float]:
    """The ticks kept left to right whose numbers (widest over the rows) do not reach the
    numbers of the tick kept before."""
    boxes = risk_label_boxes(table_ax._km_main)  # type: ignore[attr-defined]
    spans: dict[float, tuple[float, float]] = {}
    for text, box in zip(_risk_texts(table_ax), [b for row in boxes for b in row], strict=True):
        t = float(text.get_position()[0])
        low, high = spans.get(t, (box.x0, box.x1))
        spans[t] = (min(low, box.x0), max(high, box.x1))
    kept: list[float] = []
    right = -np.inf
    for t in ticks:
        low, high = spans.get(t, (np.inf, -np.inf))
        if low - pad >= right:
            kept.append(t)
            right = high
    return kept or ticks[:1]


def _risk_texts(table_ax: Axes) -> list[Any]:
    """The numbers-at-risk texts, ordered as :func:`risk_label_boxes` returns their boxes."""
    texts = [t for t in table_ax.texts if t.get_gid() == RISK_LABEL_GID and t.get_visible()]
    return sorted(texts, key=lambda t: float(t.get_position()[1]))


#: Tick steps (months) tried from fine to coarse, so the labels fit.
TICK_STEPS = (1.0, 2.0, 3.0, 6.0, 12.0, 24.0, 36.0, 48.0, 60.0, 120.0, 240.0, 480.0)


def _tick_steps(end: float, max_ticks: int = 11) -> list[float]:
    """The steps that give at most ``max_ticks`` ticks over ``[0, end]``, finest first."""
    steps = [s for s in TICK_STEPS if end / s <= max_ticks - 1]
    return steps or [TICK_STEPS[-1]]


def risk_ticks(end: float, step: float) -> list[float]:
    """Ticks ``0, step, 2 step, ...`` covering the whole follow-up ``[0, end]``.

    Examples
    --------
    >>> risk_ticks(230.0, 60.0)
    [0.0, 60.0, 120.0, 180.0, 240.0]
    """
    count = int(np.ceil(end / step - 1e-9)) if end > 0 else 0
    return [step * i for i in range(count + 1)]


def n_at_risk(result: KMResult, label: str, time: float) -> int:
    """Patients of the group ``label`` still at risk at ``time`` (follow-up >= ``time``).

    Read from the result: its ``risk_table`` where it has ``time``, else its curve (the
    number at risk at the first observed time on or after ``time``; 0 after the last).
    """
    table = result.risk_table
    if len(table):
        row = table.loc[(table["label"].astype(str) == label) & np.isclose(table["time"], time)]
        if len(row):
            return int(row["n_risk"].iloc[0])
    if time <= 0:
        summary = result.summary.loc[result.summary["label"].astype(str) == label]
        if len(summary):
            return int(summary["n"].iloc[0])
    curve = result.curves.loc[result.curves["label"].astype(str) == label]
    later = curve.loc[curve["time"] >= time]
    return int(later["n_risk"].iloc[0]) if len(later) else 0


def _draw_risk_numbers(
    ax: Axes,
    table_ax: Axes,
    result: KMResult,
    labels: list[str],
    ticks: list[float],
    colours: list[str],
) -> None:
    """Numbers at risk at ``ticks`` (which become the x ticks of both axes)."""
    for text in list(table_ax.texts):
        text.remove()
    right = max(max(ticks), float(np.nanmax(result.step_frame()["time"].to_numpy(dtype=float))))
    ax.set_xlim(0.0, right * 1.02 if right > 0 else 1.0)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.tick_params(axis="x", labelbottom=True)
    for i, label in enumerate(labels):
        colour = colours[i % len(colours)]
        for t in ticks:
            text = table_ax.text(
                float(t),
                i,
                f"{n_at_risk(result, label, float(t))}",
                ha="center",
                va="center",
                fontsize=9,
                color=colour,
            )
            text.set_gid(RISK_LABEL_GID)
    # the group names stand clear of the numbers at time 0, which reach left of the axis
    fig = ax.figure
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    first = [
        t.get_window_extent(renderer).width
        for t in table_ax.texts
        if t.get_gid() == RISK_LABEL_GID and float(t.get_position()[0]) == float(ticks[0])
    ]
    half = 0.5 * max(first, default=0.0) * 72.0 / fig.dpi
    table_ax.tick_params(axis="y", pad=half + 14.0)


def risk_label_boxes(ax: Axes) -> list[list[Any]]:
    """The display boxes of the numbers at risk under ``ax``, one list per group row (the
    figure is drawn first, so the boxes are where the labels are)."""
    table_ax = risk_table_axes(ax)
    if table_ax is None:
        return []
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    rows: dict[float, list[Any]] = {}
    for text in _risk_texts(table_ax):
        rows.setdefault(float(text.get_position()[1]), []).append(text.get_window_extent(renderer))
    return [rows[k] for k in sorted(rows)]


def risk_table_boxes(ax: Axes) -> list[tuple[float, float, float, float]]:
    """The drawn boxes ``(x0, y0, x1, y1)`` in pixels of every label of the numbers-at-risk
    table under ``ax``: the numbers, then the group names."""
    boxes = [box for row in risk_label_boxes(ax) for box in row]
    table_ax = risk_table_axes(ax)
    if table_ax is not None:
        renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]
        boxes += [t.get_window_extent(renderer) for t in table_ax.get_yticklabels() if t.get_text()]
    return [(float(b.x0), float(b.y0), float(b.x1), float(b.y1)) for b in boxes]


def intersecting(
    boxes: Sequence[tuple[float, float, float, float]], pad: float = 2.0
) -> list[tuple[int, int]]:
    """Pairs of boxes ``(x0, y0, x1, y1)`` that intersect once widened by ``pad``."""
    hits = []
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            if a[0] - pad < b[2] and b[0] - pad < a[2] and a[1] - pad < b[3] and b[1] - pad < a[3]:
                hits.append((i, j))
    return hits


def overlapping_risk_labels(ax: Axes, pad: float = 2.0) -> list[tuple[int, int]]:
    """Pairs of labels of the numbers-at-risk table (the numbers and the group names)
    whose drawn boxes, widened by ``pad`` pixels, intersect; empty when all can be read."""
    return intersecting(risk_table_boxes(ax), pad)

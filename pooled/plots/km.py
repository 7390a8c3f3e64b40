"""Kaplan-Meier curves with confidence bands, censoring marks and a numbers-at-risk table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from pooled.models.km import KMResult, LogrankResult

__all__ = ["RISK_TABLE_LABEL", "km_plot", "risk_table_axes"]

RISK_TABLE_LABEL = "numbers_at_risk"
CURVE_GID = "km_curve"


def _p_relation(text: str) -> str:
    """``"= 0.012"`` or ``"< 0.001"``."""
    return "< " + text[1:] if text.startswith("<") else "= " + text


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
) -> Axes:
    """Kaplan-Meier curves by group, with a numbers-at-risk table under the plot.

    Each group's survival is drawn as a right-continuous step function from ``result``'s
    curves (starting at 1 at time 0), with its pointwise confidence band and ``+`` marks at
    censoring times. The table below gives ``result.risk_table`` (the numbers at risk at the
    result's risk times), one row per group, aligned with the x axis.

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

    from pooled.plots.forest import format_p_value

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
            f"{kind} p {_p_relation(format_p_value(logrank.p_value))}",
            transform=ax.transAxes,
            ha="right",
            va="top",
        )

    if not risk_table or result.risk_table.empty:
        ax.set_xlabel(xlabel)
        return ax

    table = result.risk_table
    times = sorted(float(t) for t in table["time"].unique())
    right = max(float(np.nanmax(steps["time"].to_numpy(dtype=float))), max(times))
    ax.set_xlim(0.0, right * 1.02)
    ax.set_xticks(times)
    ax.tick_params(axis="x", labelbottom=True)
    ax.set_xlabel(xlabel)
    divider = make_axes_locatable(ax)
    table_ax = divider.append_axes("bottom", size=0.28 * n_groups + 0.25, pad=0.75, sharex=ax)
    table_ax.set_label(RISK_TABLE_LABEL)
    table_ax._km_main = ax  # type: ignore[attr-defined]  # lets risk_table_axes find it
    for i, label in enumerate(labels):
        colour = colours[i % len(colours)]
        rows = table[table["label"].astype(str) == label]
        for t, n in zip(rows["time"], rows["n_risk"], strict=True):
            table_ax.text(
                float(t), i, f"{int(n)}", ha="center", va="center", fontsize=9, color=colour
            )
    table_ax.set_ylim(n_groups - 0.5, -0.5)
    table_ax.set_yticks(range(n_groups))
    table_ax.set_yticklabels([names.get(label, label) for label in labels])
    for tick, i in zip(table_ax.get_yticklabels(), range(n_groups), strict=True):
        tick.set_color(colours[i % len(colours)])
    table_ax.tick_params(axis="both", length=0)
    table_ax.tick_params(axis="y", pad=20)
    table_ax.tick_params(axis="x", labelbottom=False)
    for side in ("left", "right", "top", "bottom"):
        table_ax.spines[side].set_visible(False)
    table_ax.set_title("Number at risk", loc="left", fontsize=9, fontweight="bold")
    return ax

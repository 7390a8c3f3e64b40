"""Centre effects of a mixed-effects Cox model: shrunken (BLUP) hazard ratios by centre.

One row per centre, top to bottom in the result's centre order: the centre's hazard ratio
from the one-stage model (for a random marker slope the marker HR ``exp(beta + b_c)``, for a
frailty model the centre's relative hazard ``exp(b_c)``) with its 95 % interval, and, when a
per-centre table is given (e.g. the two-stage analysis's ``per_centre``), the centre's own
estimate beside it, so the shrinkage towards the mean is visible. The mean effect (fixed
effect) is a diamond, its prediction interval for a new centre a dotted line. Everything
drawn comes from the result or the table; the plot computes nothing statistical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pooled.plots.forest import format_ratio_ci

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from pooled.models.mixed_cox import MixedCoxResult

__all__ = [
    "CENTRE_ESTIMATE_GID",
    "MEAN_DIAMOND_GID",
    "PREDICTION_GID",
    "SHRUNKEN_GID",
    "centre_effects_plot",
    "centre_effects_rows",
]

SHRUNKEN_GID = "shrunken_centre_effect"
CENTRE_ESTIMATE_GID = "per_centre_estimate"
MEAN_DIAMOND_GID = "mean_effect_diamond"
PREDICTION_GID = "prediction_interval"
_TICKS = (0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 10.0)


def centre_effects_rows(
    result: MixedCoxResult, per_centre: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The rows :func:`centre_effects_plot` draws, from the result's tidy table.

    Returns
    -------
    DataFrame
        ``centre, hr, ci_lower, ci_upper`` (one-stage, shrunken) and, when ``per_centre`` is
        given, ``own_hr, own_ci_lower, own_ci_upper`` (NaN for centres it lacks or does not
        estimate), in the result's centre order.
    """
    frame = result.to_frame()
    rows = frame.loc[frame["row_type"] == "centre", ["centre", "hr", "ci_lower", "ci_upper"]]
    rows = rows.reset_index(drop=True)
    if per_centre is not None:
        needed = {"centre", "hr", "ci_lower", "ci_upper"}
        missing = needed - set(per_centre.columns)
        if missing:
            raise ValueError(
                f"per_centre expected columns {sorted(needed)}; missing {sorted(missing)}. "
                "Pass e.g. the two-stage result's per_centre table."
            )
        own = per_centre.assign(centre=per_centre["centre"].astype(str)).set_index("centre")
        for column in ("hr", "ci_lower", "ci_upper"):
            rows[f"own_{column}"] = [
                float(own[column].get(c, np.nan)) for c in rows["centre"].astype(str)
            ]
    return rows


def centre_effects_plot(
    result: MixedCoxResult,
    per_centre: pd.DataFrame | None = None,
    *,
    ax: Axes | None = None,
    title: str = "",
    xlabel: str | None = None,
) -> Axes:
    """Forest plot of the centres' shrunken hazard ratios, optionally beside their own.

    Parameters
    ----------
    result : MixedCoxResult
        A fit of :func:`pooled.models.mixed_cox.fit_mixed_cox`.
    per_centre : DataFrame, optional
        Per-centre estimates with columns ``centre, hr, ci_lower, ci_upper`` (the two-stage
        analysis's ``per_centre`` table has them); drawn as open squares under each centre's
        one-stage estimate.
    ax : matplotlib Axes, optional
        Where to draw; a new figure sized to the number of centres when omitted.
    title, xlabel : str, optional

    Returns
    -------
    matplotlib Axes
        Centres are the y tick labels, top to bottom, then the mean effect.

    References
    ----------
    .. [1] Riley RD, Lambert PC, Abo-Zaid G. Meta-analysis of individual participant data:
       rationale, conduct, and reporting. BMJ 2010;340:c221.
    .. [2] Efron B, Morris C. Stein's paradox in statistics. Sci Am 1977;236:119-27.

    Examples
    --------
    >>> # ax = centre_effects_plot(fit_mixed_cox(data, spec), two_stage_result.per_centre)
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Polygon
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator
    from matplotlib.transforms import blended_transform_factory

    rows = centre_effects_rows(result, per_centre)
    n = len(rows)
    if ax is None:
        height = 1.8 + 0.42 * (n + 2)
        fig, ax = plt.subplots(figsize=(9.0, height))
        fig.subplots_adjust(left=0.2, right=0.66, top=1 - 0.55 / height, bottom=0.8 / height)
    assert ax is not None
    y = np.arange(n, dtype=float)
    own = per_centre is not None
    shift = 0.18 if own else 0.0
    colour = "#1f4e79"
    for yi, lo, hi in zip(y - shift, rows["ci_lower"], rows["ci_upper"], strict=True):
        ax.plot([lo, hi], [yi, yi], color=colour, linewidth=1.3, solid_capstyle="butt")
    dots = ax.scatter(rows["hr"], y - shift, s=36, color=colour, zorder=3, linewidths=0)
    dots.set_gid(SHRUNKEN_GID)
    handles = [
        Line2D([], [], color=colour, marker="o", linewidth=1.3, label="one-stage (shrunken)")
    ]
    limits = [rows["ci_lower"].to_numpy(), rows["ci_upper"].to_numpy()]
    if own:
        ok = np.isfinite(rows["own_hr"].to_numpy(dtype=float))
        for yi, lo, hi in zip(
            y[ok] + shift, rows["own_ci_lower"][ok], rows["own_ci_upper"][ok], strict=True
        ):
            ax.plot([lo, hi], [yi, yi], color="grey", linewidth=1.0, solid_capstyle="butt")
        squares = ax.scatter(
            rows["own_hr"][ok],
            y[ok] + shift,
            s=34,
            marker="s",
            facecolors="white",
            edgecolors="grey",
            zorder=3,
        )
        squares.set_gid(CENTRE_ESTIMATE_GID)
        handles.append(
            Line2D(
                [],
                [],
                color="grey",
                marker="s",
                markerfacecolor="white",
                linewidth=1.0,
                label="centre alone",
            )
        )
        limits += [rows["own_ci_lower"][ok].to_numpy(), rows["own_ci_upper"][ok].to_numpy()]

    # the mean effect and its prediction interval
    frame = result.to_frame()
    label_term = result.spec.marker if result.marker_in_random else None
    y_mean = n + 0.6
    mean_label = "Mean (one-stage)"
    if label_term is not None:
        fixed = frame[(frame["row_type"] == "fixed") & (frame["term"] == label_term)].iloc[0]
        hr, lo, hi = float(fixed["hr"]), float(fixed["ci_lower"]), float(fixed["ci_upper"])
        diamond = Polygon(
            [(lo, y_mean), (hr, y_mean - 0.3), (hi, y_mean), (hr, y_mean + 0.3)],
            closed=True,
            facecolor="#c0392b",
            edgecolor="#7b241c",
            zorder=3,
        )
        diamond.set_gid(MEAN_DIAMOND_GID)
        ax.add_patch(diamond)
        pi_lo, pi_hi = float(fixed["pi_lower"]), float(fixed["pi_upper"])
        (pi_line,) = ax.plot(
            [pi_lo, pi_hi], [y_mean, y_mean], color="#7b241c", linestyle=":", linewidth=1.4
        )
        pi_line.set_gid(PREDICTION_GID)
        limits += [np.array([lo, pi_lo]), np.array([hi, pi_hi])]
        mean_text = format_ratio_ci(hr, lo, hi)
    else:
        mean_text = "1 (reference: the average centre)"
        mean_label = "Average centre"
    ax.axvline(1.0, color="grey", linewidth=0.9, zorder=1)
    ax.set_xscale("log")
    finite = np.concatenate([np.asarray(v, dtype=float) for v in limits] + [np.array([1.0])])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    ax.set_xlim(float(finite.min()) / 1.15, float(finite.max()) * 1.15)
    left, right = ax.get_xlim()
    ticks = [t for t in _TICKS if left <= t <= right]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())

    ax.set_yticks([*y, y_mean])
    ax.set_yticklabels([*rows["centre"].astype(str), mean_label])
    ax.get_yticklabels()[-1].set_fontweight("bold")
    ax.set_ylim(y_mean + 0.9, -1.0)
    ax.tick_params(axis="y", length=0)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    if xlabel is None:
        xlabel = (
            f"Hazard ratio of {result.spec.marker} (log scale)"
            if label_term is not None
            else "Centre hazard relative to the average centre (log scale)"
        )
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold", pad=22)
    trans = blended_transform_factory(ax.transAxes, ax.transData)
    ax.text(1.04, -0.9, "HR (95% CI)", transform=trans, fontweight="bold", va="center")
    for yi, h, lo, hi in zip(y, rows["hr"], rows["ci_lower"], rows["ci_upper"], strict=True):
        ax.text(1.04, yi, format_ratio_ci(h, lo, hi), transform=trans, va="center")
    ax.text(1.04, y_mean, mean_text, transform=trans, va="center", fontweight="bold")
    if label_term is not None:
        tau = np.sqrt(result.tau2)
        ax.text(
            1.04,
            y_mean + 0.6,
            f"tau = {tau:.3f} (between-centre SD of the log HR)",
            transform=trans,
            va="center",
            fontsize=8,
        )
    ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        frameon=False,
        ncol=2,
        fontsize=8,
    )
    return ax

"""The hazard ratio as a function of the CTC count, and the count's distribution under it.

:func:`count_response_plot` draws a :class:`~pooled.models.count_response.CountResponseResult`:
the spline's hazard-ratio curve against the reference count with its pointwise 95 % band
(log HR scale), the count categories' hazard ratios at their patients' median count, the
linear form (dashed) and the knots; underneath, on the same count axis (log(1 + count)
spacing, labelled in CTC per 7.5 ml), how many patients have each count. Everything drawn
comes from the result (the median count of a category is display arithmetic on the result's
distribution table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from pooled.models.count_response import CountResponseResult

__all__ = [
    "BAND_GID",
    "CATEGORY_GID",
    "CURVE_GID",
    "DISTRIBUTION_GID",
    "category_positions",
    "count_response_plot",
]

CURVE_GID = "spline_curve"
BAND_GID = "spline_band"
CATEGORY_GID = "category_hr"
DISTRIBUTION_GID = "count_distribution"
_COUNT_TICKS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
_HR_TICKS = (0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 50.0)


def category_positions(result: CountResponseResult) -> pd.DataFrame:
    """Where each category's HR is drawn: the median count per 7.5 ml of its patients.

    Returns
    -------
    DataFrame
        The result's ``categories`` with ``count`` (the median count) added.
    """
    from pooled.models.count_response import count_categories

    spec = result.spec
    dist = result.distribution
    level = count_categories(dist["count"], spec.breaks, spec.labels)
    medians = {}
    for name, group in dist.groupby(level.to_numpy(), sort=False):
        cumulative = group["n"].cumsum().to_numpy()
        medians[name] = float(
            group["count"].to_numpy()[np.searchsorted(cumulative, cumulative[-1] / 2)]
        )
    table = result.categories.copy()
    table["count"] = [medians.get(v, np.nan) for v in table["level"]]
    return table


def count_response_plot(
    result: CountResponseResult,
    ax: Axes | None = None,
    *,
    title: str = "",
    distribution_height: float = 0.28,
) -> Axes:
    """The HR curve of the count with its 95 % band, category HRs, and the count distribution.

    Parameters
    ----------
    result : CountResponseResult
    ax : matplotlib Axes, optional
        The axes of the curve; the distribution panel is appended below it. A new figure
        when omitted.
    title : str
        Title above the curve.
    distribution_height : float
        Height of the distribution panel as a fraction of the curve's.

    Returns
    -------
    Axes
        The curve's axes (the distribution panel shares its x axis).

    Examples
    --------
    >>> # ax = count_response_plot(fit_count_response(cohort, spec))
    """
    import matplotlib.pyplot as plt
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    if ax is None:
        _fig, ax = plt.subplots(figsize=(7.5, 5.2))
    below = make_axes_locatable(ax).append_axes(
        "bottom", size=f"{100 * distribution_height:.0f}%", pad=0.08, sharex=ax
    )
    curve = result.curve
    x = curve["x"].to_numpy()
    ax.fill_between(x, curve["ci_lower"], curve["ci_upper"], color="#9ecae1", alpha=0.55,
                    linewidth=0, gid=BAND_GID, label="95% CI (pointwise)")  # fmt: skip
    ax.plot(x, curve["hr"], color="#08519c", linewidth=2.0, gid=CURVE_GID,
            label=f"spline (df {result.basis.df})")  # fmt: skip
    ax.plot(x, curve["linear_hr"], color="#636363", linewidth=1.1, linestyle="--",
            label="linear in log(1 + count)")  # fmt: skip
    positions = category_positions(result)
    shown = positions.dropna(subset=["count"])
    xs = np.log1p(shown["count"].to_numpy(dtype=float))
    hr = shown["hr"].to_numpy(dtype=float)
    low = shown["ci_lower"].to_numpy(dtype=float)
    high = shown["ci_upper"].to_numpy(dtype=float)
    ax.errorbar(xs, hr, yerr=[hr - low, high - hr], fmt="s", color="#d94801", markersize=5,
                capsize=3, linewidth=1.2, gid=CATEGORY_GID, label="count categories")  # fmt: skip
    for xi, hi, name in zip(xs, high, shown["level"], strict=True):
        ax.annotate(str(name), (xi, hi), textcoords="offset points", xytext=(0, 4),
                    ha="center", fontsize=8, color="#d94801")  # fmt: skip
    ax.axhline(1.0, color="black", linewidth=0.8)
    for knot in result.basis.knots:
        ax.axvline(knot, color="#bdbdbd", linewidth=0.8, linestyle=":")
    ax.set_yscale("log")
    values = np.concatenate([curve["ci_lower"], curve["ci_upper"], low, high])
    values = values[np.isfinite(values) & (values > 0)]
    lo, hi = float(values.min()), float(values.max())
    ax.set_ylim(max(lo / 1.15, 0.05), min(hi * 1.15, 100.0))
    ticks = [t for t in _HR_TICKS if lo / 1.3 <= t <= hi * 1.3]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_ylabel(f"Hazard ratio vs {result.spec.reference:g} CTC")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.tick_params(labelbottom=False)
    if title:
        ax.set_title(title)
    dist = result.distribution
    counts = dist["count"].to_numpy(dtype=float)
    edges = np.linspace(0.0, float(np.log1p(counts.max())) + 1e-9, 41)
    edges = np.unique(np.concatenate(([-0.5 * edges[1]], edges[1:])))
    below.hist(np.log1p(counts), bins=edges, weights=dist["n"].to_numpy(dtype=float),
               color="#969696", gid=DISTRIBUTION_GID)  # fmt: skip
    zero = float(dist.loc[dist["count"] == 0, "n"].sum())
    below.set_ylabel("patients", fontsize=8)
    below.tick_params(axis="y", labelsize=7)
    if zero > 0:
        below.annotate(f"{int(zero):,} with 0", (0.0, 1.0), xycoords=("data", "axes fraction"),
                       xytext=(4, -10), textcoords="offset points", fontsize=7)  # fmt: skip
    top = float(counts.max())
    ticks = [t for t in _COUNT_TICKS if t <= top * 1.05]
    below.set_xticks(np.log1p(ticks))
    below.set_xticklabels([f"{t:g}" for t in ticks])
    below.set_xlabel("CTC per 7.5 ml (log(1 + count) spacing)")
    ax.set_xlim(-0.05 * np.log1p(top), np.log1p(top) * 1.03)
    return ax

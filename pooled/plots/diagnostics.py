"""Model diagnostics: scaled Schoenfeld residuals against time, and a funnel of centre estimates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from pooled.models.meta import MetaResult
    from pooled.models.zph import ProportionalHazardsResult

__all__ = ["funnel_plot", "ph_terms", "schoenfeld_plot", "schoenfeld_plots"]

SMOOTH_GID = "smooth"
RESIDUALS_GID = "residuals"


def ph_terms(result: ProportionalHazardsResult) -> list[str]:
    """The terms with residual columns (the table's terms without ``GLOBAL``)."""
    return [str(t) for t in result.table["term"] if t != "GLOBAL" and str(t) in result.residuals]


def schoenfeld_plot(
    result: ProportionalHazardsResult,
    term: str,
    *,
    ax: Axes | None = None,
    coefficient: float | None = None,
    smooth: bool = True,
    frac: float = 2.0 / 3.0,
    xlabel: str = "Months",
) -> Axes:
    """Scaled Schoenfeld residuals of one term against time, with a smooth (R's ``plot.cox.zph``).

    Each event's scaled residual plus the coefficient (an estimate of ``beta(t)``) is plotted
    at its event time; a LOWESS smooth over the transformed time (the test's time scale) shows
    the trend. A flat smooth supports proportional hazards; the title gives the test's p-value.
    The smooth is a visual aid only; the test is the one in ``result.table``.

    Parameters
    ----------
    result : ProportionalHazardsResult
        From :func:`pooled.models.zph.proportional_hazards_test`.
    term : str
        A term with a residual column (see :func:`ph_terms`).
    ax : matplotlib Axes, optional
    coefficient : float, optional
        The Cox coefficient, drawn as a horizontal reference line (time-constant effect).
    smooth : bool
        Draw the LOWESS smooth.
    frac : float
        LOWESS span (fraction of the events).
    xlabel : str

    Returns
    -------
    matplotlib Axes

    References
    ----------
    .. [1] Grambsch PM, Therneau TM. Proportional hazards tests and diagnostics based on
       weighted residuals. Biometrika 1994;81:515-26.
    .. [2] Cleveland WS. Robust locally weighted regression and smoothing scatterplots.
       J Am Stat Assoc 1979;74:829-36.

    Examples
    --------
    >>> # ax = schoenfeld_plot(proportional_hazards_test(fit, cohort), "ctc_positive")
    """
    import matplotlib.pyplot as plt

    from pooled.plots.forest import p_relation

    if term not in result.residuals.columns:
        raise KeyError(f"'{term}' has no residual column; expected one of {ph_terms(result)}.")
    if ax is None:
        _fig, ax = plt.subplots(figsize=(5.5, 4.0))
    frame = result.residuals[["time", "transformed_time", term]].dropna()
    time = frame["time"].to_numpy(dtype=float)
    scale = frame["transformed_time"].to_numpy(dtype=float)
    value = frame[term].to_numpy(dtype=float)
    points = ax.scatter(time, value, s=6, color="0.45", alpha=0.45, linewidths=0)
    points.set_gid(RESIDUALS_GID)
    if smooth and len(frame) >= 5:
        from statsmodels.nonparametric.smoothers_lowess import lowess

        fitted = lowess(value, scale, frac=frac, it=0, return_sorted=False)
        order = np.argsort(time, kind="stable")
        (line,) = ax.plot(time[order], fitted[order], color="#c0392b", linewidth=2.0)
        line.set_gid(SMOOTH_GID)
    if coefficient is not None and np.isfinite(coefficient):
        ax.axhline(coefficient, color="#1f4e79", linestyle="--", linewidth=1.0)
    ax.axhline(0.0, color="0.75", linewidth=0.8)
    row = result.table[result.table["term"] == term]
    relation = p_relation(float(row["p_value"].iloc[0])) if len(row) else "= NA"
    ax.set_title(f"{term}\nPH test p {relation} ({result.transform})", fontsize=9.5, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"Beta(t) for {term}" if len(term) < 18 else "Beta(t)")
    if len(frame):
        low, high = np.nanquantile(value, [0.01, 0.99])
        pad = 0.15 * (high - low or 1.0)
        ax.set_ylim(low - pad, high + pad)
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    return ax


def schoenfeld_plots(
    result: ProportionalHazardsResult,
    terms: Sequence[str] | None = None,
    *,
    coefficients: Mapping[str, float] | None = None,
    ncols: int = 3,
) -> list[Axes]:
    """One :func:`schoenfeld_plot` per term on a grid of a new figure; returns the Axes.

    References
    ----------
    .. [1] Grambsch PM, Therneau TM. Proportional hazards tests and diagnostics based on
       weighted residuals. Biometrika 1994;81:515-26.

    Examples
    --------
    >>> # axes = schoenfeld_plots(zph, coefficients=dict(zip(fit.term_names, fit.coefficients)))
    """
    import matplotlib.pyplot as plt

    chosen = list(terms) if terms is not None else ph_terms(result)
    if not chosen:
        raise ValueError("schoenfeld_plots: no terms with residuals to plot.")
    ncols = max(1, min(ncols, len(chosen)))
    nrows = int(np.ceil(len(chosen) / ncols))
    fig, grid = plt.subplots(
        nrows, ncols, figsize=(4.4 * ncols, 3.5 * nrows), squeeze=False, constrained_layout=True
    )
    coefs = dict(coefficients or {})
    axes: list[Axes] = []
    for i, term in enumerate(chosen):
        ax = grid[i // ncols][i % ncols]
        schoenfeld_plot(result, term, ax=ax, coefficient=coefs.get(term))
        axes.append(ax)
    for j in range(len(chosen), nrows * ncols):
        grid[j // ncols][j % ncols].set_visible(False)
    return axes


def funnel_plot(meta: MetaResult, *, ax: Axes | None = None, xlabel: str | None = None) -> Axes:
    """Funnel plot: each centre's estimate against its standard error (inverted y axis).

    The dashed funnel is ``pooled +/- 1.96 SE``; with log-ratio estimates the x axis shows
    hazard ratios on a log scale.

    References
    ----------
    .. [1] Sterne JAC, Egger M. Funnel plots for detecting bias in meta-analysis: guidelines
       on choice of axis. J Clin Epidemiol 2001;54:1046-55.

    Examples
    --------
    >>> # ax = funnel_plot(two_stage.meta)
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ratio = bool(meta.spec.exponentiate)
    table = meta.per_study
    se = table["se"].to_numpy(dtype=float)
    est = table["estimate"].to_numpy(dtype=float)
    top = float(np.nanmax(se)) * 1.1 if len(se) else 1.0
    grid = np.linspace(0.0, top, 50)
    centre = meta.estimate

    def show(x: np.ndarray | float) -> np.ndarray:
        return np.exp(x) if ratio else np.asarray(x)

    ax.plot(show(centre - 1.96 * grid), grid, color="0.5", linestyle="--", linewidth=0.9)
    ax.plot(show(centre + 1.96 * grid), grid, color="0.5", linestyle="--", linewidth=0.9)
    ax.axvline(float(show(centre)), color="#c0392b", linewidth=1.0)
    ax.scatter(show(est), se, color="#1f4e79", zorder=3)
    for x, y, label in zip(show(est), se, table["label"], strict=True):
        ax.annotate(str(label), (x, y), xytext=(4, 2), textcoords="offset points", fontsize=8)
    if ratio:
        from pooled.plots.forest import _log_ticks

        ax.set_xscale("log")
        _log_ticks(ax)
    ax.set_ylim(top, 0.0)
    ax.set_ylabel("Standard error")
    ax.set_xlabel(xlabel if xlabel is not None else ("Hazard ratio" if ratio else "Estimate"))
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    return ax

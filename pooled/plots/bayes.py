"""Posterior and trace plots of the Bayesian models, drawn by ArviZ.

Plots take a result and an optional Axes, compute nothing beyond what ArviZ draws from the
stored ``InferenceData``, and return the Axes; matplotlib is imported inside the functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from pooled.models.bayes import BayesMetaResult, BayesResult


SUMMARY_GID = "posterior_summary"


def posterior_summary(
    result: BayesResult | BayesMetaResult, var_name: str = "mu", *, hazard_ratio: bool = True
) -> tuple[float, float, float]:
    """The posterior median and equal-tailed interval of ``var_name`` as the result's table
    reports them (``mu``: the pooled row, ``tau``: the heterogeneity row), on the HR scale
    when ``hazard_ratio`` (else the log scale for ``mu``)."""
    table = result.to_frame()
    quantity = {"mu": "pooled", "tau": "heterogeneity"}.get(var_name)
    if quantity is None or "quantity" not in table:
        raise KeyError(f"the result's table has no summary of {var_name!r}")
    row = table.loc[table["quantity"] == quantity].iloc[0]
    if var_name == "tau":
        return float(row["estimate"]), float(row["ci_lower"]), float(row["ci_upper"])
    if hazard_ratio:
        return float(row["hr"]), float(row["ci_lower"]), float(row["ci_upper"])
    return float(row["estimate"]), float(np.log(row["ci_lower"])), float(np.log(row["ci_upper"]))


@contextmanager
def _arviz_on_matplotlib_311() -> Iterator[None]:
    """ArviZ 0.23 de-aliases plot keywords by passing a dict to matplotlib's
    ``normalize_kwargs``, which matplotlib 3.11 deprecates (MatplotlibDeprecationWarning,
    once per drawn element); the call is ArviZ's, so that one warning is filtered here."""
    from matplotlib import MatplotlibDeprecationWarning

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Passing a dict or None as alias_mapping to normalize_kwargs",
            category=MatplotlibDeprecationWarning,
        )
        yield


def posterior_plot(
    result: BayesResult | BayesMetaResult,
    ax: Axes | None = None,
    *,
    var_name: str = "mu",
    hazard_ratio: bool = True,
    ref_val: float | None = 1.0,
) -> Axes:
    """Posterior density of one scalar quantity (default: the pooled marker HR), with the
    posterior median and the equal-tailed credible interval the result's table reports.

    The density is ArviZ's; the summary drawn on it (a vertical line at the median, a thick
    bar over the interval, both printed) is read from ``result.to_frame()``, so the figure
    and the table show the same numbers (no HDI, no mean). ``hazard_ratio`` draws ``exp``
    of a log HR; ``ref_val`` marks the share of the posterior on either side of it
    (``P(HR > 1)``).

    Examples
    --------
    >>> ax = posterior_plot(res)  # doctest: +SKIP
    """
    import arviz as az
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
    ratio = hazard_ratio and var_name != "tau"
    with _arviz_on_matplotlib_311():
        az.plot_posterior(
            result.idata,
            var_names=[var_name],
            transform=np.exp if ratio else None,
            hdi_prob="hide",
            point_estimate=None,
            ref_val=ref_val if ratio else None,
            textsize=9,
            ax=ax,
        )
    # ArviZ writes the share of the posterior on either side of ref_val in "semibold", a
    # weight matplotlib's DejaVu Sans does not have (matplotlib then logs "findfont: Failed
    # to find font weight semibold"): ask for the bold it would have used anyway
    for text in ax.texts:
        if text.get_fontweight() in ("semibold", "demibold", "demi", 600):
            text.set_fontweight("bold")
    median, lower, upper = posterior_summary(result, var_name, hazard_ratio=ratio)
    level = getattr(result.spec, "ci_level", 0.95)
    bottom = ax.get_ylim()[0]
    (bar,) = ax.plot([lower, upper], [bottom, bottom], color="#1f4e79", linewidth=5.0,
                     solid_capstyle="butt", zorder=4)  # fmt: skip
    bar.set_gid(SUMMARY_GID)
    ax.axvline(median, color="#1f4e79", linewidth=1.2, zorder=4)
    ax.text(
        0.02,
        0.97,
        f"median {median:.2f}\n{100 * level:g}% equal-tailed\ninterval {lower:.2f}\u2013{upper:.2f}",
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=9,
    )
    label = "hazard ratio" if ratio else var_name
    ax.set_title(f"{var_name}: {label} (posterior median, {100 * level:g}% ETI)", fontsize=10)
    return ax


def trace_plot(
    result: BayesResult | BayesMetaResult,
    axes: Any | None = None,
    *,
    var_names: Sequence[str] = ("mu", "tau"),
) -> Any:
    """Trace and density per chain for ``var_names`` (an ``len(var_names) x 2`` Axes array).

    Examples
    --------
    >>> axes = trace_plot(res, var_names=("mu", "tau", "interaction_log_hr"))  # doctest: +SKIP
    """
    import arviz as az
    import matplotlib.pyplot as plt

    names = [v for v in var_names if v in result.idata["posterior"]]
    if axes is None:
        _, axes = plt.subplots(len(names), 2, figsize=(9, 2.2 * len(names)), squeeze=False)
    with _arviz_on_matplotlib_311():
        return az.plot_trace(result.idata, var_names=names, axes=axes, compact=True)

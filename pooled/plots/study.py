"""Plots of a simulation study: the estimates by method, and coverage with Monte Carlo intervals.

Both take a :class:`~pooled.study.run.StudyResult` and draw what it holds (the replicate
estimates, the performance table and the targets); they compute nothing statistical beyond
placing points.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["METHOD_LABELS", "study_coverage_plot", "study_estimates_plot"]

METHOD_LABELS: dict[str, str] = {
    "cox_stratified": "Cox stratified\n(one stage)",
    "two_stage_reml": "two-stage\nREML",
    "two_stage_reml_knha": "two-stage REML\nHartung-Knapp",
    "mixed_cox": "mixed Cox\n(random slope)",
    "bayes": "Bayesian\n(random effects)",
}
TARGET_GID = "study_target"
_Z = float(stats.norm.ppf(0.975))


def _axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=size)
    return ax


def study_estimates_plot(result: Any, endpoint: str, *, ax: Axes | None = None) -> Axes:
    """Each replicate's estimated log HR by method (points, a box of the quartiles), the
    mean with its 95 % Monte Carlo interval, and the target (dashed line)."""
    ax = _axes(ax, (7.5, 4.2))
    estimates = result.estimates.loc[result.estimates["endpoint"] == endpoint]
    methods = list(dict.fromkeys(estimates["method"]))
    wide = result.wide().set_index(["endpoint", "method"])
    target = result.targets[endpoint].log_hr
    rng = np.random.default_rng(0)  # jitter only
    data = []
    for i, method in enumerate(methods):
        values = estimates.loc[estimates["method"] == method, "estimate"].dropna().to_numpy()
        data.append(values)
        x = i + rng.uniform(-0.18, 0.18, len(values))
        ax.scatter(x, values, s=5, alpha=0.25, color="#4a6f8a", linewidths=0)
        row = wide.loc[(endpoint, method)]
        mean = row["bias"] + target
        ax.errorbar(
            i + 0.32, mean, yerr=_Z * row["bias_mcse"], fmt="D", color="#b03a2e",
            markersize=5, capsize=3, label="mean (95 % MC interval)" if i == 0 else None,
        )  # fmt: skip
    ax.boxplot(
        data, positions=range(len(methods)), widths=0.45, showfliers=False,
        medianprops={"color": "#1f4e79"}, boxprops={"color": "#1f4e79"},
        whiskerprops={"color": "#1f4e79"}, capprops={"color": "#1f4e79"},
    )  # fmt: skip
    ax.axhline(target, color="black", linestyle="--", linewidth=1, gid=TARGET_GID,
               label=f"target log HR {target:.3f} (HR {np.exp(target):.3f})")  # fmt: skip
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([METHOD_LABELS.get(m, m) for m in methods], fontsize=8)
    ax.set_ylabel(f"estimated log HR, {endpoint.upper()}")
    ax.legend(fontsize=8, loc="best", frameon=False)
    ax.set_title(f"{endpoint.upper()}: estimates of {int(estimates['replicate'].nunique())} replicates",
                 fontsize=10)  # fmt: skip
    return ax


def study_coverage_plot(result: Any, *, level: float | None = None, ax: Axes | None = None) -> Axes:
    """Coverage of the intervals by endpoint and method, each with its 95 % Monte Carlo
    interval (estimate +- 1.96 MCSE), the nominal level (dashed) and the band a method with
    exactly nominal coverage stays in 95 % of the time (grey)."""
    ax = _axes(ax, (7.5, 4.2))
    wide = result.wide()
    nominal = result.spec.level if level is None else level
    endpoints = list(dict.fromkeys(wide["endpoint"]))
    methods = list(dict.fromkeys(wide["method"]))
    width = 0.8 / max(len(methods), 1)
    colours = ["#1f4e79", "#b03a2e", "#d68910", "#229954", "#7d3c98"]
    n = float(wide["n_replicates"].max()) if len(wide) else 1.0
    band = _Z * np.sqrt(nominal * (1 - nominal) / max(n, 1.0))
    ax.axhspan(nominal - band, nominal + band, color="#dddddd", alpha=0.6, linewidth=0)
    ax.axhline(nominal, color="black", linestyle="--", linewidth=1)
    for j, method in enumerate(methods):
        part = wide.loc[wide["method"] == method].set_index("endpoint")
        x = [i - 0.4 + width * (j + 0.5) for i, e in enumerate(endpoints) if e in part.index]
        y = [part.loc[e, "coverage"] for e in endpoints if e in part.index]
        err = [_Z * part.loc[e, "coverage_mcse"] for e in endpoints if e in part.index]
        ax.errorbar(x, y, yerr=err, fmt="o", color=colours[j % len(colours)], capsize=3,
                    markersize=4, label=METHOD_LABELS.get(method, method).replace("\n", " "))  # fmt: skip
    ax.set_xticks(range(len(endpoints)))
    ax.set_xticklabels([e.upper() for e in endpoints])
    ax.set_ylabel(f"coverage of the {nominal:.0%} interval")
    low = float(np.nanmin(wide["coverage"] - _Z * wide["coverage_mcse"])) if len(wide) else 0.9
    ax.set_ylim(min(low - 0.01, nominal - 2 * band), 1.0)
    ax.legend(fontsize=7, loc="lower left", frameon=False, ncol=2)
    return ax

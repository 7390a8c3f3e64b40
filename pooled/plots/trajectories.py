"""Trajectory groups of serial CTC counts: fitted group curves and observed means over time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from pooled.models.trajectories import TrajectoryResult, TrajectorySelection

__all__ = ["FITTED_GID", "OBSERVED_GID", "trajectory_plot"]

FITTED_GID = "fitted"
OBSERVED_GID = "observed"
OBSERVED_COLUMNS = ("label", "time", "mean_count")


def _plain_number(value: float, _position: int) -> str:
    return f"{value:g}"


def trajectory_plot(
    result: TrajectoryResult | TrajectorySelection,
    *,
    observed: pd.DataFrame | None = None,
    times: Sequence[float] | None = None,
    ax: Axes | None = None,
    log_scale: bool = True,
    title: str = "",
    xlabel: str = "Months since baseline",
    ylabel: str | None = None,
) -> Axes:
    """Fitted mean count of each trajectory group over time, with observed group means.

    The fitted curves come from ``result.predict_counts`` (the expected count per reference
    blood volume); the observed means are points, coloured by the same group. Group legends
    give the label and the share of patients.

    Parameters
    ----------
    result : TrajectoryResult or TrajectorySelection
        A fitted model (for a selection, the chosen ``best`` fit).
    observed : DataFrame, optional
        Observed mean counts per group and visit time: columns ``label, time, mean_count``
        (optionally ``n``), computed by the runner from the samples and the assignments.
    times : sequence of float, optional
        Grid for the fitted curves; default 100 points over the observed times (0-12 months
        when nothing is observed).
    ax : matplotlib Axes, optional
    log_scale : bool
        Log y axis (counts span orders of magnitude between groups); observed means of 0
        are not shown on it.
    title, xlabel, ylabel : str

    Returns
    -------
    matplotlib Axes

    References
    ----------
    .. [1] Nagin DS. Group-based modeling of development. Harvard University Press; 2005.
    .. [2] Magbanua MJM, Hendrix LH, Hyslop T, et al. Serial analysis of circulating tumor
       cells in metastatic breast cancer receiving first-line chemotherapy. J Natl Cancer
       Inst 2021;113:443-52.

    Examples
    --------
    >>> # ax = trajectory_plot(selection, observed=observed_means)
    """
    import matplotlib.pyplot as plt

    fit: TrajectoryResult = getattr(result, "best", result)  # type: ignore[arg-type]
    if ax is None:
        _fig, ax = plt.subplots(figsize=(7.5, 4.6))
    if observed is not None:
        missing = [c for c in OBSERVED_COLUMNS if c not in observed.columns]
        if missing:
            raise KeyError(
                f"trajectory_plot: observed means need columns {list(OBSERVED_COLUMNS)}; "
                f"missing {missing}."
            )
    if times is None:
        if observed is not None and len(observed):
            low, high = float(observed["time"].min()), float(observed["time"].max())
        else:
            low, high = 0.0, 12.0
        grid = np.linspace(low, high, 100)
    else:
        grid = np.asarray(list(times), dtype=float)
    fitted = fit.predict_counts(grid)
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2"])
    shares = dict(zip(fit.groups["label"], fit.groups["share"], strict=True))
    for i, label in enumerate(fit.labels):
        colour = colours[i % len(colours)]
        curve = fitted[fitted["label"] == label]
        share = shares.get(label, np.nan)
        text = f"{label} ({100 * share:.0f}%)" if np.isfinite(share) else str(label)
        (line,) = ax.plot(
            curve["time"], curve["expected_count"], color=colour, linewidth=2.0, label=text
        )
        line.set_gid(f"{FITTED_GID}:{label}")
        if observed is not None:
            points = observed[observed["label"] == label]
            marks = ax.scatter(
                points["time"], points["mean_count"], color=colour, s=22, zorder=3, alpha=0.85
            )
            marks.set_gid(f"{OBSERVED_GID}:{label}")
    if log_scale:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log", nonpositive="mask")
        ax.yaxis.set_major_formatter(FuncFormatter(_plain_number))
    volume = fit.spec.reference_volume_ml
    ax.set_ylabel(ylabel if ylabel is not None else f"CTC count per {volume:g} ml")
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.legend(title="Trajectory group", frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    if observed is not None:
        ax.text(
            1.01,
            0.02,
            "lines: fitted\npoints: observed means",
            transform=ax.transAxes,
            fontsize=8,
            color="0.35",
            va="bottom",
        )
    return ax

"""The bootstrap by centre beside the model's own interval: one row per bootstrapped estimate.

Each row shows the hazard ratio on the original data (point), the model-based interval (thin
grey line, when the rows carry it) and the bootstrap percentile interval (thick line), on a
log axis. The rows are those of :func:`bootstrap_rows` (from the bootstrap result's tidy
table); the plot computes nothing statistical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["BOOTSTRAP_GID", "MODEL_GID", "bootstrap_interval_plot", "bootstrap_rows"]

BOOTSTRAP_GID = "bootstrap_interval"
MODEL_GID = "model_interval"
_TICKS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


def bootstrap_rows(result: Any, model_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows the plot draws: ``label, hr, ci_lower, ci_upper`` (bootstrap percentile) and,
    from ``model_rows`` (``bootstrap_of, term, ci_lower, ci_upper`` of the source outputs),
    ``model_ci_lower, model_ci_upper``."""
    frame = result.to_frame()
    rows = frame.assign(label=frame["bootstrap_of"].astype(str) + ": " + frame["term"].astype(str))
    rows = rows[["label", "bootstrap_of", "term", "hr", "ci_lower", "ci_upper"]].reset_index(
        drop=True
    )
    if model_rows is not None and len(model_rows):
        model = model_rows.rename(
            columns={"ci_lower": "model_ci_lower", "ci_upper": "model_ci_upper"}
        )
        rows = rows.merge(
            model[["bootstrap_of", "term", "model_ci_lower", "model_ci_upper"]],
            on=["bootstrap_of", "term"],
            how="left",
        )
    else:
        rows["model_ci_lower"] = np.nan
        rows["model_ci_upper"] = np.nan
    return rows


def bootstrap_interval_plot(rows: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Bootstrap percentile intervals (thick) beside the model-based ones (thin grey)."""
    import matplotlib.pyplot as plt

    shown = rows.loc[np.isfinite(rows["hr"].to_numpy(dtype=float))].reset_index(drop=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 0.55 * max(len(shown), 1) + 1.2))
    y = np.arange(len(shown))[::-1]
    for yi, (_, row) in zip(y, shown.iterrows(), strict=True):
        if np.isfinite(row["model_ci_lower"]):
            ax.plot([row["model_ci_lower"], row["model_ci_upper"]], [yi + 0.15] * 2,
                    color="#9aa5b1", linewidth=1.5, gid=MODEL_GID)  # fmt: skip
        ax.plot([row["ci_lower"], row["ci_upper"]], [yi - 0.1] * 2, color="#1f4e79",
                linewidth=3.5, solid_capstyle="butt", gid=BOOTSTRAP_GID)  # fmt: skip
        ax.plot([row["hr"]], [yi], "o", color="black", markersize=4)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    low = float(np.nanmin(shown[["ci_lower", "model_ci_lower", "hr"]].to_numpy(dtype=float)))
    high = float(np.nanmax(shown[["ci_upper", "model_ci_upper", "hr"]].to_numpy(dtype=float)))
    ticks = [t for t in _TICKS if low / 1.15 <= t <= high * 1.15] or [1.0]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_yticks(y)
    ax.set_yticklabels(list(shown["label"]), fontsize=8)
    ax.set_xlabel("hazard ratio (log scale)")
    ax.plot([], [], color="#1f4e79", linewidth=3.5, label="bootstrap by centre (percentile)")
    ax.plot([], [], color="#9aa5b1", linewidth=1.5, label="model-based")
    ax.legend(fontsize=8, frameon=False, loc="best")
    ax.set_ylim(-0.8, len(shown) - 0.2)
    return ax

"""Forest plot of a model's validity across centres: per-centre C and calibration slope.

:func:`validity_forest_plot` draws a :class:`~pooled.models.validity.ValidityResult`: one
panel per measure (Harrell's C from internal-external cross-validation and the calibration
slope; the apparent C of the model fitted in each centre when there is no cross-validation),
a row per centre with its 95 % interval, the pooled estimate as a diamond and the prediction
interval for a new centre as a dotted line. Reference lines: C = 0.5 (no discrimination) and
slope = 1 (calibrated). Everything drawn comes from the result's tidy table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from pooled.models.validity import ValidityResult

__all__ = ["DIAMOND_GID", "PREDICTION_GID", "validity_forest_plot", "validity_rows"]

DIAMOND_GID = "pooled_diamond"
PREDICTION_GID = "prediction_interval"
_TITLES = {
    "apparent_c": ("C (model fitted in the centre)", 0.5),
    "iecv_c": ("C, internal-external cross-validation", 0.5),
    "calibration_slope": ("Calibration slope (IECV)", 1.0),
}


def validity_rows(result: ValidityResult, measure: str) -> pd.DataFrame:
    """The rows a panel draws: the centres, then the pooled row (``row_type``)."""
    frame = result.to_frame()
    return frame.loc[frame["model"] == f"validity_{measure}"].reset_index(drop=True)


def _panel(ax: Axes, rows: pd.DataFrame, title: str, reference: float, labels: bool) -> None:
    study = rows.loc[rows["row_type"] == "study"]
    pooled = rows.loc[rows["row_type"] == "pooled"]
    n = len(study)
    y = np.arange(n, 0, -1, dtype=float) + 1.0
    weights = study["weight_percent"].to_numpy(dtype=float)
    sizes = 20.0 + 180.0 * weights / max(float(np.nanmax(weights)), 1e-9)
    ax.hlines(y, study["ci_lower"], study["ci_upper"], color="black", linewidth=1.0)
    ax.scatter(study["estimate"], y, s=sizes, marker="s", color="#2171b5", zorder=3)
    if len(pooled):
        rec = pooled.iloc[0]
        est, lo, hi = float(rec["estimate"]), float(rec["ci_lower"]), float(rec["ci_upper"])
        ax.fill([lo, est, hi, est], [0.5, 0.8, 0.5, 0.2], color="#cb181d", gid=DIAMOND_GID,
                zorder=3)  # fmt: skip
        pi_lo, pi_hi = float(rec["pi_lower"]), float(rec["pi_upper"])
        if np.isfinite(pi_lo) and np.isfinite(pi_hi):
            ax.hlines(0.5, pi_lo, pi_hi, color="#cb181d", linestyle=":", linewidth=1.3,
                      gid=PREDICTION_GID)  # fmt: skip
    ax.axvline(reference, color="#737373", linewidth=0.8, linestyle="--")
    if labels:  # the panels share the y axis: the first one names the rows
        ax.set_yticks(list(y) + [0.5])
        ax.set_yticklabels(list(study["term"].astype(str)) + ["pooled (PI dotted)"])
    else:
        ax.tick_params(labelleft=False)
    ax.set_ylim(-0.2, n + 1.8)
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)


def validity_forest_plot(
    result: ValidityResult,
    axes: Sequence[Axes] | None = None,
    *,
    measures: Sequence[str] | None = None,
    title: str = "",
) -> list[Axes]:
    """Per-centre C and calibration slope with their pooled estimates and prediction intervals.

    Parameters
    ----------
    result : ValidityResult
    axes : sequence of Axes, optional
        One per measure; a new figure with the panels side by side when omitted.
    measures : sequence of str, optional
        Default: ``iecv_c`` and ``calibration_slope`` with cross-validation, else
        ``apparent_c``.
    title : str
        Figure title.

    Returns
    -------
    list of Axes

    Examples
    --------
    >>> # axes = validity_forest_plot(fit_validity(cohort, spec))
    """
    import matplotlib.pyplot as plt

    if measures is None:
        measures = [m for m in ("iecv_c", "calibration_slope") if m in result.meta]
        measures = measures or ["apparent_c"]
    if axes is None:
        n = len(result.per_centre)
        fig, created = plt.subplots(1, len(measures), figsize=(4.2 * len(measures) + 1.2,
                                                               0.38 * n + 1.8), sharey=True)  # fmt: skip
        axes = list(np.atleast_1d(created))
        if title:
            fig.suptitle(title, fontsize=11)
    out = list(axes)
    for i, (ax, measure) in enumerate(zip(out, measures, strict=True)):
        name, reference = _TITLES.get(measure, (measure, 0.0))
        _panel(ax, validity_rows(result, measure), name, reference, labels=i == 0)
    return out

"""Recovery of a known count-response curve: simulated ``ctc-count`` consortia, fitted.

In the ``ctc-count`` scenario the log hazard ratio of death against a count of 0 is a known
concave, saturating curve of the CTC count per 7.5 ml (:class:`~pooled.simulate.scenarios.CountEffect`),
the same in every centre and subtype, with Weibull baselines per centre and linear effects of
age and line of therapy. The stratified Cox model with a natural spline of log1p(count), age
and line is then correctly specified up to the spline's approximation of the curve, so its
pointwise 95 % intervals should cover the true curve at about 95 % of the counts over many
consortia. :func:`count_curve_replicate` draws one consortium (clean harmonised patients, no
uploads) and returns the fitted curve beside the truth; :func:`count_curve_coverage` repeats
it and summarises.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pooled.simulate.cohort import simulate_patients
from pooled.simulate.scenarios import (
    CountMetastaticModel,
    ScenarioSpec,
    centre_sizes,
    get_scenario,
)

__all__ = ["RECOVERY_GRID", "count_curve_coverage", "count_curve_replicate"]

RECOVERY_GRID: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def count_curve_replicate(
    seed: int,
    *,
    n_patients: int = 2_000,
    grid: Sequence[float] = RECOVERY_GRID,
    df: int = 3,
    knots_at: str = "nonzero",
    knots: Sequence[float] | None = None,
    scenario: ScenarioSpec | None = None,
) -> pd.DataFrame:
    """One simulated ``ctc-count`` consortium and its fitted count-response curve.

    Parameters
    ----------
    seed : int
        Seed of the draw (centre ``i`` uses ``default_rng([seed, i])``).
    n_patients : int
        Patients in total, split over the scenario's centres by their weights.
    grid : sequence of float
        Counts per 7.5 ml at which the curve is compared with the truth (reference 0).
    df, knots_at, knots
        The spline (:class:`~pooled.models.count_response.CountResponseSpec`; ``knots`` fixed
        interior knots as counts per 7.5 ml).
    scenario : ScenarioSpec, optional
        A variant of ``ctc-count`` (e.g. another :class:`CountEffect`); default the scenario.

    Returns
    -------
    DataFrame
        One row per grid count: ``replicate, count, true_log_hr, log_hr, std_error,
        ci_lower, ci_upper`` (log scale), ``covered`` and ``beyond_data``.

    Examples
    --------
    >>> row = count_curve_replicate(1, n_patients=800, grid=(5.0,)).iloc[0]
    >>> bool(row["ci_lower"] < row["log_hr"] < row["ci_upper"])
    True
    """
    from pooled.models.count_response import CountResponseSpec, fit_count_response

    spec = scenario if scenario is not None else get_scenario("ctc-count")
    model = spec.metastatic
    assert isinstance(model, CountMetastaticModel)
    sizes = centre_sizes([c.weight for c in spec.centres], n_patients)
    parts = [
        simulate_patients(
            spec, centre, int(size), np.random.default_rng([seed, i]), missingness=False
        )  # fmt: skip
        for i, (centre, size) in enumerate(zip(spec.centres, sizes, strict=True))
    ]
    data = pd.concat(parts, ignore_index=True)
    data["os_event"] = data["os_event"].astype(float)
    fit = fit_count_response(
        data,
        CountResponseSpec(
            duration="os_months",
            event="os_event",
            covariates=("age", "line_of_therapy"),
            strata=("centre",),
            df=df,
            knots_at=knots_at,  # type: ignore[arg-type]
            knots=None if knots is None else tuple(float(k) for k in knots),
            grid=tuple(float(g) for g in grid),
        ),
    )
    table = fit.grid
    z = 1.959963984540054
    log_hr = table["log_hr"].to_numpy()
    se = table["std_error"].to_numpy()
    truth = model.count_effect.log_hr(table["count"].to_numpy())
    lower, upper = log_hr - z * se, log_hr + z * se
    return pd.DataFrame(
        {
            "replicate": seed,
            "count": table["count"].to_numpy(),
            "true_log_hr": truth,
            "log_hr": log_hr,
            "std_error": se,
            "ci_lower": lower,
            "ci_upper": upper,
            "covered": (lower <= truth) & (truth <= upper),
            "beyond_data": table["beyond_data"].to_numpy(dtype=bool),
        }
    )


def count_curve_coverage(
    seeds: Sequence[int],
    *,
    n_patients: int = 2_000,
    grid: Sequence[float] = RECOVERY_GRID,
    scenario: ScenarioSpec | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Repeat :func:`count_curve_replicate` over ``seeds``; every row, and per count: the
    coverage, the mean estimate and its bias against the truth, the mean SE and the SD of the
    estimates (``count, true_log_hr, coverage, mean_log_hr, bias, mean_se, sd_log_hr``)."""
    rows = pd.concat(
        [
            count_curve_replicate(s, n_patients=n_patients, grid=grid, scenario=scenario)
            for s in seeds
        ],
        ignore_index=True,
    )
    summary = (
        rows.groupby("count")
        .agg(
            true_log_hr=("true_log_hr", "first"),
            coverage=("covered", "mean"),
            mean_log_hr=("log_hr", "mean"),
            mean_se=("std_error", "mean"),
            sd_log_hr=("log_hr", "std"),
        )
        .reset_index()
    )
    summary["bias"] = summary["mean_log_hr"] - summary["true_log_hr"]
    return rows, summary

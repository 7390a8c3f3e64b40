"""Performance measures of a simulation study, each with its Monte Carlo standard error.

:func:`performance_measures` takes the tidy table of replicate estimates (one row per
replicate, endpoint and method: ``estimate``, ``std_error``, ``ci_lower``, ``ci_upper``,
``p_value`` on the log-HR scale) and the target of each endpoint, and returns, per endpoint
and method, the measures of Morris, White and Crowther (2019, Table 6) with their Monte Carlo
SEs, over the ``n`` replicates with an estimate:

=============================  ================================  ============================================
measure                        estimate                          Monte Carlo SE
=============================  ================================  ============================================
``bias``                       mean(b) - target                  sqrt(var(b) / n)
``empirical_se``               sd(b)                             sd(b) / sqrt(2 (n - 1))
``mse``                        mean((b - target)^2)              sqrt(sum(((b - target)^2 - mse)^2) / (n (n - 1)))
``model_se``                   sqrt(mean(se^2))                  sqrt(var(se^2) / (4 n model_se^2))
``relative_error_model_se``    100 (model_se / empirical_se - 1) 100 (model_se / empirical_se) sqrt(var(se^2) / (4 n model_se^4) + 1 / (2 (n - 1)))
``coverage``                   mean(lower <= target <= upper)    sqrt(c (1 - c) / n)
``bias_eliminated_coverage``   mean(lower <= mean(b) <= upper)   sqrt(c (1 - c) / n)
``power``                      mean(interval excludes 0)         sqrt(p (1 - p) / n)
=============================  ================================  ============================================

``var`` and ``sd`` use ``n - 1``. Power is the share of replicates whose interval excludes a
log HR of 0 (the Wald and Hartung-Knapp intervals exclude 0 exactly when their p < 1 - level;
for a credible interval it is the Bayesian analogue). The target's own Monte Carlo SE (of the
large-draw estimand) is carried in ``target_se``: a bias is within its Monte Carlo error when
``|bias| <= 2 sqrt(mcse^2 + target_se^2)``.

References
----------
.. [1] Morris TP, White IR, Crowther MJ. Using simulation studies to evaluate statistical
   methods. Stat Med 2019;38:2074-102.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["MEASURES", "performance_measures", "performance_wide"]

MEASURES: tuple[str, ...] = (
    "bias",
    "empirical_se",
    "mse",
    "model_se",
    "relative_error_model_se",
    "coverage",
    "bias_eliminated_coverage",
    "power",
)
PERFORMANCE_COLUMNS: tuple[str, ...] = (
    "endpoint",
    "method",
    "measure",
    "estimate",
    "mcse",
    "target",
    "target_se",
    "n_replicates",
    "n_failed",
)


def _measures(
    b: np.ndarray, se: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: float
) -> dict[str, tuple[float, float]]:
    n = len(b)
    nan = (math.nan, math.nan)
    if n == 0:
        return dict.fromkeys(MEASURES, nan)
    mean = float(b.mean())
    var_b = float(b.var(ddof=1)) if n > 1 else math.nan
    emp = math.sqrt(var_b) if n > 1 else math.nan
    out: dict[str, tuple[float, float]] = {}
    out["bias"] = (mean - target, math.sqrt(var_b / n) if n > 1 else math.nan)
    out["empirical_se"] = (emp, emp / math.sqrt(2 * (n - 1)) if n > 1 else math.nan)
    sq = (b - target) ** 2
    mse = float(sq.mean())
    out["mse"] = (
        mse,
        math.sqrt(float(((sq - mse) ** 2).sum()) / (n * (n - 1))) if n > 1 else math.nan,
    )
    v = se**2
    finite = np.isfinite(v)
    if finite.sum() > 1:
        vv = v[finite]
        m = len(vv)
        model = math.sqrt(float(vv.mean()))
        var_v = float(vv.var(ddof=1))
        out["model_se"] = (model, math.sqrt(var_v / (4 * m * model**2)))
        ratio = model / emp if emp > 0 else math.nan
        out["relative_error_model_se"] = (
            100 * (ratio - 1),
            100 * ratio * math.sqrt(var_v / (4 * m * model**4) + 1 / (2 * (n - 1))),
        )
    else:
        out["model_se"] = nan
        out["relative_error_model_se"] = nan
    for name, value in (
        ("coverage", target),
        ("bias_eliminated_coverage", mean),
    ):
        covered = (lo <= value) & (value <= hi)
        share = float(covered.mean())
        out[name] = (share, math.sqrt(share * (1 - share) / n))
    rejected = (lo > 0) | (hi < 0)
    power = float(rejected.mean())
    out["power"] = (power, math.sqrt(power * (1 - power) / n))
    return out


def performance_measures(
    estimates: pd.DataFrame,
    targets: Mapping[str, Any],
) -> pd.DataFrame:
    """The performance of each method at each endpoint, with Monte Carlo SEs.

    Parameters
    ----------
    estimates : DataFrame
        ``endpoint, method, estimate, std_error, ci_lower, ci_upper`` (log-HR scale), one row
        per replicate (a missing estimate counts as a failed replicate).
    targets : mapping
        Endpoint -> the target log HR (a number, or an object with ``log_hr`` and ``se``).

    Returns
    -------
    DataFrame
        Tidy: ``endpoint, method, measure, estimate, mcse, target, target_se, n_replicates,
        n_failed``, one row per measure of :data:`MEASURES`, endpoints and methods in the
        order they first appear.

    References
    ----------
    .. [1] Morris TP, White IR, Crowther MJ. Using simulation studies to evaluate statistical
       methods. Stat Med 2019;38:2074-102.

    Examples
    --------
    >>> est = pd.DataFrame({"endpoint": "os", "method": "cox", "estimate": [0.1, 0.3],
    ...                     "std_error": 0.1, "ci_lower": [-0.1, 0.1], "ci_upper": [0.3, 0.5]})
    >>> table = performance_measures(est, {"os": 0.2})
    >>> table.loc[table["measure"] == "coverage", "estimate"].item()
    1.0
    """
    rows: list[dict[str, Any]] = []
    order = estimates[["endpoint", "method"]].drop_duplicates()
    for endpoint, method in order.itertuples(index=False):
        part = estimates.loc[(estimates["endpoint"] == endpoint) & (estimates["method"] == method)]
        ok = part["estimate"].notna().to_numpy()
        target = targets[endpoint]
        value = float(getattr(target, "log_hr", target))
        target_se = float(getattr(target, "se", math.nan))
        b = part["estimate"].to_numpy(dtype=float)[ok]
        se = part["std_error"].to_numpy(dtype=float)[ok]
        lo = part["ci_lower"].to_numpy(dtype=float)[ok]
        hi = part["ci_upper"].to_numpy(dtype=float)[ok]
        for measure, (estimate, mcse) in _measures(b, se, lo, hi, value).items():
            rows.append(
                {
                    "endpoint": endpoint,
                    "method": method,
                    "measure": measure,
                    "estimate": estimate,
                    "mcse": mcse,
                    "target": value,
                    "target_se": target_se,
                    "n_replicates": int(ok.sum()),
                    "n_failed": int((~ok).sum()),
                }
            )
    return pd.DataFrame(rows, columns=list(PERFORMANCE_COLUMNS))


def performance_wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per endpoint and method: ``<measure>`` and ``<measure>_mcse`` side by side,
    the target (log HR and HR), the replicates, and whether the bias lies within twice its
    Monte Carlo error including the target's (``bias_within_mc_error``)."""
    keys = ["endpoint", "method"]
    first = table.drop_duplicates(keys)[keys + ["target", "target_se", "n_replicates", "n_failed"]]
    values = table.pivot(index=keys, columns="measure", values="estimate")
    errors = table.pivot(index=keys, columns="measure", values="mcse")
    out = first.set_index(keys)
    out.insert(1, "target_hr", np.exp(out["target"]))
    for measure in MEASURES:
        out[measure] = values[measure]
        out[f"{measure}_mcse"] = errors[measure]
    combined = np.sqrt(out["bias_mcse"] ** 2 + out["target_se"].fillna(0.0) ** 2)
    out["bias_z"] = out["bias"] / combined
    out["bias_within_mc_error"] = out["bias_z"].abs() <= 2
    return out.reset_index()

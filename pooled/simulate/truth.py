"""True values of a scenario: generating parameters and the limits fitted models converge to.

Hazard ratios are non-collapsible, and the early-disease model has a marker x subtype
interaction on the recurrence hazard and competing other-cause death, so the hazard ratio a
main-effects Cox model estimates for OS, BCSS, DFS or DDFS is not a parameter of the
generating model. :func:`scenario_estimands` reports, for every endpoint of a scenario, the
value that the stratified (by centre) Cox model converges to, computed once from a very large
draw (:func:`compute_estimands`, Breslow partial likelihood, deterministic seed) and cached in
``estimands.json`` next to this module, keyed by a fingerprint of the scenario's parameters. A
scenario whose parameters changed (or another number of centres) is recomputed on the fly.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pooled.simulate.cohort import simulate_patients
from pooled.simulate.scenarios import SUBTYPES, ScenarioSpec, centre_sizes

CACHE_PATH = Path(__file__).with_name("estimands.json")
ESTIMAND_SEED = 20_260_101
DEFAULT_DRAW = 1_000_000
_CHUNK = 100_000


def fingerprint(spec: ScenarioSpec) -> str:
    """sha256 (first 16 hex digits) of the scenario's parameters."""
    return hashlib.sha256(repr(spec).encode("utf-8")).hexdigest()[:16]


def cox_breslow(
    time: np.ndarray,
    event: np.ndarray,
    x: np.ndarray,
    strata: np.ndarray,
    *,
    max_iter: int = 30,
    tol: float = 1e-9,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified Cox model (Breslow ties) by Newton-Raphson, fast for millions of rows.

    Per (stratum, time) group sums are accumulated with ``bincount`` and reversed cumulative
    sums within strata give the risk-set sums, so memory is ``O(n p + g p^2)`` for ``g``
    distinct (stratum, time) pairs.

    Returns
    -------
    beta, se : numpy.ndarray

    References
    ----------
    .. [1] Breslow NE. Covariance analysis of censored survival data. Biometrics 1974;30:89-99.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 1))
    >>> t = rng.exponential(np.exp(-0.5 * x[:, 0]))
    >>> beta, se = cox_breslow(t, np.ones(2000, bool), x, np.zeros(2000, int))
    >>> bool(abs(beta[0] - 0.5) < 0.1)
    True
    """
    x = np.asarray(x, dtype=float)
    n, p = x.shape
    order = np.lexsort((-time, strata))  # by stratum, time descending
    x = x[order]
    t = np.asarray(time, dtype=float)[order]
    d = np.asarray(event, dtype=bool)[order]
    s = np.asarray(strata)[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (t[1:] != t[:-1]) | (s[1:] != s[:-1])
    group = np.cumsum(new_group) - 1
    g = int(group[-1]) + 1
    group_stratum = s[new_group]
    first_of_stratum = np.ones(g, dtype=bool)
    first_of_stratum[1:] = group_stratum[1:] != group_stratum[:-1]
    d_count = np.bincount(group, weights=d, minlength=g)
    xd_sum = x[d].sum(axis=0)
    beta = np.zeros(p)

    start_idx = np.maximum.accumulate(np.where(first_of_stratum, np.arange(g), 0))
    prior = np.maximum(start_idx - 1, 0)
    later_stratum = start_idx > 0

    def cumulate(values: np.ndarray) -> np.ndarray:
        """Cumulative sums over groups, restarting at every stratum (times descending)."""
        total = np.cumsum(values, axis=0)
        mask = later_stratum if total.ndim == 1 else later_stratum[:, None]
        return total - np.where(mask, total[prior], 0.0)

    info = np.eye(p)
    for _ in range(max_iter):
        eta = x @ beta
        eta -= eta.max()
        w = np.exp(eta)
        s0 = cumulate(np.bincount(group, weights=w, minlength=g))
        s1 = cumulate(
            np.stack(
                [np.bincount(group, weights=w * x[:, j], minlength=g) for j in range(p)], axis=1
            )
        )
        s2 = np.empty((g, p, p))
        for j in range(p):
            for k in range(j, p):
                col = cumulate(np.bincount(group, weights=w * x[:, j] * x[:, k], minlength=g))
                s2[:, j, k] = col
                s2[:, k, j] = col
        has = d_count > 0
        mean = s1[has] / s0[has, None]
        grad = xd_sum - (d_count[has, None] * mean).sum(axis=0)
        info = (
            d_count[has, None, None]
            * (s2[has] / s0[has, None, None] - mean[:, :, None] * mean[:, None, :])
        ).sum(axis=0)
        step = np.linalg.solve(info, grad)
        beta = beta + step
        if np.max(np.abs(step)) < tol:
            break
    se = np.sqrt(np.diag(np.linalg.inv(info)))
    return beta, se


def design(
    frame: pd.DataFrame, spec: ScenarioSpec, *, adjusted: bool
) -> tuple[np.ndarray, list[str]]:
    """The Cox design matrix: the marker, then (adjusted) the analysis config's covariates.

    Early disease: age, tumour size (mm), positive nodes, grade (categorical, reference 1),
    subtype (reference luminal A); metastatic: age, subtype, line of therapy
    (as ``configs/analyses/<scenario>.yaml``).
    """
    columns = [frame["marker_positive"].to_numpy(dtype=float)]
    names = ["marker_positive"]
    if adjusted:
        for name in ("age", "tumour_size_mm", "positive_nodes", "line_of_therapy"):
            if name in spec.adjust_for:
                columns.append(frame[name].to_numpy(dtype=float))
                names.append(name)
        if "grade" in spec.adjust_for:
            for level in (2.0, 3.0):
                columns.append((frame["grade"].to_numpy(dtype=float) == level).astype(float))
                names.append(f"grade[{int(level)}]")
        if "subtype" in spec.adjust_for:
            subtype = frame["subtype"].astype(object).to_numpy()
            for subtype_level in SUBTYPES[1:]:
                columns.append((subtype == subtype_level).astype(float))
                names.append(f"subtype[{subtype_level}]")
    return np.column_stack(columns), names


def draw_frame(spec: ScenarioSpec, n_draw: int, seed: int) -> pd.DataFrame:
    """One large draw of the scenario without missing values, as :func:`compute_estimands`
    analyses it: the model's covariates, each endpoint's months and event, and ``stratum``
    (the centre's index); centre ``i`` is drawn from ``default_rng([seed, i])`` in chunks."""
    sizes = centre_sizes([c.weight for c in spec.centres], n_draw)
    parts = []
    for index, (centre, size) in enumerate(zip(spec.centres, sizes, strict=True)):
        rng = np.random.default_rng([seed, index])
        done = 0
        while done < size:
            m = int(min(_CHUNK, size - done))
            chunk = simulate_patients(
                spec, centre, m, rng, first_number=done + 1, missingness=False
            )
            keep = ["marker_positive", "age", "grade", "subtype"]
            keep += [
                c for c in ("tumour_size_mm", "positive_nodes", "line_of_therapy") if c in chunk
            ]
            keep += [f"{e}_{k}" for e in spec.endpoints for k in ("months", "event")]
            part = chunk[keep].copy()
            part["stratum"] = index
            parts.append(part)
            done += m
    return pd.concat(parts, ignore_index=True)


def compute_estimands(
    spec: ScenarioSpec, *, n_draw: int = DEFAULT_DRAW, seed: int = ESTIMAND_SEED
) -> dict[str, Any]:
    """Limits of the stratified Cox models of every endpoint, from one large draw.

    Returns
    -------
    dict
        ``{"n_draw", "seed", "fingerprint", "endpoints": {endpoint: {"adjusted": {...},
        "unadjusted": {...}}}}`` with ``log_hr``, ``hr`` and the Monte Carlo ``se`` of the
        marker coefficient, the events and the covariates of the model.
    """
    frame = draw_frame(spec, n_draw, seed)
    out: dict[str, Any] = {
        "n_draw": int(n_draw),
        "seed": int(seed),
        "fingerprint": fingerprint(spec),
        "endpoints": {},
    }
    strata = frame["stratum"].to_numpy()
    for endpoint in spec.endpoints:
        time = frame[f"{endpoint}_months"].to_numpy(dtype=float)
        event = frame[f"{endpoint}_event"].to_numpy(dtype=bool)
        results: dict[str, Any] = {}
        for adjusted in (True, False):
            x, names = design(frame, spec, adjusted=adjusted)
            beta, se = cox_breslow(time, event, x, strata)
            results["adjusted" if adjusted else "unadjusted"] = {
                "log_hr": float(beta[0]),
                "hr": float(math.exp(beta[0])),
                "se": float(se[0]),
                "covariates": names[1:],
            }
        results["events"] = int(event.sum())
        out["endpoints"][endpoint] = results
    return out


def _read_cache() -> dict[str, Any]:
    if CACHE_PATH.exists():
        return dict(json.loads(CACHE_PATH.read_text(encoding="utf-8")))
    return {}


_MEMORY: dict[str, str] = {}
ON_THE_FLY_DRAW = 400_000


def scenario_estimands(spec: ScenarioSpec) -> dict[str, Any]:
    """The cached large-draw estimands of ``spec`` (computed if the cache does not fit).

    A scenario with other parameters or another number of centres than the cached one is
    computed on the fly from a draw of :data:`ON_THE_FLY_DRAW` patients (kept in memory).
    """
    key = fingerprint(spec)
    if key not in _MEMORY:
        cache = _read_cache().get(spec.name)
        if cache is None or cache.get("fingerprint") != key:
            cache = compute_estimands(spec, n_draw=ON_THE_FLY_DRAW)
        _MEMORY[key] = json.dumps(cache)
    return dict(json.loads(_MEMORY[key]))


def update_cache(
    names: tuple[str, ...] | None = None, *, n_draw: int = DEFAULT_DRAW
) -> dict[str, Any]:
    """Recompute the cached estimands (``python -m pooled.simulate.truth``)."""
    from pooled.simulate.scenarios import SCENARIOS

    cache = _read_cache()
    for name, spec in SCENARIOS.items():
        if spec.setting == "metastatic" and name in ("trajectory", "ctc-clearance"):
            continue
        if names is not None and name not in names:
            continue
        cache[name] = compute_estimands(spec, n_draw=n_draw)
    CACHE_PATH.write_text(json.dumps(cache, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _MEMORY.clear()
    return cache


def generating_parameters(spec: ScenarioSpec) -> dict[str, Any]:
    """The parameters of the generating model, each named by what it is."""
    params: dict[str, Any] = {
        "marker": spec.marker,
        "marker_threshold": spec.marker_threshold,
        "positivity_target": spec.positivity,
        "positivity_log_odds": dict(spec.positivity_log_odds),
        "tau_marker_log_hr": spec.tau,
        "centre_baseline_sd": spec.centre_baseline_sd,
        "loss_to_follow_up_per_year": spec.loss_rate,
        "centres": {
            c.name: {
                "log_baseline_hazard": c.log_baseline,
                "marker_log_hr_deviation": c.log_hr_deviation,
                "accrual": list(c.accrual),
                "cutoff": c.cutoff,
                "profile": c.profile,
            }
            for c in spec.centres
        },
    }
    if spec.early is not None:
        m = spec.early
        params["recurrence_hazard"] = {
            "estimand": "log hazard ratio of marker positivity on the cause-specific hazard of "
            "first recurrence, within subtype (mean over centres; centre c adds b_c)",
            "marker_log_hr_by_subtype": dict(m.marker_log_hr),
            "marker_hr_by_subtype": {k: math.exp(v) for k, v in m.marker_log_hr.items()},
            "weibull_shape": m.recurrence_shape,
            "weibull_scale_per_year": m.recurrence_scale,
            "log_hr_log_size_per_20mm": m.log_hr_size,
            "log_hr_node_positive": m.log_hr_node_positive,
            "log_hr_4plus_nodes": m.log_hr_nodes_4plus,
            "log_hr_grade3": m.log_hr_grade3,
            "log_hr_subtype": dict(m.log_hr_subtype),
            "log_hr_age_per_year": m.log_hr_age_per_year,
        }
        params["distant_first_logit"] = {"intercept": m.distant_logit, "marker": m.distant_marker}
        params["later_distant"] = {
            "probability": m.later_distant,
            "mean_delay_years": m.later_distant_mean_years,
        }
        params["breast_cancer_death_after_distant"] = {
            "median_years_by_subtype": dict(m.bc_death_median_years),
            "weibull_shape": m.bc_death_shape,
            "marker_log_hr": m.bc_death_marker_log_hr,
        }
        params["other_cause_death"] = {
            "gompertz_rate_at_60": m.other_death_rate_at_60,
            "gompertz_slope_per_year": m.other_death_gompertz,
        }
    if spec.metastatic is not None:
        m2 = spec.metastatic
        params["death_hazard"] = {
            "estimand": "log hazard ratio of marker positivity on the hazard of death, the same "
            "in every subtype (no interaction; mean over centres)",
            "marker_log_hr": m2.os_marker_log_hr,
            "marker_hr": math.exp(m2.os_marker_log_hr),
            "weibull_shape": m2.os_shape,
            "median_months_marker_negative_reference": m2.os_median_negative,
        }
        params["progression_hazard"] = {
            "estimand": "log hazard ratio of marker positivity on the cause-specific hazard of "
            "progression (PFS also counts death)",
            "marker_log_hr": m2.progression_marker_log_hr,
            "marker_hr": math.exp(m2.progression_marker_log_hr),
            "weibull_shape": m2.progression_shape,
            "median_months_marker_negative_reference": m2.progression_median_negative,
        }
        effect = getattr(m2, "count_effect", None)
        if effect is not None:  # ctc-count: the count itself, through a smooth curve
            grid = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)
            params["death_hazard"] = {
                "estimand": "log hazard ratio of death against a count of 0, as a function "
                "of the CTC count per 7.5 ml (the same in every centre and subtype): "
                + effect.description,
                "count_log_hr_function": effect.description,
                "count_effect": {
                    "log_hr_max": effect.log_hr_max,
                    "rate": effect.rate,
                    "structural_zero_share": effect.zero_share,
                    "lognormal_log_mean_per_7_5ml": effect.log_mean,
                    "lognormal_log_sd": effect.log_sd,
                },
                "log_hr_vs_0_at_count": {f"{c:g}": float(effect.log_hr(c)) for c in grid},
                "weibull_shape": m2.os_shape,
                "median_months_count_0_reference": m2.os_median_negative,
            }
            params["progression_hazard"] = {
                "estimand": f"{effect.progression_scale:g} x the death curve's log hazard ratio",
                "weibull_shape": m2.progression_shape,
                "median_months_count_0_reference": m2.progression_median_negative,
            }
        params["log_hr_age_per_year"] = m2.log_hr_age_per_year
        params["log_hr_per_line"] = m2.log_hr_line
        params["log_hr_subtype"] = dict(m2.log_hr_subtype)
    return params


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(json.dumps(update_cache(tuple(sys.argv[1:]) or None), indent=2))

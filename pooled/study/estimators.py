"""The estimators a simulation study compares, fitted to one replicate: one row each.

Every estimator estimates the marker's log hazard ratio, adjusted for the scenario's
covariates (as ``configs/analyses/<scenario>.yaml``), from the same replicate:

* ``cox_stratified``: the one-stage Cox model stratified by centre (Efron ties), Wald
  interval (:func:`pooled.models.cox.fit_cox`);
* ``two_stage_reml``: the same Cox model within each centre, pooled by random effects with
  REML, Wald interval (:func:`pooled.models.two_stage.fit_two_stage`);
* ``two_stage_reml_knha``: the same pooled estimate with the Hartung-Knapp interval
  (t with k - 1 df);
* ``mixed_cox``: the mixed-effects Cox model with a random marker slope by centre and
  baselines stratified by centre (coxme's ``strata(centre) + (marker | centre)``), Wald
  interval of the mean slope (:func:`pooled.models.mixed_cox.fit_mixed_cox`);
* ``bayes`` (optional, slow): the one-stage Bayesian piecewise-exponential model with random
  centre marker effects, posterior median and equal-tailed credible interval of their mean
  (:func:`pooled.models.bayes.fit_bayes_survival`).

A fit the replicate cannot support (``DataError``, ``ConvergenceError``, a singular matrix)
is a row with a missing estimate and the reason in ``note``; warnings are kept in ``note``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pooled.errors import ConvergenceError, DataError
from pooled.study.design import StudySpec, analysis_covariates, simulate_replicate

__all__ = ["ESTIMATE_COLUMNS", "fit_estimators", "run_replicate"]

ESTIMATE_COLUMNS: tuple[str, ...] = (
    "replicate",
    "endpoint",
    "method",
    "estimate",
    "std_error",
    "ci_lower",
    "ci_upper",
    "p_value",
    "df",
    "n",
    "events",
    "centres",
    "tau2",
    "note",
)
_NOT_ESTIMABLE = (DataError, ConvergenceError, np.linalg.LinAlgError)


def _row(method: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: np.nan for c in ESTIMATE_COLUMNS[3:-1]}
    row.update(method=method, note="")
    row.update(values)
    return row


def _wald(estimate: float, se: float, level: float) -> dict[str, float]:
    z = float(stats.norm.ppf(0.5 + level / 2))
    return {
        "estimate": estimate,
        "std_error": se,
        "ci_lower": estimate - z * se,
        "ci_upper": estimate + z * se,
        "p_value": float(2 * stats.norm.sf(abs(estimate / se))) if se > 0 else np.nan,
    }


def _notes(caught: list[warnings.WarningMessage]) -> str:
    messages = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    text = "; ".join(messages[:2])
    return text[:300]


def fit_estimators(data: pd.DataFrame, spec: StudySpec, endpoint: str) -> list[dict[str, Any]]:
    """Every estimator of ``spec.methods`` on one replicate's patients, for ``endpoint``.

    Returns one dict per method with the columns of :data:`ESTIMATE_COLUMNS` (less
    ``replicate`` and ``endpoint``); estimates and intervals on the log-HR scale.
    """
    from pooled.models.cox import CoxSpec

    setting = spec.scenario_spec.setting
    covariates, categorical = analysis_covariates(setting)
    cox = CoxSpec(
        duration=f"{endpoint}_months",
        event=f"{endpoint}_event",
        covariates=(spec.marker, *covariates),
        categorical=categorical,
        strata=("centre",),
        ties="efron",
        term_lr_tests=False,
        concordance=False,
        endpoint=endpoint,
    )
    rows: list[dict[str, Any]] = []
    methods = spec.methods
    if "cox_stratified" in methods:
        rows.append(_guarded("cox_stratified", lambda: _cox(data, cox, spec)))
    if "two_stage_reml" in methods or "two_stage_reml_knha" in methods:
        rows.extend(_two_stage(data, cox, spec))
    if "mixed_cox" in methods:
        rows.append(_guarded("mixed_cox", lambda: _mixed_cox(data, cox, spec)))
    if "bayes" in methods:
        rows.append(_guarded("bayes", lambda: _bayes(data, cox, spec, endpoint)))
    return rows


def _guarded(method: str, fit: Any) -> dict[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            row = fit()
        except _NOT_ESTIMABLE as exc:
            return _row(method, note=f"not estimable: {type(exc).__name__}: {exc}"[:300])
    row.setdefault("note", _notes(caught))
    return row


def _cox(data: pd.DataFrame, cox: Any, spec: StudySpec) -> dict[str, Any]:
    from pooled.models.cox import fit_cox

    fit = fit_cox(data, cox)
    j = fit.term_names.index(spec.marker)
    return _row(
        "cox_stratified",
        **_wald(float(fit.coefficients[j]), float(fit.std_errors[j]), spec.level),
        n=fit.n,
        events=fit.events,
        centres=len(set(data["centre"])),
    )


def _two_stage(data: pd.DataFrame, cox: Any, spec: StudySpec) -> list[dict[str, Any]]:
    from pooled.models.meta import MetaSpec, fit_meta
    from pooled.models.two_stage import TwoStageSpec, fit_two_stage

    wanted = [m for m in ("two_stage_reml", "two_stage_reml_knha") if m in spec.methods]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fit_two_stage(
                data,
                TwoStageSpec(
                    cox=replace(cox, strata=()),
                    marker=spec.marker,
                    meta=MetaSpec(method="REML", level=spec.level),
                ),
            )
        except _NOT_ESTIMABLE as exc:
            note = f"not estimable: {type(exc).__name__}: {exc}"[:300]
            return [_row(m, note=note) for m in wanted]
    note = _notes(caught)
    table = result.per_centre.loc[result.per_centre["included"].astype(bool)]
    n, events, k = int(table["n"].sum()), int(table["events"].sum()), len(table)
    rows = []
    for method in wanted:
        meta = result.meta
        if method == "two_stage_reml_knha":
            meta = fit_meta(
                table["log_hr"].to_numpy(),
                table["se"].to_numpy() ** 2,
                MetaSpec(method="REML", knha=True, level=spec.level),
                labels=list(table["centre"]),
            )
        rows.append(
            _row(
                method,
                estimate=meta.estimate,
                std_error=meta.se,
                ci_lower=meta.ci_lower,
                ci_upper=meta.ci_upper,
                p_value=meta.p_value,
                df=np.nan if meta.df is None else float(meta.df),
                n=n,
                events=events,
                centres=k,
                tau2=meta.tau2,
                note=note,
            )
        )
    return rows


def _mixed_cox(data: pd.DataFrame, cox: Any, spec: StudySpec) -> dict[str, Any]:
    from pooled.models.mixed_cox import MixedCoxSpec, fit_mixed_cox

    fit = fit_mixed_cox(
        data,
        MixedCoxSpec(
            duration=cox.duration,
            event=cox.event,
            covariates=cox.covariates,
            categorical=cox.categorical,
            random=("marker",),
            marker=spec.marker,
            centre="centre",
            strata=True,
            ties=cox.ties,
            level=spec.level,
        ),
    )
    j = fit.term_names.index(spec.marker)
    row = _row(
        "mixed_cox",
        **_wald(float(fit.coefficients[j]), float(math.sqrt(fit.covariance[j, j])), spec.level),
        n=fit.n,
        events=fit.events,
        centres=len(fit.centres),
        tau2=fit.tau2,
    )
    if not fit.converged:
        row["note"] = "the variance estimation did not converge"
    return row


_COMPILED: dict[Any, Any] = {}


def _bayes(data: pd.DataFrame, cox: Any, spec: StudySpec, endpoint: str) -> dict[str, Any]:
    from pooled.models.bayes import (
        BayesSpec,
        SamplerSpec,
        build_piecewise_model,
        compile_model,
        fit_bayes_survival,
    )

    covariates = tuple(c for c in cox.covariates if c not in (spec.marker, "subtype"))
    bayes = BayesSpec(
        duration=cox.duration,
        event=cox.event,
        marker=spec.marker,
        centre="centre",
        subtype="subtype",
        covariates=covariates,
        categorical_reference=tuple(p for p in cox.categorical if p[0] != "subtype"),
        interaction=False,
        centre_effects="random",
        n_intervals=8,
        sampling=SamplerSpec(draws=spec.bayes_draws, tune=spec.bayes_draws, chains=2, cores=1),
        thresholds=(),
        ci_level=spec.level,
        endpoint=endpoint,
    )
    complete = data.dropna(subset=[*cox.covariates, cox.duration, cox.event])
    key = (bayes, tuple(sorted(set(complete["centre"]))))
    if key not in _COMPILED:
        _COMPILED[key] = compile_model(build_piecewise_model(complete, bayes))
    seed = int(np.random.SeedSequence(spec.seed, spawn_key=(7, len(complete))).generate_state(1)[0])
    res = fit_bayes_survival(complete, bayes, seed=seed, compiled=_COMPILED[key])
    row = res.row("pooled")
    return _row(
        "bayes",
        estimate=float(row["estimate"]),
        std_error=float(row["std_error"]),
        ci_lower=float(np.log(row["ci_lower"])),
        ci_upper=float(np.log(row["ci_upper"])),
        n=res.n,
        events=res.events,
        centres=len(set(complete["centre"])),
        note="; ".join(res.problems)[:300],
    )


def run_replicate(spec: StudySpec, index: int) -> pd.DataFrame:
    """A study task: simulate replicate ``index`` and fit every estimator to every endpoint.

    Returns
    -------
    DataFrame
        The columns of :data:`ESTIMATE_COLUMNS`, one row per endpoint and method (endpoints,
        then methods, in the spec's order); the same numbers wherever it runs.
    """
    data = simulate_replicate(spec, index)
    rows = []
    for endpoint in spec.endpoints_used:
        for row in fit_estimators(data, spec, endpoint):
            rows.append({"replicate": index + 1, "endpoint": endpoint, **row})
    frame = pd.DataFrame(rows, columns=list(ESTIMATE_COLUMNS))
    for column in ESTIMATE_COLUMNS[3:-1]:
        frame[column] = frame[column].astype(float)
    frame["replicate"] = frame["replicate"].astype(np.int64)
    frame["note"] = frame["note"].astype(str)
    return frame


def timed_replicate(spec: StudySpec, index: int) -> tuple[pd.DataFrame, float]:
    """:func:`run_replicate` and its seconds (for benchmarks)."""
    start = time.perf_counter()
    return run_replicate(spec, index), time.perf_counter() - start

"""Multiple imputation with each imputation a task: the Cox model of
``CoxSpec(missing="mice")`` on the engine.

:func:`fit_cox_mice_tasks` gives exactly the result of
:func:`pooled.models.cox.fit_cox_mice` (the same completed data sets, fits and Rubin's
rules, to the last bit), with the ``m`` imputations and their Cox fits run as independent
tasks (:func:`pooled.distributed.engine.run_tasks`): imputation ``k`` draws from the ``k``-th
child of ``SeedSequence(spec.seed)``, as ``fit_cox_mice`` does, wherever it runs.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from pooled.distributed.engine import ExecutionSpec, Task, run_tasks, task_seed
from pooled.errors import ConfigError, ConvergenceWarning, FewClustersWarning

__all__ = ["fit_cox_mice_tasks", "fit_imputation", "imputation_tasks", "pool_imputations"]


def _kept(data: pd.DataFrame, spec: Any) -> tuple[pd.DataFrame, Any]:
    """The rows with outcome, strata and cluster (covariates may be missing) and the design
    that dropped the others (its ``dropped`` counts them per centre)."""
    from pooled.models.design import build_design

    if spec.missing != "mice":
        raise ConfigError("multiple imputation expected CoxSpec(missing='mice').")
    base = build_design(
        data,
        (),
        required=spec.required_columns,
        centre="centre" if "centre" in data.columns else None,
    )
    absent = [c for c in spec.covariates if c not in data.columns]
    if absent:
        raise ConfigError(f"Covariates {absent} expected in the data; check the spec.")
    return data.iloc[base.rows].reset_index(drop=True), base


def fit_imputation(
    kept: pd.DataFrame, spec: Any, index: int, *, n_cycles: int = 10
) -> dict[str, Any]:
    """Imputation ``index`` (0-based) of ``kept`` and the Cox fit on it (a task).

    Returns the coefficients, covariance (and robust covariance) and the design's term
    names, sources and levels.
    """
    from pooled.models.cox import fit_cox_design
    from pooled.models.design import build_spec_design
    from pooled.models.imputation import impute_chained

    fit_spec = replace(spec, missing="complete_case", term_lr_tests=False)
    rng = np.random.default_rng(task_seed(spec.seed, index))
    completed = impute_chained(kept, spec, n_cycles=n_cycles, rng=rng)
    design = build_spec_design(completed, fit_spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FewClustersWarning)  # said once, when pooling
        fit, _ = fit_cox_design(design, completed, fit_spec)
    return {
        "index": index,
        "coefficients": fit.coefficients,
        "covariance": fit.covariance,
        "robust_covariance": fit.robust_covariance,
        "term_names": design.term_names,
        "term_sources": design.term_sources,
        "levels": design.levels,
    }


def imputation_tasks(kept: pd.DataFrame, spec: Any, *, prefix: str = "imputation") -> list[Task]:
    """One task per imputation; each receives ``kept`` as the shared input ``kept``."""
    return [
        Task(f"{prefix}-{k + 1:03d}", _imputation_task, (spec, k))
        for k in range(spec.n_imputations)
    ]


def _imputation_task(spec: Any, index: int, *, kept: pd.DataFrame) -> dict[str, Any]:
    return fit_imputation(kept, spec, index)


def pool_imputations(kept: pd.DataFrame, base: Any, spec: Any, fits: list[dict[str, Any]]) -> Any:
    """Rubin's rules over the imputations' fits (in imputation order): the ``CoxResult`` of
    :func:`pooled.models.cox.fit_cox_mice`."""
    from pooled.models.cox import CoxResult, generalised_wald
    from pooled.models.imputation import rubin_pool

    fits = sorted(fits, key=lambda f: f["index"])
    rows = []
    for fit in fits:
        names = fit["term_names"]
        for j, term in enumerate(names):
            rows.append(
                {
                    "imputation": fit["index"] + 1,
                    "term": term,
                    "estimate": fit["coefficients"][j],
                    "std_error": float(np.sqrt(fit["covariance"][j, j])),
                }
            )
    last = fits[-1]
    est = np.array([f["coefficients"] for f in fits])
    events = int(kept[spec.event].sum())
    df_complete = float(max(events - est.shape[1], 1))
    q, total, df = rubin_pool(est, np.array([f["covariance"] for f in fits]), df_complete)
    robust = [f["robust_covariance"] for f in fits if f["robust_covariance"] is not None]
    robust_total = None
    if robust:
        _, robust_total, df = rubin_pool(est, np.array(robust), df_complete)
    vcov = robust_total if robust_total is not None else total
    wald, wald_df = generalised_wald(q, vcov)
    n_clusters = int(kept[spec.cluster].nunique()) if spec.cluster else None
    if n_clusters is not None and n_clusters <= len(q):
        warnings.warn(
            f"The cluster-robust covariance of each imputation rests on {n_clusters} clusters "
            f"for {len(q)} coefficients (rank at most {n_clusters - 1}); the pooled robust "
            f"Wald test uses a generalised inverse on {wald_df} df. Use more clusters than "
            "coefficients, fewer coefficients, or the model-based covariance (no cluster).",
            FewClustersWarning,
            stacklevel=2,
        )
    return CoxResult(
        spec=spec,
        term_names=last["term_names"],
        term_sources=last["term_sources"],
        coefficients=q,
        covariance=total,
        robust_covariance=robust_total,
        loglik=float("nan"),
        loglik_null=float("nan"),
        score_test=float("nan"),
        wald_test=wald,
        wald_df=wald_df,
        n_clusters=n_clusters,
        iterations=0,
        converged=True,
        n=len(kept),
        events=events,
        dropped=base.dropped,
        levels=last["levels"],
        lr_p_values=None,
        n_imputations=spec.n_imputations,
        df=df,
        per_imputation=pd.DataFrame(rows),
    )


def fit_cox_mice_tasks(
    data: pd.DataFrame, spec: Any, *, execution: ExecutionSpec | None = None
) -> Any:
    """The Cox model with multiply imputed covariates, each imputation a task.

    Parameters
    ----------
    data : DataFrame
        One row per patient (covariates may be missing).
    spec : CoxSpec
        With ``missing="mice"``; ``n_imputations`` tasks, seeded from ``spec.seed``.
    execution : ExecutionSpec, optional
        Where the imputations run (default: in this process, or the enclosing engine).

    Returns
    -------
    CoxResult
        Equal to ``fit_cox(data, spec)`` (:func:`pooled.models.cox.fit_cox_mice`).

    References
    ----------
    .. [1] White IR, Royston P. Imputing missing covariate values for the Cox model.
       Stat Med 2009;28:1982-98.
    .. [2] Rubin DB. Multiple Imputation for Nonresponse in Surveys. Wiley; 1987.

    Examples
    --------
    >>> # fit_cox_mice_tasks(cohort, CoxSpec(..., missing="mice"), execution=ExecutionSpec(workers=2))
    """
    kept, base = _kept(data, spec)
    run = run_tasks(imputation_tasks(kept, spec), execution=execution, shared={"kept": kept})
    return pool_imputations(kept, base, spec, run.values())

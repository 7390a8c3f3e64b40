"""Multiple imputation with each imputation a task: the Cox model of
``CoxSpec(missing="mice")`` on the engine.

:func:`fit_cox_mice_tasks` gives exactly the result of
:func:`pooled.models.cox.fit_cox_mice` (the same completed data sets, fits and Rubin's
rules, to the last bit), with the ``m`` imputations and their Cox fits run as independent
tasks (:func:`pooled.distributed.engine.run_tasks`): imputation ``k`` draws from the ``k``-th
child of ``SeedSequence(spec.seed)``, as ``fit_cox_mice`` does, wherever it runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pooled.distributed.engine import ExecutionSpec, Task, run_tasks, task_seed
from pooled.errors import ConfigError

__all__ = ["fit_cox_mice_tasks", "fit_imputation", "imputation_tasks", "pool_imputations"]


def _kept(data: pd.DataFrame, spec: Any) -> tuple[pd.DataFrame, Any]:
    """The rows with outcome, strata and cluster, and the design that dropped the others."""
    from pooled.models.cox import mice_rows

    if spec.missing != "mice":
        raise ConfigError("multiple imputation expected CoxSpec(missing='mice').")
    return mice_rows(data, spec)


def fit_imputation(
    kept: pd.DataFrame, spec: Any, index: int, *, n_cycles: int = 10
) -> dict[str, Any]:
    """Imputation ``index`` (0-based) of ``kept`` and the Cox fit on it (a task), drawn from
    the ``index``-th child of ``SeedSequence(spec.seed)`` as
    :func:`pooled.models.cox.fit_cox_mice` draws it
    (:func:`pooled.models.cox.cox_imputation_fit`)."""
    from pooled.models.cox import cox_imputation_fit

    rng = np.random.default_rng(task_seed(spec.seed, index))
    return cox_imputation_fit(kept, spec, index, rng, n_cycles=n_cycles)


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
    :func:`pooled.models.cox.fit_cox_mice` (:func:`pooled.models.cox.pool_cox_imputations`)."""
    from pooled.models.cox import pool_cox_imputations

    return pool_cox_imputations(kept, base, spec, fits)


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

"""Multiple imputation by chained equations for missing covariates of a Cox model.

Each incomplete covariate is imputed from all the other covariates, the strata (as dummies),
the event indicator and the Nelson-Aalen cumulative hazard at the patient's time (White and
Royston 2009), with proper draws of the imputation-model parameters: Bayesian normal linear
regression for continuous covariates, logistic regression for 0/1 covariates, multinomial
logistic regression for categorical ones. Rubin's rules pool the fits (Barnard-Rubin degrees
of freedom).

This module knows nothing of the Cox model: :func:`pooled.models.cox.fit_cox` with
``CoxSpec(missing="mice")`` (:func:`pooled.models.cox.fit_cox_mice`) draws the completed data
sets here, fits each and pools them with :func:`rubin_pool`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd
from scipy import special

from pooled.errors import DataError

__all__ = ["ImputationSpec", "impute_chained", "nelson_aalen_at_times", "rubin_pool"]


class ImputationSpec(Protocol):
    """What :func:`impute_chained` reads from a model spec (e.g. ``CoxSpec``)."""

    @property
    def duration(self) -> str: ...

    @property
    def event(self) -> str: ...

    @property
    def covariates(self) -> tuple[str, ...]: ...

    @property
    def categorical(self) -> tuple[tuple[str, str], ...]: ...

    @property
    def strata(self) -> tuple[str, ...]: ...


def nelson_aalen_at_times(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Nelson-Aalen cumulative hazard H(t_i) at each patient's own time (ties included).

    Examples
    --------
    >>> nelson_aalen_at_times(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1, 1, 0, 1]))
    array([0.25      , 0.58333333, 0.58333333, 1.58333333])
    """
    unique, inverse = np.unique(time, return_inverse=True)
    deaths = np.bincount(inverse, weights=np.asarray(event, dtype=float), minlength=unique.size)
    at_risk = np.bincount(inverse, minlength=unique.size)[::-1].cumsum()[::-1]
    return np.cumsum(deaths / at_risk)[inverse]


def _dummies(values: pd.Series, levels: list[str]) -> np.ndarray:
    text = values.astype(str).to_numpy()
    return (
        np.column_stack([(text == lv).astype(float) for lv in levels[1:]])
        if len(levels) > 1
        else np.empty((len(values), 0))
    )


# The imputation models are solved in the units of the covariates, so every tolerance and
# ridge is relative: a ridge proportional to each column's mean square, and Newton-Raphson
# stopping on the Newton decrement relative to the log-likelihood. Rescaling a covariate
# (age in days instead of years) rescales its coefficient and changes nothing else.
_NEWTON_RTOL = 1e-12
_RIDGE_LOGISTIC = 1e-4
_RIDGE_LINEAR = 1e-8


def _column_scale(X: np.ndarray, repeat: int = 1) -> np.ndarray:
    """Mean square of each column (1 for an all-zero column), tiled ``repeat`` times."""
    ms = np.mean(X * X, axis=0)
    return np.tile(np.where(ms > 0, ms, 1.0), repeat)


def _newton_done(step: np.ndarray, grad: np.ndarray, loglik: float) -> bool:
    """Newton decrement ``g' H^-1 g`` (twice the predicted gain) small relative to loglik."""
    return float(step @ grad) <= _NEWTON_RTOL * (abs(loglik) + 0.1)


def _draw_linear(
    X: np.ndarray, y: np.ndarray, X_new: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    n, k = X.shape
    xtx = X.T @ X + np.diag(_RIDGE_LINEAR * n * _column_scale(X))
    chol_inv = np.linalg.cholesky(np.linalg.inv(xtx))
    beta = np.linalg.solve(xtx, X.T @ y)
    resid = y - X @ beta
    sigma2 = float(resid @ resid) / rng.chisquare(max(n - k, 1))
    beta_star = beta + np.sqrt(sigma2) * chol_inv @ rng.standard_normal(k)
    return X_new @ beta_star + np.sqrt(sigma2) * rng.standard_normal(X_new.shape[0])


def _fit_logistic(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = X.shape[1]
    beta = np.zeros(k)
    ridge = np.diag(_RIDGE_LOGISTIC * _column_scale(X))
    for _ in range(50):
        eta = X @ beta
        p = special.expit(eta)
        w = p * (1 - p)
        info = (X.T * w) @ X + ridge
        grad = X.T @ (y - p) - ridge @ beta
        step = np.linalg.solve(info, grad)
        loglik = float(np.sum(y * eta - np.logaddexp(0.0, eta)) - 0.5 * beta @ ridge @ beta)
        beta += step
        if _newton_done(step, grad, loglik):
            break
    p = special.expit(X @ beta)
    info = (X.T * (p * (1 - p))) @ X + ridge
    return beta, np.linalg.inv(info)


def _draw_binary(
    X: np.ndarray, y: np.ndarray, X_new: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    beta, cov = _fit_logistic(X, y)
    beta_star = rng.multivariate_normal(beta, (cov + cov.T) / 2)
    return (rng.uniform(size=X_new.shape[0]) < special.expit(X_new @ beta_star)).astype(float)


def _fit_multinomial(
    X: np.ndarray, codes: np.ndarray, n_levels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression (first level as reference) by Newton-Raphson.

    Returns the k x (L-1) coefficients and the covariance of their equation-major flattening.
    """
    n, k = X.shape
    j = n_levels - 1
    Y = np.eye(n_levels)[codes][:, 1:]
    B = np.zeros((k, j))
    ridge = np.diag(_RIDGE_LOGISTIC * _column_scale(X, repeat=j))
    hess = ridge
    for _ in range(50):
        logits = np.column_stack([np.zeros(n), X @ B])
        flat = B.T.reshape(-1)
        loglik = float(
            np.sum(logits[np.arange(n), codes] - special.logsumexp(logits, axis=1))
            - 0.5 * flat @ ridge @ flat
        )
        P = special.softmax(logits, axis=1)[:, 1:]
        grad = (X.T @ (Y - P)).T.reshape(-1) - ridge @ flat
        hess = np.empty((k * j, k * j))
        for a in range(j):
            for b in range(a, j):
                w = P[:, a] * ((a == b) - P[:, b])
                block = (X.T * w) @ X
                hess[a * k : (a + 1) * k, b * k : (b + 1) * k] = block
                hess[b * k : (b + 1) * k, a * k : (a + 1) * k] = block.T
        hess += ridge
        step = np.linalg.solve(hess, grad)
        B += step.reshape(j, k).T
        if _newton_done(step, grad, loglik):
            break
    return B, np.linalg.inv(hess)


def _draw_categorical(
    X: np.ndarray, codes: np.ndarray, n_levels: int, X_new: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Draw levels from a multinomial logistic model with drawn coefficients."""
    B, cov = _fit_multinomial(X, codes, n_levels)
    flat = rng.multivariate_normal(B.T.reshape(-1), (cov + cov.T) / 2)
    draw = flat.reshape(B.shape[::-1]).T
    logits = np.column_stack([np.zeros(X_new.shape[0]), X_new @ draw])
    cum = special.softmax(logits, axis=1).cumsum(axis=1)
    u = rng.uniform(size=(X_new.shape[0], 1))
    return np.minimum((u > cum).sum(axis=1), n_levels - 1)


def impute_chained(
    data: pd.DataFrame,
    spec: ImputationSpec,
    *,
    n_cycles: int = 10,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One completed copy of ``data`` (rows with complete outcome/strata), by chained equations.

    References
    ----------
    .. [1] van Buuren S, Groothuis-Oudshoorn K. mice: multivariate imputation by chained
       equations in R. J Stat Softw 2011;45(3):1-67.
    .. [2] White IR, Royston P. Imputing missing covariate values for the Cox model.
       Stat Med 2009;28:1982-98.

    Examples
    --------
    >>> # completed = impute_chained(cohort, spec, rng=np.random.default_rng(1))
    """
    df = data.copy()
    categorical = dict(spec.categorical)
    time = df[spec.duration].to_numpy(dtype=float)
    event = df[spec.event].to_numpy(dtype=float)
    outcome = np.column_stack([event, nelson_aalen_at_times(time, event)])
    if spec.strata:
        stratum = df.groupby(list(spec.strata), sort=True).ngroup().to_numpy()
        strata_dummies = np.eye(stratum.max() + 1)[stratum][:, 1:]
    else:
        strata_dummies = np.empty((len(df), 0))
    levels: dict[str, list[str]] = {}
    for column, ref in categorical.items():
        observed = df[column].dropna()
        if isinstance(observed.dtype, pd.CategoricalDtype):
            present = set(observed.astype(str))
            lv = [str(c) for c in observed.cat.categories if str(c) in present]
        else:
            lv = sorted(observed.astype(str).unique())
        levels[column] = [str(ref)] + [v for v in lv if v != str(ref)]
        df[column] = df[column].astype(object).where(df[column].notna(), None)
        df[column] = df[column].map(lambda v: None if v is None else str(v))
    missing = {c: df[c].isna().to_numpy() for c in spec.covariates if df[c].isna().any()}
    for column, mask in missing.items():
        pool = df.loc[~mask, column].to_numpy()
        if pool.size == 0:
            raise DataError(f"Covariate '{column}' is missing for every patient; cannot impute.")
        df.loc[mask, column] = rng.choice(pool, size=int(mask.sum()))
    kinds = {}
    for column in missing:
        if column in categorical:
            kinds[column] = "categorical"
        else:
            values = df.loc[~missing[column], column].astype(float)
            kinds[column] = "binary" if set(np.unique(values)) <= {0.0, 1.0} else "linear"

    def predictors(exclude: str) -> np.ndarray:
        parts = [np.ones((len(df), 1)), outcome, strata_dummies]
        for c in spec.covariates:
            if c == exclude:
                continue
            if c in categorical:
                parts.append(_dummies(df[c], levels[c]))
            else:
                parts.append(df[c].to_numpy(dtype=float).reshape(-1, 1))
        return np.hstack(parts)

    for _ in range(n_cycles if missing else 0):
        for column, mask in missing.items():
            X = predictors(column)
            X_obs, X_mis = X[~mask], X[mask]
            if kinds[column] == "categorical":
                lv = levels[column]
                codes = pd.Categorical(df.loc[~mask, column], categories=lv).codes
                drawn = _draw_categorical(X_obs, codes, len(lv), X_mis, rng)
                df.loc[mask, column] = np.asarray(lv, dtype=object)[drawn]
            else:
                y = df.loc[~mask, column].to_numpy(dtype=float)
                draw = _draw_binary if kinds[column] == "binary" else _draw_linear
                df.loc[mask, column] = draw(X_obs, y, X_mis, rng)
    for column in categorical:
        original = data[column]
        if isinstance(original.dtype, pd.CategoricalDtype):
            df[column] = pd.Categorical(df[column], categories=levels[column])
    for column in spec.covariates:
        if column not in categorical:
            df[column] = df[column].astype(float)
    return df


def rubin_pool(
    estimates: np.ndarray, covariances: np.ndarray, df_complete: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rubin's rules: pooled estimate, total covariance and Barnard-Rubin df per term.

    Parameters
    ----------
    estimates : ndarray, shape (m, p)
    covariances : ndarray, shape (m, p, p)
    df_complete : float
        Degrees of freedom with complete data (``inf`` for the large-sample rule).

    References
    ----------
    .. [1] Rubin DB. Multiple Imputation for Nonresponse in Surveys. Wiley; 1987.
    .. [2] Barnard J, Rubin DB. Small-sample degrees of freedom with multiple imputation.
       Biometrika 1999;86:948-55.

    Examples
    --------
    >>> est = np.array([[1.0], [1.2], [0.8]])
    >>> cov = np.full((3, 1, 1), 0.04)
    >>> q, t, df = rubin_pool(est, cov, np.inf)
    >>> float(q[0]), round(float(t[0, 0]), 4)
    (1.0, 0.0933)
    """
    m = estimates.shape[0]
    q = estimates.mean(axis=0)
    within = covariances.mean(axis=0)
    dev = estimates - q
    between = dev.T @ dev / (m - 1)
    total = within + (1 + 1 / m) * between
    lam = np.clip((1 + 1 / m) * np.diag(between) / np.diag(total), 1e-12, 1.0)
    df_old = (m - 1) / lam**2
    if np.isfinite(df_complete):
        df_obs = (df_complete + 1) / (df_complete + 3) * df_complete * (1 - lam)
        df = 1.0 / (1.0 / df_old + 1.0 / np.maximum(df_obs, 1e-12))
    else:
        df = df_old
    return q, total, df

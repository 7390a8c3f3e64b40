"""One-stage random-effects (mixed) Cox models for pooled IPD, as R's ``coxme``.

Three models of centre heterogeneity, each a Cox model with Gaussian random effects by
centre, fitted by maximising the Laplace approximation of the integrated partial likelihood
(Ripatti and Palmgren 2000; Therneau et al. 2003; coxme 2.2):

* ``random=("intercept",), strata=False`` -- a random intercept (log-normal frailty) on the
  baseline hazard: coxme ``(1 | centre)``;
* ``random=("marker",), strata=True`` -- a random marker slope with baseline hazards
  stratified by centre: coxme ``strata(centre) + (ctc_positive | centre)`` (coxme adds no
  implicit intercept; ``strata=False`` gives the slope alone on a common baseline);
* ``random=("intercept", "marker"), strata=False`` -- correlated random intercept and slope:
  coxme ``(1 + ctc_positive | centre)``.

For given variances the penalised partial likelihood ``l(beta, b) - b' Sigma^-1 b / 2`` is
maximised by Newton-Raphson over (beta, b) (Efron or Breslow ties), and the variances
maximise ``Integrated = PPL - [log det Sigma_b + log det H_bb] / 2`` (``H_bb`` the
random-effects block of the penalised information; no other constant, as coxme). The
optimiser is our own: after the Cox fit without random effects, every step makes one pass
over the risk sets (score and information of (beta, b), and the gradient of the
log-determinant term), maximises a local model of the Laplace log-likelihood over the
variance parameters in closed form, and takes the Newton step in (beta, b) at the new
variances; its fixed point is the exact maximum (exact gradient, no finite differences).
The rows are sorted once by stratum and time; with baselines stratified by centre each
centre's random slope touches only its own stratum, so a pass costs what a stratified Cox
pass costs.

Also here: the likelihood-ratio test of the variance component(s) against the boundary
(chi-bar-square mixtures), the prediction interval of a new centre's marker hazard ratio,
the centre effects (BLUPs) with standard errors, and centre-specific and marginal
(random effect integrated out by Gauss-Hermite quadrature) survival curves with delta-method
confidence bands, which coxme does not provide.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import special

from pooled.errors import ConfigError, ConvergenceWarning, DataError, PooledWarning
from pooled.models._mixed_cox_core import (
    FixedFit,
    InnerFit,
    Problem,
    covariance_from_phi,
    fit_fixed,
    joint_optimise,
    optimise,
)
from pooled.models._mixed_cox_kernels import baseline_pass
from pooled.models.cox import outcome_values, raise_singular
from pooled.models.design import Design, build_design
from pooled.results import tidy_frame

__all__ = [
    "FrailtyCoxphQuantities",
    "MixedCoxResult",
    "MixedCoxSpec",
    "coxph_frailty_quantities",
    "fit_mixed_cox",
    "predict_survival",
]

Ties = Literal["efron", "breslow"]
RandomTerm = Literal["intercept", "marker"]
_LOG_VAR_BOUNDS = (np.log(1e-10), np.log(1e3))
_ATANH_BOUND = 8.0
_START_TOL = 1e-4
_CORRELATION_BOUNDARY = 0.9999


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MixedCoxSpec:
    """Options of a mixed-effects Cox model fitted by :func:`fit_mixed_cox`.

    Parameters
    ----------
    duration, event : str
        Follow-up time column and event indicator (1 = event, 0 = censored).
    covariates : tuple of str
        Fixed effects in formula order (the marker among them when it has a random slope).
    categorical, interactions
        As in :class:`pooled.models.cox.CoxSpec`.
    random : tuple of {"intercept", "marker"}
        Random effects by centre: ``("intercept",)`` a frailty on the baseline,
        ``("marker",)`` a random marker slope (no random intercept, as coxme's
        ``(marker | centre)``), ``("intercept", "marker")`` both, correlated.
    marker : str
        The covariate with the random slope (numeric, e.g. a 0/1 ``ctc_positive``).
    centre : str
        Column identifying centres (the grouping of the random effects).
    strata : bool
        Baseline hazards stratified by centre (not allowed with a random intercept, which
        the strata would absorb).
    ties : {"efron", "breslow"}
    fixed_variance : tuple of float, optional
        Hold the variance parameters at these values instead of estimating them (coxme's
        ``vfixed``): the variance of each random term in the order of ``random``, then the
        correlation when there are two.
    exact_variance_se : bool
        Standard errors of the variance parameters from central differences of the exact
        gradient of the Laplace log-likelihood (2 extra fits per parameter). By default the
        curvature of the optimiser's local model is used (within about 1 % of it).
    level : float
        Confidence and prediction interval level.
    tol : float
        Convergence of the coefficients: the Newton step below ``tol`` (relative to 1 + the
        largest coefficient).
    tol_variance : float
        Convergence of the variance estimation: stop when the next change of the variance
        parameters (log-variance scale) and of the coefficients (relative to 1 + the largest)
        is below it. The error left is about that change (the default leaves ~1e-8 relative
        in the variances, against ~1e-7 in coxme's tight optimum and ~1e-4 at its default).
    max_iter : int
        Maximum number of risk-set passes of the optimiser.
    analysis, endpoint : str
        Labels carried into the tidy table.
    """

    duration: str
    event: str
    covariates: tuple[str, ...]
    categorical: tuple[tuple[str, str], ...] = ()
    interactions: tuple[tuple[str, str], ...] = ()
    random: tuple[RandomTerm, ...] = ("marker",)
    marker: str = "ctc_positive"
    centre: str = "centre"
    strata: bool = True
    ties: Ties = "efron"
    fixed_variance: tuple[float, ...] | None = None
    exact_variance_se: bool = False
    level: float = 0.95
    tol: float = 1e-10
    tol_variance: float = 1e-7
    max_iter: int = 100
    analysis: str = ""
    endpoint: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.covariates, str) or isinstance(self.random, str):
            raise ConfigError(
                "MixedCoxSpec.covariates and .random expected tuples; got a string. Write "
                "random=('marker',) rather than random='marker'."
            )
        if not self.covariates:
            raise ConfigError("MixedCoxSpec.covariates expected at least one covariate; got none.")
        allowed = (("intercept",), ("marker",), ("intercept", "marker"))
        if tuple(self.random) not in allowed:
            raise ConfigError(
                "MixedCoxSpec.random must be one of ('intercept',), ('marker',), "
                f"('intercept', 'marker'); got {self.random!r}."
            )
        if "intercept" in self.random and self.strata:
            raise ConfigError(
                "MixedCoxSpec: a random intercept cannot be combined with baselines stratified "
                "by centre (the strata absorb it); set strata=False, or use random=('marker',)."
            )
        if "marker" in self.random and self.marker not in self.covariates:
            raise ConfigError(
                f"MixedCoxSpec.marker '{self.marker}' expected among the covariates "
                f"{list(self.covariates)} (its fixed effect is the mean log hazard ratio); add it."
            )
        if self.ties not in ("efron", "breslow"):
            raise ConfigError(f"MixedCoxSpec.ties must be 'efron' or 'breslow'; got {self.ties!r}.")
        if self.fixed_variance is not None:
            k = 1 if len(self.random) == 1 else 3
            values = tuple(float(v) for v in self.fixed_variance)
            if len(values) != k:
                raise ConfigError(
                    f"MixedCoxSpec.fixed_variance expected {k} value(s) for random={self.random} "
                    f"(variances{', then the correlation' if k == 3 else ''}); got {values}."
                )
            variances = values[:2] if k == 3 else values
            if not all(v > 0 and np.isfinite(v) for v in variances):
                raise ConfigError(
                    f"MixedCoxSpec.fixed_variance: variances must be positive; got {values}."
                )
            if k == 3 and not -1.0 < values[2] < 1.0:
                raise ConfigError(
                    f"MixedCoxSpec.fixed_variance: the correlation must lie in (-1, 1); got "
                    f"{values[2]}."
                )
        if not 0.0 < self.level < 1.0:
            raise ConfigError(f"MixedCoxSpec.level must lie in (0, 1); got {self.level!r}.")
        if not (self.tol > 0 and self.tol_variance > 0) or self.max_iter < 1:
            raise ConfigError(
                "MixedCoxSpec.tol and tol_variance must be > 0 and max_iter >= 1; got "
                f"{self.tol}, {self.tol_variance}, {self.max_iter}."
            )

    @property
    def model(self) -> str:
        """Short model label, e.g. ``"mixed_cox_marker_stratified"``."""
        name = "mixed_cox_" + "_".join(self.random)
        return name + ("_stratified" if self.strata else "")


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MixedCoxBaseline:
    """Baseline hazard increments at the reference covariates (centred x, b = 0).

    One row per tie group with events, ordered by stratum then *descending* time (the
    fitting order): ``time``, ``stratum`` (index into ``strata``), ``hazard`` (increment),
    ``variance`` (its Poisson variance part), ``dfix`` (p) and ``drand`` (derivative with
    respect to the stratum's active random effects, whose positions in ``b`` are
    ``active[active_ptr[s]:active_ptr[s + 1]]``).
    """

    time: np.ndarray
    stratum: np.ndarray
    hazard: np.ndarray
    variance: np.ndarray
    dfix: np.ndarray
    drand: np.ndarray
    active: np.ndarray
    active_ptr: np.ndarray
    strata: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MixedCoxResult:
    """A fitted mixed-effects Cox model: estimates, variance components, centre effects.

    Attributes
    ----------
    coefficients, covariance
        Fixed effects and their covariance: the fixed block of the inverse penalised
        information (coxme's ``vcov``).
    random_terms
        Names of the random columns: ``"intercept"`` and/or the marker.
    centres
        Centre labels (sorted), the rows of ``random_effects``.
    random_effects, random_effects_se
        Centre effects (BLUPs, K x q) and their standard errors, the square roots of the
        diagonal of the inverse penalised information (prediction error, including the
        uncertainty of the fixed effects; conditional on the variances).
    variance_matrix
        Sigma, the q x q covariance of a centre's random effects (zero at the boundary).
    variance_parameters, variance_parameters_covariance
        phi = (log variances, then atanh(correlation)) and the inverse of minus the
        Hessian of the Laplace log-likelihood in phi (``NaN`` when fixed or at the boundary).
    loglik_integrated, loglik_penalized, loglik_null, loglik_fitted, penalty
        coxme's "Integrated", "Penalized" and "NULL" log-likelihoods, the partial
        log-likelihood at the solution without the penalty and the penalty b' Sigma^-1 b / 2.
    loglik_without_random
        The Cox model without random effects (same fixed effects, same strata).
    df_integrated, df_penalized
        coxme's degrees of freedom (fixed effects + variance parameters; fixed effects +
        trace of the random effects' share).
    lr_statistic, lr_p_value, lr_null, lr_distribution
        Likelihood-ratio test of the variance component(s) against their boundary
        (``NaN`` with fixed variances).
    per_centre
        One row per centre: ``centre, n, events, n_marker_positive``, each random effect
        and its SE (``<term>_effect``, ``<term>_se``), and the centre's marker log hazard
        ratio ``marker_log_hr`` (fixed + random slope), ``marker_se``, ``marker_hr``,
        ``ci_lower``, ``ci_upper``.
    gamma_covariance
        Inverse penalised information of (beta, b), fixed effects first, then b centre by
        centre; used by the predictions.
    information
        Penalised information of (beta, b) in the same order.
    """

    spec: MixedCoxSpec
    term_names: tuple[str, ...]
    term_sources: tuple[str, ...]
    coefficients: np.ndarray
    covariance: np.ndarray
    random_terms: tuple[str, ...]
    centres: tuple[str, ...]
    random_effects: np.ndarray
    random_effects_se: np.ndarray
    variance_matrix: np.ndarray
    variance_parameters: np.ndarray
    variance_parameters_covariance: np.ndarray
    variance_fixed: bool
    boundary: bool
    loglik_integrated: float
    loglik_penalized: float
    loglik_null: float
    loglik_fitted: float
    penalty: float
    loglik_without_random: float
    df_integrated: int
    df_penalized: float
    lr_statistic: float
    lr_p_value: float
    lr_null: str
    lr_distribution: str
    n: int
    events: int
    per_centre: pd.DataFrame
    gamma_covariance: np.ndarray
    information: np.ndarray
    covariate_means: np.ndarray
    baseline: MixedCoxBaseline
    iterations: int
    converged: bool
    dropped: pd.DataFrame
    levels: tuple[tuple[str, tuple[str, ...]], ...]
    notes: tuple[str, ...] = field(default=())

    # -- variance components -------------------------------------------------------------
    @property
    def variances(self) -> np.ndarray:
        """Variance of each random term (``random_terms`` order)."""
        return np.diag(self.variance_matrix).copy()

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(self.variances)

    @property
    def correlation(self) -> float:
        """Correlation of the random intercept and slope (``NaN`` with one random term)."""
        if len(self.random_terms) < 2:
            return float("nan")
        v = self.variances
        if v[0] <= 0 or v[1] <= 0:
            return float("nan")
        return float(self.variance_matrix[0, 1] / np.sqrt(v[0] * v[1]))

    @property
    def marker_in_random(self) -> bool:
        return "marker" in self.spec.random

    @property
    def tau2(self) -> float:
        """Between-centre variance of the marker log hazard ratio (0 without a random slope)."""
        if not self.marker_in_random:
            return 0.0
        return float(self.variances[self.random_terms.index(self.spec.marker)])

    @property
    def std_errors(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))

    @property
    def model(self) -> str:
        return self.spec.model

    def coefficient(self, term: str) -> float:
        return float(self.coefficients[self._index(term)])

    def _index(self, term: str) -> int:
        try:
            return self.term_names.index(term)
        except ValueError:
            raise ConfigError(
                f"Term '{term}' expected among the fixed effects {list(self.term_names)}."
            ) from None

    @property
    def prediction_interval(self) -> tuple[float, float]:
        """Prediction interval of a new centre's marker log hazard ratio.

        ``beta_marker +- z sqrt(Var(beta_marker) + tau^2)`` (Higgins, Thompson and
        Spiegelhalter 2009, with the normal quantile as metafor's ``predict``); equal to the
        confidence interval when the marker has no random slope.
        """
        j = self._index(self.spec.marker)
        z = float(special.ndtri(0.5 + self.spec.level / 2.0))
        half = z * np.sqrt(self.covariance[j, j] + self.tau2)
        est = float(self.coefficients[j])
        return est - half, est + half

    @property
    def variance_parameter_se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.variance_parameters_covariance))

    def variance_components(self) -> pd.DataFrame:
        """Variances (and the correlation) with delta-method standard errors.

        Columns ``term, estimate, std_error, ci_lower, ci_upper`` (intervals on the log
        scale for variances, atanh scale for the correlation, back-transformed).
        """
        z = float(special.ndtri(0.5 + self.spec.level / 2.0))
        se_phi = self.variance_parameter_se
        rows = []
        for k, term in enumerate(self.random_terms):
            v = float(self.variance_matrix[k, k])
            s = float(se_phi[k]) if k < se_phi.size else float("nan")
            with np.errstate(over="ignore"):  # a flat likelihood: the upper limit is inf
                upper = v * np.exp(z * s) if v > 0 else float("nan")
            rows.append(
                {
                    "term": f"var({term})",
                    "estimate": v,
                    "std_error": v * s,
                    "ci_lower": v * np.exp(-z * s) if v > 0 else 0.0,
                    "ci_upper": upper,
                }
            )
        if len(self.random_terms) == 2:
            rho = self.correlation
            s = float(se_phi[2]) if se_phi.size > 2 else float("nan")
            zeta = np.arctanh(rho) if np.isfinite(rho) else float("nan")
            rows.append(
                {
                    "term": f"cor({self.random_terms[0]}, {self.random_terms[1]})",
                    "estimate": rho,
                    "std_error": (1.0 - rho * rho) * s,
                    "ci_lower": float(np.tanh(zeta - z * s)),
                    "ci_upper": float(np.tanh(zeta + z * s)),
                }
            )
        return pd.DataFrame(rows)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: fixed effects (``row_type = "fixed"``), variance components
        (``"variance"``) and each centre's marker hazard ratio (``"centre"``).

        Extra columns: ``row_type, z, pi_lower, pi_upper, tau2`` (the marker's fixed row:
        prediction interval of a new centre's HR), ``loglik_integrated, loglik_penalized,
        loglik_null, lr_statistic, lr_p_value, lr_null`` (variance rows; the p-value of
        the tested component in ``p_value``), ``centre, random_effect, random_effect_se``
        (centre rows).
        """
        z975 = float(special.ndtri(0.5 + self.spec.level / 2.0))
        a, e, model = self.spec.analysis, self.spec.endpoint, self.model
        se = self.std_errors
        rows: list[dict[str, Any]] = []
        for j, term in enumerate(self.term_names):
            est = float(self.coefficients[j])
            zj = est / se[j]
            row: dict[str, Any] = {
                "analysis": a,
                "endpoint": e,
                "model": model,
                "term": term,
                "estimate": est,
                "std_error": float(se[j]),
                "hr": float(np.exp(est)),
                "ci_lower": float(np.exp(est - z975 * se[j])),
                "ci_upper": float(np.exp(est + z975 * se[j])),
                "p_value": float(2.0 * special.ndtr(-abs(zj))),
                "n": self.n,
                "events": self.events,
                "row_type": "fixed",
                "z": zj,
            }
            if term == self.spec.marker:
                lo, hi = self.prediction_interval
                row.update(pi_lower=float(np.exp(lo)), pi_upper=float(np.exp(hi)), tau2=self.tau2)
            rows.append(row)
        tested = self._tested_component()
        for comp in self.variance_components().itertuples(index=False):
            rows.append(
                {
                    "analysis": a,
                    "endpoint": e,
                    "model": model,
                    "term": comp.term,
                    "estimate": comp.estimate,
                    "std_error": comp.std_error,
                    "ci_lower": comp.ci_lower,
                    "ci_upper": comp.ci_upper,
                    "p_value": self.lr_p_value if comp.term == tested else np.nan,
                    "n": self.n,
                    "events": self.events,
                    "row_type": "variance",
                    "loglik_integrated": self.loglik_integrated,
                    "loglik_penalized": self.loglik_penalized,
                    "loglik_null": self.loglik_null,
                    "lr_statistic": self.lr_statistic,
                    "lr_p_value": self.lr_p_value,
                    "lr_null": self.lr_null,
                }
            )
        label = self.spec.marker if self.marker_in_random else self.random_terms[0]
        for rec in self.per_centre.to_dict("records"):
            c = str(rec["centre"])
            re, re_se = float(rec[f"{label}_effect"]), float(rec[f"{label}_se"])
            if self.marker_in_random:
                est, sd = float(rec["marker_log_hr"]), float(rec["marker_se"])
            else:
                est, sd = re, re_se
            rows.append(
                {
                    "analysis": a,
                    "endpoint": e,
                    "model": model,
                    "term": f"{label} | centre={c}",
                    "estimate": est,
                    "std_error": sd,
                    "hr": float(np.exp(est)),
                    "ci_lower": float(np.exp(est - z975 * sd)),
                    "ci_upper": float(np.exp(est + z975 * sd)),
                    "n": int(rec["n"]),
                    "events": int(rec["events"]),
                    "row_type": "centre",
                    "centre": c,
                    "random_effect": float(re),
                    "random_effect_se": float(re_se),
                }
            )
        return tidy_frame(rows)

    def _tested_component(self) -> str:
        if len(self.random_terms) == 2:
            return f"var({self.random_terms[1]})"
        return f"var({self.random_terms[0]})"


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


def _bounds(q: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = _LOG_VAR_BOUNDS
    if q == 1:
        return np.array([lo]), np.array([hi])
    return np.array([lo, lo, -_ATANH_BOUND]), np.array([hi, hi, _ATANH_BOUND])


def _phi_from_values(values: tuple[float, ...]) -> np.ndarray:
    if len(values) == 1:
        return np.array([np.log(values[0])])
    return np.array([np.log(values[0]), np.log(values[1]), np.arctanh(values[2])])


@dataclass(slots=True)
class _Estimate:
    """What the estimation step hands to the result builder."""

    fit: InnerFit | None  # None at the boundary (all variances 0)
    phi: np.ndarray
    hessian: np.ndarray | None
    passes: int
    converged: bool
    boundary: bool
    dropped_terms: tuple[int, ...] = ()  # random columns at the boundary (q = 2)
    baseline: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None


def _estimate(problem: Problem, fixed: FixedFit, spec: MixedCoxSpec) -> _Estimate:
    q = problem.q
    lower, upper = _bounds(q)
    if spec.fixed_variance is not None:
        phi = _phi_from_values(tuple(float(v) for v in spec.fixed_variance))
        init = np.zeros(problem.p + problem.m)
        init[: problem.p] = fixed.beta
        fit = problem.fit(phi, init, tol=spec.tol, max_iter=max(spec.max_iter, 50))
        return _Estimate(fit, phi, None, fit.iterations, fit.converged, False)
    # the score of the Laplace log-likelihood in Sigma at Sigma = 0
    zero_score = _score_at_zero(problem, fixed)
    if np.max(np.linalg.eigvalsh(zero_score)) <= 0.0:
        return _Estimate(None, np.full(len(lower), np.nan), None, 0, True, True, tuple(range(q)))
    joint = joint_optimise(
        problem,
        fixed,
        lower=lower,
        upper=upper,
        tol=max(spec.tol, spec.tol_variance),
        tol_phi=spec.tol_variance,
        max_iter=spec.max_iter,
    )
    fit, hess, passes, converged = joint.fit, joint.hessian, joint.passes, joint.converged
    baseline: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = joint.baseline
    if not converged:
        baseline = None
        # fall back on the nested optimiser (inner Newton to convergence, exact gradients)
        outer = optimise(
            problem,
            fit.phi,
            fit.gamma,
            hess,
            lower=lower,
            upper=upper,
            tol_inner=spec.tol,
            tol_outer=spec.tol_variance,
            max_outer=max(spec.max_iter, 100),
        )
        fit, hess, converged = outer.fit, outer.hessian, outer.converged
        passes += outer.inner_iterations + outer.evaluations
    at_lower = fit.phi[:q] <= lower[:q] + 1e-6
    if q == 2 and not np.any(at_lower) and abs(np.tanh(fit.phi[2])) > _CORRELATION_BOUNDARY:
        hess = _exact_hessian(problem, fit, spec.tol) if spec.exact_variance_se else hess
        return _Estimate(fit, fit.phi, hess, passes, converged, True, (), baseline)
    if np.any(at_lower):
        return _Estimate(
            fit, fit.phi, None, passes, converged, True, tuple(np.flatnonzero(at_lower))
        )
    if spec.exact_variance_se:
        hess = _exact_hessian(problem, fit, spec.tol)
    return _Estimate(fit, fit.phi, hess, passes, converged, False, (), baseline)


def _phi_covariance(hessian: np.ndarray, free: int) -> np.ndarray:
    """Inverse of minus the Hessian of the Laplace log-likelihood in its first ``free``
    parameters (the others held: NaN rows and columns); all NaN when that block is not
    negative definite (no maximum to take a curvature from)."""
    k = hessian.shape[0]
    out = np.full((k, k), np.nan)
    block = -(hessian[:free, :free] + hessian[:free, :free].T) / 2.0
    if free and np.all(np.isfinite(block)) and np.min(np.linalg.eigvalsh(block)) > 0:
        out[:free, :free] = np.linalg.inv(block)
    return out


def _score_at_zero(problem: Problem, fixed: FixedFit) -> np.ndarray:
    """d Integrated / d Sigma at Sigma = 0: sum over centres of (U_c U_c' - I_cc) / 2."""
    p, q, K = problem.p, problem.q, problem.K
    u = fixed.score[p:].reshape(K, q)
    # the K diagonal q x q blocks of I_bb, summed
    blocks = fixed.information[p:, p:].reshape(K, q, K, q)[np.arange(K), :, np.arange(K), :]
    return (u.T @ u - blocks.sum(axis=0)) / 2.0


def _exact_hessian(problem: Problem, fit: InnerFit, tol: float, h: float = 1e-4) -> np.ndarray:
    """Hessian of the Laplace log-likelihood in phi: central differences of exact gradients."""
    k = len(fit.phi)
    _, dgamma = problem.laplace_gradient(fit)
    H = np.empty((k, k))
    for j in range(k):
        e = np.zeros(k)
        e[j] = h
        up = problem.fit(fit.phi + e, fit.gamma + dgamma @ e, tol=tol)
        down = problem.fit(fit.phi - e, fit.gamma - dgamma @ e, tol=tol)
        H[:, j] = (problem.laplace_gradient(up)[0] - problem.laplace_gradient(down)[0]) / (2 * h)
    return (H + H.T) / 2.0


def _design(
    data: pd.DataFrame, spec: MixedCoxSpec, centre_missing: np.ndarray | None = None
) -> Design:
    return build_design(
        data,
        spec.covariates,
        categorical=spec.categorical,
        interactions=spec.interactions,
        required=(spec.duration, spec.event, spec.centre),
        centre=spec.centre,
        missing=None if centre_missing is None else {spec.centre: centre_missing},
    )


def _centre_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes of the centres (-1 where missing) and their labels as text, sorted.

    One pass over the column serves both the complete-case check and the codes: labels that
    differ but read the same as text (``1`` and ``"1"``) are one centre.
    """
    raw_codes, raw_levels = pd.factorize(column)
    text = pd.Series(raw_levels, dtype=object).astype(str).to_numpy(dtype=object)
    levels, level_of = np.unique(text, return_inverse=True)
    lookup = np.append(level_of.reshape(-1), -1)  # code -1 (missing) stays -1
    return lookup[raw_codes], levels


def _outcome(kept: pd.DataFrame, spec: MixedCoxSpec) -> tuple[np.ndarray, np.ndarray]:
    time, event = outcome_values(kept, spec.duration, spec.event)
    if not np.any(event == 1):
        raise DataError(
            f"No events ('{spec.event}' == 1) among the {len(kept)} analysed patients; a Cox "
            "model needs at least one. Check the endpoint coding or the subgroup."
        )
    return time, event


def _unidentified_centres(
    spec: MixedCoxSpec,
    design: Design,
    event: np.ndarray,
    centre_codes: np.ndarray,
    centres: np.ndarray,
) -> list[str]:
    """Notes on centres whose own data do not identify their random effect: without events
    (a random intercept runs towards -inf), or without events on one side of the marker (a
    random slope runs towards +-inf); only the variance holds them back, and they inflate
    it."""
    K = centres.size
    notes = []
    events = np.bincount(centre_codes, weights=event, minlength=K)
    if "intercept" in spec.random and np.any(events == 0):
        names = ", ".join(str(c) for c in centres[events == 0])
        notes.append(
            f"centre(s) {names} have no events among the analysed patients: their random "
            "intercepts run towards -inf and inflate the intercept variance; leave them out "
            "or use a random marker slope with stratified baselines"
        )
    if "marker" in spec.random and spec.marker in design.term_names:
        marker = design.matrix[:, design.term_names.index(spec.marker)]
        positive = np.bincount(centre_codes, weights=event * (marker > 0), minlength=K)
        one_sided = (events > 0) & ((positive == 0) | (positive == events))
        if np.any(one_sided):
            names = ", ".join(str(c) for c in centres[one_sided])
            notes.append(
                f"centre(s) {names} have events only among '{spec.marker}' positive or only "
                "among negative patients: their random slopes are not identified by their "
                "own data and inflate the slope variance"
            )
    return notes


def _random_design(
    design: Design, spec: MixedCoxSpec, n: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    columns = []
    names = []
    for term in spec.random:
        if term == "intercept":
            columns.append(np.ones(n))
            names.append("intercept")
        else:
            if spec.marker not in design.term_names:
                raise ConfigError(
                    f"The marker '{spec.marker}' has no single numeric column in the design "
                    f"(columns {list(design.term_names)}); a random slope needs a numeric "
                    "marker, e.g. a 0/1 indicator, not a categorical one."
                )
            columns.append(design.matrix[:, design.term_names.index(spec.marker)])
            names.append(spec.marker)
    return np.column_stack(columns), tuple(names)


def fit_mixed_cox(data: pd.DataFrame, spec: MixedCoxSpec) -> MixedCoxResult:
    """Fit a Cox model with Gaussian random effects by centre (coxme's Laplace ML).

    Parameters
    ----------
    data : DataFrame
        One row per patient with the columns named in ``spec`` (complete cases are used;
        the losses are counted per centre in ``result.dropped``).
    spec : MixedCoxSpec
        Fixed effects, random effects, strata, ties, variances (estimated or fixed).

    Returns
    -------
    MixedCoxResult

    Raises
    ------
    ConfigError
        A named column is missing, or the marker is not numeric.
    DataError
        No events, fewer than two centres, bad time or event values, a constant covariate.

    Notes
    -----
    Algorithm. At given variances (``fixed_variance``) the penalised partial likelihood is
    maximised by Newton-Raphson over (beta, b) with step halving. To estimate the variances,
    the Cox model without random effects is fitted first; then each step makes one pass over
    the risk sets at the current (beta, b), expands the penalised partial likelihood to second
    order there (exact score and information), adds the first-order change of the
    log-determinant term in (beta, b) (the gradient of ``tr(A I_bb)``, computed in the same
    pass), maximises this local model of the Laplace log-likelihood over the variance
    parameters (closed form in the eigenbasis for one random term, Newton otherwise), and
    moves (beta, b) by the Newton step at the new variances. The fixed point has a zero
    exact gradient, so it is the maximum of coxme's integrated log-likelihood; 4-7 passes
    from the Cox fit. Should it not converge, the nested scheme takes over: inner Newton to
    convergence at each variance, outer quasi-Newton on log-variances (and atanh(rho)) with
    the exact gradient (implicit differentiation through (beta, b)).

    Agrees with coxme 2.2-22 (tight control, ``refine.n = 0``) to about 1e-9: the
    coefficients, their covariance, the random effects and the log-likelihoods at given
    variances, and the estimated variances (``tests/models/test_mixed_cox.py``).
    When the score of the Laplace log-likelihood at Sigma = 0 is not positive (its
    derivative there is ``sum_c (U_c U_c' - I_cc) / 2``), the estimate is the boundary:
    variance 0, the fit is the Cox model without random effects, and the LR statistic 0.
    With two random terms a variance that runs to 0 is dropped and the model refitted with
    the other term alone.

    The likelihood-ratio test of the variance component is against 0 with a 50:50 mixture
    of chi-square(0) and chi-square(1) (Self and Liang 1987); for the correlated intercept
    and slope it is against the random-intercept model (slope variance and covariance 0),
    with a 50:50 mixture of chi-square(1) and chi-square(2) (Stram and Lee 1994).

    References
    ----------
    .. [1] Ripatti S, Palmgren J. Estimation of multivariate frailty models using penalized
       partial likelihood. Biometrics 2000;56:1016-22.
    .. [2] Therneau TM, Grambsch PM, Pankratz VS. Penalized survival models and frailty.
       J Comput Graph Stat 2003;12:156-75.
    .. [3] Therneau TM. coxme: Mixed Effects Cox Models. R package version 2.2-22; 2024.
    .. [4] Self SG, Liang KY. Asymptotic properties of maximum likelihood estimators and
       likelihood ratio tests under nonstandard conditions. J Am Stat Assoc 1987;82:605-10.
    .. [5] Stram DO, Lee JW. Variance components testing in the longitudinal mixed effects
       model. Biometrics 1994;50:1171-7.
    .. [6] Higgins JPT, Thompson SG, Spiegelhalter DJ. A re-evaluation of random-effects
       meta-analysis. J R Stat Soc A 2009;172:137-59.

    Examples
    --------
    >>> spec = MixedCoxSpec(duration="os_months", event="os_event",
    ...                     covariates=("ctc_positive", "age", "node_positive", "grade3"),
    ...                     random=("marker",), marker="ctc_positive", strata=True)
    >>> # res = fit_mixed_cox(cohort, spec); res.tau2; res.prediction_interval
    """
    with _single_threaded_blas():
        return _fit_mixed_cox(data, spec)


_CONTROLLER: Any = None


def _single_threaded_blas() -> Any:
    """One BLAS thread while fitting: every matrix is small ((p + K q) square), and on a
    shared machine a threaded BLAS spends more time waking threads than computing."""
    global _CONTROLLER
    try:
        if _CONTROLLER is None:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController()
        return _CONTROLLER.limit(limits=1, user_api="blas")
    except Exception:  # pragma: no cover - threadpoolctl missing or unusable
        import contextlib

        return contextlib.nullcontext()


def _fit_mixed_cox(data: pd.DataFrame, spec: MixedCoxSpec) -> MixedCoxResult:
    if spec.centre not in data.columns:
        _design(data, spec)  # raises the ConfigError naming the missing columns
    all_codes, centres = _centre_codes(data[spec.centre])
    design = _design(data, spec, centre_missing=all_codes < 0)
    kept = design.kept(data)
    time, event = _outcome(kept, spec)
    centre_codes = all_codes[design.rows].astype(np.int64)
    present = np.bincount(centre_codes, minlength=centres.size) > 0
    if not np.all(present):  # centres whose every patient was dropped
        renumber = np.cumsum(present) - 1
        centre_codes = renumber[centre_codes]
        centres = centres[present]
    K = int(centres.size)
    if K < 2:
        raise DataError(
            f"A random effect by '{spec.centre}' needs at least two centres; found {K} "
            f"({list(centres)}). Use a Cox model instead."
        )
    Z, random_terms = _random_design(design, spec, design.n)
    strata = centre_codes if spec.strata else None
    problem = Problem(
        design.matrix, Z, time, event, centre_codes, K, strata, efron=spec.ties == "efron"
    )
    # the Cox fit without random effects: the start, the null of the LR test, the score test
    # at variance 0 (refined to ``spec.tol`` only when it is the answer)
    fixed = fit_fixed(problem, tol=max(spec.tol, _START_TOL))
    raise_singular(
        fixed.information[: problem.p, : problem.p],
        design.term_names,
        matrix="The information of the fixed effects (the Cox model without random effects)",
    )
    est = _estimate(problem, fixed, spec)
    notes = _unidentified_centres(spec, design, event, centre_codes, centres)
    for note in notes:
        warnings.warn(note, PooledWarning, stacklevel=2)
    if not est.converged:
        warnings.warn(
            f"Mixed Cox fit did not converge in {spec.max_iter} passes (tolerances "
            f"{spec.tol}, {spec.tol_variance}); increase max_iter or check for a centre "
            "without events.",
            ConvergenceWarning,
            stacklevel=2,
        )
    parts = _final_parts(
        problem, fixed, est, spec, design, Z, time, event, centre_codes, centres, notes
    )
    lr = _lr_test(
        problem,
        parts["loglik_integrated"],
        fixed,
        est,
        spec,
        design,
        Z,
        time,
        event,
        centre_codes,
        K,
    )
    return MixedCoxResult(
        spec=spec,
        term_names=design.term_names,
        term_sources=design.term_sources,
        random_terms=random_terms,
        centres=tuple(str(c) for c in centres),
        n=problem.n,
        events=problem.n_events,
        dropped=design.dropped,
        levels=design.levels,
        covariate_means=problem.means.copy(),
        loglik_null=fixed.loglik_null,
        loglik_without_random=fixed.loglik_max,
        notes=tuple(notes),
        **parts,
        **lr,
    )


def _final_parts(
    problem: Problem,
    fixed: FixedFit,
    est: _Estimate,
    spec: MixedCoxSpec,
    design: Design,
    Z: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    centre_codes: np.ndarray,
    centres: np.ndarray,
    notes: list[str],
) -> dict[str, Any]:
    p, q, m = problem.p, problem.q, problem.m
    K = int(centres.size)
    fit = est.fit
    phi = est.phi
    if est.boundary and 0 < len(est.dropped_terms) < q:
        # two random terms, one at the boundary: refit with the other term alone
        keep = [k for k in range(q) if k not in est.dropped_terms]
        sub = Problem(
            design.matrix,
            Z[:, keep],
            time,
            event,
            centre_codes,
            K,
            centre_codes if spec.strata else None,
            efron=spec.ties == "efron",
        )
        sub_fixed = fit_fixed(sub, tol=max(spec.tol, _START_TOL))
        sub_spec = MixedCoxSpec(
            duration=spec.duration,
            event=spec.event,
            covariates=spec.covariates,
            categorical=spec.categorical,
            interactions=spec.interactions,
            random=tuple(spec.random[k] for k in keep),  # type: ignore[arg-type]
            marker=spec.marker,
            centre=spec.centre,
            strata=spec.strata,
            ties=spec.ties,
            exact_variance_se=spec.exact_variance_se,
            tol=spec.tol,
            tol_variance=spec.tol_variance,
            max_iter=spec.max_iter,
        )
        sub_est = _estimate(sub, sub_fixed, sub_spec)
        notes.append(
            f"variance of '{'/'.join(spec.random[k] for k in est.dropped_terms)}' at the "
            "boundary 0: refitted with the other random term alone"
        )
        if sub_est.fit is not None and not sub_est.boundary:
            return _embed(sub, sub_est, keep, problem, spec, centre_codes, event, design, centres)
        est = _Estimate(
            None, np.full(len(phi), np.nan), None, est.passes, est.converged, True, tuple(range(q))
        )
        fit = None
    if fit is None or (est.boundary and len(est.dropped_terms) == q):
        # every variance at 0: the Cox model without random effects
        refined = fit_fixed(problem, tol=spec.tol, init=fixed.beta, loglik_null=fixed.loglik_null)
        gamma = np.zeros(p + m)
        gamma[:p] = refined.beta
        ll, U, info, r, _ = problem.derivatives(gamma)
        cov_ff = np.linalg.inv(info[:p, :p])
        gcov = np.zeros((p + m, p + m))
        gcov[:p, :p] = cov_ff
        sigma = np.zeros((q, q))
        return _assemble(
            problem,
            spec,
            gamma,
            gcov,
            info,
            sigma,
            np.full(len(_bounds(q)[0]), np.nan),
            np.full((len(_bounds(q)[0]),) * 2, np.nan),
            ll,
            ll,
            ll,
            0.0,
            float(p),
            r,
            est.passes,
            est.converged,
            True,
            centre_codes,
            event,
            design,
            centres,
        )
    if est.boundary and not est.dropped_terms:
        notes.append(
            f"correlation at the boundary ({np.tanh(phi[2]):+.6f}): the log-likelihood rises "
            "towards |correlation| = 1, the intercept and slope effects are collinear across "
            "centres; consider the random slope alone"
        )
    H = fit.hessian
    gcov = np.linalg.inv(H)
    gcov = (gcov + gcov.T) / 2.0
    sigma = covariance_from_phi(phi, q)
    P = problem.penalty_matrix(sigma)
    df_pen = float(p + m - np.sum(gcov[p:, p:] * P))
    if est.hessian is not None:
        # at the correlation boundary the correlation has no curvature to invert: the
        # variances' covariance with the correlation held there, the correlation's NaN
        phi_cov = _phi_covariance(est.hessian, free=2 if est.boundary and q == 2 else len(phi))
    else:
        phi_cov = np.full((len(phi), len(phi)), np.nan)
    return _assemble(
        problem,
        spec,
        fit.gamma,
        gcov,
        H,
        sigma,
        phi,
        phi_cov,
        fit.laplace,
        fit.ppl,
        fit.loglik,
        fit.penalty,
        df_pen,
        fit.r,
        est.passes,
        est.converged,
        est.boundary,
        centre_codes,
        event,
        design,
        centres,
        est.baseline,
    )


def _embed(
    sub: Problem,
    sub_est: _Estimate,
    keep: list[int],
    problem: Problem,
    spec: MixedCoxSpec,
    centre_codes: np.ndarray,
    event: np.ndarray,
    design: Design,
    centres: np.ndarray,
) -> dict[str, Any]:
    """The one-term fit written in the two-term layout (the dropped term's effects 0)."""
    p, q = problem.p, problem.q
    K = int(centres.size)
    fit = sub_est.fit
    assert fit is not None
    qs = sub.q
    idx = np.concatenate((np.arange(p), p + (np.arange(K)[:, None] * q + np.array(keep)).ravel()))
    gamma = np.zeros(p + problem.m)
    gamma[idx] = fit.gamma
    sub_cov = np.linalg.inv(fit.hessian)
    gcov = np.zeros((p + problem.m, p + problem.m))
    gcov[np.ix_(idx, idx)] = (sub_cov + sub_cov.T) / 2.0
    H = np.zeros_like(gcov)
    H[np.ix_(idx, idx)] = fit.hessian
    sigma = np.zeros((q, q))
    sub_sigma = covariance_from_phi(fit.phi, qs)
    sigma[np.ix_(keep, keep)] = sub_sigma
    phi = np.full(3, np.nan)
    phi[keep[0]] = fit.phi[0]
    phi_cov = np.full((3, 3), np.nan)
    if sub_est.hessian is not None:
        phi_cov[keep[0], keep[0]] = _phi_covariance(sub_est.hessian, 1)[0, 0]
    P = sub.penalty_matrix(sub_sigma)
    df_pen = float(p + sub.m - np.sum(sub_cov[p:, p:] * P))
    ll, _, _, r, _ = problem.derivatives(gamma)
    return _assemble(
        problem,
        spec,
        gamma,
        gcov,
        H,
        sigma,
        phi,
        phi_cov,
        fit.laplace,
        fit.ppl,
        fit.loglik,
        fit.penalty,
        df_pen,
        r,
        sub_est.passes,
        sub_est.converged,
        True,
        centre_codes,
        event,
        design,
        centres,
    )


def _assemble(
    problem: Problem,
    spec: MixedCoxSpec,
    gamma: np.ndarray,
    gcov: np.ndarray,
    information: np.ndarray,
    sigma: np.ndarray,
    phi: np.ndarray,
    phi_cov: np.ndarray,
    laplace: float,
    ppl: float,
    loglik: float,
    penalty: float,
    df_pen: float,
    r: np.ndarray,
    passes: int,
    converged: bool,
    boundary: bool,
    centre_codes: np.ndarray,
    event: np.ndarray,
    design: Design,
    centres: np.ndarray,
    pass_baseline: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    p, q = problem.p, problem.q
    K = int(centres.size)
    b = gamma[p:].reshape(K, q)
    b_se = np.sqrt(np.maximum(np.diag(gcov)[p:], 0.0)).reshape(K, q)
    baseline = _baseline(problem, r, centres, spec, pass_baseline)
    per_centre = _per_centre(
        problem, spec, gamma, gcov, b, b_se, centre_codes, event, design, centres
    )
    return {
        "coefficients": gamma[:p].copy(),
        "covariance": gcov[:p, :p].copy(),
        "random_effects": b.copy(),
        "random_effects_se": b_se,
        "variance_matrix": sigma,
        "variance_parameters": phi,
        "variance_parameters_covariance": phi_cov,
        "variance_fixed": spec.fixed_variance is not None,
        "boundary": boundary,
        "loglik_integrated": float(laplace),
        "loglik_penalized": float(ppl),
        "loglik_fitted": float(loglik),
        "penalty": float(penalty),
        "df_integrated": int(p + (0 if spec.fixed_variance is not None else len(phi))),
        "df_penalized": df_pen,
        "per_centre": per_centre,
        "gamma_covariance": gcov,
        "information": information,
        "baseline": baseline,
        "iterations": int(passes),
        "converged": bool(converged),
    }


def _per_centre(
    problem: Problem,
    spec: MixedCoxSpec,
    gamma: np.ndarray,
    gcov: np.ndarray,
    b: np.ndarray,
    b_se: np.ndarray,
    centre_codes: np.ndarray,
    event: np.ndarray,
    design: Design,
    centres: np.ndarray,
) -> pd.DataFrame:
    p, q = problem.p, problem.q
    K = int(centres.size)
    names = ["intercept" if t == "intercept" else spec.marker for t in spec.random]
    n_c = np.bincount(centre_codes, minlength=K)
    e_c = np.bincount(centre_codes, weights=event, minlength=K).astype(int)
    table: dict[str, Any] = {
        "centre": [str(c) for c in centres],
        "n": n_c,
        "events": e_c,
    }
    if spec.marker in design.term_names:
        marker_col = design.matrix[:, design.term_names.index(spec.marker)]
        table["n_marker_positive"] = np.bincount(
            centre_codes, weights=(marker_col > 0).astype(float), minlength=K
        ).astype(int)
    for k, name in enumerate(names):
        table[f"{name}_effect"] = b[:, k]
        table[f"{name}_se"] = b_se[:, k]
    if spec.marker in design.term_names:
        j = design.term_names.index(spec.marker)
        z = float(special.ndtri(0.5 + spec.level / 2.0))
        if "marker" in spec.random:
            k = list(spec.random).index("marker")
            pos = p + np.arange(K) * q + k
            est = gamma[j] + gamma[pos]
            var = gcov[j, j] + gcov[pos, pos] + 2.0 * gcov[j, pos]
        else:
            est = np.full(K, gamma[j])
            var = np.full(K, gcov[j, j])
        se = np.sqrt(np.maximum(var, 0.0))
        table["marker_log_hr"] = est
        table["marker_se"] = se
        table["marker_hr"] = np.exp(est)
        table["ci_lower"] = np.exp(est - z * se)
        table["ci_upper"] = np.exp(est + z * se)
    frame = pd.DataFrame(table)
    return frame


def _baseline(
    problem: Problem,
    r: np.ndarray,
    centres: np.ndarray,
    spec: MixedCoxSpec,
    from_pass: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> MixedCoxBaseline:
    if from_pass is not None:  # filled by the optimiser's last pass, at the estimates
        hazard, variance, dfix, drand = from_pass
    else:
        hazard, variance, dfix, drand = problem.baseline_arrays()
        _baseline_pass(problem, r, hazard, variance, dfix, drand)
    keep = problem.grp_nev > 0
    strata = tuple(str(c) for c in centres) if spec.strata else ("all",)
    return MixedCoxBaseline(
        time=problem.grp_time[keep].copy(),
        stratum=problem.grp_stratum[keep].astype(np.int64),
        hazard=hazard[keep],
        variance=variance[keep],
        dfix=dfix[keep],
        drand=drand[keep],
        active=problem.act_idx.copy(),
        active_ptr=problem.act_ptr.copy(),
        strata=strata,
    )


def _baseline_pass(
    problem: Problem,
    r: np.ndarray,
    hazard: np.ndarray,
    variance: np.ndarray,
    dfix: np.ndarray,
    drand: np.ndarray,
) -> None:
    baseline_pass(
        problem.X,
        problem.Z,
        problem.ract,
        problem.event_u8,
        problem.grp_start,
        problem.grp_nev,
        problem.str_gstart,
        problem.act_ptr,
        r,
        problem.efron,
        hazard,
        variance,
        dfix,
        drand,
    )


def _lr_test(
    problem: Problem,
    loglik_integrated: float,
    fixed: FixedFit,
    est: _Estimate,
    spec: MixedCoxSpec,
    design: Design,
    Z: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    centre_codes: np.ndarray,
    K: int,
) -> dict[str, Any]:
    if spec.fixed_variance is not None:
        return {
            "lr_statistic": float("nan"),
            "lr_p_value": float("nan"),
            "lr_null": "",
            "lr_distribution": "",
        }
    if problem.q == 1:
        at_zero = est.boundary and est.fit is None or len(est.dropped_terms) == problem.q
        stat = 0.0 if at_zero else max(0.0, 2.0 * (loglik_integrated - fixed.loglik_max))
        p_value = float(0.5 * special.chdtrc(1, stat)) if stat > 0 else 1.0
        return {
            "lr_statistic": stat,
            "lr_p_value": p_value,
            "lr_null": "no random effects",
            "lr_distribution": "0.5 chi2(0) + 0.5 chi2(1)",
        }
    # correlated intercept and slope: against the random-intercept model
    sub = Problem(
        design.matrix, Z[:, :1], time, event, centre_codes, K, None, efron=spec.ties == "efron"
    )
    sub_fixed = fit_fixed(sub, tol=max(spec.tol, _START_TOL))
    sub_spec = MixedCoxSpec(
        duration=spec.duration,
        event=spec.event,
        covariates=spec.covariates,
        categorical=spec.categorical,
        interactions=spec.interactions,
        random=("intercept",),
        marker=spec.marker,
        centre=spec.centre,
        strata=False,
        ties=spec.ties,
        tol=spec.tol,
        tol_variance=spec.tol_variance,
        max_iter=spec.max_iter,
    )
    sub_est = _estimate(sub, sub_fixed, sub_spec)
    null_ll = (
        sub_est.fit.laplace
        if (sub_est.fit is not None and not sub_est.boundary)
        else (sub_fixed.loglik_max)
    )
    stat = max(0.0, 2.0 * (loglik_integrated - null_ll))
    p_value = float(0.5 * special.chdtrc(1, stat) + 0.5 * special.chdtrc(2, stat))
    return {
        "lr_statistic": stat,
        "lr_p_value": p_value,
        "lr_null": "random intercept only",
        "lr_distribution": "0.5 chi2(1) + 0.5 chi2(2)",
    }


# --------------------------------------------------------------------------------------------
# survival's coxph(... + frailty(centre, distribution = "gaussian")) at a fixed theta
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrailtyCoxphQuantities:
    """What ``coxph(... + frailty(centre, "gaussian", theta = , sparse = ))`` reports.

    ``covariance`` is coxph's ``var`` (fixed block), ``covariance_var2`` its ``var2``
    (sandwich H^-1 I H^-1), ``df`` the degrees of freedom of each fixed term then of the
    frailty term, ``penalty`` includes the normal constant ``K log(2 pi theta) / 2`` and
    ``loglik_null`` coxph's ``loglik[1]`` (for ``sparse=False`` minus that constant).
    """

    covariance: np.ndarray
    covariance_var2: np.ndarray
    df: np.ndarray
    penalty: float
    loglik_null: float
    loglik: float
    sparse: bool


def coxph_frailty_quantities(result: MixedCoxResult, *, sparse: bool) -> FrailtyCoxphQuantities:
    """survival's Gaussian-frailty quantities from a random-intercept fit at a fixed variance.

    At a fixed theta, ``coxph(... + frailty(centre, distribution = "gaussian", theta))``
    maximises the same penalised partial likelihood as coxme's ``(1 | centre)`` with
    ``vfixed = theta``, so the coefficients, frailties and log-likelihood coincide; survival
    differs in what it reports. With ``sparse=True`` (its default for more than 5 centres) the
    off-diagonal frailty-by-frailty information is dropped before inverting (the frailty
    block becomes diagonal), which changes ``var``, ``var2`` and the degrees of freedom.

    References
    ----------
    .. [1] Therneau TM, Grambsch PM, Pankratz VS. Penalized survival models and frailty.
       J Comput Graph Stat 2003;12:156-75.
    .. [2] Gray RJ. Flexible methods for analyzing survival data using splines, with
       applications to breast cancer prognosis. J Am Stat Assoc 1992;87:942-51.

    Examples
    --------
    >>> # res = fit_mixed_cox(df, MixedCoxSpec(..., random=("intercept",), strata=False,
    >>> #                                      fixed_variance=(0.13,)))
    >>> # coxph_frailty_quantities(res, sparse=True).covariance
    """
    if result.spec.random != ("intercept",):
        raise ConfigError(
            "coxph_frailty_quantities expects a random-intercept (frailty) fit; got random="
            f"{result.spec.random}."
        )
    p = len(result.term_names)
    K = len(result.centres)
    theta = float(result.variance_matrix[0, 0])
    if not theta > 0:
        raise DataError("coxph_frailty_quantities needs a positive frailty variance.")
    H = result.information.copy()
    if sparse:
        bb = H[p:, p:]
        H[p:, p:] = np.diag(np.diag(bb))
    Hinv = np.linalg.inv(H)
    pen = np.zeros_like(H)
    pen[p:, p:] = np.eye(K) / theta
    imat = H - pen
    var2 = Hinv @ imat @ Hinv
    df = np.empty(p + 1)
    if sparse:
        C = Hinv[:p, :p]
        df[:p] = np.diag(var2[:p, :p]) / np.diag(C)
        df[p] = K - float(np.sum(np.diag(Hinv)[p:]) / theta)
    else:
        df[:p] = np.diag(var2[:p, :p]) / np.diag(Hinv[:p, :p])
        df[p] = float(np.trace(np.linalg.solve(Hinv[p:, p:], var2[p:, p:])))
    const = 0.5 * K * np.log(2.0 * np.pi * theta)
    return FrailtyCoxphQuantities(
        covariance=(Hinv[:p, :p] + Hinv[:p, :p].T) / 2.0,
        covariance_var2=(var2[:p, :p] + var2[:p, :p].T) / 2.0,
        df=df,
        penalty=result.penalty + const,
        loglik_null=result.loglik_null - (0.0 if sparse else const),
        loglik=result.loglik_fitted,
        sparse=sparse,
    )


# --------------------------------------------------------------------------------------------
# Survival curves
# --------------------------------------------------------------------------------------------


def _covariate_row(result: MixedCoxResult, covariates: Mapping[str, Any]) -> np.ndarray:
    """The design row of one patient from raw covariate values (categoricals as levels)."""
    spec = result.spec
    missing = [c for c in spec.covariates if c not in covariates]
    if missing:
        raise ConfigError(
            f"predict_survival: covariates {missing} expected (the model's covariates are "
            f"{list(spec.covariates)}); give a value for each."
        )
    levels = dict(result.levels)
    main: dict[str, float] = {}
    for column in spec.covariates:
        value = covariates[column]
        if column in levels:
            if str(value) not in levels[column]:
                raise DataError(
                    f"predict_survival: '{column}' = {value!r} expected among the levels "
                    f"{list(levels[column])}."
                )
            for level in levels[column][1:]:
                main[f"{column}{level}"] = float(str(value) == level)
        else:
            main[column] = float(value)
    row = np.empty(len(result.term_names))
    for j, name in enumerate(result.term_names):
        if name in main:
            row[j] = main[name]
        else:
            parts = name.split(":")
            row[j] = float(np.prod([main[part] for part in parts]))
    return row


def predict_survival(
    result: MixedCoxResult,
    covariates: Mapping[str, Any],
    *,
    kind: Literal["centre", "marginal"] = "centre",
    centre: str | None = None,
    times: Sequence[float] | np.ndarray | None = None,
    n_nodes: int = 20,
    level: float | None = None,
) -> pd.DataFrame:
    """Survival curve of a patient, in a given centre or averaged over centres.

    ``kind="centre"``: ``S_c(t | x) = exp(-Lambda_0s(t) exp(x' beta + z' b_c))`` with the
    centre's random effects ``b_c`` (and its own baseline when baselines are stratified).
    ``kind="marginal"``: the random effects integrated out, ``E_u exp(-Lambda_0(t)
    exp(x' beta + z' u))`` with ``u ~ N(0, Sigma)`` (a new centre), by Gauss-Hermite
    quadrature with ``n_nodes`` nodes per random term; with stratified baselines the
    baseline of ``centre`` is used. ``Lambda_0`` is the Efron (or Breslow) baseline
    hazard at the estimates.

    Confidence bands: delta method on the log(-log) scale. The variance combines the
    Poisson part of the baseline hazard (``sum dLambda_0^2``-type term), the inverse
    penalised information of (beta, b) for the coefficients and the baseline's dependence
    on them, and for the marginal curve the covariance of the variance parameters
    (numerical derivative in phi). It is conditional on nothing else; for the centre curve
    the random effect's prediction error is included through the information.

    Parameters
    ----------
    result : MixedCoxResult
    covariates : mapping
        Raw covariate values (categorical covariates as their level), e.g.
        ``{"ctc_positive": 1, "age": 60, "node_positive": 0, "grade3": 1}``.
    kind : {"centre", "marginal"}
    centre : str, optional
        Required for ``kind="centre"``, and for ``kind="marginal"`` with stratified
        baselines.
    times : array-like, optional
        Times at which to evaluate the step function (default: the event times of the
        baseline used).
    n_nodes : int
        Gauss-Hermite nodes per random term (marginal curves).
    level : float, optional
        Confidence level (default ``result.spec.level``).

    Returns
    -------
    DataFrame
        ``time, survival, std_error, ci_lower, ci_upper, kind, centre``.

    References
    ----------
    .. [1] Tsiatis AA. A large sample study of Cox's regression model. Ann Stat
       1981;9:93-108.
    .. [2] Andersen PK, Borgan O, Gill RD, Keiding N. Statistical Models Based on Counting
       Processes. Springer; 1993. Section VII.2.
    .. [3] Liu Q, Pierce DA. A note on Gauss-Hermite quadrature. Biometrika 1994;81:624-9.

    Examples
    --------
    >>> # predict_survival(res, {"ctc_positive": 1, "age": 60, "node_positive": 0,
    >>> #                        "grade3": 0}, kind="marginal", centre="ulm", times=[12, 60])
    """
    if kind not in ("centre", "marginal"):
        raise ConfigError(f"predict_survival: kind must be 'centre' or 'marginal'; got {kind!r}.")
    level = result.spec.level if level is None else level
    if not 0 < level < 1:
        raise ConfigError(f"predict_survival: level must lie in (0, 1); got {level!r}.")
    spec = result.spec
    K = len(result.centres)
    q = len(result.random_terms)
    p = len(result.term_names)
    if centre is not None and centre not in result.centres:
        raise DataError(
            f"predict_survival: centre {centre!r} expected among {list(result.centres)}."
        )
    if kind == "centre" and centre is None:
        raise ConfigError(
            "predict_survival: kind='centre' needs a centre; pass centre=<label>, or use "
            "kind='marginal' for a new centre."
        )
    if spec.strata and centre is None:
        raise ConfigError(
            "predict_survival: the baselines are stratified by centre; pass centre=<label> "
            "to choose the baseline hazard."
        )
    c = result.centres.index(centre) if centre is not None else None
    x = _covariate_row(result, covariates) - result.covariate_means
    z = np.array([1.0 if t == "intercept" else float(covariates[spec.marker]) for t in spec.random])
    bl = result.baseline
    s = 0 if c is None or not spec.strata else c
    sel = bl.stratum == s
    g_time = bl.time[sel][::-1]  # ascending
    g_haz = np.cumsum(bl.hazard[sel][::-1])
    g_var = np.cumsum(bl.variance[sel][::-1])
    dfix = np.cumsum(bl.dfix[sel][::-1], axis=0)
    act = bl.active[bl.active_ptr[s] : bl.active_ptr[s + 1]]
    drand = np.cumsum(bl.drand[sel][::-1][:, : act.size], axis=0)
    if times is None:
        t_out = g_time
    else:
        t_out = np.asarray(times, dtype=np.float64)
    idx = np.searchsorted(g_time, t_out, side="right") - 1
    ok = idx >= 0
    lam0 = np.where(ok, g_haz[np.maximum(idx, 0)], 0.0)
    v0 = np.where(ok, g_var[np.maximum(idx, 0)], 0.0)
    # d Lambda_0 / d gamma at each output time (p + m)
    dl = np.zeros((t_out.size, p + K * q))
    dl[:, :p] = np.where(ok[:, None], dfix[np.maximum(idx, 0)], 0.0)
    dl[:, p + act] = np.where(ok[:, None], drand[np.maximum(idx, 0)], 0.0)
    V = result.gamma_covariance
    beta = result.coefficients
    eta0 = float(x @ beta)
    zq = float(special.ndtri(0.5 + level / 2.0))
    if kind == "centre":
        assert c is not None
        pos = p + c * q + np.arange(q)
        eta = eta0 + float(z @ result.random_effects[c])
        w = np.zeros(p + K * q)
        w[:p] = x
        w[pos] = z
        lam = lam0 * np.exp(eta)
        surv = np.exp(-lam)
        J = np.exp(eta) * (dl + lam0[:, None] * w[None, :])  # d Lambda / d gamma
        var_lam = np.exp(2 * eta) * v0 + np.einsum("ti,ij,tj->t", J, V, J)
        se_s = surv * np.sqrt(var_lam)
        with np.errstate(divide="ignore", invalid="ignore"):
            se_ll = np.sqrt(var_lam) / lam
    else:
        surv, d_lam0, d_eta0 = _marginal(
            lam0, eta0, z, result.variance_parameters, q, result.variance_matrix, n_nodes
        )
        wf = np.zeros(p + K * q)
        wf[:p] = x
        J = d_lam0[:, None] * dl + d_eta0[:, None] * wf[None, :]
        var_s = d_lam0**2 * v0 + np.einsum("ti,ij,tj->t", J, V, J)
        phi = result.variance_parameters
        phi_cov = result.variance_parameters_covariance
        if np.all(np.isfinite(phi)) and np.all(np.isfinite(phi_cov)):
            h = 1e-5
            Jp = np.empty((t_out.size, phi.size))
            for j in range(phi.size):
                e = np.zeros(phi.size)
                e[j] = h
                up = _marginal(lam0, eta0, z, phi + e, q, covariance_from_phi(phi + e, q), n_nodes)[
                    0
                ]
                dn = _marginal(lam0, eta0, z, phi - e, q, covariance_from_phi(phi - e, q), n_nodes)[
                    0
                ]
                Jp[:, j] = (up - dn) / (2 * h)
            var_s = var_s + np.einsum("ti,ij,tj->t", Jp, phi_cov, Jp)
        se_s = np.sqrt(np.maximum(var_s, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            se_ll = se_s / (surv * np.abs(np.log(surv)))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lower = np.where(ok, surv ** np.exp(-zq * se_ll), 1.0)
        upper = np.where(ok, surv ** np.exp(zq * se_ll), 1.0)
    return pd.DataFrame(
        {
            "time": t_out,
            "survival": surv,
            "std_error": se_s,
            "ci_lower": np.minimum(lower, upper),
            "ci_upper": np.maximum(lower, upper),
            "kind": kind,
            "centre": centre if centre is not None else "",
        }
    )


def _marginal(
    lam0: np.ndarray,
    eta0: float,
    z: np.ndarray,
    phi: np.ndarray,
    q: int,
    sigma: np.ndarray,
    n_nodes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marginal survival by Gauss-Hermite, with d/d Lambda_0 and d/d eta0."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n_nodes)
    weights = weights / np.sqrt(2.0 * np.pi)
    if q == 1:
        xi = nodes[:, None]
        w = weights
    else:
        g1, g2 = np.meshgrid(nodes, nodes, indexing="ij")
        xi = np.column_stack((g1.ravel(), g2.ravel()))
        w = np.outer(weights, weights).ravel()
    # Sigma may be singular (a variance at 0): use its eigen square root
    vals, vecs = np.linalg.eigh((sigma + sigma.T) / 2.0)
    root = vecs * np.sqrt(np.maximum(vals, 0.0))
    u = xi @ root.T  # nodes x q
    eta = eta0 + u @ z  # nodes
    e = np.exp(eta)
    S = np.exp(-np.outer(lam0, e))  # times x nodes
    surv = S @ w
    d_lam0 = -(S * e[None, :]) @ w
    d_eta0 = -(S * (lam0[:, None] * e[None, :])) @ w
    return surv, d_lam0, d_eta0

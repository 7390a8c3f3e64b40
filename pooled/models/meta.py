"""Fixed- and random-effects meta-analysis of study (centre) estimates, as metafor's ``rma()``.

Reproduces metafor 3.8-1 ``rma(yi, vi, method = ...)`` for an intercept-only model: the
heterogeneity estimators FE, DL, REML, PM, ML, HE and SJ with metafor's standard errors of
tau^2, the Hartung-Knapp(-Sidik-Jonkman) adjustment (``test = "knha"``), I^2, H^2, Cochran's
Q, the prediction interval of ``predict()`` and the study weights. Iterative estimators are
solved to machine precision (the R reference used ``threshold = tol = 1e-14``): REML and ML by
metafor's Fisher scoring with step halving (finished by Brent's method on the score equation
where Fisher scoring cycles around the root instead of converging), PM by Brent's method on
the generalised Q equation.

Convergence is judged relative to the scale of the data, not absolutely as metafor does
(``|tau2_new - tau2_old| <= threshold``): an iteration stops when the change in tau^2 is at
most ``tol * (tau^2 + min(vi))``. An absolute threshold of 1e-14 is below one ulp of tau^2
once tau^2 exceeds about 50, so Fisher scoring can cycle between neighbouring doubles forever
(metafor itself fails on ``dat.normand1999`` by REML at 1e-14); the relative rule does not
depend on the units of ``yi`` (multiplying ``yi`` by ``c`` multiplies tau^2 by ``c^2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import optimize, stats

from pooled.errors import ConfigError, ConvergenceError, DataError
from pooled.results import tidy_frame

MetaMethod = Literal["FE", "DL", "REML", "PM", "ML", "HE", "SJ"]
_METHODS: tuple[str, ...] = ("FE", "DL", "REML", "PM", "ML", "HE", "SJ")

__all__ = ["MetaMethod", "MetaResult", "MetaSpec", "fit_meta"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaSpec:
    """Options of a meta-analysis.

    Parameters
    ----------
    method
        Estimator of the between-study variance tau^2: ``"FE"`` (fixed effect, tau^2 = 0),
        ``"DL"`` (DerSimonian-Laird), ``"REML"`` (default), ``"PM"`` (Paule-Mandel), ``"ML"``,
        ``"HE"`` (Hedges) or ``"SJ"`` (Sidik-Jonkman).
    knha
        Hartung-Knapp(-Sidik-Jonkman) adjustment: the variance of the pooled estimate is
        scaled by the weighted residual mean square and intervals and tests use the
        t-distribution with k - 1 degrees of freedom (metafor's ``test = "knha"``).
    level
        Confidence level of the confidence and prediction intervals.
    exponentiate
        The estimates are log ratios (log hazard ratios): the tidy table reports
        ``hr = exp(estimate)`` and the intervals on the ratio scale.
    tol
        Relative convergence tolerance of the iterative estimators: REML and ML stop when a
        Fisher scoring step changes tau^2 by at most ``tol * (tau^2 + min(vi))``; PM's root is
        bracketed to the same width. Relative to the data's own scale (a typical within-study
        variance or tau^2 itself), so estimates scale exactly with the units of ``yi``;
        metafor's ``threshold`` is absolute.
    max_iter
        Maximum number of Fisher scoring iterations.
    """

    method: MetaMethod = "REML"
    knha: bool = False
    level: float = 0.95
    exponentiate: bool = True
    tol: float = 1e-14
    max_iter: int = 1000

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ConfigError(
                f"MetaSpec.method must be one of {', '.join(_METHODS)}; got {self.method!r}."
            )
        if not 0.0 < self.level < 1.0:
            raise ConfigError(
                f"MetaSpec.level must lie strictly between 0 and 1; got {self.level!r}. "
                "Use e.g. level=0.95."
            )
        if not self.tol > 0:
            raise ConfigError(f"MetaSpec.tol must be positive; got {self.tol!r}.")

    @property
    def label(self) -> str:
        """Short name of the model, e.g. ``"REML"`` or ``"REML_knha"``."""
        return f"{self.method}_knha" if self.knha else self.method


@dataclass(frozen=True, slots=True)
class MetaResult:
    """A fitted meta-analysis; self-sufficient for a forest plot.

    Attributes
    ----------
    estimate, se
        Pooled estimate and its standard error (Hartung-Knapp-adjusted when ``spec.knha``).
    ci_lower, ci_upper
        Confidence interval of the pooled estimate (estimate scale).
    statistic, p_value
        z (or t with ``df`` degrees of freedom under Hartung-Knapp) and its two-sided p.
    df
        Degrees of freedom of the t-test (k - 1) under Hartung-Knapp; ``None`` otherwise.
    tau2, se_tau2
        Between-study variance and its standard error as metafor computes it for the method
        (``NaN`` for FE).
    i2, h2
        I^2 (percent) and H^2; for FE from Q, otherwise from tau^2 and the typical
        within-study variance, as metafor. With a single study 0 and 1 (metafor's values:
        no heterogeneity can be seen).
    q, q_df, q_p_value
        Cochran's Q test of heterogeneity (with a single study Q = 0 on 0 df and p = 1, as
        metafor).
    pi_lower, pi_upper
        Prediction interval for the effect in a new study (``predict()``; ``NaN`` for FE).
    k
        Number of studies.
    iterations
        Fisher scoring iterations (REML, ML), 0 for closed-form estimators.
    per_study
        One row per study: ``label, estimate, variance, se, ci_lower, ci_upper, weight,
        weight_percent`` (weights ``1 / (v_i + tau^2)``; the study CI uses the normal
        quantile as metafor's forest plot).
    spec
        The :class:`MetaSpec` used.
    """

    estimate: float
    se: float
    ci_lower: float
    ci_upper: float
    statistic: float
    p_value: float
    df: int | None
    tau2: float
    se_tau2: float
    i2: float
    h2: float
    q: float
    q_df: int
    q_p_value: float
    pi_lower: float
    pi_upper: float
    k: int
    iterations: int
    per_study: pd.DataFrame
    spec: MetaSpec
    term: str = "pooled"

    @property
    def tau(self) -> float:
        """Between-study standard deviation."""
        return float(np.sqrt(self.tau2))

    @property
    def weights_percent(self) -> np.ndarray:
        """Study weights in percent, in input order."""
        return self.per_study["weight_percent"].to_numpy()

    def to_frame(self, *, analysis: str = "meta_analysis", endpoint: str = "") -> pd.DataFrame:
        """Tidy table: one row per study (``row_type = "study"``) then the pooled row
        (``row_type = "pooled"``, ``term`` = the result's term).

        With ``spec.exponentiate`` the ``hr`` column and the intervals are on the ratio
        scale (``exp``); ``estimate`` and ``std_error`` stay on the log scale. Extra columns:
        ``row_type, weight_percent, tau2, se_tau2, i2, h2, q, q_df, q_p_value, pi_lower,
        pi_upper, k, method, knha``.
        """
        ratio = self.spec.exponentiate

        def tr(x: float) -> float:
            return float(np.exp(x)) if ratio else float(x)

        model = f"meta_{self.spec.label}"
        table = self.per_study
        rows: list[dict[str, Any]] = []
        for i in range(len(table)):
            est = float(table["estimate"].iloc[i])
            rows.append(
                {
                    "analysis": analysis,
                    "endpoint": endpoint,
                    "model": model,
                    "term": str(table["label"].iloc[i]),
                    "estimate": est,
                    "std_error": float(table["se"].iloc[i]),
                    "hr": tr(est) if ratio else np.nan,
                    "ci_lower": tr(float(table["ci_lower"].iloc[i])),
                    "ci_upper": tr(float(table["ci_upper"].iloc[i])),
                    "row_type": "study",
                    "weight_percent": float(table["weight_percent"].iloc[i]),
                }
            )
        rows.append(
            {
                "analysis": analysis,
                "endpoint": endpoint,
                "model": model,
                "term": self.term,
                "estimate": self.estimate,
                "std_error": self.se,
                "hr": tr(self.estimate) if ratio else np.nan,
                "ci_lower": tr(self.ci_lower),
                "ci_upper": tr(self.ci_upper),
                "p_value": self.p_value,
                "row_type": "pooled",
                "weight_percent": 100.0,
                "tau2": self.tau2,
                "se_tau2": self.se_tau2,
                "i2": self.i2,
                "h2": self.h2,
                "q": self.q,
                "q_df": self.q_df,
                "q_p_value": self.q_p_value,
                "pi_lower": tr(self.pi_lower),
                "pi_upper": tr(self.pi_upper),
                "k": self.k,
                "method": self.spec.method,
                "knha": self.spec.knha,
            }
        )
        return tidy_frame(rows)


# --------------------------------------------------------------------------------------------
# Estimators of tau^2 (intercept-only model, X = 1)
# --------------------------------------------------------------------------------------------


def _projection(w: np.ndarray) -> np.ndarray:
    """P = W - W X (X'WX)^-1 X'W for X = 1."""
    return np.diag(w) - np.outer(w, w) / w.sum()


def _converged(change: float, tau2: float, v: np.ndarray, tol: float) -> bool:
    """The relative rule of :class:`MetaSpec`: ``|change| <= tol * (tau2 + min(v))``."""
    return abs(change) <= tol * (max(tau2, 0.0) + float(v.min()))


def _quad(y: np.ndarray, w: np.ndarray) -> float:
    """y'P y = sum w (y - weighted mean)^2."""
    mu = np.sum(w * y) / np.sum(w)
    return float(np.sum(w * (y - mu) ** 2))


def _scoring_step(y: np.ndarray, v: np.ndarray, tau2: float, reml: bool) -> float:
    """The Fisher scoring step at ``tau2``: score / expected information (its sign is the
    score's: the restricted or full log-likelihood increases with tau^2 where it is positive)."""
    w = 1.0 / (v + tau2)
    p = _projection(w)
    py = p @ y
    ypppy = float(py @ py)
    if reml:
        return (ypppy - float(np.trace(p))) / float(np.sum(p * p))
    return (ypppy - float(w.sum())) / float(np.sum(w * w))


def _fisher_scoring(
    y: np.ndarray, v: np.ndarray, tau2: float, reml: bool, tol: float, max_iter: int
) -> tuple[float, int]:
    """metafor's Fisher scoring for ML / REML with step halving at tau^2 = 0.

    Stops when a step changes tau^2 by at most ``tol * (tau^2 + min(v))`` (relative; metafor's
    rule is absolute). ``y`` is centred first, as metafor does (``P`` removes the mean
    anyway; centring keeps ``P y`` accurate when the mean is large).

    Fisher scoring need not converge: where the expected information is far from the observed
    one, each step overshoots the root of the score by more than the last (a 2-cycle around
    it, metafor's "did not converge" that its ``stepadj`` remedies), and at the root the step
    can be rounding noise that flips sign without shrinking below the tolerance. Both show as a
    step that reverses the previous one without halving it; the two values of tau^2 then
    bracket a root of the score (it changes sign between them), which Brent's method finds
    to the same tolerance.
    """
    y = y - y.mean()
    iterations = 0
    last: tuple[float, float] | None = None  # tau^2 and the step taken from it
    while True:
        iterations += 1
        old = tau2
        adj = _scoring_step(y, v, tau2, reml)
        if last is not None and adj * last[1] < 0.0 and abs(adj) > abs(last[1]) / 2.0:
            lower, upper = sorted((last[0], old))
            root = optimize.brentq(
                lambda t: _scoring_step(y, v, t, reml),
                lower,
                upper,
                xtol=tol * float(v.min()),
                rtol=4 * np.finfo(float).eps,
                maxiter=max(max_iter, 100),
            )
            return float(root), iterations
        while tau2 + adj < 0.0:
            adj /= 2.0
        tau2 = tau2 + adj
        last = (old, adj)
        change = abs(old - tau2)
        if _converged(change, tau2, v, tol):
            return tau2, iterations
        if iterations >= max_iter:
            raise ConvergenceError(
                f"Fisher scoring for the {'REML' if reml else 'ML'} tau^2 did not converge in "
                f"{max_iter} iterations: the last step changed tau^2 = {tau2:.6g} by "
                f"{change:.3g}, more than tol * (tau^2 + min(vi)) = "
                f"{tol * (tau2 + float(v.min())):.3g}. Increase MetaSpec.max_iter or tol, or "
                "use method='PM' or 'DL'."
            )


def _loglik(y: np.ndarray, v: np.ndarray, tau2: float, reml: bool) -> float:
    k = y.shape[0]
    w = 1.0 / (v + tau2)
    rss = _quad(y, w)
    if reml:
        return float(
            -0.5 * (k - 1) * np.log(2 * np.pi)
            - 0.5 * np.sum(np.log(v + tau2))
            - 0.5 * np.log(w.sum())
            - 0.5 * rss
        )
    return float(-0.5 * k * np.log(2 * np.pi) - 0.5 * np.sum(np.log(v + tau2)) - 0.5 * rss)


def _estimate_tau2(y: np.ndarray, v: np.ndarray, spec: MetaSpec) -> tuple[float, float, int]:
    """Return (tau2, se_tau2, iterations) as metafor's rma.uni computes them."""
    k = y.shape[0]
    method = spec.method
    if method == "FE":
        return 0.0, float("nan"), 0
    if k == 1:
        return 0.0, float("nan"), 0
    kp = k - 1
    iterations = 0
    if method == "DL":
        w = 1.0 / v
        p = _projection(w)
        tr_p = float(np.trace(p))
        tau2 = max(0.0, (_quad(y, w) - kp) / tr_p)
        t = max(tau2, 0.0)
        se = np.sqrt(1 / tr_p**2 * (2 * kp + 4 * t * tr_p + 2 * t**2 * np.sum(p * p)))
        return tau2, float(se), 0
    if method in ("HE", "ML", "REML"):
        p_ols = np.eye(k) - np.full((k, k), 1.0 / k)
        pv = p_ols * v[None, :]
        tr_pv = float(np.trace(pv))
        rss = float(y @ p_ols @ y)
        tau2_he = (rss - tr_pv) / kp
        if method == "HE":
            tau2 = max(0.0, tau2_he)
            t = tau2
            se = np.sqrt(1 / kp**2 * (2 * np.sum(pv * pv.T) + 4 * t * tr_pv + 2 * t**2 * kp))
            return tau2, float(se), 0
        reml = method == "REML"
        tau2, iterations = _fisher_scoring(y, v, max(0.0, tau2_he), reml, spec.tol, spec.max_iter)
        # metafor's check that tau^2 = 0 is not a better (local) maximum (relative tolerances)
        if tau2 > spec.tol * float(v.min()):
            ll_tau2 = _loglik(y, v, tau2, reml)
            if _loglik(y, v, 0.0, reml) - ll_tau2 > spec.tol * max(1.0, abs(ll_tau2)):
                tau2 = 0.0
        tau2 = max(0.0, tau2)
        w = 1.0 / (v + tau2)
        if reml:
            p = _projection(w)
            se = np.sqrt(2.0 / np.sum(p * p))
        else:
            se = np.sqrt(2.0 / np.sum(w * w))
        return tau2, float(se), iterations
    if method == "SJ":
        tau2_0 = float(np.mean((y - y.mean()) ** 2))  # var(y) * (k - 1) / k
        w = 1.0 / (v + tau2_0)
        p = _projection(w)
        pv = p * v[None, :]
        tau2 = max(0.0, tau2_0 * _quad(y, w) / kp)
        t = tau2
        se = np.sqrt(
            tau2_0**2
            / kp**2
            * (2 * np.sum(pv * pv.T) + 4 * t * np.sum(pv * p) + 2 * t**2 * np.sum(p * p))
        )
        return tau2, float(se), 0

    # Paule-Mandel: generalised Q(tau^2) = k - 1
    def q_minus_target(tau2: float) -> float:
        return _quad(y, 1.0 / (v + tau2)) - kp

    if q_minus_target(0.0) < 0.0:
        tau2 = 0.0
    else:
        # Q(t) <= sum (y - mean y)^2 / (v + t) < (k - 1) var(y) / t, so Q(var(y)) < k - 1:
        # [0, var(y)] brackets the root whatever the units of y
        upper = float(np.var(y, ddof=1))
        tau2 = float(
            optimize.brentq(
                q_minus_target,
                0.0,
                upper,
                xtol=spec.tol * float(v.min()),
                rtol=4 * np.finfo(float).eps,
                maxiter=max(spec.max_iter, 100),
            )
        )
    w = 1.0 / (v + tau2)
    se = np.sqrt(2 * k**2 / kp / w.sum() ** 2)
    return tau2, float(se), 0


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def fit_meta(
    yi: Sequence[float] | np.ndarray | pd.Series,
    vi: Sequence[float] | np.ndarray | pd.Series,
    spec: MetaSpec | None = None,
    labels: Sequence[Any] | None = None,
    *,
    term: str = "pooled",
) -> MetaResult:
    """Fixed- or random-effects meta-analysis of estimates ``yi`` with variances ``vi``.

    Agrees with metafor 3.8-1 ``rma(yi, vi, method = spec.method, test = "knha" if
    spec.knha else "z")`` and ``predict()`` of it: estimate, SE, CI, z/t test, tau^2 and
    its SE, I^2, H^2, Q and its p-value, prediction interval and weights. With a single
    study, as metafor: tau^2 = 0 for every method (its SE NaN), I^2 = 0, H^2 = 1, Q = 0 with
    p = 1, the z-test even when ``spec.knha`` (metafor switches to ``test = "z"`` with a
    warning), and a prediction interval equal to the CI. The iterative estimators converge
    relative to the data's scale (see :class:`MetaSpec`), where metafor's threshold is absolute.

    Parameters
    ----------
    yi
        Study estimates (e.g. per-centre log hazard ratios).
    vi
        Their sampling variances (squared standard errors).
    spec
        Estimator and options; default REML without Hartung-Knapp.
    labels
        Study labels for the per-study table (default ``1 .. k``).
    term
        Name of the pooled row in the tidy table (e.g. ``"ctc_positive"``).

    Returns
    -------
    MetaResult

    Raises
    ------
    DataError
        If ``yi`` and ``vi`` differ in length, contain missing or infinite values, no study
        is given, or a variance is not positive.

    References
    ----------
    .. [1] DerSimonian R, Laird N. Meta-analysis in clinical trials. Control Clin Trials
       1986;7:177-88.
    .. [2] Paule RC, Mandel J. Consensus values and weighting factors. J Res Natl Bur Stand
       1982;87:377-85.
    .. [3] Viechtbauer W. Bias and efficiency of meta-analytic variance estimators in the
       random-effects model. J Educ Behav Stat 2005;30:261-93.
    .. [4] Hartung J, Knapp G. On tests of the overall treatment effect in meta-analysis with
       normally distributed responses. Stat Med 2001;20:1771-82.
    .. [5] Sidik K, Jonkman JN. A simple confidence interval for meta-analysis. Stat Med
       2002;21:3153-9.
    .. [6] Higgins JPT, Thompson SG. Quantifying heterogeneity in a meta-analysis. Stat Med
       2002;21:1539-58.
    .. [7] Viechtbauer W. Conducting meta-analyses in R with the metafor package. J Stat Softw
       2010;36(3):1-48.

    Examples
    --------
    >>> res = fit_meta([0.3, 0.1, 0.5, 0.2], [0.04, 0.02, 0.09, 0.03], MetaSpec(method="DL"))
    >>> round(res.estimate, 4), res.tau2
    (0.207, 0.0)
    """
    spec = spec if spec is not None else MetaSpec()
    y = np.asarray(yi, dtype=np.float64).ravel()
    v = np.asarray(vi, dtype=np.float64).ravel()
    if y.shape != v.shape:
        raise DataError(
            f"fit_meta: yi and vi must have the same length; got {y.shape[0]} estimates and "
            f"{v.shape[0]} variances."
        )
    k = int(y.shape[0])
    if k == 0:
        raise DataError("fit_meta: no studies to pool (yi is empty).")
    if not (np.isfinite(y).all() and np.isfinite(v).all()):
        bad = np.flatnonzero(~(np.isfinite(y) & np.isfinite(v)))
        raise DataError(
            f"fit_meta: yi and vi must be finite; studies at positions {bad.tolist()} are not. "
            "Drop studies without an estimate before pooling."
        )
    if (v <= 0).any():
        bad = np.flatnonzero(v <= 0)
        raise DataError(
            f"fit_meta: sampling variances must be positive; studies at positions "
            f"{bad.tolist()} have {v[bad].tolist()}. Pass variances (SE squared), not SEs."
        )
    if labels is None:
        labels = list(range(1, k + 1))
    elif len(labels) != k:
        raise DataError(f"fit_meta: {len(labels)} labels given for {k} studies.")

    tau2, se_tau2, iterations = _estimate_tau2(y, v, spec)

    w = 1.0 / (v + tau2)
    sw = w.sum()
    estimate = float(np.sum(w * y) / sw)
    vb = 1.0 / sw
    knha = spec.knha and k > 1
    df = k - 1 if knha else None
    if knha:
        vb *= _quad(y, w) / (k - 1)
    se = float(np.sqrt(vb))
    alpha = 1.0 - spec.level
    if knha:
        crit = float(stats.t.ppf(1 - alpha / 2, k - 1))
        statistic = estimate / se
        p_value = float(2 * stats.t.sf(abs(statistic), k - 1))
    else:
        crit = float(stats.norm.ppf(1 - alpha / 2))
        statistic = estimate / se
        p_value = float(2 * stats.norm.sf(abs(statistic)))

    # heterogeneity statistics from the fixed-effect weights
    w0 = 1.0 / v
    q = _quad(y, w0)
    q_df = k - 1
    q_p = float(stats.chi2.sf(q, q_df)) if q_df > 0 else 1.0  # metafor: QEp = 1 for k = 1
    if k > 1:
        vt = q_df / (w0.sum() - np.sum(w0**2) / w0.sum())
        if spec.method == "FE":
            i2 = max(0.0, 100.0 * (q - q_df) / q) if q > 0 else 0.0
            h2 = q / q_df
        else:
            i2 = 100.0 * tau2 / (vt + tau2)
            h2 = tau2 / vt + 1.0
    else:  # one study: no heterogeneity to see; metafor reports I^2 = 0, H^2 = 1
        i2, h2 = 0.0, 1.0

    if spec.method == "FE":
        pi_lower = pi_upper = float("nan")
    else:
        half = crit * np.sqrt(vb + tau2)
        pi_lower, pi_upper = estimate - half, estimate + half

    z = float(stats.norm.ppf(1 - alpha / 2))
    se_i = np.sqrt(v)
    per_study = pd.DataFrame(
        {
            "label": list(labels),
            "estimate": y,
            "variance": v,
            "se": se_i,
            "ci_lower": y - z * se_i,
            "ci_upper": y + z * se_i,
            "weight": w,
            "weight_percent": 100.0 * w / sw,
        }
    )
    return MetaResult(
        estimate=estimate,
        se=se,
        ci_lower=estimate - crit * se,
        ci_upper=estimate + crit * se,
        statistic=float(statistic),
        p_value=p_value,
        df=df,
        tau2=float(tau2),
        se_tau2=se_tau2,
        i2=float(i2),
        h2=float(h2),
        q=q,
        q_df=q_df,
        q_p_value=q_p,
        pi_lower=float(pi_lower),
        pi_upper=float(pi_upper),
        k=k,
        iterations=iterations,
        per_study=per_study,
        spec=spec,
        term=term,
    )

"""Competing risks: cumulative incidence, Gray's test, cause-specific and Fine-Gray Cox models.

When patients can die of something else before the event of interest (breast-cancer death
and other deaths in older early-breast-cancer cohorts), ``1 - Kaplan-Meier`` of the event
with other deaths censored overstates its probability. The standard companions are:

- the **cumulative incidence** of each cause by group, the Aalen-Johansen estimator
  (:func:`fit_cumulative_incidence`; R's ``survfit(Surv(time, factor(status)) ~ group)``),
  with the infinitesimal-jackknife standard errors ``survfit`` reports and the Aalen-type
  variances of ``cmprsk::cuminc``, and **Gray's test** of equal cumulative incidence
  (``cmprsk::cuminc``'s ``Tests``, optionally stratified);
- the **cause-specific Cox model** of each cause (the other cause censored;
  :func:`fit_cause_specific_cox`), a model of the rate among those still event-free;
- the **Fine-Gray model** of the subdistribution hazard (:func:`fit_fine_gray`), a model of
  the cumulative incidence itself: patients with a competing event stay in the risk sets with
  inverse-probability-of-censoring weights. It is fitted as R's ``finegray()`` followed by a
  weighted counting-process ``coxph(..., weights = fgwt, cluster = id)``
  (:func:`finegray_expand` then :func:`pooled.models.cox.fit_cox` with case weights). With
  ``strata`` the censoring weights are estimated within each stratum and the model is
  stratified (R's ``finegray(... + strata(centre))`` with ``coxph(... + strata(centre))``).

Status coding throughout: 0 censored, 1 the event of interest, 2 the competing event.
With untied times the Breslow Fine-Gray fit agrees with ``cmprsk::crr``; with tied times
the two weight tied censoring and failure times differently (``crr`` evaluates the
censoring distribution just before each failure time, ``finegray`` moves failures just
before censorings at the same time).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from pooled.errors import ConfigError, DataError
from pooled.models.cox import CoxResult, CoxSpec, fit_cox
from pooled.models.design import build_spec_design
from pooled.results import tidy_frame

__all__ = [
    "CompetingRisksResult",
    "CompetingRisksSpec",
    "CumulativeIncidenceResult",
    "FineGrayResult",
    "cumulative_incidence_arrays",
    "finegray_expand",
    "fit_cause_specific_cox",
    "fit_competing_risks",
    "fit_cumulative_incidence",
    "fit_fine_gray",
    "gray_test",
]

Ties = Literal["efron", "breslow"]
CAUSES = (1, 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompetingRisksSpec:
    """Options of a competing-risks analysis.

    Parameters
    ----------
    duration : str
        Follow-up time (until the first event of either kind, or censoring).
    status : str
        Status column: 0 censored, 1 the event of interest, 2 the competing event.
    event_label, competing_label : str
        Names of the two causes in tables and plots (``"bcss"``, ``"other_death"``).
    group : str or None
        Column whose levels get their own cumulative-incidence curves and are compared by
        Gray's test (the exposure); ``None`` for one curve and no test.
    covariates, categorical, interactions : as :class:`pooled.models.cox.CoxSpec`
        Terms of the cause-specific and Fine-Gray models (exposure first).
    strata : tuple of str
        Strata of the cause-specific and Fine-Gray models (Fine-Gray: censoring weights and
        baseline subdistribution hazard per stratum) and of Gray's test.
    id : str
        Patient identifier: the cluster of the Fine-Gray model's robust standard errors (each
        patient is split into several weighted rows).
    ties : {"efron", "breslow"}
    times : tuple of float
        Times at which the cumulative incidence is reported (and numbers at risk shown).
    level : float
        Confidence level of the pointwise intervals.
    tol, max_iter
        Newton-Raphson convergence of the Cox fits.
    analysis, endpoint : str
        Labels of the tidy table.
    """

    duration: str
    status: str
    event_label: str = "event"
    competing_label: str = "competing"
    group: str | None = None
    covariates: tuple[str, ...] = ()
    categorical: tuple[tuple[str, str], ...] = ()
    interactions: tuple[tuple[str, str], ...] = ()
    strata: tuple[str, ...] = ()
    id: str = "patient_id"
    ties: Ties = "efron"
    times: tuple[float, ...] = (12.0, 24.0, 36.0, 60.0)
    level: float = 0.95
    tol: float = 1e-10
    max_iter: int = 30
    analysis: str = ""
    endpoint: str = ""

    def __post_init__(self) -> None:
        if self.ties not in ("efron", "breslow"):
            raise ConfigError(
                f"CompetingRisksSpec.ties must be 'efron' or 'breslow'; got {self.ties!r}."
            )
        if not 0.0 < self.level < 1.0:
            raise ConfigError(
                f"CompetingRisksSpec.level must lie strictly between 0 and 1; got {self.level!r}."
            )
        for name in ("covariates", "strata"):
            if isinstance(getattr(self, name), str):
                raise ConfigError(
                    f"CompetingRisksSpec.{name} expected a tuple of column names; got a string."
                )
        times = sorted({float(t) for t in self.times})
        if any(not np.isfinite(t) or t < 0 for t in times):
            raise ConfigError(
                f"CompetingRisksSpec.times must be finite and >= 0; got {list(self.times)}."
            )
        object.__setattr__(self, "times", tuple(times))

    def label(self, cause: int) -> str:
        """The name of cause 1 or 2."""
        return self.event_label if cause == 1 else self.competing_label

    def cox_spec(self, **changes: Any) -> CoxSpec:
        """The Cox spec of the models (outcome columns set by the caller)."""
        base = CoxSpec(
            duration=self.duration,
            event=self.status,
            covariates=self.covariates,
            categorical=self.categorical,
            interactions=self.interactions,
            strata=self.strata,
            ties=self.ties,
            tol=self.tol,
            max_iter=self.max_iter,
            term_lr_tests=False,
            analysis=self.analysis,
            endpoint=self.endpoint,
        )
        return replace(base, **changes)


def _status_array(values: pd.Series, what: str) -> np.ndarray:
    status = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(status, (0.0, 1.0, 2.0))
    if bad.any():
        raise DataError(
            f"{what} expected 0 (censored), 1 (event) or 2 (competing event); found "
            f"{sorted(pd.unique(values[bad]).tolist(), key=str)[:5]}. Recode the status."
        )
    return status.astype(np.int64)


def _time_array(values: pd.Series, what: str) -> np.ndarray:
    time = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(time) & (time >= 0))
    if bad.any():
        raise DataError(
            f"{what} expected non-negative times; found {values[bad].head(3).tolist()}."
        )
    return time


# --------------------------------------------------------------------------------------------
# Aalen-Johansen cumulative incidence
# --------------------------------------------------------------------------------------------


def _cmprsk_variance(time: np.ndarray, status: np.ndarray, cause: int) -> np.ndarray:
    """cmprsk's ``cinc`` variance of the cumulative incidence of ``cause`` after each distinct
    time (Aalen-type; Gray's Fortran translated), one value per distinct time, sorted."""
    utimes, inverse = np.unique(time, return_inverse=True)
    n_time = np.bincount(inverse, minlength=utimes.size)
    nd1_all = np.bincount(inverse, weights=(status == cause), minlength=utimes.size)
    nd2_all = np.bincount(inverse, weights=(status != 0) & (status != cause), minlength=utimes.size)
    out = np.zeros(utimes.size)
    fk, f, v1, v2, v3, v = 1.0, 0.0, 0.0, 0.0, 0.0, 0.0
    rs = float(time.size)
    for j in range(utimes.size):
        nd1, nd2 = float(nd1_all[j]), float(nd2_all[j])
        nd = nd1 + nd2
        if nd > 0:
            fkn = fk * (rs - nd) / rs
            if nd1 > 0:
                f = f + fk * nd1 / rs
            if nd2 > 0 and fkn > 0:
                t5 = 1.0 - (nd2 - 1.0) / (rs - 1.0) if nd2 > 1 else 1.0
                t6 = fk * fk * t5 * nd2 / (rs * rs)
                t3 = 1.0 / fkn
                t4 = f / fkn
                v1 += t4 * t4 * t6
                v2 += t3 * t4 * t6
                v3 += t3 * t3 * t6
            if nd1 > 0:
                t5 = 1.0 - (nd1 - 1.0) / (rs - 1.0) if nd1 > 1 else 1.0
                t6 = fk * fk * t5 * nd1 / (rs * rs)
                t3 = 1.0 / fkn if fkn > 0 else 0.0
                t4 = 1.0 + t3 * f
                v1 += t4 * t4 * t6
                v2 += t3 * t4 * t6
                v3 += t3 * t3 * t6
                v = v1 + f * f * v3 - 2.0 * f * v2
            fk = fkn
        out[j] = v
        rs -= n_time[j]
    return out


def cumulative_incidence_arrays(time: np.ndarray, status: np.ndarray) -> pd.DataFrame:
    """Aalen-Johansen estimates of one group, at each distinct time (R's ``survfit`` of a
    competing-risks status), with their infinitesimal-jackknife standard errors and cmprsk's
    Aalen-type variances.

    Parameters
    ----------
    time, status : ndarray
        Follow-up times and status (0 censored, 1 event, 2 competing event).

    Returns
    -------
    DataFrame
        One row per distinct time: ``time, n_risk, n_event, n_competing, n_censor,
        event_free, cif_event, cif_competing`` (``event_free + cif_event + cif_competing =
        1``), ``std_err_event_free, std_err_event, std_err_competing`` (R's ``std.err``, the
        infinitesimal jackknife) and ``variance_event, variance_competing`` (cmprsk's
        ``cuminc`` variances).

    References
    ----------
    .. [1] Aalen OO, Johansen S. An empirical transition matrix for non-homogeneous Markov
       chains based on censored observations. Scand J Stat 1978;5:141-50.
    .. [2] Efron B. Nonparametric standard errors and confidence intervals. Can J Stat
       1981;9:139-58 (the infinitesimal jackknife).
    .. [3] Gray RJ. cmprsk: Subdistribution Analysis of Competing Risks. R package 2.2-11.

    Examples
    --------
    >>> out = cumulative_incidence_arrays(np.array([1.0, 2, 2, 3]), np.array([1, 2, 0, 1]))
    >>> out[["time", "cif_event", "cif_competing"]].round(3).values.tolist()
    [[1.0, 0.25, 0.0], [2.0, 0.25, 0.25], [3.0, 0.75, 0.25]]
    """
    time = np.asarray(time, dtype=np.float64)
    status = np.asarray(status, dtype=np.int64)
    utimes, inverse = np.unique(time, return_inverse=True)
    k = utimes.size
    n_at = np.bincount(inverse, minlength=k).astype(np.float64)
    d1 = np.bincount(inverse, weights=status == 1, minlength=k)
    d2 = np.bincount(inverse, weights=status == 2, minlength=k)
    censor = n_at - d1 - d2
    n_risk = n_at[::-1].cumsum()[::-1]
    # influence of each (time, status) combination (all patients in one share it)
    keys, key_index, counts = np.unique(inverse * 3 + status, return_index=True, return_counts=True)
    g_time = inverse[key_index]
    g_status = status[key_index]
    weight = counts.astype(np.float64)
    influence = np.zeros((keys.size, 3))
    p = np.array([1.0, 0.0, 0.0])
    est = np.zeros((k, 3))
    se = np.zeros((k, 3))
    for j in range(k):
        d = d1[j] + d2[j]
        if d > 0:
            n = n_risk[j]
            at_risk = (g_time >= j).astype(np.float64)
            here = g_time == j
            dn = here & (g_status != 0)
            dn1 = here & (g_status == 1)
            dn2 = here & (g_status == 2)
            u0 = influence[:, 0].copy()
            influence[:, 0] = u0 * (1.0 - d / n) - p[0] * (dn - at_risk * d / n) / n
            influence[:, 1] += u0 * d1[j] / n + p[0] * (dn1 - at_risk * d1[j] / n) / n
            influence[:, 2] += u0 * d2[j] / n + p[0] * (dn2 - at_risk * d2[j] / n) / n
            p = np.array([p[0] * (1.0 - d / n), p[1] + p[0] * d1[j] / n, p[2] + p[0] * d2[j] / n])
            se_now = np.sqrt(weight @ (influence * influence))
        else:
            se_now = se[j - 1] if j else np.zeros(3)
        est[j] = p
        se[j] = se_now
    return pd.DataFrame(
        {
            "time": utimes,
            "n_risk": n_risk.astype(np.int64),
            "n_event": d1.astype(np.int64),
            "n_competing": d2.astype(np.int64),
            "n_censor": censor.astype(np.int64),
            "event_free": est[:, 0],
            "cif_event": est[:, 1],
            "cif_competing": est[:, 2],
            "std_err_event_free": se[:, 0],
            "std_err_event": se[:, 1],
            "std_err_competing": se[:, 2],
            "variance_event": _cmprsk_variance(time, status, 1),
            "variance_competing": _cmprsk_variance(time, status, 2),
        }
    )


def _crst(
    time: np.ndarray, status: np.ndarray, group: np.ndarray, ng: int, rho: float
) -> tuple[np.ndarray, np.ndarray]:
    """Gray's score and its variance in one stratum (cmprsk's ``crst``, translated).

    ``status``: 0 censored, 1 the cause tested, 2 the other cause; ``group`` coded 0..ng-1;
    times sorted. Returns the score of the first ``ng - 1`` groups and its covariance.
    """
    ng1 = ng - 1
    rs = np.bincount(group, minlength=ng).astype(np.float64)
    s = np.zeros(ng1)
    v = np.zeros((ng1, ng1))
    f1m = np.zeros(ng)
    f1 = np.zeros(ng)
    skmm = np.ones(ng)
    skm = np.ones(ng)
    v3 = np.zeros(ng)
    v2 = np.zeros((ng1, ng))
    c = np.zeros((ng, ng))
    fm = 0.0
    utimes, start_at = np.unique(time, return_index=True)
    bounds = np.append(start_at, time.size)
    for u in range(utimes.size):
        lo, hi = bounds[u], bounds[u + 1]
        gs, ms = group[lo:hi], status[lo:hi]
        d = np.zeros((3, ng))
        np.add.at(d, (ms, gs), 1.0)
        nd1, nd2 = d[1].sum(), d[2].sum()
        f = fm
        if nd1 > 0 or nd2 > 0:
            tr = 0.0
            tq = 0.0
            for i in range(ng):
                if rs[i] <= 0:
                    continue
                td = d[1, i] + d[2, i]
                skm[i] = skmm[i] * (rs[i] - td) / rs[i]
                f1[i] = f1m[i] + skmm[i] * d[1, i] / rs[i]
                tr += rs[i] / skmm[i]
                tq += rs[i] * (1.0 - f1m[i]) / skmm[i]
            f = fm + nd1 / tr
            fb = (1.0 - fm) ** rho
            a = np.zeros((ng, ng))
            for i in range(ng):
                if rs[i] <= 0:
                    continue
                t1 = rs[i] / skmm[i]
                a[i, i] = fb * t1 * (1.0 - t1 / tr)
                c[i, i] += a[i, i] * nd1 / (tr * (1.0 - fm))
                for j in range(i + 1, ng):
                    if rs[j] <= 0:
                        continue
                    a[i, j] = -fb * t1 * rs[j] / (skmm[j] * tr)
                    c[i, j] += a[i, j] * nd1 / (tr * (1.0 - fm))
            for i in range(1, ng):
                for j in range(i):
                    a[i, j] = a[j, i]
                    c[i, j] = c[j, i]
            for i in range(ng1):
                if rs[i] <= 0:
                    continue
                s[i] += fb * (d[1, i] - nd1 * rs[i] * (1.0 - f1m[i]) / (skmm[i] * tq))
            if nd1 > 0:
                for k in range(ng):
                    if rs[k] <= 0:
                        continue
                    t4 = 1.0 - (1.0 - f) / skm[k] if skm[k] > 0 else 1.0
                    t5 = 1.0 - (nd1 - 1.0) / (tr * skmm[k] - 1.0) if nd1 > 1 else 1.0
                    t3 = t5 * skmm[k] * nd1 / (tr * rs[k])
                    v3[k] += t4 * t4 * t3
                    for i in range(ng1):
                        t1 = a[i, k] - t4 * c[i, k]
                        v2[i, k] += t1 * t4 * t3
                        for j in range(i + 1):
                            t2 = a[j, k] - t4 * c[j, k]
                            v[i, j] += t1 * t2 * t3
            if nd2 > 0:
                for k in range(ng):
                    if skm[k] <= 0 or d[2, k] <= 0:
                        continue
                    t4 = (1.0 - f) / skm[k]
                    t5 = 1.0 - (d[2, k] - 1.0) / (rs[k] - 1.0) if d[2, k] > 1 else 1.0
                    t3 = t5 * (skmm[k] ** 2) * d[2, k] / (rs[k] ** 2)
                    v3[k] += t4 * t4 * t3
                    for i in range(ng1):
                        t1 = t4 * c[i, k]
                        v2[i, k] -= t1 * t4 * t3
                        for j in range(i + 1):
                            t2 = t4 * c[j, k]
                            v[i, j] += t1 * t2 * t3
        if hi >= time.size:
            break
        rs -= np.bincount(gs, minlength=ng)
        fm = f
        f1m = f1.copy()
        skmm = skm.copy()
    for i in range(ng1):
        for j in range(i + 1):
            for k in range(ng):
                v[i, j] += c[i, k] * c[j, k] * v3[k] + c[i, k] * v2[j, k] + c[j, k] * v2[i, k]
    v = np.tril(v) + np.tril(v, -1).T
    return s, v


def gray_test(
    time: np.ndarray,
    status: np.ndarray,
    group: np.ndarray,
    *,
    strata: np.ndarray | None = None,
    rho: float = 0.0,
) -> pd.DataFrame:
    """Gray's test of equal cumulative incidence across groups, for each cause (R's
    ``cmprsk::cuminc(...)$Tests``).

    Parameters
    ----------
    time, status : ndarray
        Times and status (0 censored, 1 and 2 the causes).
    group : ndarray
        Group labels (at least two levels).
    strata : ndarray, optional
        Strata: the scores and variances are summed over strata.
    rho : float
        Power of the weight function (0: the log-rank analogue).

    Returns
    -------
    DataFrame
        One row per cause (1, 2): ``cause, chisq, df, p_value`` (``chisq`` NaN when the
        variance is singular).

    References
    ----------
    .. [1] Gray RJ. A class of K-sample tests for comparing the cumulative incidence of a
       competing risk. Ann Stat 1988;16:1141-54.

    Examples
    --------
    >>> t = np.arange(1.0, 9.0); s = np.array([1, 2, 1, 0, 1, 1, 2, 0]); g = np.repeat([0, 1], 4)
    >>> gray_test(t, s, g)["cause"].tolist()
    [1, 2]
    """
    time = np.asarray(time, dtype=np.float64)
    status = np.asarray(status, dtype=np.int64)
    levels, gcode = np.unique(np.asarray(group), return_inverse=True)
    ng = levels.size
    if ng < 2:
        raise DataError(f"Gray's test needs at least two groups; found {ng}.")
    scodes = (
        np.zeros(time.size, dtype=np.int64)
        if strata is None
        else np.unique(np.asarray(strata), return_inverse=True)[1].reshape(-1)
    )
    rows = []
    for cause in CAUSES:
        m = np.where(status == 0, 0, np.where(status == cause, 1, 2))
        score = np.zeros(ng - 1)
        variance = np.zeros((ng - 1, ng - 1))
        for k in np.unique(scodes):
            inside = scodes == k
            order = np.argsort(time[inside], kind="stable")
            s, v = _crst(time[inside][order], m[inside][order], gcode[inside][order], ng, rho)
            score += s
            variance += v
        try:
            chisq = float(score @ np.linalg.solve(variance, score))
        except np.linalg.LinAlgError:
            chisq = float("nan")
        rows.append(
            {"cause": cause, "chisq": chisq, "df": ng - 1,
             "p_value": float(stats.chi2.sf(chisq, ng - 1))}
        )  # fmt: skip
    return pd.DataFrame(rows)


@dataclass(frozen=True, slots=True)
class CumulativeIncidenceResult:
    """Cumulative incidence of each cause by group (Aalen-Johansen), and Gray's test.

    Attributes
    ----------
    spec : the :class:`CompetingRisksSpec` used.
    curves : one row per group and distinct time (:func:`cumulative_incidence_arrays`'
        columns, with ``group`` and ``label`` first and pointwise intervals
        ``ci_lower_event, ci_upper_event, ci_lower_competing, ci_upper_competing``: log-log
        intervals ``F^exp(+-z se / (F log F))`` from the jackknife standard errors).
    at_times : the same columns at ``spec.times`` (the last value at or before each time;
        ``n_risk`` = patients still at risk at the time), as R's ``summary(fit, times = )``.
    gray : Gray's test per cause (:func:`gray_test`; empty without ``spec.group``).
    n, events, competing_events : patients, events of interest, competing events.
    n_dropped : rows without time, status or group.
    """

    spec: CompetingRisksSpec
    curves: pd.DataFrame
    at_times: pd.DataFrame
    gray: pd.DataFrame
    n: int
    events: int
    competing_events: int
    n_dropped: int = 0

    @property
    def groups(self) -> tuple[Any, ...]:
        return tuple(dict.fromkeys(self.curves["group"]))

    def step_frame(self) -> pd.DataFrame:
        """The curves with a row at time 0 (incidence 0) per group, for plotting as post-steps."""
        parts = []
        for _, part in self.curves.groupby("group", sort=False):
            first = part.iloc[[0]].copy()
            first["time"] = 0.0
            first["n_risk"] = int(part["n_risk"].iloc[0])
            for col in ("n_event", "n_competing", "n_censor"):
                first[col] = 0
            for col in ("cif_event", "cif_competing", "ci_lower_event", "ci_upper_event",
                        "ci_lower_competing", "ci_upper_competing"):  # fmt: skip
                first[col] = 0.0
            first["event_free"] = 1.0
            parts += [first, part]
        return pd.concat(parts, ignore_index=True)

    def risk_table(self, times: tuple[float, ...] | None = None) -> pd.DataFrame:
        """Numbers at risk per group at ``times`` (default ``spec.times`` and 0)."""
        times = tuple(sorted({0.0, *(times if times is not None else self.spec.times)}))
        return _at_times(self.curves, times)[["group", "label", "time", "n_risk"]]

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: the cumulative incidence of each cause per group at ``spec.times``
        (``term`` = ``cif_<label>``, ``estimate`` with its jackknife ``std_error`` and
        interval; extra columns ``group``, ``time``, ``n_risk``, ``variance_aalen``), then
        Gray's test per cause (``term`` = ``gray_test_<label>``, ``chisq``, ``df``,
        ``p_value``)."""
        rows: list[dict[str, Any]] = []
        base = {"analysis": self.spec.analysis, "endpoint": self.spec.endpoint,
                "model": "cumulative_incidence", "n": self.n}  # fmt: skip
        for rec in self.at_times.to_dict("records"):
            for cause, key in ((1, "event"), (2, "competing")):
                rows.append(
                    {
                        **base,
                        "term": f"cif_{self.spec.label(cause)}",
                        "estimate": rec[f"cif_{key}"],
                        "std_error": rec[f"std_err_{key}"],
                        "ci_lower": rec[f"ci_lower_{key}"],
                        "ci_upper": rec[f"ci_upper_{key}"],
                        "events": self.events if cause == 1 else self.competing_events,
                        "group": rec["label"],
                        "time": rec["time"],
                        "n_risk": rec["n_risk"],
                        "variance_aalen": rec[f"variance_{key}"],
                    }
                )
        for rec in self.gray.to_dict("records"):
            rows.append(
                {
                    **base,
                    "model": "gray_test",
                    "term": f"gray_test_{self.spec.label(int(rec['cause']))}",
                    "p_value": rec["p_value"],
                    "events": self.events if rec["cause"] == 1 else self.competing_events,
                    "chisq": rec["chisq"],
                    "df": rec["df"],
                }
            )
        return tidy_frame(rows)


def _loglog_ci(f: np.ndarray, se: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise interval ``F^exp(+-z se / (F log F))`` (log-log scale; F itself where F is
    0 or 1 or the SE is 0)."""
    ok = (f > 0) & (f < 1) & (se > 0)
    safe = np.where(ok, f, 0.5)
    width = z * np.where(ok, se, 0.0) / (safe * np.log(safe))
    a, b = safe ** np.exp(-width), safe ** np.exp(width)
    return np.where(ok, np.minimum(a, b), f), np.where(ok, np.maximum(a, b), f)


def _at_times(curves: pd.DataFrame, times: tuple[float, ...]) -> pd.DataFrame:
    rows = []
    for group, part in curves.groupby("group", sort=False):
        t = part["time"].to_numpy()
        n0 = int(part["n_risk"].iloc[0])
        for when in times:
            k = int(np.searchsorted(t, when, side="right")) - 1
            later = np.searchsorted(t, when, side="left")
            n_risk = int(part["n_risk"].iloc[later]) if later < len(t) else 0
            rec: dict[Any, Any]
            if k < 0:
                rec = dict.fromkeys(part.columns, 0.0)
                rec.update(group=group, label=part["label"].iloc[0], event_free=1.0)
                n_risk = n0
            else:
                rec = part.iloc[k].to_dict()
            rec["time"] = float(when)
            rec["n_risk"] = n_risk
            rows.append(rec)
    return pd.DataFrame(rows, columns=curves.columns)


def fit_cumulative_incidence(
    data: pd.DataFrame, spec: CompetingRisksSpec
) -> CumulativeIncidenceResult:
    """Cumulative incidence of the event and of the competing event by group, with Gray's
    test.

    Parameters
    ----------
    data : DataFrame
        One row per patient with ``spec.duration``, ``spec.status`` (0/1/2) and, when given,
        ``spec.group`` and ``spec.strata`` (Gray's test is stratified by them).
    spec : CompetingRisksSpec

    Returns
    -------
    CumulativeIncidenceResult
        Estimates equal R's ``survfit(Surv(time, factor(status)) ~ group)`` ``pstate`` (and
        cmprsk's ``cuminc``); ``std_err_*`` are survfit's infinitesimal-jackknife standard
        errors, ``variance_*`` cmprsk's; Gray's test as ``cuminc``'s ``Tests``.

    Raises
    ------
    DataError
        A status outside 0/1/2, negative times, or no patients.

    References
    ----------
    .. [1] Aalen OO, Johansen S. Scand J Stat 1978;5:141-50.
    .. [2] Gray RJ. A class of K-sample tests for comparing the cumulative incidence of a
       competing risk. Ann Stat 1988;16:1141-54.
    .. [3] Putter H, Fiocco M, Geskus RB. Tutorial in biostatistics: competing risks and
       multi-state models. Stat Med 2007;26:2389-430.

    Examples
    --------
    >>> df = pd.DataFrame({"t": [1.0, 2, 2, 3, 4, 5], "s": [1, 2, 0, 1, 1, 0],
    ...                    "g": [0, 0, 0, 1, 1, 1]})
    >>> res = fit_cumulative_incidence(df, CompetingRisksSpec(duration="t", status="s",
    ...                                group="g", times=(2,)))
    >>> res.at_times[["label", "cif_event"]].values.tolist()
    [['0', 0.3333333333333333], ['1', 0.0]]
    """
    needed = [spec.duration, spec.status] + ([spec.group] if spec.group else []) + list(spec.strata)
    absent = [c for c in needed if c not in data.columns]
    if absent:
        raise ConfigError(f"Columns {absent} expected in the data; found {list(data.columns)}.")
    complete = data[needed].notna().all(axis=1).to_numpy()
    kept = data.loc[complete]
    if kept.empty:
        raise DataError("No patients with time and status for the cumulative incidence.")
    time = _time_array(kept[spec.duration], f"'{spec.duration}'")
    status = _status_array(kept[spec.status], f"'{spec.status}'")
    if spec.group:
        levels = pd.Series(kept[spec.group]).astype(object)
        order = sorted(pd.unique(levels), key=lambda v: (str(type(v)), v))
    else:
        levels = pd.Series(np.zeros(len(kept)), index=kept.index)
        order = [0.0]
    z = float(stats.norm.ppf(0.5 + spec.level / 2.0))
    parts = []
    for level in order:
        inside = (levels == level).to_numpy()
        curve = cumulative_incidence_arrays(time[inside], status[inside])
        for key in ("event", "competing"):
            lower, upper = _loglog_ci(
                curve[f"cif_{key}"].to_numpy(), curve[f"std_err_{key}"].to_numpy(), z
            )
            curve[f"ci_lower_{key}"] = lower
            curve[f"ci_upper_{key}"] = upper
        curve.insert(0, "label", _level_label(level) if spec.group else "all")
        curve.insert(0, "group", level)
        parts.append(curve)
    curves = pd.concat(parts, ignore_index=True)
    gray = pd.DataFrame(columns=["cause", "chisq", "df", "p_value"])
    if spec.group and len(order) >= 2:
        strata = None
        if spec.strata:
            strata = kept[list(spec.strata)].astype(str).agg("|".join, axis=1).to_numpy()
        gray = gray_test(time, status, levels.to_numpy(), strata=strata)
    return CumulativeIncidenceResult(
        spec=spec,
        curves=curves,
        at_times=_at_times(curves, spec.times),
        gray=gray,
        n=int(len(kept)),
        events=int((status == 1).sum()),
        competing_events=int((status == 2).sum()),
        n_dropped=int((~complete).sum()),
    )


def _level_label(level: Any) -> str:
    if isinstance(level, float) and level.is_integer():
        return str(int(level))
    return str(level)


# --------------------------------------------------------------------------------------------
# Cause-specific Cox
# --------------------------------------------------------------------------------------------


def fit_cause_specific_cox(
    data: pd.DataFrame, spec: CompetingRisksSpec, cause: int = 1, **changes: Any
) -> CoxResult:
    """The cause-specific Cox model of ``cause`` (the other cause censored), stratified by
    ``spec.strata`` (R's ``coxph(Surv(time, status == cause) ~ ... + strata(centre))``).

    ``changes`` replace fields of the Cox spec (``cluster="centre"``, ``ties="breslow"``).

    References
    ----------
    .. [1] Prentice RL, Kalbfleisch JD, Peterson AV, et al. The analysis of failure times in
       the presence of competing risks. Biometrics 1978;34:541-54.

    Examples
    --------
    >>> # fit_cause_specific_cox(cohort, CompetingRisksSpec(..., covariates=("ctc_positive",)))
    """
    if cause not in CAUSES:
        raise ConfigError(f"cause expected 1 or 2; got {cause!r}.")
    if not spec.covariates:
        raise ConfigError("fit_cause_specific_cox expected covariates in the spec; got none.")
    column = f"_{spec.status}_cause{cause}"
    frame = data.copy()
    status = pd.to_numeric(frame[spec.status], errors="coerce")
    frame[column] = (status == cause).astype(float).where(status.notna())
    cox = spec.cox_spec(event=column, **changes)
    result = fit_cox(frame, cox)
    return result


# --------------------------------------------------------------------------------------------
# Fine-Gray: finegray() and the weighted Cox model
# --------------------------------------------------------------------------------------------


def _censoring_survival(time: np.ndarray, status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier of censoring at the censoring times, failures leaving the risk set just
    before censorings at the same time (finegray's ``newtime - 0.2``)."""
    censored = status == 0
    ctimes, counts = np.unique(time[censored], return_counts=True)
    if ctimes.size == 0:
        return ctimes, np.ones(0)
    sorted_time = np.sort(time)
    later = time.size - np.searchsorted(sorted_time, ctimes, side="right")
    risk = later + counts
    return ctimes, np.cumprod(1.0 - counts / risk)


def finegray_expand(
    data: pd.DataFrame,
    *,
    duration: str,
    status: str,
    strata: tuple[str, ...] = (),
    prefix: str = "fg",
) -> pd.DataFrame:
    """The Fine-Gray counting-process data of the event (status 1), as R's ``finegray()``.

    Patients censored or with the event keep one row ``(zero, time]``; a patient with the
    competing event (status 2) stays in the risk set: the row is extended to the end of its
    censoring interval, then one row per later interval of the censoring distribution that
    contains an event time, weighted ``G(t) / G(T-)`` (the Kaplan-Meier of censoring,
    failures counted before censorings at the same time). With ``strata`` the censoring
    distribution is estimated and the rows built within each stratum (strata without an
    event are left out, as R does); fit the model with the same strata.

    Parameters
    ----------
    data : DataFrame
        One row per patient (right-censored), every column kept.
    duration, status : str
        Follow-up time and status (0 censored, 1 the event, 2 the competing event).
    strata : tuple of str
        Columns within which the censoring weights are estimated.
    prefix : str
        The new columns are ``<prefix>start, <prefix>stop, <prefix>status, <prefix>wt``.

    Returns
    -------
    DataFrame
        Rows by stratum (sorted), patients in input order, each followed by its added rows;
        a fresh index.

    References
    ----------
    .. [1] Fine JP, Gray RJ. A proportional hazards model for the subdistribution of a
       competing risk. J Am Stat Assoc 1999;94:496-509.
    .. [2] Geskus RB. Cause-specific cumulative incidence estimation and the Fine and Gray
       model under both left truncation and right censoring. Biometrics 2011;67:39-49.
    .. [3] Therneau T, Crowson C, Atkinson E. Multi-state models and competing risks.
       survival package vignette "compete", 2023.

    Examples
    --------
    >>> df = pd.DataFrame({"t": [1.0, 2, 3, 4], "s": [2, 1, 0, 1]})
    >>> finegray_expand(df, duration="t", status="s")[["fgstart", "fgstop", "fgstatus",
    ...                                                 "fgwt"]].values.tolist()
    [[0.0, 3.0, 0.0, 1.0], [0.0, 4.0, 0.0, 0.5], [0.0, 2.0, 1.0, 1.0], [0.0, 3.0, 0.0, 1.0], [0.0, 4.0, 1.0, 1.0]]
    """
    absent = [c for c in (duration, status, *strata) if c not in data.columns]
    if absent:
        raise ConfigError(f"Columns {absent} expected in the data; found {list(data.columns)}.")
    frame = data.reset_index(drop=True)
    time = _time_array(frame[duration], f"'{duration}'")
    code = _status_array(frame[status], f"'{status}'")
    minimum = float(time.min()) if time.size else 0.0
    zero = 0.0 if minimum > 0 else 2.0 * minimum - 1.0
    if strata:
        labels = frame[list(strata)].astype(str).agg("\x1f".join, axis=1)
        stratum_levels = sorted(pd.unique(labels))
        stratum = labels.map({s: i for i, s in enumerate(stratum_levels)}).to_numpy()
    else:
        stratum = np.zeros(len(frame), dtype=np.int64)
    rows_out: list[np.ndarray] = []
    start_out: list[np.ndarray] = []
    stop_out: list[np.ndarray] = []
    wt_out: list[np.ndarray] = []
    for k in np.unique(stratum):
        idx = np.flatnonzero(stratum == k)
        t, s = time[idx], code[idx]
        event_times = np.unique(t[s == 1])
        if event_times.size == 0:
            continue
        ctimes, cprob = _censoring_survival(t, s)
        ct2 = np.append(ctimes, t.max())
        cp2 = np.append(1.0, cprob)
        keep = np.zeros(ct2.size, dtype=bool)
        keep[0] = True
        keep[np.searchsorted(ct2, event_times, side="left")] = True
        kept = np.flatnonzero(keep)
        expand = s == 2
        j = np.searchsorted(ct2, t, side="left")
        first_stop = np.where(expand, ct2[np.minimum(j, ct2.size - 1)], t)
        # the added rows: every kept interval after the row's own
        first_added = np.searchsorted(kept, j, side="right")
        n_added = np.where(expand, kept.size - first_added, 0)
        reps = 1 + n_added
        out_rows = np.repeat(np.arange(idx.size), reps)
        offsets = np.cumsum(reps) - reps
        position = np.arange(out_rows.size) - offsets[out_rows]  # 0 = the original row
        added = position > 0
        interval = np.zeros(out_rows.size, dtype=np.int64)
        interval[added] = kept[first_added[out_rows[added]] + position[added] - 1]
        start = np.full(out_rows.size, zero)
        stop = first_stop[out_rows].astype(np.float64)
        weight = np.ones(out_rows.size)
        start[added] = ct2[interval[added] - 1]
        stop[added] = ct2[interval[added]]
        weight[added] = cp2[interval[added]] / cp2[j[out_rows[added]]]
        rows_out.append(idx[out_rows])
        start_out.append(start)
        stop_out.append(stop)
        wt_out.append(weight)
    if not rows_out:
        raise DataError(f"No events (status 1) in '{status}': the Fine-Gray model needs some.")
    rows = np.concatenate(rows_out)
    out = frame.iloc[rows].reset_index(drop=True)
    out[f"{prefix}start"] = np.concatenate(start_out)
    out[f"{prefix}stop"] = np.concatenate(stop_out)
    out[f"{prefix}status"] = (code[rows] == 1).astype(np.float64)
    out[f"{prefix}wt"] = np.concatenate(wt_out)
    return out


@dataclass(frozen=True, slots=True)
class FineGrayResult:
    """A Fine-Gray model of the subdistribution hazard of the event.

    ``fit`` is the weighted counting-process Cox fit on the :func:`finegray_expand` rows (its
    ``n`` counts rows; ``std_errors`` are the robust ones, clustered by patient; the
    model-based ones are ``naive_std_errors``). ``n_patients`` is the patients analysed,
    ``dropped`` the patients without a covariate, counted per centre.
    """

    spec: CompetingRisksSpec
    fit: CoxResult
    n_patients: int
    n_rows: int
    events: int
    competing_events: int
    dropped: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def model(self) -> str:
        return "fine_gray_stratified" if self.spec.strata else "fine_gray"

    @property
    def coefficients(self) -> np.ndarray:
        return self.fit.coefficients

    @property
    def std_errors(self) -> np.ndarray:
        return self.fit.std_errors

    @property
    def term_names(self) -> tuple[str, ...]:
        return self.fit.term_names

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per coefficient: the log subdistribution hazard ratio in
        ``estimate``, ``hr`` = the subdistribution HR, robust SE; ``n`` = patients; extra
        columns ``z``, ``naive_std_error``, ``n_rows``, ``competing_events``."""
        frame = self.fit.to_frame()
        keep = [c for c in frame.columns if not c.startswith("model_") and c != "lr_p_value"]
        frame = frame[keep].assign(
            model=self.model,
            n=self.n_patients,
            n_rows=self.n_rows,
            competing_events=self.competing_events,
        )
        return frame.reset_index(drop=True)


def fit_fine_gray(data: pd.DataFrame, spec: CompetingRisksSpec, **changes: Any) -> FineGrayResult:
    """Fine-Gray regression of the event's subdistribution hazard.

    The complete cases (every covariate, stratum and the outcome) are expanded by
    :func:`finegray_expand` (censoring weights within ``spec.strata``) and fitted by a
    weighted counting-process Cox model with robust standard errors clustered by
    ``spec.id``: R's ``finegray()`` then ``coxph(Surv(fgstart, fgstop, fgstatus) ~ ... ,
    weights = fgwt, cluster = id)`` (with ``+ strata(...)`` in both when ``spec.strata``).
    ``changes`` replace fields of the Cox spec (``ties="breslow"``).

    Returns
    -------
    FineGrayResult

    Raises
    ------
    DataError
        No events of interest, or a model the data cannot support.

    References
    ----------
    .. [1] Fine JP, Gray RJ. A proportional hazards model for the subdistribution of a
       competing risk. J Am Stat Assoc 1999;94:496-509.
    .. [2] Geskus RB. Biometrics 2011;67:39-49.
    .. [3] Latouche A, Allignol A, Beyersmann J, Labopin M, Fine JP. A competing risks
       analysis should report results on all cause-specific hazards and cumulative incidence
       functions. J Clin Epidemiol 2013;66:648-53.

    Examples
    --------
    >>> # fit_fine_gray(cohort, CompetingRisksSpec(duration="bcss_months", status="bcss_cr",
    >>> #               covariates=("ctc_positive", "age"), strata=("centre",)))
    """
    if not spec.covariates:
        raise ConfigError("fit_fine_gray expected covariates in the spec; got none.")
    if spec.id not in data.columns:
        raise ConfigError(
            f"fit_fine_gray clusters by the patient id '{spec.id}', which is not in the data."
        )
    patient_spec = spec.cox_spec(cluster=spec.id, concordance=False)
    design = build_spec_design(data, patient_spec)
    complete = data.iloc[design.rows].reset_index(drop=True)
    status = _status_array(complete[spec.status], f"'{spec.status}'")
    expanded = finegray_expand(
        complete, duration=spec.duration, status=spec.status, strata=spec.strata
    )
    cox = spec.cox_spec(
        start="fgstart",
        duration="fgstop",
        event="fgstatus",
        weights="fgwt",
        cluster=spec.id,
        concordance=False,
    )
    cox = replace(cox, **changes)
    fit = fit_cox(expanded, cox)
    return FineGrayResult(
        spec=spec,
        fit=fit,
        n_patients=int(expanded[spec.id].nunique()),
        n_rows=len(expanded),
        events=int((status == 1).sum()),
        competing_events=int((status == 2).sum()),
        dropped=design.dropped,
    )


@dataclass(frozen=True, slots=True)
class CompetingRisksResult:
    """The competing-risks analyses of one endpoint: cumulative incidence with Gray's test,
    the cause-specific Cox model of each cause, and the Fine-Gray model of the event."""

    spec: CompetingRisksSpec
    incidence: CumulativeIncidenceResult
    cause_specific: tuple[tuple[int, CoxResult], ...]
    fine_gray: FineGrayResult | None = None

    def cause_specific_fit(self, cause: int = 1) -> CoxResult:
        for c, fit in self.cause_specific:
            if c == cause:
                return fit
        raise ConfigError(f"no cause-specific model of cause {cause}.")

    def to_frame(self) -> pd.DataFrame:
        """The cumulative incidence and Gray's test rows, then each cause-specific model's
        coefficients (``model`` = ``cause_specific_<label>``), then the Fine-Gray model's."""
        frames = [self.incidence.to_frame()]
        for cause, fit in self.cause_specific:
            frame = fit.to_frame()
            keep = [c for c in frame.columns if not c.startswith("model_")]
            frames.append(frame[keep].assign(model=f"cause_specific_{self.spec.label(cause)}"))
        if self.fine_gray is not None:
            frames.append(self.fine_gray.to_frame())
        return pd.concat(frames, ignore_index=True)


def fit_competing_risks(
    data: pd.DataFrame, spec: CompetingRisksSpec, *, fine_gray: bool = True
) -> CompetingRisksResult:
    """Every competing-risks analysis of :mod:`pooled.models.competing` in one call: the
    cumulative incidence by ``spec.group`` with Gray's test, the cause-specific Cox model of
    both causes and (``fine_gray``) the Fine-Gray model of the event.

    Raises
    ------
    DataError
        No events of interest, or a model the data cannot support.

    References
    ----------
    .. [1] Latouche A, Allignol A, Beyersmann J, Labopin M, Fine JP. A competing risks
       analysis should report results on all cause-specific hazards and cumulative incidence
       functions. J Clin Epidemiol 2013;66:648-53.
    .. [2] Austin PC, Lee DS, Fine JP. Introduction to the analysis of survival data in the
       presence of competing risks. Circulation 2016;133:601-9.

    Examples
    --------
    >>> # fit_competing_risks(cohort, CompetingRisksSpec(duration="bcss_months", status="cr",
    >>> #     event_label="bcss", competing_label="other_death", group="ctc_positive",
    >>> #     covariates=("ctc_positive", "age"), strata=("centre",)))
    """
    incidence = fit_cumulative_incidence(data, spec)
    if incidence.events == 0:
        raise DataError(f"No {spec.event_label} events: no competing-risks models can be fitted.")
    cause_specific = [(1, fit_cause_specific_cox(data, spec, 1))]
    if incidence.competing_events > 0:
        cause_specific.append((2, fit_cause_specific_cox(data, spec, 2)))
    return CompetingRisksResult(
        spec=spec,
        incidence=incidence,
        cause_specific=tuple(cause_specific),
        fine_gray=fit_fine_gray(data, spec) if fine_gray else None,
    )

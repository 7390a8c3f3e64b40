"""Descriptive survival: Kaplan-Meier by group, the (stratified) log-rank test and median
follow-up by reverse Kaplan-Meier.

Every number follows R's survival package (3.5-3): ``survfit(..., conf.type = "log-log")``
for the curves and their pointwise confidence bands, ``quantile.survfit`` for the median and
its confidence interval, ``summary(fit, times = ...)`` for survival at fixed times, and
``survdiff(Surv(time, status) ~ group + strata(centre))`` for the log-rank test.

The kernels are vectorised NumPy: one sort of the data by (group, time), counts per distinct
time with ``np.add.reduceat``, numbers at risk from positions in the sorted array, and
cumulative products / sums per group. They handle a million patients in a fraction of a
second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from pooled.errors import ConfigError, DataError
from pooled.results import tidy_frame

ConfType = Literal["log-log", "log", "plain"]
Counts = Literal["interval", "cumulative"]

__all__ = [
    "ConfType",
    "Counts",
    "FollowUpResult",
    "KMResult",
    "KMSpec",
    "LogrankResult",
    "fit_kaplan_meier",
    "kaplan_meier_arrays",
    "logrank_arrays",
    "logrank_test",
    "median_followup",
]

_QUANTILE_TOLERANCE = float(np.sqrt(np.finfo(float).eps))  # R: sqrt(.Machine$double.eps)


# --------------------------------------------------------------------------------------------
# Specs and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KMSpec:
    """Options of a Kaplan-Meier analysis.

    Parameters
    ----------
    duration, event
        Columns with the follow-up time and the event indicator (1 = event, 0 = censored).
    group
        Column defining the curves (e.g. ``"ctc_positive"``); ``None`` for one curve.
    times
        Times at which survival (with its CI) and the numbers at risk are reported, e.g.
        ``(12, 24, 36, 60)`` months; sorted and de-duplicated.
    risk_times
        Times of the numbers-at-risk table under a plot; ``None`` uses ``times``.
    level
        Confidence level of the pointwise intervals and of the median's interval.
    conf_type
        Scale of the pointwise interval: ``"log-log"`` (default, as the issue asks), ``"log"``
        (R's default) or ``"plain"``.
    endpoint
        Name of the endpoint, copied into the tidy table (e.g. ``"os"``).
    counts
        How ``n_event`` and ``n_censor`` at ``times`` are counted: ``"interval"`` (default, R's
        ``summary(fit, times = )``: in the interval since the previous requested time, the
        first interval from the start) or ``"cumulative"`` (everything up to the time).
    extend
        ``True`` (default, R's ``summary(fit, times =, extend = TRUE)``): a time after a
        group's last observed time is reported with the curve carried forward and no one at
        risk. ``False`` (R's default ``extend = FALSE``): such times are left out for that
        group. The default keeps one row per group and time, as the report's table expects.
    """

    duration: str = "os_months"
    event: str = "os_event"
    group: str | None = None
    times: tuple[float, ...] = ()
    risk_times: tuple[float, ...] | None = None
    level: float = 0.95
    conf_type: ConfType = "log-log"
    endpoint: str = ""
    counts: Counts = "interval"
    extend: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.level < 1.0:
            raise ConfigError(
                f"KMSpec.level must lie strictly between 0 and 1; got {self.level!r}. "
                "Use e.g. level=0.95."
            )
        if self.conf_type not in ("log-log", "log", "plain"):
            raise ConfigError(
                "KMSpec.conf_type must be one of 'log-log', 'log', 'plain'; "
                f"got {self.conf_type!r}."
            )
        if self.counts not in ("interval", "cumulative"):
            raise ConfigError(
                f"KMSpec.counts must be 'interval' or 'cumulative'; got {self.counts!r}."
            )
        if not isinstance(self.extend, bool):
            raise ConfigError(f"KMSpec.extend must be True or False; got {self.extend!r}.")
        times = sorted({float(t) for t in self.times})
        if any(not np.isfinite(t) or t < 0 for t in times):
            raise ConfigError(
                f"KMSpec.times must be finite and non-negative; got {list(self.times)}."
            )
        object.__setattr__(self, "times", tuple(times))
        if self.risk_times is not None:
            object.__setattr__(self, "risk_times", tuple(float(t) for t in self.risk_times))


@dataclass(frozen=True, slots=True)
class KMResult:
    """Kaplan-Meier curves by group, with everything a plot or report needs.

    Attributes
    ----------
    spec
        The :class:`KMSpec` used.
    curves
        One row per group and distinct observed time (as R's ``survfit`` object):
        ``group, label, time, n_risk, n_event, n_censor, survival, std_err,
        cumhaz_std_err, ci_lower, ci_upper``. ``std_err`` is the Greenwood standard error of
        the survival probability (as ``summary.survfit`` prints it); ``cumhaz_std_err`` is
        the standard error of the cumulative hazard (``survfit``'s ``std.err``), i.e.
        ``std_err / survival``.
    summary
        One row per group: ``group, label, n, events, median, median_lower, median_upper``
        (``NaN`` where the curve, or its band, never reaches 0.5).
    at_times
        Survival at ``spec.times`` as R's ``summary(fit, times = ..., extend = TRUE)``: the
        value at the last observed time on or before ``t`` (survival 1, SE 0 and limits 1
        before the first); ``n_risk`` is the number still at risk at ``t`` (0 after the last
        time): ``group, label, time, n_risk, n_event, n_censor, survival, std_err, ci_lower,
        ci_upper``. ``n_event`` and ``n_censor`` count the interval since the previous
        requested time (``spec.counts = "interval"``) or everything up to ``t``
        (``"cumulative"``). After a group's last observed time the curve is carried forward
        (``spec.extend``) or the row is left out.
    risk_table
        Numbers at risk at ``spec.risk_times`` (or ``spec.times``): ``group, label, time,
        n_risk``.
    n_dropped
        Rows dropped because duration, event or group was missing.
    """

    spec: KMSpec
    curves: pd.DataFrame
    summary: pd.DataFrame
    at_times: pd.DataFrame
    risk_table: pd.DataFrame
    n_dropped: int = 0

    @property
    def groups(self) -> tuple[Any, ...]:
        """The group levels, in the order of the curves."""
        return tuple(self.summary["group"])

    def step_frame(self) -> pd.DataFrame:
        """The curves with a starting row at time 0 (survival 1) per group, for plotting.

        Draw each group's ``survival`` (and ``ci_lower`` / ``ci_upper``) as a post-step
        function of ``time``; rows with ``n_censor > 0`` carry the censoring marks.
        """
        first = self.summary[["group", "label", "n"]].rename(columns={"n": "n_risk"})
        first = first.assign(
            time=0.0,
            n_event=0,
            n_censor=0,
            survival=1.0,
            std_err=0.0,
            cumhaz_std_err=0.0,
            ci_lower=1.0,
            ci_upper=1.0,
            _order=0,
        )
        rest = self.curves.assign(_order=1)
        both = pd.concat([first[rest.columns], rest], ignore_index=True)
        order = {g: i for i, g in enumerate(self.summary["label"])}
        both["_group_order"] = both["label"].map(order)
        both = both.sort_values(["_group_order", "_order", "time"], kind="stable")
        return both.drop(columns=["_order", "_group_order"]).reset_index(drop=True)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: the median survival per group, then survival at each chosen time.

        ``term`` is ``"median_survival"`` or ``"survival"``; the extra columns are ``group``,
        ``time`` (``NaN`` for the median) and ``n_risk``. For the survival rows ``events`` is
        ``at_times.n_event``: the events in the interval since the previous time by default
        (``spec.counts``).
        """
        rows: list[dict[str, Any]] = []
        for rec in self.summary.itertuples(index=False):
            rows.append(
                {
                    "analysis": "kaplan_meier",
                    "endpoint": self.spec.endpoint,
                    "model": "kaplan_meier",
                    "term": "median_survival",
                    "estimate": rec.median,
                    "ci_lower": rec.median_lower,
                    "ci_upper": rec.median_upper,
                    "n": rec.n,
                    "events": rec.events,
                    "group": rec.label,
                    "time": np.nan,
                    "n_risk": np.nan,
                }
            )
        for rec in self.at_times.itertuples(index=False):
            rows.append(
                {
                    "analysis": "kaplan_meier",
                    "endpoint": self.spec.endpoint,
                    "model": "kaplan_meier",
                    "term": "survival",
                    "estimate": rec.survival,
                    "std_error": rec.std_err,
                    "ci_lower": rec.ci_lower,
                    "ci_upper": rec.ci_upper,
                    "n": np.nan,
                    "events": rec.n_event,
                    "group": rec.label,
                    "time": rec.time,
                    "n_risk": rec.n_risk,
                }
            )
        return tidy_frame(rows)


@dataclass(frozen=True, slots=True)
class LogrankResult:
    """The (stratified) log-rank test, as R's ``survdiff``.

    Attributes
    ----------
    chisq, df, p_value
        The test statistic, its degrees of freedom (groups with a positive expected count,
        minus one) and the chi-square p-value.
    groups
        Group levels, in the order of ``observed`` / ``expected`` (sorted, as R's factor).
    n, observed, expected
        Patients, observed events and expected events per group (summed over strata).
    variance
        The variance-covariance matrix of ``observed - expected`` (R's ``var``).
    strata
        Names of the strata columns (empty for the unstratified test).
    n_strata
        Number of strata.
    """

    group: str
    groups: tuple[Any, ...]
    n: np.ndarray
    observed: np.ndarray
    expected: np.ndarray
    variance: np.ndarray
    chisq: float
    df: int
    p_value: float
    strata: tuple[str, ...] = ()
    n_strata: int = 1
    endpoint: str = ""
    n_dropped: int = 0

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per group (``term`` = ``"group=level"``), with the test in
        ``p_value`` and the extra columns ``observed, expected, chisq, df, strata``."""
        label = "logrank_stratified" if self.strata else "logrank"
        rows = [
            {
                "analysis": label,
                "endpoint": self.endpoint,
                "model": "logrank",
                "term": f"{self.group}={level}",
                "p_value": self.p_value,
                "n": int(self.n[i]),
                "events": float(self.observed[i]),
                "observed": float(self.observed[i]),
                "expected": float(self.expected[i]),
                "chisq": self.chisq,
                "df": self.df,
                "strata": ",".join(self.strata),
            }
            for i, level in enumerate(self.groups)
        ]
        return tidy_frame(rows)


@dataclass(frozen=True, slots=True)
class FollowUpResult:
    """Median follow-up by the reverse Kaplan-Meier method (censoring counted as the event).

    ``median``, ``ci_lower`` and ``ci_upper`` follow ``quantile.survfit`` on
    ``survfit(Surv(time, 1 - event) ~ 1)``; ``n`` patients, ``n_censored`` of them censored.
    """

    median: float
    ci_lower: float
    ci_upper: float
    n: int
    n_censored: int
    level: float
    conf_type: ConfType
    endpoint: str = ""

    def to_frame(self) -> pd.DataFrame:
        """Tidy table with one row, ``term`` = ``"median_followup"``."""
        return tidy_frame(
            [
                {
                    "analysis": "median_followup",
                    "endpoint": self.endpoint,
                    "model": "reverse_kaplan_meier",
                    "term": "median_followup",
                    "estimate": self.median,
                    "ci_lower": self.ci_lower,
                    "ci_upper": self.ci_upper,
                    "n": self.n,
                    "events": self.n - self.n_censored,
                    "n_censored": self.n_censored,
                }
            ]
        )


# --------------------------------------------------------------------------------------------
# Array kernels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _GroupedCounts:
    """Counts per (group, distinct time) from one sort of the data."""

    sorted_time: np.ndarray  # all times sorted by (group, time)
    group_bounds: np.ndarray  # [start, end) of each group in sorted_time, shape (G + 1,)
    time: np.ndarray  # distinct times, by group
    n_risk: np.ndarray
    n_event: np.ndarray
    n_censor: np.ndarray
    row_bounds: np.ndarray  # [start, end) of each group in the distinct-time rows, (G + 1,)


_RADIX_LIMIT = 1 << 16  # NumPy's stable sort is a radix sort for 16-bit integers


def _sort_order(time: np.ndarray, codes: np.ndarray | None) -> np.ndarray:
    """Order by (code, time), stable. Whole-number times in a range below 65,536 (months,
    days) use two linear-time radix passes; other times fall back to ``np.lexsort``."""
    n = time.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    lo = time.min()
    span = time.max() - lo
    whole = span < _RADIX_LIMIT and bool(np.all(np.floor(time) == time))
    if codes is not None and codes.size and codes.max() >= _RADIX_LIMIT:
        whole = False
    if not whole:
        return np.argsort(time, kind="stable") if codes is None else np.lexsort((time, codes))
    order = np.argsort((time - lo).astype(np.uint16), kind="stable")
    if codes is not None:
        order = order[np.argsort(codes[order].astype(np.uint16), kind="stable")]
    return order


def _grouped_counts(codes: np.ndarray, time: np.ndarray, event: np.ndarray, n_groups: int):
    n = time.shape[0]
    order = _sort_order(time, codes if n_groups > 1 else None)
    t = time[order]
    e = event[order]
    c = codes[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(t[1:], t[:-1], out=new[1:])
    if n_groups > 1:
        new[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(new)
    size = np.diff(np.append(starts, n))
    n_event = np.add.reduceat(e, starts).astype(np.float64)
    counts = np.bincount(codes, minlength=n_groups)
    group_bounds = np.concatenate(([0], np.cumsum(counts)))
    row_code = c[starts]
    n_risk = (group_bounds[row_code + 1] - starts).astype(np.float64)
    row_bounds = np.searchsorted(row_code, np.arange(n_groups + 1), side="left")
    return _GroupedCounts(
        sorted_time=t,
        group_bounds=group_bounds,
        time=t[starts],
        n_risk=n_risk,
        n_event=n_event,
        n_censor=size - n_event,
        row_bounds=row_bounds,
    )


def _confidence_band(
    surv: np.ndarray, cumhaz_se: np.ndarray, level: float, conf_type: ConfType
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise band exactly as survival's ``survfit_confint`` (no log(0) warnings).

    On the log-log scale the limits are undefined (``NaN``, R's ``NA``) where S is 0 or 1:
    ``log(-log(S))`` is infinite there.
    """
    z = stats.norm.ppf(1.0 - (1.0 - level) / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if conf_type == "log-log":
            special = (surv == 0.0) | (surv == 1.0)
            xx = np.where(special, 0.1, surv)
            loglog = np.log(-np.log(xx))
            scaled = z * cumhaz_se / np.log(xx)
            # log(S) < 0, so subtracting ``scaled`` moves the curve down
            lower = np.where(special, np.nan, np.exp(-np.exp(loglog - scaled)))
            upper = np.where(special, np.nan, np.exp(-np.exp(loglog + scaled)))
        elif conf_type == "log":
            xx = np.where(surv == 0.0, 1.0, surv)
            lower = np.where(surv == 0.0, np.nan, np.exp(np.log(xx) - z * cumhaz_se))
            upper = np.where(surv == 0.0, np.nan, np.exp(np.log(xx) + z * cumhaz_se))
            upper = np.minimum(upper, 1.0)
        else:  # plain
            se = cumhaz_se * surv
            lower = np.maximum(surv - z * se, 0.0)
            upper = np.minimum(surv + z * se, 1.0)
    return lower, upper


def _km_curve(n_risk: np.ndarray, n_event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Product-limit survival and the Greenwood SE of the cumulative hazard."""
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1.0 - n_event / n_risk)
        denom = n_risk * (n_risk - n_event)
        term = np.where(n_event > 0, n_event / denom, 0.0)  # inf when all at risk die
    return surv, np.sqrt(np.cumsum(term))


def _find_quantile(x: np.ndarray, y: np.ndarray, p: float, tol: float) -> float:
    """survival's ``findq``: where 1 - S crosses ``p``, with the midpoint rule on flats.

    ``x`` are the times with the start time prepended, ``y`` = 1 - curve with 0 prepended.
    """
    finite = ~np.isnan(y)
    if not finite.any() or np.nanmax(y) < p:
        return float("nan")
    xmax = x[-1]
    # remove duplicated y values (the censoring rows), keeping the first occurrence
    keep = np.ones(y.shape[0], dtype=bool)
    keep[1:] = ~((y[1:] == y[:-1]) | (np.isnan(y[1:]) & np.isnan(y[:-1])))
    x, y = x[keep], y[keep]
    n = y.shape[0]
    idx = np.arange(1, n + 1, dtype=float)
    ok = ~np.isnan(y)

    def constant_right(knots: np.ndarray) -> float:
        # R's approx(knots, 1:n, p, method = "constant", f = 1), rule = 1, NA pairs removed
        kx, ky = knots[ok], idx[ok]
        if kx.size == 0 or p < kx[0] or p > kx[-1]:
            return float("nan")
        j = int(np.searchsorted(kx, p, side="left"))
        return float(ky[j])

    i1 = constant_right(y + tol)
    i2 = constant_right(y - tol)
    quant = float("nan")
    if not (np.isnan(i1) or np.isnan(i2)):
        quant = (x[int(i1) - 1] + x[int(i2) - 1]) / 2.0
    if p == 0.0:
        quant = x[0]
    if not np.isnan(y[-1]) and abs(p - y[-1]) < tol and not np.isnan(i1):
        quant = (x[int(i1) - 1] + xmax) / 2.0  # a flat at the end of the curve
    return float(quant)


def _median_with_ci(
    time: np.ndarray, surv: np.ndarray, lower: np.ndarray, upper: np.ndarray, p: float = 0.5
) -> tuple[float, float, float]:
    x = np.concatenate(([0.0], time))
    tol = _QUANTILE_TOLERANCE
    est = _find_quantile(x, np.concatenate(([0.0], 1.0 - surv)), p, tol)
    lo = _find_quantile(x, np.concatenate(([0.0], 1.0 - lower)), p, tol)
    hi = _find_quantile(x, np.concatenate(([0.0], 1.0 - upper)), p, tol)
    return est, lo, hi


def kaplan_meier_arrays(
    time: np.ndarray,
    event: np.ndarray,
    codes: np.ndarray | None = None,
    n_groups: int = 1,
    *,
    level: float = 0.95,
    conf_type: ConfType = "log-log",
) -> dict[str, np.ndarray]:
    """Kaplan-Meier curves for integer-coded groups (the array kernel of
    :func:`fit_kaplan_meier`).

    Parameters
    ----------
    time, event
        Follow-up times and event indicators (1 = event), no missing values.
    codes
        Group codes ``0 .. n_groups - 1`` (``None``: one group).
    n_groups
        Number of groups.
    level, conf_type
        As in :class:`KMSpec`.

    Returns
    -------
    dict
        Arrays over the distinct (group, time) rows: ``code, time, n_risk, n_event, n_censor,
        survival, cumhaz_std_err, ci_lower, ci_upper``, plus ``row_bounds`` (where each
        group's rows start and end), ``group_bounds`` and ``sorted_time`` (all times sorted by
        group and time, for numbers at risk at any time).

    References
    ----------
    .. [1] Kaplan EL, Meier P. Nonparametric estimation from incomplete observations.
       J Am Stat Assoc 1958;53:457-81.

    Examples
    --------
    >>> out = kaplan_meier_arrays(np.array([1.0, 2, 2, 3]), np.array([1, 1, 0, 1]))
    >>> out["survival"].round(3).tolist()
    [0.75, 0.5, 0.0]
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.float64)
    if codes is None:
        codes = np.zeros(time.shape[0], dtype=np.intp)
        n_groups = 1
    counts = _grouped_counts(np.asarray(codes, dtype=np.intp), time, event, n_groups)
    surv = np.empty_like(counts.n_risk)
    se = np.empty_like(counts.n_risk)
    rb = counts.row_bounds
    for g in range(n_groups):
        s = slice(rb[g], rb[g + 1])
        surv[s], se[s] = _km_curve(counts.n_risk[s], counts.n_event[s])
    lower, upper = _confidence_band(surv, se, level, conf_type)
    code = np.repeat(np.arange(n_groups), np.diff(rb))
    return {
        "code": code,
        "time": counts.time,
        "n_risk": counts.n_risk,
        "n_event": counts.n_event,
        "n_censor": counts.n_censor,
        "survival": surv,
        "cumhaz_std_err": se,
        "ci_lower": lower,
        "ci_upper": upper,
        "row_bounds": rb,
        "group_bounds": counts.group_bounds,
        "sorted_time": counts.sorted_time,
    }


# --------------------------------------------------------------------------------------------
# Data frame handling
# --------------------------------------------------------------------------------------------


def _require_columns(data: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise DataError(
            f"{what}: expected columns {list(columns)} in the data; missing {missing}. "
            f"Available columns: {list(data.columns)}."
        )


def _clean_survival(
    data: pd.DataFrame, duration: str, event: str, others: Sequence[str], what: str
) -> tuple[pd.DataFrame, int]:
    _require_columns(data, [duration, event, *others], what)
    frame = data[[duration, event, *dict.fromkeys(others)]]
    complete = frame.notna().all(axis=1).to_numpy()
    dropped = int((~complete).sum())
    if dropped:
        frame = frame.loc[complete]
    if frame.shape[0] == 0:
        raise DataError(f"{what}: no complete rows in '{duration}', '{event}' {list(others)}.")
    ev = frame[event].to_numpy(dtype=np.float64)
    if not np.isin(ev, (0.0, 1.0)).all():
        bad = np.unique(ev[~np.isin(ev, (0.0, 1.0))])[:5]
        raise DataError(
            f"{what}: column '{event}' must be 0 (censored) or 1 (event); found {bad.tolist()}. "
            "Recode the event indicator before the analysis."
        )
    t = frame[duration].to_numpy(dtype=np.float64)
    if (t < 0).any():
        raise DataError(
            f"{what}: column '{duration}' must be non-negative; found {int((t < 0).sum())} "
            "negative times. Check the derivation of follow-up."
        )
    return frame, dropped


def _codes(values: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """Sorted-level integer codes, as R's factor() orders levels."""
    codes, levels = pd.factorize(values, sort=True)
    return codes.astype(np.intp), list(levels)


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def fit_kaplan_meier(data: pd.DataFrame, spec: KMSpec) -> KMResult:
    """Kaplan-Meier survival curves by group, with log-log confidence bands, medians,
    survival at fixed times and numbers at risk.

    Agrees with R's ``survfit(Surv(duration, event) ~ group, conf.type = "log-log")``: the
    Greenwood variance, the band ``exp(-exp(log(-log S) -/+ z se / log S))`` with
    ``se`` the standard error of the cumulative hazard (``NaN``, R's ``NA``, where S is 1 or
    0), the median and its CI where the curve and its bands cross 0.5 (``quantile.survfit``,
    midpoint rule on flat stretches), and ``summary(fit, times = ..., extend = TRUE)`` for
    survival at fixed times (``spec.counts``, ``spec.extend``).

    Parameters
    ----------
    data
        One row per patient.
    spec
        Columns, times and confidence options.

    Returns
    -------
    KMResult

    Raises
    ------
    DataError
        If a column is missing, the event is not 0/1, or times are negative.

    References
    ----------
    .. [1] Kaplan EL, Meier P. Nonparametric estimation from incomplete observations.
       J Am Stat Assoc 1958;53:457-81.
    .. [2] Greenwood M. The natural duration of cancer. Rep Public Health Med Subj 1926;33:1-26.
    .. [3] Brookmeyer R, Crowley J. A confidence interval for the median survival time.
       Biometrics 1982;38:29-41.
    .. [4] Therneau TM. A package for survival analysis in R. R package survival 3.5-3.

    Examples
    --------
    >>> df = pd.DataFrame({"t": [3, 5, 5, 8, 12, 2, 4, 9], "e": [1, 1, 0, 1, 0, 1, 1, 1],
    ...                    "ctc": [0, 0, 0, 0, 0, 1, 1, 1]})
    >>> res = fit_kaplan_meier(df, KMSpec(duration="t", event="e", group="ctc", times=(6,)))
    >>> res.summary[["label", "median"]].values.tolist()
    [['ctc=0', 8.0], ['ctc=1', 4.0]]
    """
    group_cols = [spec.group] if spec.group is not None else []
    frame, dropped = _clean_survival(
        data, spec.duration, spec.event, group_cols, "fit_kaplan_meier"
    )
    time = frame[spec.duration].to_numpy(dtype=np.float64)
    event = frame[spec.event].to_numpy(dtype=np.float64)
    if spec.group is not None:
        codes, levels = _codes(frame[spec.group])
        labels = [f"{spec.group}={_py(v)}" for v in levels]
    else:
        codes, levels, labels = np.zeros(time.shape[0], dtype=np.intp), ["all"], ["all"]
    n_groups = len(levels)
    arrays = kaplan_meier_arrays(
        time, event, codes, n_groups, level=spec.level, conf_type=spec.conf_type
    )
    rb = arrays["row_bounds"]
    gb = arrays["group_bounds"]
    sorted_time = arrays["sorted_time"]
    code = arrays["code"]
    surv = arrays["survival"]
    level_of = np.asarray([_py(v) for v in levels], dtype=object)
    label_of = np.asarray(labels, dtype=object)

    with np.errstate(invalid="ignore"):  # inf * 0 where everyone left at risk dies: NaN
        surv_se = arrays["cumhaz_std_err"] * surv
    curves = pd.DataFrame(
        {
            "group": level_of[code],
            "label": label_of[code],
            "time": arrays["time"],
            "n_risk": arrays["n_risk"].astype(np.int64),
            "n_event": arrays["n_event"].astype(np.int64),
            "n_censor": arrays["n_censor"].astype(np.int64),
            "survival": surv,
            "std_err": surv_se,
            "cumhaz_std_err": arrays["cumhaz_std_err"],
            "ci_lower": arrays["ci_lower"],
            "ci_upper": arrays["ci_upper"],
        }
    )

    summary_rows = []
    at_rows = []
    risk_rows = []
    times = np.asarray(spec.times, dtype=np.float64)
    risk_times = np.asarray(
        spec.times if spec.risk_times is None else spec.risk_times, dtype=np.float64
    )
    for g in range(n_groups):
        s = slice(rb[g], rb[g + 1])
        gt = arrays["time"][s]
        gs = surv[s]
        glo = arrays["ci_lower"][s]
        ghi = arrays["ci_upper"][s]
        gse = arrays["cumhaz_std_err"][s]
        gev = arrays["n_event"][s]
        gcens = arrays["n_censor"][s]
        median, m_lo, m_hi = _median_with_ci(gt, gs, glo, ghi)
        summary_rows.append(
            {
                "group": level_of[g],
                "label": label_of[g],
                "n": int(gb[g + 1] - gb[g]),
                "events": int(gev.sum()),
                "median": median,
                "median_lower": m_lo,
                "median_upper": m_hi,
            }
        )
        sorted_g = sorted_time[gb[g] : gb[g + 1]]
        n_g = sorted_g.shape[0]
        # summary.survfit(times =): R prepends a row at time 0 (S = 1, SE 0, limits 1) and
        # reads each time off the last row at or before it; extend = FALSE drops the times
        # after the group's last observed time
        group_times = times if spec.extend else times[times <= gt[-1]]
        if group_times.size:
            idx = np.searchsorted(gt, group_times, side="right") - 1
            before = idx < 0
            safe = np.maximum(idx, 0)
            s_t = np.where(before, 1.0, gs[safe])
            se_t = np.where(before, 0.0, gse[safe])
            lo_t = np.where(before, 1.0, glo[safe])
            hi_t = np.where(before, 1.0, ghi[safe])
            events_t = np.concatenate(([0.0], np.cumsum(gev)))[idx + 1]
            censored_t = np.concatenate(([0.0], np.cumsum(gcens)))[idx + 1]
            if spec.counts == "interval":
                events_t = np.diff(events_t, prepend=0.0)
                censored_t = np.diff(censored_t, prepend=0.0)
            n_risk_t = n_g - np.searchsorted(sorted_g, group_times, side="left")
            for j, t in enumerate(group_times):
                at_rows.append(
                    {
                        "group": level_of[g],
                        "label": label_of[g],
                        "time": float(t),
                        "n_risk": int(n_risk_t[j]),
                        "n_event": int(events_t[j]),
                        "n_censor": int(censored_t[j]),
                        "survival": float(s_t[j]),
                        "std_err": float(np.float64(se_t[j]) * s_t[j])
                        if np.isfinite(se_t[j])
                        else float("nan"),
                        "ci_lower": float(lo_t[j]),
                        "ci_upper": float(hi_t[j]),
                    }
                )
        if risk_times.size:
            n_risk_r = n_g - np.searchsorted(sorted_g, risk_times, side="left")
            for j, t in enumerate(risk_times):
                risk_rows.append(
                    {
                        "group": level_of[g],
                        "label": label_of[g],
                        "time": float(t),
                        "n_risk": int(n_risk_r[j]),
                    }
                )
    at_columns = ["group", "label", "time", "n_risk", "n_event", "n_censor", "survival", "std_err"]
    return KMResult(
        spec=spec,
        curves=curves,
        summary=pd.DataFrame(summary_rows),
        at_times=pd.DataFrame(at_rows, columns=[*at_columns, "ci_lower", "ci_upper"]),
        risk_table=pd.DataFrame(risk_rows, columns=["group", "label", "time", "n_risk"]),
        n_dropped=dropped,
    )


# --------------------------------------------------------------------------------------------
# Log-rank test
# --------------------------------------------------------------------------------------------


def logrank_arrays(
    time: np.ndarray,
    event: np.ndarray,
    group_codes: np.ndarray,
    n_groups: int,
    stratum_codes: np.ndarray | None = None,
    n_strata: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed, expected and variance of the (stratified) log-rank test (R's ``survdiff``
    with ``rho = 0``), summed over strata.

    Parameters
    ----------
    time, event
        Follow-up times and 0/1 event indicators.
    group_codes
        Group codes ``0 .. n_groups - 1``.
    n_groups
        Number of groups.
    stratum_codes, n_strata
        Stratum codes ``0 .. n_strata - 1`` (``None``: unstratified).

    Returns
    -------
    observed, expected : ndarray, shape (n_groups,)
    variance : ndarray, shape (n_groups, n_groups)

    References
    ----------
    .. [1] Mantel N. Evaluation of survival data and two new rank order statistics arising in
       its consideration. Cancer Chemother Rep 1966;50:163-70.
    .. [2] Peto R, Peto J. Asymptotically efficient rank invariant test procedures.
       J R Stat Soc A 1972;135:185-207.

    Examples
    --------
    >>> o, e, v = logrank_arrays(np.array([1.0, 2, 3, 4]), np.array([1, 1, 1, 1]),
    ...                          np.array([0, 1, 0, 1]), 2)
    >>> o.tolist()
    [2.0, 2.0]
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.float64)
    group_codes = np.asarray(group_codes, dtype=np.intp)
    n = time.shape[0]
    if stratum_codes is None or n_strata == 1:
        order = _sort_order(time, None)
        s_sorted = None
    else:
        stratum_codes = np.asarray(stratum_codes, dtype=np.intp)
        order = _sort_order(time, stratum_codes)
        s_sorted = stratum_codes[order]
    t = time[order]
    e = event[order]
    g = group_codes[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(t[1:], t[:-1], out=new[1:])
    if s_sorted is not None:
        new[1:] |= s_sorted[1:] != s_sorted[:-1]
    row = np.cumsum(new) - 1  # distinct (stratum, time) row of each sorted patient
    n_rows = int(row[-1]) + 1
    starts = np.flatnonzero(new)
    # end (exclusive) of the stratum of each distinct row, in sorted-patient positions
    if s_sorted is None:
        stratum_end = np.full(n_rows, n)
    else:
        counts = np.bincount(s_sorted, minlength=n_strata)
        bounds = np.cumsum(counts)
        stratum_end = bounds[s_sorted[starts]]
    d_total = np.add.reduceat(e, starts)
    # numbers at risk per group: reverse cumulative counts within each stratum
    flat = row * n_groups + g
    at_time = np.bincount(flat, minlength=n_rows * n_groups).reshape(n_rows, n_groups)
    d_group = np.bincount(flat, weights=e, minlength=n_rows * n_groups).reshape(n_rows, n_groups)
    # cumulative count of each group over sorted patients, by row boundary
    cum = np.zeros((n_rows + 1, n_groups))
    np.cumsum(at_time, axis=0, out=cum[1:])
    # number of group-g patients with sorted position >= start of row and < stratum end:
    # rows up to the stratum end are the rows whose start < stratum_end
    end_row = np.searchsorted(starts, stratum_end, side="left")
    risk = cum[end_row] - cum[:-1]
    n_risk = risk.sum(axis=1)
    has_event = d_total > 0
    risk = risk[has_event]
    n_risk = n_risk[has_event]
    d = d_total[has_event]
    d_group = d_group[has_event]
    frac = risk / n_risk[:, None]
    expected = (frac * d[:, None]).sum(axis=0)
    observed = d_group.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(n_risk > 1, d * (n_risk - d) / (n_risk - 1), 0.0)
    weighted = frac * factor[:, None]
    variance = np.diag(weighted.sum(axis=0)) - weighted.T @ frac
    return observed, expected, variance


def _logrank_chisq(
    observed: np.ndarray, expected: np.ndarray, variance: np.ndarray
) -> tuple[float, int]:
    keep = expected > 0
    k = int(keep.sum())
    if k < 2:
        return 0.0, 0
    diff = (observed - expected)[keep][1:]
    vv = variance[np.ix_(keep, keep)][1:, 1:]
    chisq = float(np.sum(np.linalg.solve(vv, diff) * diff))
    return chisq, k - 1


def logrank_test(
    data: pd.DataFrame,
    duration: str,
    event: str,
    group: str,
    strata: Sequence[str] = (),
    *,
    endpoint: str = "",
) -> LogrankResult:
    """Log-rank test of equal survival across groups, optionally stratified (e.g. by centre).

    Reproduces R's ``survdiff(Surv(duration, event) ~ group + strata(centre))``: observed and
    expected events and their variance summed over strata, the chi-square statistic on the
    groups with a positive expected count, with that number minus one degrees of freedom.
    Works for two or more groups.

    Parameters
    ----------
    data
        One row per patient.
    duration, event
        Follow-up time and event (0/1) columns.
    group
        Column defining the groups compared.
    strata
        Columns whose combinations form the strata (``("centre",)``); empty: unstratified.
    endpoint
        Name of the endpoint for the tidy table.

    Returns
    -------
    LogrankResult

    References
    ----------
    .. [1] Mantel N. Evaluation of survival data and two new rank order statistics arising in
       its consideration. Cancer Chemother Rep 1966;50:163-70.
    .. [2] Peto R, Peto J. Asymptotically efficient rank invariant test procedures.
       J R Stat Soc A 1972;135:185-207.

    Examples
    --------
    >>> df = pd.DataFrame({"t": [1, 2, 3, 4, 5, 6], "e": [1, 1, 1, 1, 0, 1],
    ...                    "g": [0, 1, 0, 1, 0, 1], "centre": ["A", "A", "A", "B", "B", "B"]})
    >>> res = logrank_test(df, "t", "e", "g", strata=("centre",))
    >>> res.df
    1
    """
    strata = tuple(strata)
    frame, dropped = _clean_survival(data, duration, event, [group, *strata], "logrank_test")
    time = frame[duration].to_numpy(dtype=np.float64)
    ev = frame[event].to_numpy(dtype=np.float64)
    gcodes, levels = _codes(frame[group])
    if strata:
        if len(strata) == 1:
            scodes, slevels = _codes(frame[strata[0]])
        else:
            scodes_raw = frame[list(strata)].astype(str).agg("\x1f".join, axis=1)
            scodes, slevels = _codes(scodes_raw)
        n_strata = len(slevels)
    else:
        scodes, n_strata = None, 1
    observed, expected, variance = logrank_arrays(time, ev, gcodes, len(levels), scodes, n_strata)
    chisq, df = _logrank_chisq(observed, expected, variance)
    p = float(stats.chi2.sf(chisq, df)) if df > 0 else float("nan")
    return LogrankResult(
        group=group,
        groups=tuple(_py(v) for v in levels),
        n=np.bincount(gcodes, minlength=len(levels)),
        observed=observed,
        expected=expected,
        variance=variance,
        chisq=chisq,
        df=df,
        p_value=p,
        strata=strata,
        n_strata=n_strata,
        endpoint=endpoint,
        n_dropped=dropped,
    )


# --------------------------------------------------------------------------------------------
# Median follow-up
# --------------------------------------------------------------------------------------------


def median_followup(
    data: pd.DataFrame,
    duration: str,
    event: str,
    *,
    level: float = 0.95,
    conf_type: ConfType = "log",
    endpoint: str = "",
) -> FollowUpResult:
    """Median follow-up by the reverse Kaplan-Meier method, with its confidence interval.

    The censoring indicator is treated as the event (``survfit(Surv(time, 1 - event) ~ 1)``),
    so patients who die stop contributing to follow-up at death without counting as
    "followed up to the end". The median and its interval follow ``quantile.survfit``.

    Parameters
    ----------
    data
        One row per patient.
    duration, event
        Follow-up time and event (0/1) columns of the endpoint.
    level
        Confidence level.
    conf_type
        Scale of the band used for the interval; ``"log"`` is R's ``survfit`` default.
    endpoint
        Name of the endpoint for the tidy table.

    Returns
    -------
    FollowUpResult

    References
    ----------
    .. [1] Schemper M, Smith TL. A note on quantifying follow-up in studies of failure time.
       Control Clin Trials 1996;17:343-6.

    Examples
    --------
    >>> df = pd.DataFrame({"t": [10, 20, 30, 40, 50], "e": [0, 1, 0, 0, 1]})
    >>> median_followup(df, "t", "e").median
    40.0
    """
    if conf_type not in ("log-log", "log", "plain"):
        raise ConfigError(
            f"median_followup: conf_type must be 'log-log', 'log' or 'plain'; got {conf_type!r}."
        )
    frame, _ = _clean_survival(data, duration, event, [], "median_followup")
    time = frame[duration].to_numpy(dtype=np.float64)
    censored = 1.0 - frame[event].to_numpy(dtype=np.float64)
    arrays = kaplan_meier_arrays(time, censored, level=level, conf_type=conf_type)
    median, lo, hi = _median_with_ci(
        arrays["time"], arrays["survival"], arrays["ci_lower"], arrays["ci_upper"]
    )
    return FollowUpResult(
        median=median,
        ci_lower=lo,
        ci_upper=hi,
        n=int(time.shape[0]),
        n_censored=int(censored.sum()),
        level=level,
        conf_type=conf_type,
        endpoint=endpoint,
    )

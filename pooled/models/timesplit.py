"""Counting-process data: follow-up split at fixed times, and covariates that change over time.

:func:`time_split` is R's ``survSplit``: each patient's follow-up ``(start, stop]`` is cut at
the given times into consecutive intervals (an event at a cut belongs to the earlier interval),
numbered by the period they fall in. :func:`fit_time_split` fits the Cox model with one
exposure coefficient per period (R's ``exposure:strata(tgroup)``, the survival "timedep"
vignette's form) and tests whether the periods share one hazard ratio (Wald test of equal
period effects), the usual check and remedy for a hazard ratio that changes with follow-up.
:func:`add_time_dependent` is R's ``tmerge(..., tdc(time, value))`` for one measured covariate
carried forward from each measurement time. All three return data or results only; the Cox
fit on ``(start, stop]`` rows is :func:`pooled.models.cox.fit_cox` with ``CoxSpec(start=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pooled.errors import ConfigError, DataError
from pooled.models.cox import CoxResult, CoxSpec, fit_cox
from pooled.models.design import build_spec_design
from pooled.results import tidy_frame

__all__ = [
    "TimeSplitResult",
    "TimeSplitSpec",
    "add_time_dependent",
    "fit_time_split",
    "period_labels",
    "time_split",
]

_Z975 = float(stats.norm.ppf(0.975))


def _checked_cuts(cuts: Sequence[float]) -> np.ndarray:
    values = np.asarray([float(c) for c in cuts], dtype=np.float64)
    if values.size == 0:
        raise ConfigError("cuts expected at least one time; got none.")
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"cuts expected finite times; got {list(cuts)}.")
    if np.unique(values).size != values.size:
        raise ConfigError(f"cuts expected distinct times; got {list(cuts)}.")
    return np.sort(values)


def time_split(
    data: pd.DataFrame,
    cuts: Sequence[float],
    *,
    duration: str,
    event: str,
    start: str | None = None,
    start_column: str | None = None,
    episode: str = "tgroup",
    zero: float = 0.0,
) -> pd.DataFrame:
    """Split each row's follow-up at ``cuts`` (R's ``survSplit``).

    A row followed over ``(start, stop]`` becomes one row per interval between consecutive
    cut times strictly inside it. Intervals are ``(start, stop]``: a row ending exactly at a
    cut is not split there, so an event at a cut belongs to the earlier period. Only the last
    interval of a row keeps its event; the others are censored at the cut.

    Parameters
    ----------
    data : DataFrame
        One row per patient (or per interval when ``start`` is given).
    cuts : sequence of float
        Times to split at (sorted here; e.g. ``(24, 60)`` months).
    duration, event : str
        Columns of the end of follow-up and the event indicator; in the result ``duration``
        holds the end of each interval and ``event`` whether it ends in the event.
    start : str, optional
        Column of the start of follow-up when the data are already intervals; otherwise every
        row starts at ``zero``.
    start_column : str, optional
        Name of the interval-start column of the result: by default ``start`` when given (its
        values are replaced by the interval starts, as R does), else ``"tstart"``.
    episode : str
        Name of the period column added: 1 + the number of cuts at or before the interval's
        start (``1, 2, 3`` for the periods ``(0, 24], (24, 60], (60, inf)`` of cuts 24, 60).
    zero : float
        The start of follow-up when ``start`` is not given (R's ``zero = 0``).

    Returns
    -------
    DataFrame
        The rows of ``data`` repeated once per interval (every column kept), in the input
        order and by time within a row, with ``start_column`` and ``episode`` added and
        ``duration`` / ``event`` per interval; a fresh index. Rows missing the duration are
        kept whole (one interval).

    References
    ----------
    .. [1] Therneau T, Crowson C, Atkinson E. Using time dependent covariates and time
       dependent coefficients in the Cox model. survival package vignette "timedep", 2023.

    Examples
    --------
    >>> d = pd.DataFrame({"os_months": [24.0, 30.0, 70.0], "os_event": [1, 1, 0]})
    >>> s = time_split(d, [24, 60], duration="os_months", event="os_event")
    >>> s[["tstart", "os_months", "os_event", "tgroup"]].values.tolist()
    [[0.0, 24.0, 1.0, 1.0], [0.0, 24.0, 0.0, 1.0], [24.0, 30.0, 1.0, 2.0], [0.0, 24.0, 0.0, 1.0], [24.0, 60.0, 0.0, 2.0], [60.0, 70.0, 0.0, 3.0]]
    """
    cut = _checked_cuts(cuts)
    for column in (duration, event) + ((start,) if start else ()):
        if column not in data.columns:
            raise ConfigError(
                f"Column '{column}' expected in the data; found columns {list(data.columns)}."
            )
    stop = pd.to_numeric(data[duration], errors="coerce").to_numpy(dtype=np.float64)
    begin = (
        pd.to_numeric(data[start], errors="coerce").to_numpy(dtype=np.float64)
        if start
        else np.full(len(data), float(zero))
    )
    known = np.isfinite(stop) & np.isfinite(begin)
    if np.any(known & ~(begin < stop)):
        i = int(np.flatnonzero(known & ~(begin < stop))[0])
        raise DataError(
            f"time_split expected each row's follow-up to end after it starts; row {i} has "
            f"start {begin[i]!r} and '{duration}' {stop[i]!r}. Drop rows without follow-up "
            "or give a lower `zero`."
        )
    first = np.searchsorted(cut, begin, side="right")  # first cut after the start
    last = np.searchsorted(cut, stop, side="left")  # first cut at or after the stop
    inside = np.where(known, np.maximum(last - first, 0), 0)
    reps = inside + 1
    row = np.repeat(np.arange(len(data)), reps)
    offsets = np.cumsum(reps) - reps
    piece = np.arange(row.size) - offsets[row]  # 0 .. inside within each row
    ext = np.concatenate((cut, [np.nan]))
    piece_start = np.where(
        piece == 0, begin[row], ext[np.minimum(first[row] + piece - 1, cut.size)]
    )
    is_last = piece == inside[row]
    piece_stop = np.where(is_last, stop[row], ext[np.minimum(first[row] + piece, cut.size)])
    ev = pd.to_numeric(data[event], errors="coerce").to_numpy(dtype=np.float64)
    out = data.iloc[row].reset_index(drop=True)
    out[start_column or start or "tstart"] = piece_start
    out[duration] = piece_stop
    out[event] = np.where(is_last, ev[row], 0.0)
    out[episode] = np.where(known[row], first[row] + piece + 1, np.nan)
    if known.all():
        out[episode] = out[episode].astype(np.int64)
    return out


def add_time_dependent(
    patients: pd.DataFrame,
    samples: pd.DataFrame,
    *,
    id: str,
    duration: str,
    event: str,
    sample_time: str,
    value: str,
    name: str,
    start_column: str = "tstart",
    stop_column: str = "tstop",
    event_column: str = "event",
) -> pd.DataFrame:
    """Counting-process data with one covariate measured over time (R's ``tmerge``, ``tdc``).

    Each patient is followed over ``(0, duration]`` with ``event`` at the end (R's
    ``tmerge(patients, patients, id = id, event = event(duration, event))``); the follow-up is
    split at every sample time strictly inside it and the sample's value holds from that time
    until the next sample (carried forward; R's ``tdc(sample_time, value)``). A sample at or
    before time 0 holds from the start; before a patient's first sample the covariate is NaN;
    samples at or after the end of follow-up are ignored, and of several samples at one time
    the last (in the order of ``samples``) counts. Samples of patients not in ``patients`` are
    ignored.

    Parameters
    ----------
    patients : DataFrame
        One row per patient with ``id``, ``duration`` and ``event``; every column is kept.
    samples : DataFrame
        One row per measurement with ``id``, ``sample_time`` and ``value``.
    id, duration, event, sample_time, value : str
        The columns named above.
    name : str
        Name of the time-dependent covariate column in the result.
    start_column, stop_column, event_column : str
        Names of the interval columns (R's ``tstart``, ``tstop``, and the name given to
        ``event()``).

    Returns
    -------
    DataFrame
        Patients in input order, intervals in time order: the patient's columns, then
        ``start_column, stop_column, event_column, name``; a fresh index.

    Raises
    ------
    DataError
        A patient id appears twice, or a duration is missing or not positive.

    References
    ----------
    .. [1] Therneau T, Crowson C, Atkinson E. Using time dependent covariates and time
       dependent coefficients in the Cox model. survival package vignette "timedep", 2023.
    .. [2] Andersen PK, Gill RD. Cox's regression model for counting processes: a large sample
       study. Ann Stat 1982;10:1100-20.

    Examples
    --------
    >>> pat = pd.DataFrame({"id": [1, 2], "os": [10.0, 8.0], "ev": [1, 0]})
    >>> smp = pd.DataFrame({"id": [1, 1, 2], "t": [0.0, 5.0, 1.0], "pos": [0, 1, 1]})
    >>> td = add_time_dependent(pat, smp, id="id", duration="os", event="ev",
    ...                         sample_time="t", value="pos", name="pos_td")
    >>> td[["id", "tstart", "tstop", "event", "pos_td"]].values.tolist()
    [[1.0, 0.0, 5.0, 0.0, 0.0], [1.0, 5.0, 10.0, 1.0, 1.0], [2.0, 0.0, 1.0, 0.0, nan], [2.0, 1.0, 8.0, 0.0, 1.0]]
    """
    for frame, columns, what in (
        (patients, (id, duration, event), "patients"),
        (samples, (id, sample_time, value), "samples"),
    ):
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise ConfigError(
                f"Columns {absent} expected in the {what}; found {list(frame.columns)}."
            )
    ids = pd.Index(patients[id])
    if not ids.is_unique:
        raise DataError(
            f"add_time_dependent expected one row per patient; '{id}' repeats "
            f"{ids[ids.duplicated()].unique()[:3].tolist()}."
        )
    stop = pd.to_numeric(patients[duration], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(stop) & (stop > 0))
    if bad.any():
        raise DataError(
            f"add_time_dependent expected positive '{duration}' for every patient; "
            f"{int(bad.sum())} patients have none or <= 0 (e.g. {ids[bad][:3].tolist()}). "
            "Drop them first."
        )
    n = len(patients)
    pidx = ids.get_indexer(samples[id])
    t = pd.to_numeric(samples[sample_time], errors="coerce").to_numpy(dtype=np.float64)
    v = pd.to_numeric(samples[value], errors="coerce").to_numpy(dtype=np.float64)
    keep = (pidx >= 0) & np.isfinite(t)
    pidx, t, v = pidx[keep], t[keep], v[keep]
    order = np.lexsort((np.arange(t.size), t, pidx))  # patient, time, input order
    pidx, t, v = pidx[order], t[order], v[order]
    t = np.maximum(t, 0.0)  # at or before the start: holds from the start
    keep = t < stop[pidx]
    pidx, t, v = pidx[keep], t[keep], v[keep]
    # of several samples at one time the last counts
    last_of_time = np.ones(t.size, dtype=bool)
    last_of_time[:-1] = (pidx[1:] != pidx[:-1]) | (t[1:] != t[:-1])
    pidx, t, v = pidx[last_of_time], t[last_of_time], v[last_of_time]
    at_zero = t == 0.0
    initial = np.full(n, np.nan)
    initial[pidx[at_zero]] = v[at_zero]
    pidx, t, v = pidx[~at_zero], t[~at_zero], v[~at_zero]  # the split times, sorted
    reps = np.bincount(pidx, minlength=n) + 1
    offsets = np.cumsum(reps) - reps
    rows = np.repeat(np.arange(n), reps)
    rank = np.arange(pidx.size) - (np.cumsum(reps - 1) - (reps - 1))[pidx]
    positions = offsets[pidx] + 1 + rank
    begin = np.zeros(rows.size)
    begin[positions] = t
    covariate = initial[rows]
    covariate[positions] = v
    last = offsets + reps - 1
    end = np.empty(rows.size)
    end[:-1] = begin[1:]
    end[last] = stop
    ev = np.zeros(rows.size)
    ev[last] = pd.to_numeric(patients[event], errors="coerce").to_numpy(dtype=np.float64)
    out = patients.iloc[rows].reset_index(drop=True)
    out[start_column] = begin
    out[stop_column] = end
    out[event_column] = ev
    out[name] = covariate
    return out


def period_labels(cuts: Sequence[float], zero: float = 0.0) -> tuple[str, ...]:
    """Labels of the periods of ``cuts``: ``("(0,24]", "(24,60]", "(60,Inf)")``."""
    cut = _checked_cuts(cuts)

    def text(x: float) -> str:
        return f"{x:g}"

    bounds = [zero, *cut.tolist()]
    labels = [f"({text(a)},{text(b)}]" for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return tuple(labels) + (f"({text(bounds[-1])},Inf)",)


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeSplitSpec:
    """A Cox model whose exposure effect may differ between periods of follow-up.

    Parameters
    ----------
    cox : CoxSpec
        The model without the split: outcome, covariates (the exposure among them), strata,
        ties, cluster. Right-censored data (``cox.start`` is None), complete cases.
    exposure : str
        The covariate given one coefficient per period (numeric or categorical).
    cuts : tuple of float
        Times the follow-up is split at (same unit as ``cox.duration``), e.g. ``(24.0, 60.0)``.
    """

    cox: CoxSpec
    exposure: str
    cuts: tuple[float, ...]

    def __post_init__(self) -> None:
        cuts = _checked_cuts(self.cuts)
        object.__setattr__(self, "cuts", tuple(float(c) for c in cuts))
        if self.exposure not in self.cox.covariates:
            raise ConfigError(
                f"TimeSplitSpec.exposure '{self.exposure}' expected among the covariates "
                f"{list(self.cox.covariates)}."
            )
        if self.cox.start is not None or self.cox.missing != "complete_case":
            raise ConfigError(
                "TimeSplitSpec expected a right-censored, complete-case CoxSpec (start=None, "
                f"missing='complete_case'); got start={self.cox.start!r}, "
                f"missing={self.cox.missing!r}."
            )
        if self.cox.interactions and any(self.exposure in pair for pair in self.cox.interactions):
            raise ConfigError(
                f"TimeSplitSpec: the exposure '{self.exposure}' is in an interaction "
                f"{list(self.cox.interactions)}; split the model without it."
            )


@dataclass(frozen=True, slots=True)
class TimeSplitResult:
    """Period-specific hazard ratios of the exposure and the test that they are equal.

    Attributes
    ----------
    fit : CoxResult
        The Cox fit on the split data (``n`` counts intervals, as R's; ``dropped`` counts the
        patients the complete-case analysis lost, per centre; ``levels`` are the patient-level
        categorical levels, reference first). Coefficients are named as R
        names ``exposure:strata(tgroup)``: the other covariates first, then
        ``<exposure column>:strata(tgroup)tgroup=<k>`` per period.
    periods : DataFrame
        One row per period and exposure column: ``period`` (1, 2, ...), ``label``
        (``"(0,24]"``), ``period_start``, ``period_end``, ``term``, ``estimate``, ``std_error``,
        ``hr``, ``ci_lower``, ``ci_upper``, ``p_value``, ``rows`` (intervals in the period),
        ``events`` (in the period), ``exposed_events`` (events of exposed patients; numeric
        exposure only, else NaN).
    wald_chisq, wald_df, wald_p_value : float, int, float
        Wald test that every exposure column has the same coefficient in all periods
        (contrasts of consecutive periods; ``fit.vcov``, so robust with a cluster).
    n_patients : int
        Patients analysed (complete cases).
    spec : TimeSplitSpec
    """

    fit: CoxResult
    periods: pd.DataFrame
    wald_chisq: float
    wald_df: int
    wald_p_value: float
    n_patients: int
    spec: TimeSplitSpec

    @property
    def events(self) -> int:
        return self.fit.events

    @property
    def n(self) -> int:
        """Patients analysed (the fit's ``n`` counts intervals)."""
        return self.n_patients

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per period (``model = "cox_time_split"``, ``row_type =
        "period"``), the other covariates (``row_type = "covariate"``), then the test of equal
        periods (``term = "equal periods (Wald)"``, ``row_type = "test"``, with ``chisq`` and
        ``df``). ``n`` is the patients analysed; ``rows`` the intervals of the fit or period;
        ``events`` the events of the fit or period."""
        spec = self.spec.cox
        base = {"analysis": spec.analysis, "endpoint": spec.endpoint, "model": "cox_time_split"}
        rows: list[dict[str, Any]] = []
        fit = self.fit.to_frame()
        records = [{str(k): v for k, v in rec.items()} for rec in fit.to_dict("records")]
        by_term = {rec["term"]: rec for rec in records}
        for period in self.periods.to_dict("records"):
            row = dict(by_term[period["term"]])
            row.update({str(k): v for k, v in period.items()})
            row.update(base, n=self.n_patients, row_type="period")
            rows.append(row)
        period_terms = set(self.periods["term"])
        for rec in records:
            if rec["term"] not in period_terms:
                rec.update(base, n=self.n_patients, rows=self.fit.n, row_type="covariate")
                rows.append(rec)
        rows.append(
            {
                **base,
                "term": "equal periods (Wald)",
                "p_value": self.wald_p_value,
                "n": self.n_patients,
                "events": self.fit.events,
                "chisq": self.wald_chisq,
                "df": self.wald_df,
                "rows": self.fit.n,
                "row_type": "test",
            }
        )
        return tidy_frame(rows)


def _period_column(column: str, episode: str, k: int) -> str:
    return f"{column}:strata({episode}){episode}={k}"


def fit_time_split(data: pd.DataFrame, spec: TimeSplitSpec) -> TimeSplitResult:
    """Cox model with one exposure hazard ratio per period of follow-up.

    The complete cases of ``spec.cox`` are split at ``spec.cuts`` (:func:`time_split`) and
    ``coxph(Surv(tstart, stop, event) ~ exposure:strata(tgroup) + covariates + strata(...))``
    is fitted: the baseline hazard stays stratified as in ``spec.cox`` (one baseline across the
    periods), and the exposure gets one coefficient per period. A non-proportional effect
    shows as period hazard ratios that differ; the Wald test of equal periods tests it on
    ``(periods - 1) x exposure columns`` df. With no cut inside the follow-up this is the
    unsplit model.

    Parameters
    ----------
    data : DataFrame
        One row per patient.
    spec : TimeSplitSpec

    Returns
    -------
    TimeSplitResult

    Raises
    ------
    DataError
        A period has no events (choose cuts inside the follow-up), or the data cannot support
        the model (see :func:`pooled.models.cox.fit_cox`).

    References
    ----------
    .. [1] Therneau T, Crowson C, Atkinson E. Using time dependent covariates and time
       dependent coefficients in the Cox model. survival package vignette "timedep", 2023.
    .. [2] Grambsch PM, Therneau TM. Proportional hazards tests and diagnostics based on
       weighted residuals. Biometrika 1994;81:515-26.

    Examples
    --------
    >>> # spec = TimeSplitSpec(cox=CoxSpec(duration="os_months", event="os_event",
    >>> #                                  covariates=("ctc_positive", "age")),
    >>> #                      exposure="ctc_positive", cuts=(24, 60))
    >>> # fit_time_split(cohort, spec).periods[["label", "hr", "ci_lower", "ci_upper"]]
    """
    cox = spec.cox
    design = build_spec_design(data, cox)
    kept = data.iloc[design.rows].reset_index(drop=True)
    stop = pd.to_numeric(kept[cox.duration], errors="coerce").to_numpy(dtype=np.float64)
    zero = 0.0 if stop.min() > 0 else float(stop.min()) - 1.0  # time-0 patients stay in
    episode = "tgroup"
    names = set(kept.columns) | set(design.term_names)
    while episode in names:
        episode = "_" + episode
    start = "tstart"
    while start in names:
        start = "_" + start
    row_id = "_row"
    while row_id in names:
        row_id = "_" + row_id
    kept[row_id] = np.arange(len(kept))
    split = time_split(
        kept,
        spec.cuts,
        duration=cox.duration,
        event=cox.event,
        start_column=start,
        episode=episode,
        zero=zero,
    )
    source = split[row_id].to_numpy()
    matrix = design.matrix[source]
    period = split[episode].to_numpy()
    n_periods = len(spec.cuts) + 1
    present = [k for k in range(1, n_periods + 1) if np.any(period == k)]
    event_values = split[cox.event].to_numpy(dtype=np.float64)
    labels = period_labels(spec.cuts, zero=0.0)
    for k in present:
        if not np.any(event_values[period == k] == 1):
            raise DataError(
                f"Time-split model: the period {labels[k - 1]} has no events among the "
                f"{int(np.sum(period == k))} intervals in it, so its hazard ratio cannot be "
                f"estimated. Choose cuts inside the follow-up (got {list(spec.cuts)})."
            )
    exposure_cols = list(design.columns_of(spec.exposure))
    other_cols = [j for j in range(matrix.shape[1]) if j not in exposure_cols]
    columns: dict[str, np.ndarray] = {}
    for j in other_cols:
        columns[design.term_names[j]] = matrix[:, j]
    period_terms: list[tuple[int, int, str]] = []
    for k in present:  # R's model.matrix order: the exposure's columns vary fastest
        for j in exposure_cols:
            term = _period_column(design.term_names[j], episode, k)
            columns[term] = matrix[:, j] * (period == k)
            period_terms.append((k, j, term))
    frame = pd.DataFrame(columns)
    frame[start] = split[start].to_numpy(dtype=np.float64)
    frame[cox.duration] = split[cox.duration].to_numpy(dtype=np.float64)
    frame[cox.event] = event_values
    for column in dict.fromkeys([*cox.strata, *([cox.cluster] if cox.cluster else [])]):
        frame[column] = split[column].to_numpy()
    if "centre" in split.columns:
        frame["centre"] = split["centre"].to_numpy()
    fit_spec = replace(
        cox,
        covariates=tuple(columns),
        categorical=(),
        interactions=(),
        start=start,
    )
    fit = fit_cox(frame, fit_spec)
    fit = replace(fit, dropped=design.dropped, levels=design.levels)
    # period table
    vcov = fit.vcov
    index = {name: i for i, name in enumerate(fit.term_names)}
    exposed = design.matrix[:, exposure_cols[0]][source] if len(exposure_cols) == 1 else None
    records = []
    bounds = [0.0, *spec.cuts, math.inf]
    for k, j, term in period_terms:
        i = index[term]
        est = float(fit.coefficients[i])
        se = float(np.sqrt(vcov[i, i]))
        in_period = period == k
        records.append(
            {
                "term": term,
                "estimate": est,
                "std_error": se,
                "hr": math.exp(est),
                "ci_lower": math.exp(est - _Z975 * se),
                "ci_upper": math.exp(est + _Z975 * se),
                "p_value": float(2.0 * stats.norm.sf(abs(est / se))),
                "events": int(event_values[in_period].sum()),
                "period": k,
                "label": labels[k - 1],
                "period_start": bounds[k - 1],
                "period_end": bounds[k],
                "exposure_column": design.term_names[j],
                "z": est / se,
                "rows": int(in_period.sum()),
                "exposed_events": (
                    float(np.sum(event_values[in_period] * exposed[in_period]))
                    if exposed is not None
                    else np.nan
                ),
            }
        )
    periods = pd.DataFrame(records)
    # Wald test of equal periods: consecutive differences within each exposure column
    contrasts = []
    for j in exposure_cols:
        terms = [index[t] for k, jj, t in period_terms if jj == j]
        for a, b in zip(terms[:-1], terms[1:], strict=True):
            row = np.zeros(len(fit.term_names))
            row[a], row[b] = 1.0, -1.0
            contrasts.append(row)
    if contrasts:
        c = np.array(contrasts)
        cb = c @ fit.coefficients
        chisq = float(cb @ np.linalg.solve(c @ vcov @ c.T, cb))
        df = len(contrasts)
        p = float(stats.chi2.sf(chisq, df))
    else:  # a single period: nothing to compare
        chisq, df, p = float("nan"), 0, float("nan")
    return TimeSplitResult(
        fit=fit,
        periods=periods,
        wald_chisq=chisq,
        wald_df=df,
        wald_p_value=p,
        n_patients=design.n,
        spec=spec,
    )

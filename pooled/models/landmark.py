"""Exposures measured after time zero: the time-dependent Cox model, landmark analyses, and the
comparison that shows immortal-time bias.

A marker status that uses samples taken after time zero (CTC clearance at the first follow-up,
a trajectory, "ever negative") but is analysed as if known at time zero gives the exposed
group the follow-up during which they had to survive to be sampled: **immortal-time bias**,
which makes a favourable change look better than it is. Two analyses avoid it:

- the **time-dependent Cox model** (:func:`fit_time_dependent`): each patient's follow-up is
  split at every sample time and the status of the last sample is carried forward
  (:func:`pooled.models.timesplit.add_time_dependent`, R's ``tmerge(..., tdc())``), fitted on
  the ``(start, stop]`` rows (R's ``coxph(Surv(tstart, tstop, event) ~ status + ...)``);
- **landmark analyses** (:func:`fit_landmark`): at a fixed time ``L`` after baseline, the
  patients still alive and under follow-up, classified by the status last measured at or
  before ``L``, with the clock restarted at ``L``.

:func:`compare_exposure_timing` puts the baseline, time-dependent and landmark estimates (and
a naive whole-series exposure, when given) side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pooled.errors import ConfigError, DataError
from pooled.models.cox import CoxResult, CoxSpec, fit_cox
from pooled.models.design import build_spec_design
from pooled.models.timesplit import add_time_dependent
from pooled.results import tidy_frame

__all__ = [
    "ExposureTimingResult",
    "LandmarkResult",
    "LandmarkSpec",
    "TimeDependentResult",
    "compare_exposure_timing",
    "fit_landmark",
    "fit_time_dependent",
    "landmark_data",
]

_Z975 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True, slots=True, kw_only=True)
class LandmarkSpec:
    """How the serial status enters the time-dependent and landmark models.

    Parameters
    ----------
    cox : CoxSpec
        The model on the patients' time scale: ``duration`` and ``event`` are the endpoint's
        columns, ``covariates`` name the status column ``exposure`` first, then the
        adjustment covariates; strata, ties, cluster as for any Cox model. ``start`` must be
        None (the functions here build the ``(start, stop]`` rows).
    exposure : str
        Name of the status column in the models (e.g. ``"ctc_positive"``).
    id : str
        Patient identifier shared by the patients and the samples.
    sample_time : str
        Column of the samples' times, on the endpoint's time scale (months since time zero).
    value : str
        Column of the samples' status (0/1).
    times : tuple of float
        Landmark times (months after time zero, > 0).
    """

    cox: CoxSpec
    exposure: str
    id: str = "patient_id"
    sample_time: str = "months"
    value: str = "status"
    times: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.cox.start is not None:
            raise ConfigError(
                "LandmarkSpec.cox expected one row per patient (start=None); the "
                "time-dependent rows are built here."
            )
        if self.exposure not in self.cox.covariates:
            raise ConfigError(
                f"LandmarkSpec.exposure {self.exposure!r} expected among the Cox covariates "
                f"{list(self.cox.covariates)}."
            )
        times = tuple(sorted({float(t) for t in self.times}))
        if any(not (np.isfinite(t) and t > 0) for t in times):
            raise ConfigError(f"landmark times must be > 0; got {list(self.times)}.")
        object.__setattr__(self, "times", times)


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ConfigError(f"Columns {absent} expected in the {what}; found {list(frame.columns)}.")


def landmark_data(
    patients: pd.DataFrame,
    samples: pd.DataFrame,
    landmark: float,
    *,
    id: str,
    duration: str,
    sample_time: str,
    value: str,
    name: str,
    time_column: str = "time_from_landmark",
) -> pd.DataFrame:
    """The landmark cohort at ``landmark``: patients alive and under follow-up there
    (``duration > landmark``), with the status of their last sample at or before the landmark
    (of several at one time, the last in the samples' order) and the time from the landmark.

    Patients with no sample at or before the landmark are left out (their status there is
    unknown), as R's ``merge`` of the last samples does. Returns the kept patients in input
    order with ``name`` and ``time_column`` added.

    References
    ----------
    .. [1] Anderson JR, Cain KC, Gelber RD. Analysis of survival by tumor response. J Clin
       Oncol 1983;1:710-9.
    .. [2] van Houwelingen HC. Dynamic prediction by landmarking in event history analysis.
       Scand J Stat 2007;34:1-16.

    Examples
    --------
    >>> pat = pd.DataFrame({"id": [1, 2, 3], "os": [10.0, 2.0, 8.0], "ev": [1, 1, 0]})
    >>> smp = pd.DataFrame({"id": [1, 1, 2, 3], "t": [0.0, 2.5, 0.0, 4.0], "pos": [1, 0, 1, 1]})
    >>> landmark_data(pat, smp, 3, id="id", duration="os", sample_time="t", value="pos",
    ...               name="pos_lm")[["id", "pos_lm", "time_from_landmark"]].values.tolist()
    [[1.0, 0.0, 7.0]]
    """
    _check_columns(patients, (id, duration), "patients")
    _check_columns(samples, (id, sample_time, value), "samples")
    stop = pd.to_numeric(patients[duration], errors="coerce").to_numpy(dtype=np.float64)
    at_risk = patients.loc[stop > landmark]
    t = pd.to_numeric(samples[sample_time], errors="coerce")
    before = samples.loc[(t <= landmark).to_numpy()].assign(_t=t[(t <= landmark).to_numpy()])
    before = before.assign(_order=np.arange(len(before)))
    before = before.sort_values(["_t", "_order"], kind="stable")
    last = before.drop_duplicates(subset=[id], keep="last").set_index(id)[value]
    status = pd.to_numeric(at_risk[id].map(last), errors="coerce")
    out = at_risk.loc[status.notna().to_numpy()].copy()
    out[name] = status[status.notna()].to_numpy(dtype=np.float64)
    out[time_column] = pd.to_numeric(out[duration]).to_numpy(dtype=np.float64) - landmark
    return out


@dataclass(frozen=True, slots=True)
class TimeDependentResult:
    """The Cox model with the status as a time-dependent covariate.

    ``fit`` is the Cox fit on the ``(start, stop]`` rows (its ``n`` counts rows);
    ``n_patients`` the patients contributing, ``n_rows`` the rows, ``n_changing`` the
    patients whose status changes during follow-up, ``exposed_time`` / ``unexposed_time`` the
    follow-up with status 1 / 0 (sum of interval lengths), ``ph_test`` the PH test of the fit
    (R's ``cox.zph``; None when not asked for or not computable).
    """

    spec: LandmarkSpec
    fit: CoxResult
    n_patients: int
    n_rows: int
    n_changing: int
    exposed_time: float
    unexposed_time: float
    ph_test: Any = None

    @property
    def model(self) -> str:
        return "cox_time_dependent"

    def to_frame(self) -> pd.DataFrame:
        """The fit's tidy rows (``model`` = ``cox_time_dependent``, ``n`` = patients), with
        extra columns ``n_rows`` and ``n_changing``; then the PH test's rows (``model`` =
        ``cox_zph``) when it was computed."""
        frame = self.fit.to_frame().assign(
            model=self.model, n=self.n_patients, n_rows=self.n_rows, n_changing=self.n_changing
        )
        if self.ph_test is None:
            return frame
        return pd.concat([frame, self.ph_test.to_frame()], ignore_index=True)


def fit_time_dependent(
    patients: pd.DataFrame,
    samples: pd.DataFrame,
    spec: LandmarkSpec,
    *,
    ph_test: bool = True,
) -> TimeDependentResult:
    """Cox model with the serial status as a time-dependent covariate (status carried forward
    from each sample).

    The patients' follow-up ``(0, duration]`` is split at every sample time strictly inside
    it (:func:`pooled.models.timesplit.add_time_dependent`); before a patient's first sample
    the status is unknown and those intervals are left out (complete cases), so a patient
    enters at the first sample. The fit is R's ``coxph(Surv(tstart, tstop, event) ~ status +
    covariates + strata(...))`` on ``tmerge`` data; the PH test is ``cox.zph`` of that fit.

    Parameters
    ----------
    patients : DataFrame
        One row per patient: ``spec.id``, the endpoint, the covariates and strata.
    samples : DataFrame
        One row per sample: ``spec.id``, ``spec.sample_time`` (endpoint time scale) and
        ``spec.value`` (0/1).
    spec : LandmarkSpec
    ph_test : bool
        Add the proportional-hazards test of the fit.

    Returns
    -------
    TimeDependentResult

    Raises
    ------
    DataError
        No patient has a sample during follow-up, or the model cannot be fitted.

    References
    ----------
    .. [1] Andersen PK, Gill RD. Cox's regression model for counting processes: a large
       sample study. Ann Stat 1982;10:1100-20.
    .. [2] Therneau T, Crowson C, Atkinson E. Using time dependent covariates and time
       dependent coefficients in the Cox model. survival package vignette "timedep", 2023.
    .. [3] Suissa S. Immortal time bias in pharmaco-epidemiology. Am J Epidemiol
       2008;167:492-9.

    Examples
    --------
    >>> # fit_time_dependent(patients, samples, LandmarkSpec(cox=CoxSpec(duration="os_months",
    >>> #     event="os_event", covariates=("ctc_positive", "age")), exposure="ctc_positive"))
    """
    cox = spec.cox
    _check_columns(patients, (spec.id, cox.duration, cox.event), "patients")
    _check_columns(samples, (spec.id, spec.sample_time, spec.value), "samples")
    base = patients.drop(columns=[spec.exposure], errors="ignore")
    base = base.loc[pd.to_numeric(base[cox.duration], errors="coerce") > 0]
    counting = add_time_dependent(
        base,
        samples,
        id=spec.id,
        duration=cox.duration,
        event=cox.event,
        sample_time=spec.sample_time,
        value=spec.value,
        name=spec.exposure,
        start_column="_tstart",
        stop_column="_tstop",
        event_column="_event",
    )
    counting = counting.loc[counting[spec.exposure].notna()].reset_index(drop=True)
    if counting.empty:
        raise DataError(
            "No patient has a sample during follow-up: the time-dependent model has no rows."
        )
    td_spec = replace(cox, start="_tstart", duration="_tstop", event="_event")
    # complete cases: a patient missing a covariate leaves with all their rows
    counting = counting.iloc[build_spec_design(counting, td_spec).rows].reset_index(drop=True)
    if counting.empty:
        raise DataError("No patient has complete covariates: the time-dependent model has no rows.")
    fit = fit_cox(counting, td_spec)
    length = (counting["_tstop"] - counting["_tstart"]).to_numpy()
    status = counting[spec.exposure].to_numpy(dtype=np.float64)
    changing = counting.groupby(spec.id)[spec.exposure].nunique()
    test = None
    if ph_test:
        from pooled.models.zph import proportional_hazards_test

        try:
            test = proportional_hazards_test(fit, counting)
        except DataError:
            test = None
    return TimeDependentResult(
        spec=spec,
        fit=fit,
        n_patients=int(counting[spec.id].nunique()),
        n_rows=int(fit.n),
        n_changing=int((changing > 1).sum()),
        exposed_time=float(length[status == 1].sum()),
        unexposed_time=float(length[status == 0].sum()),
        ph_test=test,
    )


@dataclass(frozen=True, slots=True)
class LandmarkResult:
    """Landmark analyses: one Cox fit per landmark time.

    ``fits`` maps each landmark to its Cox fit (time from the landmark); ``cohorts`` holds per
    landmark ``landmark, at_risk`` (alive and under follow-up), ``without_sample`` (no sample
    at or before the landmark: left out), ``n``, ``events``, ``exposed``; ``skipped`` maps a
    landmark the data could not support to the reason.
    """

    spec: LandmarkSpec
    fits: tuple[tuple[float, CoxResult], ...]
    cohorts: pd.DataFrame
    skipped: tuple[tuple[float, str], ...] = ()

    @property
    def model(self) -> str:
        return "cox_landmark"

    def fit_at(self, landmark: float) -> CoxResult:
        for t, fit in self.fits:
            if t == float(landmark):
                return fit
        raise ConfigError(f"no landmark fit at {landmark}; landmarks: {[t for t, _ in self.fits]}.")

    def to_frame(self) -> pd.DataFrame:
        """Every landmark fit's tidy rows (``model`` = ``cox_landmark``) with extra columns
        ``landmark`` and ``at_risk``."""
        frames = []
        at_risk = dict(zip(self.cohorts["landmark"], self.cohorts["at_risk"], strict=True))
        for t, fit in self.fits:
            frame = fit.to_frame().assign(model=self.model, landmark=t, at_risk=int(at_risk[t]))
            frames.append(frame)
        if not frames:
            return tidy_frame([])
        return pd.concat(frames, ignore_index=True)


def fit_landmark(
    patients: pd.DataFrame, samples: pd.DataFrame, spec: LandmarkSpec
) -> LandmarkResult:
    """Landmark Cox models at ``spec.times``.

    At each landmark ``L``: the patients with ``duration > L`` (alive and under follow-up),
    classified by the status of their last sample at or before ``L`` (:func:`landmark_data`),
    followed from ``L`` (time ``duration - L``, same event), fitted with ``spec.cox``'s
    covariates and strata (R's ``coxph(Surv(os_months - L, os_event) ~ status_L + ...)``).

    Raises
    ------
    DataError
        No landmark could be fitted (every reason is given).

    References
    ----------
    .. [1] Anderson JR, Cain KC, Gelber RD. Analysis of survival by tumor response. J Clin
       Oncol 1983;1:710-9.
    .. [2] Dafni U. Landmark analysis at the 25-year landmark point. Circ Cardiovasc Qual
       Outcomes 2011;4:363-71.

    Examples
    --------
    >>> # fit_landmark(patients, samples, LandmarkSpec(cox=..., exposure="ctc_positive",
    >>> #              times=(3, 6)))
    """
    cox = spec.cox
    if not spec.times:
        raise ConfigError("fit_landmark expected at least one landmark time in spec.times.")
    _check_columns(patients, (spec.id, cox.duration, cox.event), "patients")
    fits: list[tuple[float, CoxResult]] = []
    skipped: list[tuple[float, str]] = []
    rows = []
    base = patients.drop(columns=[spec.exposure], errors="ignore")
    stop = pd.to_numeric(base[cox.duration], errors="coerce")
    for landmark in spec.times:
        data = landmark_data(
            base, samples, landmark, id=spec.id, duration=cox.duration,
            sample_time=spec.sample_time, value=spec.value, name=spec.exposure,
            time_column="_time_from_landmark",
        )  # fmt: skip
        at_risk = int((stop > landmark).sum())
        record: dict[str, Any] = {
            "landmark": landmark,
            "at_risk": at_risk,
            "without_sample": at_risk - len(data),
            "n": 0,
            "events": 0,
            "exposed": int(data[spec.exposure].sum()),
        }
        try:
            fit = fit_cox(data, replace(cox, duration="_time_from_landmark"))
        except DataError as exc:
            skipped.append((landmark, str(exc)))
            rows.append(record)
            continue
        record.update(n=fit.n, events=fit.events)
        rows.append(record)
        fits.append((landmark, fit))
    if not fits:
        reasons = "; ".join(f"{t:g}: {why}" for t, why in skipped)
        raise DataError(f"No landmark analysis could be fitted ({reasons}).")
    return LandmarkResult(
        spec=spec, fits=tuple(fits), cohorts=pd.DataFrame(rows), skipped=tuple(skipped)
    )


@dataclass(frozen=True, slots=True)
class ExposureTimingResult:
    """The exposure's hazard ratio by how the exposure's timing is handled, side by side.

    ``table`` has one row per analysis: ``analysis`` (``baseline``, ``time_dependent``,
    ``landmark_<L>``, ``naive``), ``label``, ``estimate`` (log HR), ``std_error``, ``hr``,
    ``ci_lower``, ``ci_upper``, ``p_value``, ``n``, ``events``, ``time_origin`` (what the
    follow-up counts from) and ``immortal_time`` (whether the analysis is open to
    immortal-time bias).
    """

    exposure: str
    endpoint: str
    table: pd.DataFrame
    analysis: str = ""

    def to_frame(self) -> pd.DataFrame:
        """Tidy rows (``model`` = ``exposure_timing``, ``term`` = the exposure, the analysis
        in ``timing``), extra columns ``timing``, ``label``, ``time_origin``,
        ``immortal_time``."""
        rows = []
        for rec in self.table.to_dict("records"):
            rows.append(
                {
                    "analysis": self.analysis,
                    "endpoint": self.endpoint,
                    "model": "exposure_timing",
                    "term": self.exposure,
                    **{
                        k: rec[k]
                        for k in (
                            "estimate",
                            "std_error",
                            "hr",
                            "ci_lower",
                            "ci_upper",
                            "p_value",
                            "n",
                            "events",
                        )
                    },  # fmt: skip
                    "timing": rec["analysis"],
                    "label": rec["label"],
                    "time_origin": rec["time_origin"],
                    "immortal_time": rec["immortal_time"],
                }
            )
        return tidy_frame(rows)


def _row(
    fit: CoxResult, term: str, analysis: str, label: str, origin: str, immortal: bool,
    n: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    j = fit.term_names.index(term)
    est = float(fit.coefficients[j])
    se = float(fit.std_errors[j])
    return {
        "analysis": analysis,
        "label": label,
        "estimate": est,
        "std_error": se,
        "hr": float(np.exp(est)),
        "ci_lower": float(np.exp(est - _Z975 * se)),
        "ci_upper": float(np.exp(est + _Z975 * se)),
        "p_value": float(2.0 * stats.norm.sf(abs(est / se))),
        "n": int(fit.n if n is None else n),
        "events": int(fit.events),
        "time_origin": origin,
        "immortal_time": immortal,
    }


def compare_exposure_timing(
    *,
    exposure: str,
    endpoint: str = "",
    baseline: CoxResult | None = None,
    time_dependent: TimeDependentResult | None = None,
    landmark: LandmarkResult | None = None,
    naive: Mapping[str, CoxResult] | None = None,
    baseline_term: str | None = None,
    analysis: str = "",
) -> ExposureTimingResult:
    """The exposure's HR from the baseline model, the time-dependent model, each landmark
    and any naive whole-series exposures, side by side (:class:`ExposureTimingResult`).

    ``naive`` maps a label (``"ever cleared"``) to a Cox fit from time zero of an exposure
    that uses later samples; its term is the fit's first. ``baseline_term`` names the
    exposure's term in the baseline fit (default ``exposure``).

    References
    ----------
    .. [1] Suissa S. Immortal time bias in pharmaco-epidemiology. Am J Epidemiol
       2008;167:492-9.
    .. [2] Lévesque LE, Hanley JA, Kezouh A, Suissa S. Problem of immortal time bias in cohort
       studies: example using statins for preventing progression of diabetes. BMJ
       2010;340:b5087.

    Examples
    --------
    >>> # compare_exposure_timing(exposure="ctc_positive", baseline=cox, time_dependent=td,
    >>> #                         landmark=lm).table
    """
    rows = []
    if baseline is not None:
        rows.append(
            _row(baseline, baseline_term or exposure, "baseline", "status at baseline",
                 "baseline", False)
        )  # fmt: skip
    if time_dependent is not None:
        rows.append(
            _row(time_dependent.fit, exposure, "time_dependent",
                 "current status (time-dependent)", "baseline", False,
                 n=time_dependent.n_patients)
        )  # fmt: skip
    if landmark is not None:
        for t, fit in landmark.fits:
            rows.append(
                _row(fit, exposure, f"landmark_{t:g}", f"status at {t:g} months (landmark)",
                     f"landmark {t:g} months", False)
            )  # fmt: skip
    for label, fit in (naive or {}).items():
        rows.append(_row(fit, fit.term_names[0], "naive", label, "baseline", True))
    if not rows:
        raise ConfigError("compare_exposure_timing expected at least one fit.")
    return ExposureTimingResult(
        exposure=exposure, endpoint=endpoint, table=pd.DataFrame(rows), analysis=analysis
    )

"""The serial CTC status over time: the time-dependent Cox model, and the exposure-timing
comparison (baseline, time-dependent and landmark estimates side by side).

Runs when the exposure is of kind ``time_dependent``: its status comes from the serial
samples (CTC per 7.5 ml >= ``exposure.threshold``). The cohort step puts the status of the
baseline sample into the exposure column, so the models fitted from time zero (Cox,
Kaplan-Meier, ...) use the baseline status. Here, per endpoint:

- ``time_dependent`` (step ``time_dependent``): the adjusted stratified Cox model with the
  status carried forward from each sample (counting-process rows, R's ``tmerge`` + ``tdc``),
  and its proportional-hazards test (as for the baseline model);
- ``exposure_timing`` (step ``exposure_timing``, after the landmark step): the baseline,
  time-dependent and landmark hazard ratios in one table, for the report's sentence on
  immortal-time bias.

The sample times are put on the endpoint's time scale: months since the baseline sample plus
the months from the endpoint's time origin to the baseline sample (0 when the origin is the
sample date; from the dates otherwise; a patient whose offset cannot be computed has no
usable samples). The step uses the Cox step's section (ties, robust).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pooled.dataset import AnalysisDataset
from pooled.errors import DataError
from pooled.exposures import ExposureSpec, serial_status
from pooled.model_flow import ModelFlow, account_for_model
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, Step, endpoint_frame, per_centre
from pooled.steps.cox import COX, CoxSection, cox_spec
from pooled.steps.serial import DAYS_PER_MONTH, samples_with_days

PATIENT_KEY = "patient_key"
ORIGIN_DATES = {"diagnosis": "diagnosis_date", "surgery": "surgery_date"}


def is_time_dependent(exposure: ExposureSpec) -> bool:
    """Whether the exposure is the serial status over time (kind ``time_dependent``)."""
    return exposure.kind == "time_dependent"


def _keys(frame: pd.DataFrame) -> pd.Series:
    return frame["centre"].astype(str) + "/" + frame["patient_id"].astype(str)


def _origin_offsets(patients: pd.DataFrame, samples: pd.DataFrame) -> pd.Series:
    """Months from each patient's endpoint time origin to the baseline sample (by key)."""
    keys = _keys(patients)
    origin = patients.get("time_origin", pd.Series("sample", index=patients.index))
    origin = origin.astype(object).where(origin.notna(), "sample").astype(str)
    offset = pd.Series(np.where(origin == "sample", 0.0, np.nan), index=patients.index)
    if (origin != "sample").any():
        first = None
        if "sample_date" in samples.columns:
            dates = pd.to_datetime(samples["sample_date"], errors="coerce")
            first = dates.groupby(_keys(samples)).min()
        baseline = pd.to_datetime(
            patients.get("sample_date", pd.Series(pd.NaT, index=patients.index)), errors="coerce"
        )
        if first is not None:
            baseline = keys.map(first).fillna(baseline)
        for name, column in ORIGIN_DATES.items():
            rows = (origin == name).to_numpy()
            if rows.any() and column in patients.columns:
                start = pd.to_datetime(patients[column], errors="coerce")
                days = (pd.to_datetime(baseline) - start).dt.days.astype(float)
                offset[rows] = (days / DAYS_PER_MONTH)[rows].to_numpy()
    return pd.Series(offset.to_numpy(), index=keys.to_numpy())


def timed_samples(
    patients: pd.DataFrame, samples: pd.DataFrame, exposure: ExposureSpec
) -> pd.DataFrame:
    """The serial samples' status on the endpoint's time scale.

    Returns one row per usable sample: ``patient_key`` (``centre/patient_id``), ``months``
    (since the endpoint's time origin), ``months_from_baseline`` and ``status`` (0/1); samples
    without a time, a count or a time-origin offset are left out.
    """
    if samples.empty:
        raise DataError(
            f"exposure {exposure.name!r} (time_dependent) needs serial samples, but no centre "
            "in the store sent a samples table."
        )
    timed = samples_with_days(samples)
    status = serial_status(
        timed["ctc_count"],
        timed.get("ctc_blood_volume_ml", pd.Series(np.nan, index=timed.index)),
        exposure.threshold,
    )
    key = _keys(timed)
    offset = key.map(_origin_offsets(patients, samples))
    out = pd.DataFrame(
        {
            PATIENT_KEY: key.to_numpy(),
            "months_from_baseline": timed["months_from_baseline"].to_numpy(dtype=float),
            "months": (timed["months_from_baseline"] + offset).to_numpy(dtype=float),
            "status": status.to_numpy(dtype=float),
        }
    )
    return out.loc[out["months"].notna() & out["status"].notna()].reset_index(drop=True)


def baseline_status(
    patients: pd.DataFrame, samples: pd.DataFrame, exposure: ExposureSpec
) -> pd.Series:
    """Each patient's status at the baseline sample (NaN without one), for the cohort's
    exposure column."""
    if samples.empty:
        raise DataError(
            f"exposure {exposure.name!r} (time_dependent) needs serial samples, but no centre "
            "in the store sent a samples table."
        )
    timed = samples_with_days(samples)
    status = serial_status(
        timed["ctc_count"],
        timed.get("ctc_blood_volume_ml", pd.Series(np.nan, index=timed.index)),
        exposure.threshold,
    )
    at_baseline = (timed["months_from_baseline"] == 0).to_numpy() & status.notna().to_numpy()
    first = pd.Series(status[at_baseline].to_numpy(), index=_keys(timed)[at_baseline].to_numpy())
    first = first[~first.index.duplicated(keep="last")]
    return pd.Series(_keys(patients).map(first).to_numpy(dtype=float), index=patients.index)


def keyed_patients(patients: pd.DataFrame) -> pd.DataFrame:
    """The patients with ``patient_key`` (``centre/patient_id``)."""
    return patients.assign(**{PATIENT_KEY: _keys(patients).to_numpy()})


def patients_with_samples(
    patients: pd.DataFrame, samples: pd.DataFrame, cox: Any, exposure: str
) -> pd.Series:
    """Keys of the patients the time-dependent model analyses: follow-up > 0, the outcome,
    strata and covariates known, and a sample before the end of follow-up."""
    end = pd.to_numeric(patients.set_index(PATIENT_KEY)[cox.duration], errors="coerce")
    sample_end = end.reindex(samples[PATIENT_KEY]).to_numpy()
    during = samples.loc[samples["months"].to_numpy() < sample_end, PATIENT_KEY].unique()
    needed = list(cox.required_columns) + [
        c for c in cox.covariates if c != exposure and c in patients.columns
    ]
    complete = patients.dropna(subset=needed)
    complete = complete.loc[pd.to_numeric(complete[cox.duration]) > 0, PATIENT_KEY]
    return complete[complete.isin(set(during))]


def left_out_flow(
    cohort: pd.DataFrame,
    spec: Any,
    used: pd.Series,
    reported_n: int,
    model: str,
    reason: str,
) -> ModelFlow:
    """The flow of a model on some of the endpoint's patients (``used``: keys analysed).

    Cohort patients with the endpoint and every covariate who are not analysed are left out
    by design (``reason`` says why); the others are counted by what they miss."""
    needed = list(spec.covariates) + list(spec.strata) + ([spec.cluster] if spec.cluster else [])
    needed = [c for c in needed if c in cohort.columns]
    keys = _keys(cohort)
    complete = cohort[[spec.duration, spec.event, *needed]].notna().all(axis=1).to_numpy()
    analysed_mask = keys.isin(set(used)).to_numpy()
    left_out = complete & ~analysed_mask
    analysed = per_centre(cohort.loc[analysed_mask])
    return account_for_model(
        cohort,
        model=model,
        endpoint=spec.endpoint,
        analysed=analysed,
        reported_n=reported_n,
        required=(spec.duration, spec.event),
        covariates=needed,
        left_out=left_out,
        left_out_reason=reason,
    )


def run_time_dependent(
    cohort: AnalysisDataset, section: CoxSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """The adjusted Cox model of the endpoint with the status as a time-dependent covariate,
    with its PH test (in the result)."""
    from pooled.models.landmark import LandmarkSpec, fit_time_dependent

    endpoint, exposure = ctx.endpoint, ctx.exposure
    patients = keyed_patients(endpoint_frame(cohort.patients, endpoint))
    samples = timed_samples(cohort.patients, cohort.samples, exposure)
    spec = LandmarkSpec(
        cox=cox_spec(ctx, endpoint, interactions=False, term_lr_tests=False),
        exposure=exposure.name,
        id=PATIENT_KEY,
        sample_time="months",
        value="status",
    )
    result = fit_time_dependent(patients, samples, spec)
    name = f"time_dependent_{endpoint}"
    used = patients_with_samples(patients, samples, spec.cox, exposure.name)
    outputs = [
        ModelOutput(
            name,
            "time_dependent",
            endpoint,
            result,
            f"Time-dependent Cox, {endpoint.upper()}: {exposure.name} carried forward from each "
            "sample",
            flow=left_out_flow(
                cohort.patients,
                spec.cox,
                used,
                result.n_patients,
                name,
                "no serial sample during follow-up",
            ),
        )  # fmt: skip
    ]
    return outputs


def run_exposure_timing(
    cohort: AnalysisDataset, section: Any, ctx: AnalysisContext
) -> list[ModelOutput]:
    """The baseline (adjusted Cox), time-dependent and landmark estimates of the exposure, side
    by side."""
    from pooled.models.landmark import LandmarkResult, compare_exposure_timing

    endpoint = ctx.endpoint
    baseline = ctx.output(f"cox_{endpoint}_adjusted")
    td = ctx.output(f"time_dependent_{endpoint}")
    landmarks = [o.result for o in ctx.outputs if o.kind == "landmark" and o.endpoint == endpoint]
    if td is None and not landmarks:
        raise DataError(f"no time-dependent or landmark model of {endpoint} to compare.")
    landmark = None
    if landmarks:
        landmark = LandmarkResult(
            spec=landmarks[0].spec,
            fits=tuple(fit for result in landmarks for fit in result.fits),
            cohorts=pd.concat([result.cohorts for result in landmarks], ignore_index=True),
        )
    result = compare_exposure_timing(
        exposure=ctx.exposure.name,
        endpoint=endpoint,
        baseline=baseline.result if baseline is not None else None,
        time_dependent=td.result if td is not None else None,
        landmark=landmark,
        analysis=ctx.name,
    )
    return [
        ModelOutput(
            f"exposure_timing_{endpoint}",
            "exposure_timing",
            endpoint,
            result,
            f"{ctx.exposure.name}: baseline, time-dependent and landmark estimates, "
            f"{endpoint.upper()}",
        )
    ]


TIME_DEPENDENT = Step(
    name="time_dependent",
    label="time-dependent Cox",
    run=run_time_dependent,
    uses=COX.name,
    requires=COX.name,
    enabled=lambda section, ctx: bool(section) and is_time_dependent(ctx.exposure),
)
EXPOSURE_TIMING = Step(
    name="exposure_timing",
    label="exposure timing",
    run=run_exposure_timing,
    uses=COX.name,
    enabled=lambda section, ctx: is_time_dependent(ctx.exposure),
)

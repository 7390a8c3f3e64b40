"""Landmark analyses of a serial status: at each landmark time, the patients still alive and
under follow-up, by the status last measured at or before it, followed from the landmark.

Section ``models.landmark`` (times in months after the endpoint's time origin). Runs per
endpoint when the exposure is of kind ``time_dependent`` (its status comes from the serial
samples, :mod:`pooled.steps.time_dependent`); each landmark is one output (``landmark_<endpoint>_<time>``)
with its own model flow: patients who died or left follow-up by the landmark, or have no
sample by it, are left out by design.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.errors import DataError
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, ModelSection, Step, endpoint_frame
from pooled.steps.cox import cox_spec
from pooled.steps.time_dependent import (
    PATIENT_KEY,
    is_time_dependent,
    keyed_patients,
    left_out_flow,
    timed_samples,
)

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "models.landmark", "model switch",
        "Landmark analyses of a serial status (exposure of kind `time_dependent`): at each "
        "landmark time, the adjusted stratified Cox model of the patients still alive and under "
        "follow-up there, by the status of their last sample at or before it, with follow-up "
        "restarted at the landmark. Free of the immortal-time bias of an exposure that uses "
        "later samples; reported beside the baseline and time-dependent estimates.",
        "{exposure: {name: ctc_status, kind: time_dependent, threshold: 5}, "
        "models: {landmark: {times: [3, 6]}}}", default=False,
    ),
    ConfigKey(
        "models.landmark.times", "list of numbers",
        "Landmark times, months after the endpoint's time origin (> 0).",
        "{exposure: {name: ctc_status, kind: time_dependent, threshold: 5}, "
        "models: {landmark: {times: [3, 6]}}}", default=(3.0, 6.0),
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LandmarkSection(ModelSection):
    """``models.landmark``: the landmark times (months)."""

    times: tuple[float, ...] = (3.0, 6.0)


def parse_landmark(section: SectionReader) -> LandmarkSection:
    times = tuple(float(t) for t in section.get("times") or ())
    if section.enabled:
        if not times:
            raise section.error(("times",), "landmark 'times' expected at least one time")
        if any(not t > 0 for t in times):
            raise section.error(
                ("times",), f"landmark times must be > 0 (months); got {list(times)}"
            )
        if len(set(times)) != len(times):
            raise section.error(("times",), f"landmark times must be distinct; got {list(times)}")
        exposure = section.config.exposure
        if not is_time_dependent(exposure):
            raise section.error(
                (),
                f"landmark analyses need an exposure of kind time_dependent (a status measured "
                f"over time); exposure {exposure.name!r} is of kind {exposure.kind!r}. Set "
                "exposure.kind: time_dependent or remove models.landmark",
            )
    return LandmarkSection(enabled=section.enabled, times=tuple(sorted(times)))


def run_landmark(
    cohort: AnalysisDataset, section: LandmarkSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """One landmark Cox model per landmark time."""
    from pooled.models.landmark import LandmarkSpec, fit_landmark, landmark_data

    endpoint, exposure = ctx.endpoint, ctx.exposure
    patients = keyed_patients(endpoint_frame(cohort.patients, endpoint))
    samples = timed_samples(cohort.patients, cohort.samples, exposure)
    outputs = []
    reasons = []
    for t in section.times:
        spec = LandmarkSpec(
            cox=cox_spec(ctx, endpoint, interactions=False, term_lr_tests=False),
            exposure=exposure.name,
            id=PATIENT_KEY,
            sample_time="months",
            value="status",
            times=(t,),
        )
        try:
            result = fit_landmark(patients, samples, spec)
        except DataError as exc:
            reasons.append(str(exc))
            continue
        data = landmark_data(
            patients.drop(columns=[exposure.name]), samples, t, id=PATIENT_KEY,
            duration=spec.cox.duration, sample_time="months", value="status", name=exposure.name,
        )  # fmt: skip
        needed = [c for c in spec.cox.required_columns if c in data.columns]
        needed += [c for c in spec.cox.covariates if c in data.columns]
        used = data.dropna(subset=needed)[PATIENT_KEY]
        fit = result.fit_at(t)
        name = f"landmark_{endpoint}_{t:g}"
        outputs.append(
            ModelOutput(
                name,
                "landmark",
                endpoint,
                result,
                f"Landmark Cox at {t:g} months, {endpoint.upper()}: {exposure.name} last measured "
                "by the landmark",
                flow=left_out_flow(
                    cohort.patients,
                    spec.cox,
                    pd.Series(used),
                    fit.n,
                    name,
                    f"not alive and under follow-up at {t:g} months, or no sample by then",
                ),
            )  # fmt: skip
        )
    if not outputs:
        raise DataError("; ".join(reasons))
    return outputs


LANDMARK = Step(
    name="landmark",
    label="landmark Cox",
    run=run_landmark,
    section="models.landmark",
    keys=KEYS,
    parse=parse_landmark,
    enabled=lambda section, ctx: bool(section) and is_time_dependent(ctx.exposure),
)

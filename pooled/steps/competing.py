"""Competing risks of an endpoint that declares a competing event
(``endpoints: {bcss: {competing: other_death}}``).

Per such endpoint: the cumulative incidence of the event and of the competing event by
exposure (Aalen-Johansen, with Gray's test stratified by the config's strata), the
cause-specific Cox model of each (adjusted, stratified) and the Fine-Gray model of the event
(censoring weights and baseline within strata, robust SEs by patient), one output of kind
``competing``. Section ``models.competing`` holds the times at which the cumulative incidence
is reported; the analyses run for every endpoint with a competing event unless
``models: {competing: false}``.

The status (:func:`competing_status`): ``other_death`` is a death that is not the endpoint's
event, at the end of the endpoint's follow-up: ``os_event = 1`` and ``<endpoint>_event = 0``
with the death at or before ``<endpoint>_months`` (the time is the death's); a death after
the endpoint's follow-up ended leaves the patient censored, and a patient without ``os`` is
censored where the endpoint is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.errors import DataError
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, ModelSection, Step, endpoint_frame
from pooled.steps.cox import cox_spec, spec_flow

STATUS = "_competing_status"
TIME = "_competing_months"
PATIENT = "_patient_key"
TOL = 1e-9  # months: a death at the end of the endpoint's follow-up

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "models.competing", "model switch",
        "Competing-risks analyses of each endpoint with a competing event "
        "(`endpoints: {bcss: {competing: other_death}}`): cumulative incidence of both events "
        "by exposure (Aalen-Johansen, pointwise 95% CI) with Gray's test, the cause-specific "
        "Cox model of each event and the Fine-Gray model of the endpoint's event (robust SEs "
        "by patient; censoring weights and baseline per stratum). They run whenever an "
        "endpoint declares a competing event; `competing: false` leaves them out.",
        "models: {competing: {times: [12, 36, 60, 120]}}", default=False,
        default_text="on for endpoints with a competing event",
    ),
    ConfigKey(
        "models.competing.times", "list of numbers",
        "Times (months) at which the cumulative incidence is reported, and the numbers at "
        "risk under its plot.",
        "models: {competing: {times: [12, 36, 60, 120]}}", default=(12.0, 36.0, 60.0, 120.0),
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CompetingSection(ModelSection):
    """``models.competing``: the reporting times of the cumulative incidence."""

    times: tuple[float, ...] = (12.0, 36.0, 60.0, 120.0)


def parse_competing(section: SectionReader) -> CompetingSection:
    times = tuple(float(t) for t in section.get("times") or ())
    if any(not t >= 0 for t in times):
        raise section.error(("times",), f"times must be >= 0 (months); got {list(times)}")
    return CompetingSection(enabled=section.enabled, times=tuple(sorted(set(times))))


def competing_status(patients: pd.DataFrame, endpoint: str, event: str) -> pd.DataFrame:
    """Time and status (0 censored, 1 the endpoint's event, 2 the competing event) of the
    patients with the endpoint known, as two columns ``_competing_months`` and
    ``_competing_status`` added to a copy.

    Examples
    --------
    >>> df = pd.DataFrame({"bcss_months": [10.0, 8.0, 5.0], "bcss_event": [1, 0, 0],
    ...                    "os_months": [10.0, 8.0, 9.0], "os_event": [1, 1, 1]})
    >>> competing_status(df, "bcss", "other_death")["_competing_status"].tolist()
    [1, 2, 0]
    """
    if event != "other_death":
        raise DataError(f"unknown competing event {event!r}; expected other_death.")
    months = pd.to_numeric(patients[f"{endpoint}_months"], errors="coerce").to_numpy(float)
    ev = pd.to_numeric(patients[f"{endpoint}_event"], errors="coerce").to_numpy(float)
    os_months = pd.to_numeric(
        patients.get("os_months", pd.Series(np.nan, index=patients.index)), errors="coerce"
    ).to_numpy(float)
    os_event = pd.to_numeric(
        patients.get("os_event", pd.Series(np.nan, index=patients.index)), errors="coerce"
    ).to_numpy(float)
    other = (ev == 0) & (os_event == 1) & (os_months <= months + TOL)
    status = np.where(ev == 1, 1, np.where(other, 2, 0))
    out = patients.copy()
    out[TIME] = np.where(other, np.minimum(os_months, months), months)
    out[STATUS] = status.astype(np.int64)
    return out


def run_competing(
    cohort: AnalysisDataset, section: CompetingSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """Cumulative incidence, Gray's test, cause-specific and Fine-Gray models of the endpoint."""
    from pooled.models.competing import CompetingRisksSpec, fit_competing_risks

    endpoint, exposure = ctx.endpoint, ctx.exposure
    event = ctx.config.competing_event(endpoint)
    if event is None:
        raise DataError(f"endpoint {endpoint!r} declares no competing event.")
    patients = cohort.patients
    data = competing_status(endpoint_frame(patients, endpoint), endpoint, event)
    data[PATIENT] = data["centre"].astype(str) + "/" + data["patient_id"].astype(str)
    cox = cox_spec(ctx, endpoint, interactions=False, term_lr_tests=False)
    spec = CompetingRisksSpec(
        duration=TIME,
        status=STATUS,
        event_label=endpoint,
        competing_label=event,
        group=exposure.name,
        covariates=cox.covariates,
        categorical=cox.categorical,
        strata=cox.strata,
        id=PATIENT,
        ties=cox.ties,
        times=section.times,
        analysis=ctx.name,
        endpoint=endpoint,
    )
    result = fit_competing_risks(data, spec)
    first = result.cause_specific_fit(1)
    name = f"competing_{endpoint}"
    # the flow is that of the patient-level models: the endpoint, covariates and strata
    flow_spec = replace(cox, cluster=None)
    return [
        ModelOutput(
            name,
            "competing",
            endpoint,
            result,
            f"Competing risks, {endpoint.upper()} vs {event.replace('_', ' ')}",
            flow=spec_flow(patients, data, flow_spec, first.dropped, first.n, name),
        )
    ]


COMPETING = Step(
    name="competing",
    label="competing risks",
    run=run_competing,
    section="models.competing",
    keys=KEYS,
    parse=parse_competing,
    enabled=lambda section, ctx: (
        ctx.config.competing_event(ctx.endpoint) is not None
        and (bool(section) or "models.competing" not in ctx.config.keys_given)
    ),
)

"""Kaplan-Meier curves by exposure per endpoint, and the stratified log-rank test.

Section ``models.km``: the times at which survival and the numbers at risk are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.model_flow import account_for_model
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, ModelSection, Step, endpoint_frame, per_centre

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "models.km", "model switch",
        "Kaplan-Meier curves by exposure per endpoint, with numbers at risk, and the log-rank "
        "test stratified by `strata`.",
        "models: {km: {times: [12, 24, 60]}}", default=False,
        default_text="off (on when `models` is absent)",
    ),
    ConfigKey(
        "models.km.times", "list of numbers",
        "Times (months) at which survival and the numbers at risk are reported.",
        "models: {km: {times: [0, 12, 36, 60]}}", default=(12.0, 24.0, 36.0, 60.0),
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class KMSection(ModelSection):
    """``models.km``."""

    times: tuple[float, ...] = (12.0, 24.0, 36.0, 60.0)


def parse_km(section: SectionReader) -> KMSection:
    return KMSection(enabled=section.enabled, times=section.get("times"))


def _group_names(km: Any, exposure: str) -> dict[str, str]:
    """Display names of binary exposure groups: ``dtc_positive=1.0`` -> ``dtc_positive: yes``."""
    names = {}
    for label in km.summary["label"].astype(str):
        value = label.partition("=")[2]
        if value in ("0", "0.0", "1", "1.0"):
            names[label] = f"{exposure}: {'yes' if value.startswith('1') else 'no'}"
    return names


def run_km(cohort: AnalysisDataset, section: KMSection, ctx: AnalysisContext) -> list[ModelOutput]:
    """The endpoint's Kaplan-Meier curves by exposure and the stratified log-rank test."""
    from pooled.models.km import KMSpec, fit_kaplan_meier, logrank_test

    endpoint, exposure = ctx.endpoint, ctx.exposure.name
    data = endpoint_frame(cohort.patients, endpoint)
    duration, event = f"{endpoint}_months", f"{endpoint}_event"
    km = fit_kaplan_meier(
        data,
        KMSpec(
            duration=duration,
            event=event,
            group=exposure,
            times=section.times,
            endpoint=endpoint,
        ),
    )
    strata = tuple(s for s in ctx.strata if s in data.columns)
    logrank = logrank_test(data, duration, event, exposure, strata, endpoint=endpoint)
    name = f"km_{endpoint}"
    flow = account_for_model(
        cohort.patients,
        model=name,
        endpoint=endpoint,
        analysed=per_centre(data.loc[data[exposure].notna()]),
        reported_n=int(km.summary["n"].sum()),
        required=(duration, event),
        covariates=(exposure,),
    )
    return [
        ModelOutput(
            name,
            "km",
            endpoint,
            km,
            f"Kaplan-Meier, {endpoint.upper()} by {exposure}",
            {"logrank": logrank, "group_names": _group_names(km, exposure)},
            flow=flow,
        ),
        ModelOutput(
            f"logrank_{endpoint}",
            "logrank",
            endpoint,
            logrank,
            f"Log-rank test stratified by {', '.join(strata) or 'nothing'}",
        ),
    ]


KM = Step(
    name="km",
    label="Kaplan-Meier",
    run=run_km,
    section="models.km",
    keys=KEYS,
    parse=parse_km,
    default_on=True,
)

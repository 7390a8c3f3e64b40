"""Validity of the adjusted Cox model across centres.

Section ``models.validity``, per endpoint: the C-index of the adjusted model (exposure and
covariates) fitted in each centre alone, and, with ``iecv``, internal-external
cross-validation: the model fitted on all centres but one (stratified by centre) and evaluated
on the one left out, every centre in turn, giving per centre Harrell's C and the calibration
slope. Each is pooled by random effects (REML with Knapp-Hartung by default) with a prediction
interval for a new centre (:mod:`pooled.models.validity`).

References
----------
.. [1] Royston P, Parmar MKB, Sylvester R. Construction and validation of a prognostic model
   across several studies, with an application in superficial bladder cancer. Stat Med
   2004;23:907-26.
.. [2] Riley RD, Ensor J, Snell KIE, et al. External validation of clinical prediction models
   using big datasets from e-health records or IPD meta-analysis: opportunities and
   challenges. BMJ 2016;353:i3140.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.model_flow import account_for_model
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, ModelSection, Step, endpoint_frame, per_centre
from pooled.steps.cox import cox_spec

METHODS: tuple[str, ...] = ("REML", "DL", "PM", "ML")

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "models.validity", "model switch",
        "Validity of the adjusted Cox model (exposure and covariates) across centres, per "
        "endpoint: Harrell's C of the model fitted in each centre alone and, with `iecv`, "
        "internal-external cross-validation (fitted on all centres but one, evaluated on the "
        "one left out, every centre in turn: C and calibration slope); each pooled by random "
        "effects with a prediction interval, shown as a forest plot.",
        "models: {validity: {iecv: true}}", default=False,
    ),
    ConfigKey(
        "models.validity.iecv", "boolean",
        "Internal-external cross-validation: per centre left out, the C and the calibration "
        "slope (the coefficient of the model's risk score in a Cox model of that centre; 1 = "
        "calibrated, < 1 over-fitted) of the model fitted on the other centres.",
        "models: {validity: {iecv: true}}", default=False,
    ),
    ConfigKey(
        "models.validity.method", "choice",
        "Estimator of the between-centre variance when pooling the per-centre C's and slopes.",
        "models: {validity: {method: DL}}", default="REML", allowed=METHODS,
    ),
    ConfigKey(
        "models.validity.knha", "boolean",
        "Knapp-Hartung adjustment of the pooled C and slope (t with k - 1 df).",
        "models: {validity: {knha: false}}", default=True,
    ),
    ConfigKey(
        "models.validity.min_events", "integer >= 1",
        "A centre with fewer events is listed but not evaluated.",
        "models: {validity: {min_events: 10}}", default=5,
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ValiditySection(ModelSection):
    """``models.validity``."""

    iecv: bool = False
    method: Literal["REML", "DL", "PM", "ML"] = "REML"
    knha: bool = True
    min_events: int = 5


def parse_validity(section: SectionReader) -> ValiditySection:
    return ValiditySection(
        enabled=section.enabled,
        iecv=section.get("iecv"),
        method=section.get("method"),
        knha=section.get("knha"),
        min_events=int(section.get("min_events")),
    )


def run_validity(
    cohort: AnalysisDataset, section: ValiditySection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """Per-centre C (and IECV C and calibration slope) of the adjusted model, pooled."""
    from pooled.models.validity import ValiditySpec, fit_validity

    endpoint = ctx.endpoint
    data = endpoint_frame(cohort.patients, endpoint)
    cox = cox_spec(ctx, endpoint, interactions=False)
    spec = ValiditySpec(
        duration=cox.duration,
        event=cox.event,
        covariates=cox.covariates,
        categorical=cox.categorical,
        ties=cox.ties,
        iecv=section.iecv,
        method=section.method,
        knha=section.knha,
        min_events=section.min_events,
        analysis=ctx.name,
        endpoint=endpoint,
    )
    result = fit_validity(data, spec)
    name = f"validity_{endpoint}"
    lost = result.dropped.groupby("centre")["n_dropped"].sum() if len(result.dropped) else 0
    flow = account_for_model(
        cohort.patients,
        model=name,
        endpoint=endpoint,
        analysed=per_centre(data).sub(lost, fill_value=0),
        reported_n=result.n,
        required=(spec.duration, spec.event),
        covariates=(*spec.covariates, "centre"),
    )
    what = "per-centre C" + (" and internal-external cross-validation" if section.iecv else "")
    return [
        ModelOutput(
            name,
            "validity",
            endpoint,
            result,
            f"Validity across centres ({what}), {endpoint.upper()}",
            flow=flow,
        )
    ]


VALIDITY = Step(
    name="validity",
    label="validity",
    run=run_validity,
    section="models.validity",
    keys=KEYS,
    parse=parse_validity,
)

"""One-stage Cox models: univariable and adjusted per endpoint, the interactions, and the
time-split model.

Section ``models.cox``: the ties (the first is the primary analysis; further values are
sensitivity analyses, :mod:`pooled.steps.sensitivity`), robust standard errors, and the cut
times of the time-split model (the exposure's hazard ratio per period of follow-up, a check and
remedy for non-proportional hazards; step ``time_split``). The one-stage Cox spec built here
(:func:`cox_spec`) is shared by the two-stage model and the sensitivity analyses;
:func:`cox_flow` attributes what a Cox fit dropped over the cohort.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import pandas as pd

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.exposures import (
    COUNT_KINDS,
    COUNT_STEP,
    SERIAL_KINDS,
    count_exposure_terms,
    exposure_reference,
)
from pooled.model_flow import ModelFlow, account_for_model
from pooled.run_output import InteractionOutput, ModelOutput
from pooled.steps.base import AnalysisContext, ModelSection, Step, endpoint_frame, per_centre

Ties = Literal["efron", "breslow"]
TIES: tuple[str, ...] = ("efron", "breslow")

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "models.cox", "model switch",
        "One-stage Cox models per endpoint: univariable, adjusted for the covariates, the "
        "interactions, and the proportional-hazards test.",
        "models: {cox: {ties: efron}}", default=False,
        default_text="off (on when `models` is absent)",
    ),
    ConfigKey(
        "models.cox.ties", "choice or list of choices",
        "Handling of tied event times in the one-stage Cox models. A list: the first is the "
        "primary analysis; each further value adds a row to the sensitivity table of the "
        "primary endpoint (the exposure's HR in the adjusted model under those ties).",
        "models: {cox: {ties: [efron, breslow]}}", default=("efron",), allowed=TIES,
    ),
    ConfigKey(
        "models.cox.robust", "boolean",
        "Robust (sandwich) standard errors clustered by centre.",
        "models: {cox: {robust: true}}", default=False,
    ),
    ConfigKey(
        "models.cox.time_split", "list of numbers",
        "Times (months, > 0) at which follow-up is split for the time-split model: per "
        "endpoint, the adjusted stratified Cox model with one hazard ratio of the exposure per "
        "period of follow-up (R's `survSplit` and `exposure:strata(tgroup)`; intervals "
        "(start, stop], so an event at a cut belongs to the earlier period) and the Wald test "
        "that the periods share one hazard ratio. The check and remedy for an exposure effect "
        "that changes with follow-up (non-proportional hazards). Empty: no time-split model.",
        "models: {cox: {time_split: [24, 60]}}", default=(),
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CoxSection(ModelSection):
    """``models.cox``: ``ties`` holds the primary analysis first."""

    ties: tuple[Ties, ...] = ("efron",)
    robust: bool = False
    time_split: tuple[float, ...] = ()
    aliases: ClassVar[dict[str, str]] = {"ties": "primary_ties", "robust": "robust"}

    @property
    def primary_ties(self) -> Ties:
        """Ties of the primary one-stage Cox models."""
        return self.ties[0]


def parse_cox(section: SectionReader) -> CoxSection:
    cuts = tuple(float(c) for c in section.get("time_split") or ())
    if any(not c > 0 for c in cuts):
        raise section.error(
            ("time_split",), f"time_split expected times > 0 (months); got {list(cuts)}"
        )
    if len(set(cuts)) != len(cuts):
        raise section.error(
            ("time_split",), f"time_split expected distinct times; got {list(cuts)}"
        )
    return CoxSection(
        enabled=section.enabled,
        ties=section.get("ties"),
        robust=section.get("robust"),
        time_split=tuple(sorted(cuts)),
    )


def exposure_columns(
    ctx: AnalysisContext,
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The columns by which the exposure enters the Cox models, and which are categorical
    (with the reference): the exposure's column; a serial exposure's levels against its
    reference; a count exposure's categories or spline columns (``models.count_response``)."""
    exposure = ctx.exposure
    if exposure.kind in COUNT_KINDS:
        return count_exposure_terms(exposure, ctx.section(COUNT_STEP).scale)
    if exposure.kind in SERIAL_KINDS:
        return (exposure.name,), ((exposure.name, exposure_reference(exposure)),)
    return (exposure.name,), ()


def cox_spec(ctx: AnalysisContext, endpoint: str, *, interactions: bool, **changes: Any) -> Any:
    """The one-stage Cox spec of ``endpoint``: the exposure first, then the covariates,
    stratified by the config's strata, with the primary ties; ``changes`` replace fields."""
    from pooled.models.cox import CoxSpec

    cox: CoxSection = ctx.section("cox")
    exposure = ctx.exposure
    terms, exposure_categorical = exposure_columns(ctx)
    covariates = terms + tuple(c.name for c in ctx.covariates if c.name != exposure.name)
    categorical = exposure_categorical + ctx.categorical
    spec = CoxSpec(
        duration=f"{endpoint}_months",
        event=f"{endpoint}_event",
        covariates=covariates,
        categorical=categorical,
        interactions=ctx.interactions if interactions else (),
        strata=ctx.strata,
        ties=cox.primary_ties,
        cluster="centre" if cox.robust else None,
        seed=ctx.seed,
        analysis=ctx.name,
        endpoint=endpoint,
    )
    return replace(spec, **changes) if changes else spec


def cox_flow(
    cohort: pd.DataFrame,
    data: pd.DataFrame,
    result: Any,
    model: str,
    **left_out: Any,
) -> ModelFlow:
    """The flow of a Cox fit on ``data`` (rows of the cohort): what the fit dropped, per centre,
    from its own record (``CoxResult.dropped``), attributed over the cohort."""
    return spec_flow(cohort, data, result.spec, result.dropped, result.n, model, **left_out)


def spec_flow(
    cohort: pd.DataFrame,
    data: pd.DataFrame,
    spec: Any,
    dropped: pd.DataFrame,
    reported_n: int,
    model: str,
    **left_out: Any,
) -> ModelFlow:
    """:func:`cox_flow` from a patient-level spec, its dropped counts and its patients."""
    lost = (
        dropped.assign(centre=dropped["centre"].astype(str)).groupby("centre")["n_dropped"].sum()
        if len(dropped)
        else pd.Series(dtype=float)
    )
    analysed = per_centre(data).sub(lost, fill_value=0)
    needed = [] if spec.missing == "mice" else list(spec.covariates)
    needed += list(spec.strata) + ([spec.cluster] if spec.cluster else [])
    return account_for_model(
        cohort,
        model=model,
        endpoint=spec.endpoint,
        analysed=analysed,
        reported_n=reported_n,
        required=(spec.duration, spec.event),
        covariates=needed,
        **left_out,
    )


def run_cox(
    cohort: AnalysisDataset, section: CoxSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """The univariable (exposure only) and the adjusted stratified Cox model of the endpoint."""
    from pooled.models.cox import fit_cox

    endpoint = ctx.endpoint
    terms, categorical = exposure_columns(ctx)
    patients = cohort.patients
    data = endpoint_frame(patients, endpoint)
    outputs = []
    univariable = fit_cox(
        data,
        cox_spec(
            ctx,
            endpoint,
            interactions=False,
            covariates=terms,
            categorical=categorical,
            analysis=f"{ctx.name}: univariable",
        ),
    )
    name = f"cox_{endpoint}_univariable"
    outputs.append(
        ModelOutput(
            name,
            "cox",
            endpoint,
            univariable,
            f"Stratified Cox, {endpoint.upper()}, univariable",
            flow=cox_flow(patients, data, univariable, name),
        )
    )
    adjusted = fit_cox(data, cox_spec(ctx, endpoint, interactions=False))
    name = f"cox_{endpoint}_adjusted"
    outputs.append(
        ModelOutput(
            name,
            "cox",
            endpoint,
            adjusted,
            f"Stratified Cox, {endpoint.upper()}, adjusted",
            flow=cox_flow(patients, data, adjusted, name),
        )
    )
    return outputs


def run_interactions(
    cohort: AnalysisDataset, section: CoxSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """Each interaction of the config: the model with ``a * b``, its LR test, the HR per level."""
    from pooled.models.cox import effect_within_levels, fit_cox, interaction_lr_test

    endpoint = ctx.endpoint
    patients = cohort.patients
    data = endpoint_frame(patients, endpoint)
    outputs = []
    for a, b in ctx.interactions:
        marker, by = (a, b) if a == ctx.exposure.name else (b, a)
        spec = cox_spec(ctx, endpoint, interactions=True, term_lr_tests=False)
        fit = fit_cox(data, spec)
        result = InteractionOutput(
            fit=fit,
            test=interaction_lr_test(data, spec),
            within=effect_within_levels(fit, marker=marker, by=by),
            marker=marker,
            by=by,
        )
        name = f"interaction_{endpoint}_{by}"
        outputs.append(
            ModelOutput(
                name,
                "interaction",
                endpoint,
                result,
                f"{marker} x {by}, {endpoint.upper()}",
                flow=cox_flow(patients, data, fit, name),
            )
        )
    return outputs


def run_time_split(
    cohort: AnalysisDataset, section: CoxSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """The adjusted Cox model of the endpoint with the exposure's hazard ratio per period of
    follow-up (``models.cox.time_split``), and the Wald test of equal periods."""
    from pooled.models.timesplit import TimeSplitSpec, fit_time_split, period_labels

    endpoint = ctx.endpoint
    patients = cohort.patients
    data = endpoint_frame(patients, endpoint)
    spec = TimeSplitSpec(
        cox=cox_spec(ctx, endpoint, interactions=False, term_lr_tests=False),
        exposure=ctx.exposure.name,
        cuts=section.time_split,
    )
    result = fit_time_split(data, spec)
    name = f"time_split_{endpoint}"
    periods = ", ".join(period_labels(section.time_split))
    return [
        ModelOutput(
            name,
            "time_split",
            endpoint,
            result,
            f"Time-split Cox, {endpoint.upper()}: {ctx.exposure.name} per period {periods}",
            flow=spec_flow(patients, data, spec.cox, result.fit.dropped, result.n_patients, name),
        )
    ]


COX = Step(
    name="cox",
    label="Cox",
    run=run_cox,
    section="models.cox",
    keys=KEYS,
    parse=parse_cox,
    default_on=True,
)
INTERACTIONS = Step(
    name="interactions",
    label="interactions",
    run=run_interactions,
    uses="cox",
    requires="cox",
    enabled=lambda section, ctx: bool(section) and bool(ctx.interactions),
)
TIME_SPLIT = Step(
    name="time_split",
    label="time-split Cox",
    run=run_time_split,
    uses="cox",
    requires="cox",
    enabled=lambda section, ctx: bool(section) and bool(section.time_split),
)

"""One-stage random-effects Cox model: the exposure's effect varying between centres.

Section ``models.mixed_cox``: which random effects by centre (``[marker]``: a random slope
of the exposure; ``[intercept]``: a frailty on the baseline; ``[intercept, marker]``:
correlated intercept and slope) and whether the baselines are stratified by centre (the
default for a random slope; a random intercept needs unstratified baselines). The fit is
coxme's (Ripatti-Palmgren Laplace approximation); the output carries the pooled exposure
effect, tau, the LR test of the variance, the prediction interval of a new centre's HR and
the shrunken centre effects. Not run for serial (categorical) exposures.

References
----------
.. [1] Riley RD, et al. Individual participant data meta-analysis of prognostic factor
   studies: state of the art? BMJ 2019;364:k4597.
.. [2] Burke DL, Ensor J, Riley RD. Meta-analysis using individual participant data:
   one-stage and two-stage approaches, and why they may differ. Stat Med 2017;36:855-75.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.errors import DataError
from pooled.exposures import COUNT_KINDS, SERIAL_KINDS
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, ModelSection, Step, endpoint_frame
from pooled.steps.cox import cox_spec, spec_flow

RandomTerm = Literal["intercept", "marker"]
RANDOM_TERMS: tuple[str, ...] = ("intercept", "marker")

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "models.mixed_cox", "model switch",
        "One-stage random-effects Cox model per endpoint (coxme): Gaussian random effects "
        "by centre on the exposure (random slope) and/or the baseline (frailty), with the "
        "covariates as fixed effects; reports the pooled exposure HR, tau, the LR test of "
        "the variance (50:50 chi-square mixture), the 95 % prediction interval for a new "
        "centre and each centre's shrunken HR. Not run for serial exposures.",
        "models: {mixed_cox: {random: [marker], strata: true}}", default=False,
    ),
    ConfigKey(
        "models.mixed_cox.random", "list of choices",
        "The random effects by centre: `marker` (the exposure's log HR varies between "
        "centres), `intercept` (a frailty on the baseline hazard; needs `strata: false`), or "
        "both (correlated intercept and slope).",
        "models: {mixed_cox: {random: [intercept, marker], strata: false}}",
        default=("marker",), allowed=RANDOM_TERMS,
    ),
    ConfigKey(
        "models.mixed_cox.strata", "boolean",
        "Baseline hazards stratified by centre (as the one-stage Cox model); with a random "
        "intercept the baselines must be common (`false`).",
        "models: {mixed_cox: {strata: false, random: [intercept]}}", default=True,
    ),
    ConfigKey(
        "models.mixed_cox.interactions", "boolean",
        "Include the config's `interactions` (e.g. exposure x subtype) as fixed effects, as "
        "the interactions step does. The exposure's random slope, its pooled HR and the "
        "prediction interval are then the exposure's effect in the reference level of the "
        "other factor; the interaction terms are common to all centres.",
        "models: {mixed_cox: {random: [marker], interactions: true}}", default=False,
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MixedCoxSection(ModelSection):
    """``models.mixed_cox``."""

    random: tuple[RandomTerm, ...] = ("marker",)
    strata: bool = True
    interactions: bool = False


def parse_mixed_cox(section: SectionReader) -> MixedCoxSection:
    random = tuple(dict.fromkeys(section.get("random")))
    strata = section.get("strata")
    if not random:
        raise section.error(("random",), "name at least one random effect: intercept, marker.")
    if strata and "intercept" in random:
        raise section.error(
            ("strata",),
            "a random intercept (frailty) varies the baseline between centres, so the "
            "baselines cannot also be stratified by centre; set 'strata: false' or use "
            "'random: [marker]'.",
        )
    return MixedCoxSection(
        enabled=section.enabled,
        random=random,
        strata=strata,
        interactions=section.get("interactions"),
    )


def run_mixed_cox(
    cohort: AnalysisDataset, section: MixedCoxSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """The random-effects Cox model of the endpoint (covariates and ties as the Cox model's)."""
    from pooled.models.mixed_cox import MixedCoxSpec, fit_mixed_cox

    if ctx.exposure.kind in SERIAL_KINDS + COUNT_KINDS:
        what = {
            "count_categories": "count categories",
            "continuous": "a spline of the count",
        }.get(ctx.exposure.kind, "derived from serial samples")
        raise DataError(
            f"the mixed Cox model needs a 0/1 exposure; '{ctx.exposure.name}' is {what} "
            f"(kind {ctx.exposure.kind})."
        )
    endpoint = ctx.endpoint
    data = endpoint_frame(cohort.patients, endpoint)
    with_interactions = section.interactions and bool(ctx.interactions)
    cox = cox_spec(ctx, endpoint, interactions=with_interactions)
    spec = MixedCoxSpec(
        duration=cox.duration,
        event=cox.event,
        covariates=cox.covariates,
        categorical=cox.categorical,
        interactions=cox.interactions,
        random=section.random,
        marker=ctx.exposure.name,
        centre="centre",
        strata=section.strata,
        ties=cox.ties,
        analysis=ctx.name,
        endpoint=endpoint,
    )
    result = fit_mixed_cox(data, spec)
    name = f"mixed_cox_{endpoint}"
    flow = spec_flow(cohort.patients, data, cox, result.dropped, result.n, name)
    random = " + ".join(section.random)
    baselines = "stratified baselines" if section.strata else "common baseline"
    if with_interactions:
        baselines += "; with " + ", ".join(f"{a} x {b}" for a, b in cox.interactions)
        if any(spec.marker in pair for pair in cox.interactions):
            baselines += " (the exposure's effect in the reference level)"
    return [
        ModelOutput(
            name,
            "mixed_cox",
            endpoint,
            result,
            f"Random-effects Cox ({random} by centre, {baselines}), {endpoint.upper()}",
            flow=flow,
        )
    ]


MIXED_COX = Step(
    name="mixed_cox",
    label="mixed Cox",
    run=run_mixed_cox,
    section="models.mixed_cox",
    keys=KEYS,
    parse=parse_mixed_cox,
)

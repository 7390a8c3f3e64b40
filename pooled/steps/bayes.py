"""Bayesian hierarchical piecewise-exponential model per endpoint (random centre effects).

Section ``models.bayes``: the endpoints (default every endpoint), the sampler (draws, tune,
chains), the baseline hazard's intervals, the prior set, the thresholds of P(HR > t) and the
exposure x subtype interaction. :func:`_bayes_outputs` builds the spec from the config and
fits it as the runner did (it reads the config's ``cfg.models.bayes_*``); the step hands it
the cohort and the endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.model_flow import account_for_model
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, ModelSection, Step, endpoint_frame
from pooled.steps.base import per_centre as _per_centre

if TYPE_CHECKING:  # pragma: no cover
    from pooled.config import AnalysisConfig

SUBTYPE = "subtype"

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "models.bayes", "model switch",
        "Bayesian hierarchical piecewise-exponential model (random centre effects on the "
        "exposure's log HR).",
        "models: {bayes: {endpoints: [os], draws: 1000, chains: 4}}", default=False,
    ),
    ConfigKey(
        "models.bayes.endpoints", "list of choices",
        "Endpoints with a Bayesian model (each must be among `endpoints`).",
        "models: {bayes: {endpoints: [os]}}", default=(), allowed_from="endpoints",
        default_text="every endpoint",
    ),
    ConfigKey(
        "models.bayes.draws", "integer >= 1", "Posterior draws per chain.",
        "models: {bayes: {draws: 2000}}", default=1000,
    ),
    ConfigKey(
        "models.bayes.tune", "integer >= 1", "Tuning (warm-up) draws per chain.",
        "models: {bayes: {tune: 1000}}", default=1000,
    ),
    ConfigKey(
        "models.bayes.chains", "integer >= 1", "Number of chains.",
        "models: {bayes: {chains: 4}}", default=4,
    ),
    ConfigKey(
        "models.bayes.intervals", "integer >= 1",
        "Number of intervals of the piecewise-constant baseline hazard.",
        "models: {bayes: {intervals: 8}}", default=10,
    ),
    ConfigKey(
        "models.bayes.prior", "choice", "Prior set of the model parameters.",
        "models: {bayes: {prior: vague}}", default="weakly_informative",
        allowed=("weakly_informative", "vague"),
    ),
    ConfigKey(
        "models.bayes.thresholds", "list of numbers",
        "HR thresholds t for which the posterior probability P(HR > t) is reported.",
        "models: {bayes: {thresholds: [1.5, 2]}}", default=(1.0,),
    ),
    ConfigKey(
        "models.bayes.interaction", "boolean",
        "Include the exposure x subtype interaction when `interactions` has one.",
        "models: {bayes: {interaction: false}}", default=True,
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BayesSection(ModelSection):
    """``models.bayes``; each field ``f`` is also ``cfg.models.bayes_f``."""

    endpoints: tuple[str, ...] = ()
    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    intervals: int = 10
    prior: str = "weakly_informative"
    thresholds: tuple[float, ...] = (1.0,)
    interaction: bool = True


def parse_bayes(section: SectionReader) -> BayesSection:
    """The ``models.bayes`` section; its endpoints must be among the analysis endpoints."""
    values = {
        key: section.get(key)
        for key in ("endpoints", "draws", "tune", "chains", "intervals", "prior",
                    "thresholds", "interaction")
    }  # fmt: skip
    endpoints = section.config.endpoints
    for i, endpoint in enumerate(values["endpoints"]):
        if endpoint not in endpoints:
            raise section.error(
                ("endpoints", i),
                f"bayes endpoint {endpoint!r} is not among the analysis endpoints "
                f"{', '.join(endpoints)}.",
            )
    return BayesSection(enabled=section.enabled, **values)


def runs_at(section: BayesSection, ctx: AnalysisContext) -> bool:
    """On, and the endpoint is among its endpoints (every endpoint when none are named)."""
    return bool(section) and (not section.endpoints or ctx.endpoint in section.endpoints)


def run_bayes(
    cohort: AnalysisDataset, section: BayesSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """The endpoint's Bayesian model (:func:`_bayes_outputs` on the cohort)."""
    patients = cohort.patients
    return _bayes_outputs(
        ctx.config, patients, endpoint_frame(patients, ctx.endpoint), ctx.endpoint
    )


def _bayes_outputs(
    cfg: AnalysisConfig, cohort: pd.DataFrame, data: pd.DataFrame, endpoint: str
) -> list[ModelOutput]:
    from pooled.models.bayes import BayesSpec, PriorSpec, SamplerSpec, fit_bayes_survival

    covariates = tuple(c.name for c in cfg.covariates if c.name not in (cfg.exposure.name, SUBTYPE))
    has_subtype = any(c.name == SUBTYPE for c in cfg.covariates)
    interaction = cfg.models.bayes_interaction and any(SUBTYPE in pair for pair in cfg.interactions)
    priors = (
        PriorSpec.vague()
        if cfg.models.bayes_prior == "vague" and hasattr(PriorSpec, "vague")
        else PriorSpec()
    )
    spec = BayesSpec(
        duration=f"{endpoint}_months",
        event=f"{endpoint}_event",
        marker=cfg.exposure.name,
        subtype=SUBTYPE if has_subtype else None,
        covariates=covariates,
        categorical_reference=tuple((c, r) for c, r in cfg.categorical if c != SUBTYPE),
        interaction=interaction and has_subtype,
        n_intervals=cfg.models.bayes_intervals,
        priors=priors,
        sampling=SamplerSpec(
            draws=cfg.models.bayes_draws, tune=cfg.models.bayes_tune, chains=cfg.models.bayes_chains
        ),
        thresholds=tuple(t for t in cfg.models.bayes_thresholds if t != 1.0) or (1.5,),
        analysis=cfg.name,
        endpoint=endpoint,
    )
    needed = [spec.marker, "centre", *covariates] + ([SUBTYPE] if has_subtype else [])
    complete = data.dropna(subset=[spec.duration, spec.event, *needed])
    result = fit_bayes_survival(complete, spec, seed=cfg.seed)
    name = f"bayes_{endpoint}"
    flow = account_for_model(
        cohort,
        model=name,
        endpoint=endpoint,
        analysed=_per_centre(complete),
        reported_n=int(result.n),
        required=(spec.duration, spec.event),
        covariates=needed,
    )
    return [
        ModelOutput(
            name,
            "bayes",
            endpoint,
            result,
            f"Bayesian hierarchical piecewise-exponential model, {endpoint.upper()}",
            flow=flow,
        )
    ]


BAYES = Step(
    name="bayes",
    label="Bayesian",
    run=run_bayes,
    section="models.bayes",
    keys=KEYS,
    parse=parse_bayes,
    enabled=runs_at,
)

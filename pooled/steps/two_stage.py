"""Two-stage IPD meta-analysis: the adjusted Cox model within each centre, then random effects.

Section ``models.two_stage``: the tau^2 estimator (the first is the primary analysis; each
further one adds a row to the endpoint's two-stage sensitivity table), the Hartung-Knapp
adjustment and the ties of the within-centre models. Not run for serial exposures.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.errors import ConvergenceError, DataError, PooledWarning
from pooled.exposures import COUNT_KINDS, SERIAL_KINDS
from pooled.model_flow import account_for_model
from pooled.run_output import ModelOutput, SensitivityResult
from pooled.steps.base import AnalysisContext, ModelSection, Step, endpoint_frame
from pooled.steps.cox import COX, TIES, Ties, cox_spec

MetaMethod = Literal["FE", "DL", "REML", "PM", "ML", "HE", "SJ"]
META_METHODS: tuple[str, ...] = ("FE", "DL", "REML", "PM", "ML", "HE", "SJ")

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "models.two_stage", "model switch",
        "Two-stage IPD meta-analysis per endpoint: the adjusted Cox model within each centre, "
        "then the centres' log HRs of the exposure pooled by random effects. Not run for "
        "serial exposures.",
        "models: {two_stage: {method: REML, knha: true}}", default=False,
        default_text="off (on when `models` is absent)",
    ),
    ConfigKey(
        "models.two_stage.method", "choice or list of choices",
        "Estimator of the between-centre variance tau^2 (FE = fixed effect). A list: the "
        "first is the primary analysis; each further method adds a row to the endpoint's "
        "two-stage sensitivity table (the pooled estimate under that method, same centres).",
        "models: {two_stage: {method: [REML, DL]}}", default=("REML",), allowed=META_METHODS,
    ),
    ConfigKey(
        "models.two_stage.knha", "boolean",
        "Hartung-Knapp(-Sidik-Jonkman) adjustment of the pooled estimate's interval and test "
        "(t with k - 1 degrees of freedom); applies to every method.",
        "models: {two_stage: {knha: true}}", default=False,
    ),
    ConfigKey(
        "models.two_stage.ties", "choice",
        "Handling of tied event times in the within-centre Cox models of the two-stage "
        "analysis.",
        "models: {cox: {ties: efron}, two_stage: {ties: breslow}}", allowed=TIES,
        default_text="the first of models.cox.ties",
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TwoStageSection(ModelSection):
    """``models.two_stage``: ``meta_methods`` holds the primary analysis first."""

    meta_methods: tuple[MetaMethod, ...] = ("REML",)
    knha: bool = False
    ties: Ties = "efron"
    aliases: ClassVar[dict[str, str]] = {
        "meta_methods": "meta_methods",
        "meta_method": "meta_method",
        "knha": "knha",
    }

    @property
    def meta_method(self) -> MetaMethod:
        """tau^2 estimator of the primary two-stage analysis."""
        return self.meta_methods[0]


def parse_two_stage(section: SectionReader) -> TwoStageSection:
    methods = section.get("method")
    knha = section.get("knha")
    ties = section.get("ties")
    if ties is None:
        ties = section.config.section(COX.name).primary_ties
    return TwoStageSection(enabled=section.enabled, meta_methods=methods, knha=knha, ties=ties)


def run_two_stage(
    cohort: AnalysisDataset, section: TwoStageSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """Stage one per centre, the pooled estimate, and the further tau^2 estimators."""
    from pooled.models.meta import MetaSpec
    from pooled.models.two_stage import TwoStageSpec, fit_two_stage

    endpoint = ctx.endpoint
    data = endpoint_frame(cohort.patients, endpoint)
    cox = cox_spec(ctx, endpoint, interactions=False, strata=(), ties=section.ties)
    spec = TwoStageSpec(
        cox=cox,
        marker=ctx.exposure.name,
        meta=MetaSpec(method=section.meta_method, knha=section.knha),
    )
    result = fit_two_stage(data, spec)
    table = result.per_centre
    included = table["included"].to_numpy(dtype=bool)
    stage_one = spec.stage_one
    name = f"two_stage_{endpoint}"
    flow = account_for_model(
        cohort.patients,
        model=name,
        endpoint=endpoint,
        analysed={
            str(c): int(n) if inc else 0
            for c, n, inc in zip(table["centre"], table["n"], included, strict=True)
        },
        reported_n=int(table.loc[included, "n"].sum()),
        required=(stage_one.duration, stage_one.event),
        covariates=(*stage_one.covariates, *stage_one.strata),
        centre_reasons={
            str(c): str(r)
            for c, r, inc in zip(table["centre"], table["reason"], included, strict=True)
            if not inc
        },
    )
    label = f"{section.meta_method}{', Hartung-Knapp' if section.knha else ''}"
    outputs = [
        ModelOutput(
            name,
            "two_stage",
            endpoint,
            result,
            f"Two-stage random effects ({label}), {endpoint.upper()}",
            flow=flow,
        )
    ]
    if len(section.meta_methods) > 1:
        outputs.append(_two_stage_sensitivity(section, ctx, result, endpoint))
    return outputs


def _two_stage_sensitivity(
    section: TwoStageSection, ctx: AnalysisContext, result: Any, endpoint: str
) -> ModelOutput:
    """The pooled estimate under each further tau^2 estimator (same centres, same estimates)."""
    from pooled.models.meta import MetaSpec, fit_meta
    from pooled.results import tidy_frame

    table = result.per_centre.loc[result.per_centre["included"].astype(bool)]
    rows: list[dict[str, Any]] = []
    for method in section.meta_methods[1:]:
        spec = MetaSpec(method=method, knha=section.knha)
        label = f"two-stage {spec.label}"
        try:
            meta = fit_meta(
                table["log_hr"].to_numpy(),
                table["se"].to_numpy() ** 2,
                spec,
                labels=list(table["centre"]),
                term=ctx.exposure.name,
            )
            pooled = meta.to_frame(analysis=ctx.name, endpoint=endpoint)
            found = pooled.loc[pooled["row_type"] == "pooled"].iloc[0]
            row = {str(key): value for key, value in found.items()}
        except (DataError, ConvergenceError) as exc:
            warnings.warn(
                f"sensitivity analysis '{label}' ({endpoint}) skipped: {exc}",
                PooledWarning,
                stacklevel=3,
            )
            row = {"term": ctx.exposure.name, "note": f"not estimable: {exc}"}
        row.update(
            model=f"sensitivity: {label}",
            analysis=ctx.name,
            endpoint=endpoint,
            n=int(table["n"].sum()),
            events=int(table["events"].sum()),
        )
        rows.append(row)
    return ModelOutput(
        f"sensitivity_two_stage_{endpoint}",
        "sensitivity",
        endpoint,
        SensitivityResult(tidy_frame(rows)),
        f"Two-stage sensitivity analyses (tau^2 estimator), {endpoint.upper()}",
    )


TWO_STAGE = Step(
    name="two_stage",
    label="two-stage",
    run=run_two_stage,
    section="models.two_stage",
    keys=KEYS,
    parse=parse_two_stage,
    enabled=lambda section, ctx: (
        bool(section) and ctx.exposure.kind not in SERIAL_KINDS + COUNT_KINDS
    ),
    default_on=True,
)

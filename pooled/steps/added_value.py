"""The marker's added prognostic value over a clinical model.

Section ``models.added_value``, per endpoint: the clinical model named in the config
(``clinical``, covariates of the config) and the same model plus the exposure (a 0/1 marker,
the count categories or the count's spline), fitted to the same patients and stratified like
the Cox models; the likelihood-ratio chi-square of the marker, Harrell's and Uno's C of both
models within strata with their standard errors, the difference in C with its standard error
from the two C's covariance, and a bootstrap by centre as an alternative interval
(:mod:`pooled.models.added_value`).

References
----------
.. [1] Bidard FC, Peeters DJ, Fehm T, et al. Clinical validity of circulating tumour cells in
   patients with metastatic breast cancer: a pooled analysis of individual patient data.
   Lancet Oncol 2014;15:406-14.
"""

from __future__ import annotations

from dataclasses import dataclass

from harmonization.schema import did_you_mean
from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.model_flow import account_for_model
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, ModelSection, Step, endpoint_frame, per_centre
from pooled.steps.cox import exposure_columns

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "models.added_value", "model switch",
        "The exposure's added prognostic value over a clinical model, per endpoint: the "
        "clinical model and the clinical model plus the exposure on the same patients "
        "(stratified as the Cox models), the likelihood-ratio chi-square of the exposure, "
        "Harrell's and Uno's C of both within strata with standard errors, the difference in "
        "C with its standard error (R's `concordance(fit1, fit2)`), and a bootstrap by centre.",
        "models: {added_value: {clinical: [age, subtype]}}", default=False,
    ),
    ConfigKey(
        "models.added_value.clinical", "list of columns",
        "The clinical model's covariates: covariates of the config (so derived and "
        "categorical ones keep their definition), without the exposure.",
        "models: {added_value: {clinical: [age, subtype], bootstrap: 0}}", default=(),
        default_text="none (required when the model is on)",
    ),
    ConfigKey(
        "models.added_value.bootstrap", "integer >= 0",
        "Bootstrap replicates by centre (whole centres drawn with replacement, both models "
        "refitted) for the percentile interval of the difference in C; 0: none.",
        "models: {added_value: {clinical: [age], bootstrap: 500}}", default=200,
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AddedValueSection(ModelSection):
    """``models.added_value``."""

    clinical: tuple[str, ...] = ()
    bootstrap: int = 200


def parse_added_value(section: SectionReader) -> AddedValueSection:
    clinical = tuple(dict.fromkeys(section.get("clinical")))
    config = section.config
    if section.enabled:
        if not clinical:
            raise section.error(
                (),
                "added_value needs the clinical model's covariates; for example: "
                "clinical: [age, node_positive, grade3]",
            )
        names = [c.name for c in config.covariates]
        for i, name in enumerate(clinical):
            if name == config.exposure.name:
                raise section.error(
                    ("clinical", i),
                    f"{name!r} is the exposure; the clinical model is the one without it",
                )
            if name not in names:
                raise section.error(
                    ("clinical", i),
                    f"{name!r} is not a covariate of the config (covariates: {names})"
                    f"{did_you_mean(name, names)}; add it to 'covariates' first",
                )
    return AddedValueSection(
        enabled=section.enabled, clinical=clinical, bootstrap=int(section.get("bootstrap"))
    )


def run_added_value(
    cohort: AnalysisDataset, section: AddedValueSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """The clinical model with and without the exposure, on the same patients."""
    from pooled.models.added_value import AddedValueSpec, fit_added_value

    endpoint = ctx.endpoint
    data = endpoint_frame(cohort.patients, endpoint)
    marker, marker_categorical = exposure_columns(ctx)
    clinical = section.clinical
    spec = AddedValueSpec(
        duration=f"{endpoint}_months",
        event=f"{endpoint}_event",
        clinical=clinical,
        marker=marker,
        categorical=marker_categorical + tuple(p for p in ctx.categorical if p[0] in clinical),
        strata=ctx.strata,
        ties=ctx.section("cox").primary_ties,
        n_bootstrap=section.bootstrap,
        seed=ctx.seed,
        analysis=ctx.name,
        endpoint=endpoint,
        marker_label=ctx.exposure.name,
    )
    result = fit_added_value(data, spec)
    name = f"added_value_{endpoint}"
    lost = result.dropped.groupby("centre")["n_dropped"].sum() if len(result.dropped) else 0
    flow = account_for_model(
        cohort.patients,
        model=name,
        endpoint=endpoint,
        analysed=per_centre(data).sub(lost, fill_value=0),
        reported_n=result.n,
        required=(spec.duration, spec.event),
        covariates=(*clinical, *marker, *spec.strata),
    )
    return [
        ModelOutput(
            name,
            "added_value",
            endpoint,
            result,
            f"Added value of {ctx.exposure.name} over the clinical model ({', '.join(clinical)}), "
            f"{endpoint.upper()}",
            flow=flow,
        )
    ]


ADDED_VALUE = Step(
    name="added_value",
    label="added value",
    run=run_added_value,
    section="models.added_value",
    keys=KEYS,
    parse=parse_added_value,
)

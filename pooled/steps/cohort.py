"""The analysis cohort: the cohort rules, the exposure, the derived covariates.

The cohort step prepares the dataset every model step uses, each exclusion a step of the
exclusion flow: the setting and each ``include``/``exclude`` rule (section ``cohort``), then
the exposure (from the serial samples for serial exposures, :mod:`pooled.steps.serial`; the
count category, and for a ``continuous`` exposure the spline of log1p(CTC per 7.5 ml) placed on
the cohort's counts, :mod:`pooled.steps.count_response`; the baseline sample's status for a
``time_dependent`` one, :mod:`pooled.steps.time_dependent`), the derived covariates, and the
patients without the exposure or the primary endpoint leave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pandas as pd

from harmonization.schema import Reason
from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.exposures import (
    COUNT_KINDS,
    COUNT_STEP,
    SERIAL_KINDS,
    CovariateSpec,
    as_indicator,
    count_exposure_columns,
    derive_covariates,
    derive_exposure,
    evaluate_expression,
)
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, Step
from pooled.steps.serial import TRAJECTORY, needs_serial_exposures, serial_exposures
from pooled.steps.time_dependent import baseline_status, is_time_dependent

if TYPE_CHECKING:  # pragma: no cover
    from pooled.config import AnalysisConfig

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "cohort", "section",
        "Which patients form the analysis cohort. Each rule is a step of the exclusion flow.",
        "cohort: {setting: early, include: ['age >= 18'], exclude: ['tumour_size_mm > 100']}",
        default={},
    ),
    ConfigKey(
        "cohort.setting", "choice",
        "Keep only patients of this disease setting.",
        "cohort: {setting: metastatic}", allowed_from="settings", default_text="every setting",
    ),
    ConfigKey(
        "cohort.include", "list of expressions",
        "Inclusion rules: logical expressions on patient fields (see Expressions); a patient "
        "is kept when every rule is true. A rule that is missing for a patient (a field it "
        "uses is unknown) excludes the patient.",
        "cohort: {include: ['age >= 18 and age < 80', 'notna(tumour_size_mm)']}", default=(),
    ),
    ConfigKey(
        "cohort.exclude", "list of expressions",
        "Exclusion rules: logical expressions on patient fields; a patient for whom a rule "
        "is true is excluded. A rule that is missing for a patient keeps the patient.",
        "cohort: {exclude: ['positive_nodes > 30']}", default=(),
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CohortSpec:
    """Inclusion and exclusion rules (expressions on the analysis dataset's patient fields).

    A patient whose ``include`` rule is missing (e.g. ``age >= 18`` with age unknown) is
    excluded; one whose ``exclude`` rule is missing is kept.
    """

    setting: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


def parse_cohort(section: SectionReader) -> CohortSpec:
    """The ``cohort`` section; each rule is compiled against the schema's patient fields."""
    include = section.get("include")
    exclude = section.get("exclude")
    for rule_key, rules in (("include", include), ("exclude", exclude)):
        for i, rule in enumerate(rules):
            keys = (rule_key, i) if isinstance(section.raw.get(rule_key), list) else (rule_key,)
            section.compile(rule, keys, what=f"cohort rule ({rule_key})")
    return CohortSpec(setting=section.get("setting"), include=include, exclude=exclude)


def _nowhere(*keys: object) -> str:
    return ""


def apply_cohort_rules(
    ds: AnalysisDataset, cohort: CohortSpec, where: Callable[..., str] = _nowhere
) -> AnalysisDataset:
    """The config's setting and ``include``/``exclude`` rules, each a step of the flow.

    A rule that is missing for a patient excludes the patient in ``include`` and keeps it in
    ``exclude`` (:func:`cohort_rule`). ``where(*keys)`` names the config line of a rule for
    messages (``cfg.where``).
    """
    if cohort.setting is not None:
        ds = ds.select(ds.patients["setting"] == cohort.setting, Reason.SETTING, cohort.setting)
    for i, rule in enumerate(cohort.include):
        keep = cohort_rule(ds.patients, rule, where=where("cohort", "include", i))
        ds = ds.select(keep, Reason.COHORT_RULE, f"include: {rule}")
    for i, rule in enumerate(cohort.exclude):
        drop = cohort_rule(ds.patients, rule, where=where("cohort", "exclude", i))
        ds = ds.exclude(drop, Reason.COHORT_RULE, f"exclude: {rule}")
    return ds


def prepare_cohort(
    ds: AnalysisDataset, cohort: CohortSpec, ctx: AnalysisContext
) -> tuple[AnalysisDataset, list[ModelOutput]]:
    """Apply the cohort rules, derive the exposure and the derived covariates.

    The setting and each ``include``/``exclude`` rule is a step of the exclusion flow (a rule
    that is missing for a patient excludes the patient in ``include``, keeps it in
    ``exclude``); patients without the exposure or the primary endpoint leave too. Derived
    covariates are computed on the fields as stored (``grade == 3`` on the numeric grade),
    then categorical covariates stored as numbers become text levels.

    Returns the cohort and, for exposures from serial samples, the trajectory model and the
    serial-exposure summary it produced (as model outputs for the report).
    """
    exposure = ctx.exposure
    ds = apply_cohort_rules(ds, cohort, ctx.where)
    patients = ds.patients.copy()
    outputs: list[ModelOutput] = []
    trajectory = ctx.section(TRAJECTORY.name)
    if needs_serial_exposures(exposure, trajectory):
        patients, outputs = serial_exposures(
            patients, ds.samples, exposure, trajectory, seed=ctx.seed, progress=ctx.progress
        )
    if exposure.kind in COUNT_KINDS:  # the count category (the spline after the exclusions)
        scale = ctx.section(COUNT_STEP).scale
        patients = count_exposure_columns(patients, exposure, scale, spline=False)
    elif is_time_dependent(exposure):  # the status at the baseline sample
        patients[exposure.name] = baseline_status(patients, ds.samples, exposure)
    elif exposure.kind not in SERIAL_KINDS:
        patients[exposure.name] = derive_exposure(patients, exposure)
    patients = derive_covariates(
        patients,
        ctx.covariates,
        where=[ctx.where("covariates", i, "expr") for i in range(len(ctx.covariates))],
    )
    patients = _categorical_as_text(patients, ctx.covariates)
    ds = replace(ds, patients=patients)
    ds = ds.exclude(patients[exposure.name].isna(), Reason.MISSING_MARKER, exposure.name)
    primary = ctx.primary_endpoint
    missing_endpoint = (
        ds.patients[f"{primary}_months"].isna() | ds.patients[f"{primary}_event"].isna()
    )
    ds = ds.exclude(missing_endpoint, Reason.MISSING_ENDPOINT, primary)
    if exposure.kind == "continuous":  # the spline's knots placed on the cohort's counts
        columns = count_exposure_columns(ds.patients, exposure, scale)
        ds = replace(ds, patients=columns)
    return ds, outputs


def select_cohort(
    ds: AnalysisDataset, cfg: AnalysisConfig, *, progress: bool = False
) -> tuple[AnalysisDataset, list[ModelOutput]]:
    """:func:`prepare_cohort` with the config's cohort section."""
    ctx = AnalysisContext(cfg, progress=progress)
    return prepare_cohort(ds, ctx.section(COHORT.name), ctx)


def _categorical_as_text(
    patients: pd.DataFrame, covariates: tuple[CovariateSpec, ...]
) -> pd.DataFrame:
    """Categorical covariates stored as numbers (grade 1-3) become their text labels ("1")."""
    out = patients.copy()
    for cov in covariates:
        if (
            cov.categorical
            and cov.name in out.columns
            and pd.api.types.is_numeric_dtype(out[cov.name])
        ):
            values = out[cov.name]
            out[cov.name] = values.map(lambda v: None if pd.isna(v) else f"{v:g}").astype(object)
    return out


def cohort_rule(patients: pd.DataFrame, rule: str, *, where: str = "") -> pd.Series:
    """A cohort rule evaluated per patient: True where it holds, False where it does not or
    is missing (so a missing ``include`` rule excludes and a missing ``exclude`` rule keeps).

    Examples
    --------
    >>> cohort_rule(pd.DataFrame({"age": [17, 40, None]}), "age >= 18").tolist()
    [False, True, False]
    """
    values = evaluate_expression(patients, rule, where=where)
    indicator = as_indicator(values, what=f"{where + ': ' if where else ''}cohort rule {rule!r}")
    return (indicator == 1.0).astype(bool)


COHORT = Step(
    name="cohort",
    label="cohort",
    scope="cohort",
    prepare=prepare_cohort,
    section="cohort",
    keys=KEYS,
    parse=parse_cohort,
    title="Cohort (`cohort`)",
)

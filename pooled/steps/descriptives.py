"""Describing the cohort: definitions, patient characteristics and the median follow-up.

The characteristics tables are part of the run itself
(:attr:`pooled.run_output.RunOutput.characteristics`, assembled by the runner with
:func:`characteristics_tables`); the follow-up is the first output of the report. Besides the
characteristics by exposure and by centre, the mapping holds three tables the report shows in
its definitions and missing-data parts (their names are :data:`DEFINITIONS`,
:data:`ENDPOINT_DELIVERY` and :data:`MISSING_BY_CENTRE`):

- ``definitions``: what the run analysed, one row per item (``section, item, definition``):
  the description, the cohort, the exposure, each endpoint with its definition from the
  schema, the time origin, the covariates with reference levels and derived expressions, the
  strata, interactions and each model's options;
- ``endpoint_delivery``: per centre how its analysed patients' endpoints were obtained
  (computed from dates or delivered as durations) and what the times count from;
- ``missing_by_centre``: per variable and centre the missing values, or "not collected"
  where the centre's data has no value at all.

Missing data is never hidden: every variable of the characteristics tables has a row of the
patients missing it at centres that collect it and a row of the patients of centres that do
not collect it ("not collected").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from pooled.dataset import AnalysisDataset
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, Step, endpoint_frame

__all__ = [
    "DEFINITIONS",
    "ENDPOINT_DELIVERY",
    "MISSING_BY_CENTRE",
    "NOT_COLLECTED",
    "Variable",
    "characteristics",
    "characteristics_tables",
    "definitions_table",
    "endpoint_delivery_table",
    "exposure_level_label",
    "followup_endpoint",
    "missing_by_centre",
    "run_followup",
]

DEFINITIONS = "definitions"
ENDPOINT_DELIVERY = "endpoint_delivery"
MISSING_BY_CENTRE = "missing_by_centre"
NOT_COLLECTED = "not collected"

#: Characteristics shown whenever the cohort has them (besides the model's covariates).
DESCRIPTIVE_CONTINUOUS = ("age", "tumour_size_mm", "positive_nodes", "ki67_percent")
DESCRIPTIVE_CATEGORICAL = ("grade", "subtype", "er_status", "her2_status", "menopausal_status")


@dataclass(frozen=True, slots=True)
class Variable:
    """A row block of the characteristics tables: a column and how to summarise it."""

    name: str
    categorical: bool
    note: str = ""  # "exposure", "covariate", "derived: positive_nodes > 0", ...


def _describe(values: pd.Series) -> str:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if numbers.empty:
        return ""
    q1, med, q3 = np.percentile(numbers, [25, 50, 75])
    return f"{med:.1f} ({q1:.1f}-{q3:.1f})"


def _level_text(level: Any) -> str:
    return f"{level:g}" if isinstance(level, float) else str(level)


def _is_binary(values: pd.Series) -> bool:
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return pd.api.types.is_bool_dtype(values)
    known = pd.unique(values.dropna())
    return len(known) > 0 and set(np.asarray(known, dtype=float)) <= {0.0, 1.0}


def exposure_level_label(exposure: str, level: Any) -> str:
    """The display name of an exposure level, the same in every table and plot: a binary
    exposure's 1 is ``"<exposure>: yes"`` and 0 ``"<exposure>: no"`` (as the Kaplan-Meier
    curves' names); other levels ``"<exposure> = <level>"``.

    Examples
    --------
    >>> exposure_level_label("pr_positive", 1.0), exposure_level_label("grade", "3")
    ('pr_positive: yes', 'grade = 3')
    """
    text = _level_text(level)
    if text in ("0", "1"):
        return f"{exposure}: {'yes' if text == '1' else 'no'}"
    return f"{exposure} = {text}"


def _collected(patients: pd.DataFrame, column: str) -> pd.Series:
    """Per patient: whether the patient's centre has any value of ``column``."""
    if column not in patients.columns:
        return pd.Series(False, index=patients.index)
    if "centre" not in patients.columns:
        return pd.Series(bool(patients[column].notna().any()), index=patients.index)
    any_value = patients[column].notna().groupby(patients["centre"].astype(str)).transform("any")
    return any_value.astype(bool)


def _count(n: int, total: int) -> str:
    return f"{n} ({100.0 * n / total:.1f})" if total else "0"


def characteristics(
    patients: pd.DataFrame,
    by: str,
    endpoints: tuple[str, ...],
    *,
    variables: Sequence[Variable] | None = None,
    group_label: Any = None,
) -> pd.DataFrame:
    """Patient characteristics by a grouping column, with the missing data of every variable.

    One column per group (``all`` first). Per continuous variable: median (IQR) of the known
    values; per categorical variable: n (%) per level, the percentage among patients with a
    known value (a binary 0/1 variable: one row, ``yes``). Each variable that is missing for
    anyone has a row ``missing, n (%)``: patients without a value at centres that collect the
    variable; and where a centre does not collect it (no patient there has a value), a row
    ``not collected, n (%)``: the patients of such centres (percentages of the column's
    patients). Per endpoint the events, n (%).

    Parameters
    ----------
    patients : the cohort.
    by : the grouping column (the exposure, ``centre``).
    endpoints : endpoints whose events are counted.
    variables : the variables, in order; default the descriptive set the cohort has.
    group_label : ``group_label(level) -> str`` names a group's column (default
        ``"<by> = <level>"``).
    """
    label = group_label or (lambda level: f"{by} = {_level_text(level)}")
    groups = [("all", patients)] + [
        (label(level), g) for level, g in patients.groupby(by, sort=True, observed=True)
    ]
    if variables is None:
        variables = default_variables(patients, ())
    rows: list[dict[str, Any]] = [
        {"characteristic": "patients, n", **{name: f"{len(g)}" for name, g in groups}}
    ]
    for var in variables:
        column = var.name
        if column not in patients.columns or column == by:
            continue
        collected = _collected(patients, column)
        values = patients[column]
        note = f" [{var.note}]" if var.note else ""
        if not var.categorical and not _is_binary(values):
            rows.append(
                {
                    "characteristic": f"{column}, median (IQR){note}",
                    **{
                        n: _describe(g[column]) if collected[g.index].any() else NOT_COLLECTED
                        for n, g in groups
                    },
                }
            )
        elif _is_binary(values) and not var.categorical:
            rows.append(
                {
                    "characteristic": f"{column}: yes, n (%){note}",
                    **{n: _share(g[column], 1.0, collected[g.index]) for n, g in groups},
                }
            )
        else:
            for level in sorted(values.dropna().unique(), key=str):
                rows.append(
                    {
                        "characteristic": f"{column} = {_level_text(level)}, n (%){note}",
                        **{n: _share(g[column], level, collected[g.index]) for n, g in groups},
                    }
                )
        missing = values.isna() & collected
        if missing.any():
            rows.append(
                {
                    "characteristic": f"{column}: missing, n (%)",
                    **{n: _count(int(missing[g.index].sum()), len(g)) for n, g in groups},
                }
            )
        if not collected.all():
            rows.append(
                {
                    "characteristic": f"{column}: {NOT_COLLECTED}, n (%)",
                    **{n: _count(int((~collected[g.index]).sum()), len(g)) for n, g in groups},
                }
            )
    for endpoint in endpoints:
        column = f"{endpoint}_event"
        if column in patients.columns:
            rows.append(
                {
                    "characteristic": f"{endpoint} events, n (%)",
                    **{n: _count(_events(g[column]), len(g)) for n, g in groups},
                }
            )
            known = patients[f"{endpoint}_months"].notna() & patients[column].notna()
            if not known.all():
                rows.append(
                    {
                        "characteristic": f"{endpoint}: missing, n (%)",
                        **{n: _count(int((~known[g.index]).sum()), len(g)) for n, g in groups},
                    }
                )
    return pd.DataFrame(rows)


def _events(flags: pd.Series) -> int:
    """Events among the flags: nullable booleans and 0/1 floats alike, missing (an endpoint a
    centre did not collect) counted as no event here and shown in its own 'missing' row."""
    return int(pd.to_numeric(flags.astype("Float64"), errors="coerce").fillna(0).sum())


def _share(values: pd.Series, level: Any, collected: pd.Series) -> str:
    """``n (%)`` of ``level`` among the known values; "not collected" where no centre of the
    column collects the variable."""
    if not collected.any():
        return NOT_COLLECTED
    known = values.dropna()
    hits = int((known == level).sum())
    return f"{hits} ({100.0 * hits / len(known):.1f})" if len(known) else "0"


def default_variables(patients: pd.DataFrame, covariates: Sequence[Any]) -> list[Variable]:
    """The characteristics' variables: the model's covariates (derived ones with their
    expression) in model order, then the descriptive set the cohort has."""
    out: list[Variable] = []
    seen: set[str] = set()
    for cov in covariates:
        if cov.name in patients.columns and cov.name not in seen:
            note = f"derived: {cov.expr}" if cov.expr else "covariate"
            categorical = bool(cov.categorical) or not pd.api.types.is_numeric_dtype(
                patients[cov.name]
            )
            out.append(Variable(cov.name, categorical, note))
            seen.add(cov.name)
    for name in DESCRIPTIVE_CONTINUOUS:
        if name in patients.columns and name not in seen:
            out.append(Variable(name, False))
            seen.add(name)
    for name in DESCRIPTIVE_CATEGORICAL:
        if name in patients.columns and name not in seen:
            out.append(Variable(name, True))
            seen.add(name)
    return [v for v in out if patients[v.name].notna().any() or v.note]


def missing_by_centre(patients: pd.DataFrame, variables: Sequence[Variable]) -> pd.DataFrame:
    """Per variable and centre: ``"k (x%)"`` patients missing it, or "not collected" when
    the centre has no value at all; ``all centres`` counts every patient without a value
    (missing or not collected)."""
    centres = sorted(patients["centre"].astype(str).unique())
    rows = []
    for var in variables:
        if var.name not in patients.columns:
            continue
        values = patients[var.name]
        row: dict[str, Any] = {"variable": var.name, "kind": var.note or "characteristic"}
        row["all centres"] = _count(int(values.isna().sum()), len(values))
        for centre in centres:
            here = values[patients["centre"].astype(str) == centre]
            row[centre] = (
                NOT_COLLECTED
                if here.notna().sum() == 0
                else _count(int(here.isna().sum()), len(here))
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=["variable", "kind", "all centres", *centres])


def endpoint_delivery_table(patients: pd.DataFrame, endpoints: Sequence[str]) -> pd.DataFrame:
    """Per centre: how the analysed patients' endpoints were obtained (``endpoints_from``:
    computed from dates, or delivered as durations), what their times count from
    (``time_origin``), and per endpoint the patients with it (and its events)."""
    rows = []
    for centre, group in patients.groupby(patients["centre"].astype(str), sort=True):
        source = group.get("endpoints_from", pd.Series(index=group.index, dtype=object))
        origin = group.get("time_origin", pd.Series(index=group.index, dtype=object))
        row: dict[str, Any] = {
            "centre": centre,
            "patients": len(group),
            "from dates": int((source == "dates").sum()),
            "from delivered durations": int((source == "durations").sum()),
            "source not recorded": int(source.isna().sum()),
            "time origin": "; ".join(
                f"{name} ({n})" for name, n in origin.dropna().astype(str).value_counts().items()
            )
            or "not recorded",
        }
        for endpoint in endpoints:
            months, event = f"{endpoint}_months", f"{endpoint}_event"
            if months in group.columns and event in group.columns:
                known = group[months].notna() & group[event].notna()
                events = int(group.loc[known, event].astype(float).sum())
                row[f"{endpoint}: patients (events)"] = f"{int(known.sum())} ({events})"
        rows.append(row)
    return pd.DataFrame(rows)


def _options(section: Any) -> str:
    """``ties: efron; robust: no`` for a section dataclass (its fields but the switch)."""
    if section is None:
        return ""
    try:
        names = [f.name for f in fields(section) if f.name != "enabled"]
    except TypeError:
        return str(section)
    parts = []
    for name in names:
        value = getattr(section, name)
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, tuple):
            text = ", ".join(_level_text(v) for v in value) or "none"
        elif value is None or value == "":
            text = "default"
        else:
            text = _level_text(value)
        parts.append(f"{name.replace('_', ' ')}: {text}")
    return "; ".join(parts)


def _exposure_text(exposure: Any, schema: Any) -> str:
    """The exposure's definition: marker, cut-off, blood-volume normalisation."""
    kind = exposure.kind
    if kind == "threshold":
        marker = exposure.marker
        if marker in ("ctc_count", "ctc_per_7_5ml") and exposure.per_7_5ml:
            scale = (
                "CTC per 7.5 ml of blood (ctc_count x 7.5 / ctc_blood_volume_ml: counts "
                "normalised to the blood volume analysed)"
            )
        elif marker == "ctc_count":
            scale = "ctc_count (CTC in the blood volume analysed, not normalised to 7.5 ml)"
        else:
            scale = marker + _field_text(schema, marker)
        return f"1 (yes) when {scale} >= {exposure.threshold:g}, else 0 (no)"
    if kind == "expression":
        return f"1 (yes) where {exposure.expr} is true, 0 (no) where false"
    if kind == "her2_ctc":
        return f"1 (yes) with at least {exposure.threshold:g} HER2-positive CTC, else 0 (no)"
    if kind == "phenotype_score":
        return f"1 (yes) when the score {exposure.formula} >= {exposure.threshold:g}, else 0 (no)"
    if kind == "risk_concordance":
        return (
            "clinical risk x CTC risk (CTC per 7.5 ml >= "
            f"{exposure.threshold:g} is high): four levels"
        )
    if kind == "change_category":
        window = exposure.follow_up_window
        return (
            "CTC status at baseline and at follow-up (days "
            f"{window[0]:g}-{window[1]:g}): four change categories"
        )
    if kind == "trajectory_group":
        return "latent CTC trajectory group (group-based trajectory model of serial counts)"
    if kind == "count_categories":
        return "CTC per 7.5 ml in categories, the first the reference (models.count_response)"
    if kind == "continuous":
        return (
            "CTC per 7.5 ml as a natural cubic spline of log(1 + count) in the Cox models; "
            "tables and curves by its categories (models.count_response)"
        )
    return kind


def _field_text(schema: Any, name: str) -> str:
    """`` (Pathological tumour size, mm)`` from the schema's field, or ``""``."""
    if schema is None:
        return ""
    try:
        spec = schema.table("patients").fields.get(name)
    except Exception:  # a schema without a patients table
        return ""
    if spec is None:
        return ""
    parts = [p for p in (spec.description, spec.unit) if p]
    return f" ({', '.join(parts)})" if parts else ""


def _endpoint_text(endpoint: Any, schema: Any) -> str:
    """``event: first of recurrence_date, death_date; censored at the last contact``."""
    events = ", ".join(endpoint.event_dates)
    text = f"event: the first of {events}" if len(endpoint.event_dates) > 1 else f"event: {events}"
    if endpoint.death_cause:
        text += f" (a death counts only with cause {endpoint.death_cause}; other deaths censor)"
    return text + "; otherwise censored at death or the last contact"


def definitions_table(patients: pd.DataFrame, ctx: AnalysisContext) -> pd.DataFrame:
    """What the run analysed, one row per item: ``section, item, definition``."""
    cfg = ctx.config
    schema = cfg.schema
    rows: list[tuple[str, str, str]] = []
    if cfg.description:
        rows.append(("Analysis", "description", cfg.description))
    rows.append(("Analysis", "name", cfg.name))
    cohort = _section_or_none(ctx, "cohort")
    if cohort is not None:
        rows.append(("Cohort", "setting", cohort.setting or "every setting"))
        for rule in cohort.include:
            rows.append(("Cohort", "include", rule))
        for rule in cohort.exclude:
            rows.append(("Cohort", "exclude", rule))
    centres = patients["centre"].astype(str).value_counts().sort_index()
    rows.append(
        (
            "Cohort",
            "centres",
            f"{len(centres)}: " + ", ".join(f"{c} ({n})" for c, n in centres.items()),
        )
    )
    exposure = cfg.exposure
    rows.append(("Exposure", exposure.name, _exposure_text(exposure, schema)))
    endpoints = {e.name: e for e in (schema.endpoints if schema is not None else ())}
    for i, name in enumerate(cfg.endpoints):
        spec = endpoints.get(name)
        text = _endpoint_text(spec, schema) if spec is not None else "as delivered"
        if i == 0:
            text = "primary endpoint (patients without it are not in the cohort); " + text
        rows.append(("Endpoint", name, text))
    if cfg.origin:
        origin = f"{cfg.origin} (the config's origin)"
    else:
        per_setting = dict(getattr(schema, "origin", {}) or {})
        origin = "the schema's origin per setting: " + (
            ", ".join(f"{date} ({setting})" for setting, date in per_setting.items()) or "none"
        )
    rows.append(("Time origin", "endpoints count from", origin))
    rows.append(
        (
            "Follow-up",
            "median follow-up",
            "reverse Kaplan-Meier (censoring as the event) on "
            f"{followup_endpoint(patients, ctx).upper()}, as in the validation reports",
        )
    )
    for cov in cfg.covariates:
        if cov.expr:
            kind = f"derived: {cov.expr}"
        elif cov.categorical or cov.reference is not None:
            kind = "categorical"
        else:
            kind = "continuous"
        if cov.reference is not None:
            kind += f", reference level {cov.reference}"
        rows.append(("Covariate", cov.name, kind + _field_text(schema, cov.name)))
    rows.append(("Strata", "strata", ", ".join(cfg.strata) or "none"))
    if cfg.interactions:
        rows.append(
            ("Interactions", "interactions", "; ".join(f"{a} x {b}" for a, b in cfg.interactions))
        )
    for step in cfg.registry:
        if not step.section:
            continue
        section = _section_or_none(ctx, step.name)
        if step.name == "cohort" or not section:
            continue  # the cohort is above; a model that is off is not shown
        if not step.is_model and not any(
            getattr(section, f.name) for f in fields(section) if f.name != "enabled"
        ):
            continue  # a section asking for nothing (no sensitivity analyses)
        rows.append(("Model", step.label or step.name, _options(section) or "defaults"))
    return pd.DataFrame(rows, columns=["section", "item", "definition"])


def _section_or_none(ctx: AnalysisContext, name: str) -> Any:
    try:
        return ctx.section(name)
    except KeyError:
        return None


def characteristics_tables(patients: pd.DataFrame, ctx: AnalysisContext) -> dict[str, pd.DataFrame]:
    """The run's characteristics tables (by exposure, by centre) with the definitions, the
    endpoints' delivery per centre and the missing values per variable and centre."""
    exposure = ctx.exposure.name
    variables = default_variables(patients, ctx.covariates)
    marker = ctx.exposure.marker
    if ctx.exposure.kind == "threshold" and marker in patients.columns:
        variables.insert(0, Variable(marker, False, "exposure marker"))
    by_centre_variables = [Variable(exposure, False, "exposure"), *variables]
    return {
        "by_exposure": characteristics(
            patients,
            exposure,
            ctx.endpoints,
            variables=variables,
            group_label=lambda level: exposure_level_label(exposure, level),
        ),
        "by_centre": characteristics(
            patients,
            "centre",
            ctx.endpoints,
            variables=by_centre_variables,
            group_label=lambda level: str(level),
        ),
        MISSING_BY_CENTRE: missing_by_centre(patients, by_centre_variables),
        ENDPOINT_DELIVERY: endpoint_delivery_table(patients, ctx.endpoints),
        DEFINITIONS: definitions_table(patients, ctx),
    }


def followup_endpoint(patients: pd.DataFrame, ctx: AnalysisContext) -> str:
    """The endpoint the median follow-up is computed on: overall survival where the cohort
    has it (the validation reports' definition), else the primary endpoint."""
    if "os_months" in patients.columns and patients["os_months"].notna().any():
        return "os"
    return ctx.primary_endpoint


def run_followup(cohort: AnalysisDataset, section: None, ctx: AnalysisContext) -> list[ModelOutput]:
    """Median follow-up by the reverse Kaplan-Meier method on overall survival (the
    definition of the validation reports), with its interquartile range."""
    from harmonization.validate import reverse_km_followup
    from pooled.models.km import median_followup

    endpoint = followup_endpoint(cohort.patients, ctx)
    data = endpoint_frame(cohort.patients, endpoint)
    duration, event = f"{endpoint}_months", f"{endpoint}_event"
    followup = median_followup(data, duration, event, endpoint=endpoint)
    q1, _median, q3 = reverse_km_followup(
        data[duration].to_numpy(dtype=float), data[event].to_numpy(dtype=float)
    )
    extra: Mapping[str, Any] = {
        "q1": q1,
        "q3": q3,
        "method": "reverse Kaplan-Meier (censoring as the event)",
    }
    return [
        ModelOutput(
            f"followup_{endpoint}",
            "followup",
            endpoint,
            followup,
            f"Median follow-up ({endpoint.upper()}, reverse Kaplan-Meier)",
            extra,
        )
    ]


FOLLOWUP = Step(name="followup", label="follow-up", scope="run", run=run_followup)

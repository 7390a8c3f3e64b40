"""Analysis configs: YAML parsed once into a frozen, validated :class:`AnalysisConfig`.

Every key a config may hold is declared once, as a :class:`~pooled.config_keys.ConfigKey`
(path, type, default, allowed values, an example and its meaning): the top-level keys here
(name, data, endpoints, exposure, covariates, strata, ... and the ``models`` mapping), each
analysis step's section in its module under :mod:`pooled.steps` (``models.cox.*`` in
:mod:`pooled.steps.cox`, ``cohort.*`` in :mod:`pooled.steps.cohort`, ...). This module
assembles them, with the steps of a :class:`~pooled.steps.base.Registry` (by default
:data:`pooled.steps.registry.STEPS`), into one registry, :data:`CONFIG_KEYS`. The parser takes
the keys it accepts, their defaults, allowed values and type checks from that registry and
hands each step's section to the step's parser (:class:`~pooled.config_keys.SectionReader`);
``docs/config_reference.md`` is generated from it (``python -m pooled.config``), so the
reference cannot drift from the parser.

Every mistake is reported with the config file and line, what was expected and what was
found, before any model runs: a misspelt key (with a did-you-mean), an option out of its set,
an unknown covariate, marker, stratum or subgroup (checked against the schema, which the
message names), an expression that does not compile, a subgroup with no patients (checked
against the data by :func:`check_against_data`).

Example (``configs/analyses/paddy.yaml``)::

    name: paddy
    data: {store: pooled.db, versions: latest}
    cohort: {setting: early}
    endpoints: [os, bcss, dfs, ddfs]
    exposure: {name: dtc_positive, marker: dtc_count, threshold: 1}
    covariates: [age, tumour_size_mm, {name: node_positive, expr: "positive_nodes > 0"},
                 {name: subtype, reference: luminal_a}]
    interactions: [[dtc_positive, subtype]]
    subgroups: [subtype]
    models:
      cox: {ties: [efron, breslow]}
      two_stage: {method: [REML, DL], knha: true}
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from harmonization.errors import SchemaError
from harmonization.schema import Schema, did_you_mean, load_schema
from harmonization.yamlio import YamlProblem, load_yaml, read_yaml_text
from pooled.config_keys import (
    DERIVED_COLUMNS,
    NUMERIC_TYPES,
    REQUIRED,
    VALUE_TYPES,
    ConfigKey,
    Keys,
    Located,
    ParseContext,
    SectionReader,
    ValueType,
    compile_config_expression,
    compose_lines,
    one_of,
    patient_columns,
    schema_values,
    sentence,
    shown_path,
    yaml_value,
)
from pooled.config_keys import section_keys as _keys_in
from pooled.errors import ConfigError
from pooled.exposures import (
    CTC_MARKERS,
    EXPOSURE_KINDS,
    SERIAL_KINDS,
    THRESHOLD_KINDS,
    CovariateSpec,
    ExposureKind,
    ExposureSpec,
)
from pooled.steps.base import Registry
from pooled.steps.registry import STEPS

__all__ = [
    "CONFIG_KEYS",
    "CTC_MARKERS",
    "DERIVED_COLUMNS",
    "EXPOSURE_KINDS",
    "KEYS",
    "NUMERIC_TYPES",
    "REFERENCE_PATH",
    "REQUIRED",
    "SECTIONS",
    "SERIAL_KINDS",
    "THRESHOLD_KINDS",
    "VALUE_TYPES",
    "AnalysisConfig",
    "ConfigKey",
    "CovariateSpec",
    "DataSpec",
    "ExposureKind",
    "ExposureSpec",
    "Located",
    "ModelsView",
    "ParseContext",
    "SectionReader",
    "ValueType",
    "assemble_keys",
    "check_against_data",
    "config_reference",
    "load_analysis_config",
    "parse_analysis_config",
    "schema_values",
    "section_keys",
    "shown_path",
    "yaml_value",
]

Origin = Literal["diagnosis", "surgery", "sample"]
ORIGINS: tuple[str, ...] = ("diagnosis", "surgery", "sample")
COMPETING_EVENTS: tuple[str, ...] = ("other_death",)
REFERENCE_PATH = Path(__file__).resolve().parent.parent / "docs" / "config_reference.md"


# ---------------------------------------------------------------------------------------------
# The frozen config objects
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataSpec:
    """Where the data come from: a store with centre versions latest or pinned."""

    store: str = "pooled.db"
    versions: tuple[tuple[str, int], ...] = ()  # pinned (centre, version); others latest
    centres: tuple[str, ...] = ()  # () = every centre


@dataclass(frozen=True, slots=True)
class ModelsView:
    """``cfg.models``: the sections of the models, by step name, and their flat names.

    ``cfg.models.cox`` is the Cox step's section, true when the model runs. The flat names
    the config had before its sections belonged to the steps still read the sections:
    ``cfg.models.ties`` (the primary ties), ``cfg.models.meta_method``, ... (each section's
    ``aliases``) and ``cfg.models.<step>_<field>`` (``cfg.models.bayes_draws``).
    """

    sections: tuple[tuple[str, Any], ...] = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "sections":
            raise AttributeError(name)
        sections = dict(self.sections)
        if name in sections:
            return sections[name]
        for section in sections.values():
            target = getattr(type(section), "aliases", {}).get(name)
            if target:
                return getattr(section, target)
        for step, section in sections.items():
            attribute = name.removeprefix(f"{step}_")
            if attribute != name and hasattr(section, attribute):
                return getattr(section, attribute)
        raise AttributeError(
            f"cfg.models has no {name!r}; the models are {', '.join(sections)} "
            "(cfg.models.<model>.<option>)"
        )


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """A validated analysis config; build with :func:`load_analysis_config`.

    The top-level keys are attributes (``cfg.endpoints``, ``cfg.exposure``, ...); each
    step's section is ``cfg.section(step)`` (``cfg.section("cox").ties``), the models' also
    ``cfg.models.<step>`` (:class:`ModelsView`), and ``cfg.cohort`` and ``cfg.sensitivity``
    are the cohort's and the sensitivity analyses' sections. ``registry`` holds the steps
    the config was parsed with, which the runner walks.

    ``schema_path`` is the schema the config names with its ``schema:`` key (resolved
    against the config's folder; ``""`` when it names none); ``schema`` is the schema the
    config was checked against.
    """

    name: str
    data: DataSpec
    endpoints: tuple[str, ...]
    exposure: ExposureSpec
    covariates: tuple[CovariateSpec, ...]
    strata: tuple[str, ...] = ("centre",)
    interactions: tuple[tuple[str, str], ...] = ()
    subgroups: tuple[str, ...] = ()
    sections: tuple[tuple[str, Any], ...] = ()
    origin: Origin | None = None
    seed: int = 2026
    output: str = ""
    description: str = ""
    path: str = ""
    text: str = ""
    sha256: str = ""
    schema_path: str = ""
    schema: Schema | None = field(default=None, compare=False, repr=False)
    keys_given: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict, compare=False, repr=False)
    registry: Registry = field(default=STEPS, compare=False, repr=False)
    competing: tuple[tuple[str, str], ...] = ()

    def competing_event(self, endpoint: str) -> str | None:
        """The competing event declared for ``endpoint`` (``endpoints: {bcss: {competing:
        other_death}}``), else None."""
        return dict(self.competing).get(endpoint)

    def section(self, step: str) -> Any:
        """The parsed config section of the step named ``step``."""
        for name, section in self.sections:
            if name == step:
                return section
        raise KeyError(
            f"no config section of step {step!r}; sections: "
            f"{', '.join(name for name, _ in self.sections)}"
        )

    @property
    def models(self) -> ModelsView:
        """The models' sections (``cfg.models.cox``), see :class:`ModelsView`."""
        models = {s.name for s in self.registry if s.is_model}
        return ModelsView(tuple((n, s) for n, s in self.sections if n in models))

    @property
    def cohort(self) -> Any:
        """The cohort step's section (:class:`pooled.steps.cohort.CohortSpec`)."""
        return self.section("cohort")

    @property
    def sensitivity(self) -> Any:
        """The sensitivity analyses' section (:class:`pooled.steps.sensitivity.SensitivitySpec`)."""
        return self.section("sensitivity")

    @property
    def categorical(self) -> tuple[tuple[str, str], ...]:
        """(column, reference) pairs of the categorical covariates."""
        return tuple((c.name, c.reference or "") for c in self.covariates if c.categorical)

    @property
    def derived_covariates(self) -> tuple[CovariateSpec, ...]:
        """The covariates computed from an expression, in config order."""
        return tuple(c for c in self.covariates if c.derived)

    def where(self, *keys: Any) -> str:
        return Located(self.path or "<config>", self.lines).where(*keys)


# ---------------------------------------------------------------------------------------------
# The key registry: the top-level keys here, the sections' keys from the steps
# ---------------------------------------------------------------------------------------------

_EXPOSURE_EXAMPLE = "exposure: {name: ctc_positive, marker: ctc_count, threshold: 1}"

TOP_LEVEL_KEYS: tuple[ConfigKey, ...] = (
    # -- top level ----------------------------------------------------------------------------
    ConfigKey(
        "name", "non-empty text",
        "Name of the analysis. It labels every row of the results (column `analysis`) and "
        "names the default output folder `reports/<name>/`.",
        "name: paddy", default=REQUIRED,
    ),
    ConfigKey(
        "description", "text",
        "Free text describing the analysis (the publication it follows, the question it "
        "answers); the report keeps it with the config as run.",
        "description: DTC in bone marrow and survival in early breast cancer", default="",
    ),
    ConfigKey(
        "schema", "path",
        "The consortium schema the config is checked against: fields, their types and codes, "
        "endpoints. A path relative to the config file. Every message about an unknown "
        "field, covariate, marker, stratum or subgroup names this file. When absent, the "
        "caller's schema is used (the CLI's `--schema`, else the schema the store recorded, "
        "else `configs/schema.yaml`); a schema passed to `load_analysis_config(path, "
        "schema=...)` takes precedence over this key. The resolved path is kept as "
        "`cfg.schema_path`.",
        "schema: ../schema.yaml", default="",
        default_text="none: the caller's schema, else configs/schema.yaml",
    ),
    ConfigKey(
        "origin", "choice",
        "Time origin of the endpoints: `<endpoint>_months` are recomputed from dates of "
        "centres that deliver them (diagnosis date, surgery date or sample date).",
        "origin: diagnosis", allowed=ORIGINS,
        default_text="the schema's origin per setting (diagnosis for early, sample for "
        "metastatic disease in configs/schema.yaml)",
    ),
    ConfigKey(
        "endpoints", "endpoints",
        "Survival endpoints analysed, each as `<endpoint>_months` and `<endpoint>_event`. The "
        "first is the primary endpoint: patients without it leave the cohort (exclusion flow, "
        "'endpoint missing') and the sensitivity analyses use it. Patients missing a further "
        "endpoint stay in the cohort and are left out of that endpoint's models only; the "
        "model flow (`model_flow.csv`) counts them. A list of names, or a mapping from each "
        "name to its options (`endpoints: {os: {}, bcss: {competing: other_death}}`, in "
        "order).",
        "endpoints: [os, dfs]", default=REQUIRED, allowed_from="endpoints",
    ),
    ConfigKey(
        "endpoints{}.competing", "choice",
        "The competing event of an endpoint, for its competing-risks analyses (model "
        "`competing`: cumulative incidence of both events by exposure with Gray's test, "
        "cause-specific and Fine-Gray Cox models). `other_death`: a death that is not the "
        "endpoint's event, at the end of the endpoint's follow-up (os_event = 1 with "
        "bcss_event = 0 and the death at bcss_months); only for an endpoint counting deaths of "
        "one cause (in the schema, an endpoint with `death_cause`, e.g. `bcss`). Without it the "
        "other deaths censor the endpoint, as before.",
        "endpoints: {os: {}, bcss: {competing: other_death}}",
        allowed=COMPETING_EVENTS, default_text="none (other deaths censor)",
    ),
    ConfigKey(
        "seed", "integer >= 0",
        "Seed of every random step (multiple imputation, Bayesian sampling, trajectory "
        "starts). The same config, data and seed give the same results.",
        "seed: 2026", default=2026,
    ),
    ConfigKey(
        "output", "text",
        "Output folder of `pooled run` when no `--out` is given.",
        "output: reports/paddy-2026", default="", default_text="reports/<name>",
    ),
    # -- data ---------------------------------------------------------------------------------
    ConfigKey(
        "data", "section",
        "Which data to read: the store and, per centre, which upload version.",
        "data: {store: pooled.db, versions: latest, centres: all}", default={},
    ),
    ConfigKey(
        "data.store", "text",
        "The store (DuckDB file) to read; a relative path is looked up from the working "
        "directory, then from the config's folder. `pooled run --store` overrides it.",
        "data: {store: pooled.db}", default="pooled.db",
    ),
    ConfigKey(
        "data.versions", "versions",
        "`latest` (each centre's latest accepted upload) or a mapping `centre: version` that "
        "pins some centres; centres not named use their latest version.",
        "data: {versions: {ulm: 2, paris: 1}}", default=(), default_text="`latest`",
    ),
    ConfigKey(
        "data.centres", "centres",
        "`all`, or the list of centre codes to analyse.",
        "data: {centres: [ulm, paris, tuebingen]}", default=(), default_text="`all`",
    ),
    # -- exposure -----------------------------------------------------------------------------
    ConfigKey(
        "exposure", "section",
        "The marker exposure, derived into a column of the cohort; patients whose exposure "
        "cannot be determined leave the cohort ('marker missing').",
        _EXPOSURE_EXAMPLE, default=REQUIRED,
    ),
    ConfigKey(
        "exposure.name", "identifier",
        "Name of the exposure column (a new column: it must not be a schema field); used in "
        "interactions and in the results' `term`.",
        _EXPOSURE_EXAMPLE, default=REQUIRED,
    ),
    ConfigKey(
        "exposure.kind", "choice",
        "How the exposure is derived. `threshold`: a numeric field (`marker`) >= `threshold` "
        "(1 = yes, 0 = no). `expression`: a logical expression (`expr`). `her2_ctc`: at least "
        "`threshold` HER2-positive CTC. `phenotype_score`: `formula` >= `threshold`. "
        "`risk_concordance`: clinical risk x CTC risk (CTC per 7.5 ml >= `threshold`), four "
        "levels. `change_category` and `trajectory_group`: from the serial CTC samples "
        "(baseline -> follow-up change, latent trajectory group). `time_dependent`: the CTC "
        "status of the serial samples (CTC per 7.5 ml >= `threshold`) as it changes over "
        "time: the cohort's exposure column is the status at baseline (the models fitted "
        "from time zero use it), the time-dependent Cox model carries each sample's status "
        "forward, and `models.landmark` uses the status last measured at each landmark.",
        "exposure: {name: hormone_receptor_high, kind: expression, "
        "expr: 'er_percent >= 10 and pr_percent >= 10'}",
        default="threshold", allowed=EXPOSURE_KINDS,
    ),
    ConfigKey(
        "exposure.marker", "numeric field",
        "The field a `threshold` exposure compares with the threshold: any integer or number "
        "field of the schema's patients table (a count such as `ctc_count`, `dtc_count`, or a "
        "measurement such as `er_percent` or a receptor in fmol/l added to the schema) or the "
        "derived `ctc_per_7_5ml`. A text, category, boolean or date field is an error (use "
        "`kind: expression`).",
        "exposure: {name: er_high, marker: er_percent, threshold: 10, per_7_5ml: false}",
        default="ctc_count", allowed_from="numeric_fields",
    ),
    ConfigKey(
        "exposure.threshold", "number",
        "Cut-off: the exposure is 1 where the marker (or score, or HER2-positive CTC count) "
        "is >= threshold, 0 below, missing where the marker is missing. For serial exposures: "
        "the CTC count per 7.5 ml that counts as CTC-positive.",
        "exposure: {name: ctc_positive, marker: ctc_count, threshold: 5}", default=1.0,
    ),
    ConfigKey(
        "exposure.per_7_5ml", "boolean",
        "Normalise a CTC count to 7.5 ml of blood (count x 7.5 / blood volume analysed) "
        "before comparing it with the threshold. Only for CTC counts (`ctc_count`, "
        "`ctc_per_7_5ml`); true for another marker is an error.",
        "exposure: {name: ctc_positive, marker: ctc_count, threshold: 5, per_7_5ml: false}",
        default_text="true when the marker is ctc_count or ctc_per_7_5ml, else false",
    ),
    ConfigKey(
        "exposure.formula", "expression",
        "The score of a `phenotype_score` exposure: an arithmetic expression on patient "
        "fields (see Expressions), compared with `threshold`.",
        "exposure: {name: endocrine_resistant, kind: phenotype_score, threshold: 1, "
        "formula: 'ctc_her2_positive_count - ctc_er_positive_count'}",
        default_text="none (required for kind phenotype_score)",
    ),
    ConfigKey(
        "exposure.expr", "expression",
        "The exposure of kind `expression`: a logical (or 0/1) expression on patient fields "
        "(see Expressions). True becomes 1, false 0, missing stays missing (and the patient "
        "leaves the cohort, 'marker missing').",
        "exposure: {name: hormone_receptor_high, kind: expression, "
        "expr: 'er_percent >= 10 and pr_percent >= 10'}",
        default_text="none (required for kind expression)",
    ),
    ConfigKey(
        "exposure.follow_up_window", "day window",
        "`change_category`: the window [first day, last day] after baseline in which the "
        "follow-up sample must lie.",
        "exposure: {name: b2CTC, kind: change_category, threshold: 5, "
        "follow_up_window: [22, 36]}",
        default=(22.0, 36.0),
    ),
    ConfigKey(
        "exposure.levels", "list of text",
        "Categorical exposures: the order of the levels, the first being the reference.",
        "exposure: {name: tCTC, kind: trajectory_group, "
        "levels: [undetectable, low, intermediate, high]}",
        default=(),
    ),
    # -- covariates ---------------------------------------------------------------------------
    ConfigKey(
        "covariates", "list of covariates",
        "Adjustment covariates of the Cox, two-stage and Bayesian models, in model order. Each "
        "is a column name (a schema field or a derived column) or a mapping with `name` and "
        "options; a mapping with `expr` derives a new column on the cohort (after the cohort "
        "rules, before the models). Patients missing a covariate are left out of the models "
        "that use it (complete cases); the model flow counts them per covariate.",
        "covariates: [age, {name: node_positive, expr: 'positive_nodes > 0'}, "
        "{name: grade3, expr: 'grade == 3'}, {name: subtype, reference: luminal_a}]",
        default=(),
    ),
    ConfigKey(
        "covariates[].name", "identifier",
        "The column: a field of the schema's patients table, a derived column "
        "(`ctc_per_7_5ml`), the exposure, or, with `expr`, the name of the new column (then it "
        "must not be a schema field, a derived column, the exposure or another covariate).",
        "covariates: [{name: tumour_size_mm}]", default=REQUIRED,
    ),
    ConfigKey(
        "covariates[].expr", "expression",
        "Derive the covariate from an expression on patient fields and earlier derived "
        "covariates (see Expressions). A logical result becomes 1/0 (float), a number stays "
        "a number, missing stays missing; a text result needs `categorical: true`. A derived "
        "covariate can be used in interactions, subgroups and strata like any covariate.",
        "covariates: [{name: grade3, expr: 'grade == 3'}, {name: size_group, "
        "expr: \"'large' if tumour_size_mm > 20 else 'small'\", categorical: true, "
        "reference: small}]",
        default_text="none (a column of the analysis dataset)",
    ),
    ConfigKey(
        "covariates[].categorical", "boolean",
        "Enter the covariate as treatment dummies against `reference` (a numeric field such "
        "as grade becomes text levels '1', '2', '3').",
        "covariates: [{name: grade, categorical: true, reference: '1'}]",
        default_text="true for category and string fields and when a reference is given, "
        "else false",
    ),
    ConfigKey(
        "covariates[].reference", "text",
        "Reference level of a categorical covariate (one of the field's codes; for a "
        "derived covariate one of the values it takes).",
        "covariates: [{name: subtype, reference: luminal_a}]",
        default_text="the first code of a category field",
    ),
    ConfigKey(
        "strata", "list of columns",
        "Stratification of the one-stage Cox models and of the log-rank tests (a baseline "
        "hazard per stratum): columns as for covariates, including derived covariates.",
        "strata: [centre]", default=("centre",),
    ),
    ConfigKey(
        "interactions", "list of pairs",
        "Interactions `[a, b]` between the exposure and a covariate (or two covariates, "
        "derived ones included): the one-stage model with `a * b`, its likelihood-ratio "
        "test and the exposure's HR within each level of the other term.",
        "interactions: [[ctc_positive, subtype]]", default=(),
    ),
    ConfigKey(
        "subgroups", "list of columns",
        "Columns (derived covariates included) whose levels must each have patients in both "
        "exposure groups, checked before any model runs.",
        "subgroups: [subtype]", default=(),
    ),
)  # fmt: skip
MODELS_EXAMPLE = (
    "models: {km: {times: [12, 36, 60]}, cox: {ties: efron}, two_stage: {method: REML}}"
)
TITLES: Mapping[str, str] = {
    "": "General",
    "data": "Data (`data`)",
    "exposure": "Exposure (`exposure`)",
    "covariates[]": "Covariates (`covariates`, `strata`, `interactions`, `subgroups`)",
    "models": "Models (`models`)",
}


def _listed(items: list[str]) -> str:
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def models_key(registry: Registry) -> ConfigKey:
    """The ``models`` mapping: one model switch per model step of ``registry``."""
    on = [step.section.partition(".")[2] for step in registry if step.default_on]
    return ConfigKey(
        "models", "section",
        "Which models run, each with its options. A model runs when its key is present "
        "(`cox:` or `cox: {ties: breslow}`) and not `false`. When the whole `models` key is "
        f"absent, {_listed([f'`{m}`' for m in on])} run with their defaults.",
        MODELS_EXAMPLE,
        default={}, default_text="{" + ", ".join(f"{m}: {{}}" for m in on) + "}",
    )  # fmt: skip


def assemble_keys(registry: Registry) -> tuple[ConfigKey, ...]:
    """The registry of keys: the top-level keys, then each step's keys in the steps' order
    (the ``models`` mapping before the first model).

    Raises ``ValueError`` when a key path is declared twice.
    """
    models = models_key(registry)
    keys: list[ConfigKey] = list(TOP_LEVEL_KEYS)
    for key in registry.keys:
        if key.path.startswith("models.") and models not in keys:
            keys.append(models)
        keys.append(key)
    if models not in keys:
        keys.append(models)
    paths = [k.path for k in keys]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        raise ValueError(f"config keys declared twice: {', '.join(twice)}")
    return tuple(keys)


CONFIG_KEYS: tuple[ConfigKey, ...] = assemble_keys(STEPS)
KEYS: Mapping[str, ConfigKey] = {k.path: k for k in CONFIG_KEYS}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(k.section for k in CONFIG_KEYS))


def section_keys(section: str, keys: Iterable[ConfigKey] = CONFIG_KEYS) -> tuple[str, ...]:
    """The keys allowed directly in ``section`` (``""`` = top level), in registry order."""
    return _keys_in(tuple(keys), section)


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _read_document(text: str, path: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    try:
        doc = load_yaml(text)
    except YamlProblem as exc:
        line = f" line {exc.line}" if exc.line else ""
        raise ConfigError(f"{path}{line}: {sentence(str(exc))}") from None
    lines: dict[tuple[Any, ...], int] = {}
    node = yaml.compose(text)
    if node is not None:
        compose_lines(node, (), lines)
    return doc, lines


def _resolve_schema(
    declared: str, path: str, schema: Schema | None, loc: Located
) -> tuple[Schema, str]:
    if not declared:
        return (schema if schema is not None else load_schema()), ""
    declared_path = Path(declared)
    if not declared_path.is_absolute() and path != "<config>":
        declared_path = Path(path).parent / declared_path
    if schema is not None:  # the caller's schema (e.g. the CLI's --schema) takes precedence
        return schema, str(declared_path)
    try:
        return load_schema(declared_path), str(declared_path)
    except SchemaError as exc:
        raise loc.error(("schema",), f"the config's schema cannot be used: {exc}") from None


def parse_analysis_config(
    text: str,
    *,
    path: str = "<config>",
    schema: Schema | None = None,
    registry: Registry | None = None,
) -> AnalysisConfig:
    """Parse and validate a config's YAML text (see :func:`load_analysis_config`).

    ``registry``: the steps whose sections the config may hold (default
    :data:`pooled.steps.registry.STEPS`); the config keeps it for the run.
    """
    registry = STEPS if registry is None else registry
    keys = {k.path: k for k in assemble_keys(registry)}
    doc, lines = _read_document(text, path)
    loc = Located(path, lines)
    if not isinstance(doc, dict):
        raise loc.error((), "expected a mapping with at least 'name', 'endpoints' and 'exposure'.")
    bootstrap = ParseContext(loc, schema or load_schema(), keys)
    bootstrap.section(doc, "", ())
    declared = bootstrap.value(doc, "schema", ())
    used_schema, schema_path = _resolve_schema(declared, path, schema, loc)
    ctx = ParseContext(loc, used_schema, keys)
    ctx.given |= bootstrap.given
    for required in ("name", "endpoints", "exposure"):
        if required not in doc:
            raise loc.error((), f"missing the required key '{required}'; for example: "
                            f"{keys[required].example}")

    data_raw = ctx.value(doc, "data", ())
    data = DataSpec(
        store=ctx.value(data_raw, "data.store", ("data",)),
        versions=ctx.value(data_raw, "data.versions", ("data",)),
        centres=ctx.value(data_raw, "data.centres", ("data",)),
    )
    columns = set(patient_columns(used_schema))

    endpoint_options = ctx.value(doc, "endpoints", ())
    if not endpoint_options:
        raise loc.error(("endpoints",), "name at least one endpoint.")
    endpoints = tuple(name for name, _ in endpoint_options)
    competing = _competing_events(ctx, endpoint_options)

    exposure = _exposure(ctx, ctx.value(doc, "exposure", ()), columns)
    covariates = _covariates(ctx, doc, exposure, columns)
    derived_names = {c.name for c in covariates if c.derived}
    known = columns | {exposure.name} | derived_names
    covariate_names = {c.name for c in covariates} | {exposure.name}

    strata = ctx.value(doc, "strata", ())
    for i, s in enumerate(strata):
        if s not in known:
            raise ctx.error(("strata", i), _unknown_column("stratum column", s, known, ctx))

    interactions = ctx.value(doc, "interactions", ())
    for i, pair in enumerate(interactions):
        for j, term in enumerate(pair):
            if term not in covariate_names:
                raise loc.error(
                    ("interactions", i, j),
                    f"interaction term {term!r} is neither the exposure nor a covariate"
                    f"{did_you_mean(term, covariate_names)}; add it to 'covariates' first.",
                )

    subgroups = ctx.value(doc, "subgroups", ())
    for i, s in enumerate(subgroups):
        if s not in known:
            raise ctx.error(("subgroups", i), _unknown_column("subgroup column", s, known, ctx))

    shared = AnalysisConfig(
        name=ctx.value(doc, "name", ()),
        description=ctx.value(doc, "description", ()),
        data=data,
        endpoints=endpoints,
        exposure=exposure,
        covariates=covariates,
        strata=strata,
        interactions=interactions,
        subgroups=subgroups,
        origin=ctx.value(doc, "origin", ()),
        seed=ctx.value(doc, "seed", ()),
        output=ctx.value(doc, "output", ()),
        path=path,
        text=text,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        schema_path=schema_path,
        schema=used_schema,
        lines=lines,
        registry=registry,
        competing=competing,
    )
    sections = _sections(ctx, doc, shared)
    return replace(shared, sections=sections, keys_given=frozenset(ctx.given))


def _sections(
    ctx: ParseContext, doc: Mapping[str, Any], shared: AnalysisConfig
) -> tuple[tuple[str, Any], ...]:
    """Each step's section, parsed by the step in registry order.

    A model's section is its switch under ``models`` (off: its options' defaults); when the
    config has no ``models`` key the models marked ``default_on`` run with their defaults.
    Each parser sees the config parsed so far (``reader.config``: the top-level keys and the
    earlier steps' sections).
    """
    registry = shared.registry
    if "models" in doc:
        models = ctx.value(doc, "models", ())
    else:
        models = {s.section.partition(".")[2]: None for s in registry if s.default_on}
    parsed: list[tuple[str, Any]] = []
    for step in registry:
        if not step.section or step.parse is None:
            continue
        if step.is_model:
            found = ctx.value(models, step.section, ("models",))
            enabled, options = found if isinstance(found, tuple) else (bool(found), {})
            raw = options if enabled else {}
            at: Keys = ("models", step.section.partition(".")[2])
        else:
            raw, enabled, at = ctx.value(doc, step.section, ()), True, (step.section,)
        reader = SectionReader(
            ctx, step.section, raw, at, enabled=enabled,
            config=replace(shared, sections=tuple(parsed)),
        )  # fmt: skip
        parsed.append((step.name, step.parse(reader)))
    if "models" not in doc:  # the default models were not written in the config
        ctx.given -= {k for k in ctx.given if k.startswith("models.")}
    return tuple(parsed)


def _competing_events(
    ctx: ParseContext, endpoint_options: tuple[tuple[str, dict[str, Any]], ...]
) -> tuple[tuple[str, str], ...]:
    """(endpoint, competing event) of the endpoints that declare one; ``other_death`` only
    for an endpoint that counts the deaths of one cause."""
    out = []
    definitions = {ep.name: ep for ep in ctx.schema.endpoints}
    for name, options in endpoint_options:
        keys: Keys = ("endpoints", name)
        event = ctx.value(options, "endpoints{}.competing", keys)
        if event is None:
            continue
        definition = definitions.get(name)
        if event == "other_death" and (definition is None or definition.death_cause is None):
            causes = [ep.name for ep in ctx.schema.endpoints if ep.death_cause is not None]
            raise ctx.error(
                keys + ("competing",),
                f"competing: other_death applies to an endpoint that counts the deaths of one "
                f"cause ({', '.join(causes) or 'none'} in {ctx.schema_name}); {name!r} counts "
                "every death or has no death cause. Remove 'competing' here.",
            )
        out.append((name, event))
    return tuple(out)


def _unknown_column(what: str, name: str, known: Collection[str], ctx: ParseContext) -> str:
    return (
        f"unknown {what} {name!r}: not a field of table 'patients' in {ctx.schema_name}, a "
        f"derived column, the exposure or a derived covariate{did_you_mean(name, known)}"
    )


def _exposure(ctx: ParseContext, raw: dict[str, Any], columns: set[str]) -> ExposureSpec:
    keys: Keys = ("exposure",)
    if not raw:
        raise ctx.error(keys, f"the exposure needs at least a 'name'; for example: "
                        f"{ctx.keys['exposure'].example}")
    name = ctx.value(raw, "exposure.name", keys)
    fields = ctx.schema.table("patients").fields
    if name in fields or name in DERIVED_COLUMNS:
        raise ctx.error(
            keys + ("name",),
            f"the exposure's name {name!r} is a field of table 'patients' in "
            f"{ctx.schema_name}; the exposure is a new column, e.g. '{name}_positive'.",
        )
    kind = ctx.value(raw, "exposure.kind", keys)

    def only_for(key: str, kinds: tuple[str, ...]) -> None:
        if key in raw and kind not in kinds:
            raise ctx.error(
                keys + (key,),
                f"'{key}' applies only to an exposure of kind {' or '.join(kinds)}; this "
                f"exposure is of kind {kind!r}. Remove '{key}'.",
            )

    only_for("marker", ("threshold",))
    only_for("per_7_5ml", ("threshold",))
    only_for("formula", ("phenotype_score",))
    only_for("expr", ("expression",))
    only_for("threshold", THRESHOLD_KINDS + SERIAL_KINDS + ("time_dependent",))
    marker = ctx.value(raw, "exposure.marker", keys)
    if kind == "threshold":
        _check_marker(ctx, marker, keys + ("marker",))
    per_7_5ml = ctx.value(raw, "exposure.per_7_5ml", keys)
    if per_7_5ml is None:
        per_7_5ml = marker in CTC_MARKERS
    elif per_7_5ml and marker not in CTC_MARKERS:
        raise ctx.error(
            keys + ("per_7_5ml",),
            f"'per_7_5ml' applies only to CTC counts ({', '.join(CTC_MARKERS)}); the marker is "
            f"{marker!r}. Remove 'per_7_5ml' or set it to false.",
        )
    formula = ctx.value(raw, "exposure.formula", keys) or ""
    expr = ctx.value(raw, "exposure.expr", keys) or ""
    if kind == "phenotype_score":
        if not formula:
            raise ctx.error(keys, "a phenotype_score exposure needs a 'formula'; for example: "
                            f"{ctx.keys['exposure.formula'].example}")
        compile_config_expression(formula, columns, ctx, keys + ("formula",), what="formula")
    if kind == "expression":
        if not expr:
            raise ctx.error(keys, "an expression exposure needs 'expr'; for example: "
                            f"{ctx.keys['exposure.expr'].example}")
        compile_config_expression(expr, columns, ctx, keys + ("expr",), what="exposure")
    return ExposureSpec(
        name=name,
        kind=kind,
        marker=marker,
        threshold=ctx.value(raw, "exposure.threshold", keys),
        per_7_5ml=per_7_5ml,
        formula=formula,
        expr=expr,
        follow_up_window=ctx.value(raw, "exposure.follow_up_window", keys),
        levels=ctx.value(raw, "exposure.levels", keys),
    )


def _check_marker(ctx: ParseContext, marker: str, keys: Keys) -> None:
    fields = ctx.schema.table("patients").fields
    numeric = schema_values(ctx.schema, "numeric_fields")
    if marker in numeric:
        return
    if marker in fields:
        raise ctx.error(
            keys,
            f"marker {marker!r} is a {fields[marker].type} field of table 'patients' in "
            f"{ctx.schema_name}; a threshold exposure needs a numeric (integer or number) "
            "field such as ctc_count, dtc_count or ctc_per_7_5ml. For a text or category "
            "field use kind: expression.",
        )
    raise ctx.error(
        keys,
        f"unknown marker {marker!r}: a threshold exposure needs a numeric (integer or number) "
        f"field of table 'patients' in {ctx.schema_name} or ctc_per_7_5ml"
        f"{did_you_mean(marker, numeric)}",
    )


def _covariates(
    ctx: ParseContext, doc: Mapping[str, Any], exposure: ExposureSpec, columns: set[str]
) -> tuple[CovariateSpec, ...]:
    fields = ctx.schema.table("patients").fields
    out: list[CovariateSpec] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(ctx.value(doc, "covariates", ())):
        keys: Keys = ("covariates", i)
        raw = ctx.section({"name": item} if isinstance(item, str) else item, "covariates[]", keys)
        name = ctx.value(raw, "covariates[].name", keys)
        expr = ctx.value(raw, "covariates[].expr", keys) or ""
        categorical = ctx.value(raw, "covariates[].categorical", keys)
        reference = ctx.value(raw, "covariates[].reference", keys)
        name_keys = keys + ("name",) if isinstance(item, dict) else keys
        if name in seen:
            raise ctx.error(
                name_keys, f"covariate {name!r} is listed twice (items {seen[name]} and {i})."
            )
        seen[name] = i
        spec = fields.get(name)
        if expr:
            if spec is not None or name in DERIVED_COLUMNS:
                raise ctx.error(
                    name_keys,
                    f"derived covariate {name!r} has the name of a field of table 'patients' in "
                    f"{ctx.schema_name}; give the new column another name (e.g. '{name}_group').",
                )
            if name == exposure.name:
                raise ctx.error(
                    name_keys, f"derived covariate {name!r} has the exposure's name; rename it."
                )
            earlier = {c.name for c in out if c.derived}
            compile_config_expression(
                expr, columns | earlier, ctx, keys + ("expr",), what=f"covariate {name!r}"
            )
        elif name not in columns and name != exposure.name:
            raise ctx.error(
                name_keys,
                f"unknown covariate {name!r}: not a field of table 'patients' in "
                f"{ctx.schema_name}, a derived column or the exposure (to compute a new "
                f"covariate, give it an 'expr'){did_you_mean(name, columns | {exposure.name})}",
            )
        if reference is not None:
            if categorical is False:
                raise ctx.error(
                    keys + ("reference",),
                    f"covariate {name!r} has a 'reference' but 'categorical: false'; remove one "
                    "of them.",
                )
            categorical = True
        if categorical is None:
            categorical = spec is not None and spec.type in ("category", "string") and not expr
        if categorical and reference is None and spec is not None and spec.codes and not expr:
            reference = spec.codes[0]
        if categorical and reference is not None and spec is not None and spec.codes and not expr:
            one_of(
                reference, spec.codes, ctx, keys + ("reference",),
                f" (the codes of {name!r} in {ctx.schema_name})",
            )  # fmt: skip
        out.append(
            CovariateSpec(name=name, categorical=categorical, reference=reference, expr=expr)
        )
    return tuple(out)


def load_analysis_config(path: str | Path, *, schema: Schema | None = None) -> AnalysisConfig:
    """Load and validate an analysis config.

    Parameters
    ----------
    path : str or Path
        The YAML file (``configs/analyses/<name>.yaml``), read as UTF-8; a key written twice
        is refused.
    schema : Schema, optional
        The schema to check the config against. Default: the schema the config names with
        its ``schema:`` key (relative to the config file), else ``configs/schema.yaml``. A
        schema given here takes precedence over the config's key (``cfg.schema_path`` still
        records the key).

    Returns
    -------
    AnalysisConfig
        Frozen; nothing downstream sees the raw YAML.

    Raises
    ------
    ConfigError
        Naming the file and line: ``"paddy.yaml line 12: 'method' must be one of FE, DL,
        REML, PM, ML, HE, SJ; got 'reml2'."``; unknown fields name the schema used.

    Examples
    --------
    >>> cfg = load_analysis_config("configs/analyses/paddy.yaml")
    >>> cfg.exposure.name
    'dtc_positive'
    """
    path = Path(path)
    try:
        text = read_yaml_text(path)
    except OSError as exc:
        raise ConfigError(f"cannot read the analysis config {path}: {exc.strerror}.") from None
    except YamlProblem as exc:
        raise ConfigError(f"{path}: {sentence(str(exc))}") from None
    return parse_analysis_config(text, path=str(path), schema=schema)


def check_against_data(cfg: AnalysisConfig, patients: pd.DataFrame) -> None:
    """Checks that need the data: covariates present, subgroups with patients, reference levels.

    Raises :class:`ConfigError` naming the config line before any model runs.
    """
    loc = Located(cfg.path or "<config>", cfg.lines)
    if len(patients) == 0:
        raise loc.error(("cohort",), "the cohort has no patients after the inclusion rules.")
    for i, cov in enumerate(cfg.covariates):
        if cov.name not in patients.columns:
            raise loc.error(
                ("covariates", i), f"covariate {cov.name!r} is not in the analysis dataset."
            )
        values = patients[cov.name]
        if values.notna().sum() == 0:
            raise loc.error(
                ("covariates", i), f"covariate {cov.name!r} is missing for every patient."
            )
        if cov.categorical and cov.reference is not None:
            present = set(values.dropna().astype(str))
            if cov.reference not in present:
                raise loc.error(
                    ("covariates", i, "reference")
                    if (("covariates", i, "reference") in cfg.lines)
                    else ("covariates", i),
                    f"reference level {cov.reference!r} of {cov.name!r} has no patients; levels "
                    f"present: {', '.join(sorted(present))}.",
                )
    for i, sub in enumerate(cfg.subgroups):
        if sub not in patients.columns:
            raise loc.error(
                ("subgroups", i), f"subgroup column {sub!r} is not in the analysis dataset."
            )
        counts = patients[sub].value_counts()
        if len(counts) == 0:
            raise loc.error(
                ("subgroups", i), f"subgroup {sub!r} has no patients (missing everywhere)."
            )
        if cfg.exposure.name in patients.columns:
            crossed = patients.groupby(sub, observed=True)[cfg.exposure.name].nunique()
            empty = [str(level) for level, n in crossed.items() if n < 2]
            if empty:
                raise loc.error(
                    ("subgroups", i),
                    f"subgroup level(s) {', '.join(empty)} of {sub!r} have patients in only one "
                    f"exposure group, so no hazard ratio can be estimated there.",
                )
    for endpoint in cfg.endpoints:
        column = f"{endpoint}_months"
        if column not in patients.columns or patients[column].notna().sum() == 0:
            index = cfg.endpoints.index(endpoint)
            raise loc.error(
                ("endpoints", index), f"endpoint {endpoint!r} has no follow-up data in the cohort."
            )


# ---------------------------------------------------------------------------------------------
# The generated reference (docs/config_reference.md)
# ---------------------------------------------------------------------------------------------


def _default_text(key: ConfigKey) -> str:
    if key.required:
        return "required"
    if key.default_text:
        return key.default_text
    return f"`{yaml_value(key.default)}`"


def _allowed_text(key: ConfigKey, schema: Schema) -> str:
    if key.allowed_from:
        values = schema_values(schema, key.allowed_from)
        what = {
            "settings": "the codes of the field `setting`",
            "endpoints": "the endpoints",
            "numeric_fields": "",
        }[key.allowed_from]
        if not what:  # too long and too changeable to list: the type says it
            return ""
        return f"{what} of the schema (in configs/schema.yaml: {', '.join(values)})"
    return ", ".join(f"`{v}`" for v in key.allowed)


def _function_doc(name: str, function: Any) -> tuple[str, str]:
    """(signature, description) of an expression function, whatever object describes it."""
    import inspect

    if isinstance(function, str):
        return name, function
    if (
        isinstance(function, tuple)
        and len(function) == 2
        and all(isinstance(part, str) for part in function)
    ):
        return function[0], " ".join(function[1].split())
    signature = getattr(function, "signature", None)
    if not isinstance(signature, str):
        try:
            signature = name + str(inspect.signature(function))
        except (TypeError, ValueError):
            signature = name
    for attribute in ("description", "doc", "help", "summary"):
        text = getattr(function, attribute, None)
        if isinstance(text, str) and text.strip():
            return signature, " ".join(text.split())
    doc = inspect.getdoc(function) or ""
    return signature, " ".join(doc.split("\n\n")[0].split())


def config_reference(schema: Schema | None = None, *, registry: Registry | None = None) -> str:
    """The Markdown reference of the config language, generated from the key registry.

    The registry is :data:`CONFIG_KEYS` (the top-level keys and the sections of
    :data:`pooled.steps.registry.STEPS`), or that of ``registry``. ``docs/config_reference.md``
    holds this text; ``python -m pooled.config`` rewrites it.
    """
    from harmonization.expressions import FUNCTIONS

    schema = schema or load_schema()
    registry = STEPS if registry is None else registry
    all_keys = assemble_keys(registry)
    titles = {**TITLES, **{s.section: s.title for s in registry if s.title}}
    out = [
        "# Analysis config reference",
        "",
        "<!-- Generated from the key registry assembled in pooled/config.py (CONFIG_KEYS). Do "
        "not edit by hand: run `python -m pooled.config` to regenerate this file. -->",
        "",
        "This file is **generated** from the key registry `CONFIG_KEYS`, assembled in "
        "`pooled/config.py` from the top-level keys declared there and the keys each analysis "
        "step declares for its section (`pooled/steps/`), the same registry the parser takes "
        "its keys, defaults, allowed values and type checks from. Regenerate it with `python "
        "-m pooled.config` (or `python -m pooled.config --check` to see whether it is "
        "current); a test fails when it is out of date.",
        "",
        "An analysis config is a YAML file (`configs/analyses/<name>.yaml`, UTF-8, no key "
        "written twice) parsed once by `pooled.config.load_analysis_config`. A misspelt key, a "
        "value of the wrong type or outside its allowed values, an unknown field (checked "
        "against the schema, which the message names) or an expression that does not compile "
        "stops the run before any model, with the file and line, what was expected and what "
        "was found. Paths below use `.` for nesting and `[]` for the items of a list.",
        "",
    ]
    for section in dict.fromkeys(_section_of(k) for k in all_keys):
        keys = [k for k in all_keys if _section_of(k) == section]
        title = titles.get(section, f"`{section}`")
        out += [f"## {title}", ""]
        for key in keys:
            out += [f"### `{key.path}`", ""]
            out.append(f"- type: {VALUE_TYPES[key.type].description}")
            out.append(f"- default: {_default_text(key)}")
            allowed = _allowed_text(key, schema)
            if allowed:
                out.append(f"- allowed: {allowed}")
            out += ["- example:", "", "  ```yaml", f"  {key.example}", "  ```", ""]
            out += [key.meaning, ""]
    out += [
        "## Expressions",
        "",
        "Cohort rules (`cohort.include`, `cohort.exclude`), the `expression` exposure "
        "(`exposure.expr`), the phenotype score (`exposure.formula`) and derived covariates "
        "(`covariates[].expr`) are expressions on the patients' fields: the fields of table "
        "`patients` of the schema, the derived column `ctc_per_7_5ml` and, for a derived "
        "covariate, the derived covariates listed before it. They are compiled when the "
        "config is read (syntax, allowed constructs, names, with a did-you-mean) and "
        "evaluated by a safe evaluator (`harmonization.expressions`), never by Python's or "
        "pandas' `eval`.",
        "",
        "- Values: numbers, text in quotes (`subtype == 'luminal_a'`), `True`, `False`; "
        "column names as written, or in backticks when they hold other characters.",
        "- Arithmetic `+ - * / // % **` (numbers; `date - date` is days); comparisons `== != "
        "< <= > >=`, chained (`0 < x <= 10`), `x in (1, 2)` / `x not in ['a', 'b']` with a "
        "literal list; text compares only with `==`, `!=`, `in`, `not in`.",
        "- Logic `and`, `or`, `not`, and `a if cond else b`; a number is true unless 0.",
        "- Missing values propagate: arithmetic, comparisons and functions with a missing "
        "operand are missing (except `isna`, `notna`, `coalesce`), and `and`/`or` follow "
        "three-valued (Kleene) logic (`False and missing` is false, `True or missing` is "
        "true). Compare with missing through `isna(x)`, not `x == None`.",
        "- Where a missing result goes: a cohort `include` rule that is missing excludes the "
        "patient; an `exclude` rule that is missing keeps the patient; a missing exposure "
        "leaves the cohort ('marker missing'); a missing derived covariate leaves the models "
        "that use it (complete cases, counted in `model_flow.csv`).",
        "- A logical result used as an exposure or covariate becomes 1 (true) / 0 (false).",
        "",
        "Functions:",
        "",
        "| function | meaning |",
        "|---|---|",
    ]
    for name in FUNCTIONS:
        signature, description = _function_doc(name, FUNCTIONS[name])
        out.append(f"| `{signature}` | {description.replace('|', '/')} |")
    out.append("")
    return "\n".join(out)


def _section_of(key: ConfigKey) -> str:
    """The reference section a key is listed under."""
    if key.path in ("strata", "interactions", "subgroups", "covariates"):
        return "covariates[]"
    if key.section == "endpoints{}":
        return ""
    if key.section.startswith("models") or key.path == "models":
        return "models"
    if key.section == "" and key.type == "section":
        return key.path
    return key.section


def main(argv: list[str] | None = None) -> int:
    """``python -m pooled.config [--check] [PATH]``: write (or check) the config reference."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    target = Path(args[0]) if args else REFERENCE_PATH
    text = config_reference()
    if check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            print(f"{target} is out of date; run `python -m pooled.config`.", file=sys.stderr)
            return 1
        print(f"{target} is current.")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

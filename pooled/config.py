"""Analysis configs: YAML parsed once into a frozen, validated :class:`AnalysisConfig`.

Every key a config may hold is declared once, in :data:`CONFIG_KEYS` (path, type, default,
allowed values, an example and its meaning). The parser takes the keys it accepts, their
defaults, allowed values and type checks from that registry, and
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
import re
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from harmonization.errors import ExpressionError, SchemaError
from harmonization.schema import Schema, did_you_mean, load_schema
from harmonization.yamlio import YamlProblem, load_yaml, read_yaml_text
from pooled.errors import ConfigError

ExposureKind = Literal[
    "threshold",  # a numeric field >= threshold (CTC per 7.5 ml, DTC, a receptor in fmol/l)
    "expression",  # a logical expression on patient fields (expr)
    "her2_ctc",  # at least `threshold` HER2-positive CTC (DETECT)
    "phenotype_score",  # formula on CTC counts, >= threshold (DETECT endocrine responsiveness)
    "change_category",  # baseline -> follow-up CTC+/- (b2CTC)
    "trajectory_group",  # latent CTC trajectory group (tCTC)
    "risk_concordance",  # clinical risk vs CTC risk (STIC CTC)
]
EXPOSURE_KINDS: tuple[str, ...] = (
    "threshold", "expression", "her2_ctc", "phenotype_score", "change_category",
    "trajectory_group", "risk_concordance",
)  # fmt: skip
SERIAL_KINDS = ("change_category", "trajectory_group")
THRESHOLD_KINDS = ("threshold", "her2_ctc", "phenotype_score", "risk_concordance")
MetaMethod = Literal["FE", "DL", "REML", "PM", "ML", "HE", "SJ"]
META_METHODS: tuple[str, ...] = ("FE", "DL", "REML", "PM", "ML", "HE", "SJ")
Ties = Literal["efron", "breslow"]
TIES: tuple[str, ...] = ("efron", "breslow")
Origin = Literal["diagnosis", "surgery", "sample"]
ORIGINS: tuple[str, ...] = ("diagnosis", "surgery", "sample")
MODEL_NAMES: tuple[str, ...] = ("km", "cox", "two_stage", "bayes", "trajectory")
CTC_MARKERS = ("ctc_count", "ctc_per_7_5ml")
# Columns the analysis dataset has beyond the schema's patient fields (harmonization.derive),
# with their type; usable as markers, covariates, strata, subgroups and in expressions.
DERIVED_COLUMNS: Mapping[str, str] = {"ctc_per_7_5ml": "number"}
NUMERIC_TYPES = ("integer", "number")
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
class CohortSpec:
    """Inclusion and exclusion rules (expressions on the analysis dataset's patient fields).

    A patient whose ``include`` rule is missing (e.g. ``age >= 18`` with age unknown) is
    excluded; one whose ``exclude`` rule is missing is kept.
    """

    setting: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExposureSpec:
    """The marker exposure of the analysis, derived into a column named ``name``."""

    name: str
    kind: ExposureKind = "threshold"
    marker: str = "ctc_count"
    threshold: float = 1.0
    per_7_5ml: bool = True
    formula: str = ""  # phenotype_score: an expression on patient columns
    expr: str = ""  # expression: a logical (or 0/1) expression on patient columns
    follow_up_window: tuple[float, float] = (22.0, 36.0)  # change_category: days
    levels: tuple[str, ...] = ()  # categorical exposures: level order, first = reference


@dataclass(frozen=True, slots=True)
class CovariateSpec:
    """A covariate: a column of the analysis dataset, or derived from an expression."""

    name: str
    categorical: bool = False
    reference: str | None = None
    expr: str = ""  # derived covariate: computed on the cohort before the models

    @property
    def derived(self) -> bool:
        return bool(self.expr)


@dataclass(frozen=True, slots=True)
class ModelsSpec:
    """Which models to run and their options (raw numbers, validated).

    ``cox_ties`` and ``meta_methods`` hold the primary analysis first; further values are
    sensitivity analyses.
    """

    km: bool = True
    km_times: tuple[float, ...] = (12.0, 24.0, 36.0, 60.0)
    cox: bool = True
    cox_ties: tuple[Ties, ...] = ("efron",)
    robust: bool = False
    two_stage: bool = True
    meta_methods: tuple[MetaMethod, ...] = ("REML",)
    knha: bool = False
    two_stage_ties: Ties = "efron"
    bayes: bool = False
    bayes_endpoints: tuple[str, ...] = ()
    bayes_draws: int = 1000
    bayes_tune: int = 1000
    bayes_chains: int = 4
    bayes_intervals: int = 10
    bayes_prior: str = "weakly_informative"
    bayes_thresholds: tuple[float, ...] = (1.0,)
    bayes_interaction: bool = True
    trajectory: bool = False
    trajectory_groups: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    trajectory_starts: int = 20
    trajectory_family: Literal["poisson", "negbin", "zip"] = "poisson"

    @property
    def ties(self) -> Ties:
        """Ties of the primary one-stage Cox models."""
        return self.cox_ties[0]

    @property
    def meta_method(self) -> MetaMethod:
        """tau^2 estimator of the primary two-stage analysis."""
        return self.meta_methods[0]


@dataclass(frozen=True, slots=True)
class SensitivitySpec:
    leave_one_centre_out: bool = False
    thresholds: tuple[float, ...] = ()
    missing: tuple[Literal["complete_case", "mice"], ...] = ()


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """A validated analysis config; build with :func:`load_analysis_config`.

    ``schema_path`` is the schema the config names with its ``schema:`` key (resolved
    against the config's folder; ``""`` when it names none); ``schema`` is the schema the
    config was checked against.
    """

    name: str
    data: DataSpec
    cohort: CohortSpec
    endpoints: tuple[str, ...]
    exposure: ExposureSpec
    covariates: tuple[CovariateSpec, ...]
    strata: tuple[str, ...] = ("centre",)
    interactions: tuple[tuple[str, str], ...] = ()
    subgroups: tuple[str, ...] = ()
    models: ModelsSpec = field(default_factory=ModelsSpec)
    sensitivity: SensitivitySpec = field(default_factory=SensitivitySpec)
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

    @property
    def categorical(self) -> tuple[tuple[str, str], ...]:
        """(column, reference) pairs of the categorical covariates."""
        return tuple((c.name, c.reference or "") for c in self.covariates if c.categorical)

    @property
    def derived_covariates(self) -> tuple[CovariateSpec, ...]:
        """The covariates computed from an expression, in config order."""
        return tuple(c for c in self.covariates if c.derived)

    def where(self, *keys: Any) -> str:
        return _Located(self.path or "<config>", self.lines).where(*keys)


# ---------------------------------------------------------------------------------------------
# The key registry
# ---------------------------------------------------------------------------------------------


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

SchemaSet = Literal["", "settings", "endpoints", "numeric_fields"]


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One key of the analysis-config language.

    Attributes
    ----------
    path : dotted path; ``[]`` marks the items of a list (``covariates[].expr``).
    type : a name of :data:`VALUE_TYPES` (checked by the parser, shown in the reference).
    meaning : one paragraph for the reference.
    example : a YAML fragment of a config using the key (parsed by the tests).
    default : the value when the key is absent (:data:`REQUIRED` when it must be given;
        ``None`` when the default depends on other keys, described by ``default_text``).
    allowed : allowed values of a choice.
    allowed_from : allowed values taken from the schema (``settings``, ``endpoints``,
        ``numeric_fields``).
    default_text : the default in words, when it depends on other keys.
    """

    path: str
    type: str
    meaning: str
    example: str
    default: Any = None
    allowed: tuple[str, ...] = ()
    allowed_from: SchemaSet = ""
    default_text: str = ""

    @property
    def section(self) -> str:
        return self.path.rpartition(".")[0]

    @property
    def leaf(self) -> str:
        return self.path.rpartition(".")[2]

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


_EXPOSURE_EXAMPLE = "exposure: {name: ctc_positive, marker: ctc_count, threshold: 1}"

CONFIG_KEYS: tuple[ConfigKey, ...] = (
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
        "endpoints", "list of choices",
        "Survival endpoints analysed, each as `<endpoint>_months` and `<endpoint>_event`. The "
        "first is the primary endpoint: patients without it leave the cohort (exclusion flow, "
        "'endpoint missing') and the sensitivity analyses use it. Patients missing a further "
        "endpoint stay in the cohort and are left out of that endpoint's models only; the "
        "model flow (`model_flow.csv`) counts them.",
        "endpoints: [os, dfs]", default=REQUIRED, allowed_from="endpoints",
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
    # -- cohort -------------------------------------------------------------------------------
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
        "(baseline -> follow-up change, latent trajectory group).",
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
    # -- models -------------------------------------------------------------------------------
    ConfigKey(
        "models", "section",
        "Which models run, each with its options. A model runs when its key is present "
        "(`cox:` or `cox: {ties: breslow}`) and not `false`. When the whole `models` key is "
        "absent, `km`, `cox` and `two_stage` run with their defaults.",
        "models: {km: {times: [12, 36, 60]}, cox: {ties: efron}, two_stage: {method: REML}}",
        default={}, default_text="{km: {}, cox: {}, two_stage: {}}",
    ),
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
    ConfigKey(
        "models.trajectory", "model switch",
        "Latent trajectory groups of the serial CTC counts (selected by BIC); needed by "
        "serial exposures and run for them anyway.",
        "models: {trajectory: {groups: [1, 2, 3, 4], starts: 10}}", default=False,
    ),
    ConfigKey(
        "models.trajectory.groups", "list of integers >= 1",
        "Numbers of groups compared by BIC.",
        "models: {trajectory: {groups: [1, 2, 3, 4, 5, 6]}}", default=(1, 2, 3, 4, 5, 6),
    ),
    ConfigKey(
        "models.trajectory.starts", "integer >= 1",
        "Random starts of the EM algorithm per number of groups.",
        "models: {trajectory: {starts: 20}}", default=20,
    ),
    ConfigKey(
        "models.trajectory.family", "choice", "Count distribution within a group.",
        "models: {trajectory: {family: negbin}}", default="poisson",
        allowed=("poisson", "negbin", "zip"),
    ),
    # -- sensitivity --------------------------------------------------------------------------
    ConfigKey(
        "sensitivity", "section",
        "Sensitivity analyses of the primary endpoint's adjusted Cox model: one row each in "
        "the sensitivity table (an analysis the data cannot support is a row with a note).",
        "sensitivity: {leave_one_centre_out: true, thresholds: [2, 3], missing: [mice]}",
        default={},
    ),
    ConfigKey(
        "sensitivity.leave_one_centre_out", "boolean",
        "Refit without each centre in turn.",
        "sensitivity: {leave_one_centre_out: true}", default=False,
    ),
    ConfigKey(
        "sensitivity.thresholds", "list of numbers",
        "Other cut-offs of the exposure (kinds threshold, her2_ctc, phenotype_score, "
        "risk_concordance).",
        "sensitivity: {thresholds: [2, 3]}", default=(),
    ),
    ConfigKey(
        "sensitivity.missing", "list of choices",
        "Missing-covariate handling: complete cases (the primary analysis) or multiple "
        "imputation by chained equations.",
        "sensitivity: {missing: [mice]}", default=(), allowed=("complete_case", "mice"),
    ),
)  # fmt: skip

KEYS: Mapping[str, ConfigKey] = {k.path: k for k in CONFIG_KEYS}
SECTIONS: tuple[str, ...] = ("", "data", "cohort", "exposure", "covariates[]", "models") + tuple(
    f"models.{m}" for m in MODEL_NAMES
) + ("sensitivity",)
SECTION_TITLES: Mapping[str, str] = {
    "": "General",
    "data": "Data (`data`)",
    "cohort": "Cohort (`cohort`)",
    "exposure": "Exposure (`exposure`)",
    "covariates[]": "Covariates (`covariates`, `strata`, `interactions`, `subgroups`)",
    "models": "Models (`models`)",
    "sensitivity": "Sensitivity analyses (`sensitivity`)",
}


def section_keys(section: str) -> tuple[str, ...]:
    """The keys allowed directly in ``section`` (``""`` = top level), in registry order."""
    return tuple(k.leaf for k in CONFIG_KEYS if k.section == section)


# ---------------------------------------------------------------------------------------------
# Locations and checks
# ---------------------------------------------------------------------------------------------

Keys = tuple[Any, ...]


class _Located:
    """Line numbers of the YAML nodes by key path, for error messages."""

    def __init__(self, path: str, lines: dict[tuple[Any, ...], int]) -> None:
        self.path = path
        self.lines = lines

    def where(self, *keys: Any) -> str:
        for depth in range(len(keys), -1, -1):
            line = self.lines.get(tuple(keys[:depth]))
            if line is not None:
                return f"{self.path} line {line}"
        return self.path

    def error(self, keys: Keys, message: str) -> ConfigError:
        return ConfigError(f"{self.where(*keys)}: {message}")


def _compose_lines(
    node: yaml.Node, prefix: tuple[Any, ...], out: dict[tuple[Any, ...], int]
) -> None:
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[prefix + (key,)] = key_node.start_mark.line + 1
            _compose_lines(value_node, prefix + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _compose_lines(item, prefix + (index,), out)


def shown_path(path: str | Path) -> str:
    """A path as messages show it: relative to the working directory when below it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(p)


class _Context:
    """What the parser needs while reading one config: lines, schema, keys seen."""

    def __init__(self, loc: _Located, schema: Schema) -> None:
        self.loc = loc
        self.schema = schema
        self.given: set[str] = set()

    @property
    def schema_name(self) -> str:
        return shown_path(self.schema.path) if self.schema.path else "the schema"

    def error(self, keys: Keys, message: str) -> ConfigError:
        return self.loc.error(keys, _sentence(message))

    def allowed(self, key: ConfigKey) -> tuple[str, ...]:
        if key.allowed_from:
            return schema_values(self.schema, key.allowed_from)
        return key.allowed

    def section(self, raw: Any, section: str, keys: Keys) -> dict[str, Any]:
        """``raw`` as a mapping whose keys are all registered under ``section``."""
        if raw is None:
            return {}
        label = section.rpartition(".")[2] or "the config"
        if not isinstance(raw, dict):
            raise self.error(keys, f"'{label}' must be a mapping of options; got {raw!r}.")
        allowed = section_keys(section)
        for key in raw:
            if key not in allowed:
                raise self.error(
                    keys + (key,),
                    f"unknown key '{key}'{did_you_mean(str(key), allowed)}; allowed keys here: "
                    f"{', '.join(allowed)}.",
                )
        return raw

    def value(self, raw: Mapping[str, Any], path: str, keys: Keys) -> Any:
        """The value of registered key ``path`` in the mapping ``raw`` (at ``keys``), checked
        and converted by the key's type; its default when absent."""
        key = KEYS[path]  # a KeyError here is a bug: the parser reads an unregistered key
        if key.leaf not in raw:
            if key.required:
                raise self.error(
                    keys,
                    f"missing the required key '{key.leaf}'"
                    + (f" in '{key.section}'" if key.section else "")
                    + f"; for example: {key.example}",
                )
            return key.default
        self.given.add(path)
        return VALUE_TYPES[key.type].check(raw[key.leaf], key, self, keys + (key.leaf,))


def schema_values(schema: Schema, which: str) -> tuple[str, ...]:
    """Allowed values a key takes from the schema."""
    patients = schema.table("patients")
    if which == "settings":
        return patients.field("setting").codes if "setting" in patients.fields else ()
    if which == "endpoints":
        return schema.endpoint_names
    if which == "numeric_fields":
        numeric = [n for n, f in patients.fields.items() if f.type in NUMERIC_TYPES]
        return tuple(numeric) + tuple(n for n, t in DERIVED_COLUMNS.items() if t in NUMERIC_TYPES)
    raise ValueError(which)


# ---------------------------------------------------------------------------------------------
# Value types
# ---------------------------------------------------------------------------------------------

Check = Callable[[Any, ConfigKey, _Context, Keys], Any]


@dataclass(frozen=True, slots=True)
class ValueType:
    """A type of config value: what the reference calls it and how the parser checks it."""

    description: str
    check: Check


def _label(keys: Keys) -> str:
    last = [k for k in keys if isinstance(k, str)]
    return last[-1] if last else "value"


def _text(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ctx.error(keys, f"'{_label(keys)}' must be a text; got {value!r}.")
    return str(value)


def _nonempty_text(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(keys, f"'{_label(keys)}' must be a non-empty text; got {value!r}.")
    return value.strip()


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _identifier(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ctx.error(
            keys,
            f"'{_label(keys)}' must be a column name (letters, digits and underscores, not "
            f"starting with a digit); got {value!r}.",
        )
    return value


def _expression_text(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(
            keys, f"'{_label(keys)}' must be an expression in quotes, e.g. 'age >= 18'; got "
            f"{value!r}.",
        )
    return value.strip()


def _boolean(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(keys, f"'{_label(keys)}' must be true or false; got {value!r}.")
    return value


def _number(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ctx.error(keys, f"'{_label(keys)}' must be a number; got {value!r}.")
    return float(value)


def _whole(minimum: int) -> Check:
    def check(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ctx.error(
                keys, f"'{_label(keys)}' must be a whole number >= {minimum}; got {value!r}."
            )
        return value

    return check


def _choice(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> str:
    source = (
        f" (the {key.allowed_from.replace('_', ' ')} of {ctx.schema_name})"
        if key.allowed_from
        else ""
    )
    return _one_of(value, ctx.allowed(key), ctx, keys, source)


def _one_of(value: Any, allowed: Collection[str], ctx: _Context, keys: Keys, source: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ctx.error(
            keys,
            f"'{_label(keys)}' must be one of {', '.join(allowed)}{source}; got {value!r}"
            f"{_suggest(str(value), allowed)}",
        )
    return value


def _suggest(value: str, allowed: Collection[str]) -> str:
    """A did-you-mean that also catches a value written in the wrong case (``reml``)."""
    same = [a for a in allowed if a.lower() == value.lower()]
    return f"; did you mean '{same[0]}'?" if same else did_you_mean(value, allowed)


def _items(value: Any, ctx: _Context, keys: Keys, what: str) -> list[Any]:
    """A list value; a single scalar counts as a list of one."""
    if value is None:
        return []
    if isinstance(value, str | int | float):
        return [value]
    if not isinstance(value, list):
        raise ctx.error(keys, f"'{_label(keys)}' must be a list of {what}; got {value!r}.")
    return value


def _list_of(item: Check, what: str) -> Check:
    def check(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> tuple[Any, ...]:
        values = _items(value, ctx, keys, what)
        out = tuple(item(v, key, ctx, keys + (i,)) for i, v in enumerate(values))
        return out

    return check


def _choices(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> tuple[str, ...]:
    values = _items(value, ctx, keys, "choices")
    if not values:
        raise ctx.error(keys, f"'{_label(keys)}' needs at least one of {', '.join(key.allowed)}.")
    out = tuple(_choice(v, key, ctx, keys + (i,)) for i, v in enumerate(values))
    if len(set(out)) != len(out):
        raise ctx.error(keys, f"'{_label(keys)}' names a value twice: {list(out)}.")
    return out


def _versions(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> tuple[tuple[str, int], ...]:
    if value == "latest" or value is None:
        return ()
    if isinstance(value, dict):
        return tuple((str(c), _whole(1)(v, key, ctx, keys + (c,))) for c, v in value.items())
    raise ctx.error(
        keys, f"'versions' must be 'latest' or a mapping centre: version; got {value!r}."
    )


def _centres(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> tuple[str, ...]:
    if value in ("all", None):
        return ()
    return tuple(str(c) for c in _items(value, ctx, keys, "centre codes"))


def _window(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ctx.error(keys, f"expected [first_day, last_day]; got {value!r}.")
    first, last = (_number(v, key, ctx, keys) for v in value)
    if first > last:
        raise ctx.error(keys, f"expected first_day <= last_day; got [{first:g}, {last:g}].")
    return first, last


def _pairs(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ctx.error(keys, f"'interactions' must be a list of pairs [a, b]; got {value!r}.")
    out = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            raise ctx.error(keys + (i,), f"an interaction is a pair [a, b]; got {pair!r}.")
        out.append((str(pair[0]), str(pair[1])))
    return tuple(out)


def _covariate_items(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> tuple[Any, ...]:
    items = _items(value, ctx, keys, "covariates")
    for i, item in enumerate(items):
        if not isinstance(item, str | dict):
            raise ctx.error(
                keys + (i,),
                "a covariate is a column name or a mapping such as {name: grade3, expr: "
                f"'grade == 3'}}; got {item!r}.",
            )
    return tuple(items)


def _section(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> dict[str, Any]:
    return ctx.section(value, key.path, keys)


def _switch(value: Any, key: ConfigKey, ctx: _Context, keys: Keys) -> tuple[bool, dict[str, Any]]:
    if value is False:
        return False, {}
    if value is None or value is True:
        return True, {}
    return True, ctx.section(value, key.path, keys)


VALUE_TYPES: Mapping[str, ValueType] = {
    "text": ValueType("text", _text),
    "non-empty text": ValueType("non-empty text", _nonempty_text),
    "path": ValueType("path (text), relative to the config file", _text),
    "identifier": ValueType(
        "column name (letters, digits, underscores; not starting with a digit)", _identifier
    ),
    "boolean": ValueType("true or false", _boolean),
    "number": ValueType("number", _number),
    "integer >= 0": ValueType("whole number >= 0", _whole(0)),
    "integer >= 1": ValueType("whole number >= 1", _whole(1)),
    "choice": ValueType("one of the allowed values", _choice),
    "choice or list of choices": ValueType(
        "one allowed value, or a list of them (the first is the primary analysis)", _choices
    ),
    "list of choices": ValueType("list of allowed values", _list_of(_choice, "choices")),
    "list of numbers": ValueType("list of numbers", _list_of(_number, "numbers")),
    "list of integers >= 1": ValueType(
        "list of whole numbers >= 1", _list_of(_whole(1), "whole numbers")
    ),
    "list of text": ValueType("list of texts", _list_of(_text, "texts")),
    "list of columns": ValueType(
        "list of column names (schema fields, derived columns, derived covariates)",
        _list_of(_text, "column names"),
    ),
    "expression": ValueType("expression (text; see Expressions)", _expression_text),
    "list of expressions": ValueType(
        "list of expressions (see Expressions)", _list_of(_expression_text, "expressions")
    ),
    "numeric field": ValueType(
        "name of an integer or number field of the patients table, or a derived numeric "
        "column",
        _identifier,
    ),
    "section": ValueType("mapping of the keys below", _section),
    "model switch": ValueType("true, false, or a mapping of the model's options", _switch),
    "versions": ValueType("`latest`, or a mapping centre: version (whole number >= 1)", _versions),
    "centres": ValueType("`all`, or a list of centre codes", _centres),
    "day window": ValueType("[first_day, last_day] (numbers)", _window),
    "list of pairs": ValueType("list of pairs [a, b] of column names", _pairs),
    "list of covariates": ValueType(
        "list; each a column name or a mapping with the keys below", _covariate_items
    ),
}


# ---------------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------------


def _compile_expression(
    text: str,
    allowed: Collection[str],
    ctx: _Context,
    keys: Keys,
    *,
    what: str,
) -> Any:
    """Compile an expression of the config, checking its names against ``allowed``.

    Raises :class:`ConfigError` naming the file and line (and the schema, for an unknown
    name).
    """
    from harmonization.expressions import FUNCTIONS, compile_expression

    where = ctx.loc.where(*keys)
    try:
        expression = compile_expression(text, allowed_names=None, where=where)
    except ExpressionError as exc:
        raise ConfigError(_at(where, str(exc))) from None
    unknown = sorted(set(expression.names) - set(allowed) - set(FUNCTIONS))
    if unknown:
        name = unknown[0]
        raise ConfigError(
            f"{where}: {what} ({text!r}) uses {name!r}, which is not a field of table "
            f"'patients' in {ctx.schema_name}, a derived column or an earlier derived covariate"
            + _sentence(did_you_mean(name, allowed) or ".")
        )
    return expression


def _at(where: str, message: str) -> str:
    message = message.rstrip()
    if not message.endswith((".", "?", "!")):
        message += "."
    return message if message.startswith(where) else f"{where}: {message}"


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _read_document(text: str, path: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    try:
        doc = load_yaml(text)
    except YamlProblem as exc:
        line = f" line {exc.line}" if exc.line else ""
        raise ConfigError(f"{path}{line}: {_sentence(str(exc))}") from None
    lines: dict[tuple[Any, ...], int] = {}
    node = yaml.compose(text)
    if node is not None:
        _compose_lines(node, (), lines)
    return doc, lines


def _sentence(message: str) -> str:
    return message if message.endswith((".", "?", "!")) else message + "."


def _resolve_schema(
    declared: str, path: str, schema: Schema | None, loc: _Located
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
    text: str, *, path: str = "<config>", schema: Schema | None = None
) -> AnalysisConfig:
    """Parse and validate a config's YAML text (see :func:`load_analysis_config`)."""
    doc, lines = _read_document(text, path)
    loc = _Located(path, lines)
    if not isinstance(doc, dict):
        raise loc.error((), "expected a mapping with at least 'name', 'endpoints' and 'exposure'.")
    bootstrap = _Context(loc, schema or load_schema())
    bootstrap.section(doc, "", ())
    declared = bootstrap.value(doc, "schema", ())
    used_schema, schema_path = _resolve_schema(declared, path, schema, loc)
    ctx = _Context(loc, used_schema)
    ctx.given |= bootstrap.given
    for required in ("name", "endpoints", "exposure"):
        if required not in doc:
            raise loc.error((), f"missing the required key '{required}'; for example: "
                            f"{KEYS[required].example}")

    data_raw = ctx.value(doc, "data", ())
    data = DataSpec(
        store=ctx.value(data_raw, "data.store", ("data",)),
        versions=ctx.value(data_raw, "data.versions", ("data",)),
        centres=ctx.value(data_raw, "data.centres", ("data",)),
    )

    patients = used_schema.table("patients")
    fields = patients.fields
    columns = set(fields) | set(DERIVED_COLUMNS)

    cohort_raw = ctx.value(doc, "cohort", ())
    include = ctx.value(cohort_raw, "cohort.include", ("cohort",))
    exclude = ctx.value(cohort_raw, "cohort.exclude", ("cohort",))
    for rule_key, rules in (("include", include), ("exclude", exclude)):
        for i, rule in enumerate(rules):
            keys = ("cohort", rule_key, i) if isinstance(cohort_raw.get(rule_key), list) else (
                "cohort", rule_key
            )
            _compile_expression(rule, columns, ctx, keys, what=f"cohort rule ({rule_key})")
    cohort = CohortSpec(
        setting=ctx.value(cohort_raw, "cohort.setting", ("cohort",)),
        include=include,
        exclude=exclude,
    )

    endpoints = ctx.value(doc, "endpoints", ())
    if not endpoints:
        raise loc.error(("endpoints",), "name at least one endpoint.")

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

    models = _models(ctx, doc, endpoints)
    sensitivity = _sensitivity(ctx, doc, exposure)
    return AnalysisConfig(
        name=ctx.value(doc, "name", ()),
        description=ctx.value(doc, "description", ()),
        data=data,
        cohort=cohort,
        endpoints=endpoints,
        exposure=exposure,
        covariates=covariates,
        strata=strata,
        interactions=interactions,
        subgroups=subgroups,
        models=models,
        sensitivity=sensitivity,
        origin=ctx.value(doc, "origin", ()),
        seed=ctx.value(doc, "seed", ()),
        output=ctx.value(doc, "output", ()),
        path=path,
        text=text,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        schema_path=schema_path,
        schema=used_schema,
        keys_given=frozenset(ctx.given),
        lines=lines,
    )


def _unknown_column(what: str, name: str, known: Collection[str], ctx: _Context) -> str:
    return (
        f"unknown {what} {name!r}: not a field of table 'patients' in {ctx.schema_name}, a "
        f"derived column, the exposure or a derived covariate{did_you_mean(name, known)}"
    )


def _exposure(ctx: _Context, raw: dict[str, Any], columns: set[str]) -> ExposureSpec:
    keys: Keys = ("exposure",)
    if not raw:
        raise ctx.error(keys, f"the exposure needs at least a 'name'; for example: "
                        f"{KEYS['exposure'].example}")
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
    only_for("threshold", THRESHOLD_KINDS + SERIAL_KINDS)
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
                            f"{KEYS['exposure.formula'].example}")
        _compile_expression(formula, columns, ctx, keys + ("formula",), what="formula")
    if kind == "expression":
        if not expr:
            raise ctx.error(keys, "an expression exposure needs 'expr'; for example: "
                            f"{KEYS['exposure.expr'].example}")
        _compile_expression(expr, columns, ctx, keys + ("expr",), what="exposure")
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


def _check_marker(ctx: _Context, marker: str, keys: Keys) -> None:
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
    ctx: _Context, doc: Mapping[str, Any], exposure: ExposureSpec, columns: set[str]
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
            _compile_expression(
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
            _one_of(
                reference, spec.codes, ctx, keys + ("reference",),
                f" (the codes of {name!r} in {ctx.schema_name})",
            )  # fmt: skip
        out.append(
            CovariateSpec(name=name, categorical=categorical, reference=reference, expr=expr)
        )
    return tuple(out)


def _models(ctx: _Context, doc: Mapping[str, Any], endpoints: tuple[str, ...]) -> ModelsSpec:
    if "models" in doc:
        raw = ctx.value(doc, "models", ())
    else:
        raw = {"km": None, "cox": None, "two_stage": None}
    keys: Keys = ("models",)
    options: dict[str, Any] = {}
    for name in MODEL_NAMES:
        found = ctx.value(raw, f"models.{name}", keys)
        enabled, opts = found if isinstance(found, tuple) else (bool(found), {})
        options[name] = enabled
        raw_options = opts if enabled else {}
        here = keys + (name,)

        def get(
            key: str, section: dict[str, Any] = raw_options, at: Keys = here, model: str = name
        ) -> Any:
            return ctx.value(section, f"models.{model}.{key}", at)

        if name == "km":
            options["km_times"] = get("times")
        elif name == "cox":
            options["cox_ties"] = get("ties")
            options["robust"] = get("robust")
        elif name == "two_stage":
            options["meta_methods"] = get("method")
            options["knha"] = get("knha")
            options["two_stage_ties"] = get("ties")
        elif name == "bayes":
            for key in ("endpoints", "draws", "tune", "chains", "intervals", "prior",
                        "thresholds", "interaction"):  # fmt: skip
                options[f"bayes_{key}"] = get(key)
            for i, endpoint in enumerate(options["bayes_endpoints"]):
                if endpoint not in endpoints:
                    raise ctx.error(
                        here + ("endpoints", i),
                        f"bayes endpoint {endpoint!r} is not among the analysis endpoints "
                        f"{', '.join(endpoints)}.",
                    )
        elif name == "trajectory":
            for key in ("groups", "starts", "family"):
                options[f"trajectory_{key}"] = get(key)
    if options["two_stage_ties"] is None:
        options["two_stage_ties"] = options["cox_ties"][0]
    if "models" not in doc:  # the default models were not written in the config
        ctx.given -= {k for k in ctx.given if k.startswith("models.")}
    return ModelsSpec(**options)


def _sensitivity(ctx: _Context, doc: Mapping[str, Any], exposure: ExposureSpec) -> SensitivitySpec:
    keys: Keys = ("sensitivity",)
    raw = ctx.value(doc, "sensitivity", ())
    thresholds = ctx.value(raw, "sensitivity.thresholds", keys)
    if thresholds and exposure.kind not in THRESHOLD_KINDS:
        raise ctx.error(
            keys + ("thresholds",),
            f"'thresholds' needs an exposure with a cut-off (kind {', '.join(THRESHOLD_KINDS)});"
            f" the exposure is of kind {exposure.kind!r}. Remove 'thresholds'.",
        )
    return SensitivitySpec(
        leave_one_centre_out=ctx.value(raw, "sensitivity.leave_one_centre_out", keys),
        thresholds=thresholds,
        missing=ctx.value(raw, "sensitivity.missing", keys),
    )


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
        raise ConfigError(f"{path}: {_sentence(str(exc))}") from None
    return parse_analysis_config(text, path=str(path), schema=schema)


def check_against_data(cfg: AnalysisConfig, patients: pd.DataFrame) -> None:
    """Checks that need the data: covariates present, subgroups with patients, reference levels.

    Raises :class:`ConfigError` naming the config line before any model runs.
    """
    loc = _Located(cfg.path or "<config>", cfg.lines)
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


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    if value is None or value == "":
        return '""'
    return str(value)


def _default_text(key: ConfigKey) -> str:
    if key.required:
        return "required"
    if key.default_text:
        return key.default_text
    return f"`{_yaml_value(key.default)}`"


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


def config_reference(schema: Schema | None = None) -> str:
    """The Markdown reference of the config language, generated from :data:`CONFIG_KEYS`.

    ``docs/config_reference.md`` holds this text; ``python -m pooled.config`` rewrites it.
    """
    from harmonization.expressions import FUNCTIONS

    schema = schema or load_schema()
    out = [
        "# Analysis config reference",
        "",
        "<!-- Generated from the key registry in pooled/config.py (CONFIG_KEYS). Do not edit by "
        "hand: run `python -m pooled.config` to regenerate this file. -->",
        "",
        "This file is **generated** from the key registry `CONFIG_KEYS` in `pooled/config.py`, "
        "the same registry the parser takes its keys, defaults, allowed values and type checks "
        "from. Regenerate it with `python -m pooled.config` (or `python -m pooled.config "
        "--check` to see whether it is current); a test fails when it is out of date.",
        "",
        "An analysis config is a YAML file (`configs/analyses/<name>.yaml`, UTF-8, no key "
        "written twice) parsed once by `pooled.config.load_analysis_config`. A misspelt key, a "
        "value of the wrong type or outside its allowed values, an unknown field (checked "
        "against the schema, which the message names) or an expression that does not compile "
        "stops the run before any model, with the file and line, what was expected and what "
        "was found. Paths below use `.` for nesting and `[]` for the items of a list.",
        "",
    ]
    for section in SECTIONS:
        keys = [k for k in CONFIG_KEYS if _section_of(k) == section]
        if not keys:
            continue
        title = SECTION_TITLES.get(section, f"`{section}`")
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
    if key.section.startswith("models"):
        return "models"
    if key.section == "" and key.path in ("data", "cohort", "exposure", "models", "sensitivity"):
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

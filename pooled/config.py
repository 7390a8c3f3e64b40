"""Analysis configs: YAML parsed once into a frozen, validated :class:`AnalysisConfig`.

Every mistake is reported with the config file and line, what was expected and what was
found, before any model runs: a misspelt key, an option out of its set, an unknown covariate
(checked against the schema and the exposures), a subgroup with no patients (checked against
the data by :func:`check_against_data`).

Example (``configs/analyses/paddy.yaml``)::

    name: paddy
    data: {store: pooled.db, versions: latest}
    cohort: {setting: early}
    endpoints: [os, bcss, dfs, ddfs]
    exposure: {name: dtc_positive, marker: dtc_count, threshold: 1}
    covariates: [age, tumour_size_mm, {name: subtype, reference: luminal_a}]
    interactions: [[dtc_positive, subtype]]
    subgroups: [subtype]
    models:
      cox: {ties: efron}
      two_stage: {method: REML, knha: true}
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from harmonization.schema import Schema, did_you_mean, load_schema
from pooled.errors import ConfigError

ExposureKind = Literal[
    "threshold",  # marker count >= threshold (CTC per 7.5 ml, or DTC)
    "her2_ctc",  # at least `threshold` HER2-positive CTC (DETECT)
    "phenotype_score",  # formula on CTC counts, >= threshold (DETECT endocrine responsiveness)
    "change_category",  # baseline -> follow-up CTC+/- (b2CTC)
    "trajectory_group",  # latent CTC trajectory group (tCTC)
    "risk_concordance",  # clinical risk vs CTC risk (STIC CTC)
]
EXPOSURE_KINDS = (
    "threshold", "her2_ctc", "phenotype_score", "change_category", "trajectory_group",
    "risk_concordance",
)  # fmt: skip
MetaMethod = Literal["FE", "DL", "REML", "PM", "ML", "HE", "SJ"]
META_METHODS = ("FE", "DL", "REML", "PM", "ML", "HE", "SJ")
Origin = Literal["diagnosis", "surgery", "sample"]
ORIGINS = ("diagnosis", "surgery", "sample")
MODEL_NAMES = ("km", "cox", "two_stage", "bayes", "trajectory")
_TOP_KEYS = (
    "name", "description", "data", "cohort", "origin", "endpoints", "exposure", "covariates",
    "strata", "interactions", "subgroups", "models", "sensitivity", "seed", "output",
)  # fmt: skip


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

    def error(self, keys: tuple[Any, ...], message: str) -> ConfigError:
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


@dataclass(frozen=True, slots=True)
class DataSpec:
    """Where the data come from: a store with centre versions latest or pinned."""

    store: str = "pooled.db"
    versions: tuple[tuple[str, int], ...] = ()  # pinned (centre, version); others latest
    centres: tuple[str, ...] = ()  # () = every centre


@dataclass(frozen=True, slots=True)
class CohortSpec:
    """Inclusion and exclusion rules (pandas query expressions on the analysis dataset)."""

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
    formula: str = ""  # phenotype_score: a pandas eval expression on patient columns
    follow_up_window: tuple[float, float] = (22.0, 36.0)  # change_category: days
    levels: tuple[str, ...] = ()  # categorical exposures: level order, first = reference


@dataclass(frozen=True, slots=True)
class CovariateSpec:
    name: str
    categorical: bool = False
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class ModelsSpec:
    """Which models to run and their options (raw numbers, validated)."""

    km: bool = True
    km_times: tuple[float, ...] = (12.0, 24.0, 36.0, 60.0)
    cox: bool = True
    ties: Literal["efron", "breslow"] = "efron"
    robust: bool = False
    two_stage: bool = True
    meta_method: MetaMethod = "REML"
    knha: bool = False
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


@dataclass(frozen=True, slots=True)
class SensitivitySpec:
    leave_one_centre_out: bool = False
    thresholds: tuple[float, ...] = ()
    missing: tuple[Literal["complete_case", "mice"], ...] = ()


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """A validated analysis config; build with :func:`load_analysis_config`."""

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
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def categorical(self) -> tuple[tuple[str, str], ...]:
        """(column, reference) pairs of the categorical covariates."""
        return tuple((c.name, c.reference or "") for c in self.covariates if c.categorical)

    def where(self, *keys: Any) -> str:
        return _Located(self.path or "<config>", self.lines).where(*keys)


def _as_tuple(value: Any, loc: _Located, keys: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, str | int | float):
        return (value,)
    if not isinstance(value, list):
        raise loc.error(keys, f"'{keys[-1]}' must be a list of {what}; got {value!r}.")
    return tuple(value)


def _check_keys(
    raw: Mapping[str, Any], allowed: tuple[str, ...], loc: _Located, keys: tuple[Any, ...]
) -> None:
    for key in raw:
        if key not in allowed:
            raise loc.error(
                keys + (key,),
                f"unknown key '{key}'{did_you_mean(key, allowed)}; allowed keys here: "
                f"{', '.join(allowed)}.",
            )


def _choice(value: Any, allowed: tuple[str, ...], loc: _Located, keys: tuple[Any, ...]) -> Any:
    if value not in allowed:
        raise loc.error(
            keys,
            f"'{keys[-1]}' must be one of {', '.join(allowed)}; got {value!r}"
            f"{did_you_mean(str(value), allowed)}.",
        )
    return value


def _positive_int(value: Any, loc: _Located, keys: tuple[Any, ...]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise loc.error(keys, f"'{keys[-1]}' must be a whole number >= 1; got {value!r}.")
    return value


def _number(value: Any, loc: _Located, keys: tuple[Any, ...]) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise loc.error(keys, f"'{keys[-1]}' must be a number; got {value!r}.")
    return float(value)


def _bool(value: Any, loc: _Located, keys: tuple[Any, ...]) -> bool:
    if not isinstance(value, bool):
        raise loc.error(keys, f"'{keys[-1]}' must be true or false; got {value!r}.")
    return value


def _mapping(value: Any, loc: _Located, keys: tuple[Any, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise loc.error(keys, f"'{keys[-1]}' must be a mapping of options; got {value!r}.")
    return value


def _models(raw: Any, loc: _Located) -> ModelsSpec:
    raw = _mapping(raw, loc, ("models",))
    _check_keys(raw, MODEL_NAMES, loc, ("models",))
    options: dict[str, Any] = {name: False for name in MODEL_NAMES}
    for name, value in raw.items():
        keys = ("models", name)
        if value is False:
            continue
        opts = _mapping(True if value is None else value if value is not True else {}, loc, keys)
        options[name] = True
        if name == "km":
            _check_keys(opts, ("times",), loc, keys)
            if "times" in opts:
                options["km_times"] = tuple(
                    _number(t, loc, keys + ("times", i))
                    for i, t in enumerate(_as_tuple(opts["times"], loc, keys + ("times",), "times"))
                )
        elif name == "cox":
            _check_keys(opts, ("ties", "robust"), loc, keys)
            if "ties" in opts:
                options["ties"] = _choice(opts["ties"], ("efron", "breslow"), loc, keys + ("ties",))
            if "robust" in opts:
                options["robust"] = _bool(opts["robust"], loc, keys + ("robust",))
        elif name == "two_stage":
            _check_keys(opts, ("method", "knha"), loc, keys)
            if "method" in opts:
                options["meta_method"] = _choice(
                    opts["method"], META_METHODS, loc, keys + ("method",)
                )
            if "knha" in opts:
                options["knha"] = _bool(opts["knha"], loc, keys + ("knha",))
        elif name == "bayes":
            allowed = (
                "endpoints", "draws", "tune", "chains", "intervals", "prior", "thresholds",
                "interaction",
            )  # fmt: skip
            if "interaction" in opts:
                options["bayes_interaction"] = _bool(
                    opts["interaction"], loc, keys + ("interaction",)
                )
            _check_keys(opts, allowed, loc, keys)
            for key in ("draws", "tune", "chains", "intervals"):
                if key in opts:
                    options[f"bayes_{key}"] = _positive_int(opts[key], loc, keys + (key,))
            if "prior" in opts:
                options["bayes_prior"] = _choice(
                    opts["prior"], ("weakly_informative", "vague"), loc, keys + ("prior",)
                )
            if "endpoints" in opts:
                options["bayes_endpoints"] = tuple(
                    str(e)
                    for e in _as_tuple(opts["endpoints"], loc, keys + ("endpoints",), "endpoints")
                )
            if "thresholds" in opts:
                options["bayes_thresholds"] = tuple(
                    _number(t, loc, keys + ("thresholds", i))
                    for i, t in enumerate(
                        _as_tuple(opts["thresholds"], loc, keys + ("thresholds",), "numbers")
                    )
                )
        elif name == "trajectory":
            _check_keys(opts, ("groups", "starts", "family"), loc, keys)
            if "groups" in opts:
                options["trajectory_groups"] = tuple(
                    _positive_int(g, loc, keys + ("groups", i))
                    for i, g in enumerate(_as_tuple(opts["groups"], loc, keys + ("groups",), "K"))
                )
            if "starts" in opts:
                options["trajectory_starts"] = _positive_int(
                    opts["starts"], loc, keys + ("starts",)
                )
            if "family" in opts:
                options["trajectory_family"] = _choice(
                    opts["family"], ("poisson", "negbin", "zip"), loc, keys + ("family",)
                )
    return ModelsSpec(**options)


def parse_analysis_config(
    text: str, *, path: str = "<config>", schema: Schema | None = None
) -> AnalysisConfig:
    """Parse and validate a config's YAML text (see :func:`load_analysis_config`)."""
    schema = schema or load_schema()
    try:
        node = yaml.compose(text)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{line}: not valid YAML ({problem}).") from None
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _compose_lines(node, (), lines)
    loc = _Located(path, lines)
    if not isinstance(doc, dict):
        raise loc.error((), "expected a mapping with at least 'name', 'endpoints' and 'exposure'.")
    _check_keys(doc, _TOP_KEYS, loc, ())
    for required in ("name", "endpoints", "exposure"):
        if required not in doc:
            raise loc.error((), f"missing the required key '{required}'.")

    data_raw = _mapping(doc.get("data"), loc, ("data",))
    _check_keys(data_raw, ("store", "versions", "centres"), loc, ("data",))
    versions_raw = data_raw.get("versions", "latest")
    if versions_raw == "latest" or versions_raw is None:
        versions: tuple[tuple[str, int], ...] = ()
    elif isinstance(versions_raw, dict):
        versions = tuple(
            (str(c), _positive_int(v, loc, ("data", "versions", c)))
            for c, v in versions_raw.items()
        )
    else:
        raise loc.error(
            ("data", "versions"),
            f"'versions' must be 'latest' or a mapping centre: version; got {versions_raw!r}.",
        )
    centres_raw = data_raw.get("centres", "all")
    centres = (
        ()
        if centres_raw in ("all", None)
        else tuple(str(c) for c in _as_tuple(centres_raw, loc, ("data", "centres"), "centre codes"))
    )
    data = DataSpec(
        store=str(data_raw.get("store", "pooled.db")), versions=versions, centres=centres
    )

    cohort_raw = _mapping(doc.get("cohort"), loc, ("cohort",))
    _check_keys(cohort_raw, ("setting", "include", "exclude"), loc, ("cohort",))
    setting = cohort_raw.get("setting")
    if setting is not None:
        _choice(
            setting, schema.table("patients").field("setting").codes, loc, ("cohort", "setting")
        )
    cohort = CohortSpec(
        setting=setting,
        include=tuple(
            str(x)
            for x in _as_tuple(cohort_raw.get("include"), loc, ("cohort", "include"), "rules")
        ),
        exclude=tuple(
            str(x)
            for x in _as_tuple(cohort_raw.get("exclude"), loc, ("cohort", "exclude"), "rules")
        ),
    )

    endpoints = tuple(str(e) for e in _as_tuple(doc["endpoints"], loc, ("endpoints",), "endpoints"))
    if not endpoints:
        raise loc.error(("endpoints",), "name at least one endpoint.")
    for i, endpoint in enumerate(endpoints):
        _choice(endpoint, schema.endpoint_names, loc, ("endpoints", i))

    exposure = _exposure(doc["exposure"], loc, schema)
    patient_fields = set(schema.table("patients").fields)
    derived_columns = {"ctc_per_7_5ml", "subtype", "her2_status", "er_status", "pr_status"}
    known = patient_fields | derived_columns | {exposure.name, "centre"}

    covariates = []
    for i, raw in enumerate(_as_tuple(doc.get("covariates"), loc, ("covariates",), "covariates")):
        keys = ("covariates", i)
        if isinstance(raw, str):
            raw = {"name": raw}
        raw = _mapping(raw, loc, keys)
        _check_keys(raw, ("name", "categorical", "reference"), loc, keys)
        name = raw.get("name")
        if name not in known:
            raise loc.error(
                keys,
                f"unknown covariate {name!r}{did_you_mean(str(name), known)}; a covariate "
                "must be a schema field of table 'patients', a derived field or the exposure.",
            )
        spec = schema.table("patients").fields.get(name)
        categorical = bool(
            raw.get("categorical", spec is not None and spec.type in ("category", "string"))
        )
        if "reference" in raw:
            categorical = True
        reference = None if raw.get("reference") is None else str(raw["reference"])
        if categorical and reference is None and spec is not None and spec.codes:
            reference = spec.codes[0]
        if categorical and reference is not None and spec is not None and spec.codes:
            _choice(reference, spec.codes, loc, keys + ("reference",))
        covariates.append(CovariateSpec(name=name, categorical=categorical, reference=reference))
    covariate_names = {c.name for c in covariates} | {exposure.name}

    strata = tuple(
        str(s) for s in _as_tuple(doc.get("strata", ["centre"]), loc, ("strata",), "columns")
    )
    for i, s in enumerate(strata):
        if s not in known:
            raise loc.error(("strata", i), f"unknown stratum column {s!r}{did_you_mean(s, known)}.")

    interactions = []
    for i, raw in enumerate(_as_tuple(doc.get("interactions"), loc, ("interactions",), "pairs")):
        if not isinstance(raw, list) or len(raw) != 2:
            raise loc.error(("interactions", i), f"an interaction is a pair [a, b]; got {raw!r}.")
        for j, term in enumerate(raw):
            if term not in covariate_names:
                raise loc.error(
                    ("interactions", i, j),
                    f"interaction term {term!r} is neither the exposure nor a covariate"
                    f"{did_you_mean(str(term), covariate_names)}; add it to 'covariates' first.",
                )
        interactions.append((str(raw[0]), str(raw[1])))

    subgroups = tuple(
        str(s) for s in _as_tuple(doc.get("subgroups"), loc, ("subgroups",), "columns")
    )
    for i, s in enumerate(subgroups):
        if s not in known:
            raise loc.error(
                ("subgroups", i), f"unknown subgroup column {s!r}{did_you_mean(s, known)}."
            )

    models = _models(doc.get("models", {"km": None, "cox": None, "two_stage": None}), loc)
    for i, endpoint in enumerate(models.bayes_endpoints):
        if endpoint not in endpoints:
            raise loc.error(
                ("models", "bayes", "endpoints", i),
                f"bayes endpoint {endpoint!r} is not among the analysis endpoints {', '.join(endpoints)}.",
            )

    sens_raw = _mapping(doc.get("sensitivity"), loc, ("sensitivity",))
    _check_keys(sens_raw, ("leave_one_centre_out", "thresholds", "missing"), loc, ("sensitivity",))
    missing = tuple(
        _choice(m, ("complete_case", "mice"), loc, ("sensitivity", "missing", i))
        for i, m in enumerate(
            _as_tuple(sens_raw.get("missing"), loc, ("sensitivity", "missing"), "methods")
        )
    )
    sensitivity = SensitivitySpec(
        leave_one_centre_out=_bool(
            sens_raw.get("leave_one_centre_out", False),
            loc,
            ("sensitivity", "leave_one_centre_out"),
        ),
        thresholds=tuple(
            _number(t, loc, ("sensitivity", "thresholds", i))
            for i, t in enumerate(
                _as_tuple(sens_raw.get("thresholds"), loc, ("sensitivity", "thresholds"), "numbers")
            )
        ),
        missing=missing,
    )
    origin = doc.get("origin")
    if origin is not None:
        _choice(origin, ORIGINS, loc, ("origin",))
    seed = doc.get("seed", 2026)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise loc.error(("seed",), f"'seed' must be a whole number >= 0; got {seed!r}.")
    name = doc["name"]
    if not isinstance(name, str) or not name.strip():
        raise loc.error(("name",), f"'name' must be a non-empty text; got {name!r}.")
    return AnalysisConfig(
        name=name.strip(),
        description=str(doc.get("description", "")),
        data=data,
        cohort=cohort,
        endpoints=endpoints,
        exposure=exposure,
        covariates=tuple(covariates),
        strata=strata,
        interactions=tuple(interactions),
        subgroups=subgroups,
        models=models,
        sensitivity=sensitivity,
        origin=origin,
        seed=seed,
        output=str(doc.get("output", "")),
        path=path,
        text=text,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        lines=lines,
    )


def _exposure(raw: Any, loc: _Located, schema: Schema) -> ExposureSpec:
    keys = ("exposure",)
    raw = _mapping(raw, loc, keys)
    allowed = (
        "name",
        "kind",
        "marker",
        "threshold",
        "per_7_5ml",
        "formula",
        "follow_up_window",
        "levels",
    )
    _check_keys(raw, allowed, loc, keys)
    if "name" not in raw:
        raise loc.error(
            keys, "the exposure needs a 'name' (the column it becomes, e.g. ctc_positive)."
        )
    kind = _choice(raw.get("kind", "threshold"), EXPOSURE_KINDS, loc, keys + ("kind",))
    marker = str(raw.get("marker", "ctc_count"))
    fields = schema.table("patients").fields
    if kind == "threshold" and marker not in fields and marker != "ctc_per_7_5ml":
        raise loc.error(
            keys + ("marker",),
            f"unknown marker {marker!r}{did_you_mean(marker, fields)}; "
            "expected a count field such as ctc_count or dtc_count.",
        )
    if kind == "phenotype_score" and not raw.get("formula"):
        raise loc.error(
            keys,
            "a phenotype_score exposure needs a 'formula' (e.g. 'ctc_er_positive_count - ctc_her2_positive_count').",
        )
    window = raw.get("follow_up_window", [22, 36])
    if not isinstance(window, list) or len(window) != 2:
        raise loc.error(
            keys + ("follow_up_window",), f"expected [first_day, last_day]; got {window!r}."
        )
    return ExposureSpec(
        name=str(raw["name"]),
        kind=kind,
        marker=marker,
        threshold=_number(raw.get("threshold", 1), loc, keys + ("threshold",)),
        per_7_5ml=_bool(raw.get("per_7_5ml", marker == "ctc_count"), loc, keys + ("per_7_5ml",)),
        formula=str(raw.get("formula", "")),
        follow_up_window=(
            _number(window[0], loc, keys + ("follow_up_window",)),
            _number(window[1], loc, keys + ("follow_up_window",)),
        ),
        levels=tuple(
            str(v) for v in _as_tuple(raw.get("levels"), loc, keys + ("levels",), "levels")
        ),
    )


def load_analysis_config(path: str | Path, *, schema: Schema | None = None) -> AnalysisConfig:
    """Load and validate an analysis config.

    Parameters
    ----------
    path : str or Path
        The YAML file (``configs/analyses/<name>.yaml``).
    schema : Schema, optional
        Default ``configs/schema.yaml``; covariates are checked against it.

    Returns
    -------
    AnalysisConfig
        Frozen; nothing downstream sees the raw YAML.

    Raises
    ------
    ConfigError
        Naming the file and line: ``"paddy.yaml line 12: 'method' must be one of FE, DL,
        REML, PM, ML, HE, SJ; got 'reml2'."``

    Examples
    --------
    >>> cfg = load_analysis_config("configs/analyses/paddy.yaml")
    >>> cfg.exposure.name
    'dtc_positive'
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the analysis config {path}: {exc.strerror}.") from None
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

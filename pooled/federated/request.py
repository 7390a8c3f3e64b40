"""The federated request: what a coordinator asks every centre, as plain JSON.

A request names the cohort (setting, ``include``/``exclude`` rules), the exposure, the
covariates (schema fields or derived by expressions), the endpoint, the strata, the
interactions and the ties, exactly as an analysis config does (:mod:`pooled.config`); a
centre applies it to its own harmonised patients with the project's own functions
(:func:`pooled.steps.cohort.apply_cohort_rules`, :func:`pooled.exposures.derive_exposure`,
:func:`pooled.exposures.derive_covariates`), so the federated cohort of a config is the
cohort ``pooled run`` analyses. :func:`request_from_config` builds it from an
:class:`~pooled.config.AnalysisConfig`.

The design matrix a centre builds (:func:`centre_design`) uses the categorical levels the
coordinator fixed for the whole consortium (the union of the levels the centres hold), so
every centre's columns are the pooled model's columns, named as R names them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from pooled.errors import ConfigError, DataError
from pooled.exposures import (
    COUNT_KINDS,
    SERIAL_KINDS,
    TIME_DEPENDENT_KINDS,
    CovariateSpec,
    ExposureSpec,
)

__all__ = [
    "CentreDesign",
    "FederatedRequest",
    "centre_design",
    "prepare_cohort_frame",
    "request_from_config",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class FederatedRequest:
    """What every centre is asked, as plain data (``to_dict`` / ``from_dict`` for JSON).

    Parameters
    ----------
    endpoint : str
        The endpoint (``os``, ``dfs``, ...): columns ``<endpoint>_months`` and
        ``<endpoint>_event``.
    exposure : dict
        The fields of :class:`~pooled.exposures.ExposureSpec` (serial, time-dependent and
        count exposures are not available federated: they need the serial samples or the
        pooled counts).
    covariates : tuple of dict
        The fields of :class:`~pooled.exposures.CovariateSpec`, in model order.
    setting, include, exclude
        The cohort (see :class:`pooled.steps.cohort.CohortSpec`).
    strata : tuple of str
        Must contain ``"centre"`` (risk sets within centres); further columns stratify within.
    interactions : tuple of (str, str)
    ties : {"efron", "breslow"}
    primary_endpoint : str
        Patients without it leave the cohort (as ``pooled run`` does); default ``endpoint``.
    policy : dict
        Thresholds the coordinator asks for; a centre applies them only where they are
        stricter than its own (:meth:`DisclosurePolicy.tightened`).
    request_id : str
        Identifies the request in every centre's release log.
    analysis : str
        A label carried into the result tables.
    """

    endpoint: str
    exposure: Mapping[str, Any]
    covariates: tuple[Mapping[str, Any], ...] = ()
    setting: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    strata: tuple[str, ...] = ("centre",)
    interactions: tuple[tuple[str, str], ...] = ()
    ties: str = "efron"
    primary_endpoint: str = ""
    policy: Mapping[str, Any] = field(default_factory=dict)
    request_id: str = ""
    analysis: str = "federated"

    def __post_init__(self) -> None:
        exposure = self.exposure_spec
        if exposure.kind in SERIAL_KINDS:
            raise ConfigError(
                f"exposure kind {exposure.kind!r} is derived from serial samples modelled "
                "across centres; it is not available in a federated analysis. Use a baseline "
                "exposure (threshold, expression)."
            )
        if exposure.kind in TIME_DEPENDENT_KINDS:
            raise ConfigError(
                f"exposure kind {exposure.kind!r} needs each patient's serial samples as "
                "counting-process rows; the federated Cox model takes one row per patient. Use "
                "a baseline exposure (threshold, expression)."
            )
        if exposure.kind in COUNT_KINDS:
            raise ConfigError(
                f"exposure kind {exposure.kind!r} places its categories and spline knots on the "
                "pooled counts (models.count_response); it is not available in a federated "
                "analysis. Use a threshold on the count (kind: threshold)."
            )
        if "centre" not in self.strata:
            raise ConfigError(
                f"a federated Cox model is stratified by centre (strata must contain 'centre'); "
                f"got strata {list(self.strata)}. Without centre strata the risk sets would span "
                "centres and event times would have to leave them."
            )
        if self.ties not in ("efron", "breslow"):
            raise ConfigError(f"ties must be 'efron' or 'breslow'; got {self.ties!r}.")
        if not self.request_id:
            object.__setattr__(self, "request_id", uuid.uuid4().hex[:12])
        names = [c["name"] for c in self.covariates]
        for a, b in self.interactions:
            for member in (a, b):
                if member not in names and member != exposure.name:
                    raise ConfigError(
                        f"interaction '{a}:{b}': '{member}' expected among the exposure and "
                        f"covariates {[exposure.name, *names]}."
                    )

    # -- views ------------------------------------------------------------------------------
    @property
    def exposure_spec(self) -> ExposureSpec:
        values = dict(self.exposure)
        for key in ("follow_up_window", "levels"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
        return ExposureSpec(**values)

    @property
    def covariate_specs(self) -> tuple[CovariateSpec, ...]:
        return tuple(CovariateSpec(**dict(c)) for c in self.covariates)

    @property
    def duration(self) -> str:
        return f"{self.endpoint}_months"

    @property
    def event(self) -> str:
        return f"{self.endpoint}_event"

    @property
    def terms(self) -> tuple[str, ...]:
        """The model's main effects: the exposure first, then the covariates."""
        name = self.exposure_spec.name
        return (name,) + tuple(c["name"] for c in self.covariates if c["name"] != name)

    @property
    def categorical(self) -> tuple[tuple[str, str], ...]:
        """(column, reference) of the categorical terms."""
        return tuple(
            (c["name"], str(c.get("reference") or ""))
            for c in self.covariates
            if c.get("categorical")
        )

    @property
    def within_centre_strata(self) -> tuple[str, ...]:
        return tuple(s for s in self.strata if s != "centre")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["exposure"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in dict(self.exposure).items()
        }
        out["covariates"] = [dict(c) for c in self.covariates]
        out["interactions"] = [list(pair) for pair in self.interactions]
        for key in ("include", "exclude", "strata"):
            out[key] = list(out[key])
        out["policy"] = dict(self.policy)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FederatedRequest:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"federated request: unknown keys {unknown}; expected {sorted(known)}."
            )
        args = dict(values)
        for key in ("covariates", "include", "exclude", "strata"):
            if key in args:
                args[key] = tuple(args[key])
        if "interactions" in args:
            args["interactions"] = tuple(tuple(p) for p in args["interactions"])
        return cls(**args)

    def with_endpoint(self, endpoint: str) -> FederatedRequest:
        values = self.to_dict()
        values["endpoint"] = endpoint
        values["primary_endpoint"] = self.primary_endpoint or self.endpoint
        return FederatedRequest.from_dict(values)


def request_from_config(cfg: Any, endpoint: str | None = None, **changes: Any) -> FederatedRequest:
    """The federated request of an analysis config (its cohort, exposure, covariates, strata,
    interactions and the Cox model's primary ties) for ``endpoint`` (default the first).

    Examples
    --------
    >>> # request_from_config(load_analysis_config("configs/analyses/paddy.yaml"), "dfs")
    """
    chosen = endpoint or cfg.endpoints[0]
    if chosen not in cfg.endpoints:
        raise ConfigError(
            f"endpoint {chosen!r} expected among the config's endpoints {list(cfg.endpoints)}."
        )
    cohort = cfg.cohort
    try:
        ties = cfg.section("cox").primary_ties
    except KeyError:
        ties = "efron"
    values: dict[str, Any] = {
        "endpoint": chosen,
        "primary_endpoint": cfg.endpoints[0],
        "exposure": asdict(cfg.exposure),
        "covariates": tuple(asdict(c) for c in cfg.covariates),
        "setting": cohort.setting,
        "include": tuple(cohort.include),
        "exclude": tuple(cohort.exclude),
        "strata": tuple(cfg.strata),
        "interactions": tuple(tuple(p) for p in cfg.interactions),
        "ties": ties,
        "analysis": cfg.name,
    }
    values.update(changes)
    return FederatedRequest(**values)


# --------------------------------------------------------------------------------------------
# At the centre
# --------------------------------------------------------------------------------------------


def _categorical_as_text(
    patients: pd.DataFrame, covariates: Sequence[CovariateSpec]
) -> pd.DataFrame:
    """Categorical covariates stored as numbers (grade 1-3) become text ("1"), as
    ``pooled run`` does (:mod:`pooled.steps.cohort`)."""
    out = patients
    for cov in covariates:
        if (
            cov.categorical
            and cov.name in out.columns
            and pd.api.types.is_numeric_dtype(out[cov.name])
        ):
            values = out[cov.name]
            out[cov.name] = values.map(lambda v: None if pd.isna(v) else f"{v:g}").astype(object)
    return out


def prepare_cohort_frame(patients: pd.DataFrame, request: FederatedRequest) -> pd.DataFrame:
    """The centre's cohort for ``request``: the setting and the cohort rules, the exposure and
    the derived covariates, then the patients without the exposure or the primary endpoint
    leave (the cohort of :func:`pooled.steps.cohort.prepare_cohort`); finally the rows with
    the requested endpoint known, its event as a float (:func:`pooled.steps.base.endpoint_frame`).
    """
    from pooled.dataset import AnalysisDataset, ExclusionFlow
    from pooled.exposures import derive_covariates, derive_exposure
    from pooled.steps.base import endpoint_frame
    from pooled.steps.cohort import CohortSpec, apply_cohort_rules

    if "centre" not in patients.columns:
        raise DataError("the centre's data expected a 'centre' column (the harmonised patients).")
    ds = AnalysisDataset(
        patients=patients.reset_index(drop=True),
        samples=pd.DataFrame(),
        flow=ExclusionFlow.start(patients["centre"]),
        versions={},
        provenance={},
    )
    ds = apply_cohort_rules(
        ds, CohortSpec(setting=request.setting, include=request.include, exclude=request.exclude)
    )
    frame = ds.patients.copy()
    exposure = request.exposure_spec
    frame[exposure.name] = derive_exposure(frame, exposure)
    covariates = request.covariate_specs
    frame = derive_covariates(frame, covariates)
    frame = _categorical_as_text(frame, covariates)
    primary = request.primary_endpoint or request.endpoint
    keep = (
        frame[exposure.name].notna()
        & frame[f"{primary}_months"].notna()
        & frame[f"{primary}_event"].notna()
    )
    frame = frame.loc[keep].reset_index(drop=True)
    for column in (request.duration, request.event):
        if column not in frame.columns:
            raise DataError(
                f"the centre's data have no column {column!r} (endpoint {request.endpoint!r})."
            )
    return endpoint_frame(frame, request.endpoint).reset_index(drop=True)


@dataclass(frozen=True, slots=True)
class CentreDesign:
    """A centre's complete-case design with the consortium's columns."""

    matrix: np.ndarray
    term_names: tuple[str, ...]
    term_sources: tuple[str, ...]
    time: np.ndarray
    event: np.ndarray
    strata: np.ndarray | None
    n_dropped: int

    @property
    def n(self) -> int:
        return int(self.matrix.shape[0])


def complete_rows(frame: pd.DataFrame, request: FederatedRequest) -> pd.DataFrame:
    """The rows with every term, the outcome and the strata known (complete cases)."""
    used = list(dict.fromkeys([*request.terms, request.duration, request.event, *request.strata]))
    absent = [c for c in used if c not in frame.columns]
    if absent:
        raise ConfigError(f"columns {absent} expected in the centre's data; check the request.")
    return frame.loc[frame[used].notna().all(axis=1)].reset_index(drop=True)


def present_levels(frame: pd.DataFrame, request: FederatedRequest) -> dict[str, list[str]]:
    """Levels of each categorical term among the complete cases (no counts)."""
    kept = complete_rows(frame, request)
    return {
        column: sorted(kept[column].astype(str).unique().tolist())
        for column, _ in request.categorical
    }


def centre_design(
    frame: pd.DataFrame, request: FederatedRequest, levels: Mapping[str, Sequence[str]]
) -> CentreDesign:
    """The complete-case design of the centre's cohort with the consortium's ``levels``
    (reference first) for each categorical term: columns and names as
    :func:`pooled.models.design.build_design` gives them on the pooled data."""
    kept = complete_rows(frame, request)
    cat = dict(request.categorical)
    blocks: dict[str, tuple[list[str], np.ndarray]] = {}
    for column in request.terms:
        series = kept[column]
        if column in cat:
            lv = list(levels[column])
            text = series.astype(str).to_numpy()
            dummies = [f"{column}{level}" for level in lv[1:]]
            mat = (
                np.column_stack([(text == level).astype(np.float64) for level in lv[1:]])
                if len(lv) > 1
                else np.zeros((len(kept), 0))
            )
            blocks[column] = (dummies, mat)
        else:
            if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
                raise DataError(
                    f"covariate '{column}' expected numeric; found dtype {series.dtype}. Declare "
                    "it categorical with a reference level."
                )
            blocks[column] = ([column], series.to_numpy(dtype=np.float64).reshape(-1, 1))
    names: list[str] = []
    sources: list[str] = []
    mats: list[np.ndarray] = []
    for column in request.terms:
        cnames, mat = blocks[column]
        names += cnames
        sources += [column] * len(cnames)
        mats.append(mat)
    for a, b in request.interactions:
        names_a, mat_a = blocks[a]
        names_b, mat_b = blocks[b]
        for jb, nb in enumerate(names_b):
            for ja, na in enumerate(names_a):
                names.append(f"{na}:{nb}")
                sources.append(f"{a}:{b}")
                mats.append((mat_a[:, ja] * mat_b[:, jb]).reshape(-1, 1))
    matrix = np.ascontiguousarray(np.hstack(mats)) if mats else np.empty((len(kept), 0))
    within = request.within_centre_strata
    strata = kept.groupby(list(within), sort=True).ngroup().to_numpy() if within else None
    return CentreDesign(
        matrix=matrix,
        term_names=tuple(names),
        term_sources=tuple(sources),
        time=kept[request.duration].to_numpy(dtype=np.float64),
        event=kept[request.event].to_numpy(dtype=np.float64),
        strata=strata,
        n_dropped=len(frame) - len(kept),
    )

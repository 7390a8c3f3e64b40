"""Bayesian hierarchical survival models in PyMC.

Two models sit beside the frequentist engine and return the same tidy table:

* a one-stage piecewise-exponential proportional-hazards model with centre-specific
  baselines, centre-specific marker log hazard ratios ``beta_c ~ Normal(mu, tau)``
  (non-centred), marker x subtype interactions and adjustment covariates
  (:func:`build_piecewise_model`, :func:`fit_bayes_survival`);
* a Bayesian two-stage random-effects meta-analysis of per-centre log hazard ratios
  (:func:`build_meta_model`, :func:`fit_bayes_meta`).

Models are built first (``build_*`` returns a ``pm.Model`` with coords and never samples)
and sampled second (:func:`sample`, explicit seed). Patients are never expanded into
person-period rows: events and person-time are collapsed into cells
(:mod:`pooled.models.bayes_cells`).

Prior defaults (:class:`PriorSpec`), all on the log hazard-ratio scale unless stated:

==========================  =====================  ==========================================
parameter                   weakly informative     why
==========================  =====================  ==========================================
``mu`` (pooled marker)      Normal(0, 1)           95 % of prior mass on HR 0.14-7.1
``tau`` (between centres)   HalfNormal(0.5)        centre HRs differing by a factor ~2.7 at most
interactions                Normal(0, 1)           as ``mu``
subtype, covariates         Normal(0, 1)           per unit of the covariate (centred)
shared log baseline         RW1: first ~ N(m0, 2), m0 = log(events / person-time)
                            steps ~ N(0, 1)
centre baseline level       ZeroSumNormal(1)       centre log-rate offsets
centre x interval dev. sd   HalfNormal(0.3)        non-centred, zero-sum deviations
==========================  =====================  ==========================================

``PriorSpec.vague()`` widens every scale (Normal(0, 10) effects, HalfNormal(5) tau and
deviation scale, sd 10 for the baseline levels) for sensitivity analyses and for comparison
with the stratified Cox model.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from pooled.errors import (
    ConfigError,
    ConvergenceError,
    DataError,
    PooledWarning,
    SamplingWarning,
)
from pooled.models.bayes_cells import CellData, collapse_cells
from pooled.results import tidy_frame

__all__ = [
    "BayesMetaResult",
    "BayesMetaSpec",
    "BayesResult",
    "BayesSpec",
    "PriorSpec",
    "SamplerSpec",
    "build_meta_model",
    "build_piecewise_model",
    "compile_model",
    "fit_bayes_meta",
    "fit_bayes_survival",
    "piecewise_cells",
    "sample",
]

Sampler = Literal["nutpie", "pymc", "numpyro"]
SUBTYPE_LEVELS: tuple[str, ...] = ("luminal_a", "luminal_b", "her2_positive", "triple_negative")


@dataclass(frozen=True, slots=True)
class PriorSpec:
    """Prior scales of the Bayesian models (see the module docstring for the rationale).

    Attributes
    ----------
    marker_sd : sd of the Normal(0, sd) prior on the pooled marker log HR ``mu``.
    tau_sd : scale of the HalfNormal prior on the between-centre sd ``tau``.
    interaction_sd : sd of the marker x subtype interaction log HRs.
    covariate_sd : sd of the subtype main effects and adjustment covariate log HRs.
    baseline_level_sd : sd of the first shared log baseline hazard around
        log(events / person-time).
    baseline_rw_sd : sd of the random-walk steps of the shared log baseline hazard.
    centre_level_sd : sd of the zero-sum centre log baseline offsets.
    baseline_deviation_sd : scale of the HalfNormal prior on the sd of the centre x
        interval deviations from the shared baseline shape.
    """

    marker_sd: float = 1.0
    tau_sd: float = 0.5
    interaction_sd: float = 1.0
    covariate_sd: float = 1.0
    baseline_level_sd: float = 2.0
    baseline_rw_sd: float = 1.0
    centre_level_sd: float = 1.0
    baseline_deviation_sd: float = 0.3

    def __post_init__(self) -> None:
        for name in PriorSpec.__dataclass_fields__:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ConfigError(f"PriorSpec.{name} must be a positive number; got {value!r}.")

    @classmethod
    def vague(cls) -> PriorSpec:
        """Wide priors for sensitivity analyses and comparison with likelihood methods."""
        return cls(
            marker_sd=10.0,
            tau_sd=5.0,
            interaction_sd=10.0,
            covariate_sd=10.0,
            baseline_level_sd=10.0,
            baseline_rw_sd=10.0,
            centre_level_sd=10.0,
            baseline_deviation_sd=5.0,
        )


@dataclass(frozen=True, slots=True)
class SamplerSpec:
    """How to sample and when to warn.

    Attributes
    ----------
    draws, tune, chains : posterior draws and tuning steps per chain, number of chains.
    sampler : ``"nutpie"`` (compiled with numba; default, falls back to PyMC's NUTS if it
        fails), ``"pymc"`` or ``"numpyro"`` (needs jax and numpyro installed).
    cores : chains run in parallel; ``None`` uses ``min(chains, os.cpu_count())``.
    target_accept : NUTS target acceptance rate; 0.9 by default (0.8 left a rare divergence
        in the upper tail of tau on the PADDY-sized benchmark at no gain in speed).
    low_rank_mass_matrix : nutpie's low-rank modified mass matrix adaptation.
    rhat_max, ess_min : a :class:`~pooled.errors.SamplingWarning` is raised when any
        reported quantity has R-hat above ``rhat_max`` or bulk or tail ESS below ``ess_min``,
        or when any transition diverged.
    """

    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    sampler: Sampler = "nutpie"
    cores: int | None = None
    target_accept: float = 0.9
    low_rank_mass_matrix: bool = False
    rhat_max: float = 1.01
    ess_min: float = 400.0

    def __post_init__(self) -> None:
        if self.sampler not in ("nutpie", "pymc", "numpyro"):
            raise ConfigError(
                f"SamplerSpec.sampler must be one of nutpie, pymc, numpyro; got {self.sampler!r}."
            )
        if self.draws < 1 or self.tune < 0 or self.chains < 1:
            raise ConfigError(
                "SamplerSpec needs draws >= 1, tune >= 0, chains >= 1; "
                f"got draws={self.draws}, tune={self.tune}, chains={self.chains}."
            )
        if not 0 < self.target_accept < 1:
            raise ConfigError(f"target_accept must be in (0, 1); got {self.target_accept}.")


@dataclass(frozen=True, slots=True)
class BayesSpec:
    """Options of the one-stage Bayesian piecewise-exponential model.

    Attributes
    ----------
    duration, event, marker, centre : column names (time, 0/1 event, 0/1 marker, centre).
    subtype : subtype column, or ``None`` for no subtype terms.
    subtype_levels : subtype levels, the reference first (unobserved levels are dropped).
    covariates : adjustment covariates. Numeric columns enter linearly (centred at their
        mean); other columns are dummy coded against ``categorical_reference`` (default: the
        first level in sorted order).
    categorical_reference : ``(column, reference level)`` pairs.
    interaction : include marker x subtype interactions (``mu`` is then the marker log HR
        in the reference subtype).
    centre_effects : ``"random"`` (``beta_c ~ Normal(mu, tau)``) or ``"common"`` (one marker
        effect, the Bayesian analogue of the centre-stratified Cox model).
    baseline : ``"hierarchical"`` (centre baselines = shared random-walk curve + centre level
        + zero-sum centre x interval deviations with a learned sd) or ``"proportional"``
        (shared curve + centre level only).
    n_intervals, cut_points : intervals by event-time quantiles, or explicit interior cuts.
    continuous : numeric covariates with more than ``max_discrete_levels`` distinct values use
        patient x interval exposures (``"exposure"``, exact) or are cut into ``n_categories``
        quantile groups (``"categorise"``, fully collapsed, changes the model).
    thresholds : extra HR thresholds ``t`` reported as ``P(HR > t)``.
    ci_level : probability of the equal-tailed credible intervals.
    """

    duration: str = "os_months"
    event: str = "os_event"
    marker: str = "dtc_positive"
    centre: str = "centre"
    subtype: str | None = "subtype"
    subtype_levels: tuple[str, ...] = SUBTYPE_LEVELS
    covariates: tuple[str, ...] = ()
    categorical_reference: tuple[tuple[str, str], ...] = ()
    interaction: bool = True
    centre_effects: Literal["random", "common"] = "random"
    baseline: Literal["hierarchical", "proportional"] = "hierarchical"
    n_intervals: int = 10
    cut_points: tuple[float, ...] | None = None
    continuous: Literal["exposure", "categorise"] = "exposure"
    max_discrete_levels: int = 10
    n_categories: int = 4
    priors: PriorSpec = field(default_factory=PriorSpec)
    sampling: SamplerSpec = field(default_factory=SamplerSpec)
    thresholds: tuple[float, ...] = (1.5,)
    ci_level: float = 0.95
    analysis: str = ""
    endpoint: str = "os"

    def __post_init__(self) -> None:
        if self.centre_effects not in ("random", "common"):
            raise ConfigError(
                f"centre_effects must be 'random' or 'common'; got {self.centre_effects!r}."
            )
        if self.baseline not in ("hierarchical", "proportional"):
            raise ConfigError(
                f"baseline must be 'hierarchical' or 'proportional'; got {self.baseline!r}."
            )
        if self.continuous not in ("exposure", "categorise"):
            raise ConfigError(
                f"continuous must be 'exposure' or 'categorise'; got {self.continuous!r}."
            )
        if not 0 < self.ci_level < 1:
            raise ConfigError(f"ci_level must be in (0, 1); got {self.ci_level}.")
        if any(t <= 0 for t in self.thresholds):
            raise ConfigError(f"thresholds must be positive HRs; got {self.thresholds}.")


@dataclass(frozen=True, slots=True)
class BayesMetaSpec:
    """Options of the Bayesian two-stage random-effects meta-analysis."""

    priors: PriorSpec = field(default_factory=PriorSpec)
    sampling: SamplerSpec = field(default_factory=lambda: SamplerSpec(target_accept=0.95))
    thresholds: tuple[float, ...] = (1.5,)
    ci_level: float = 0.95
    analysis: str = ""
    endpoint: str = "os"
    term: str = "marker"


# ---------------------------------------------------------------------------------------------
# Model building


def piecewise_cells(data: pd.DataFrame, spec: BayesSpec) -> CellData:
    """Collapse the analysis dataset into the cells used by :func:`build_piecewise_model`."""
    return collapse_cells(
        data,
        duration=spec.duration,
        event=spec.event,
        marker=spec.marker,
        centre=spec.centre,
        subtype=spec.subtype,
        subtype_levels=spec.subtype_levels,
        covariates=spec.covariates,
        categorical_reference=spec.categorical_reference,
        cut_points=spec.cut_points,
        n_intervals=spec.n_intervals,
        continuous=spec.continuous,
        max_discrete_levels=spec.max_discrete_levels,
        n_categories=spec.n_categories,
    )


def _interval_labels(cuts: Sequence[float]) -> list[str]:
    edges = [0.0, *cuts]
    labels = [f"({edges[k]:g}, {edges[k + 1]:g}]" for k in range(len(cuts))]
    return [*labels, f"({edges[-1]:g}, inf)"]


def _model_from_cells(cells: CellData, spec: BayesSpec) -> pm.Model:
    pr = spec.priors
    n_centre, n_int, n_sub = len(cells.centres), cells.n_intervals, len(cells.subtypes)
    terms = (*cells.terms, *cells.continuous_terms)
    coords: dict[str, Any] = {
        "centre": list(cells.centres),
        "interval": _interval_labels(cells.cut_points),
        "subtype": list(cells.subtypes),
        "subtype_contrast": list(cells.subtypes[1:]),
        "term": list(terms),
    }
    person_time = cells.exposure.sum() + cells.row_exposure.sum()
    log_rate = math.log(max(cells.n_events, 1) / person_time)
    with pm.Model(coords=coords) as model:
        if n_int > 1:
            shared = pm.GaussianRandomWalk(
                "log_baseline_shared",
                mu=0.0,
                sigma=pr.baseline_rw_sd,
                init_dist=pm.Normal.dist(log_rate, pr.baseline_level_sd),
                dims="interval",
            )
        else:
            shared = pm.Normal(
                "log_baseline_shared", log_rate, pr.baseline_level_sd, dims="interval"
            )
        log_baseline = pt.broadcast_to(shared[None, :], (n_centre, n_int))
        if n_centre > 1:
            level = pm.ZeroSumNormal("centre_log_baseline", sigma=pr.centre_level_sd, dims="centre")
            log_baseline = log_baseline + level[:, None]
            if spec.baseline == "hierarchical" and n_int > 1:
                dev_sd = pm.HalfNormal("baseline_deviation_sd", sigma=pr.baseline_deviation_sd)
                dev_z = pm.ZeroSumNormal(
                    "baseline_deviation_z", sigma=1.0, dims=("centre", "interval"), n_zerosum_axes=2
                )
                log_baseline = log_baseline + dev_sd * dev_z
        log_baseline = pm.Deterministic("log_baseline", log_baseline, dims=("centre", "interval"))

        mu = pm.Normal("mu", 0.0, pr.marker_sd)
        if spec.centre_effects == "random" and n_centre > 1:
            tau = pm.HalfNormal("tau", sigma=pr.tau_sd)
            centre_z = pm.Normal("centre_z", 0.0, 1.0, dims="centre")
            centre_log_hr = pm.Deterministic("centre_log_hr", mu + tau * centre_z, dims="centre")
            new_z = pm.Normal("new_centre_z", 0.0, 1.0)
            pm.Deterministic("new_centre_log_hr", mu + tau * new_z)
        else:
            centre_log_hr = pt.ones(n_centre) * mu

        subtype_full = pt.zeros(n_sub)
        inter_full = pt.zeros(n_sub)
        if n_sub > 1:
            subtype_main = pm.Normal(
                "subtype_log_hr", 0.0, pr.covariate_sd, dims="subtype_contrast"
            )
            subtype_full = pt.concatenate([pt.zeros(1), subtype_main])
            if spec.interaction:
                inter = pm.Normal(
                    "interaction_log_hr", 0.0, pr.interaction_sd, dims="subtype_contrast"
                )
                inter_full = pt.concatenate([pt.zeros(1), inter])
                pm.Deterministic("subtype_marker_log_hr", mu + inter_full, dims="subtype")
        n_disc = len(cells.terms)
        gamma = (
            pm.Normal("covariate_log_hr", 0.0, pr.covariate_sd, dims="term")
            if terms
            else pt.zeros(0)
        )
        loglik = _log_likelihood(
            cells,
            log_baseline,
            centre_log_hr,
            inter_full,
            subtype_full,
            gamma[:n_disc],
            gamma[n_disc:],
        )
        pm.Potential("loglik", loglik)
    return model


DENSE_LIMIT = 4_000_000


def _log_likelihood(
    cells: CellData,
    log_baseline: Any,
    centre_log_hr: Any,
    interaction: Any,
    subtype_effect: Any,
    gamma_discrete: Any,
    gamma_continuous: Any,
) -> Any:
    """Piecewise-exponential log-likelihood ``sum d * eta - e * exp(eta)`` on the cells.

    The event part is linear in the parameters, so it only needs event totals by centre x
    interval, centre x marker, subtype x marker, subtype and covariates. The person-time
    part is computed on a dense centre x interval x (marker, subtype, covariate pattern)
    array without gathers when it fits in ``DENSE_LIMIT`` entries, else cell by cell;
    with continuous covariates it runs over the patient x interval exposure rows.

    Every array enters as ``pm.Data`` (a shared variable), so the compiled graph does not
    depend on the data: compiled code is reused across data sets of the same structure.
    """
    n_centre, n_int, n_sub = len(cells.centres), cells.n_intervals, len(cells.subtypes)
    cc, ci, cs, cm = cells.cell_centre, cells.cell_interval, cells.cell_subtype, cells.cell_marker
    d = cells.events
    events_ck = np.zeros((n_centre, n_int))
    np.add.at(events_ck, (cc, ci), d)
    loglik = (
        pt.sum(pm.Data("events_centre_interval", events_ck) * log_baseline)
        + pt.dot(
            pm.Data("events_marker_centre", np.bincount(cc, weights=d * cm, minlength=n_centre)),
            centre_log_hr,
        )
        + pt.dot(
            pm.Data("events_marker_subtype", np.bincount(cs, weights=d * cm, minlength=n_sub)),
            interaction,
        )
        + pt.dot(
            pm.Data("events_subtype", np.bincount(cs, weights=d, minlength=n_sub)), subtype_effect
        )
    )
    if cells.terms:
        loglik = loglik + pt.dot(pm.Data("events_x_discrete", d @ cells.cell_x), gamma_discrete)

    def cell_eta() -> Any:
        centre = pm.Data("cell_centre", cc)
        interval = pm.Data("cell_interval", ci)
        subtype = pm.Data("cell_subtype", cs)
        marker = pm.Data("cell_marker", cm)
        eta = (
            log_baseline[centre, interval]
            + marker * (centre_log_hr[centre] + interaction[subtype])
            + subtype_effect[subtype]
        )
        if cells.terms:
            eta = eta + pt.dot(pm.Data("cell_x", cells.cell_x), gamma_discrete)
        return eta

    if cells.continuous_terms:
        loglik = loglik + pt.dot(
            pm.Data("events_x_continuous", cells.event_x_sum), gamma_continuous
        )
        patient_lp = pt.dot(pm.Data("patient_x", cells.patient_x), gamma_continuous)
        row_lp = (
            cell_eta()[pm.Data("row_cell", cells.row_cell)]
            + patient_lp[pm.Data("row_patient", cells.row_patient)]
        )
        return loglik - pt.sum(pm.Data("row_exposure", cells.row_exposure) * pt.exp(row_lp))
    patterns, pattern = np.unique(cells.cell_x, axis=0, return_inverse=True)
    n_pat = max(patterns.shape[0], 1)
    pattern = pattern.reshape(-1) if cells.cell_x.shape[1] else np.zeros(cc.size, dtype=int)
    if n_centre * n_int * 2 * n_sub * n_pat > DENSE_LIMIT:
        return loglik - pt.sum(pm.Data("cell_exposure", cells.exposure) * pt.exp(cell_eta()))
    exposure = np.zeros((n_centre, n_int, 2, n_sub, n_pat))
    np.add.at(exposure, (cc, ci, cm.astype(int), cs, pattern), cells.exposure)
    exposure_data = pm.Data(
        "exposure_dense", exposure.reshape((n_centre, n_int, 2 * n_sub * n_pat))
    )
    marker = np.array([0.0, 1.0])
    log_w = (
        marker[None, :, None] * (centre_log_hr[:, None, None] + interaction[None, None, :])
        + subtype_effect[None, None, :]
    )
    if cells.terms:
        pattern_lp = pt.dot(pm.Data("patterns", patterns), gamma_discrete)
        log_w = log_w[:, :, :, None] + pattern_lp[None, None, None, :]
    else:
        log_w = log_w[:, :, :, None]
    weight = pt.exp(log_w).reshape((n_centre, 1, 2 * n_sub * n_pat))
    weighted = pt.sum(exposure_data * weight, axis=2)
    return loglik - pt.sum(pt.exp(log_baseline) * weighted)


def build_piecewise_model(data: pd.DataFrame, spec: BayesSpec | None = None) -> pm.Model:
    """Build (never sample) the Bayesian piecewise-exponential proportional-hazards model.

    The hazard of patient ``i`` in centre ``c``, interval ``k``, subtype ``s`` is

    ``log h = log_baseline[c, k] + m_i * (beta_c + delta_s) + gamma_s + x_i' gamma``

    with ``beta_c = mu + tau * z_c`` (non-centred), ``delta_s`` the marker x subtype
    interactions (reference subtype 0), ``gamma_s`` subtype main effects and ``gamma`` the
    adjustment covariates (numeric ones centred at their mean). ``log_baseline[c, k]`` is a
    shared random-walk curve plus a zero-sum centre level plus zero-sum centre x interval
    deviations with a learned sd. The likelihood is the exact piecewise-exponential
    (Poisson-kernel) likelihood on collapsed cells, added as the potential ``loglik``.

    Parameters
    ----------
    data : patient-level analysis dataset.
    spec : model options; defaults to ``BayesSpec()``.

    Returns
    -------
    pm.Model
        With coords ``centre``, ``interval``, ``subtype``, ``subtype_contrast``, ``term``.

    References
    ----------
    .. [1] Holford TR. The analysis of rates and of survivorship using log-linear models.
       Biometrics 1980;36:299-305.
    .. [2] Laird N, Olivier D. Covariance analysis of censored survival data using
       log-linear analysis techniques. J Am Stat Assoc 1981;76:231-40.
    .. [3] Betancourt M, Girolami M. Hamiltonian Monte Carlo for hierarchical models.
       arXiv:1312.0906 (2013) (non-centred parameterisation).

    Examples
    --------
    >>> model = build_piecewise_model(cohort, BayesSpec(marker="ctc_positive"))  # doctest: +SKIP
    >>> idata = sample(model, draws=500, tune=500, chains=2, seed=1)  # doctest: +SKIP
    """
    spec = spec or BayesSpec()
    return _model_from_cells(piecewise_cells(data, spec), spec)


def build_meta_model(
    yi: Sequence[float] | np.ndarray,
    sei: Sequence[float] | np.ndarray,
    labels: Sequence[str],
    spec: BayesMetaSpec | None = None,
) -> pm.Model:
    """Build (never sample) the Bayesian random-effects meta-analysis of log hazard ratios.

    ``y_c ~ Normal(theta_c, se_c)``, ``theta_c = mu + tau * z_c`` (non-centred),
    ``z_c ~ Normal(0, 1)``, priors on ``mu`` and ``tau`` from ``spec.priors``.

    References
    ----------
    .. [1] Smith TC, Spiegelhalter DJ, Thomas A. Bayesian approaches to random-effects
       meta-analysis: a comparative study. Stat Med 1995;14:2685-99.

    Examples
    --------
    >>> model = build_meta_model([0.2, 0.3], [0.1, 0.15], ["A", "B"])  # doctest: +SKIP
    """
    spec = spec or BayesMetaSpec()
    y = np.asarray(yi, dtype=float)
    se = np.asarray(sei, dtype=float)
    names = [str(v) for v in labels]
    if not (y.shape == se.shape == (len(names),)) or y.size < 2:
        raise DataError(
            f"yi, sei and labels must be 1-D of one length >= 2; got {y.shape}, {se.shape}, "
            f"{len(names)}."
        )
    if not (np.isfinite(y).all() and np.isfinite(se).all() and (se > 0).all()):
        raise DataError("yi must be finite and sei finite and > 0 for every centre.")
    if len(set(names)) != len(names):
        raise DataError(f"labels must be unique; got {names}.")
    with pm.Model(coords={"centre": names}) as model:
        mu = pm.Normal("mu", 0.0, spec.priors.marker_sd)
        tau = pm.HalfNormal("tau", sigma=spec.priors.tau_sd)
        z = pm.Normal("centre_z", 0.0, 1.0, dims="centre")
        theta = pm.Deterministic("centre_log_hr", mu + tau * z, dims="centre")
        new_z = pm.Normal("new_centre_z", 0.0, 1.0)
        pm.Deterministic("new_centre_log_hr", mu + tau * new_z)
        se_data = pm.Data("se", se, dims="centre")
        y_data = pm.Data("log_hr_observed", y, dims="centre")
        pm.Normal("log_hr", mu=theta, sigma=se_data, observed=y_data, dims="centre")
    return model


# ---------------------------------------------------------------------------------------------
# Sampling


def compile_model(model: pm.Model) -> Any:
    """Compile a built model for nutpie (numba backend), to reuse across data sets.

    The data of the piecewise and meta models are ``pm.Data`` containers, so a model compiled
    once can sample any data set of the same structure (same coords): pass it to
    :func:`sample` (or the ``fit_*`` functions) as ``compiled``. Compiling costs tens of
    seconds of CPU; sampling a PADDY-sized model a few seconds.
    """
    import nutpie

    free = [var.name for var in model.free_RVs]
    return nutpie.compile_pymc_model(model, backend="numba", var_names=free)


def _complete_posterior(idata: az.InferenceData, model: pm.Model) -> az.InferenceData:
    """Add the deterministics of the models of this module to a posterior of free variables.

    nutpie is compiled for the free variables only (a second compiled function for the
    deterministics doubles the numba compile time); they are cheap to compute in numpy.
    """
    post = idata["posterior"]
    names = set(model.named_vars)
    if "centre_z" in post and "tau" in post:
        post["centre_log_hr"] = post["mu"] + post["tau"] * post["centre_z"]
        post["new_centre_log_hr"] = post["mu"] + post["tau"] * post["new_centre_z"]
    if "interaction_log_hr" in post:
        inter = post["interaction_log_hr"].rename(subtype_contrast="subtype")
        reference = (post["mu"] * 0.0).expand_dims(subtype=[model.coords["subtype"][0]])
        full = xr.concat([reference, inter], dim="subtype").transpose("chain", "draw", "subtype")
        post["subtype_marker_log_hr"] = post["mu"] + full
    if "log_baseline" in names and "log_baseline_shared" in post:
        shared = post["log_baseline_shared"]
        if "centre_log_baseline" in post:
            shared = shared + post["centre_log_baseline"]
        else:
            shared = shared.expand_dims(centre=list(model.coords["centre"]), axis=2)
        if "baseline_deviation_z" in post:
            shared = shared + post["baseline_deviation_sd"] * post["baseline_deviation_z"]
        post["log_baseline"] = shared.transpose("chain", "draw", "centre", "interval")
    missing = sorted(v.name for v in model.deterministics if v.name not in post)
    if missing:
        raise ConvergenceError(f"Deterministics {missing} were not reconstructed.")
    return idata


def _model_data(model: pm.Model) -> dict[str, np.ndarray]:
    return {var.name: np.asarray(var.get_value()) for var in model.data_vars}


def sample(
    model: pm.Model,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int,
    sampler: Sampler = "nutpie",
    cores: int | None = None,
    target_accept: float = 0.9,
    low_rank_mass_matrix: bool = False,
    compiled: Any | None = None,
) -> az.InferenceData:
    """Sample a built model with NUTS and return its ``InferenceData``.

    ``"nutpie"`` compiles the PyMC model with numba and samples with nutpie; if that fails
    for any reason, a warning is issued and PyMC's own NUTS is used. ``"numpyro"`` needs jax
    and numpyro. The same seed gives the same draws with the same sampler and chains.

    Parameters
    ----------
    model : a model from a ``build_*`` function.
    draws, tune, chains : draws and tuning steps per chain; number of chains.
    seed : random seed (required).
    sampler : ``"nutpie"``, ``"pymc"`` or ``"numpyro"``.
    cores : chains in parallel (default ``min(chains, os.cpu_count())``).
    target_accept : NUTS target acceptance rate.
    low_rank_mass_matrix : nutpie's low-rank modified mass matrix (ignored by the others).
    compiled : a nutpie model from :func:`compile_model` of a model of the same structure;
        its data are replaced by this model's, skipping compilation.

    References
    ----------
    .. [1] Hoffman MD, Gelman A. The No-U-Turn sampler. J Mach Learn Res 2014;15:1593-623.
    .. [2] Seyboldt A, et al. nutpie (2023), https://github.com/pymc-devs/nutpie.

    Examples
    --------
    >>> idata = sample(model, draws=1000, tune=1000, chains=4, seed=2024)  # doctest: +SKIP
    """
    if sampler not in ("nutpie", "pymc", "numpyro"):
        raise ConfigError(f"sampler must be one of nutpie, pymc, numpyro; got {sampler!r}.")
    n_cores = cores or max(1, min(chains, os.cpu_count() or 1))
    if sampler == "nutpie":
        try:
            import nutpie

            if compiled is None:
                compiled = compile_model(model)
            else:
                compiled = compiled.with_data(**_model_data(model))
            result = nutpie.sample(
                compiled,
                draws=draws,
                tune=tune,
                chains=chains,
                cores=n_cores,
                seed=seed,
                progress_bar=False,
                save_warmup=False,
                target_accept=target_accept,
                low_rank_modified_mass_matrix=low_rank_mass_matrix,
            )
            idata = _complete_posterior(result, model)  # type: ignore[arg-type]
            idata["posterior"].attrs["pooled_sampler"] = "nutpie"
            return idata
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - nutpie panics are BaseExceptions
            warnings.warn(
                f"nutpie failed ({type(exc).__name__}: {exc}); falling back to PyMC's NUTS.",
                PooledWarning,
                stacklevel=2,
            )
            sampler = "pymc"
    if sampler == "numpyro":
        try:
            import numpyro  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "sampler='numpyro' needs jax and numpyro: `pip install numpyro`, "
                "or use sampler='nutpie'."
            ) from exc
    with model:
        idata = pm.sample(
            draws=draws,
            tune=tune,
            chains=chains,
            cores=n_cores,
            random_seed=seed,
            nuts_sampler=sampler,
            target_accept=target_accept,
            progressbar=False,
            compute_convergence_checks=False,
        )
    idata["posterior"].attrs["pooled_sampler"] = sampler
    return idata


def _run(
    model: pm.Model, sampling: SamplerSpec, seed: int, compiled: Any | None = None
) -> tuple[az.InferenceData, float]:
    start = time.perf_counter()
    idata = sample(
        model,
        draws=sampling.draws,
        tune=sampling.tune,
        chains=sampling.chains,
        seed=seed,
        sampler=sampling.sampler,
        cores=sampling.cores,
        target_accept=sampling.target_accept,
        low_rank_mass_matrix=sampling.low_rank_mass_matrix,
        compiled=compiled,
    )
    return idata, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Summaries


def _prob_column(threshold: float) -> str:
    return "prob_hr_gt_" + f"{threshold:g}".replace(".", "_").replace("-", "m")


def _draws(idata: az.InferenceData, name: str) -> np.ndarray:
    return np.asarray(idata["posterior"][name].values, dtype=float)


def _summary_row(
    values: np.ndarray,
    *,
    term: str,
    quantity: str,
    level: str,
    log_hr: bool,
    thresholds: Sequence[float],
    ci_level: float,
    divergences: int,
    n: int,
    events: int,
) -> dict[str, Any]:
    """Summarise one scalar quantity from its ``(chain, draw)`` array."""
    flat = values.ravel()
    alpha = (1.0 - ci_level) / 2.0
    median = float(np.median(flat))
    lower, upper = (float(v) for v in np.quantile(flat, [alpha, 1.0 - alpha]))
    row: dict[str, Any] = {
        "term": term,
        "estimate": median,
        "std_error": float(flat.std(ddof=1)),
        "hr": math.exp(median) if log_hr else np.nan,
        "ci_lower": math.exp(lower) if log_hr else lower,
        "ci_upper": math.exp(upper) if log_hr else upper,
        "p_value": np.nan,
        "n": n,
        "events": events,
        "quantity": quantity,
        "level": level,
    }
    if values.shape[1] >= 4:
        row["r_hat"] = float(az.rhat(values))
        row["ess_bulk"] = float(az.ess(values, method="bulk"))
        row["ess_tail"] = float(az.ess(values, method="tail"))
        row["mcse_median"] = float(az.mcse(values, method="median"))
    else:
        row.update(r_hat=np.nan, ess_bulk=np.nan, ess_tail=np.nan, mcse_median=np.nan)
    row["divergences"] = divergences
    for t in (1.0, *thresholds):
        row[_prob_column(t)] = float((flat > math.log(t)).mean()) if log_hr else np.nan
    return row


def _divergences(idata: az.InferenceData) -> int:
    stats = idata.get("sample_stats")
    if stats is None or "diverging" not in stats:
        return 0
    return int(np.asarray(stats["diverging"].values).sum())


def _check_diagnostics(table: pd.DataFrame, sampling: SamplerSpec, divergences: int) -> list[str]:
    problems: list[str] = []
    if divergences:
        problems.append(f"{divergences} divergent transitions")
    bad_rhat = table.loc[table["r_hat"] > sampling.rhat_max, "term"].tolist()
    if bad_rhat:
        problems.append(f"R-hat > {sampling.rhat_max:g} for {bad_rhat}")
    low_ess = table.loc[
        (table["ess_bulk"] < sampling.ess_min) | (table["ess_tail"] < sampling.ess_min), "term"
    ].tolist()
    if low_ess:
        problems.append(f"bulk or tail ESS < {sampling.ess_min:g} for {low_ess}")
    if table["r_hat"].isna().any():
        problems.append("R-hat and ESS not computable (fewer than 4 draws)")
    return problems


def _warn(problems: list[str]) -> None:
    if problems:
        warnings.warn(
            "Sampling diagnostics out of bounds: "
            + "; ".join(problems)
            + ". Expected R-hat <= 1.01, ESS >= 400 and no divergences. Increase tune and "
            "draws, raise target_accept, or reparameterise before trusting these numbers.",
            SamplingWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------------------
# Results


class _PosteriorSummary:
    """What both Bayesian results offer on top of their table and ``InferenceData``."""

    __slots__ = ()
    table: pd.DataFrame
    idata: az.InferenceData
    problems: tuple[str, ...]

    def row(self, quantity: str, level: str = "") -> pd.Series:
        """The table row of one quantity, e.g. ``row("pooled")``, ``row("centre", "C01")``."""
        hit = self.table[(self.table["quantity"] == quantity) & (self.table["level"] == level)]
        if hit.empty:
            raise KeyError(f"No row with quantity={quantity!r}, level={level!r}.")
        return hit.iloc[0]

    @property
    def converged(self) -> bool:
        """No diagnostics out of bounds (R-hat, ESS, divergences)."""
        return not self.problems

    def save_netcdf(self, path: str | Path) -> Path:
        """Write the ``InferenceData`` to NetCDF (reopen with ``arviz.from_netcdf``)."""
        out = Path(path)
        self.idata.to_netcdf(str(out))
        return out


@dataclass(frozen=True, slots=True)
class BayesResult(_PosteriorSummary):
    """Posterior summary of the one-stage Bayesian piecewise-exponential model.

    ``table`` is the tidy table (see :meth:`to_frame`); ``idata`` keeps every draw.
    """

    table: pd.DataFrame
    idata: az.InferenceData
    spec: BayesSpec
    seed: int
    cut_points: tuple[float, ...]
    n: int
    events: int
    n_dropped: int
    n_cells: int
    n_exposure_rows: int
    divergences: int
    sampler: str
    elapsed_seconds: float
    problems: tuple[str, ...]

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per reported quantity.

        ``estimate`` is the posterior median (log HR, or tau), ``std_error`` the posterior
        sd, ``hr`` ``exp(median)``, ``ci_lower``/``ci_upper`` the equal-tailed credible
        interval (HR scale; tau scale for ``tau``), ``p_value`` NaN. Extra columns:
        ``quantity`` (pooled, centre, predictive, subtype, interaction, heterogeneity,
        subtype_main, covariate), ``level``, ``r_hat``, ``ess_bulk``, ``ess_tail``,
        ``mcse_median``, ``divergences`` (whole run), ``prob_hr_gt_1`` and one
        ``prob_hr_gt_<t>`` per threshold.
        """
        return self.table.copy()


@dataclass(frozen=True, slots=True)
class BayesMetaResult(_PosteriorSummary):
    """Posterior summary of the Bayesian two-stage random-effects meta-analysis."""

    table: pd.DataFrame
    idata: az.InferenceData
    spec: BayesMetaSpec
    seed: int
    divergences: int
    sampler: str
    problems: tuple[str, ...]

    def to_frame(self) -> pd.DataFrame:
        """Tidy table with the same columns as :meth:`BayesResult.to_frame`."""
        return self.table.copy()


def _rows_common(
    idata: az.InferenceData,
    *,
    term: str,
    centres: Sequence[str],
    centre_n: Sequence[int],
    centre_events: Sequence[int],
    n: int,
    events: int,
    thresholds: Sequence[float],
    ci_level: float,
    divergences: int,
) -> list[dict[str, Any]]:
    posterior = idata["posterior"]

    def summarise(values, **kw):
        return _summary_row(
            values, thresholds=thresholds, ci_level=ci_level, divergences=divergences, **kw
        )

    rows = [
        summarise(
            _draws(idata, "mu"),
            term=term,
            quantity="pooled",
            level="",
            log_hr=True,
            n=n,
            events=events,
        )
    ]
    if "tau" in posterior:
        rows.append(
            summarise(
                _draws(idata, "tau"),
                term="tau",
                quantity="heterogeneity",
                level="",
                log_hr=False,
                n=n,
                events=events,
            )
        )
        rows.append(
            summarise(
                _draws(idata, "new_centre_log_hr"),
                term=f"{term}[new_centre]",
                quantity="predictive",
                level="new_centre",
                log_hr=True,
                n=n,
                events=events,
            )
        )
        centre_draws = _draws(idata, "centre_log_hr")
        for j, name in enumerate(centres):
            rows.append(
                summarise(
                    centre_draws[..., j],
                    term=f"{term}[{name}]",
                    quantity="centre",
                    level=name,
                    log_hr=True,
                    n=centre_n[j],
                    events=centre_events[j],
                )
            )
    return rows


def fit_bayes_survival(
    data: pd.DataFrame,
    spec: BayesSpec | None = None,
    *,
    seed: int,
    compiled: Any | None = None,
) -> BayesResult:
    """Fit the one-stage Bayesian piecewise-exponential model and summarise it.

    Builds the model (:func:`build_piecewise_model`), samples it (:func:`sample`, settings
    from ``spec.sampling``) and reports the posterior median, posterior sd, equal-tailed
    credible interval and ``P(HR > 1)`` (and ``P(HR > t)`` for ``spec.thresholds``) of the
    pooled marker HR, each centre's HR, the predictive HR of a new centre, each subtype's
    marker HR, the interactions, ``tau``, and the adjustment terms, each with R-hat, bulk and
    tail ESS and the number of divergences. Issues a
    :class:`~pooled.errors.SamplingWarning` when R-hat > ``rhat_max``, ESS < ``ess_min`` or
    any transition diverged.

    Parameters
    ----------
    data : patient-level analysis dataset.
    spec : model, prior, sampler and reporting options.
    seed : random seed; the same seed gives the same result.
    compiled : optional nutpie model from :func:`compile_model` to reuse (same structure).

    Returns
    -------
    BayesResult

    References
    ----------
    .. [1] Holford TR. Biometrics 1980;36:299-305 (piecewise exponential / Poisson model).
    .. [2] Gelman A, Hill J. Data Analysis Using Regression and Multilevel/Hierarchical
       Models. Cambridge University Press; 2007.
    .. [3] Vehtari A, Gelman A, Simpson D, Carpenter B, Buerkner PC. Rank-normalization,
       folding, and localization: an improved R-hat. Bayesian Anal 2021;16:667-718.

    Examples
    --------
    >>> spec = BayesSpec(covariates=("node_positive", "grade3"))  # doctest: +SKIP
    >>> res = fit_bayes_survival(dataset, spec, seed=2024)  # doctest: +SKIP
    >>> res.row("pooled")[["hr", "ci_lower", "ci_upper", "prob_hr_gt_1"]]  # doctest: +SKIP
    """
    spec = spec or BayesSpec()
    cells = piecewise_cells(data, spec)
    model = _model_from_cells(cells, spec)
    idata, elapsed = _run(model, spec.sampling, seed, compiled)
    divergences = _divergences(idata)
    sampler = str(idata["posterior"].attrs.get("pooled_sampler", spec.sampling.sampler))
    marker = spec.marker
    kw: dict[str, Any] = {
        "thresholds": spec.thresholds,
        "ci_level": spec.ci_level,
        "divergences": divergences,
    }
    rows = _rows_common(
        idata,
        term=marker,
        centres=cells.centres,
        centre_n=cells.centre_n,
        centre_events=cells.centre_events,
        n=cells.n,
        events=cells.n_events,
        **kw,
    )
    posterior = idata["posterior"]
    subtypes = cells.subtypes
    if "subtype_marker_log_hr" in posterior:
        sub_draws = _draws(idata, "subtype_marker_log_hr")
        inter_draws = _draws(idata, "interaction_log_hr")
        for j, level in enumerate(subtypes):
            rows.append(
                _summary_row(
                    sub_draws[..., j],
                    term=f"{marker}[{level}]",
                    quantity="subtype",
                    level=level,
                    log_hr=True,
                    n=cells.subtype_n[j],
                    events=cells.subtype_events[j],
                    **kw,
                )
            )
        for j, level in enumerate(subtypes[1:]):
            rows.append(
                _summary_row(
                    inter_draws[..., j],
                    term=f"{marker}:{spec.subtype}{level}",
                    quantity="interaction",
                    level=level,
                    log_hr=True,
                    n=cells.n,
                    events=cells.n_events,
                    **kw,
                )
            )
    if "subtype_log_hr" in posterior:
        main = _draws(idata, "subtype_log_hr")
        for j, level in enumerate(subtypes[1:]):
            rows.append(
                _summary_row(
                    main[..., j],
                    term=f"{spec.subtype}{level}",
                    quantity="subtype_main",
                    level=level,
                    log_hr=True,
                    n=cells.n,
                    events=cells.n_events,
                    **kw,
                )
            )
    if "covariate_log_hr" in posterior:
        cov = _draws(idata, "covariate_log_hr")
        # continuous covariates enter per standard deviation: report them per unit
        per_unit = np.concatenate(
            [np.ones(len(cells.terms)), 1.0 / np.asarray(cells.continuous_scales)]
        )
        for j, name in enumerate((*cells.terms, *cells.continuous_terms)):
            rows.append(
                _summary_row(
                    cov[..., j] * per_unit[j],
                    term=name,
                    quantity="covariate",
                    level=name,
                    log_hr=True,
                    n=cells.n,
                    events=cells.n_events,
                    **kw,
                )
            )
    table = tidy_frame(rows)
    table["analysis"] = spec.analysis
    table["endpoint"] = spec.endpoint
    table["model"] = "bayes_piecewise"
    problems = _check_diagnostics(table, spec.sampling, divergences)
    _warn(problems)
    return BayesResult(
        table=table,
        idata=idata,
        spec=spec,
        seed=seed,
        cut_points=cells.cut_points,
        n=cells.n,
        events=cells.n_events,
        n_dropped=cells.n_dropped,
        n_cells=cells.n_cells,
        n_exposure_rows=int(cells.row_exposure.size),
        divergences=divergences,
        sampler=sampler,
        elapsed_seconds=elapsed,
        problems=tuple(problems),
    )


def fit_bayes_meta(
    yi: Sequence[float] | np.ndarray,
    sei: Sequence[float] | np.ndarray,
    labels: Sequence[str],
    spec: BayesMetaSpec | None = None,
    *,
    seed: int,
    compiled: Any | None = None,
) -> BayesMetaResult:
    """Bayesian two-stage random-effects meta-analysis of per-centre log hazard ratios.

    Takes the first stage of the frequentist engine (per-centre ``log_hr`` and ``se``) and
    reports the pooled HR, tau, each centre's shrunken HR and the predictive HR of a new
    centre with the diagnostics of :func:`fit_bayes_survival`.

    References
    ----------
    .. [1] Smith TC, Spiegelhalter DJ, Thomas A. Stat Med 1995;14:2685-99.
    .. [2] Higgins JPT, Thompson SG, Spiegelhalter DJ. A re-evaluation of random-effects
       meta-analysis. J R Stat Soc A 2009;172:137-59.

    Examples
    --------
    >>> res = fit_bayes_meta(per_centre.log_hr, per_centre.se, per_centre.centre,
    ...                      seed=1)  # doctest: +SKIP
    >>> res.row("pooled")["hr"]  # doctest: +SKIP
    """
    spec = spec or BayesMetaSpec()
    names = [str(v) for v in labels]
    model = build_meta_model(yi, sei, names, spec)
    idata, _ = _run(model, spec.sampling, seed, compiled)
    divergences = _divergences(idata)
    rows = _rows_common(
        idata,
        term=spec.term,
        centres=names,
        centre_n=[0] * len(names),
        centre_events=[0] * len(names),
        n=0,
        events=0,
        thresholds=spec.thresholds,
        ci_level=spec.ci_level,
        divergences=divergences,
    )
    table = tidy_frame(rows)
    table[["n", "events"]] = np.nan
    table["analysis"] = spec.analysis
    table["endpoint"] = spec.endpoint
    table["model"] = "bayes_two_stage"
    problems = _check_diagnostics(table, spec.sampling, divergences)
    _warn(problems)
    sampler = str(idata["posterior"].attrs.get("pooled_sampler", spec.sampling.sampler))
    return BayesMetaResult(
        table=table,
        idata=idata,
        spec=spec,
        seed=seed,
        divergences=divergences,
        sampler=sampler,
        problems=tuple(problems),
    )


def with_sampling(spec: BayesSpec, **changes: Any) -> BayesSpec:
    """Copy of ``spec`` with some :class:`SamplerSpec` fields changed (draws, chains, ...)."""
    return replace(spec, sampling=replace(spec.sampling, **changes))

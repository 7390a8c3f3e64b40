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
subtype, covariates         Normal(0, 1)           per unit of a discrete covariate, per
                                                   standard deviation of a continuous one
shared log baseline         RW1: first ~ N(m0, 2), m0 = log(events / person-time)
                            steps ~ N(0, 1)        (hazard of the average patient with an event)
centre baseline level       ZeroSumNormal(1)       centre log-rate offsets
centre x interval dev. sd   HalfNormal(0.3)        non-centred, zero-sum deviations
==========================  =====================  ==========================================

Every result states its priors: the ``prior`` column of :meth:`BayesResult.to_frame`,
:meth:`BayesResult.prior_frame` and :attr:`BayesResult.tau_prior`.

How the model is sampled (the model itself is the one above; these are exact
reparameterisations, chosen so that every parameter reaches R-hat <= 1.01 and ESS >= 400 at
the default 4 chains x (500 + 1,000) on the shipped scenarios and on two-centre cohorts):

* the fixed effects (``mu``, interactions, subtype and covariate effects) are one vector
  ``beta = transform @ z``, with ``transform`` the inverse Cholesky factor of their
  approximate posterior precision (a Poisson-weighted QR reparameterisation), and the
  design centred at its events-weighted mean, so that dummies of a rare reference level,
  correlated dummies and the baseline do not fight (:class:`_FixedEffects`);
* the centre effects are ``beta_c = m + tau * u_c`` (``u`` zero-sum) and
  ``mu = m - tau * zbar``, ``zbar ~ Normal(0, 1 / sqrt(C))``: exactly ``mu + tau * z_c``
  with iid standard normal ``z``, but ``m``, which the data pin, no longer trades off
  against ``tau``;
* ``tau`` and the deviation sd are ``|s|`` with ``s ~ Normal(0, scale)``, exactly
  HalfNormal, without the long left tail of ``log tau`` when the centres agree.

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

import numpy as np
import pandas as pd
import xarray as xr

from pooled.errors import (
    ConfigError,
    ConvergenceError,
    DataError,
    PooledWarning,
    SamplingWarning,
)
from pooled.models._backend import az, pm, pt  # configured PyTensor, quiet ArviZ import
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
    "clear_compiled_models",
    "compile_model",
    "fit_bayes_meta",
    "fit_bayes_survival",
    "model_structure_key",
    "parameter_diagnostics",
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


#: with fewer centres than this, the default target_accept is 0.95 (see SamplerSpec)
FEW_CENTRES = 4


@dataclass(frozen=True, slots=True)
class SamplerSpec:
    """How to sample and when to warn.

    Attributes
    ----------
    draws, tune, chains : posterior draws and tuning steps per chain, number of chains.
        The defaults, 4 chains x (500 tuning + 1,000 draws), give R-hat <= 1.01, bulk and
        tail ESS >= 400 and no divergences for every sampled parameter on the shipped
        scenarios, PADDY-sized, and on two-centre cohorts of 700 to 3,000 patients
        (``bench/results/bayes.md``): with the model's parameterisation nutpie adapts within
        500 steps, and 1,000 draws per chain keep the largest of ~150 R-hats below 1.01.
    sampler : ``"nutpie"`` (compiled with numba; default, falls back to PyMC's NUTS if it
        fails), ``"pymc"`` or ``"numpyro"`` (needs jax and numpyro installed).
    cores : chains run in parallel; ``None`` uses ``min(chains, os.cpu_count())``.
    target_accept : NUTS target acceptance rate. ``None`` (default): 0.95 when the marker
        effects vary between fewer than :data:`FEW_CENTRES` centres, else 0.9. With two or
        three centres tau is informed by little more than its prior while each centre's
        effect is pinned by its data, a funnel where 0.9 left one or two divergences in
        4,000 transitions on a third of two-centre cohorts; 0.95 halves the step size, which
        with many centres only doubles the time. The meta model uses 0.95.
    low_rank_mass_matrix : nutpie's low-rank modified mass matrix adaptation.
    rhat_max, ess_min : a :class:`~pooled.errors.SamplingWarning` is raised when any
        reported quantity or any element of a sampled parameter has R-hat above
        ``rhat_max`` or bulk or tail ESS below ``ess_min``, or when any transition diverged.
    """

    draws: int = 1000
    tune: int = 500
    chains: int = 4
    sampler: Sampler = "nutpie"
    cores: int | None = None
    target_accept: float | None = None
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
        if self.target_accept is not None and not 0 < self.target_accept < 1:
            raise ConfigError(f"target_accept must be in (0, 1); got {self.target_accept}.")

    def resolved_target_accept(self, n_centres: int, random_effects: bool = True) -> float:
        """``target_accept``, or the default for ``n_centres`` centres (see the class)."""
        if self.target_accept is not None:
            return self.target_accept
        return 0.95 if random_effects and 1 < n_centres < FEW_CENTRES else 0.9


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


@dataclass(frozen=True, slots=True)
class _FixedEffects:
    """The fixed-effect log hazard ratios as one vector ``beta``, and how the model samples it.

    ``beta = (mu, interactions, subtype main effects, covariates)``: ``names`` and ``blocks``
    label its entries, ``prior_sd`` are their prior sds. The sampler moves ``z`` with
    ``beta = transform @ z``, where ``transform`` is the inverse (transposed) Cholesky factor
    of an approximate posterior precision of ``beta``: the Poisson information of the design
    with the centre x interval baseline profiled out (weights: person-time x crude rate of the
    centre x interval), plus the prior precision. The ``z`` are then close to uncorrelated
    with unit scale whatever the coding of the covariates (a reference level held by few
    patients, correlated dummies, covariates on different scales): the QR reparameterisation
    of the Stan user's guide, weighted for the Poisson likelihood. The prior stays on
    ``beta`` (a linear map has a constant Jacobian), so the model is unchanged.

    ``mean`` is the events-weighted mean of each design column; the linear predictor is
    centred at it, so the sampled baseline is the hazard of an average patient with an event,
    not of the reference patient, and is not confounded with the effects (the reported
    ``log_baseline`` is the reference patient's, ``x = 0``).
    """

    names: tuple[str, ...]
    blocks: tuple[str, ...]
    prior_sd: np.ndarray
    transform: np.ndarray
    mean: np.ndarray
    pattern_design: np.ndarray  # n_patterns x the columns other than continuous covariates
    event_design: np.ndarray  # sum over events of every design column

    def block(self, name: str) -> slice:
        where = [j for j, b in enumerate(self.blocks) if b == name]
        return slice(where[0], where[-1] + 1) if where else slice(0, 0)


def _fixed_effects(cells: CellData, spec: BayesSpec) -> _FixedEffects:
    pr = spec.priors
    subtypes = cells.subtypes
    marker = cells.pattern_marker
    n_contrast = len(subtypes) - 1
    dummies = np.column_stack(
        [(cells.pattern_subtype == j).astype(float) for j in range(1, len(subtypes))]
        or [np.zeros(marker.size)]
    )[:, :n_contrast]
    columns = [marker[:, None]]
    names, blocks, prior_sd = ["mu"], ["marker"], [pr.marker_sd]
    if spec.interaction and n_contrast:
        columns.append(marker[:, None] * dummies)
        names += [f"{spec.marker}:{s}" for s in subtypes[1:]]
        blocks += ["interaction"] * n_contrast
        prior_sd += [pr.interaction_sd] * n_contrast
    if n_contrast:
        columns.append(dummies)
        names += [f"subtype[{s}]" for s in subtypes[1:]]
        blocks += ["subtype"] * n_contrast
        prior_sd += [pr.covariate_sd] * n_contrast
    columns.append(cells.pattern_x)
    terms = (*cells.terms, *cells.continuous_terms)
    names += list(terms)
    blocks += ["covariate"] * len(terms)
    prior_sd += [pr.covariate_sd] * len(terms)
    pattern_design = np.column_stack(columns)
    sd = np.asarray(prior_sd, dtype=float)

    # crude rate of each centre x interval: a unit's expected events under the baseline alone
    n_centre, n_int = len(cells.centres), cells.n_intervals
    events_ck = np.zeros((n_centre, n_int))
    np.add.at(events_ck, (cells.cell_centre, cells.cell_interval), cells.events)
    exposure_ck = np.zeros((n_centre, n_int))
    np.add.at(exposure_ck, cells.pattern_centre, cells.pattern_exposure)
    rate = np.divide(events_ck, exposure_ck, out=np.zeros_like(events_ck), where=exposure_ck > 0)
    if cells.continuous_terms:
        design = np.column_stack([pattern_design[cells.patient_pattern], cells.patient_x])
        centre = cells.pattern_centre[cells.patient_pattern]
        unit_exposure = cells.patient_exposure
    else:
        design, centre, unit_exposure = pattern_design, cells.pattern_centre, cells.pattern_exposure
    # within centre x interval weighted cross-products: sum w x x' - sum_ck W_ck xbar xbar'
    sums = np.zeros((n_centre, n_int, design.shape[1]))
    np.add.at(sums, centre, unit_exposure[:, :, None] * design[:, None, :])
    means = np.divide(
        sums, exposure_ck[:, :, None], out=np.zeros_like(sums), where=exposure_ck[:, :, None] > 0
    )
    weight = (unit_exposure * rate[centre]).sum(axis=1)
    information = (design * weight[:, None]).T @ design
    information -= np.einsum("ck,ckp,ckq->pq", exposure_ck * rate, means, means)
    precision = (information + information.T) / 2 + np.diag(1.0 / sd**2)
    try:
        transform = np.linalg.inv(np.linalg.cholesky(precision)).T
    except np.linalg.LinAlgError:  # pragma: no cover - the prior precision keeps it PD
        transform = np.diag(1.0 / np.sqrt(np.diag(precision)))
    event_pattern = np.bincount(cells.cell_pattern, weights=cells.events, minlength=len(marker))
    event_design = np.concatenate([event_pattern @ pattern_design, cells.event_x_sum])
    return _FixedEffects(
        names=tuple(names),
        blocks=tuple(blocks),
        prior_sd=sd,
        transform=transform,
        mean=event_design / max(float(cells.events.sum()), 1.0),
        pattern_design=pattern_design,
        event_design=event_design,
    )


def _half_normal(name: str, sigma: float) -> Any:
    """A HalfNormal(sigma) scale, sampled as |s| with s ~ Normal(0, sigma) (``<name>_signed``).

    On the log scale PyMC would sample, a scale whose posterior reaches down to 0 (tau when
    the centres agree, as is common) has a long exponential left tail that NUTS crosses
    slowly: tail ESS of tau below 400 where everything else mixes well. |s| has exactly the
    HalfNormal(sigma) prior, and ``s`` has a flat-topped, symmetric posterior around 0
    instead. The sign of ``s`` is not identified, so diagnostics are taken on ``|s|``.
    """
    signed = pm.Normal(f"{name}_signed", 0.0, sigma)
    return pm.Deterministic(name, pt.abs(signed))


def _model_from_cells(cells: CellData, spec: BayesSpec) -> pm.Model:
    pr = spec.priors
    n_centre, n_int, n_sub = len(cells.centres), cells.n_intervals, len(cells.subtypes)
    fixed = _fixed_effects(cells, spec)
    terms = (*cells.terms, *cells.continuous_terms)
    coords: dict[str, Any] = {
        "centre": list(cells.centres),
        "interval": _interval_labels(cells.cut_points),
        "subtype": list(cells.subtypes),
        "subtype_contrast": list(cells.subtypes[1:]),
        "term": list(terms),
        "fixed_effect": list(fixed.names),
    }
    person_time = float(cells.pattern_exposure.sum())
    log_rate = math.log(max(cells.n_events, 1) / person_time)
    # check_bounds=False: every constrained parameter is sampled on a transformed scale and
    # every prior scale is a positive constant (PriorSpec checks it), so the parameter checks
    # only add nodes to the compiled graph
    with pm.Model(coords=coords, check_bounds=False) as model:
        # Baseline of the average patient with an event: crude log rate + shared random walk
        # (centred at 0, so the initial point does not depend on the data) + zero-sum centre
        # levels + zero-sum centre x interval deviations.
        crude = pm.Data("log_rate_crude", np.asarray(log_rate))
        if n_int > 1:
            shared = pm.GaussianRandomWalk(
                "log_baseline_shared",
                mu=0.0,
                sigma=pr.baseline_rw_sd,
                init_dist=pm.Normal.dist(0.0, pr.baseline_level_sd),
                dims="interval",
            )
        else:
            shared = pm.Normal("log_baseline_shared", 0.0, pr.baseline_level_sd, dims="interval")
        average = pt.broadcast_to(crude + shared[None, :], (n_centre, n_int))
        if n_centre > 1:
            level = pm.ZeroSumNormal("centre_log_baseline", sigma=pr.centre_level_sd, dims="centre")
            average = average + level[:, None]
            if spec.baseline == "hierarchical" and n_int > 1:
                dev_sd = _half_normal("baseline_deviation_sd", pr.baseline_deviation_sd)
                dev_z = pm.ZeroSumNormal(
                    "baseline_deviation_z", sigma=1.0, dims=("centre", "interval"), n_zerosum_axes=2
                )
                average = average + dev_sd * dev_z

        # Fixed effects beta = transform @ z (see _FixedEffects), their prior on beta.
        # With random centre effects beta[0] is the centre average m of the marker effects:
        # beta_c = m + tau * u_c with u zero-sum, and mu = m - tau * zbar with
        # zbar ~ N(0, 1/sqrt(C)). With z_c = u_c + zbar this is exactly beta_c = mu + tau * z_c,
        # z_c ~ N(0, 1) iid, but the data pin m, which no longer trades off against tau.
        z = pm.Flat("fixed_effects_z", dims="fixed_effect")
        beta = pt.dot(pm.Data("fixed_effects_transform", fixed.transform), z)
        random = spec.centre_effects == "random" and n_centre > 1
        if random:
            tau = _half_normal("tau", pr.tau_sd)
            centre_z = pm.ZeroSumNormal("centre_z", sigma=1.0, dims="centre")
            centre_z_mean = pm.Normal("centre_z_mean", 0.0, 1.0 / math.sqrt(n_centre))
            centre_dev = tau * centre_z
            mu = pm.Deterministic("mu", beta[0] - tau * centre_z_mean)
            pm.Deterministic("centre_log_hr", beta[0] + centre_dev, dims="centre")
            new_z = pm.Normal("new_centre_z", 0.0, 1.0)
            pm.Deterministic("new_centre_log_hr", mu + tau * new_z)
            prior_beta = pt.set_subtensor(beta[0], mu)
        else:
            mu = pm.Deterministic("mu", beta[0])
            centre_dev = pt.zeros(n_centre)
            prior_beta = beta
        pm.Potential(
            "fixed_effects_prior", pm.logp(pm.Normal.dist(0.0, fixed.prior_sd), prior_beta).sum()
        )
        offset = pt.dot(pm.Data("fixed_effects_mean", fixed.mean), beta)
        log_baseline = pm.Deterministic(
            "log_baseline", average - offset, dims=("centre", "interval")
        )
        if fixed.block("interaction").stop > fixed.block("interaction").start:
            inter = pm.Deterministic(
                "interaction_log_hr", beta[fixed.block("interaction")], dims="subtype_contrast"
            )
            pm.Deterministic(
                "subtype_marker_log_hr",
                mu + pt.concatenate([pt.zeros(1), inter]),
                dims="subtype",
            )
        if n_sub > 1:
            pm.Deterministic(
                "subtype_log_hr", beta[fixed.block("subtype")], dims="subtype_contrast"
            )
        if terms:
            pm.Deterministic("covariate_log_hr", beta[fixed.block("covariate")], dims="term")
        loglik = _log_likelihood(cells, fixed, log_baseline, beta, centre_dev)
        pm.Potential("loglik", loglik)
    return model


def _log_likelihood(
    cells: CellData, fixed: _FixedEffects, log_baseline: Any, beta: Any, centre_dev: Any
) -> Any:
    """Piecewise-exponential log-likelihood ``sum d * eta - e * exp(eta)``, collapsed.

    The event part is linear in the parameters: it needs event totals by centre x interval,
    by centre among marker-positive patients, and of every design column. The person-time
    part runs over patterns x intervals (``exp(eta)`` times the pattern's person-time). With
    continuous covariates each patient's person-time is weighted by ``exp(x * gamma)``
    first; as a patient has the full width of every interval before the last, that takes one
    ``exp`` and two scatter-adds per patient and a cumulative sum over intervals, not a
    patient x interval array.

    Every array enters as ``pm.Data`` with no static shape, so the compiled graph does not
    depend on the data: it is reused across data sets of the same structure.
    """
    n_centre = len(cells.centres)
    n_pattern_columns = fixed.pattern_design.shape[1]
    beta_pattern, beta_continuous = beta[:n_pattern_columns], beta[n_pattern_columns:]
    events_ck = np.zeros((n_centre, cells.n_intervals))
    np.add.at(events_ck, (cells.cell_centre, cells.cell_interval), cells.events)
    events_marker = np.bincount(
        cells.cell_centre, weights=cells.events * cells.cell_marker, minlength=n_centre
    )
    loglik = (
        pt.sum(pm.Data("events_centre_interval", events_ck) * log_baseline)
        + pt.dot(pm.Data("events_design", fixed.event_design), beta)
        + pt.dot(pm.Data("events_marker_centre", events_marker), centre_dev)
    )
    centre = pm.Data("pattern_centre", cells.pattern_centre)
    marker = pm.Data("pattern_marker", cells.pattern_marker)
    design = pm.Data("pattern_design", fixed.pattern_design)
    eta = (
        log_baseline[centre] + (pt.dot(design, beta_pattern) + marker * centre_dev[centre])[:, None]
    )
    if cells.continuous_terms:
        # person-time of pattern p in interval k, each patient weighted by u = exp(x * gamma):
        # the full width of k times the u of the pattern's patients still at risk after k,
        # plus the partial person-time of those whose follow-up ends in k
        weight = pt.exp(pt.dot(pm.Data("patient_x", cells.patient_x), beta_continuous))
        group = pm.Data(
            "patient_group", cells.patient_pattern * cells.n_intervals + cells.patient_last
        )
        flat = pt.zeros(eta.shape[0] * eta.shape[1])
        ending = pt.inc_subtensor(flat[group], weight).reshape(eta.shape)
        partial = pm.Data("patient_partial", cells.patient_partial)
        partial_sum = pt.inc_subtensor(flat[group], weight * partial).reshape(eta.shape)
        beyond = pt.cumsum(ending[:, ::-1], axis=1)[:, ::-1] - ending
        width = pm.Data("interval_width", cells.interval_width)
        exposure = width[None, :] * beyond + partial_sum
    else:
        exposure = pm.Data("pattern_exposure", cells.pattern_exposure)
    return loglik - pt.sum(exposure * pt.exp(eta))


def build_piecewise_model(data: pd.DataFrame, spec: BayesSpec | None = None) -> pm.Model:
    """Build (never sample) the Bayesian piecewise-exponential proportional-hazards model.

    The hazard of patient ``i`` in centre ``c``, interval ``k``, subtype ``s`` is

    ``log h = log_baseline[c, k] + m_i * (beta_c + delta_s) + gamma_s + x_i' gamma``

    with ``beta_c = mu + tau * z_c`` (non-centred), ``delta_s`` the marker x subtype
    interactions (reference subtype 0), ``gamma_s`` subtype main effects and ``gamma`` the
    adjustment covariates (numeric ones centred at their mean, continuous ones per standard
    deviation). ``log_baseline[c, k]`` is a shared random-walk curve plus a zero-sum centre
    level plus zero-sum centre x interval deviations with a learned sd; the sampled curve is
    that of the average patient with an event (see the module docstring for how the model is
    parameterised for sampling). The likelihood is the exact piecewise-exponential
    (Poisson-kernel) likelihood on collapsed cells, added as the potential ``loglik``.

    Parameters
    ----------
    data : patient-level analysis dataset.
    spec : model options; defaults to ``BayesSpec()``.

    Returns
    -------
    pm.Model
        With coords ``centre``, ``interval``, ``subtype``, ``subtype_contrast``, ``term``,
        ``fixed_effect``.

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
        tau = _half_normal("tau", spec.priors.tau_sd)
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

    The data of the piecewise and meta models are ``pm.Data`` containers without static
    shapes, so a model compiled once can sample any data set of the same structure (same
    number of centres, intervals, subtypes and covariate terms, same options and priors):
    pass it to :func:`sample` (or the ``fit_*`` functions) as ``compiled``. Compiling costs
    tens of seconds of CPU; sampling a PADDY-sized model a few seconds.

    :func:`sample` also keeps every model it compiled for the rest of the process, keyed by
    the model's structure (:func:`model_structure_key`), so a second fit of the same structure
    does not compile again. Across processes only PyTensor's on-disk cache of its numba
    functions helps: nutpie's compiled entry points hold pointers to this process's data and
    cannot be cached by numba, and PyTensor's key for the whole graph is not yet stable
    across processes.
    """
    import nutpie

    # var_names=[]: nutpie keeps the unconstrained draws only, so its second compiled
    # function (the "expand" of draws into variables) is a copy, not the transforms (a third
    # of the compile time); _complete_posterior transforms them in numpy
    return nutpie.compile_pymc_model(model, backend="numba", var_names=[])


#: nutpie models compiled in this process, by model structure (most recent last)
_COMPILED: dict[str, Any] = {}
_COMPILED_MAX = 8


def model_structure_key(model: pm.Model) -> str:
    """A key that two models share exactly when one's compiled code samples the other.

    The printed log-density graph (operations, constants, the names of the data containers,
    not their values) with the free variables' names and shapes and the deterministics'
    names: data sets of one structure share it, a change of priors, options, or numbers of
    centres, intervals, subtypes or terms changes it.
    """
    import hashlib
    import io

    from pytensor.printing import debugprint

    text = io.StringIO()
    debugprint(model.logp(), file=text, print_type=True)
    dims = model.named_vars_to_dims
    shapes = [
        (var.name, tuple(len(model.coords[d]) for d in dims.get(var.name, ())))
        for var in model.free_RVs
    ]
    text.write(repr(sorted(shapes)))
    text.write(repr(sorted(var.name for var in model.deterministics)))
    text.write(repr(sorted((var.name, var.ndim) for var in model.data_vars)))
    return hashlib.sha256(text.getvalue().encode()).hexdigest()


def clear_compiled_models() -> None:
    """Forget the models compiled in this process (the next fit compiles again)."""
    _COMPILED.clear()


def _compiled_for(model: pm.Model) -> Any:
    key = model_structure_key(model)
    compiled = _COMPILED.pop(key, None)
    if compiled is None:
        compiled = compile_model(model)
    _COMPILED[key] = compiled
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.pop(next(iter(_COMPILED)))
    return _with_model_data(compiled, model)


def _with_model_data(compiled: Any, model: pm.Model) -> Any:
    """``compiled`` with ``model``'s data and coordinate labels (same structure)."""
    import dataclasses

    known = set(compiled.shared_data)  # data the compiled graph does not use were dropped
    compiled = compiled.with_data(
        **{name: value for name, value in _model_data(model).items() if name in known}
    )
    coords = dict(compiled.coords or {})
    coords.update({name: pd.Index(values) for name, values in model.coords.items()})
    return dataclasses.replace(compiled, _coords=coords)


def _extend_zero_sum(values: np.ndarray, axis: int) -> np.ndarray:
    """PyMC's ``ZeroSumTransform.extend_axis`` in numpy: n - 1 free values to n summing to 0."""
    n = values.shape[axis] + 1
    total = values.sum(axis=axis, keepdims=True)
    norm = total / (math.sqrt(n) + n)
    return np.concatenate([values, norm - total / math.sqrt(n)], axis=axis) - norm


def _constrained(post: xr.Dataset, model: pm.Model) -> xr.Dataset:
    """Free variables from their unconstrained draws (the value variables nutpie stores)."""
    from pymc.distributions.transforms import ZeroSumTransform
    from pymc.logprob.transforms import LogTransform

    dims = model.named_vars_to_dims
    out = post.copy()
    for rv in model.free_RVs:
        value = model.rvs_to_values[rv]
        if value.name not in out:
            continue
        draws = np.asarray(out[value.name].values)
        transform = model.rvs_to_transforms.get(rv)
        if transform is None:
            values = draws
        elif isinstance(transform, LogTransform):
            values = np.exp(draws)
        elif isinstance(transform, ZeroSumTransform):
            values = draws
            for axis in transform.zerosum_axes:
                values = _extend_zero_sum(values, axis)
        else:  # pragma: no cover - no other transform in this module's models
            values = transform.backward(pt.as_tensor(draws), *rv.owner.inputs).eval()
        rv_dims = tuple(dims.get(rv.name, ()))
        if len(rv_dims) != values.ndim - 2:
            rv_dims = tuple(f"{rv.name}_dim_{j}" for j in range(values.ndim - 2))
        coords = {d: list(model.coords[d]) for d in rv_dims if d in model.coords}
        out = out.drop_vars(value.name)
        out[rv.name] = xr.DataArray(
            values,
            dims=("chain", "draw", *rv_dims),
            coords={"chain": post["chain"], "draw": post["draw"], **coords},
        )
    return out.drop_dims(
        [
            d
            for d in out.dims
            if d not in ("chain", "draw") and not any(d in v.dims for v in out.data_vars.values())
        ]
    )


def _complete_posterior(idata: az.InferenceData, model: pm.Model) -> az.InferenceData:
    """Add the deterministics of the models of this module to a posterior of free variables.

    nutpie is compiled for the free variables only (a second compiled function for the
    deterministics doubles the numba compile time); they are cheap to compute in numpy from
    the free variables and the model's data.
    """
    post = _constrained(idata["posterior"], model)
    for name in ("tau", "baseline_deviation_sd"):
        if f"{name}_signed" in post:
            post[name] = np.abs(post[f"{name}_signed"])
    idata["posterior"] = post
    names = set(model.named_vars)
    data = _model_data(model)
    if "fixed_effects_z" in post:
        z = post["fixed_effects_z"]
        beta = z.copy(data=np.einsum("pq,cdq->cdp", data["fixed_effects_transform"], z.values))
        # the layout of beta (see _FixedEffects): mu, interactions, subtype effects, covariates
        n_contrast = len(model.coords["subtype_contrast"])
        start = 1
        first = beta.isel(fixed_effect=0, drop=True)
        if "centre_z_mean" in post:  # random centre effects: beta[0] is their centre average
            post["mu"] = first - post["tau"] * post["centre_z_mean"]
            post["centre_log_hr"] = first + post["tau"] * post["centre_z"]
            post["new_centre_log_hr"] = post["mu"] + post["tau"] * post["new_centre_z"]
        else:
            post["mu"] = first
        for name, size, dim in (
            ("interaction_log_hr", n_contrast, "subtype_contrast"),
            ("subtype_log_hr", n_contrast, "subtype_contrast"),
            ("covariate_log_hr", len(model.coords["term"]), "term"),
        ):
            if name in names:
                block = beta.isel(fixed_effect=slice(start, start + size))
                post[name] = block.rename(fixed_effect=dim).assign_coords(
                    {dim: list(model.coords[dim])}
                )
                start += size
        if "log_baseline" in names:
            average = post["log_baseline_shared"] + float(data["log_rate_crude"])
            if "centre_log_baseline" in post:
                average = average + post["centre_log_baseline"]
            else:
                average = average.expand_dims(centre=list(model.coords["centre"]), axis=2)
            if "baseline_deviation_z" in post:
                average = average + post["baseline_deviation_sd"] * post["baseline_deviation_z"]
            offset = xr.DataArray(
                np.einsum("p,cdp->cd", data["fixed_effects_mean"], beta.values),
                dims=("chain", "draw"),
            )
            post["log_baseline"] = (average - offset).transpose(
                "chain", "draw", "centre", "interval"
            )
    if "centre_z" in post and "tau" in post and "centre_log_hr" not in post:  # meta model
        post["centre_log_hr"] = post["mu"] + post["tau"] * post["centre_z"]
        post["new_centre_log_hr"] = post["mu"] + post["tau"] * post["new_centre_z"]
    if "interaction_log_hr" in post and "subtype_marker_log_hr" in names:
        inter = post["interaction_log_hr"].rename(subtype_contrast="subtype")
        reference = (post["mu"] * 0.0).expand_dims(subtype=[model.coords["subtype"][0]])
        full = xr.concat([reference, inter], dim="subtype").transpose("chain", "draw", "subtype")
        post["subtype_marker_log_hr"] = post["mu"] + full
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
        its data are replaced by this model's, skipping compilation. Without it, a model of
        a structure compiled before in this process is reused (:func:`compile_model`).

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
                compiled = _compiled_for(model)
            else:
                compiled = _with_model_data(compiled, model)
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
    model: pm.Model,
    sampling: SamplerSpec,
    seed: int,
    compiled: Any | None = None,
    *,
    target_accept: float = 0.9,
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
        target_accept=target_accept,
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


def parameter_diagnostics(idata: az.InferenceData, names: Sequence[str]) -> pd.DataFrame:
    """R-hat and bulk / tail ESS of every element of every sampled parameter ``names``.

    One row per parameter: its number of elements, the largest R-hat and the smallest bulk
    and tail ESS over them (rank-normalised split R-hat and ESS of Vehtari et al. 2021).
    """
    post = idata["posterior"]
    present = [name for name in names if name in post]
    rows = []
    if present and post.sizes.get("draw", 0) >= 4:
        subset = post[present]
        rhat = az.rhat(subset)
        bulk = az.ess(subset, method="bulk")
        tail = az.ess(subset, method="tail")
        for name in present:
            rows.append(
                {
                    "parameter": name,
                    "size": int(np.prod(post[name].shape[2:], dtype=int)),
                    "r_hat": float(np.nanmax(rhat[name].values)),
                    "ess_bulk": float(np.nanmin(bulk[name].values)),
                    "ess_tail": float(np.nanmin(tail[name].values)),
                }
            )
    else:
        rows = [
            {"parameter": n, "size": 0, "r_hat": np.nan, "ess_bulk": np.nan, "ess_tail": np.nan}
            for n in present
        ]
    return pd.DataFrame(rows, columns=["parameter", "size", "r_hat", "ess_bulk", "ess_tail"])


def _sampled_parameters(model: pm.Model) -> list[str]:
    """The free variables, a scale sampled with a sign (``_half_normal``) as the scale."""
    return [v.name.removesuffix("_signed") for v in model.free_RVs]


def parameter_diagnostics_empty() -> pd.DataFrame:
    return pd.DataFrame(columns=["parameter", "size", "r_hat", "ess_bulk", "ess_tail"])


def _prior_frame(spec: BayesSpec | BayesMetaSpec) -> pd.DataFrame:
    pr = spec.priors
    rows = [
        ("mu", f"Normal(0, {pr.marker_sd:g})", "pooled marker log HR"),
        ("tau", f"HalfNormal({pr.tau_sd:g})", "between-centre sd of the marker log HR"),
        ("centre_log_hr", "Normal(mu, tau)", "each centre's marker log HR (non-centred)"),
    ]
    if isinstance(spec, BayesSpec):
        rows += [
            ("interaction_log_hr", f"Normal(0, {pr.interaction_sd:g})", "marker x subtype"),
            ("subtype_log_hr", f"Normal(0, {pr.covariate_sd:g})", "subtype main effects"),
            (
                "covariate_log_hr",
                f"Normal(0, {pr.covariate_sd:g})",
                "per unit of a discrete covariate, per standard deviation of a continuous one",
            ),
            (
                "log_baseline_shared",
                f"GaussianRandomWalk(first ~ Normal(log(events / person-time), "
                f"{pr.baseline_level_sd:g}), steps ~ Normal(0, {pr.baseline_rw_sd:g}))",
                "log hazard of the average patient with an event, per interval",
            ),
            ("centre_log_baseline", f"ZeroSumNormal({pr.centre_level_sd:g})", "centre levels"),
            (
                "baseline_deviation_sd",
                f"HalfNormal({pr.baseline_deviation_sd:g})",
                "sd of the zero-sum centre x interval deviations of the log baseline",
            ),
        ]
    return pd.DataFrame(rows, columns=["parameter", "prior", "scale"])


def _row_priors(
    table: pd.DataFrame, spec: BayesSpec | BayesMetaSpec, continuous: Sequence[str] = ()
) -> list[str]:
    pr = spec.priors
    by_quantity = {
        "pooled": f"Normal(0, {pr.marker_sd:g})",
        "heterogeneity": f"HalfNormal({pr.tau_sd:g})",
        "centre": "Normal(mu, tau)",
        "predictive": "Normal(mu, tau)",
        "subtype": "mu + interaction",
        "interaction": f"Normal(0, {pr.interaction_sd:g})",
        "subtype_main": f"Normal(0, {pr.covariate_sd:g})",
        "covariate": f"Normal(0, {pr.covariate_sd:g})",
    }
    out = []
    for quantity, term in zip(table["quantity"], table["term"], strict=True):
        prior = by_quantity.get(str(quantity), "")
        if quantity == "covariate" and term in set(continuous):
            prior += " per sd"
        out.append(prior)
    return out


def _check_diagnostics(
    table: pd.DataFrame,
    sampling: SamplerSpec,
    divergences: int,
    parameters: pd.DataFrame | None = None,
) -> list[str]:
    """What is out of bounds, over the reported quantities and every sampled parameter."""
    problems: list[str] = []
    if divergences:
        problems.append(f"{divergences} divergent transitions")
    checked = [(table, "term")]
    if parameters is not None and len(parameters):
        checked.append((parameters, "parameter"))
    bad_rhat: list[str] = []
    low_ess: list[str] = []
    for frame, label in checked:
        bad_rhat += frame.loc[frame["r_hat"] > sampling.rhat_max, label].tolist()
        low_ess += frame.loc[
            (frame["ess_bulk"] < sampling.ess_min) | (frame["ess_tail"] < sampling.ess_min), label
        ].tolist()
    if bad_rhat:
        problems.append(f"R-hat > {sampling.rhat_max:g} for {list(dict.fromkeys(bad_rhat))}")
    if low_ess:
        problems.append(
            f"bulk or tail ESS < {sampling.ess_min:g} for {list(dict.fromkeys(low_ess))}"
        )
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
    parameters: pd.DataFrame
    spec: Any

    @property
    def tau_prior(self) -> str:
        """The prior of the between-centre sd ``tau``, e.g. ``"HalfNormal(0.5)"``."""
        return f"HalfNormal({self.spec.priors.tau_sd:g})"

    def prior_frame(self) -> pd.DataFrame:
        """Every prior of the model: columns ``parameter``, ``prior``, ``scale`` (log HR
        unless stated)."""
        return _prior_frame(self.spec)

    @property
    def max_r_hat(self) -> float:
        """Largest R-hat over the reported quantities and every sampled parameter."""
        values = [self.table["r_hat"].max(), self.parameters["r_hat"].max()]
        return float(np.nanmax([v for v in values if pd.notna(v)] or [np.nan]))

    @property
    def min_ess(self) -> float:
        """Smallest bulk or tail ESS over the reported quantities and every sampled parameter."""
        frames = (self.table, self.parameters)
        values = [f[c].min() for f in frames for c in ("ess_bulk", "ess_tail") if len(f)]
        return float(np.nanmin([v for v in values if pd.notna(v)] or [np.nan]))

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
    n_zero_time: int = 0
    parameters: pd.DataFrame = field(default_factory=lambda: parameter_diagnostics_empty())
    target_accept: float = 0.9

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per reported quantity.

        ``estimate`` is the posterior median (log HR, or tau), ``std_error`` the posterior
        sd, ``hr`` ``exp(median)``, ``ci_lower``/``ci_upper`` the equal-tailed credible
        interval (HR scale; tau scale for ``tau``), ``p_value`` NaN. Extra columns:
        ``quantity`` (pooled, centre, predictive, subtype, interaction, heterogeneity,
        subtype_main, covariate), ``level``, ``r_hat``, ``ess_bulk``, ``ess_tail``,
        ``mcse_median``, ``divergences`` (whole run), ``prob_hr_gt_1`` and one
        ``prob_hr_gt_<t>`` per threshold, ``prior`` (the quantity's prior, e.g.
        ``HalfNormal(0.5)`` for tau) and ``n_zero_time`` (patients with a time of 0, used).
        Every sampled parameter's diagnostics are in ``parameters``.
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
    parameters: pd.DataFrame = field(default_factory=lambda: parameter_diagnostics_empty())

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
    tail ESS, the number of divergences and its prior; every sampled parameter's worst R-hat
    and ESS are in ``parameters``. Issues a :class:`~pooled.errors.SamplingWarning` when any
    of them has R-hat > ``rhat_max`` or ESS < ``ess_min``, or any transition diverged. A
    model of a structure compiled before in the process is not compiled again.

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
    n_centres = len(cells.centres)
    target_accept = spec.sampling.resolved_target_accept(
        n_centres, random_effects=spec.centre_effects == "random"
    )
    idata, elapsed = _run(model, spec.sampling, seed, compiled, target_accept=target_accept)
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
    table["prior"] = _row_priors(table, spec, cells.continuous_terms)
    table["n_zero_time"] = cells.n_zero_time
    parameters = parameter_diagnostics(idata, _sampled_parameters(model))
    problems = _check_diagnostics(table, spec.sampling, divergences, parameters)
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
        n_zero_time=cells.n_zero_time,
        parameters=parameters,
        target_accept=target_accept,
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
    idata, _ = _run(
        model, spec.sampling, seed, compiled, target_accept=spec.sampling.target_accept or 0.95
    )
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
    table["prior"] = _row_priors(table, spec)
    parameters = parameter_diagnostics(idata, _sampled_parameters(model))
    problems = _check_diagnostics(table, spec.sampling, divergences, parameters)
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
        parameters=parameters,
    )


def with_sampling(spec: BayesSpec, **changes: Any) -> BayesSpec:
    """Copy of ``spec`` with some :class:`SamplerSpec` fields changed (draws, chains, ...)."""
    return replace(spec, sampling=replace(spec.sampling, **changes))

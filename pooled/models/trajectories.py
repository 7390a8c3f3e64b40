"""Group-based trajectory models of serial CTC counts.

A finite mixture of count regressions on time since baseline (Nagin's group-based trajectory
model): every patient belongs to one of ``K`` latent groups, and all samples of a patient share
the group's mean curve

    log E[count_ij | group k] = b_k0 + b_k1 t_ij + ... + b_kd t_ij^d + log(volume_ij / 7.5),

so the curves are counts per 7.5 ml of blood. The count distribution is Poisson, negative
binomial (NB2, a dispersion per group) or zero-inflated Poisson (a zero-inflation probability
per group). The model is fitted by EM from many seeded starts (random initial memberships, as
R's ``flexmix`` does), vectorised over starts, with a Newton step (with step halving, so EM
stays monotone) for the regression part of each M-step; the best starts are then run on to
the optimum by L-BFGS-B with the analytic score (EM crawls where groups overlap). Standard
errors come from the observed information. The number of groups is chosen by BIC (or AIC).
BIC's ``n`` is the number of patients by default, as in the group-based trajectory literature;
``TrajectorySpec(bic_n="samples")`` gives ``flexmix``'s ``BIC()``, which counts samples (rows)
even with a grouping variable. Each result states the ``n`` it used (``bic_n``).

Public API: :class:`TrajectorySpec`, :func:`fit_trajectories` -> :class:`TrajectoryResult`,
:func:`select_trajectories` -> :class:`TrajectorySelection`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from pooled.errors import (
    ConfigError,
    ConvergenceError,
    ConvergenceWarning,
    DataError,
    PooledWarning,
)
from pooled.results import tidy_frame

Family = Literal["poisson", "negbin", "zip"]
OrderBy = Literal["intercept", "mean"]
Criterion = Literal["bic", "aic"]
BicN = Literal["patients", "samples"]

_FAMILIES: tuple[str, ...] = ("poisson", "negbin", "zip")
_DEFAULT_LABELS: dict[int, tuple[str, ...]] = {
    1: ("all",),
    2: ("low", "high"),
    3: ("low", "intermediate", "high"),
    4: ("undetectable", "low", "intermediate", "high"),
    5: ("undetectable", "low", "intermediate", "high", "very_high"),
    6: ("undetectable", "very_low", "low", "intermediate", "high", "very_high"),
}
_AUX_NAME = {"negbin": "log_theta", "zip": "logit_zero_inflation"}
_LOG_THETA_BOUNDS = (-8.0, 18.0)
_LOGIT_BOUND = 30.0
_EMPTY_GROUP_WEIGHT = 1e-3  # a group holding less than this many patients has collapsed
_BATCH_ELEMENTS = 3_000_000  # starts x samples x groups per vectorised batch


@dataclass(frozen=True, slots=True, kw_only=True)
class TrajectorySpec:
    """Options of a group-based trajectory model.

    Parameters
    ----------
    count, time, volume, patient
        Column names (defaults those of the consortium schema's serial-samples table): the CTC
        count, time since baseline (any unit; coefficients are per that unit, and months keep
        the polynomial well scaled for reporting), the blood volume in ml (``None``: every sample counts as ``reference_volume_ml``)
        and the patient identifier (all samples of a patient belong to one group).
    family
        ``"poisson"``, ``"negbin"`` (NB2, variance ``mu + mu^2 / theta``, one ``theta`` per
        group) or ``"zip"`` (zero-inflated Poisson, one zero-inflation probability per group).
    degree
        Degree of the polynomial in time of every group's log mean (raw powers, as R's
        ``y ~ t + I(t^2)``).
    n_groups
        Number of groups for :func:`fit_trajectories`.
    groups_range
        Numbers of groups compared by :func:`select_trajectories` when no ``k_range`` is given.
    n_starts
        Random starts per number of groups (each a random hard assignment of patients).
    seed
        Seed of the starts; the fit is deterministic for a given seed.
    tol, start_tol
        EM stops when the relative change of the log-likelihood,
        ``|l - l_old| / (|l| + 0.1)`` (flexmix's rule), falls below ``start_tol`` for every
        start; ``tol`` is the stopping tolerance of the polishing of the best ``n_polish``
        starts (L-BFGS-B: ``ftol = tol * 1e-3``, ``gtol = tol * 100`` on the log-likelihood
        divided by its size; EM: relative change below ``tol``).
    max_iter
        Maximum EM iterations per start (in each of the two phases).
    n_polish
        Number of best starts run on to ``tol``.
    polish
        How they are run on: ``"lbfgs"`` (L-BFGS-B on the observed log-likelihood with the
        analytic score, fast where EM crawls, e.g. an over-fitted K) or ``"em"`` (EM until
        the relative change is below ``tol``).
    reference_volume_ml
        Counts are modelled per this volume (7.5 ml, CellSearch's standard draw).
    order_by
        Groups are ordered (and labelled) by the intercept (level at time 0, as the flexmix
        reference) or by the mean log rate over the observed sample times.
    labels
        Group labels from lowest to highest; default by ``K`` (for four groups
        ``undetectable, low, intermediate, high``).
    criterion
        Information criterion :func:`select_trajectories` minimises.
    bic_n
        The ``n`` of BIC = ``-2 loglik + log(n) df``: ``"patients"`` (default) or
        ``"samples"``. The patients are the independent units of the model: the mixture is
        over patients, all samples of a patient share one group, and the likelihood is a
        product over patients. The group-based trajectory literature uses the number of
        subjects (Jones, Nagin and Roeder 2001; Nagin 2005, ch. 4, who discusses both
        choices; PROC TRAJ prints both), so that is the default. ``"samples"`` reproduces R
        ``flexmix``'s ``BIC()``, whose ``nobs`` is the number of rows even with a grouping
        variable (``y ~ x | patient``); it penalises each parameter more (log 1,815 against
        log 400 on ``serial_ctc.csv``) and so tends to choose fewer groups.
    min_group_share
        :func:`select_trajectories` only chooses a ``K`` whose smallest group (by modal
        assignment) holds at least this share of patients.
    min_prior
        A start is abandoned when a group's mixing proportion falls to this value or below
        (flexmix's ``minprior``, which flexmix sets to 0.05 by default; 0 keeps tiny groups).
    compute_se
        Compute standard errors from the observed information (numerical derivative of the
        analytic score) of the best fit.
    """

    count: str = "ctc_count"
    time: str = "days_from_baseline"
    volume: str | None = "ctc_blood_volume_ml"
    patient: str = "patient_id"
    family: Family = "poisson"
    degree: int = 2
    n_groups: int | None = None
    groups_range: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    n_starts: int = 20
    seed: int = 0
    tol: float = 1e-12
    start_tol: float = 1e-6
    max_iter: int = 5000
    n_polish: int = 3
    polish: Literal["lbfgs", "em"] = "lbfgs"
    reference_volume_ml: float = 7.5
    order_by: OrderBy = "intercept"
    labels: tuple[str, ...] | None = None
    criterion: Criterion = "bic"
    bic_n: BicN = "patients"
    min_group_share: float = 0.0
    min_prior: float = 0.0
    compute_se: bool = True

    def __post_init__(self) -> None:
        if self.family not in _FAMILIES:
            raise ConfigError(
                f"TrajectorySpec.family must be one of {', '.join(_FAMILIES)}; got {self.family!r}."
            )
        if not isinstance(self.degree, int) or self.degree < 0 or self.degree > 5:
            raise ConfigError(
                f"TrajectorySpec.degree must be an integer from 0 to 5; got {self.degree!r}."
            )
        if self.n_groups is not None and (self.n_groups < 1 or self.n_groups > 20):
            raise ConfigError(f"TrajectorySpec.n_groups must be 1 to 20; got {self.n_groups}.")
        if not self.groups_range or min(self.groups_range) < 1:
            raise ConfigError(
                f"TrajectorySpec.groups_range must hold numbers of groups >= 1; "
                f"got {self.groups_range!r}."
            )
        for name in ("n_starts", "max_iter", "n_polish"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrajectorySpec.{name} must be >= 1; got {getattr(self, name)}.")
        if not (0 < self.tol < 1 and 0 < self.start_tol < 1):
            raise ConfigError(
                f"TrajectorySpec tolerances must lie in (0, 1); got tol={self.tol}, "
                f"start_tol={self.start_tol}."
            )
        if self.polish not in ("lbfgs", "em"):
            raise ConfigError(
                f"TrajectorySpec.polish must be 'lbfgs' or 'em'; got {self.polish!r}."
            )
        if self.order_by not in ("intercept", "mean"):
            raise ConfigError(
                f"TrajectorySpec.order_by must be 'intercept' or 'mean'; got {self.order_by!r}."
            )
        if self.criterion not in ("bic", "aic"):
            raise ConfigError(
                f"TrajectorySpec.criterion must be 'bic' or 'aic'; got {self.criterion!r}."
            )
        if self.bic_n not in ("patients", "samples"):
            raise ConfigError(
                f"TrajectorySpec.bic_n must be 'patients' or 'samples'; got {self.bic_n!r}."
            )
        if self.reference_volume_ml <= 0:
            raise ConfigError(
                f"TrajectorySpec.reference_volume_ml must be positive; "
                f"got {self.reference_volume_ml}."
            )
        if not (0 <= self.min_group_share < 1 and 0 <= self.min_prior < 1):
            raise ConfigError(
                "TrajectorySpec.min_group_share and min_prior must lie in [0, 1); got "
                f"{self.min_group_share} and {self.min_prior}."
            )

    @property
    def n_parameters_per_group(self) -> int:
        """Regression coefficients plus the dispersion or zero-inflation parameter."""
        return self.degree + 1 + (0 if self.family == "poisson" else 1)

    def n_parameters(self, n_groups: int) -> int:
        """Free parameters of a ``n_groups``-group model (``df`` of AIC and BIC)."""
        return n_groups * self.n_parameters_per_group + n_groups - 1


@dataclass(frozen=True, slots=True)
class TrajectoryResult:
    """A fitted group-based trajectory model (groups ordered from lowest to highest level).

    Attributes
    ----------
    spec : TrajectorySpec
    n_groups : int
    loglik : float
        Log-likelihood at the best of the starts (with the ``log(y!)`` constant, as R).
    df : int
        Free parameters: coefficients, dispersions, ``K - 1`` mixing proportions.
    aic, bic : float
        ``-2 loglik + 2 df`` and ``-2 loglik + log(bic_n) df``.
    bic_n : int
        The ``n`` of the BIC: ``n_patients`` or ``n_samples`` (``spec.bic_n``).
    n_patients, n_samples, n_dropped : int
        Patients and samples used, rows dropped for a missing count, time or volume.
    relative_entropy : float
        ``1 - sum(-p log p) / (N log K)`` of the posterior memberships (NaN for ``K = 1``).
    coefficients : pandas.DataFrame
        One row per group and parameter: ``group, label, term, estimate, std_error``
        (``term`` is ``(Intercept)``, ``<time>``, ``I(<time>^2)``, ..., and ``log_theta`` or
        ``logit_zero_inflation``).
    groups : pandas.DataFrame
        ``group, label, prior, n_patients, share, mean_posterior`` (average posterior
        probability of assignment among the patients assigned to the group), ``intercept``.
    assignments : pandas.DataFrame
        One row per patient: ``<patient>, group, label, max_posterior, posterior_1..K``.
    starts : pandas.DataFrame
        One row per start: ``start, loglik, iterations, status, polished_loglik``.
    n_starts_converged : int
    converged : bool
        Whether the best start met ``tol``.
    iterations : int
    covariance : numpy.ndarray
        Covariance of the free parameters (coefficients by group, then the per-group extra
        parameter, then the ``K - 1`` mixing logits against group 1); NaN when not computed.
    """

    spec: TrajectorySpec
    n_groups: int
    loglik: float
    df: int
    aic: float
    bic: float
    n_patients: int
    n_samples: int
    n_dropped: int
    relative_entropy: float
    coefficients: pd.DataFrame
    groups: pd.DataFrame
    assignments: pd.DataFrame
    starts: pd.DataFrame
    n_starts_converged: int
    converged: bool
    iterations: int
    covariance: np.ndarray = field(repr=False)
    bic_n: int

    @property
    def labels(self) -> tuple[str, ...]:
        """Group labels from lowest to highest."""
        return tuple(self.groups["label"])

    def coefficient_matrix(self) -> np.ndarray:
        """Regression coefficients as a ``(K, degree + 1)`` array (raw time scale)."""
        terms = _term_names(self.spec)
        frame = self.coefficients[self.coefficients["term"].isin(terms)]
        wide = frame.pivot(index="group", columns="term", values="estimate")
        return wide[list(terms)].to_numpy()

    def predict_counts(self, times: Iterable[float]) -> pd.DataFrame:
        """Expected count per ``reference_volume_ml`` of each group at the given times.

        Returns ``group, label, time, expected_count`` (for ZIP ``(1 - p) mu``).
        """
        grid = np.asarray(list(times), dtype=float)
        design = np.vander(grid, self.spec.degree + 1, increasing=True)
        log_mu = design @ self.coefficient_matrix().T
        expected = np.exp(log_mu)
        if self.spec.family == "zip":
            extra = self.coefficients[self.coefficients["term"] == _AUX_NAME["zip"]]
            expected = expected * special.expit(-extra["estimate"].to_numpy())[None, :]
        rows = []
        for k, label in enumerate(self.labels):
            for t, value in zip(grid, expected[:, k], strict=True):
                rows.append({"group": k + 1, "label": label, "time": t, "expected_count": value})
        return pd.DataFrame(rows)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per group coefficient and per mixing proportion.

        ``estimate`` is on the log-rate scale (log theta, logit zero-inflation for the extra
        parameter; the mixing proportion itself for ``prior`` rows), ``ci_lower/ci_upper`` are
        Wald 95 % limits, ``n`` the patients assigned to the group. Extra columns: ``group,
        label, n_groups, family, loglik, df, aic, bic, bic_n``.
        """
        model = f"{self.spec.family} trajectory mixture, K={self.n_groups}"
        z = stats.norm.ppf(0.975)
        sizes = dict(zip(self.groups["group"], self.groups["n_patients"], strict=True))
        common = {
            "analysis": "trajectory",
            "endpoint": self.spec.count,
            "model": model,
            "n_groups": self.n_groups,
            "family": self.spec.family,
            "loglik": self.loglik,
            "df": self.df,
            "aic": self.aic,
            "bic": self.bic,
            "bic_n": self.bic_n,
        }
        rows = []
        for row in self.coefficients.to_dict("records"):
            se = float(row["std_error"])
            est = float(row["estimate"])
            rows.append(
                {
                    **common,
                    "term": f"{row['label']}:{row['term']}",
                    "estimate": est,
                    "std_error": se,
                    "ci_lower": est - z * se,
                    "ci_upper": est + z * se,
                    "p_value": 2 * stats.norm.sf(abs(est / se)) if se > 0 else np.nan,
                    "n": sizes[row["group"]],
                    "group": row["group"],
                    "label": row["label"],
                }
            )
        for row in self.groups.to_dict("records"):
            rows.append(
                {
                    **common,
                    "term": f"{row['label']}:prior",
                    "estimate": float(row["prior"]),
                    "n": row["n_patients"],
                    "group": row["group"],
                    "label": row["label"],
                }
            )
        return tidy_frame(rows)


@dataclass(frozen=True, slots=True)
class TrajectorySelection:
    """Trajectory models for several numbers of groups, compared by BIC and AIC.

    Attributes
    ----------
    spec : TrajectorySpec
    table : pandas.DataFrame
        One row per ``K``: ``n_groups, loglik, df, aic, bic, bic_n, relative_entropy,
        smallest_group_n, smallest_group_share, n_starts_converged, chosen``.
    chosen : int
        The ``K`` with the lowest ``spec.criterion`` among those whose smallest group holds at
        least ``spec.min_group_share`` of the patients.
    fits : Mapping[int, TrajectoryResult]
    """

    spec: TrajectorySpec
    table: pd.DataFrame
    chosen: int
    fits: Mapping[int, TrajectoryResult] = field(repr=False)

    @property
    def best(self) -> TrajectoryResult:
        """The fit with the chosen number of groups."""
        return self.fits[self.chosen]

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per ``K`` (``term`` ``K=k``, ``estimate`` the criterion)."""
        rows = []
        for row in self.table.to_dict("records"):
            k = int(row["n_groups"])
            rows.append(
                {
                    "analysis": "trajectory_selection",
                    "endpoint": self.spec.count,
                    "model": f"{self.spec.family} trajectory mixture",
                    "term": f"K={k}",
                    "estimate": row[self.spec.criterion],
                    "n": self.fits[k].n_patients,
                    **{str(key): value for key, value in row.items()},
                }
            )
        return tidy_frame(rows)


# ---------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True, slots=True)
class _Data:
    y: np.ndarray  # (S,)
    lgy: np.ndarray  # log(y!)
    design: np.ndarray  # (S, P) powers of the scaled time
    design_outer: np.ndarray  # (S, P*P)
    offset: np.ndarray  # (S,)
    patient_index: np.ndarray  # (S,) 0..N-1, sorted
    segments: np.ndarray  # (N,) first sample of each patient
    patients: np.ndarray  # (N,) identifiers
    time_scale: float
    zero: np.ndarray  # (S,) bool
    n_dropped: int

    @property
    def n_patients(self) -> int:
        return len(self.segments)


def _term_names(spec: TrajectorySpec) -> tuple[str, ...]:
    names = ["(Intercept)", spec.time]
    names += [f"I({spec.time}^{d})" for d in range(2, spec.degree + 1)]
    return tuple(names[: spec.degree + 1])


def _prepare(data: pd.DataFrame, spec: TrajectorySpec) -> _Data:
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"Trajectory data must be a pandas DataFrame; got {type(data).__name__}.")
    columns = [spec.patient, spec.time, spec.count] + ([spec.volume] if spec.volume else [])
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise DataError(
            f"Trajectory data lack the column(s) {', '.join(missing)} named in TrajectorySpec; "
            f"the data have {', '.join(map(str, data.columns))}. Rename the columns or set "
            "count=, time=, volume=, patient= in the spec."
        )
    frame = data[columns]
    complete = frame.notna().all(axis=1)
    n_dropped = int((~complete).sum())
    if n_dropped:
        warnings.warn(
            f"{n_dropped} sample(s) with a missing {', '.join(columns[1:])} were left out of "
            "the trajectory model.",
            PooledWarning,
            stacklevel=3,
        )
    frame = frame[complete]
    if frame.empty:
        raise DataError("Trajectory data hold no complete sample (patient, time, count, volume).")
    y = frame[spec.count].to_numpy(dtype=float)
    if (y < 0).any() or not np.allclose(y, np.round(y)):
        raise DataError(
            f"Column {spec.count!r} must hold non-negative whole counts; found e.g. "
            f"{y[(y < 0) | (y != np.round(y))][:3].tolist()}."
        )
    if spec.volume:
        volume = frame[spec.volume].to_numpy(dtype=float)
        if (volume <= 0).any():
            raise DataError(
                f"Column {spec.volume!r} must hold positive blood volumes in ml; found "
                f"{volume[volume <= 0][:3].tolist()}."
            )
    else:
        volume = np.full(len(frame), spec.reference_volume_ml)
    time = frame[spec.time].to_numpy(dtype=float)
    codes, patients = pd.factorize(frame[spec.patient], sort=True)
    order = np.lexsort((time, codes))
    codes, y, volume, time = codes[order], y[order], volume[order], time[order]
    scale = float(np.max(np.abs(time))) or 1.0
    design = np.vander(time / scale, spec.degree + 1, increasing=True)
    p = design.shape[1]
    outer = (design[:, :, None] * design[:, None, :]).reshape(len(y), p * p)
    segments = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    return _Data(
        y=y,
        lgy=special.gammaln(y + 1),
        design=design,
        design_outer=outer,
        offset=np.log(volume / spec.reference_volume_ml),
        patient_index=codes,
        segments=segments,
        patients=np.asarray(patients),
        time_scale=scale,
        zero=y == 0,
        n_dropped=n_dropped,
    )


# ---------------------------------------------------------------------------------------------
# families: per-sample log density and its derivatives, vectorised over (starts, samples, groups)


def _log_p(aux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log p and log(1 - p) of a logit."""
    return -np.logaddexp(0.0, -aux), -np.logaddexp(0.0, aux)


def _loglik_obs(family: str, eta: np.ndarray, d: _Data, aux: np.ndarray) -> np.ndarray:
    y = d.y[None, :, None]
    if family == "poisson":
        return y * eta - np.exp(eta) - d.lgy[None, :, None]
    if family == "negbin":
        phi = aux[:, None, :]
        theta = np.exp(phi)
        log_sum = np.logaddexp(phi, eta)
        return (
            special.gammaln(y + theta)
            - special.gammaln(theta)
            - d.lgy[None, :, None]
            + theta * (phi - log_sum)
            + y * (eta - log_sum)
        )
    log_p, log_q = _log_p(aux[:, None, :])
    mu = np.exp(eta)
    positive = log_q + y * eta - mu - d.lgy[None, :, None]
    return np.where(d.zero[None, :, None], np.logaddexp(log_p, log_q - mu), positive)


def _score_obs(
    family: str, eta: np.ndarray, d: _Data, aux: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Derivatives of the observed per-sample log density wrt eta and the extra parameter."""
    y = d.y[None, :, None]
    mu = np.exp(eta)
    if family == "poisson":
        return y - mu, None
    if family == "negbin":
        phi = aux[:, None, :]
        theta = np.exp(phi)
        ratio = np.exp(phi - np.logaddexp(phi, eta))  # theta / (theta + mu)
        d_eta = (y - mu) * ratio
        d_phi = theta * (
            special.digamma(y + theta)
            - special.digamma(theta)
            + np.log(ratio)
            + 1.0
            - (y + theta) / (theta + mu)
        )
        return d_eta, d_phi
    log_p, log_q = _log_p(aux[:, None, :])
    ll0 = np.logaddexp(log_p, log_q - mu)
    zero = d.zero[None, :, None]
    d_eta = np.where(zero, -mu * np.exp(log_q - mu - ll0), y - mu)
    d_aux = np.where(zero, np.exp(log_p + log_q - ll0) * (-np.expm1(-mu)), -np.exp(log_p))
    return d_eta, d_aux


# ---------------------------------------------------------------------------------------------
# EM on a batch of starts


@dataclass(slots=True)
class _State:
    coef: np.ndarray  # (R, K, P)
    aux: np.ndarray  # (R, K)
    log_prior: np.ndarray  # (R, K)


def _eta(d: _Data, coef: np.ndarray) -> np.ndarray:
    return np.matmul(d.design, coef.transpose(0, 2, 1)) + d.offset[None, :, None]


def _e_step(family: str, d: _Data, state: _State) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-likelihood per start, posterior memberships (R, N, K), linear predictor."""
    eta = _eta(d, state.coef)
    per_patient = np.add.reduceat(_loglik_obs(family, eta, d, state.aux), d.segments, axis=1)
    joint = per_patient + state.log_prior[:, None, :]
    total = special.logsumexp(joint, axis=2)
    posterior = np.exp(joint - total[:, :, None])
    return total.sum(axis=1), posterior, eta


def _newton_coef(
    d: _Data,
    weights: np.ndarray,
    coef: np.ndarray,
    objective: Callable[[np.ndarray], np.ndarray],
    derivatives: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    n_steps: int,
) -> np.ndarray:
    """Weighted Newton (Fisher scoring) steps for every start and group, with step halving.

    ``objective(eta)`` returns the per-sample weighted objective terms (R, S, K) and
    ``derivatives(eta)`` its first derivative and the (expected) negative second derivative
    wrt eta. Each accepted step does not decrease the group's objective, so EM stays monotone.
    """
    r, k, p = coef.shape
    ridge = 1e-10 * np.eye(p)
    for _ in range(n_steps):
        eta = _eta(d, coef)
        first, second = derivatives(eta)
        grad = np.matmul((weights * first).transpose(0, 2, 1), d.design)
        hess = np.matmul((weights * second).transpose(0, 2, 1), d.design_outer).reshape(r, k, p, p)
        scale = np.maximum(np.trace(hess, axis1=2, axis2=3), 1e-300)[..., None, None]
        step = np.linalg.solve(hess + ridge * scale, grad[..., None])[..., 0]
        step = np.where(np.isfinite(step), step, 0.0)
        before = objective(eta).sum(axis=1)
        length = np.ones((r, k))
        for _halving in range(40):
            trial = coef + length[..., None] * step
            after = objective(_eta(d, trial)).sum(axis=1)
            worse = ~(after >= before - 1e-12 * np.abs(before))
            if not worse.any():
                break
            length = np.where(worse, length / 2, length)
        else:
            trial = np.where(worse[..., None], coef, trial)
        coef = trial
        if np.max(np.abs(length[..., None] * step)) < 1e-10:
            break
    return coef


def _m_step(
    family: str,
    d: _Data,
    posterior: np.ndarray,
    eta: np.ndarray,
    state: _State,
    n_steps: int,
) -> _State:
    weights = posterior[:, d.patient_index, :]  # (R, S, K)
    totals = posterior.sum(axis=1)
    log_prior = np.log(np.maximum(totals, 1e-300)) - math.log(d.n_patients)
    y = d.y[None, :, None]
    aux = state.aux
    if family == "poisson":

        def objective(e: np.ndarray) -> np.ndarray:
            return weights * (y * e - np.exp(e))

        def derivatives(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            mu = np.exp(e)
            return y - mu, mu

        coef = _newton_coef(d, weights, state.coef, objective, derivatives, n_steps)
    elif family == "zip":
        log_p, log_q = _log_p(aux[:, None, :])
        mu = np.exp(eta)
        structural = np.where(
            d.zero[None, :, None], np.exp(log_p - np.logaddexp(log_p, log_q - mu)), 0.0
        )
        share = (weights * structural).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-300)
        share = np.clip(share, special.expit(-_LOGIT_BOUND), special.expit(_LOGIT_BOUND))
        aux = special.logit(share)
        count_weights = weights * (1.0 - structural)

        def objective(e: np.ndarray) -> np.ndarray:
            return count_weights * (y * e - np.exp(e))

        def derivatives(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            mu = np.exp(e)
            return (y - mu) * (1.0 - structural), mu * (1.0 - structural)

        coef = _newton_coef(d, weights, state.coef, objective, derivatives, n_steps)
    else:
        theta_now = aux

        def objective(e: np.ndarray) -> np.ndarray:
            return weights * _loglik_obs("negbin", e, d, theta_now)

        def derivatives(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            ratio = np.exp(theta_now[:, None, :] - np.logaddexp(theta_now[:, None, :], e))
            mu = np.exp(e)
            return (y - mu) * ratio, mu * ratio

        coef = _newton_coef(d, weights, state.coef, objective, derivatives, n_steps)
        aux = _newton_log_theta(d, weights, _eta(d, coef), aux, n_steps)
    return _State(coef=coef, aux=aux, log_prior=log_prior)


def _newton_log_theta(
    d: _Data, weights: np.ndarray, eta: np.ndarray, phi: np.ndarray, n_steps: int
) -> np.ndarray:
    """Newton steps on log theta of every start and group (NB2), with step halving."""
    y = d.y[None, :, None]
    lo, hi = _LOG_THETA_BOUNDS
    for _ in range(n_steps):
        theta = np.exp(phi)[:, None, :]
        mu = np.exp(eta)
        g_theta = (
            special.digamma(y + theta)
            - special.digamma(theta)
            + np.log(theta / (theta + mu))
            + 1.0
            - (y + theta) / (theta + mu)
        )
        h_theta = (
            special.polygamma(1, y + theta)
            - special.polygamma(1, theta)
            + 1.0 / theta
            - 2.0 / (theta + mu)
            + (y + theta) / (theta + mu) ** 2
        )
        grad = (weights * theta * g_theta).sum(axis=1)
        curv = (weights * (theta**2 * h_theta + theta * g_theta)).sum(axis=1)
        step = np.where(curv < 0, -grad / np.where(curv < 0, curv, -1.0), np.sign(grad) * 0.5)
        step = np.clip(step, -2.0, 2.0)
        before = (weights * _loglik_obs("negbin", eta, d, phi)).sum(axis=1)
        length = np.ones_like(phi)
        trial = phi
        for _halving in range(40):
            trial = np.clip(phi + length * step, lo, hi)
            after = (weights * _loglik_obs("negbin", eta, d, trial)).sum(axis=1)
            worse = ~(after >= before - 1e-12 * np.abs(before))
            if not worse.any():
                break
            length = np.where(worse, length / 2, length)
        else:
            trial = np.where(worse, phi, trial)
        phi = trial
        if np.max(np.abs(length * step)) < 1e-10:
            break
    return phi


def _initial_state(
    family: str, d: _Data, memberships: np.ndarray, n_groups: int
) -> tuple[_State, np.ndarray]:
    """M-step from hard random memberships (R, N) -> state; returns the one-hot posterior."""
    r = memberships.shape[0]
    posterior = np.zeros((r, d.n_patients, n_groups))
    np.put_along_axis(posterior, memberships[..., None], 1.0, axis=2)
    rate = max(float(np.sum(d.y) / np.sum(np.exp(d.offset))), 1e-3)
    coef = np.zeros((r, n_groups, d.design.shape[1]))
    coef[..., 0] = math.log(rate)
    aux = np.zeros((r, n_groups)) + (-3.0 if family == "zip" else 0.0)
    state = _State(coef=coef, aux=aux, log_prior=np.zeros((r, n_groups)))
    eta = _eta(d, coef)
    return _m_step(family, d, posterior, eta, state, n_steps=25), posterior


@dataclass(slots=True)
class _Run:
    state: _State
    loglik: np.ndarray
    iterations: np.ndarray
    status: np.ndarray  # "converged", "max_iter", "empty_group"


def _run_em(
    family: str,
    d: _Data,
    state: _State,
    tol: float,
    max_iter: int,
    min_prior: float,
    on_done: Callable[[int], None] | None = None,
) -> _Run:
    """EM for a batch of starts until each meets ``tol``, collapses, or hits ``max_iter``."""
    r = state.coef.shape[0]
    loglik = np.full(r, -np.inf)
    iterations = np.zeros(r, dtype=int)
    status = np.array(["max_iter"] * r, dtype=object)
    active = np.arange(r)
    sub = state
    previous = np.full(r, -np.inf)
    min_weight = max(min_prior, _EMPTY_GROUP_WEIGHT / d.n_patients)
    for _ in range(max_iter):
        ll, posterior, eta = _e_step(family, d, sub)
        iterations[active] += 1
        loglik[active] = ll
        change = np.abs(ll - previous) / (np.abs(ll) + 0.1)
        collapsed = (posterior.sum(axis=1) / d.n_patients <= min_weight).any(axis=1)
        collapsed |= ~np.isfinite(ll)
        done = (change < tol) | collapsed
        if done.any():
            status[active[done & ~collapsed]] = "converged"
            status[active[collapsed]] = "empty_group"
            for name in ("coef", "aux", "log_prior"):
                getattr(state, name)[active[done]] = getattr(sub, name)[done]
            if on_done is not None:
                on_done(int(done.sum()))
            keep = ~done
            active, previous = active[keep], ll[keep]
            if active.size == 0:
                break
            sub = _State(coef=sub.coef[keep], aux=sub.aux[keep], log_prior=sub.log_prior[keep])
            posterior, eta = posterior[keep], eta[keep]
        else:
            previous = ll
        sub = _m_step(family, d, posterior, eta, sub, n_steps=1)
    else:
        for name in ("coef", "aux", "log_prior"):
            getattr(state, name)[active] = getattr(sub, name)
        if on_done is not None and active.size:
            on_done(int(active.size))
    return _Run(state=state, loglik=loglik, iterations=iterations, status=status)


def _fit_k(
    d: _Data,
    spec: TrajectorySpec,
    n_groups: int,
    advance: Callable[[int], None] | None,
) -> tuple[_State, float, int, bool, pd.DataFrame]:
    n_starts = 1 if n_groups == 1 else spec.n_starts
    seeds = np.random.SeedSequence([spec.seed, n_groups]).spawn(n_starts)
    memberships = np.stack(
        [np.random.default_rng(s).integers(0, n_groups, size=d.n_patients) for s in seeds]
    )
    per_batch = max(1, _BATCH_ELEMENTS // (len(d.y) * n_groups))
    states, runs = [], []
    for lo in range(0, n_starts, per_batch):
        state, _ = _initial_state(spec.family, d, memberships[lo : lo + per_batch], n_groups)
        run = _run_em(spec.family, d, state, spec.start_tol, spec.max_iter, spec.min_prior, advance)
        states.append(run.state)
        runs.append(run)
    loglik = np.concatenate([r.loglik for r in runs])
    iterations = np.concatenate([r.iterations for r in runs])
    status = np.concatenate([r.status for r in runs])
    coef = np.concatenate([s.coef for s in states])
    aux = np.concatenate([s.aux for s in states])
    log_prior = np.concatenate([s.log_prior for s in states])
    usable = np.flatnonzero(status != "empty_group")
    if usable.size == 0:
        raise ConvergenceError(
            f"Every one of the {n_starts} starts of the {n_groups}-group {spec.family} "
            "trajectory model lost a group (its mixing proportion fell to "
            f"{max(spec.min_prior, 0.0)} or below). Fit fewer groups or lower min_prior."
        )
    best = usable[np.argsort(-loglik[usable], kind="stable")][: spec.n_polish]
    polished = np.full(n_starts, np.nan)
    outcomes = []
    for j in best:
        single = _State(coef=coef[j : j + 1], aux=aux[j : j + 1], log_prior=log_prior[j : j + 1])
        if spec.polish == "lbfgs":
            outcome = _polish(d, spec, single, float(loglik[j]))
        else:
            run = _run_em(spec.family, d, single, spec.tol, spec.max_iter, spec.min_prior)
            outcome = (
                run.state,
                float(run.loglik[0]),
                int(run.iterations[0]),
                run.status[0] == "converged",
            )
        polished[j] = outcome[1]
        outcomes.append((j, *outcome))
    j, chosen, final_loglik, n_iter, converged = max(outcomes, key=lambda o: o[2])
    total_iter = int(iterations[j]) + n_iter
    starts = pd.DataFrame(
        {
            "start": np.arange(1, n_starts + 1),
            "loglik": loglik,
            "iterations": iterations,
            "status": status.astype(str),
            "polished_loglik": polished,
        }
    )
    return chosen, final_loglik, total_iter, bool(converged), starts


# ---------------------------------------------------------------------------------------------
# standard errors: numerical derivative of the analytic observed-data score


def _pack(state: _State, family: str) -> np.ndarray:
    parts = [state.coef[0].ravel()]
    if family != "poisson":
        parts.append(state.aux[0])
    logits = state.log_prior[0] - state.log_prior[0, 0]
    parts.append(logits[1:])
    return np.concatenate(parts)


def _unpack(theta: np.ndarray, family: str, k: int, p: int) -> _State:
    coef = theta[: k * p].reshape(1, k, p)
    pos = k * p
    if family != "poisson":
        aux = theta[pos : pos + k].reshape(1, k)
        pos += k
    else:
        aux = np.zeros((1, k))
    logits = np.r_[0.0, theta[pos:]]
    log_prior = (logits - special.logsumexp(logits)).reshape(1, k)
    return _State(coef=coef, aux=aux, log_prior=log_prior)


def _loglik_score(
    theta: np.ndarray, family: str, d: _Data, k: int, p: int
) -> tuple[float, np.ndarray]:
    """Observed-data log-likelihood and its gradient (Fisher's identity: the posterior-weighted
    complete-data score)."""
    state = _unpack(theta, family, k, p)
    loglik, posterior, eta = _e_step(family, d, state)
    weights = posterior[:, d.patient_index, :]
    d_eta, d_aux = _score_obs(family, eta, d, state.aux)
    parts = [((weights * d_eta)[0].T @ d.design).ravel()]
    if d_aux is not None:
        parts.append((weights * d_aux)[0].sum(axis=0))
    prior = np.exp(state.log_prior[0])
    parts.append((posterior[0] - prior[None, :]).sum(axis=0)[1:])
    return float(loglik[0]), np.concatenate(parts)


def _score(theta: np.ndarray, family: str, d: _Data, k: int, p: int) -> np.ndarray:
    return _loglik_score(theta, family, d, k, p)[1]


def _single_blas_thread() -> contextlib.AbstractContextManager[object]:
    """Tiny BLAS calls (L-BFGS-B's, the batched 3 x 3 solves) slow down 100-fold when BLAS
    threads compete for busy cores; the EM's matrices are too thin to gain from threads."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with pymc
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _polish(
    d: _Data, spec: TrajectorySpec, state: _State, loglik: float
) -> tuple[_State, float, int, bool]:
    """Run an EM solution on to the optimum by L-BFGS-B on the observed log-likelihood.

    EM converges linearly and slowly where groups overlap (an over-fitted K); from EM's
    neighbourhood a quasi-Newton method with the analytic score converges superlinearly.
    Returns the state, its log-likelihood, the iterations and whether the optimiser converged.
    """
    k, p = state.coef.shape[1], state.coef.shape[2]
    theta0 = _pack(state, spec.family)
    bounds: list[tuple[float | None, float | None]] = [(None, None)] * (k * p)
    if spec.family == "negbin":
        bounds += [_LOG_THETA_BOUNDS] * k
    elif spec.family == "zip":
        bounds += [(-_LOGIT_BOUND, _LOGIT_BOUND)] * k
    bounds += [(-50.0, 50.0)] * (k - 1)
    scale = max(abs(loglik), 1.0)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = _loglik_score(theta, spec.family, d, k, p)
        if not np.isfinite(value):
            return np.inf, np.zeros_like(theta)
        return -value / scale, -grad / scale

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = optimize.minimize(
            objective,
            theta0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={
                "maxiter": spec.max_iter,
                "maxcor": 30,
                "ftol": spec.tol * 1e-3,
                "gtol": spec.tol * 1e2,
            },
        )
    value = -float(res.fun) * scale
    if not np.isfinite(value) or value < loglik - 1e-10 * scale:
        return state, loglik, int(res.nit), False
    # a line search that fails at the optimum (float precision) still counts when the score
    # of the scaled objective is negligible
    converged = bool(res.success) or float(np.max(np.abs(res.jac))) < 1e-6
    return _unpack(res.x, spec.family, k, p), value, int(res.nit), converged


def _covariance(state: _State, spec: TrajectorySpec, d: _Data) -> np.ndarray:
    k, p = state.coef.shape[1], state.coef.shape[2]
    theta = _pack(state, spec.family)
    n = theta.size
    hess = np.empty((n, n))
    for j in range(n):
        h = 1e-5 * max(1.0, abs(theta[j]))
        up, down = theta.copy(), theta.copy()
        up[j] += h
        down[j] -= h
        hess[:, j] = (_score(up, spec.family, d, k, p) - _score(down, spec.family, d, k, p)) / (
            2 * h
        )
    hess = (hess + hess.T) / 2
    try:
        cov = np.linalg.inv(-hess)
    except np.linalg.LinAlgError:
        cov = np.full((n, n), np.nan)
    if not np.all(np.isfinite(np.diag(cov))) or np.any(np.diag(cov) <= 0):
        warnings.warn(
            f"The observed information of the {k}-group trajectory model is not positive "
            "definite (a group at a boundary, e.g. all-zero counts); standard errors are NaN.",
            ConvergenceWarning,
            stacklevel=4,
        )
        cov = np.full((n, n), np.nan)
    # back to the raw time scale: coefficient j of every group divides by scale^j
    factors = np.ones(n)
    factors[: k * p] = np.tile(d.time_scale ** -np.arange(p, dtype=float), k)
    return cov * factors[:, None] * factors[None, :]


# ---------------------------------------------------------------------------------------------
# assembling the result


def _result(
    d: _Data,
    spec: TrajectorySpec,
    n_groups: int,
    state: _State,
    loglik: float,
    iterations: int,
    converged: bool,
    starts: pd.DataFrame,
) -> TrajectoryResult:
    p = spec.degree + 1
    raw = state.coef[0] * d.time_scale ** -np.arange(p, dtype=float)[None, :]
    if spec.order_by == "intercept":
        key = raw[:, 0]
    else:
        key = (d.design @ state.coef[0].T).mean(axis=0)
    order = np.argsort(key, kind="stable")
    state = _State(
        coef=state.coef[:, order], aux=state.aux[:, order], log_prior=state.log_prior[:, order]
    )
    raw = raw[order]
    _, posterior, _ = _e_step(spec.family, d, state)
    posterior = posterior[0]
    labels = spec.labels or _DEFAULT_LABELS.get(
        n_groups, tuple(f"group_{j + 1}" for j in range(n_groups))
    )
    if len(labels) != n_groups:
        raise ConfigError(
            f"TrajectorySpec.labels has {len(labels)} labels for {n_groups} groups; give one "
            "label per group or leave labels=None."
        )
    if spec.compute_se:
        cov_scaled = _covariance(state, spec, d)
    else:
        cov_scaled = np.full((spec.n_parameters(n_groups),) * 2, np.nan)
    se = np.sqrt(np.diag(cov_scaled))
    terms = _term_names(spec)
    rows = []
    for k in range(n_groups):
        for j, term in enumerate(terms):
            rows.append((k + 1, labels[k], term, raw[k, j], se[k * p + j]))
        if spec.family != "poisson":
            rows.append(
                (k + 1, labels[k], _AUX_NAME[spec.family], state.aux[0, k], se[n_groups * p + k])
            )
    coefficients = pd.DataFrame(rows, columns=["group", "label", "term", "estimate", "std_error"])
    assigned = posterior.argmax(axis=1)
    max_post = posterior.max(axis=1)
    sizes = np.bincount(assigned, minlength=n_groups)
    mean_post = np.array(
        [max_post[assigned == k].mean() if sizes[k] else np.nan for k in range(n_groups)]
    )
    groups = pd.DataFrame(
        {
            "group": np.arange(1, n_groups + 1),
            "label": list(labels),
            "prior": np.exp(state.log_prior[0]),
            "n_patients": sizes,
            "share": sizes / d.n_patients,
            "mean_posterior": mean_post,
            "intercept": raw[:, 0],
        }
    )
    assignments = pd.DataFrame(
        {
            spec.patient: d.patients,
            "group": assigned + 1,
            "label": np.asarray(labels, dtype=object)[assigned],
            "max_posterior": max_post,
        }
    )
    for k in range(n_groups):
        assignments[f"posterior_{k + 1}"] = posterior[:, k]
    if n_groups > 1:
        plogp = special.xlogy(posterior, posterior).sum()
        entropy = 1.0 + plogp / (d.n_patients * math.log(n_groups))
    else:
        entropy = float("nan")
    df = spec.n_parameters(n_groups)
    bic_n = d.n_patients if spec.bic_n == "patients" else len(d.y)
    return TrajectoryResult(
        spec=spec,
        n_groups=n_groups,
        loglik=loglik,
        df=df,
        aic=-2 * loglik + 2 * df,
        bic=-2 * loglik + math.log(bic_n) * df,
        bic_n=bic_n,
        n_patients=d.n_patients,
        n_samples=len(d.y),
        n_dropped=d.n_dropped,
        relative_entropy=float(entropy),
        coefficients=coefficients,
        groups=groups,
        assignments=assignments,
        starts=starts,
        n_starts_converged=int((starts["status"] == "converged").sum()),
        converged=converged,
        iterations=iterations,
        covariance=cov_scaled,
    )


def _fit_prepared(
    d: _Data, spec: TrajectorySpec, n_groups: int, advance: Callable[[int], None] | None
) -> TrajectoryResult:
    if n_groups > d.n_patients:
        raise DataError(
            f"Cannot fit {n_groups} trajectory groups to {d.n_patients} patients; "
            "ask for fewer groups."
        )
    with _single_blas_thread():
        state, loglik, iterations, converged, starts = _fit_k(d, spec, n_groups, advance)
    if not converged:
        warnings.warn(
            f"The best start of the {n_groups}-group trajectory model did not converge to "
            f"tol={spec.tol} ({spec.polish} polishing, max_iter={spec.max_iter}); raise "
            "max_iter, or try polish='em'.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return _result(d, spec, n_groups, state, loglik, iterations, converged, starts)


class _Progress:
    """A rich progress bar over starts, or nothing."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        self._bar = None
        if enabled:
            from rich.progress import Progress

            self._bar = Progress(transient=False)
            self._task = self._bar.add_task(description, total=total)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def describe(self, description: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=description)

    @property
    def advance(self) -> Callable[[int], None] | None:
        if self._bar is None:
            return None
        bar, task = self._bar, self._task
        return lambda n: bar.advance(task, n)


def fit_trajectories(
    data: pd.DataFrame, spec: TrajectorySpec, *, progress: bool = False
) -> TrajectoryResult:
    """Fit a group-based trajectory model with ``spec.n_groups`` groups.

    EM runs from ``spec.n_starts`` random hard assignments of patients to groups (each start
    seeded from ``spec.seed``) to a relative log-likelihood change of ``spec.start_tol``; the
    ``spec.n_polish`` best are run on to the optimum (L-BFGS-B on the observed
    log-likelihood, or EM to ``spec.tol``; ``spec.polish``) and the best is kept. Groups are then
    ordered from lowest to highest level and labelled.

    Parameters
    ----------
    data : pandas.DataFrame
        Long table, one row per sample, with the columns named in ``spec``.
    spec : TrajectorySpec
        Model options; ``n_groups`` must be set.
    progress : bool
        Show a rich progress bar over the starts.

    Returns
    -------
    TrajectoryResult

    Raises
    ------
    ConfigError
        If ``spec.n_groups`` is not set.
    DataError
        If a column is missing, counts are negative or fractional, or volumes not positive.
    ConvergenceError
        If every start loses a group.

    References
    ----------
    .. [1] Nagin DS. Analyzing developmental trajectories: a semiparametric, group-based
       approach. Psychol Methods 1999;4:139-57.
    .. [2] Grün B, Leisch F. FlexMix version 2: finite mixtures with concomitant variables and
       varying and constant parameters. J Stat Softw 2008;28(4):1-35.
    .. [3] Magbanua MJM, Hendrix LH, Hyslop T, et al. Serial analysis of circulating tumor
       cells in metastatic breast cancer receiving first-line chemotherapy. J Natl Cancer Inst
       2021;113:443-52.

    Examples
    --------
    >>> spec = TrajectorySpec(time="months", volume="blood_volume_ml", n_groups=4, seed=1)
    >>> res = fit_trajectories(serial, spec)  # doctest: +SKIP
    >>> res.groups[["label", "n_patients", "mean_posterior"]]  # doctest: +SKIP
    """
    if spec.n_groups is None:
        raise ConfigError(
            "fit_trajectories needs TrajectorySpec(n_groups=...); to compare several numbers "
            "of groups call select_trajectories."
        )
    d = _prepare(data, spec)
    total = 1 if spec.n_groups == 1 else spec.n_starts
    with _Progress(progress, total, f"EM starts, K={spec.n_groups}") as bar:
        return _fit_prepared(d, spec, spec.n_groups, bar.advance)


def select_trajectories(
    data: pd.DataFrame,
    spec: TrajectorySpec,
    k_range: Iterable[int] | None = None,
    *,
    progress: bool = False,
) -> TrajectorySelection:
    """Fit trajectory models for several numbers of groups and choose one by BIC (or AIC).

    Parameters
    ----------
    data : pandas.DataFrame
        Long table, one row per sample.
    spec : TrajectorySpec
        Model options (``n_groups`` is ignored).
    k_range : iterable of int, optional
        Numbers of groups; default ``spec.groups_range`` (1 to 6).
    progress : bool
        Show a rich progress bar over all starts.

    Returns
    -------
    TrajectorySelection
        The comparison table (loglik, df, AIC, BIC with ``n`` = ``spec.bic_n``, patients by
        default, and that ``n``, relative entropy, smallest group) and the chosen ``K``.

    References
    ----------
    .. [1] Nagin DS. Group-based modeling of development. Harvard University Press; 2005.
    .. [2] Schwarz G. Estimating the dimension of a model. Ann Stat 1978;6:461-4.
    .. [3] Jones BL, Nagin DS, Roeder K. A SAS procedure based on mixture models for
       estimating developmental trajectories. Sociol Methods Res 2001;29:374-93.
    .. [4] Grün B, Leisch F. FlexMix version 2: finite mixtures with concomitant variables and
       varying and constant parameters. J Stat Softw 2008;28(4):1-35.

    Examples
    --------
    >>> sel = select_trajectories(serial, TrajectorySpec(time="months", n_starts=10))  # doctest: +SKIP
    >>> sel.chosen, sel.table  # doctest: +SKIP
    """
    ks = sorted(set(spec.groups_range if k_range is None else k_range))
    if not ks or ks[0] < 1:
        raise ConfigError(f"k_range must hold numbers of groups >= 1; got {ks!r}.")
    d = _prepare(data, spec)
    total = sum(1 if k == 1 else spec.n_starts for k in ks)
    fits: dict[int, TrajectoryResult] = {}
    with _Progress(progress, total, "EM starts") as bar:
        for k in ks:
            bar.describe(f"EM starts, K={k}")
            fits[k] = _fit_prepared(d, spec, k, bar.advance)
    rows = []
    for k, fit in fits.items():
        rows.append(
            {
                "n_groups": k,
                "loglik": fit.loglik,
                "df": fit.df,
                "aic": fit.aic,
                "bic": fit.bic,
                "bic_n": fit.bic_n,
                "relative_entropy": fit.relative_entropy,
                "smallest_group_n": int(fit.groups["n_patients"].min()),
                "smallest_group_share": float(fit.groups["share"].min()),
                "n_starts_converged": fit.n_starts_converged,
            }
        )
    table = pd.DataFrame(rows)
    eligible = table[table["smallest_group_share"] >= spec.min_group_share]
    if eligible.empty:
        raise DataError(
            f"No number of groups in {ks} has a smallest group of at least "
            f"{spec.min_group_share:.1%} of patients; lower TrajectorySpec.min_group_share."
        )
    chosen = int(eligible["n_groups"].to_numpy()[np.argmin(eligible[spec.criterion].to_numpy())])
    table["chosen"] = table["n_groups"] == chosen
    return TrajectorySelection(spec=spec, table=table, chosen=chosen, fits=fits)

"""Added prognostic value of a marker over a clinical model: LR test, Harrell's and Uno's C.

Two stratified Cox models are fitted to the same patients (the complete cases of the larger
one): the **clinical** model (clinicopathological factors) and the clinical model **plus the
marker** (a 0/1 exposure, count categories or a spline of the count). The marker's added value
is shown three ways, as in the clinical-validity analysis of the European pooled CTC data
(Bidard et al. 2014):

* the likelihood-ratio chi-square of the marker's terms (R's ``anova(fit_clin, fit_full)``,
  :func:`pooled.models.cox.likelihood_ratio_test`);
* Harrell's and Uno's C of each model within strata with infinitesimal-jackknife standard
  errors, and the difference ``C_full - C_clinical`` with the standard error from the two C's
  covariance (R's ``concordance(fit_clin, fit_full, timewt = )``;
  :func:`pooled.models.cox.compare_cox_concordance`);
* a bootstrap by centre: whole centres are drawn with replacement (each draw its own
  stratum), both models refitted and the difference in C recomputed; the percentile interval
  and the bootstrap SE are an alternative to the jackknife interval that respects the
  clustering of patients in centres.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from pooled.errors import ConfigError, ConvergenceError, ConvergenceWarning, DataError
from pooled.models.concordance import ConcordanceComparison, concordance_arrays
from pooled.models.cox import (
    CoxResult,
    CoxSpec,
    InteractionTestResult,
    compare_cox_concordance,
    cox_fit_arrays,
    fit_cox,
    likelihood_ratio_test,
)
from pooled.models.design import build_spec_design
from pooled.results import tidy_frame

__all__ = ["AddedValueResult", "AddedValueSpec", "fit_added_value"]

Ties = Literal["efron", "breslow"]
TIMEWTS: tuple[tuple[str, str], ...] = (("harrell", "n"), ("uno", "n/G2"))


@dataclass(frozen=True, slots=True, kw_only=True)
class AddedValueSpec:
    """Options of :func:`fit_added_value`.

    Parameters
    ----------
    duration, event : str
        Outcome columns.
    clinical : tuple of str
        The clinical model's covariates.
    marker : tuple of str
        The marker's columns added to it (the exposure, its categories or spline columns).
    categorical : tuple of (column, reference)
        Categorical columns among both (R-style treatment dummies).
    strata : tuple of str
        Baseline hazards per stratum; concordance compares pairs within a stratum.
    ties : {"efron", "breslow"}
    centre : str
        The column whose levels the bootstrap resamples.
    n_bootstrap : int
        Bootstrap replicates by centre (0: none).
    seed : int
        Seed of the bootstrap.
    level : float
        Level of the intervals.
    tol : float
        Newton-Raphson convergence of the Cox fits.
    analysis, endpoint, marker_label : str
        Labels for the tidy table (``marker_label`` names the marker, default its columns).
    """

    duration: str
    event: str
    clinical: tuple[str, ...]
    marker: tuple[str, ...]
    categorical: tuple[tuple[str, str], ...] = ()
    strata: tuple[str, ...] = ("centre",)
    ties: Ties = "efron"
    centre: str = "centre"
    n_bootstrap: int = 200
    seed: int = 2026
    level: float = 0.95
    tol: float = 1e-10
    analysis: str = ""
    endpoint: str = ""
    marker_label: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.clinical, str) or isinstance(self.marker, str):
            raise ConfigError("AddedValueSpec.clinical and .marker expected tuples of columns.")
        if not self.clinical or not self.marker:
            raise ConfigError(
                "AddedValueSpec expected at least one clinical covariate and one marker column; "
                f"got clinical={list(self.clinical)}, marker={list(self.marker)}."
            )
        overlap = set(self.clinical) & set(self.marker)
        if overlap:
            raise ConfigError(
                f"AddedValueSpec: {sorted(overlap)} is both clinical and marker; the marker is "
                "added to the clinical model, so name it once."
            )
        if self.n_bootstrap < 0 or not 0.0 < self.level < 1.0:
            raise ConfigError(
                f"AddedValueSpec: n_bootstrap must be >= 0 and level in (0, 1); got "
                f"{self.n_bootstrap}, {self.level}."
            )

    @property
    def label(self) -> str:
        return self.marker_label or " + ".join(self.marker)

    def cox_spec(self, covariates: tuple[str, ...]) -> CoxSpec:
        present = set(covariates)
        return CoxSpec(
            duration=self.duration,
            event=self.event,
            covariates=covariates,
            categorical=tuple(p for p in self.categorical if p[0] in present),
            strata=self.strata,
            ties=self.ties,
            tol=self.tol,
            max_iter=100,
            term_lr_tests=False,
            analysis=self.analysis,
            endpoint=self.endpoint,
        )


@dataclass(frozen=True, slots=True)
class AddedValueResult:
    """The marker's added value over the clinical model.

    Attributes
    ----------
    clinical, full : CoxResult
        The two fits (same patients).
    lr_test : InteractionTestResult
        LR test of the marker's terms (``chisq``, ``df``, ``p_value``).
    concordance : dict
        ``{"harrell": ConcordanceComparison, "uno": ConcordanceComparison}``: each model's C
        with its SE, their covariance and the difference (full - clinical).
    bootstrap : DataFrame
        One row per successful replicate: ``replicate, harrell_clinical, harrell_full,
        harrell_difference, uno_clinical, uno_full, uno_difference`` (empty without a
        bootstrap).
    n_bootstrap_failed : int
        Replicates whose models could not be fitted (skipped).
    n, events : int
    dropped : DataFrame
        Complete-case losses of the full model per centre and reason.
    spec : AddedValueSpec
    """

    clinical: CoxResult
    full: CoxResult
    lr_test: InteractionTestResult
    concordance: dict[str, ConcordanceComparison]
    bootstrap: pd.DataFrame
    n_bootstrap_failed: int
    n: int
    events: int
    dropped: pd.DataFrame
    spec: AddedValueSpec

    def bootstrap_interval(self, timewt: str = "harrell") -> tuple[float, float, float]:
        """``(se, lower, upper)`` of the bootstrap difference in C (percentile interval);
        NaN without replicates."""
        column = f"{timewt}_difference"
        if column not in self.bootstrap or len(self.bootstrap) < 2:
            return (float("nan"),) * 3
        values = self.bootstrap[column].to_numpy(dtype=float)
        alpha = (1.0 - self.spec.level) / 2.0
        lower, upper = np.quantile(values, [alpha, 1.0 - alpha])
        return float(values.std(ddof=1)), float(lower), float(upper)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: the LR test (``model = "added_value_lr"``, ``chisq``, ``df``), then per
        C (``concordance_harrell``, ``concordance_uno``) each model's C with its SE and CI
        and the difference with its SE, CI, p-value and, with a bootstrap,
        ``bootstrap_std_error, bootstrap_ci_lower, bootstrap_ci_upper`` (percentile)."""
        spec = self.spec
        base = {"analysis": spec.analysis, "endpoint": spec.endpoint, "n": self.n,
                "events": self.events}  # fmt: skip
        z = float(stats.norm.ppf(0.5 + spec.level / 2.0))
        test = self.lr_test
        rows: list[dict[str, Any]] = [
            {**base, "model": "added_value_lr", "term": f"+ {spec.label}",
             "p_value": test.p_value, "chisq": test.chisq, "df": test.df,
             "loglik_clinical": test.loglik_reduced, "loglik_full": test.loglik_full},
        ]  # fmt: skip
        for name, _ in TIMEWTS:
            comparison = self.concordance[name]
            model = f"added_value_concordance_{name}"
            variances = np.diag(comparison.covariance)
            for label, c, v in zip(
                comparison.labels, comparison.concordance, variances, strict=True
            ):
                se = math.sqrt(v)
                rows.append({**base, "model": model, "term": label, "estimate": c,
                             "std_error": se, "ci_lower": c - z * se, "ci_upper": c + z * se,
                             "row_type": "model"})  # fmt: skip
            boot_se, boot_lower, boot_upper = self.bootstrap_interval(name)
            d, se = comparison.difference, comparison.se_difference
            rows.append({**base, "model": model, "term": "difference (+ marker - clinical)",
                         "estimate": d, "std_error": se, "ci_lower": d - z * se,
                         "ci_upper": d + z * se, "p_value": comparison.p_value,
                         "row_type": "difference", "z": comparison.z,
                         "bootstrap_std_error": boot_se, "bootstrap_ci_lower": boot_lower,
                         "bootstrap_ci_upper": boot_upper,
                         "bootstrap_replicates": len(self.bootstrap)})  # fmt: skip
        return tidy_frame(rows)


def _linear_predictor(matrix: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return matrix @ beta


def _fit_lp(matrix: np.ndarray, time: np.ndarray, event: np.ndarray, strata: np.ndarray,
            spec: AddedValueSpec) -> np.ndarray:  # fmt: skip
    """The linear predictor of a Cox fit; columns constant in this sample are left out."""
    varying = np.flatnonzero(np.ptp(matrix, axis=0) > 0)
    if varying.size == 0:
        raise DataError("no covariate varies in this sample")
    sub = np.ascontiguousarray(matrix[:, varying])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = cox_fit_arrays(sub, time, event, strata, ties=spec.ties, tol=spec.tol, max_iter=100)
    return _linear_predictor(sub, fit.coefficients)


def _bootstrap(data: pd.DataFrame, spec: AddedValueSpec) -> tuple[pd.DataFrame, int]:
    """Refit both models on centres drawn with replacement; the C's of each replicate."""
    if spec.n_bootstrap == 0:
        return pd.DataFrame(), 0
    full_spec = spec.cox_spec(spec.clinical + spec.marker)
    design = build_spec_design(data, full_spec)
    clinical_columns = [j for j, s in enumerate(design.term_sources) if s in spec.clinical]
    rows = data.iloc[design.rows]
    time = rows[spec.duration].to_numpy(dtype=float)
    event = rows[spec.event].to_numpy(dtype=float)
    centre = rows[spec.centre].astype(str).to_numpy()
    centres = np.unique(centre)
    members = [np.flatnonzero(centre == c) for c in centres]
    rng = np.random.default_rng(spec.seed)
    records = []
    failed = 0
    for b in range(spec.n_bootstrap):
        drawn = rng.integers(0, centres.size, centres.size)
        index = np.concatenate([members[k] for k in drawn])
        strata = np.concatenate([np.full(members[k].size, i) for i, k in enumerate(drawn)])
        x = design.matrix[index]
        t, e = time[index], event[index]
        record: dict[str, float] = {"replicate": float(b + 1)}
        try:
            lp_full = _fit_lp(x, t, e, strata, spec)
            lp_clinical = _fit_lp(x[:, clinical_columns], t, e, strata, spec)
            for name, timewt in TIMEWTS:
                c_clin = concordance_arrays(t, e, lp_clinical, strata, timewt=timewt).concordance  # type: ignore[arg-type]
                c_full = concordance_arrays(t, e, lp_full, strata, timewt=timewt).concordance  # type: ignore[arg-type]
                record[f"{name}_clinical"] = c_clin
                record[f"{name}_full"] = c_full
                record[f"{name}_difference"] = c_full - c_clin
        except (DataError, ConvergenceError, np.linalg.LinAlgError):
            failed += 1
            continue
        records.append(record)
    return pd.DataFrame(records), failed


def fit_added_value(data: pd.DataFrame, spec: AddedValueSpec) -> AddedValueResult:
    """The marker's added value over a clinical model: LR test, C's, bootstrap by centre.

    Parameters
    ----------
    data : DataFrame
        One row per patient.
    spec : AddedValueSpec

    Returns
    -------
    AddedValueResult

    Raises
    ------
    ConfigError
        A column named by the spec is absent.
    DataError
        No complete case, no comparable pair, or a model the data cannot support.

    References
    ----------
    .. [1] Bidard FC, Peeters DJ, Fehm T, et al. Clinical validity of circulating tumour cells
       in patients with metastatic breast cancer: a pooled analysis of individual patient
       data. Lancet Oncol 2014;15:406-14.
    .. [2] Harrell FE, Lee KL, Mark DB. Multivariable prognostic models. Stat Med
       1996;15:361-87.
    .. [3] Uno H, Cai T, Pencina MJ, D'Agostino RB, Wei LJ. On the C-statistics for evaluating
       overall adequacy of risk prediction procedures with censored survival data. Stat Med
       2011;30:1105-17.
    .. [4] Field CA, Welsh AH. Bootstrapping clustered data. J R Stat Soc B 2007;69:369-90.

    Examples
    --------
    >>> # fit_added_value(cohort, AddedValueSpec(duration="os_months", event="os_event",
    >>> #     clinical=("age", "node_positive", "grade3"), marker=("ctc_positive",)))
    """
    full_spec = spec.cox_spec(spec.clinical + spec.marker)
    design = build_spec_design(data, full_spec)
    complete = data.iloc[design.rows]
    full = fit_cox(complete, full_spec)
    clinical = fit_cox(complete, spec.cox_spec(spec.clinical))
    lr = likelihood_ratio_test(clinical, full)
    labels = ("clinical", f"clinical + {spec.label}")
    concordance = {
        name: compare_cox_concordance(clinical, full, complete, timewt=timewt, labels=labels)  # type: ignore[arg-type]
        for name, timewt in TIMEWTS
    }
    boot, failed = _bootstrap(complete, replace(spec))
    return AddedValueResult(
        clinical=clinical,
        full=full,
        lr_test=lr,
        concordance=concordance,
        bootstrap=boot,
        n_bootstrap_failed=failed,
        n=full.n,
        events=full.events,
        dropped=design.dropped,
        spec=spec,
    )

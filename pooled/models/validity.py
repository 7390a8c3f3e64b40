"""Validity of a prognostic Cox model across centres: per-centre C, calibration slope, IECV.

A pooled model is useful where it discriminates and is calibrated in every centre, not only
on average. :func:`fit_validity` computes, per centre:

* the **apparent C**: the model fitted in the centre alone (no strata) and Harrell's C of its
  linear predictor there, with its infinitesimal-jackknife SE (the per-centre C of R's
  ``concordance(coxph(..., data = centre))``);
* with **internal-external cross-validation** (IECV), the model fitted (stratified by centre)
  on all the other centres and evaluated in the centre left out: Harrell's C of its linear
  predictor there, and the **calibration slope**, the coefficient of that linear predictor in
  a Cox model of the centre's own outcome (1: calibrated; below 1: predictions too extreme,
  the model over-fits; above 1: too modest). Every centre is left out in turn.

Each per-centre quantity is pooled by random effects (REML with the Knapp-Hartung adjustment,
as metafor's ``rma(yi, sei = se, method = "REML", test = "knha")``) with a prediction interval
for a new centre (:func:`pooled.models.meta.fit_meta`). A centre whose model cannot be fitted
(too few events, a covariate constant there) keeps a row with the reason and is not pooled.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from pooled.errors import ConfigError, ConvergenceError, ConvergenceWarning, DataError
from pooled.models.concordance import concordance_arrays
from pooled.models.cox import CoxSpec, cox_concordance, cox_fit_arrays, fit_cox
from pooled.models.design import build_spec_design
from pooled.models.meta import MetaResult, MetaSpec, fit_meta
from pooled.results import tidy_frame

__all__ = ["ValidityResult", "ValiditySpec", "fit_validity"]

Ties = Literal["efron", "breslow"]
MEASURES: tuple[tuple[str, str], ...] = (
    ("apparent_c", "apparent C (model fitted in the centre)"),
    ("iecv_c", "C, internal-external cross-validation"),
    ("calibration_slope", "calibration slope, internal-external cross-validation"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ValiditySpec:
    """Options of :func:`fit_validity`.

    Parameters
    ----------
    duration, event : str
        Outcome columns.
    covariates, categorical : tuple
        The model's covariates (as :class:`~pooled.models.cox.CoxSpec`).
    centre : str
        The centre column (left out in turn; the strata of the IECV training fits).
    ties : {"efron", "breslow"}
    iecv : bool
        Add the internal-external cross-validation (C and calibration slope).
    method : str
        tau^2 estimator of the pooling (REML).
    knha : bool
        Knapp-Hartung adjustment of the pooled estimate (t with k - 1 df).
    min_events : int
        A centre with fewer events is not evaluated (its C would be noise).
    tol : float
        Newton-Raphson convergence.
    analysis, endpoint : str
        Labels for the tidy table.
    """

    duration: str
    event: str
    covariates: tuple[str, ...]
    categorical: tuple[tuple[str, str], ...] = ()
    centre: str = "centre"
    ties: Ties = "efron"
    iecv: bool = True
    method: Literal["REML", "DL", "PM", "ML"] = "REML"
    knha: bool = True
    min_events: int = 5
    tol: float = 1e-10
    analysis: str = ""
    endpoint: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.covariates, str) or not self.covariates:
            raise ConfigError("ValiditySpec.covariates expected a non-empty tuple of columns.")
        if self.min_events < 1:
            raise ConfigError(f"ValiditySpec.min_events must be >= 1; got {self.min_events}.")

    def cox_spec(self, *, strata: tuple[str, ...]) -> CoxSpec:
        return CoxSpec(
            duration=self.duration,
            event=self.event,
            covariates=self.covariates,
            categorical=self.categorical,
            strata=strata,
            ties=self.ties,
            tol=self.tol,
            max_iter=100,
            term_lr_tests=False,
            analysis=self.analysis,
            endpoint=self.endpoint,
        )


@dataclass(frozen=True, slots=True)
class ValidityResult:
    """Per-centre discrimination and calibration, and their pooling.

    Attributes
    ----------
    per_centre : DataFrame
        ``centre, n, events, apparent_c, apparent_c_se, iecv_c, iecv_c_se, calibration_slope,
        calibration_slope_se, note`` (NaN where not estimable, with the reason in ``note``).
    meta : dict
        ``{measure: MetaResult}`` for ``apparent_c``, ``iecv_c``, ``calibration_slope`` (those
        with at least one estimable centre).
    n, events : int
        Patients and events analysed (complete cases of the model).
    dropped : DataFrame
    spec : ValiditySpec
    """

    per_centre: pd.DataFrame
    meta: dict[str, MetaResult]
    n: int
    events: int
    dropped: pd.DataFrame
    spec: ValiditySpec

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: per measure (``model = "validity_apparent_c"``, ``validity_iecv_c``,
        ``validity_calibration_slope``) one row per centre (``row_type = "study"``, normal
        95 % CI) then the pooled row (``row_type = "pooled"``, with ``tau2``, ``i2``,
        ``pi_lower``, ``pi_upper``, ``k``...)."""
        frames = []
        spec = self.spec
        for measure, _ in MEASURES:
            meta = self.meta.get(measure)
            if meta is None:
                continue
            frame = meta.to_frame(analysis=spec.analysis, endpoint=spec.endpoint)
            frame["model"] = f"validity_{measure}"
            frame["hr"] = np.nan
            centres = self.per_centre.set_index("centre")
            study = frame["row_type"] == "study"
            frame.loc[study, "n"] = centres.loc[frame.loc[study, "term"], "n"].to_numpy()
            frame.loc[study, "events"] = centres.loc[frame.loc[study, "term"], "events"].to_numpy()
            frame.loc[~study, "n"] = self.n
            frame.loc[~study, "events"] = self.events
            frames.append(frame)
        if not frames:
            return tidy_frame([])
        return pd.concat(frames, ignore_index=True)


def _fit_arrays(matrix: np.ndarray, time: np.ndarray, event: np.ndarray, strata: np.ndarray | None,
                spec: ValiditySpec) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Coefficients of a Cox fit (0 for columns constant in this sample) and its covariance."""
    varying = np.flatnonzero(np.ptp(matrix, axis=0) > 0)
    if varying.size == 0:
        raise DataError("no covariate varies")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = cox_fit_arrays(np.ascontiguousarray(matrix[:, varying]), time, event, strata,
                             ties=spec.ties, tol=spec.tol, max_iter=100)  # fmt: skip
    beta = np.zeros(matrix.shape[1])
    beta[varying] = fit.coefficients
    return beta, fit.covariance


def _pool(values: pd.DataFrame, measure: str, spec: ValiditySpec) -> MetaResult | None:
    ok = values[measure].notna() & (values[f"{measure}_se"] > 0)
    if not ok.any():
        return None
    chosen = values.loc[ok]
    return fit_meta(
        chosen[measure].to_numpy(dtype=float),
        chosen[f"{measure}_se"].to_numpy(dtype=float) ** 2,
        MetaSpec(method=spec.method, knha=spec.knha, exponentiate=False),
        labels=chosen["centre"].tolist(),
        term=measure,
    )


def fit_validity(data: pd.DataFrame, spec: ValiditySpec) -> ValidityResult:
    """Per-centre C (apparent and cross-validated) and calibration slope, pooled.

    Parameters
    ----------
    data : DataFrame
        One row per patient, with the centre column.
    spec : ValiditySpec

    Returns
    -------
    ValidityResult

    Raises
    ------
    ConfigError
        A column named by the spec is absent.
    DataError
        No complete case, or no centre can be evaluated.

    References
    ----------
    .. [1] Royston P, Parmar MKB, Sylvester R. Construction and validation of a prognostic
       model across several studies, with an application in superficial bladder cancer.
       Stat Med 2004;23:907-26 (internal-external cross-validation).
    .. [2] Debray TPA, Moons KGM, Ahmed I, Koffijberg H, Riley RD. A framework for developing,
       implementing, and evaluating clinical prediction models in an individual participant
       data meta-analysis. Stat Med 2013;32:3158-80.
    .. [3] Riley RD, Ensor J, Snell KIE, et al. External validation of clinical prediction
       models using big datasets from e-health records or IPD meta-analysis: opportunities and
       challenges. BMJ 2016;353:i3140.
    .. [4] Van Houwelingen HC. Validation, calibration, revision and combination of prognostic
       survival models. Stat Med 2000;19:3401-15 (the calibration slope).

    Examples
    --------
    >>> # fit_validity(cohort, ValiditySpec(duration="os_months", event="os_event",
    >>> #     covariates=("age", "node_positive", "grade3", "ctc_positive"))).per_centre
    """
    if spec.centre not in data.columns:
        raise ConfigError(f"centre column {spec.centre!r} expected in the data.")
    stratified = spec.cox_spec(strata=(spec.centre,))
    design = build_spec_design(data, stratified)
    complete = data.iloc[design.rows]
    time = complete[spec.duration].to_numpy(dtype=float)
    event = complete[spec.event].to_numpy(dtype=float)
    centre = complete[spec.centre].astype(str).to_numpy()
    centres = sorted(np.unique(centre).tolist())
    records: list[dict[str, Any]] = []
    for name in centres:
        here = centre == name
        n_events = int(event[here].sum())
        record: dict[str, Any] = {"centre": name, "n": int(here.sum()), "events": n_events}
        for measure, _ in MEASURES:
            record[measure] = np.nan
            record[f"{measure}_se"] = np.nan
        notes = []
        if n_events < spec.min_events:
            record["note"] = f"{n_events} events (fewer than {spec.min_events}): not evaluated"
            records.append(record)
            continue
        own = complete.loc[here]
        try:  # the model fitted in the centre alone (R: coxph(..., data = centre))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                fit = fit_cox(own, replace(stratified, strata=(), concordance=False))
            for w in caught:  # anything else is passed on
                if not issubclass(w.category, ConvergenceWarning):
                    warnings.warn(w.message, w.category, stacklevel=2)
            if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                notes.append(
                    "in the centre alone some coefficients diverge (a category without "
                    "events); its C is still defined"
                )
            c = cox_concordance(fit, own)
            record["apparent_c"], record["apparent_c_se"] = c.concordance, c.std_error
        except (DataError, ConvergenceError) as exc:
            notes.append(f"apparent C not estimable: {exc}")
        if spec.iecv:
            try:
                train = ~here
                beta, _ = _fit_arrays(design.matrix[train], time[train], event[train],
                                      centre[train], spec)  # fmt: skip
                lp = design.matrix[here] @ beta
                c = concordance_arrays(time[here], event[here], lp)
                record["iecv_c"], record["iecv_c_se"] = c.concordance, c.std_error
                if np.ptp(lp) > 0:
                    slope, cov = _fit_arrays(lp[:, None], time[here], event[here], None, spec)
                    record["calibration_slope"] = float(slope[0])
                    record["calibration_slope_se"] = math.sqrt(float(cov[0, 0]))
                else:
                    notes.append("calibration slope not estimable: one risk score for all")
            except (DataError, ConvergenceError, np.linalg.LinAlgError) as exc:
                notes.append(f"cross-validation not estimable: {exc}")
        record["note"] = "; ".join(notes)
        records.append(record)
    per_centre = pd.DataFrame(records)
    meta = {}
    for measure, _ in MEASURES:
        if not spec.iecv and measure != "apparent_c":
            continue
        pooled = _pool(per_centre, measure, spec)
        if pooled is not None:
            meta[measure] = pooled
    if not meta:
        raise DataError(
            "validity across centres: no centre could be evaluated (too few events, or the "
            "model cannot be fitted within a centre)."
        )
    return ValidityResult(
        per_centre=per_centre,
        meta=meta,
        n=int(len(complete)),
        events=int(event.sum()),
        dropped=design.dropped,
        spec=spec,
    )

"""Proportional-hazards check: the scaled Schoenfeld residual score test of R's ``cox.zph``.

For each coefficient (and globally) the test is the score test of adding ``x * g(t)`` to the
fitted model, ``g`` a centred transform of time (Kaplan-Meier, rank or identity), evaluated at
the fitted coefficients; this is the formulation of survival 3.x's ``cox.zph``. The score and
the 2p x 2p information come from the same vectorised risk-set sums as the Cox fit, with the
event groups weighted by ``g`` and ``g^2``, so the test costs about one Newton iteration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse
from scipy import stats

from pooled.errors import ConfigError, DataError
from pooled.models.cox import (
    CoxResult,
    CoxSpec,
    Ties,
    _design,
    _outcome_arrays,
    _RiskSets,
    _time_codes,
)
from pooled.results import tidy_frame

__all__ = ["ProportionalHazardsResult", "proportional_hazards_arrays", "proportional_hazards_test"]

Transform = Literal["km", "rank", "identity"]


@dataclass(frozen=True, slots=True)
class ProportionalHazardsResult:
    """Per-term and global tests of proportional hazards, and residuals for plotting.

    Attributes
    ----------
    table : DataFrame
        Columns ``term, chisq, df, p_value``; the last row is ``GLOBAL``.
    residuals : DataFrame
        One row per event, sorted by stratum then time: ``time``, ``transformed_time``,
        ``stratum`` and one column per term with the scaled Schoenfeld residual plus the
        coefficient (R's ``cox.zph(...)$y``); NaN where the term is constant in the stratum.
    variance : ndarray
        R's ``$var``: inverse of the average information, for smoothed-curve bands.
    transform : str
    n, events : int
    spec : CoxSpec or None
    """

    table: pd.DataFrame
    residuals: pd.DataFrame
    variance: np.ndarray
    transform: str
    n: int
    events: int
    spec: CoxSpec | None = None

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per term and ``GLOBAL``; extra columns ``chisq, df, transform``."""
        analysis = self.spec.analysis if self.spec else ""
        endpoint = self.spec.endpoint if self.spec else ""
        rows = [
            {
                "analysis": analysis,
                "endpoint": endpoint,
                "model": "cox_zph",
                "term": row.term,
                "p_value": row.p_value,
                "n": self.n,
                "events": self.events,
                "chisq": row.chisq,
                "df": row.df,
                "transform": self.transform,
            }
            for row in self.table.itertuples()
        ]
        return tidy_frame(rows)


def _transformed_time(time: np.ndarray, event: np.ndarray, transform: Transform) -> np.ndarray:
    if transform not in ("km", "rank", "identity"):
        raise ConfigError(f"transform must be one of 'km', 'rank', 'identity'; got {transform!r}.")
    if transform == "identity":
        return time.astype(np.float64)
    codes, n_times = _time_codes(time, time.size)  # ascending codes of the distinct times
    counts = np.bincount(codes, minlength=n_times)
    if transform == "rank":  # average ranks of ties, as R's rank()
        before = np.cumsum(counts) - counts
        return (before + (counts + 1) / 2.0)[codes]
    # left-continuous Kaplan-Meier over everyone: 1 - S(t-)
    deaths = np.bincount(codes, weights=event.astype(np.float64), minlength=n_times)
    at_risk = counts[::-1].cumsum()[::-1].astype(np.float64)
    surv = np.cumprod(1.0 - deaths / at_risk)
    before_surv = np.concatenate(([1.0], surv[:-1]))
    return 1.0 - before_surv[codes]


def proportional_hazards_arrays(
    X: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    strata: np.ndarray | None,
    coefficients: np.ndarray,
    *,
    ties: Ties = "efron",
    transform: Transform = "km",
    names: Sequence[str] | None = None,
    terms: Sequence[Sequence[int]] | None = None,
    information: np.ndarray | None = None,
) -> ProportionalHazardsResult:
    """Score test of proportional hazards at fitted ``coefficients`` (R's ``cox.zph``).

    Parameters
    ----------
    X, time, event, strata
        The data the model was fitted to (as for :func:`pooled.models.cox.cox_fit_arrays`).
    coefficients : ndarray
        Fitted log hazard ratios.
    ties : {"efron", "breslow"}
        As in the fit.
    transform : {"km", "rank", "identity"}
        Time transform ``g``.
    names : sequence of str, optional
        Term names.
    terms : sequence of column-index groups, optional
        Test these groups of columns jointly (R's ``terms = TRUE``); default each column
        alone (R's ``terms = FALSE``).
    information : ndarray, optional
        The fit's information matrix at ``coefficients`` (saves one pass over the data).

    Returns
    -------
    ProportionalHazardsResult

    References
    ----------
    .. [1] Grambsch PM, Therneau TM. Proportional hazards tests and diagnostics based on
       weighted residuals. Biometrika 1994;81:515-26.
    .. [2] Therneau TM. survival: A Package for Survival Analysis in R, version 3.5
       (``cox.zph``, ``zph1.c``).

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> x = rng.normal(size=(300, 1))
    >>> t = np.ceil(rng.exponential(np.exp(-0.3 * x[:, 0])) * 24)
    >>> res = proportional_hazards_arrays(x, t, np.ones(300), None, np.array([0.3]))
    >>> list(res.table.term)
    ['x0', 'GLOBAL']
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.float64)
    beta = np.asarray(coefficients, dtype=np.float64)
    p = X.shape[1]
    if beta.shape != (p,):
        raise ConfigError(f"coefficients expected {p} values; got {beta.shape}.")
    labels = list(names) if names is not None else [f"x{j}" for j in range(p)]
    rs = _RiskSets(X, time, event, strata, ties)
    ttimes = _transformed_time(time, event, transform)
    gtime = ttimes - ttimes[event == 1].mean()
    # g is a function of time, so one value per event group
    group_g = np.zeros(rs.n_event_groups)
    group_g[rs.ev_entry_rows] = gtime[rs.event]
    pt = rs.parts(beta)
    info = rs.information(pt) if information is None else np.asarray(information, dtype=float)
    u_g, info_g = rs.score_and_information(pt, group_g)
    info_gg = rs.information(pt, group_g * group_g)
    imat = np.block([[info, info_g], [info_g.T, info_gg]])
    u = np.concatenate((np.zeros(p), u_g))

    groups = [list(t) for t in terms] if terms is not None else [[j] for j in range(p)]
    chisq, df = [], []
    for jj in groups:
        kk = list(range(p)) + [p + j for j in jj]
        sub = imat[np.ix_(kk, kk)]
        uk = u[kk]
        chisq.append(float(np.linalg.solve(sub, uk) @ uk))
        df.append(len(jj))
    chisq.append(float(np.linalg.solve(imat, u) @ u))
    df.append(p)
    term_labels = ["+".join(labels[j] for j in jj) for jj in groups]
    table = pd.DataFrame(
        {
            "term": term_labels + ["GLOBAL"],
            "chisq": chisq,
            "df": df,
            "p_value": stats.chi2.sf(np.array(chisq), np.array(df)),
        }
    )

    # scaled Schoenfeld residuals, rescaled within strata as cox.zph does
    # scaled Schoenfeld residuals, events sorted by stratum then time (R's order)
    ev_idx = np.flatnonzero(rs.event)
    codes = rs.codes
    n_strata = rs.n_strata
    ev_key = codes[ev_idx].astype(np.int64) * rs.n_times + rs.tcodes[ev_idx]
    if n_strata * rs.n_times < 1 << 16:
        ev_key = ev_key.astype(np.uint16)
    ev_idx = ev_idx[np.argsort(ev_key, kind="stable")]
    schoen = np.take(rs.xs, ev_idx, axis=0)
    schoen -= rs.mean_covariate(pt)[rs.entry[ev_idx]]
    ev_stratum = codes[ev_idx]
    # used[k, j]: events in stratum k if column j varies there, else 0 (as zph1.c)
    indicator = scipy.sparse.csc_matrix(
        (np.ones(rs.n), codes, np.arange(rs.n + 1)), shape=(n_strata, rs.n)
    )
    size = np.bincount(codes, minlength=n_strata).astype(np.float64)[:, None]
    first = np.asarray(indicator @ rs.xs) / size
    second = np.asarray(indicator @ np.square(rs.xs)) / size
    within = second - first**2
    scale = np.maximum((second * size).sum(axis=0) / rs.n, np.finfo(float).tiny)
    varies = within > 1e-12 * scale
    events_k = np.bincount(ev_stratum, minlength=n_strata)
    used = varies * events_k[:, None].astype(np.float64)
    wtmat = np.zeros((p, p))
    for k in range(n_strata):
        wtmat += np.minimum.outer(used[k], used[k])
    vmean = info / np.where(wtmat == 0, 1.0, wtmat)
    # strata sharing a pattern of used columns share one solve (usually a single pattern)
    patterns, pattern_of_stratum = np.unique(used > 0, axis=0, return_inverse=True)
    if patterns.shape[0] == 1 and patterns[0].all():
        sresid = schoen @ np.linalg.inv(vmean).T
    else:
        sresid = np.full_like(schoen, np.nan)
        row_pattern = pattern_of_stratum.reshape(-1)[ev_stratum]
        for k, cols_mask in enumerate(patterns):
            cols = np.flatnonzero(cols_mask)
            rows = np.flatnonzero(row_pattern == k)
            if cols.size and rows.size:
                inv = np.linalg.inv(vmean[np.ix_(cols, cols)])
                sresid[np.ix_(rows, cols)] = schoen[np.ix_(rows, cols)] @ inv.T
    sresid += beta
    residuals = pd.DataFrame(
        np.column_stack([rs.time[ev_idx], ttimes[ev_idx], sresid]),
        columns=["time", "transformed_time", *labels],
    )
    residuals.insert(2, "stratum", ev_stratum)
    return ProportionalHazardsResult(
        table=table,
        residuals=residuals,
        variance=np.linalg.inv(vmean),
        transform=transform,
        n=rs.n,
        events=rs.n_events,
    )


def proportional_hazards_test(
    result: CoxResult,
    data: pd.DataFrame,
    *,
    transform: Transform = "km",
    terms: bool = False,
) -> ProportionalHazardsResult:
    """Test proportional hazards for a fitted Cox model (R's ``cox.zph``).

    Parameters
    ----------
    result : CoxResult
        A complete-case fit from :func:`pooled.models.cox.fit_cox`.
    data : DataFrame
        The data it was fitted to (the same rows are rebuilt from ``result.spec``).
    transform : {"km", "rank", "identity"}
        Time transform; R's default is ``"km"``.
    terms : bool
        False (default): each coefficient tested alone, as ``cox.zph(fit, terms = FALSE)``;
        True: the columns of a categorical covariate or interaction tested jointly.

    Returns
    -------
    ProportionalHazardsResult

    Raises
    ------
    ConfigError
        The result comes from multiple imputation.
    DataError
        ``data`` does not give the patients the model was fitted to.

    References
    ----------
    .. [1] Grambsch PM, Therneau TM. Proportional hazards tests and diagnostics based on
       weighted residuals. Biometrika 1994;81:515-26.

    Examples
    --------
    >>> # res = fit_cox(cohort, spec); proportional_hazards_test(res, cohort).table
    """
    if result.n_imputations:
        raise ConfigError(
            "proportional_hazards_test expected a complete-case fit; got a multiple-imputation "
            "result. Refit with missing='complete_case' to check proportional hazards."
        )
    spec = result.spec
    design = _design(data, spec)
    if design.n != result.n or design.term_names != result.term_names:
        raise DataError(
            f"The data give {design.n} patients and terms {list(design.term_names)}; the fit "
            f"had {result.n} and {list(result.term_names)}. Pass the data the model was "
            "fitted to."
        )
    time, event, strata, _ = _outcome_arrays(data, spec, design.rows)
    groups = None
    if terms:
        groups = [list(design.columns_of(s)) for s in dict.fromkeys(design.term_sources)]
    out = proportional_hazards_arrays(
        design.matrix,
        time,
        event,
        strata,
        result.coefficients,
        ties=spec.ties,
        transform=transform,
        names=design.term_names,
        terms=groups,
        information=np.linalg.inv(result.covariance),
    )
    if terms:
        sources = list(dict.fromkeys(design.term_sources))
        out.table["term"] = sources + ["GLOBAL"]
    return ProportionalHazardsResult(
        table=out.table,
        residuals=out.residuals,
        variance=out.variance,
        transform=out.transform,
        n=out.n,
        events=out.events,
        spec=spec,
    )

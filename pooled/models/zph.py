"""Proportional-hazards check: the scaled Schoenfeld residual score test of R's ``cox.zph``.

For each coefficient (and globally) the test is the score test of adding ``x * g(t)`` to the
fitted model, ``g`` a centred transform of time (Kaplan-Meier, rank or identity), evaluated at
the fitted coefficients; this is the formulation of survival 3.x's ``cox.zph``. The score and
the 2p x 2p information come from the same vectorised risk-set sums as the Cox fit, with the
event groups weighted by ``g`` and ``g^2``: one pass over the rows for the risk-set sums at the
fitted coefficients and one compiled, chunked pass (centring on the fly, one BLAS product per
block) for the two weighted cross-products (the fit's own information is reused when given),
then one chunked pass over the events, in R's order, for the score and the scaled Schoenfeld
residuals. Whether a covariate varies within a stratum
(``zph1.c``'s ``used``) is read off a few events per stratum, all rows only where needed.
Counting-process fits (rows ``(start, stop]``) are tested as R's ``cox.zph`` tests them
(``zph2.c``), with the fit's ``(start, stop]`` risk sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import pandas as pd
from scipy import stats

from pooled.errors import ConfigError, DataError
from pooled.models.cox import (
    CoxResult,
    CoxSpec,
    Ties,
    _outcome_arrays,
    _RiskSets,
    _start_array,
)
from pooled.models.design import build_spec_design
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


_CHUNK = 4096  # rows per block of the weighted cross-products (a block stays in cache)
_PREFIX = 64  # events per stratum that usually show whether a covariate varies there


def _check_transform(transform: str) -> None:
    if transform not in ("km", "rank", "identity"):
        raise ConfigError(f"transform must be one of 'km', 'rank', 'identity'; got {transform!r}.")


def _transformed_event_times(
    rs: _RiskSets, time_ev: np.ndarray, tcode_ev: np.ndarray, transform: Transform
) -> np.ndarray:
    """g(t) before centring at each event, from the distinct times (R's ``ttimes[event]``)."""
    if transform == "identity":
        return time_ev
    counts = np.bincount(rs.tcodes, minlength=rs.n_times)
    if transform == "rank":  # average ranks of ties among all n (stop) times, as R's rank()
        before = np.cumsum(counts) - counts
        return (before + (counts + 1) / 2.0)[tcode_ev]
    # left-continuous Kaplan-Meier over everyone: 1 - S(t-); for (start, stop] rows the risk
    # set at t is start < t <= stop (R's survfitKM of the fit's Surv(start, stop, event))
    deaths = np.bincount(tcode_ev, minlength=rs.n_times).astype(np.float64)
    at_risk = counts[::-1].cumsum()[::-1].astype(np.float64)
    if rs.scodes is not None:
        starts = np.bincount(rs.scodes, minlength=rs.n_times)
        at_risk -= starts[::-1].cumsum()[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(deaths > 0, 1.0 - deaths / at_risk, 1.0)
    surv = np.cumprod(factor)
    before_surv = np.concatenate(([1.0], surv[:-1]))
    return 1.0 - before_surv[tcode_ev]


@numba.njit(cache=True, nogil=True)
def _time_weighted_rows(
    X: np.ndarray,
    means: np.ndarray,
    r: np.ndarray,
    cw_g: np.ndarray,
    w2_g: np.ndarray,
    cw_gg: np.ndarray,
    w2_gg: np.ndarray,
    entry: np.ndarray,
    exit: np.ndarray,
    counting: bool,
    event: np.ndarray,
    start: int,
    stop: int,
    block: np.ndarray,
    xv: np.ndarray,
    extra: np.ndarray,
) -> None:  # pragma: no cover
    """Rows ``start:stop`` of ``[x sqrt(v_gg), x v_g / sqrt(v_gg)]`` (x centred) into ``block``.

    ``block[:, :p].T @ block`` is then ``[X' diag(v_gg) X, X' diag(v_g) X]`` for the block.
    ``v = r * (cw[entry] - event * w2[entry])`` for the g and g^2 weights (both indexed with a
    trailing 0 for rows never at risk; less ``cw[exit]`` for counting-process rows), as
    :func:`pooled.models.cox._weighted_block`. Adds
    ``X' v_g`` to ``xv``; the rare rows with ``v_g != 0`` but ``v_gg <= 0`` (rounding; by
    Cauchy-Schwarz ``v_g^2 <= v_gg * sum of weights``) go straight into ``extra``.
    """
    p = X.shape[1]
    for i in range(start, stop):
        g = entry[i]
        cg = cw_g[g]
        cgg = cw_gg[g]
        if counting:
            h = exit[i]
            cg -= cw_g[h]
            cgg -= cw_gg[h]
        if event[i]:
            vg = (cg - w2_g[g]) * r[i]
            vgg = (cgg - w2_gg[g]) * r[i]
        else:
            vg = cg * r[i]
            vgg = cgg * r[i]
        b = i - start
        if vgg > 0.0:
            root = np.sqrt(vgg)
            ratio = vg / root
            for j in range(p):
                xc = X[i, j] - means[j]
                block[b, j] = xc * root
                block[b, p + j] = xc * ratio
                xv[j] += xc * vg
        else:
            for j in range(p):
                xc = X[i, j] - means[j]
                block[b, j] = 0.0
                block[b, p + j] = 0.0
                xv[j] += xc * vg
            if vg != 0.0:
                for j in range(p):
                    xj = (X[i, j] - means[j]) * vg
                    for k in range(p):
                        extra[j, k] += xj * (X[i, k] - means[k])


_WEIGHTED_CHUNK = 2048  # rows per block of the time-weighted products (11 x 22 BLAS products)


def _time_weighted_blocks(
    rs: _RiskSets, pt: dict, group_g: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``X' diag(v_g) X`` and ``X' diag(v_gg) X`` (g and g^2 weights) and ``X' v_g``.

    One chunked pass over the rows, centred on the fly by a compiled kernel
    (:func:`_time_weighted_rows`), and one BLAS product per cache-sized block for both
    matrices: with ``a = x sqrt(v_gg)`` and ``b = x v_g / sqrt(v_gg)`` (v_gg >= 0, v_g of
    either sign), ``a'a`` is the g^2 block and ``a'b`` the g block.
    """
    zero = np.zeros(1)
    weights = []
    for weight in (group_g, group_g * group_g):
        cw = np.concatenate((rs._cum_reverse(pt["w1"] * weight), zero))
        w2 = np.concatenate((pt["w2"] * weight, zero)) if rs.efron else np.zeros(cw.size)
        weights += [cw, w2]
    cw_g, w2_g, cw_gg, w2_gg = weights
    p = rs.p
    both = np.zeros((p, 2 * p))
    extra = np.zeros((p, p))
    xv = np.zeros(p)
    buf = np.empty((min(_WEIGHTED_CHUNK, rs.n), 2 * p))
    r, entry, ev = pt["r"], rs.entry, rs.event_u8
    for start in range(0, rs.n, _WEIGHTED_CHUNK):
        stop = min(start + _WEIGHTED_CHUNK, rs.n)
        block = buf[: stop - start]
        _time_weighted_rows(
            rs.X,
            rs.means,
            r,
            cw_g,
            w2_g,
            cw_gg,
            w2_gg,
            entry,
            rs.exit,
            rs.counting,
            ev,
            start,
            stop,
            block,
            xv,
            extra,
        )
        both += block[:, :p].T @ block
    return both[:, p:] + extra, both[:, :p], xv


def _risk_set_correction(rs: _RiskSets, pt: dict, weight: np.ndarray) -> np.ndarray:
    """The part of the information that is a sum over event groups of g * (mean products)."""
    s1, e1 = pt["s1"], pt["e1"]
    out = -(s1.T * (pt["q1"] * weight)) @ s1
    if rs.efron:
        cross = (s1.T * (pt["q2"] * weight)) @ e1
        out += cross + cross.T
        out -= (e1.T * (pt["q3"] * weight)) @ e1
    return out


def _varies_within_strata(
    rs: _RiskSets, X: np.ndarray, ev_idx: np.ndarray, ev_stratum: np.ndarray
) -> np.ndarray:
    """varies[k, j]: column j takes two different values in stratum k (zph1.c's test).

    Decided on the first few events of each stratum (events sorted by stratum) where they
    already differ; only (stratum, column) pairs constant there look at all rows of the stratum.
    """
    varies = np.zeros((rs.n_strata, rs.p), dtype=bool)
    starts = np.flatnonzero(np.concatenate(([True], ev_stratum[1:] != ev_stratum[:-1])))
    ends = np.append(starts[1:], ev_stratum.size)
    with_events = ev_stratum[starts]
    # the first few events of each stratum (repeating its last one when it has fewer); the
    # sample is at most about twice the events whatever the number of strata
    length = min(_PREFIX, max(2, ev_stratum.size // starts.size))
    prefix = np.minimum(starts[:, None] + np.arange(length), ends[:, None] - 1)
    sample = np.take(X, ev_idx[prefix], axis=0)  # strata x length x p
    varies[with_events] = sample.max(axis=1) != sample.min(axis=1)
    open_pairs = ~varies[with_events]
    if not open_pairs.any():
        return varies
    strata_open = np.zeros(rs.n_strata, dtype=bool)
    strata_open[with_events[open_pairs.any(axis=1)]] = True
    cols = np.flatnonzero(open_pairs.any(axis=0))
    rows = np.flatnonzero(strata_open[rs.codes])
    rows = rows[np.argsort(rs.codes[rows], kind="stable")]
    codes = rs.codes[rows]
    starts = np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1])))
    sub = X[np.ix_(rows, cols)]
    differ = np.maximum.reduceat(sub, starts, axis=0) != np.minimum.reduceat(sub, starts, axis=0)
    varies[np.ix_(codes[starts], cols)] |= differ
    return varies


@numba.njit(cache=True, nogil=True)
def _event_rows(
    X: np.ndarray,
    ev_idx: np.ndarray,
    ev_group: np.ndarray,
    gtime_ev: np.ndarray,
    means: np.ndarray,
    mean_x: np.ndarray,
    start: int,
    stop: int,
    block: np.ndarray,
    gx: np.ndarray,
) -> None:  # pragma: no cover
    """Events ``start:stop`` (sorted): ``x - xbar(t)`` into ``block``; adds g (x - mean) to gx."""
    p = X.shape[1]
    for e in range(start, stop):
        i = ev_idx[e]
        k = ev_group[e]
        ge = gtime_ev[e]
        b = e - start
        for j in range(p):
            xc = X[i, j] - means[j]
            gx[j] += ge * xc
            block[b, j] = xc - mean_x[k, j]


@numba.njit(cache=True, nogil=True)
def _store_rows(
    values: np.ndarray, beta: np.ndarray, out: np.ndarray, start: int
) -> None:  # pragma: no cover
    """``out[start + b] = values[b] + beta`` (``out`` may be a strided view)."""
    for b in range(values.shape[0]):
        for j in range(values.shape[1]):
            out[start + b, j] = values[b, j] + beta[j]


def _scaled_schoenfeld(
    X: np.ndarray,
    ev_idx: np.ndarray,
    ev_group: np.ndarray,
    ev_pattern: np.ndarray,
    gtime_ev: np.ndarray,
    means: np.ndarray,
    mean_x: np.ndarray,
    scalings: list[tuple[np.ndarray, np.ndarray | None]],
    beta: np.ndarray,
    sresid: np.ndarray,
) -> np.ndarray:
    """Fill ``sresid`` with beta + V^-1 (x - xbar(t)) per event; return sum of g (x - mean).

    Chunked over the sorted events (a compiled gather-and-centre, then a BLAS product) so the
    gathered rows stay in cache. ``scalings[k]`` holds the used columns and the transposed
    inverse of their ``vmean`` block for pattern ``k``; columns a stratum does not use stay NaN.
    """
    p = X.shape[1]
    gx = np.zeros(p)
    cols0, inv0 = scalings[0]
    # every stratum with events uses every column: one scaling for all events
    uniform = inv0 if len(scalings) == 1 and cols0.size == p else None
    if uniform is None:
        sresid[:] = np.nan
    n_ev = ev_idx.size
    size = min(_CHUNK, n_ev)
    block_buf = np.empty((size, p))
    scaled_buf = np.empty((size, p))
    for start in range(0, n_ev, _CHUNK):
        stop = min(start + _CHUNK, n_ev)
        block = block_buf[: stop - start]
        _event_rows(X, ev_idx, ev_group, gtime_ev, means, mean_x, start, stop, block, gx)
        if uniform is not None:
            scaled = scaled_buf[: stop - start]
            np.matmul(block, uniform, out=scaled)
            _store_rows(scaled, beta, sresid, start)
            continue
        chunk_pattern = ev_pattern[start:stop]
        for k, (cols, inv_t) in enumerate(scalings):
            rows = np.flatnonzero(chunk_pattern == k)
            if inv_t is not None and rows.size:
                sresid[np.ix_(start + rows, cols)] = block[np.ix_(rows, cols)] @ inv_t + beta[cols]
    return gx


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
    start: np.ndarray | None = None,
) -> ProportionalHazardsResult:
    """Score test of proportional hazards at fitted ``coefficients`` (R's ``cox.zph``).

    Parameters
    ----------
    X, time, event, strata, start
        The data the model was fitted to (as for :func:`pooled.models.cox.cox_fit_arrays`);
        with ``start``, counting-process rows ``(start, time]``: ``g`` is then computed from
        every row's stop time as R does (``rank`` ranks all rows' stop times, so splitting
        a patient's follow-up changes it; ``km`` uses the ``(start, stop]`` risk sets and
        ``identity`` the times, both unchanged by splitting).
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
    _check_transform(transform)
    beta = np.asarray(coefficients, dtype=np.float64)
    p = X.shape[1]
    if beta.shape != (p,):
        raise ConfigError(f"coefficients expected {p} values; got {beta.shape}.")
    labels = list(names) if names is not None else [f"x{j}" for j in range(p)]
    rs = _RiskSets(X, time, event, strata, ties, start=start)

    # events sorted by stratum, then ascending time, then row (R's order; for (start, stop]
    # data R reverses the rows within tied times): event groups run by stratum with time
    # descending, so reverse the groups within each stratum
    ne = rs.n_event_groups
    ascending = rs.e_first + rs.e_last - np.arange(ne)
    key = ascending[rs.ev_entry_rows]
    if ne < 1 << 16:
        key = key.astype(np.uint16)
    if rs.counting:
        flip = np.arange(key.size)[::-1]
        order = flip[np.argsort(key[::-1], kind="stable")]
    else:
        order = np.argsort(key, kind="stable")
    ev_idx = np.flatnonzero(rs.event)[order]
    ev_group = rs.ev_entry_rows[order]
    ev_stratum = rs.ev_stratum[ev_group]
    time_ev = rs.time[ev_idx]
    ttimes_ev = _transformed_event_times(rs, time_ev, rs.tcodes[ev_idx], transform)
    gtime_ev = ttimes_ev - ttimes_ev.mean()
    # g is a function of time, so one value per event group
    group_g = np.zeros(ne)
    group_g[ev_group] = gtime_ev

    # score and 2p x 2p information of the model with x * g(t) added, at (beta, 0)
    pt = rs.parts(beta)
    info = rs.information(pt) if information is None else np.asarray(information, dtype=float)
    info_g, info_gg, xv = _time_weighted_blocks(rs, pt, group_g)
    info_g += _risk_set_correction(rs, pt, group_g)
    info_gg += _risk_set_correction(rs, pt, group_g * group_g)
    info_g = (info_g + info_g.T) / 2.0
    info_gg = (info_gg + info_gg.T) / 2.0

    # scaling of the Schoenfeld residuals within strata, as cox.zph: used[k, j] = events in
    # stratum k if column j varies there, else 0; wtmat[i, j] = sum_k min(used[k, i], used[k, j])
    varies = _varies_within_strata(rs, X, ev_idx, ev_stratum)
    events_k = np.bincount(rs.ev_stratum, weights=rs.d, minlength=rs.n_strata)
    has_events = events_k > 0
    vf = varies.astype(np.float64)
    wtmat = (vf * events_k[:, None]).T @ vf
    vmean = info / np.where(wtmat == 0, 1.0, wtmat)
    # strata sharing a pattern of used columns share one solve (usually a single pattern)
    patterns, pattern_of_stratum = np.unique(varies[has_events], axis=0, return_inverse=True)
    stratum_pattern = np.full(rs.n_strata, -1)
    stratum_pattern[has_events] = pattern_of_stratum.reshape(-1)
    scalings = [
        (np.flatnonzero(mask), np.linalg.inv(vmean[np.ix_(mask, mask)]).T if mask.any() else None)
        for mask in patterns
    ]

    # one pass over the events (sorted): g-weighted covariate sums for the score, and the
    # scaled Schoenfeld residuals beta + V^-1 (x - xbar(t)) written straight into the frame
    out = np.empty((time_ev.size, 2 + p))
    out[:, 0] = time_ev
    out[:, 1] = ttimes_ev
    sresid = out[:, 2:]
    mean_x = rs.mean_covariate(pt)
    gx = _scaled_schoenfeld(
        X,
        ev_idx,
        ev_group,
        stratum_pattern[ev_stratum],
        gtime_ev,
        rs.means,
        mean_x,
        scalings,
        beta,
        sresid,
    )
    u_g = gx - xv
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
    residuals = pd.DataFrame(out, columns=["time", "transformed_time", *labels])
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
        A complete-case fit from :func:`pooled.models.cox.fit_cox`; a counting-process fit
        (``spec.start``) is tested as R tests it (see :func:`proportional_hazards_arrays`).
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
    if spec.weights is not None:
        raise ConfigError(
            "proportional_hazards_test expected an unweighted fit; got case weights "
            f"({spec.weights!r}). The weighted (Fine-Gray) PH test is not implemented."
        )
    design = build_spec_design(data, spec)
    if design.n != result.n or design.term_names != result.term_names:
        raise DataError(
            f"The data give {design.n} patients and terms {list(design.term_names)}; the fit "
            f"had {result.n} and {list(result.term_names)}. Pass the data the model was "
            "fitted to."
        )
    time, event, strata, _ = _outcome_arrays(data, spec, design.rows)
    start = _start_array(data, spec, design.rows)
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
        start=start,
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

"""A centre's log partial likelihood, score and information at given coefficients.

With strata nested in centres (``strata = ("centre", ...)``) every risk set lies within one
centre, so the stratified partial likelihood of the pooled data is the sum over centres of
each centre's own stratified partial likelihood, and so are its gradient (score) and its
negative Hessian (information). A coordinator that adds these three sums at the current
coefficients and takes a Newton step follows the pooled fit step by step
(:func:`pooled.federated.coordinator.federated_cox`).

The sums are computed here with NumPy, independently of the numba kernels of
:mod:`pooled.models.cox` (which the tests compare them with): rows are sorted by stratum and
descending time, the risk-set sums are cumulative sums over the groups of tied times, and the
information is ``X' diag(v) X`` less the outer products of the (Efron-corrected) risk-set
means, so memory beyond the input is a few vectors of length n and one p x p matrix. The
covariates are centred on the centre's own means (the partial likelihood, its score and
information do not change when a constant is added to a covariate within a stratum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pooled.errors import DataError

__all__ = ["CoxSums", "cox_sums"]

Ties = Literal["efron", "breslow"]


@dataclass(frozen=True, slots=True)
class CoxSums:
    """Log partial likelihood, score (p) and information (p x p) of one centre at ``beta``."""

    loglik: float
    score: np.ndarray
    information: np.ndarray
    n: int
    events: int


def _segments(starts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sums of ``values`` over consecutive segments beginning at ``starts``."""
    if values.shape[0] == 0:
        return np.zeros((0,) + values.shape[1:])
    return np.add.reduceat(values, starts, axis=0)


def cox_sums(
    X: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    strata: np.ndarray | None,
    beta: np.ndarray,
    *,
    ties: Ties = "efron",
) -> CoxSums:
    """The stratified Cox log partial likelihood, score and information at ``beta``.

    Parameters
    ----------
    X : ndarray, shape (n, p)
        Covariates (no intercept).
    time, event : ndarray, shape (n,)
        Follow-up time and 0/1 event indicator.
    strata : ndarray, shape (n,), optional
        Stratum codes within the centre (``None``: one stratum).
    beta : ndarray, shape (p,)
        The coefficients.
    ties : {"efron", "breslow"}

    Returns
    -------
    CoxSums

    References
    ----------
    .. [1] Efron B. The efficiency of Cox's likelihood function for censored data.
       J Am Stat Assoc 1977;72:557-65.
    .. [2] Lu CL, Wang S, Ji Z, et al. WebDISCO: a web service for distributed Cox model
       learning without patient-level data sharing. J Am Med Inform Assoc 2015;22:1212-9.

    Examples
    --------
    >>> x = np.array([[0.0], [1.0], [0.0], [1.0]])
    >>> s = cox_sums(x, np.array([1.0, 2, 3, 4]), np.array([1, 1, 0, 1]), None, np.zeros(1))
    >>> round(s.loglik, 6)
    -2.484907
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    n, p = X.shape
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if ties not in ("efron", "breslow"):
        raise DataError(f"ties must be 'efron' or 'breslow'; got {ties!r}.")
    if beta.shape != (p,):
        raise DataError(f"beta expected {p} values (one per column of X); got {beta.shape}.")
    if n == 0:
        return CoxSums(0.0, np.zeros(p), np.zeros((p, p)), 0, 0)
    codes = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata, dtype=np.int64)
    xc = X - X.mean(axis=0)
    eta = xc @ beta
    r = np.exp(eta)
    # stratum ascending, time descending: risk sets are running sums within a stratum
    order = np.lexsort((-time, codes))
    t, s, e = time[order], codes[order], event[order]
    xs, rs, etas = xc[order], r[order], eta[order]
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    new_group[1:] = (t[1:] != t[:-1]) | (s[1:] != s[:-1])
    g_start = np.flatnonzero(new_group)
    group = np.cumsum(new_group) - 1
    g_stratum = s[g_start]
    new_stratum = np.empty(g_start.size, dtype=bool)
    new_stratum[0] = True
    new_stratum[1:] = g_stratum[1:] != g_stratum[:-1]
    st_first = np.maximum.accumulate(np.where(new_stratum, np.arange(g_start.size), 0))

    def running(values: np.ndarray) -> np.ndarray:
        """Cumulative sums over groups, restarted at each stratum."""
        cs = np.cumsum(values, axis=0)
        before = np.concatenate((np.zeros((1,) + values.shape[1:]), cs))[st_first]
        return cs - before

    s0 = running(_segments(g_start, rs))
    s1 = running(_segments(g_start, rs[:, None] * xs))
    ev_mask = e == 1
    d = _segments(g_start, e)
    e0 = _segments(g_start, rs * e)
    e1 = _segments(g_start, (rs * e)[:, None] * xs)
    events = int(ev_mask.sum())
    has = d > 0
    eg = np.flatnonzero(has)  # event groups
    dg = d[eg].astype(np.int64)
    # one entry per event (Efron's k = 0 .. d - 1 within its tied group)
    rep = np.repeat(eg, dg)
    seg_start = np.concatenate(([0], np.cumsum(dg)[:-1])) if eg.size else np.zeros(0, np.int64)
    k = np.arange(rep.size) - np.repeat(seg_start, dg)
    c = k / np.repeat(dg, dg) if ties == "efron" else np.zeros(rep.size)
    den = s0[rep] - c * e0[rep]
    inv = 1.0 / den
    loglik = float(etas[ev_mask].sum() - np.log(den).sum())
    w1 = np.zeros(g_start.size)
    w2 = np.zeros(g_start.size)
    q1 = np.zeros(g_start.size)
    q2 = np.zeros(g_start.size)
    q3 = np.zeros(g_start.size)
    if eg.size:
        w1[eg] = _segments(seg_start, inv)
        w2[eg] = _segments(seg_start, c * inv)
        inv2 = inv * inv
        q1[eg] = _segments(seg_start, inv2)
        q2[eg] = _segments(seg_start, c * inv2)
        q3[eg] = _segments(seg_start, c * c * inv2)
    # each row is at risk at the event groups of its stratum at or before its group in this
    # order (times <= its own): reverse running sums of w1 within the stratum
    rev = np.cumsum(w1[::-1])[::-1]
    last = np.empty(g_start.size, dtype=bool)
    last[-1] = True
    last[:-1] = new_stratum[1:]
    st_last = np.minimum.accumulate(np.where(last, np.arange(g_start.size), g_start.size)[::-1])[
        ::-1
    ]
    after = np.concatenate((rev, [0.0]))[st_last + 1]
    cw = rev - after  # sum of w1 over the groups from this one to the stratum's end
    v = rs * (cw[group] - e * w2[group])
    score = (xs * e[:, None]).sum(axis=0) - v @ xs
    info = (xs * v[:, None]).T @ xs
    s1g, e1g = s1[eg], e1[eg]
    info -= (s1g.T * q1[eg]) @ s1g
    if ties == "efron":
        cross = (s1g.T * q2[eg]) @ e1g
        info += cross + cross.T
        info -= (e1g.T * q3[eg]) @ e1g
    info = (info + info.T) / 2.0
    return CoxSums(loglik=loglik, score=score, information=info, n=n, events=events)

"""Cox proportional hazards models for pooled IPD: stratified by centre, Efron or Breslow ties.

The numeric core, :func:`cox_fit_arrays`, is a vectorised Newton-Raphson solver: each row gets
its (stratum, tied time) group once and rows are never sorted; risk-set sums are cumulative
sums over the groups of tied times within each stratum, and Efron's correction works on one
row per event. Per iteration it costs one compiled (numba) pass over the rows for the risk
scores and risk-set sums, and one chunked pass for the score and the information matrix
(compiled weighting, BLAS products on cache-sized blocks); the covariates are centred on the
fly, so memory beyond the input is a few vectors of length n. It reproduces R's
``survival::coxph`` (same centring-invariant log-likelihood, same step-halving and
convergence rule on the relative change in log-likelihood).

:func:`fit_cox` works on a DataFrame and a :class:`CoxSpec`: it builds the R-style design,
drops incomplete rows (counted per centre), fits, adds likelihood-ratio p-values per term and,
when asked, cluster-robust (sandwich) standard errors exactly as ``coxph(..., cluster = )``, with
the robust Wald and score tests. With ``G`` clusters the sandwich has rank at most ``G - 1``, so
those tests use a generalised inverse with df = its rank (:func:`generalised_wald`) and a
:class:`~pooled.errors.FewClustersWarning` says so when ``G <= p``. With ``missing = "mice"``
:func:`fit_cox_mice` fits each data set completed by :mod:`pooled.models.imputation` (which
knows nothing of the Cox model) and pools them. The complete-case design comes from
:func:`pooled.models.design.build_spec_design`, shared with the PH test.

Counting-process data (``CoxSpec(start=...)``, rows ``(start, stop]``: time-dependent
covariates, follow-up split into periods, delayed entry) use the same kernels: a row enters
the risk sets at its stop time and leaves them at the first event time at or before its start,
its sums added at one event group and subtracted at the other, so the cost per row is that of
the right-censored fit (R's ``coxph(Surv(start, stop, event) ~ ...)``). Every fit carries its
model-level statistics (log-likelihoods, LR / Wald / score tests, AIC) and Harrell's C of the
linear predictor within strata (:mod:`pooled.models.concordance`, :func:`cox_concordance`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numba
import numpy as np
import pandas as pd
import scipy.linalg
from scipy import stats

from pooled.errors import ConfigError, ConvergenceWarning, DataError, FewClustersWarning
from pooled.models.concordance import (
    ConcordanceComparison,
    ConcordanceResult,
    TimeWeight,
    compare_concordance,
    concordance_arrays,
)
from pooled.models.design import Design, build_design, build_spec_design
from pooled.models.imputation import impute_chained, rubin_pool
from pooled.results import tidy_frame

__all__ = [
    "CoxArraysResult",
    "CoxResult",
    "CoxSpec",
    "InteractionTestResult",
    "compare_cox_concordance",
    "cox_concordance",
    "cox_fit_arrays",
    "cox_linear_predictor_arrays",
    "cox_score_residuals",
    "effect_within_levels",
    "fit_cox",
    "fit_cox_design",
    "fit_cox_mice",
    "generalised_wald",
    "interaction_lr_test",
    "likelihood_ratio_test",
]

Ties = Literal["efron", "breslow"]
_Z975 = float(stats.norm.ppf(0.975))
_CHUNK = 1 << 13
RANK_RTOL = 1e-10  # singular values of a correlation matrix below this x the largest are zero


# --------------------------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------------------------


def _exp_hr(log_hr: float) -> float:
    """exp of a log HR or CI limit; an infinite one (a coefficient that diverged, already
    warned of by the fit) is inf without a second, overflow warning."""
    with np.errstate(over="ignore"):
        return np.exp(log_hr)


def _compact_codes(values: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Integer codes 0..k-1 preserving the sort order of ``values`` (O(n) for small ints)."""
    if values.dtype.kind in "iub" and values.size:
        v = values.astype(np.int64, copy=False)
        lo, hi = int(v.min()), int(v.max())
        if hi - lo <= 4 * n + 1024:
            shifted = v - lo
            present = np.bincount(shifted, minlength=hi - lo + 1) > 0
            lookup = np.cumsum(present) - 1
            return lookup[shifted].astype(np.intp), int(present.sum())
    uniques, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.intp).reshape(-1), int(uniques.size)


def _stratum_codes(strata: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    if strata is None:
        return np.zeros(n, dtype=np.intp), 1
    strata = np.asarray(strata)
    if strata.shape[0] != n:
        raise DataError(f"strata expected {n} values (one per row); found {strata.shape[0]}.")
    return _compact_codes(strata, n)


def _time_codes(time: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Codes 0..k-1 of the distinct times, ascending (O(n) for whole-number times)."""
    if time.size and np.all(time == np.floor(time)):
        return _compact_codes(time.astype(np.int64), n)
    return _compact_codes(time, n)


@numba.njit(cache=True, nogil=True)
def _column_sums(X: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Column sums over all rows and over the event rows, and whether all values are finite."""
    n, p = X.shape
    total = np.zeros(p)
    ev = np.zeros(p)
    finite = True
    for i in range(n):
        if event[i]:
            for j in range(p):
                x = X[i, j]
                total[j] += x
                ev[j] += x
        else:
            for j in range(p):
                total[j] += X[i, j]
    for j in range(p):
        if not np.isfinite(total[j]):
            finite = False
    return total, ev, finite


@numba.njit(cache=True, nogil=True)
def _risk_sums(
    X: np.ndarray,
    means: np.ndarray,
    beta: np.ndarray,
    entry: np.ndarray,
    exit: np.ndarray,
    counting: bool,
    event: np.ndarray,
    ne: int,
    weighted: bool,
    case_weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """One pass over the rows: risk scores and their (x-weighted) sums by entry group.

    Covariates are centred on the fly (``X[i] - means``); rows never at risk (entry ``ne``)
    are summed into a discarded extra group. Events also go to ``e0``/``e1``. With
    ``counting`` (``(start, stop]`` data) a row also leaves the risk sets at its exit group:
    its sums are subtracted there (``exit[i] == ne``: it never leaves), so cumulative sums over
    the event groups give the sums over the rows with ``start < t <= stop``. With
    ``weighted`` each row's risk score is multiplied by its case weight (R's ``weights``:
    ``r = w exp(eta)``).
    """
    n, p = X.shape
    r = np.empty(n)
    t0 = np.zeros(ne + 1)
    t1 = np.zeros((ne + 1, p))
    e0 = np.zeros(ne)
    e1 = np.zeros((ne, p))
    xc = np.empty(p)
    for i in range(n):
        eta = 0.0
        for j in range(p):
            xc[j] = X[i, j] - means[j]
            eta += xc[j] * beta[j]
        ri = np.exp(eta)
        if weighted:
            ri *= case_weights[i]
        r[i] = ri
        g = entry[i]
        t0[g] += ri
        if event[i]:
            e0[g] += ri
            for j in range(p):
                rx = ri * xc[j]
                t1[g, j] += rx
                e1[g, j] += rx
        else:
            for j in range(p):
                t1[g, j] += ri * xc[j]
        if counting:
            h = exit[i]
            if h < ne:
                t0[h] -= ri
                for j in range(p):
                    t1[h, j] -= ri * xc[j]
    return r, t0[:ne], t1[:ne], e0, e1


@numba.njit(cache=True, nogil=True)
def _weighted_block(
    X: np.ndarray,
    means: np.ndarray,
    r: np.ndarray,
    cw: np.ndarray,
    w2: np.ndarray,
    entry: np.ndarray,
    exit: np.ndarray,
    counting: bool,
    event: np.ndarray,
    start: int,
    stop: int,
    block: np.ndarray,
    xv: np.ndarray,
) -> None:  # pragma: no cover
    """Rows ``start:stop`` of ``(X - means) * sqrt(v)`` into ``block``; adds ``X'v`` to ``xv``.

    ``v = r * (cw[entry] - cw[exit] - event * w2[entry])`` (indexed with a trailing 0 for rows
    never at risk; ``cw[exit]`` only with ``counting``), the row weights of
    :meth:`_RiskSets._v`.
    """
    p = X.shape[1]
    for i in range(start, stop):
        g = entry[i]
        c = cw[g] - cw[exit[i]] if counting else cw[g]
        if event[i]:
            vi = (c - w2[g]) * r[i]
        else:
            vi = c * r[i]
        w = np.sqrt(vi) if vi > 0.0 else 0.0
        b = i - start
        for j in range(p):
            val = (X[i, j] - means[j]) * w
            block[b, j] = val
            xv[j] += w * val


class _RiskSets:
    """Tie structure of a stratified Cox problem, in the input row order.

    Rows are never sorted: each row gets the index of its (stratum, time) group, groups are
    ordered by stratum then descending time, and each row *enters* the risk sets at the first
    event group at or after its own group in its stratum (``entry``; ``n_event_groups`` when it
    is never at risk at an event). Risk-set sums are sums by entry group (one compiled pass over
    the rows, :func:`_risk_sums`) followed by cumulative sums over the few event groups. The
    covariates are centred on the fly; the centred copy ``xs`` is made only when asked for.

    Counting-process data (``start`` given, rows ``(start, stop]``): a row is at risk at the
    event times ``t`` with ``start < t <= stop``. It enters as above and *exits* at the first
    event group of its stratum with time ``<= start`` (``exit``; ``n_event_groups`` when there
    is none), so it belongs to the event groups ``entry <= k < exit``: its sums are added at
    ``entry`` and subtracted at ``exit`` before the cumulative sums.

    Case weights (``weights``, R's ``coxph(weights = )``, as in survival's ``coxfit6.c`` and
    ``agfit4.c``): each row's risk score is ``w exp(eta)`` in every risk-set sum, an event
    contributes ``w (x - xbar)`` to the score, and the tied events of a group share the
    group's mean event weight ``m`` (Efron: ``m sum_k log(S0 - k/d E0)``; Breslow:
    ``d m log S0``), which scales the group's hazard increment.
    """

    def __init__(
        self,
        X: np.ndarray,
        time: np.ndarray,
        event: np.ndarray,
        strata: np.ndarray | None,
        ties: Ties,
        start: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> None:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(-1, 1)
        n, p = X.shape
        time = np.asarray(time, dtype=np.float64)
        event_raw = np.asarray(event)
        if time.shape != (n,) or event_raw.shape != (n,):
            raise DataError(
                f"time and event expected {n} values each (rows of X); found "
                f"{time.shape[0]} and {event_raw.shape[0]}."
            )
        if start is not None:
            start = np.asarray(start, dtype=np.float64)
            if start.shape != (n,):
                raise DataError(f"start expected {n} values (rows of X); found {start.shape[0]}.")
            if not np.all(np.isfinite(start)):
                raise DataError(
                    "start times must be finite (no NaN or inf); drop the incomplete rows."
                )
            bad_rows = np.flatnonzero(~(start < time))
            if bad_rows.size:
                i = int(bad_rows[0])
                raise DataError(
                    f"Each interval (start, stop] needs start < stop; {bad_rows.size} rows do "
                    f"not (first: row {i}, start {start[i]!r}, stop {time[i]!r}). Drop "
                    "zero-length intervals or fix the times."
                )
        case_weights = None
        if weights is not None:
            case_weights = np.ascontiguousarray(weights, dtype=np.float64)
            if case_weights.shape != (n,):
                raise DataError(
                    f"weights expected {n} values (rows of X); found {case_weights.shape[0]}."
                )
            if not np.all(np.isfinite(case_weights) & (case_weights > 0)):
                bad = case_weights[~(np.isfinite(case_weights) & (case_weights > 0))][:3]
                raise DataError(
                    f"case weights must be finite and > 0 (as R's coxph requires); found "
                    f"{bad.tolist()}. Drop the rows or fix the weights."
                )
        if not np.all((event_raw == 0) | (event_raw == 1)):
            bad = np.unique(event_raw[(event_raw != 0) & (event_raw != 1)])[:5]
            raise DataError(
                f"event expected 0 (censored) or 1 (event); found values {bad.tolist()}. "
                "Recode the event indicator."
            )
        X = np.ascontiguousarray(X)
        event_b = event_raw.astype(bool)
        event_u8 = event_b.view(np.uint8)
        # one pass: column sums (for the means and the events' covariate total); a finite sum
        # means every value is finite, otherwise check properly
        col_total, col_event, x_finite = _column_sums(X, event_u8)
        if not np.all(np.isfinite(time)) or not (x_finite or np.all(np.isfinite(X))):
            raise DataError(
                "time and covariates must be finite (no NaN or inf); drop or impute the "
                "incomplete rows first (fit_cox does this)."
            )
        if ties not in ("efron", "breslow"):
            raise ConfigError(f"ties must be 'efron' or 'breslow'; got {ties!r}.")
        self.n, self.p, self.ties = n, p, ties
        self.n_events = int(event_b.sum())
        if self.n_events == 0:
            raise DataError(
                f"No events among the {n} patients analysed: a Cox model needs at least one. "
                "Check the event column's coding (1 = event) or the subgroup."
            )
        codes, n_strata = _stratum_codes(strata, n)
        if start is None:
            tcodes, n_times = _time_codes(time, n)
        else:  # stop and start times share one coding (their order across rows matters)
            both, n_times = _time_codes(np.concatenate((time, start)), 2 * n)
            tcodes, scodes = both[:n], both[n:]
        self.time, self.event, self.codes = time, event_b, codes
        self.tcodes, self.n_times, self.n_strata = tcodes, n_times, n_strata
        self.start = start
        self.counting = start is not None
        self.scodes = scodes if start is not None else None

        # group key: stratum ascending, time descending
        key = codes.astype(np.int64) * n_times + (n_times - 1 - tcodes)
        n_keys = n_strata * n_times
        key_start = None
        if start is not None:
            key_start = codes.astype(np.int64) * n_times + (n_times - 1 - scodes)
            if n_keys > 8 * n + 1024:
                both, n_keys = _compact_codes(np.concatenate((key, key_start)), 2 * n)
                key, key_start = both[:n], both[n:]
        elif n_keys > 4 * n + 1024:
            key, n_keys = _compact_codes(key, n)
        size_k = np.bincount(key, minlength=n_keys)
        events_k = np.bincount(key[event_b], minlength=n_keys)
        ev_keys = np.flatnonzero(events_k)
        ne = ev_keys.size
        self.n_event_groups = ne
        d = events_k[ev_keys]
        self.d_int = d
        self.d = d.astype(np.float64)
        stratum_k = np.arange(n_keys) // n_times if n_keys == n_strata * n_times else None
        if stratum_k is None:  # compacted keys: recover the stratum of each key
            stratum_k = np.zeros(n_keys, dtype=np.intp)
            stratum_k[key] = codes
            if key_start is not None:
                stratum_k[key_start] = codes
        ev_stratum = stratum_k[ev_keys]
        self.ev_stratum = ev_stratum
        # first event key at or after each key, then check it is in the same stratum
        next_ev = np.searchsorted(ev_keys, np.arange(n_keys), side="left")
        ok = next_ev < ne
        ok[ok] = ev_stratum[next_ev[ok]] == stratum_k[ok]
        entry_k = np.where(ok & (size_k > 0), next_ev, ne)
        entry = entry_k[key]
        self.entry = entry
        # exit: the first event group of the row's stratum at or before its start time
        if key_start is not None:
            exit_ = np.searchsorted(ev_keys, key_start, side="left")
            inside = exit_ < ne
            inside[inside] = ev_stratum[exit_[inside]] == codes[inside]
            self.exit = np.where(inside & (entry < ne), exit_, ne).astype(entry.dtype)
        else:
            self.exit = np.zeros(1, dtype=entry.dtype)  # unused (``counting`` is False)
        valid = entry < ne
        self.valid = valid
        self.ev_entry_rows = entry[event_b]
        self.ev_seg_start = np.cumsum(d) - d
        self.ev_entry = np.repeat(np.arange(ne), d)

        # stratum boundaries among event groups
        first = np.empty(ne, dtype=bool)
        first[0] = True
        first[1:] = ev_stratum[1:] != ev_stratum[:-1]
        idx = np.arange(ne)
        self.e_first = np.maximum.accumulate(np.where(first, idx, 0))
        last = np.empty(ne, dtype=bool)
        last[-1] = True
        last[:-1] = first[1:]
        self.e_last = np.minimum.accumulate(np.where(last, idx, ne)[::-1])[::-1]

        # Efron: one row per event, weight k/d for k = 0..d-1
        if ties == "efron" and np.any(d > 1):
            k = np.arange(self.n_events) - np.repeat(self.ev_seg_start, d)
            self.c = k / np.repeat(self.d, d)
            self.efron = True
        else:
            self.c = np.zeros(self.n_events)
            self.efron = False

        # centred covariates (the log-likelihood is centring-invariant; R centres too)
        # (centring happens on the fly in the kernels; ``xs`` is built only when asked for)
        self.X = X
        self.means = col_total / n
        self._xs: np.ndarray | None = None
        self.event_u8 = event_u8
        self.event_f = event_b.astype(np.float64)
        self.xsum_ev = col_event - self.n_events * self.means
        # case weights: the events' weights, and each event group's mean event weight
        self.weighted = case_weights is not None
        self.case_weights = case_weights if case_weights is not None else np.ones(1)
        self.event_w = self.event_f
        self.group_weight = np.ones(1)
        if case_weights is not None:
            self.event_w = self.event_f * case_weights
            self.xsum_ev = self.event_w @ X - float(self.event_w.sum()) * self.means
            self.group_weight = (
                np.bincount(self.ev_entry_rows, weights=case_weights[event_b], minlength=ne)
                / self.d
            )

    @property
    def xs(self) -> np.ndarray:
        """The centred covariates (n x p), computed on first use."""
        if self._xs is None:
            self._xs = np.subtract(self.X, self.means)
        return self._xs

    # -- cumulative sums within strata over event groups -------------------------------------
    def _cum_forward(self, values: np.ndarray) -> np.ndarray:
        cs = np.cumsum(values, axis=0)
        prev = np.concatenate((np.zeros((1,) + values.shape[1:]), cs))[self.e_first]
        return cs - prev

    def _cum_reverse(self, values: np.ndarray) -> np.ndarray:
        rcs = np.cumsum(values[::-1], axis=0)[::-1]
        nxt = np.concatenate((rcs, np.zeros((1,) + values.shape[1:])))[self.e_last + 1]
        return rcs - nxt

    def _per_row(self, values: np.ndarray) -> np.ndarray:
        """Per-event-group values looked up at each row's entry group (0 if never at risk)."""
        ext = np.concatenate((values, np.zeros((1,) + values.shape[1:])))
        return ext[self.entry]

    def _over_risk_sets(self, reverse_cumulated: np.ndarray) -> np.ndarray:
        """Per row, the sum of per-event-group values over the groups where it is at risk.

        ``reverse_cumulated`` is :meth:`_cum_reverse` of the values: its value at the entry
        group, less its value at the exit group for counting-process rows.
        """
        ext = np.concatenate((reverse_cumulated, np.zeros((1,) + reverse_cumulated.shape[1:])))
        if self.counting:
            return ext[self.entry] - ext[self.exit]
        return ext[self.entry]

    # -- the pieces every quantity is made of -------------------------------------------------
    def parts(self, beta: np.ndarray, second: bool = True) -> dict[str, np.ndarray | float]:
        ne = self.n_event_groups
        r, t0, t1, e0, e1 = _risk_sums(
            self.X,
            self.means,
            np.asarray(beta, dtype=np.float64),
            self.entry,
            self.exit,
            self.counting,
            self.event_u8,
            ne,
            self.weighted,
            self.case_weights,
        )
        s0 = self._cum_forward(t0)
        s1 = self._cum_forward(t1)
        out: dict[str, np.ndarray | float] = {"r": r, "s0": s0, "s1": s1, "e0": e0, "e1": e1}
        if self.efron:
            seg = self.ev_seg_start
            c = self.c
            den = s0[self.ev_entry] - c * e0[self.ev_entry]
            inv = 1.0 / den
            out["w1"] = np.add.reduceat(inv, seg)
            out["w2"] = np.add.reduceat(c * inv, seg)
            out["logden"] = float(np.log(den).sum())
            if second:
                inv2 = inv * inv
                out["q1"] = np.add.reduceat(inv2, seg)
                out["q2"] = np.add.reduceat(c * inv2, seg)
                out["q3"] = np.add.reduceat(c * c * inv2, seg)
        else:
            d = self.d
            out["w1"] = d / s0
            out["w2"] = np.zeros_like(s0)
            out["logden"] = float((d * np.log(s0)).sum())
            if second:
                out["q1"] = d / (s0 * s0)
                out["q2"] = np.zeros_like(s0)
                out["q3"] = np.zeros_like(s0)
        if self.weighted:  # each group's hazard increment scaled by its mean event weight
            m = self.group_weight
            for name in ("w1", "w2", "q1", "q2", "q3"):
                if name in out:
                    out[name] = out[name] * m
            if self.efron:
                out["logden"] = float((m[self.ev_entry] * np.log(den)).sum())
            else:
                out["logden"] = float((m * self.d * np.log(s0)).sum())
        out["loglik"] = float(self.xsum_ev @ beta) - float(out["logden"])
        return out

    def _v(self, pt: dict, weight: np.ndarray | None) -> np.ndarray:
        """Row weights v with score = sum_events x - X'v and information = X' diag(v) X - ..."""
        w1, w2, r = pt["w1"], pt["w2"], pt["r"]
        if weight is not None:
            w1, w2 = w1 * weight, w2 * weight
        v = self._over_risk_sets(self._cum_reverse(w1))
        if self.efron:
            v -= self.event_f * self._per_row(w2)
        v *= r
        return v

    def score(self, pt: dict, weight: np.ndarray | None = None) -> np.ndarray:
        """Score vector; with per-event-group ``weight`` g: sum over events of g (x - xbar)."""
        v = self._v(pt, weight)
        if weight is None:
            xsum = self.xsum_ev
        else:
            xsum = (self.event_w * self._per_row(weight)) @ self.xs
        return xsum - v @ self.xs

    def information(self, pt: dict, weight: np.ndarray | None = None) -> np.ndarray:
        """Information matrix; with per-event-group ``weight``: sum over groups of g V(t)."""
        return self.score_and_information(pt, weight)[1]

    def score_and_information(
        self, pt: dict, weight: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score and information in one chunked pass over the rows (blocks stay in cache)."""
        p = self.p
        info = np.zeros((p, p))
        xv = np.zeros(p)
        if weight is None or np.all(weight >= 0):
            w1, w2 = pt["w1"], pt["w2"]
            if weight is not None:
                w1, w2 = w1 * weight, w2 * weight
            zero = np.zeros(1)
            cw = np.concatenate((self._cum_reverse(w1), zero))
            w2 = np.concatenate((w2, zero)) if self.efron else np.zeros(w2.size + 1)
            r, entry, ev = pt["r"], self.entry, self.event_u8
            buf = np.empty((min(_CHUNK, self.n), p))
            for start in range(0, self.n, _CHUNK):
                stop = min(start + _CHUNK, self.n)
                block = buf[: stop - start]
                _weighted_block(
                    self.X,
                    self.means,
                    r,
                    cw,
                    w2,
                    entry,
                    self.exit,
                    self.counting,
                    ev,
                    start,
                    stop,
                    block,
                    xv,
                )
                info += block.T @ block
        else:
            v = self._v(pt, weight)
            xs = self.xs
            for start in range(0, self.n, _CHUNK):
                stop = start + _CHUNK
                block = xs[start:stop]
                weighted = block * v[start:stop, None]
                info += block.T @ weighted
                xv += weighted.sum(axis=0)
        s1, e1 = pt["s1"], pt["e1"]
        q1, q2, q3 = pt["q1"], pt["q2"], pt["q3"]
        if weight is not None:
            q1, q2, q3 = q1 * weight, q2 * weight, q3 * weight
        info -= (s1.T * q1) @ s1
        if self.efron:
            cross = (s1.T * q2) @ e1
            info += cross + cross.T
            info -= (e1.T * q3) @ e1
        if weight is None:
            xsum = self.xsum_ev
        else:
            xsum = (self.event_w * self._per_row(weight)) @ self.xs
        return xsum - xv, (info + info.T) / 2.0

    def mean_covariate(self, pt: dict) -> np.ndarray:
        """Efron/Breslow mean of the risk-set means per event group (centred scale)."""
        s1, e1, w1, w2 = pt["s1"], pt["e1"], pt["w1"], pt["w2"]
        d = self.d * self.group_weight if self.weighted else self.d
        return (s1 * w1[:, None] - e1 * w2[:, None]) / d[:, None]

    def score_residuals(self, pt: dict) -> np.ndarray:
        """Score residuals (input row order), Efron-weighted as in R's coxscore2; with case
        weights, each row's residual times its weight (R's ``weighted = TRUE``)."""
        s1, e1 = pt["s1"], pt["e1"]
        q1, q2, q3, w2 = pt["q1"], pt["q2"], pt["q3"], pt["w2"]
        r = pt["r"]
        b1 = s1 * q1[:, None] - e1 * q2[:, None]
        b2 = s1 * q2[:, None] - e1 * q3[:, None]
        xs = self.xs
        resid = -r[:, None] * (
            xs * self._over_risk_sets(self._cum_reverse(pt["w1"]))[:, None]
            - self._over_risk_sets(self._cum_reverse(b1))
        )
        ev = self.event
        ee = self.ev_entry_rows
        mbar = self.mean_covariate(pt)
        if self.weighted:
            resid[ev] += self.case_weights[ev, None] * (xs[ev] - mbar[ee])
        else:
            resid[ev] += xs[ev] - mbar[ee]
        resid[ev] += r[ev, None] * (xs[ev] * w2[ee, None] - b2[ee])
        return resid


def _singular_columns(info: np.ndarray, tol: float = 1e-10) -> list[int]:
    """Columns whose information is (numerically) a combination of earlier columns."""
    p = info.shape[0]
    a = info.copy()
    bad: list[int] = []
    for j in range(p):
        diag = info[j, j]
        piv = a[j, j]
        if not np.isfinite(piv) or diag <= 0 or piv <= tol * diag:
            bad.append(j)
            a[j, :] = 0.0
            a[:, j] = 0.0
            continue
        col = a[j + 1 :, j] / piv
        a[j + 1 :, j + 1 :] -= np.outer(col, a[j, j + 1 :])
    return bad


_SINGULAR_ADVICE = "Remove or recode that term (or check the subgroup / strata)."


def raise_singular(
    info: np.ndarray,
    names: Sequence[str],
    *,
    matrix: str = "The information matrix",
    advice: str = _SINGULAR_ADVICE,
) -> None:
    """A ``DataError`` naming the terms the information cannot separate (none: returns)."""
    bad = _singular_columns(info)
    if not bad:
        return
    described = []
    for j in bad:
        if info[j, j] <= 0:
            described.append(f"'{names[j]}' (constant within every stratum)")
        else:
            described.append(f"'{names[j]}' (a linear combination of earlier terms)")
    raise DataError(
        f"{matrix} is singular: the data cannot separate the effect of "
        + ", ".join(described)
        + f". {advice}"
    )


def cox_covariance(
    info: np.ndarray,
    u: np.ndarray,
    beta: np.ndarray,
    names: Sequence[str],
    *,
    converged: bool,
    not_converged: str,
    matrix: str = "The information matrix",
    advice: str = _SINGULAR_ADVICE,
) -> np.ndarray:
    """The inverse information at the Newton fit (symmetrised), with R's warnings: the fit
    did not converge (``not_converged`` says so), or it did but coefficients drift to
    infinity (monotone likelihood). A singular information raises a ``DataError`` naming the
    terms."""
    try:
        covariance = scipy.linalg.inv(info, check_finite=True)
    except (np.linalg.LinAlgError, ValueError):
        raise_singular(info, names, matrix=matrix, advice=advice)
        raise
    covariance = (covariance + covariance.T) / 2.0
    if not converged:
        warnings.warn(not_converged, ConvergenceWarning, stacklevel=3)
        return covariance
    # R's check for coefficients drifting to infinity (monotone likelihood)
    drift = np.abs(covariance @ u)
    flagged = [names[j] for j in range(len(beta)) if drift[j] > 1e-5 * (1 + abs(beta[j]))]
    if flagged:
        warnings.warn(
            f"Log-likelihood converged before the coefficients of {flagged}; they may be "
            "infinite (a category with no events, or perfect separation).",
            ConvergenceWarning,
            stacklevel=3,
        )
    return covariance


@dataclass(frozen=True, slots=True)
class CoxArraysResult:
    """What :func:`cox_fit_arrays` returns: estimates on the original (uncentred) scale.

    ``loglik_init`` is the log partial likelihood at ``init`` (R's ``loglik[1]``) and
    ``score_test`` the score test there; ``loglik_null`` is at beta = 0.
    ``robust_covariance`` is the clustered sandwich when ``cluster`` was given; then
    ``robust_wald_test`` / ``robust_wald_df`` are the Wald test of all coefficients with it and
    ``robust_score_test`` / ``robust_score_df`` the robust score test at ``init`` (R's
    ``fit$rscore``), each with a generalised inverse and df = its rank
    (:func:`generalised_wald`). The robust score test is NaN when its rank equals the number of
    clusters (``G <= p``): it then equals ``G`` whatever the data.
    """

    coefficients: np.ndarray
    covariance: np.ndarray
    robust_covariance: np.ndarray | None
    information: np.ndarray
    score: np.ndarray
    loglik: float
    loglik_init: float
    loglik_null: float
    score_test: float
    wald_test: float
    iterations: int
    converged: bool
    n: int
    events: int
    ties: str
    n_clusters: int | None = None
    robust_wald_test: float = float("nan")
    robust_wald_df: int = 0
    robust_score_test: float = float("nan")
    robust_score_df: int = 0

    @property
    def std_errors(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))


def generalised_wald(
    estimate: np.ndarray,
    covariance: np.ndarray,
    *,
    rtol: float = RANK_RTOL,
    max_rank: int | None = None,
) -> tuple[float, int]:
    """Wald statistic ``b' V^+ b`` with a generalised inverse, and the rank of ``V``.

    ``V`` is first scaled to a correlation matrix (``R = D^-1/2 V D^-1/2``, ``D = diag(V)``)
    so that neither the statistic nor the rank depends on the units of the coefficients; the
    statistic is ``z' R^+ z`` with ``z = D^-1/2 b`` and ``R^+`` the Moore-Penrose inverse of
    ``R`` keeping the singular values above ``rtol`` times the largest. The rank is the number
    kept (at most ``max_rank``), the statistic's degrees of freedom; with rank 0 the statistic
    is NaN. When ``V`` has full rank this is ``b' V^-1 b``. Coefficients with zero (or
    non-finite) variance are left out.

    Parameters
    ----------
    estimate : ndarray, shape (p,)
        The coefficients tested (against 0), or a score vector.
    covariance : ndarray, shape (p, p)
        Their covariance (symmetric, positive semi-definite), e.g. a cluster-robust sandwich.
    rtol : float
        Relative singular-value tolerance of the rank (default ``RANK_RTOL`` = 1e-10).
    max_rank : int, optional
        A known bound on the rank (``G - 1`` for a cluster-robust covariance at the MLE); the
        largest singular values are kept.

    Returns
    -------
    statistic : float
    rank : int

    References
    ----------
    .. [1] Rao CR, Mitra SK. Generalized Inverse of Matrices and its Applications. Wiley; 1971.
    .. [2] Cameron AC, Miller DL. A practitioner's guide to cluster-robust inference.
       J Hum Resour 2015;50:317-72. (Section VI: with few clusters the cluster-robust variance
       has rank at most G - 1, and a Wald test of more than G - 1 restrictions is not possible.)

    Examples
    --------
    >>> v = np.array([[1.0, 1.0], [1.0, 1.0]])  # rank 1
    >>> stat, rank = generalised_wald(np.array([1.0, 1.0]), v)
    >>> round(stat, 12), rank
    (1.0, 1)
    """
    b = np.asarray(estimate, dtype=np.float64).ravel()
    v = np.asarray(covariance, dtype=np.float64)
    if v.shape != (b.size, b.size):
        raise DataError(
            f"generalised_wald: covariance expected shape ({b.size}, {b.size}) for {b.size} "
            f"estimates; found {v.shape}."
        )
    d = np.diag(v).copy()
    use = np.isfinite(d) & (d > 0) & np.isfinite(b)
    if not use.any():
        return float("nan"), 0
    b, v, d = b[use], v[np.ix_(use, use)], np.sqrt(d[use])
    corr = v / np.outer(d, d)
    corr = (corr + corr.T) / 2.0
    if not np.all(np.isfinite(corr)):
        return float("nan"), 0
    vecs, sv, _ = np.linalg.svd(corr, hermitian=True)  # singular values in descending order
    keep = sv > rtol * sv[0]
    if max_rank is not None:
        keep[max(max_rank, 0) :] = False
    rank = int(keep.sum())
    if rank == 0:
        return float("nan"), 0
    proj = vecs[:, keep].T @ (b / d)
    return float(np.sum(proj * proj / sv[keep])), rank


def _solve(info: np.ndarray, u: np.ndarray) -> np.ndarray:
    try:
        factor = scipy.linalg.cho_factor(info, lower=True, check_finite=False)
        return scipy.linalg.cho_solve(factor, u, check_finite=False)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(info, u, rcond=None)[0]


def cox_fit_arrays(
    X: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    strata: np.ndarray | None = None,
    *,
    ties: Ties = "efron",
    init: np.ndarray | None = None,
    tol: float = 1e-10,
    max_iter: int = 30,
    cluster: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    start: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> CoxArraysResult:
    """Fit a (stratified) Cox model by Newton-Raphson on arrays.

    Parameters
    ----------
    X : ndarray, shape (n, p)
        Covariates (no intercept). Not modified.
    time, event : ndarray, shape (n,)
        Follow-up time and event indicator (0/1); with ``start``, the end of each row's
        interval and whether it ends in an event.
    strata : ndarray, shape (n,), optional
        Stratum labels; each stratum has its own baseline hazard.
    ties : {"efron", "breslow"}
        Handling of tied event times.
    init : ndarray, optional
        Starting coefficients (default zero).
    tol : float
        Convergence when ``|1 - loglik_old / loglik_new| <= tol`` (R's rule; R's default is
        1e-9).
    max_iter : int
        Maximum Newton iterations.
    cluster : ndarray, optional
        Cluster labels: adds the clustered sandwich covariance (R's ``cluster =``) and the
        robust Wald and score tests (generalised inverse, df = rank; see
        :func:`generalised_wald`).
    names : sequence of str, optional
        Column names used in error messages.
    start : ndarray, shape (n,), optional
        Counting-process data (R's ``Surv(start, stop, event)``): each row is the interval
        ``(start, time]``, at risk at the event times ``t`` with ``start < t <= time``
        (time-dependent covariates, time-split or delayed-entry data). Without it each row is
        at risk from time 0 (``start = -inf``).
    weights : ndarray, shape (n,), optional
        Case weights (> 0), as R's ``coxph(weights = )``: weighted risk sets, and tied events
        sharing their mean weight under Efron's approximation (survival's ``coxfit6.c`` /
        ``agfit4.c``). With ``cluster`` the sandwich sums the weighted score residuals
        (R's ``residuals(type = "dfbeta", weighted = TRUE)``), e.g. the Fine-Gray model on
        :func:`pooled.models.competing.finegray_expand` data. ``events`` counts event rows,
        not weights.

    Returns
    -------
    CoxArraysResult

    Warns
    -----
    FewClustersWarning
        With ``G`` clusters the robust covariance has rank at most ``G - 1``; when that is
        below the number of coefficients the robust tests lose degrees of freedom (and the
        robust score test is NaN when ``G <= p``). The fit and its per-coefficient robust SEs
        are still returned.

    References
    ----------
    .. [1] Cox DR. Regression models and life-tables. J R Stat Soc B 1972;34:187-220.
    .. [2] Efron B. The efficiency of Cox's likelihood function for censored data.
       J Am Stat Assoc 1977;72:557-65.
    .. [3] Therneau TM, Grambsch PM. Modeling Survival Data: Extending the Cox Model.
       Springer; 2000. (The algorithms of R's survival package.)
    .. [4] Lin DY, Wei LJ. The robust inference for the Cox proportional hazards model.
       J Am Stat Assoc 1989;84:1074-8.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(size=(500, 1))
    >>> t = np.ceil(rng.exponential(np.exp(-0.5 * x[:, 0])) * 12)
    >>> fit = cox_fit_arrays(x, t, np.ones(500), ties="efron")
    >>> bool(abs(fit.coefficients[0] - 0.5) < 0.2)
    True
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    p = X.shape[1]
    labels = list(names) if names is not None else [f"x{j}" for j in range(p)]
    rs = _RiskSets(X, time, event, strata, ties, start=start, weights=weights)
    # centred scale: beta is unchanged, only the linear predictor shifts by means @ beta
    beta = np.zeros(p) if init is None else np.asarray(init, dtype=np.float64).copy()
    if beta.shape != (p,):
        raise ConfigError(f"init expected {p} values; got {beta.shape}.")
    pt = rs.parts(beta)
    loglik = float(pt["loglik"])
    loglik_init = loglik
    u, info = rs.score_and_information(pt)
    raise_singular(info, labels)
    step = _solve(info, u)
    score_test = float(u @ step)
    if init is None or not np.any(beta):
        loglik_null = loglik_init
    else:
        loglik_null = float(rs.parts(np.zeros(p), second=False)["loglik"])

    newbeta = beta + step
    halving = False
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):
        npt = rs.parts(newbeta)
        newlk = float(npt["loglik"])
        finite = np.isfinite(newlk)
        if finite and abs(1.0 - loglik / newlk) <= tol and not halving:
            beta, loglik, pt = newbeta, newlk, npt
            converged = True
            break
        if iterations == max_iter:
            if finite and newlk >= loglik:
                beta, loglik, pt = newbeta, newlk, npt
            break
        if not finite or newlk < loglik:
            halving = True
            newbeta = (newbeta + beta) / 2.0
        else:
            halving = False
            beta, loglik, pt = newbeta, newlk, npt
            u, info = rs.score_and_information(pt)
            newbeta = beta + _solve(info, u)
    u, info = rs.score_and_information(pt)
    covariance = cox_covariance(
        info,
        u,
        beta,
        labels,
        converged=converged,
        not_converged=(
            f"Cox fit did not converge in {max_iter} iterations (relative change in "
            f"log-likelihood above tol={tol}). Increase max_iter, or look for a covariate "
            "that separates events from non-events."
        ),
    )
    wald = float(beta @ info @ beta)
    robust = None
    n_clusters: int | None = None
    robust_wald, wald_rank, robust_score, score_rank = float("nan"), 0, float("nan"), 0
    if cluster is not None:
        cluster = np.asarray(cluster)
        if cluster.shape[0] != rs.n:
            raise DataError(f"cluster expected {rs.n} values; found {cluster.shape[0]}.")
        _, codes = np.unique(cluster, return_inverse=True)
        codes = codes.reshape(-1)
        n_clusters = int(codes.max()) + 1
        summed = np.zeros((n_clusters, p))
        np.add.at(summed, codes, rs.score_residuals(pt) @ covariance)
        robust = summed.T @ summed
        # R's fit$rscore: score residuals at init (beta = 0 by default) summed by cluster
        beta_init = np.zeros(p) if init is None else np.asarray(init, dtype=np.float64)
        scores = np.zeros((n_clusters, p))
        np.add.at(scores, codes, rs.score_residuals(rs.parts(beta_init)))
        # the clusters' dfbeta sum to about 0 at the MLE: rank at most G - 1
        robust_wald, wald_rank = generalised_wald(beta, robust, max_rank=n_clusters - 1)
        robust_score, score_rank = generalised_wald(scores.sum(axis=0), scores.T @ scores)
        if score_rank >= n_clusters:
            robust_score = float("nan")  # identically G: u is the sum of G independent scores
        if n_clusters <= p or wald_rank < p:
            warnings.warn(
                f"The cluster-robust covariance rests on {n_clusters} clusters for {p} "
                f"coefficients: it has rank {wald_rank} < {p} (at most clusters - 1 = "
                f"{n_clusters - 1}). The robust Wald test uses a generalised inverse on "
                f"{wald_rank} df"
                + (
                    ", and the robust score test is not defined (it equals the number of "
                    "clusters whatever the data)"
                    if np.isnan(robust_score)
                    else ""
                )
                + "; the per-coefficient robust SEs rest on very few clusters. Use more "
                "clusters than coefficients, fewer coefficients, or the model-based covariance "
                "(no cluster).",
                FewClustersWarning,
                stacklevel=2,
            )
    return CoxArraysResult(
        coefficients=beta,
        covariance=covariance,
        robust_covariance=robust,
        information=info,
        score=u,
        loglik=loglik,
        loglik_init=loglik_init,
        loglik_null=loglik_null,
        score_test=score_test,
        wald_test=wald,
        iterations=iterations,
        converged=converged,
        n=rs.n,
        events=rs.n_events,
        ties=ties,
        n_clusters=n_clusters,
        robust_wald_test=robust_wald,
        robust_wald_df=wald_rank,
        robust_score_test=robust_score,
        robust_score_df=score_rank,
    )


def cox_score_residuals(
    X: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    strata: np.ndarray | None,
    beta: np.ndarray,
    *,
    ties: Ties = "efron",
    start: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Score residuals (R's ``residuals(fit, type = "score")``), rows in the input order.

    With ``start`` the rows are counting-process intervals ``(start, time]``; with case
    ``weights`` each residual is multiplied by its row's weight (R's ``weighted = TRUE``).

    References
    ----------
    .. [1] Therneau TM, Grambsch PM, Fleming TR. Martingale-based residuals for survival
       models. Biometrika 1990;77:147-60.

    Examples
    --------
    >>> x = np.array([[0.0], [1.0], [0.0], [1.0]])
    >>> cox_score_residuals(x, np.array([1, 2, 3, 4]), np.array([1, 1, 0, 1]), None,
    ...                     np.array([0.0])).shape
    (4, 1)
    """
    rs = _RiskSets(X, time, event, strata, ties, start=start, weights=weights)
    pt = rs.parts(np.asarray(beta, dtype=np.float64))
    return rs.score_residuals(pt)


# --------------------------------------------------------------------------------------------
# The DataFrame interface
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CoxSpec:
    """Options of a Cox model fitted by :func:`fit_cox`.

    Parameters
    ----------
    duration, event : str
        Follow-up time column and event indicator column (1 = event, 0 = censored).
    start : str or None
        Counting-process data: the column of interval starts, each row being
        ``(start, duration]`` with ``event`` at its end (R's ``Surv(start, stop, event)``;
        time-dependent covariates, :func:`pooled.models.timesplit.time_split`). ``None``
        (default): one row per patient, at risk from time 0.
    covariates : tuple of str
        Main effects in formula order (``("ctc_positive", "subtype", "age")``).
    categorical : tuple of (column, reference level)
        Categorical covariates with their reference level.
    interactions : tuple of (str, str)
        Pairwise interactions, as R's ``a * b`` adds ``a:b``.
    strata : tuple of str
        Stratification columns (separate baseline hazard per combination); ``()`` for none.
    ties : {"efron", "breslow"}
    cluster : str or None
        Column of clusters for robust (sandwich) standard errors, as ``coxph(cluster = )``.
    weights : str or None
        Column of case weights (> 0), as ``coxph(weights = )`` (the Fine-Gray model on
        :func:`pooled.models.competing.finegray_expand` rows). Harrell's C is not computed for
        a weighted fit (NaN), and it cannot be combined with ``missing = "mice"``.
    missing : {"complete_case", "mice"}
        Complete-case analysis, or multiple imputation by chained equations.
    n_imputations, seed : int
        Multiple imputation settings.
    tol, max_iter
        Convergence of Newton-Raphson (relative change in log-likelihood).
    term_lr_tests : bool
        Add the likelihood-ratio p-value of each coefficient (one refit per coefficient).
    concordance : bool
        Compute Harrell's C of the fit within strata (as ``coxph`` stores it); about the cost
        of the Newton fit itself on large data, so fits that do not report it (simulation
        grids, bootstraps, timing against ``coxph.fit``) may turn it off.
    analysis, endpoint : str
        Labels carried into the tidy table.
    """

    duration: str
    event: str
    covariates: tuple[str, ...]
    start: str | None = None
    categorical: tuple[tuple[str, str], ...] = ()
    interactions: tuple[tuple[str, str], ...] = ()
    strata: tuple[str, ...] = ("centre",)
    ties: Ties = "efron"
    cluster: str | None = None
    weights: str | None = None
    missing: Literal["complete_case", "mice"] = "complete_case"
    n_imputations: int = 20
    seed: int = 2026
    tol: float = 1e-10
    max_iter: int = 30
    term_lr_tests: bool = True
    concordance: bool = True
    analysis: str = ""
    endpoint: str = ""

    def __post_init__(self) -> None:
        if self.ties not in ("efron", "breslow"):
            raise ConfigError(f"CoxSpec.ties must be 'efron' or 'breslow'; got {self.ties!r}.")
        if self.missing not in ("complete_case", "mice"):
            raise ConfigError(
                f"CoxSpec.missing must be 'complete_case' or 'mice'; got {self.missing!r}."
            )
        if isinstance(self.covariates, str) or isinstance(self.strata, str):
            raise ConfigError(
                "CoxSpec.covariates and .strata expected tuples of column names; got a string. "
                "Write covariates=('age',) rather than covariates='age'."
            )
        if not self.covariates:
            raise ConfigError("CoxSpec.covariates expected at least one covariate; got none.")
        if self.start is not None and self.missing == "mice":
            raise ConfigError(
                "CoxSpec: multiple imputation works on one row per patient; got counting-process "
                f"rows (start={self.start!r}) with missing='mice'. Impute the patients first, "
                "then split their follow-up."
            )
        if self.weights is not None and self.missing == "mice":
            raise ConfigError(
                f"CoxSpec: case weights (weights={self.weights!r}) cannot be combined with "
                "missing='mice'; impute first, or fit the complete cases."
            )
        if self.n_imputations < 2:
            raise ConfigError(f"CoxSpec.n_imputations must be >= 2; got {self.n_imputations}.")
        if not (self.tol > 0) or self.max_iter < 1:
            raise ConfigError(
                f"CoxSpec.tol must be > 0 and max_iter >= 1; got {self.tol}, {self.max_iter}."
            )

    @property
    def required_columns(self) -> tuple[str, ...]:
        cols = [self.duration, self.event, *self.strata]
        if self.start:
            cols.insert(0, self.start)
        if self.cluster:
            cols.append(self.cluster)
        if self.weights:
            cols.append(self.weights)
        return tuple(dict.fromkeys(cols))


@dataclass(frozen=True, slots=True)
class CoxResult:
    """A fitted Cox model: estimates, tests and the bookkeeping a report needs.

    ``covariance`` is model-based; ``robust_covariance`` the clustered sandwich (when
    ``spec.cluster`` is set). ``std_errors`` and the Wald tests use the robust covariance when
    present, as R's ``summary.coxph`` does. ``dropped`` counts complete-case losses per centre.
    For multiple imputation, estimates and covariance are Rubin-pooled and ``df`` holds the
    Barnard-Rubin degrees of freedom per term.

    ``wald_test`` is on ``wald_df`` degrees of freedom: the number of coefficients, or with a
    robust covariance its rank (at most ``n_clusters - 1``; a generalised inverse,
    :func:`generalised_wald`). R's ``summary.coxph`` prints the robust Wald test on ``p`` df
    whatever the rank, and with ``G <= p`` clusters its number depends on the column order;
    here the statistic and its df agree with R when ``G > p``. ``robust_score_test`` is R's
    robust score test (``fit$rscore``) on ``robust_score_df`` df, NaN without a cluster and
    when ``G <= p`` (R then prints ``G`` whatever the data).
    """

    spec: CoxSpec
    term_names: tuple[str, ...]
    term_sources: tuple[str, ...]
    coefficients: np.ndarray
    covariance: np.ndarray
    robust_covariance: np.ndarray | None
    loglik: float
    loglik_null: float
    score_test: float
    wald_test: float
    iterations: int
    converged: bool
    n: int
    events: int
    dropped: pd.DataFrame
    levels: tuple[tuple[str, tuple[str, ...]], ...]
    lr_p_values: np.ndarray | None = None
    n_imputations: int = 0
    df: np.ndarray | None = None
    per_imputation: pd.DataFrame | None = field(default=None)
    wald_df: int | None = None
    robust_score_test: float = float("nan")
    robust_score_df: int = 0
    n_clusters: int | None = None
    concordance: float = float("nan")
    concordance_se: float = float("nan")

    @property
    def vcov(self) -> np.ndarray:
        """The covariance used for inference (robust when a cluster was given)."""
        return self.robust_covariance if self.robust_covariance is not None else self.covariance

    @property
    def std_errors(self) -> np.ndarray:
        return np.sqrt(np.diag(self.vcov))

    @property
    def naive_std_errors(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))

    @property
    def n_parameters(self) -> int:
        return len(self.term_names)

    @property
    def lr_test(self) -> float:
        return 2.0 * (self.loglik - self.loglik_null)

    @property
    def lr_p_value(self) -> float:
        return float(stats.chi2.sf(self.lr_test, self.n_parameters))

    @property
    def wald_p_value(self) -> float:
        """p-value of ``wald_test`` on ``wald_df`` df (NaN when the df are 0)."""
        df = self.n_parameters if self.wald_df is None else self.wald_df
        return float(stats.chi2.sf(self.wald_test, df)) if df > 0 else float("nan")

    @property
    def robust_score_p_value(self) -> float:
        """p-value of ``robust_score_test`` on ``robust_score_df`` df (NaN when undefined)."""
        if self.robust_score_df < 1 or not np.isfinite(self.robust_score_test):
            return float("nan")
        return float(stats.chi2.sf(self.robust_score_test, self.robust_score_df))

    @property
    def score_p_value(self) -> float:
        return float(stats.chi2.sf(self.score_test, self.n_parameters))

    @property
    def aic(self) -> float:
        return -2.0 * self.loglik + 2.0 * self.n_parameters

    @property
    def model(self) -> str:
        name = "cox_stratified" if self.spec.strata else "cox"
        return name + ("_mi" if self.n_imputations else "")

    def coefficient(self, term: str) -> float:
        return float(self.coefficients[self._index(term)])

    def _index(self, term: str) -> int:
        try:
            return self.term_names.index(term)
        except ValueError:
            raise ConfigError(
                f"Term '{term}' expected among the model terms {list(self.term_names)}."
            ) from None

    @property
    def wald_df_used(self) -> int:
        """Degrees of freedom of ``wald_test`` (the rank of a robust covariance)."""
        return self.n_parameters if self.wald_df is None else int(self.wald_df)

    def model_statistics(self) -> dict[str, float]:
        """The model-level statistics, keyed by their results.csv column
        (:data:`pooled.results.MODEL_STATISTIC_COLUMNS`)."""
        p = self.n_parameters
        return {
            "model_loglik_null": self.loglik_null,
            "model_loglik": self.loglik,
            "model_lr_chisq": self.lr_test,
            "model_lr_df": p,
            "model_lr_p_value": self.lr_p_value,
            "model_wald_chisq": self.wald_test,
            "model_wald_df": self.wald_df_used,
            "model_wald_p_value": self.wald_p_value,
            "model_score_chisq": self.score_test,
            "model_score_df": p,
            "model_score_p_value": self.score_p_value,
            "model_aic": self.aic,
            "model_concordance": self.concordance,
            "model_concordance_se": self.concordance_se,
        }

    def fit_statistics(self) -> pd.DataFrame:
        """The model-level statistics as tidy rows (one per statistic; for a report table).

        ``term`` is ``loglik_null``, ``loglik`` (``estimate`` = the log partial likelihood),
        ``lr_test``, ``wald_test``, ``score_test`` (``estimate`` = chi-square, with ``df`` and
        ``p_value``; the Wald test uses the robust covariance with a cluster), then with a
        cluster ``robust_score_test``, then ``aic`` and ``concordance_harrell`` (Harrell's C of
        the linear predictor within strata, with ``std_error`` and a 95% CI). Extra columns
        ``df`` and ``row_type = "fit_statistic"``. Log-likelihood statistics are NaN after
        multiple imputation.
        """
        base = {
            "analysis": self.spec.analysis,
            "endpoint": self.spec.endpoint,
            "model": self.model,
            "n": self.n,
            "events": self.events,
            "row_type": "fit_statistic",
        }
        p = self.n_parameters
        rows = [
            {**base, "term": "loglik_null", "estimate": self.loglik_null},
            {**base, "term": "loglik", "estimate": self.loglik},
            {**base, "term": "lr_test", "estimate": self.lr_test, "df": p,
             "p_value": self.lr_p_value},
            {**base, "term": "wald_test", "estimate": self.wald_test, "df": self.wald_df_used,
             "p_value": self.wald_p_value},
            {**base, "term": "score_test", "estimate": self.score_test, "df": p,
             "p_value": self.score_p_value},
        ]  # fmt: skip
        if self.robust_covariance is not None:
            rows.append(
                {
                    **base,
                    "term": "robust_score_test",
                    "estimate": self.robust_score_test,
                    "df": self.robust_score_df,
                    "p_value": self.robust_score_p_value,
                }
            )
        c, se = self.concordance, self.concordance_se
        rows += [
            {**base, "term": "aic", "estimate": self.aic, "df": p},
            {
                **base,
                "term": "concordance_harrell",
                "estimate": c,
                "std_error": se,
                "ci_lower": c - _Z975 * se,
                "ci_upper": c + _Z975 * se,
            },
        ]
        return tidy_frame(rows)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per coefficient; extra columns ``z``, ``lr_p_value`` (the term's
        likelihood-ratio test), ``naive_std_error``, then the model-level statistics, the same
        on every row of the model (:data:`pooled.results.MODEL_STATISTIC_COLUMNS`:
        ``model_loglik_null, model_loglik``, the likelihood-ratio, Wald and score tests as
        ``model_<test>_chisq, _df, _p_value``, ``model_aic``, ``model_concordance`` and
        ``model_concordance_se``); :meth:`fit_statistics` gives them as rows."""
        se = self.std_errors
        est = self.coefficients
        z = est / se
        if self.df is not None:
            crit = stats.t.ppf(0.975, self.df)
            p = 2.0 * stats.t.sf(np.abs(z), self.df)
        else:
            crit = np.full(len(est), _Z975)
            p = 2.0 * stats.norm.sf(np.abs(z))
        lr_p = self.lr_p_values if self.lr_p_values is not None else np.full(len(est), np.nan)
        model_level = self.model_statistics()
        rows = []
        for j, term in enumerate(self.term_names):
            rows.append(
                {
                    "analysis": self.spec.analysis,
                    "endpoint": self.spec.endpoint,
                    "model": self.model,
                    "term": term,
                    "estimate": est[j],
                    "std_error": se[j],
                    "hr": _exp_hr(est[j]),
                    "ci_lower": _exp_hr(est[j] - crit[j] * se[j]),
                    "ci_upper": _exp_hr(est[j] + crit[j] * se[j]),
                    "p_value": p[j],
                    "n": self.n,
                    "events": self.events,
                    "z": z[j],
                    "lr_p_value": lr_p[j],
                    "naive_std_error": self.naive_std_errors[j],
                    **model_level,
                }
            )
        return tidy_frame(rows)


def outcome_values(kept: pd.DataFrame, duration: str, event: str) -> tuple[np.ndarray, np.ndarray]:
    """Follow-up times and 0/1 event indicators of the analysed rows as float arrays.

    Raises
    ------
    DataError
        A time that is not a non-negative finite number, or an event that is not 0 or 1
        (the message shows the first offending values).
    """
    time = pd.to_numeric(kept[duration], errors="coerce").to_numpy(dtype=np.float64)
    if np.any(~np.isfinite(time)) or np.any(time < 0):
        raise DataError(
            f"'{duration}' expected non-negative numbers; found "
            f"{kept[duration][~(np.isfinite(time) & (time >= 0))].head(3).tolist()}."
        )
    event_col = kept[event]
    status = pd.to_numeric(event_col, errors="coerce").to_numpy(dtype=np.float64)
    if not np.all((status == 0) | (status == 1)):
        raise DataError(
            f"'{event}' expected 0 (censored) or 1 (event); found values "
            f"{sorted(pd.unique(event_col[(status != 0) & (status != 1)]).tolist())[:5]}. "
            "Recode the event indicator."
        )
    return time, status


def _outcome_arrays(
    data: pd.DataFrame, spec: CoxSpec, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    kept = data.iloc[rows]
    time, event = outcome_values(kept, spec.duration, spec.event)
    strata = None
    if spec.strata:
        strata = kept.groupby(list(spec.strata), sort=True).ngroup().to_numpy()
    cluster = kept[spec.cluster].to_numpy() if spec.cluster else None
    return time, event, strata, cluster


def _start_array(data: pd.DataFrame, spec: CoxSpec, rows: np.ndarray) -> np.ndarray | None:
    """The interval starts of counting-process data (``spec.start``), else None."""
    if spec.start is None:
        return None
    values = data[spec.start].iloc[rows]
    start = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(start)):
        raise DataError(
            f"'{spec.start}' expected numbers (interval starts); found "
            f"{values[~np.isfinite(start)].head(3).tolist()}."
        )
    return start


def _weight_array(data: pd.DataFrame, spec: CoxSpec, rows: np.ndarray) -> np.ndarray | None:
    """The case weights of the rows (``spec.weights``), else None."""
    if spec.weights is None:
        return None
    values = data[spec.weights].iloc[rows]
    weights = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(weights) & (weights > 0))
    if bad.any():
        raise DataError(
            f"'{spec.weights}' expected case weights > 0; found {values[bad].head(3).tolist()}."
        )
    return weights


def _strata_labels(data: pd.DataFrame, spec: CoxSpec, rows: np.ndarray) -> np.ndarray | None:
    """Stratum label of each row (``"C01"``, or ``"C01, A"`` for several strata columns)."""
    if not spec.strata:
        return None
    kept = data.iloc[rows]
    labels = kept[spec.strata[0]].astype(str)
    for column in spec.strata[1:]:
        labels = labels + ", " + kept[column].astype(str)
    return labels.to_numpy(dtype=object)


def _linear_predictor(matrix: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """R's ``linear.predictors``: ``X b`` less the means' contribution, 0/1 columns uncentred."""
    binary = np.all(np.isin(matrix, (-1.0, 0.0, 1.0)), axis=0)
    means = np.where(binary, 0.0, matrix.mean(axis=0))
    return matrix @ beta - float(np.sum(beta * means))


def cox_linear_predictor_arrays(
    result: CoxResult, data: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """The outcome, stratum labels, interval starts and linear predictor of a fit's rows.

    The rows are rebuilt from ``result.spec`` (complete cases of ``data``); the linear
    predictor is centred as R's ``fit$linear.predictors`` (so its ties are R's).

    Returns
    -------
    time, event, strata, start, linear_predictor : ndarray
        ``strata`` (labels) is None without strata, ``start`` None for right-censored data.

    Raises
    ------
    DataError
        ``data`` does not give the patients and terms the model was fitted to.

    Examples
    --------
    >>> df = pd.DataFrame({"t": [5, 8, 3, 9], "e": [1, 0, 1, 1], "x": [1.0, 0.0, 1.0, 2.0]})
    >>> res = fit_cox(df, CoxSpec(duration="t", event="e", covariates=("x",), strata=()))
    >>> cox_linear_predictor_arrays(res, df)[4].shape
    (4,)
    """
    time, event, strata, start, lp, _ = _fitted_rows(result, data)
    return time, event, strata, start, lp


def _fitted_rows(
    result: CoxResult, data: pd.DataFrame
) -> tuple[
    np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray | None
]:
    """:func:`cox_linear_predictor_arrays` and the cluster labels of the rows."""
    spec = result.spec
    design = build_spec_design(data, spec)
    if design.n != result.n or design.term_names != result.term_names:
        raise DataError(
            f"The data give {design.n} rows and terms {list(design.term_names)}; the fit had "
            f"{result.n} and {list(result.term_names)}. Pass the data the model was fitted to."
        )
    time, event, _, cluster = _outcome_arrays(data, spec, design.rows)
    start = _start_array(data, spec, design.rows)
    strata = _strata_labels(data, spec, design.rows)
    lp = _linear_predictor(design.matrix, np.asarray(result.coefficients, dtype=np.float64))
    return time, event, strata, start, lp, cluster


def cox_concordance(
    result: CoxResult, data: pd.DataFrame, *, timewt: TimeWeight = "n"
) -> ConcordanceResult:
    """Concordance of a fitted Cox model on the data it was fitted to (R's
    ``concordance(fit, timewt = )``).

    The risk score is the model's linear predictor; with ``strata`` in the spec only pairs
    within a stratum are compared (and Uno's G is estimated within each stratum);
    counting-process fits (``spec.start``) compare each event with the rows at risk at its
    time (Harrell's C only). With ``spec.cluster`` the influences are summed by cluster, as R
    does for a fit with ``cluster``.

    Parameters
    ----------
    result : CoxResult
        A complete-case fit from :func:`fit_cox`.
    data : DataFrame
        The data it was fitted to (the same rows are rebuilt from ``result.spec``).
    timewt : {"n", "n/G2"}
        Harrell's (default) or Uno's C.

    Returns
    -------
    ConcordanceResult

    Raises
    ------
    ConfigError
        The result comes from multiple imputation.
    DataError
        ``data`` does not give the patients the model was fitted to.

    References
    ----------
    .. [1] Harrell FE, Lee KL, Mark DB. Multivariable prognostic models. Stat Med
       1996;15:361-87.
    .. [2] Uno H, Cai T, Pencina MJ, D'Agostino RB, Wei LJ. On the C-statistics for
       evaluating overall adequacy of risk prediction procedures with censored survival data.
       Stat Med 2011;30:1105-17.

    Examples
    --------
    >>> # cox_concordance(fit_cox(cohort, spec), cohort, timewt="n/G2").concordance
    """
    if result.n_imputations:
        raise ConfigError(
            "cox_concordance expected a complete-case fit; got a multiple-imputation result. "
            "Refit with missing='complete_case'."
        )
    time, event, strata, start, lp, cluster = _fitted_rows(result, data)
    return concordance_arrays(time, event, lp, strata, start=start, timewt=timewt, cluster=cluster)


def compare_cox_concordance(
    first: CoxResult,
    second: CoxResult,
    data: pd.DataFrame,
    *,
    timewt: TimeWeight = "n",
    labels: Sequence[str] = ("first", "second"),
) -> ConcordanceComparison:
    """Compare the concordance of two Cox models fitted to the same patients (R's
    ``concordance(fit1, fit2, timewt = )``): the 2 x 2 covariance of the two C's and the test
    of their difference (``second - first``), e.g. a clinical model against the clinical model
    plus a marker.

    Raises
    ------
    DataError
        The two fits analysed different patients (rows, outcome or strata).

    References
    ----------
    .. [1] Therneau TM, Atkinson EJ. Concordance. survival package vignette, 2023.

    Examples
    --------
    >>> # compare_cox_concordance(fit_clinical, fit_full, cohort, labels=("clinical", "full"))
    """
    return compare_concordance(
        cox_concordance(first, data, timewt=timewt),
        cox_concordance(second, data, timewt=timewt),
        labels=labels,
    )


def fit_cox_design(
    design: Design, data: pd.DataFrame, spec: CoxSpec
) -> tuple[CoxArraysResult, np.ndarray | None]:
    """Fit the Cox model of ``spec`` on a design built from ``data`` (complete cases).

    ``design`` comes from :func:`pooled.models.design.build_spec_design` (or a subset of its
    columns); the outcome, strata and cluster are read from ``data`` at ``design.rows``.
    Returns the array fit and, when ``spec.term_lr_tests``, the likelihood-ratio p-value of
    each coefficient (one refit without it, same patients).

    References
    ----------
    .. [1] Therneau TM, Grambsch PM. Modeling Survival Data: Extending the Cox Model.
       Springer; 2000.

    Examples
    --------
    >>> df = pd.DataFrame({"t": [5, 8, 3, 9, 2, 7, 4, 6], "e": [1, 0, 1, 1, 1, 0, 1, 1],
    ...                    "x": [1, 0, 1, 0, 1, 0, 0, 1], "centre": list("AABBAABB")})
    >>> spec = CoxSpec(duration="t", event="e", covariates=("x",), strata=())
    >>> fit, lr_p = fit_cox_design(build_spec_design(df, spec), df, spec)
    >>> fit.n, lr_p.shape
    (8, (1,))
    """
    time, event, strata, cluster = _outcome_arrays(data, spec, design.rows)
    start = _start_array(data, spec, design.rows)
    weights = _weight_array(data, spec, design.rows)
    if not np.any(event == 1):
        raise DataError(
            f"No events ('{spec.event}' == 1) among the {design.n} analysed patients; a Cox "
            "model needs at least one. Check the endpoint coding or the subgroup."
        )
    fit = cox_fit_arrays(
        design.matrix,
        time,
        event,
        strata,
        ties=spec.ties,
        tol=spec.tol,
        max_iter=spec.max_iter,
        cluster=cluster,
        names=design.term_names,
        start=start,
        weights=weights,
    )
    lr_p = None
    if spec.term_lr_tests:
        p = design.matrix.shape[1]
        lr_p = np.full(p, np.nan)
        if p == 1:
            lr_p[0] = stats.chi2.sf(2.0 * (fit.loglik - fit.loglik_null), 1)
        else:
            for j in range(p):
                keep = [k for k in range(p) if k != j]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    sub = cox_fit_arrays(
                        design.matrix[:, keep],
                        time,
                        event,
                        strata,
                        ties=spec.ties,
                        init=fit.coefficients[keep],
                        tol=spec.tol,
                        max_iter=spec.max_iter,
                        names=[design.term_names[k] for k in keep],
                        start=start,
                        weights=weights,
                    )
                lr_p[j] = stats.chi2.sf(max(2.0 * (fit.loglik - sub.loglik), 0.0), 1)
    return fit, lr_p


def fit_cox(data: pd.DataFrame, spec: CoxSpec) -> CoxResult:
    """Fit a Cox proportional hazards model to patient data.

    Parameters
    ----------
    data : DataFrame
        One row per patient with the columns named in ``spec``.
    spec : CoxSpec
        Model options (covariates, strata, ties, robust cluster, missing-data handling).

    Returns
    -------
    CoxResult
        Coefficients, covariance (and robust covariance), log-likelihoods, global LR / Wald /
        score tests (and the robust score test with a cluster), per-term LR p-values,
        Harrell's C of the linear predictor within strata with its SE (R's
        ``fit$concordance``; summed by cluster with ``spec.cluster``), dropped-patient counts
        per centre.

    Raises
    ------
    ConfigError
        A column named in the spec is missing from the data.
    DataError
        No events, a constant covariate, or a singular information matrix (the term is named).

    Warns
    -----
    FewClustersWarning
        ``spec.cluster`` has no more clusters than the model has coefficients: the robust
        Wald test is on fewer df (the rank of the robust covariance), the robust score test
        is NaN. The fit is returned.

    References
    ----------
    .. [1] Cox DR. Regression models and life-tables. J R Stat Soc B 1972;34:187-220.
    .. [2] Efron B. The efficiency of Cox's likelihood function for censored data.
       J Am Stat Assoc 1977;72:557-65.
    .. [3] Lin DY, Wei LJ. The robust inference for the Cox proportional hazards model.
       J Am Stat Assoc 1989;84:1074-8.

    Examples
    --------
    >>> df = pd.DataFrame({"t": [5, 8, 3, 9, 2, 7, 4, 6], "e": [1, 0, 1, 1, 1, 0, 1, 1],
    ...                    "x": [1, 0, 1, 0, 1, 0, 0, 1], "centre": list("AABBAABB")})
    >>> res = fit_cox(df, CoxSpec(duration="t", event="e", covariates=("x",)))
    >>> res.term_names
    ('x',)
    """
    if spec.missing == "mice":
        return fit_cox_mice(data, spec)
    design = build_spec_design(data, spec)
    fit, lr_p = fit_cox_design(design, data, spec)
    concordance = (
        _harrell_concordance(design, data, spec, fit.coefficients)
        if spec.concordance and spec.weights is None
        else None
    )
    return CoxResult(
        spec=spec,
        term_names=design.term_names,
        term_sources=design.term_sources,
        coefficients=fit.coefficients,
        covariance=fit.covariance,
        robust_covariance=fit.robust_covariance,
        loglik=fit.loglik,
        loglik_null=fit.loglik_null,
        score_test=fit.score_test,
        wald_test=fit.robust_wald_test if fit.robust_covariance is not None else fit.wald_test,
        wald_df=fit.robust_wald_df if fit.robust_covariance is not None else len(fit.coefficients),
        robust_score_test=fit.robust_score_test,
        robust_score_df=fit.robust_score_df,
        n_clusters=fit.n_clusters,
        iterations=fit.iterations,
        converged=fit.converged,
        n=fit.n,
        events=fit.events,
        dropped=design.dropped,
        levels=design.levels,
        lr_p_values=lr_p,
        concordance=concordance.concordance if concordance else float("nan"),
        concordance_se=concordance.std_error if concordance else float("nan"),
    )


def _harrell_concordance(
    design: Design, data: pd.DataFrame, spec: CoxSpec, coefficients: np.ndarray
) -> ConcordanceResult | None:
    """Harrell's C of a fit on its rows (as ``coxph`` stores it); None without comparable
    pairs."""
    time, event, strata, cluster = _outcome_arrays(data, spec, design.rows)
    start = _start_array(data, spec, design.rows)
    lp = _linear_predictor(design.matrix, np.asarray(coefficients, dtype=np.float64))
    try:
        return concordance_arrays(time, event, lp, strata, start=start, cluster=cluster)
    except DataError:
        return None


def fit_cox_mice(data: pd.DataFrame, spec: CoxSpec, *, n_cycles: int = 10) -> CoxResult:
    """Cox model with missing covariates multiply imputed (``CoxSpec(missing="mice")``).

    Patients missing the outcome, strata or cluster are dropped (and counted per centre);
    missing covariates are imputed ``spec.n_imputations`` times by chained equations that
    include the event indicator and the Nelson-Aalen cumulative hazard; the Cox fits are pooled
    with Rubin's rules. ``loglik``-based statistics are NaN (not defined after pooling); the
    Wald test uses the total covariance (robust when ``spec.cluster`` is set; a generalised
    inverse with df = its rank, :func:`generalised_wald`); ``df`` holds Barnard-Rubin degrees
    of freedom (complete-data df = events - parameters) and the tidy table uses t quantiles
    with them. The imputations are drawn by :func:`pooled.models.imputation.impute_chained`.

    References
    ----------
    .. [1] White IR, Royston P. Imputing missing covariate values for the Cox model.
       Stat Med 2009;28:1982-98.
    .. [2] Rubin DB. Multiple Imputation for Nonresponse in Surveys. Wiley; 1987.
    .. [3] Barnard J, Rubin DB. Small-sample degrees of freedom with multiple imputation.
       Biometrika 1999;86:948-55.

    Examples
    --------
    >>> # fit_cox(cohort, CoxSpec(..., missing="mice", n_imputations=20, seed=1))
    """
    if spec.missing != "mice":
        raise ConfigError("fit_cox_mice expected CoxSpec(missing='mice').")
    kept, base = mice_rows(data, spec)
    root = np.random.default_rng(spec.seed)
    fits = [
        cox_imputation_fit(kept, spec, k, child, n_cycles=n_cycles)
        for k, child in enumerate(root.spawn(spec.n_imputations))
    ]
    return pool_cox_imputations(kept, base, spec, fits)


def mice_rows(data: pd.DataFrame, spec: CoxSpec) -> tuple[pd.DataFrame, Design]:
    """The rows with outcome, strata and cluster (covariates may be missing) and the design
    that dropped the others (its ``dropped`` counts them per centre)."""
    base = build_design(
        data,
        (),
        required=spec.required_columns,
        centre="centre" if "centre" in data.columns else None,
    )
    absent = [c for c in spec.covariates if c not in data.columns]
    if absent:
        raise ConfigError(f"Covariates {absent} expected in the data; check the spec.")
    return data.iloc[base.rows].reset_index(drop=True), base


def cox_imputation_fit(
    kept: pd.DataFrame, spec: CoxSpec, index: int, rng: np.random.Generator, *, n_cycles: int = 10
) -> dict[str, Any]:
    """Imputation ``index`` (0-based) of ``kept``, drawn with ``rng``, and the Cox fit on it:
    coefficients, covariance (and robust covariance), the design's term names, sources and
    levels (what :func:`pool_cox_imputations` pools)."""
    fit_spec = replace(spec, missing="complete_case", term_lr_tests=False)
    completed = impute_chained(kept, spec, n_cycles=n_cycles, rng=rng)
    design = build_spec_design(completed, fit_spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FewClustersWarning)  # said once, when pooling
        fit, _ = fit_cox_design(design, completed, fit_spec)
    return {
        "index": index,
        "coefficients": fit.coefficients,
        "covariance": fit.covariance,
        "robust_covariance": fit.robust_covariance,
        "term_names": design.term_names,
        "term_sources": design.term_sources,
        "levels": design.levels,
    }


def pool_cox_imputations(
    kept: pd.DataFrame, base: Design, spec: CoxSpec, fits: list[dict[str, Any]]
) -> CoxResult:
    """Rubin's rules over the imputations' fits (:func:`cox_imputation_fit`, pooled in
    imputation order): the result of :func:`fit_cox_mice`."""
    fits = sorted(fits, key=lambda f: f["index"])
    rows = [
        {
            "imputation": fit["index"] + 1,
            "term": term,
            "estimate": fit["coefficients"][j],
            "std_error": float(np.sqrt(fit["covariance"][j, j])),
        }
        for fit in fits
        for j, term in enumerate(fit["term_names"])
    ]
    last = fits[-1]
    est = np.array([f["coefficients"] for f in fits])
    events = int(kept[spec.event].sum())
    df_complete = float(max(events - est.shape[1], 1))
    q, total, df = rubin_pool(est, np.array([f["covariance"] for f in fits]), df_complete)
    robust = [f["robust_covariance"] for f in fits if f["robust_covariance"] is not None]
    robust_total = None
    if robust:
        _, robust_total, df = rubin_pool(est, np.array(robust), df_complete)
    vcov = robust_total if robust_total is not None else total
    wald, wald_df = generalised_wald(q, vcov)
    n_clusters = int(kept[spec.cluster].nunique()) if spec.cluster else None
    if n_clusters is not None and n_clusters <= len(q):
        warnings.warn(
            f"The cluster-robust covariance of each imputation rests on {n_clusters} clusters "
            f"for {len(q)} coefficients (rank at most {n_clusters - 1}); the pooled robust "
            f"Wald test uses a generalised inverse on {wald_df} df. Use more clusters than "
            "coefficients, fewer coefficients, or the model-based covariance (no cluster).",
            FewClustersWarning,
            stacklevel=3,
        )
    return CoxResult(
        spec=spec,
        term_names=last["term_names"],
        term_sources=last["term_sources"],
        coefficients=q,
        covariance=total,
        robust_covariance=robust_total,
        loglik=float("nan"),
        loglik_null=float("nan"),
        score_test=float("nan"),
        wald_test=wald,
        wald_df=wald_df,
        n_clusters=n_clusters,
        iterations=0,
        converged=True,
        n=len(kept),
        events=events,
        dropped=base.dropped,
        levels=last["levels"],
        lr_p_values=None,
        n_imputations=spec.n_imputations,
        df=df,
        per_imputation=pd.DataFrame(rows),
    )


@dataclass(frozen=True, slots=True)
class InteractionTestResult:
    """Likelihood-ratio test of a model's interactions as a whole, or of the terms a model
    adds to a nested one (:func:`likelihood_ratio_test`), on the same patients."""

    chisq: float
    df: int
    p_value: float
    loglik_full: float
    loglik_reduced: float
    terms: tuple[str, ...]
    n: int
    events: int
    spec: CoxSpec
    model: str = "cox_interaction_lr_test"

    def to_frame(self) -> pd.DataFrame:
        """One tidy row; the statistic in ``chisq`` and ``df`` columns."""
        return tidy_frame(
            [
                {
                    "analysis": self.spec.analysis,
                    "endpoint": self.spec.endpoint,
                    "model": self.model,
                    "term": " + ".join(self.terms),
                    "p_value": self.p_value,
                    "n": self.n,
                    "events": self.events,
                    "chisq": self.chisq,
                    "df": self.df,
                }
            ]
        )


def likelihood_ratio_test(reduced: CoxResult, full: CoxResult) -> InteractionTestResult:
    """Likelihood-ratio test of the terms a full model adds to a nested one (R's
    ``anova(fit_reduced, fit_full)``), e.g. the marker added to a clinical model.

    ``chisq = 2 (loglik_full - loglik_reduced)`` on as many df as the coefficients the full
    model adds. Both must be complete-case fits of the same patients (same ``n``, events,
    outcome, strata and ties) whose terms nest.

    Raises
    ------
    ConfigError
        A multiple-imputation result, or terms that do not nest.
    DataError
        The two fits analysed different patients or outcomes.

    References
    ----------
    .. [1] Harrell FE. Regression Modeling Strategies. 2nd ed. Springer; 2015. Section 9.8
       (added predictive value: the likelihood-ratio chi-square).

    Examples
    --------
    >>> # likelihood_ratio_test(fit_cox(cohort, clinical), fit_cox(cohort, clinical_plus_ctc))
    """
    if reduced.n_imputations or full.n_imputations:
        raise ConfigError(
            "likelihood_ratio_test expected complete-case fits; got a multiple-imputation "
            "result (its log-likelihood is not defined)."
        )
    added = [t for t in full.term_names if t not in reduced.term_names]
    if not added or any(t not in full.term_names for t in reduced.term_names):
        raise ConfigError(
            f"likelihood_ratio_test expected the full model's terms {list(full.term_names)} to "
            f"contain the reduced model's {list(reduced.term_names)} and more."
        )
    a, b = reduced.spec, full.spec
    same = (a.duration, a.event, a.start, a.strata, a.ties, a.weights) == (
        b.duration,
        b.event,
        b.start,
        b.strata,
        b.ties,
        b.weights,
    )
    if not same or reduced.n != full.n or reduced.events != full.events:
        raise DataError(
            f"likelihood_ratio_test expected two fits of the same patients (outcome, strata, "
            f"ties); got n = {reduced.n} / {full.n}, events = {reduced.events} / "
            f"{full.events}. Fit both on the complete cases of the full model."
        )
    chisq = 2.0 * (full.loglik - reduced.loglik)
    df = len(added)
    return InteractionTestResult(
        chisq=chisq,
        df=df,
        p_value=float(stats.chi2.sf(chisq, df)),
        loglik_full=full.loglik,
        loglik_reduced=reduced.loglik,
        terms=tuple(added),
        n=full.n,
        events=full.events,
        spec=full.spec,
        model="cox_lr_test",
    )


def interaction_lr_test(data: pd.DataFrame, spec: CoxSpec) -> InteractionTestResult:
    """Likelihood-ratio test of all the spec's interactions at once.

    The model with and without ``spec.interactions`` is fitted to the same complete-case
    patients; ``chisq = 2 (loglik_full - loglik_reduced)`` on as many df as interaction
    coefficients (R's ``anova(fit_without, fit_with)``).

    References
    ----------
    .. [1] Royston P, Sauerbrei W. Multivariable Model-building. Wiley; 2008. Chapter 7
       (interactions with a binary variable).

    Examples
    --------
    >>> spec = CoxSpec(duration="os_months", event="os_event",
    ...                covariates=("ctc_positive", "subtype"),
    ...                categorical=(("subtype", "luminal_a"),),
    ...                interactions=(("ctc_positive", "subtype"),))
    >>> # interaction_lr_test(cohort, spec).p_value
    """
    if not spec.interactions:
        raise ConfigError("interaction_lr_test expected a spec with interactions; got none.")
    if spec.missing != "complete_case":
        raise ConfigError(
            "interaction_lr_test works on complete cases; got missing='mice'. Use "
            "missing='complete_case' (a pooled LR test across imputations is not implemented)."
        )
    full_spec = replace(spec, term_lr_tests=False, cluster=None)
    design = build_spec_design(data, full_spec)
    full, _ = fit_cox_design(design, data, full_spec)
    keep = [j for j, s in enumerate(design.term_sources) if ":" not in s]
    reduced_design = Design(
        matrix=np.ascontiguousarray(design.matrix[:, keep]),
        term_names=tuple(design.term_names[j] for j in keep),
        term_sources=tuple(design.term_sources[j] for j in keep),
        rows=design.rows,
        dropped=design.dropped,
        levels=design.levels,
        n_input=design.n_input,
    )
    reduced, _ = fit_cox_design(reduced_design, data, full_spec)
    chisq = 2.0 * (full.loglik - reduced.loglik)
    df = design.matrix.shape[1] - len(keep)
    return InteractionTestResult(
        chisq=chisq,
        df=df,
        p_value=float(stats.chi2.sf(chisq, df)),
        loglik_full=full.loglik,
        loglik_reduced=reduced.loglik,
        terms=tuple(design.term_names[j] for j in range(len(design.term_names)) if j not in keep),
        n=full.n,
        events=full.events,
        spec=spec,
    )


def effect_within_levels(
    result: CoxResult, marker: str = "ctc_positive", by: str = "subtype"
) -> pd.DataFrame:
    """Hazard ratio of ``marker`` within each level of ``by`` (subgroup forest plot rows).

    In the model ``marker * by + ...`` the log HR of the marker in level ``l`` is
    ``b_marker + b_marker:by_l`` (just ``b_marker`` in the reference level); its variance comes
    from the covariance matrix (robust when the fit has one).

    Returns
    -------
    DataFrame
        Tidy table, one row per level (``term`` = ``"marker | by=level"``), with extra
        columns ``level`` and ``z``.

    References
    ----------
    .. [1] Altman DG, Bland JM. Interaction revisited: the difference between two estimates.
       BMJ 2003;326:219.

    Examples
    --------
    >>> # effect_within_levels(fit_cox(cohort, spec_with_interaction))
    """
    levels = dict(result.levels)
    if by not in levels:
        raise ConfigError(
            f"'{by}' expected among the model's categorical covariates {list(levels)}."
        )
    j_marker = result._index(marker)
    v = result.vcov
    rows = []
    for level in levels[by]:
        weights = np.zeros(len(result.term_names))
        weights[j_marker] = 1.0
        if level != levels[by][0]:
            candidates = (f"{marker}:{by}{level}", f"{by}{level}:{marker}")
            found = [c for c in candidates if c in result.term_names]
            if not found:
                raise ConfigError(
                    f"The model has no '{marker}:{by}' interaction (looked for {candidates[0]}); "
                    f"add interactions=(('{marker}', '{by}'),) to the spec."
                )
            weights[result.term_names.index(found[0])] = 1.0
        est = float(weights @ result.coefficients)
        se = float(np.sqrt(weights @ v @ weights))
        z = est / se
        rows.append(
            {
                "analysis": result.spec.analysis,
                "endpoint": result.spec.endpoint,
                "model": result.model,
                "term": f"{marker} | {by}={level}",
                "estimate": est,
                "std_error": se,
                "hr": _exp_hr(est),
                "ci_lower": _exp_hr(est - _Z975 * se),
                "ci_upper": _exp_hr(est + _Z975 * se),
                "p_value": float(2.0 * stats.norm.sf(abs(z))),
                "n": result.n,
                "events": result.events,
                "level": level,
                "z": z,
            }
        )
    return tidy_frame(rows)

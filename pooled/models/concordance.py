"""Concordance of a survival model's risk score: Harrell's and Uno's C, within strata.

A pair of patients is *comparable* when one has the event while the other is still at risk
(followed longer, or censored at that time): it is *concordant* when the one with the event
has the higher risk score, *discordant* when the lower, *tied on x* when the scores are equal.
Two events at the same time are *tied on y* (and *tied on x and y* when the scores are equal
too); they are counted but not compared. ``C = (concordant + tied_x / 2) / (concordant +
discordant + tied_x)``. Harrell's C weights every comparable pair by 1 (R's ``timewt = "n"``);
Uno's C weights a pair whose event is at ``t`` by ``1 / G(t-)^2``, ``G`` the Kaplan-Meier
estimate of the censoring distribution (``"n/G2"``), which removes C's dependence on the
censoring. With strata only pairs within a stratum are compared and Uno's ``G`` is estimated
within each stratum: this is R's ``concordance()`` of a ``coxph`` fit with ``strata()``.

The variance is the infinitesimal jackknife (R's ``var``): each patient's influence on C from
their concordant, discordant and tied pairs; two C's computed on the same patients (two models)
get their covariance from the same influences (R's ``concordance(fit1, fit2)``). ``cvar`` is the
older variance based on the Cox score test of the risk score's ranks.

Counts come from one sweep per stratum from the last time to the first, with two Fenwick
(binary indexed) trees over the ranks of the risk score (one of everyone seen, one of the
events weighted by their time weight): O(n log n) in compiled code. Counting-process data
``(start, stop]`` compare each event with the rows at risk at its time (Harrell's only, as R).
The concordance of a fitted Cox model is :func:`pooled.models.cox.cox_concordance` (and two
fits compared, :func:`pooled.models.cox.compare_cox_concordance`); every ``CoxResult`` carries
its Harrell C and SE.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import pandas as pd
from scipy import stats

from pooled.errors import ConfigError, DataError
from pooled.results import tidy_frame

__all__ = [
    "ConcordanceComparison",
    "ConcordanceResult",
    "compare_concordance",
    "concordance_arrays",
]

TimeWeight = Literal["n", "n/G2"]
TIME_WEIGHTS: tuple[str, ...] = ("n", "n/G2")
COUNT_COLUMNS: tuple[str, ...] = ("concordant", "discordant", "tied_x", "tied_y", "tied_xy")
_Z975 = float(stats.norm.ppf(0.975))
_NAMES = {"n": "harrell", "n/G2": "uno"}


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _tree_add(tree: np.ndarray, size: int, k: int, w: float) -> None:  # pragma: no cover
    """Add ``w`` at rank ``k`` (0-based) of a Fenwick tree over ``size`` ranks."""
    i = k + 1
    while i <= size:
        tree[i] += w
        i += i & (-i)


@numba.njit(cache=True, nogil=True)
def _tree_below(tree: np.ndarray, k: int) -> float:  # pragma: no cover
    """Sum of the weights at ranks below ``k``."""
    total = 0.0
    i = k
    while i > 0:
        total += tree[i]
        i -= i & (-i)
    return total


@numba.njit(cache=True, nogil=True)
def _rank_score_increment(above: float, below: float, equal: float) -> float:  # pragma: no cover
    """Change in sum_i z_i^2 (z_i = weight below i - weight above i) when a unit-weight row
    joins a set with these weights above, below and equal to its score."""
    return (
        above * (1.0 + 2.0 * (below + equal))
        + below * (1.0 + 2.0 * (above + equal))
        + (above - below) * (above - below)
    )


@numba.njit(cache=True, nogil=True)
def _sweep(
    bounds: np.ndarray,
    rank: np.ndarray,
    sizes: np.ndarray,
    time: np.ndarray,
    status: np.ndarray,
    start: np.ndarray,
    start_position: np.ndarray,
    counting: bool,
    uno: bool,
    counts: np.ndarray,
    influence: np.ndarray,
) -> None:  # pragma: no cover
    """Counts per stratum and per-row pair counts, one stratum at a time.

    Rows come in the sweep's order (``rank``, ``time``, ``status`` gathered in it): by stratum,
    time descending, censored before events at a time, rank ascending; ``bounds`` are the
    strata's boundaries. For counting-process data ``start`` holds the start times sorted by
    stratum then descending, and ``start_position`` the sweep position of each. ``counts[s]``:
    concordant, discordant, tied on x, tied on y (including tied on x and y until the end),
    tied on x and y, and the Cox-variance sum. ``influence[q]`` (sweep position q): the
    time-weighted number of concordant, discordant and x-tied pairs of that row.
    """
    max_size = 1
    for s in range(sizes.size):
        if sizes[s] > max_size:
            max_size = sizes[s]
    a_tree = np.zeros(max_size + 1)
    a_eq = np.zeros(max_size)
    d_tree = np.zeros(max_size + 1)
    d_eq = np.zeros(max_size)
    n = time.size
    tw_local = np.ones(n)
    for s in range(bounds.size - 1):
        lo = bounds[s]
        hi = bounds[s + 1]
        size = sizes[s]
        for k in range(size + 1):
            a_tree[k] = 0.0
            d_tree[k] = 0.0
        for k in range(size):
            a_eq[k] = 0.0
            d_eq[k] = 0.0
        # time weights of the event times, in the sweep's (descending) order
        n_event_times = 0
        n_events = 0
        q = lo
        while q < hi:
            t = time[q]
            has_event = False
            while q < hi and time[q] == t:
                if status[q]:
                    has_event = True
                    n_events += 1
                q += 1
            if has_event:
                n_event_times += 1
        for k in range(n_event_times):
            tw_local[k] = 1.0
        if uno and n_events >= 2:
            # censoring Kaplan-Meier G(t-), events before censorings at a tied time
            g = 1.0
            k = n_event_times - 1
            q = hi - 1
            while q >= lo:
                t = time[q]
                p = q
                while p - 1 >= lo and time[p - 1] == t:
                    p -= 1
                censored = 0
                deaths = 0
                for r in range(p, q + 1):
                    if status[r]:
                        deaths += 1
                    else:
                        censored += 1
                if deaths > 0:
                    tw_local[k] = 1.0 / (g * g)
                    k -= 1
                if censored > 0:
                    later = p - lo
                    g *= later / (later + censored)
                q = p - 1
        a_total = 0.0
        d_total = 0.0
        z2 = 0.0
        event_time = 0
        i = lo
        i2 = lo
        while i < hi:
            k = rank[i]
            if not status[i]:
                below = _tree_below(d_tree, k)
                equal = d_eq[k]
                influence[i, 0] -= d_total - below - equal
                influence[i, 1] -= below
                influence[i, 2] -= equal
                below = _tree_below(a_tree, k)
                equal = a_eq[k]
                z2 += _rank_score_increment(a_total - below - equal, below, equal)
                _tree_add(a_tree, size, k, 1.0)
                a_eq[k] += 1.0
                a_total += 1.0
                i += 1
                continue
            t = time[i]
            if counting:  # rows starting at or after t are no longer at risk
                while i2 < hi and start[i2] >= t:
                    jj = start_position[i2]
                    kk = rank[jj]
                    below = _tree_below(d_tree, kk)
                    equal = d_eq[kk]
                    influence[jj, 0] += d_total - below - equal
                    influence[jj, 1] += below
                    influence[jj, 2] += equal
                    _tree_add(a_tree, size, kk, -1.0)
                    a_eq[kk] -= 1.0
                    a_total -= 1.0
                    below = _tree_below(a_tree, kk)
                    equal = a_eq[kk]
                    z2 -= _rank_score_increment(a_total - below - equal, below, equal)
                    i2 += 1
            tw = tw_local[event_time]
            event_time += 1
            j = i
            while j < hi and time[j] == t:
                j += 1
            # pass 1: each event against everyone at risk after it; ties among the events
            dwt = 0.0
            group_weight = 0.0
            current = rank[i]
            for q in range(i, j):
                kk = rank[q]
                counts[s, 3] += dwt * tw
                dwt += 1.0
                if kk != current:
                    group_weight = 0.0
                    current = kk
                counts[s, 4] += group_weight * tw
                group_weight += 1.0
                below = _tree_below(a_tree, kk)
                equal = a_eq[kk]
                above = a_total - below - equal
                counts[s, 0] += below * tw
                counts[s, 1] += above * tw
                counts[s, 2] += equal * tw
                influence[q, 0] += below * tw
                influence[q, 1] += above * tw
                influence[q, 2] += equal * tw
                _tree_add(d_tree, size, kk, tw)
                d_eq[kk] += tw
                d_total += tw
            # pass 2: the events join the risk set
            for q in range(i, j):
                kk = rank[q]
                below = _tree_below(d_tree, kk)
                equal = d_eq[kk]
                influence[q, 0] -= d_total - below - equal
                influence[q, 1] -= below
                influence[q, 2] -= equal
                below = _tree_below(a_tree, kk)
                equal = a_eq[kk]
                z2 += _rank_score_increment(a_total - below - equal, below, equal)
                _tree_add(a_tree, size, kk, 1.0)
                a_eq[kk] += 1.0
                a_total += 1.0
            counts[s, 5] += dwt * tw * z2 / a_total
            i = j
        # pairs with the events after a row joined (and before it left)
        first = i2 if counting else lo
        for q in range(first, hi):
            jj = start_position[q] if counting else q
            kk = rank[jj]
            below = _tree_below(d_tree, kk)
            equal = d_eq[kk]
            influence[jj, 0] += d_total - below - equal
            influence[jj, 1] += below
            influence[jj, 2] += equal
        counts[s, 3] -= counts[s, 4]


def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConcordanceResult:
    """Concordance of a risk score with survival, its variance and the pair counts.

    Attributes
    ----------
    concordance : float
        C (Harrell's for ``timewt = "n"``, Uno's for ``"n/G2"``).
    variance : float
        Infinitesimal-jackknife variance of C (R's ``var``); ``std_error`` is its root.
    cox_variance : float
        The older variance from the Cox score test of the ranks (R's ``cvar``).
    counts : dict
        ``concordant, discordant, tied_x, tied_y, tied_xy`` over all strata (time-weighted for
        Uno's C).
    by_stratum : DataFrame
        ``stratum, n, events, concordant, discordant, tied_x, tied_y, tied_xy, concordance``
        (the C within the stratum), one row per stratum.
    influence : ndarray, shape (n,)
        Each row's influence on C, in the input order (R's ``dfbeta``); ``variance`` is their
        sum of squares, and two results on the same rows get their covariance from them.
    n, events : int
    timewt : {"n", "n/G2"}
    outcome_digest : str
        Fingerprint of the outcome and strata (comparisons need the same rows).
    cluster : ndarray or None
        Cluster codes per row when the variance sums the influences by cluster.
    """

    concordance: float
    variance: float
    cox_variance: float
    counts: dict[str, float]
    by_stratum: pd.DataFrame
    influence: np.ndarray
    n: int
    events: int
    timewt: str
    outcome_digest: str
    cluster: np.ndarray | None = None

    @property
    def std_error(self) -> float:
        return math.sqrt(self.variance)

    @property
    def somers_d(self) -> float:
        """Somers' d = 2 C - 1."""
        return 2.0 * self.concordance - 1.0

    def to_frame(self, *, analysis: str = "", endpoint: str = "", model: str = "") -> pd.DataFrame:
        """Tidy table: the overall C (``stratum = ""``, with SE and 95% CI) then one row per
        stratum (its C, no SE). ``term`` is ``concordance_harrell`` or ``concordance_uno``;
        extra columns ``stratum, timewt, concordant, discordant, tied_x, tied_y, tied_xy,
        cox_variance``."""
        term = f"concordance_{_NAMES[self.timewt]}"
        se = self.std_error
        base = {"analysis": analysis, "endpoint": endpoint, "model": model or "concordance"}
        rows = [
            {
                **base,
                "term": term,
                "estimate": self.concordance,
                "std_error": se,
                "ci_lower": self.concordance - _Z975 * se,
                "ci_upper": self.concordance + _Z975 * se,
                "n": self.n,
                "events": self.events,
                "stratum": "",
                "timewt": self.timewt,
                **self.counts,
                "cox_variance": self.cox_variance,
            }
        ]
        for rec in self.by_stratum.to_dict("records"):
            rows.append(
                {
                    **base,
                    "term": term,
                    "estimate": rec["concordance"],
                    "n": rec["n"],
                    "events": rec["events"],
                    "stratum": str(rec["stratum"]),
                    "timewt": self.timewt,
                    **{c: rec[c] for c in COUNT_COLUMNS},
                }
            )
        return tidy_frame(rows)


@dataclass(frozen=True, slots=True)
class ConcordanceComparison:
    """Two C's on the same patients: their covariance and the test of their difference.

    ``covariance`` is the 2 x 2 infinitesimal-jackknife covariance (R's ``var`` of
    ``concordance(fit1, fit2)``); ``difference = C2 - C1`` with ``se_difference``, ``z`` and
    the two-sided normal ``p_value``.
    """

    labels: tuple[str, str]
    concordance: np.ndarray
    covariance: np.ndarray
    difference: float
    se_difference: float
    z: float
    p_value: float
    results: tuple[ConcordanceResult, ConcordanceResult]

    def to_frame(self, *, analysis: str = "", endpoint: str = "") -> pd.DataFrame:
        """Tidy table: each model's C (with SE), then the difference (second - first) with its
        SE, CI and p-value; extra columns ``timewt`` and ``z``."""
        timewt = self.results[0].timewt
        base = {"analysis": analysis, "endpoint": endpoint, "model": "concordance_comparison"}
        rows = []
        for label, c, v in zip(
            self.labels, self.concordance, np.diag(self.covariance), strict=True
        ):
            se = math.sqrt(v)
            rows.append(
                {
                    **base,
                    "term": label,
                    "estimate": c,
                    "std_error": se,
                    "ci_lower": c - _Z975 * se,
                    "ci_upper": c + _Z975 * se,
                    "n": self.results[0].n,
                    "events": self.results[0].events,
                    "timewt": timewt,
                }
            )
        rows.append(
            {
                **base,
                "term": f"{self.labels[1]} - {self.labels[0]}",
                "estimate": self.difference,
                "std_error": self.se_difference,
                "ci_lower": self.difference - _Z975 * self.se_difference,
                "ci_upper": self.difference + _Z975 * self.se_difference,
                "p_value": self.p_value,
                "n": self.results[0].n,
                "events": self.results[0].events,
                "timewt": timewt,
                "z": self.z,
            }
        )
        return tidy_frame(rows)


# --------------------------------------------------------------------------------------------
# The functions
# --------------------------------------------------------------------------------------------


def _value_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes 0..k-1 of the distinct values in ascending order (O(n) for whole numbers)."""
    if values.size and np.all(values == np.floor(values)):
        v = values.astype(np.int64)
        lo, hi = int(v.min()), int(v.max())
        if hi - lo <= 4 * values.size + 1024:
            present = np.bincount(v - lo, minlength=hi - lo + 1) > 0
            lookup = np.cumsum(present) - 1
            return lookup[v - lo], int(present.sum())
    uniques, inverse = np.unique(values, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), int(uniques.size)


def _stable_order(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Stable argsort of small non-negative integer keys (radix sort when they fit 16 bits)."""
    if n_keys <= 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


def _dense_ranks(values: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 0..m_s-1 of ``values`` within each stratum code, and m_s per stratum."""
    n = values.size
    by_value = np.argsort(values, kind="stable")
    n_strata = int(codes.max()) + 1 if n else 0
    order = by_value[_stable_order(codes[by_value], n_strata)]
    v, c = values[order], codes[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (v[1:] != v[:-1]) | (c[1:] != c[:-1])
    first_of_stratum = np.ones(n, dtype=bool)
    first_of_stratum[1:] = c[1:] != c[:-1]
    running = np.cumsum(new) - 1
    base = np.maximum.accumulate(np.where(first_of_stratum, running, 0))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = running - base
    n_strata = int(codes.max()) + 1 if n else 0
    sizes = np.zeros(n_strata, dtype=np.int64)
    np.maximum.at(sizes, codes, ranks + 1)
    return ranks, sizes


def concordance_arrays(
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    strata: np.ndarray | None = None,
    *,
    start: np.ndarray | None = None,
    timewt: TimeWeight = "n",
    cluster: np.ndarray | None = None,
) -> ConcordanceResult:
    """Concordance of a risk score with survival (R's ``concordance()`` of a Cox fit).

    Parameters
    ----------
    time, event : ndarray, shape (n,)
        Follow-up time and event indicator (0/1); with ``start``, each row's interval end.
    risk : ndarray, shape (n,)
        Risk score, higher = earlier event (a Cox model's linear predictor); equal values
        are ties (compared exactly).
    strata : ndarray, shape (n,), optional
        Only pairs within a stratum are compared; Uno's G is estimated within each stratum.
    start : ndarray, shape (n,), optional
        Counting-process rows ``(start, time]``: an event is compared with the rows at risk at
        its time (``start < t <= time``). Harrell's C only.
    timewt : {"n", "n/G2"}
        ``"n"``: Harrell's C (every comparable pair weighs 1); ``"n/G2"``: Uno's C (pairs with
        the event at ``t`` weigh ``1 / G(t-)^2``; a stratum with fewer than two events uses 1).
    cluster : ndarray, shape (n,), optional
        Cluster labels (a patient's rows, or centres): the influences are summed by cluster
        before the variance (R's ``concordance(fit, cluster = )`` and the SE ``coxph`` stores
        for a fit with ``cluster``).

    Returns
    -------
    ConcordanceResult

    Raises
    ------
    ConfigError
        An unknown ``timewt``, or Uno's C for counting-process data.
    DataError
        Arrays of different lengths, non-finite values, or an event not coded 0/1.

    References
    ----------
    .. [1] Harrell FE, Lee KL, Mark DB. Multivariable prognostic models: issues in developing
       models, evaluating assumptions and adequacy, and measuring and reducing errors. Stat Med
       1996;15:361-87.
    .. [2] Uno H, Cai T, Pencina MJ, D'Agostino RB, Wei LJ. On the C-statistics for evaluating
       overall adequacy of risk prediction procedures with censored survival data. Stat Med
       2011;30:1105-17.
    .. [3] Therneau TM, Atkinson EJ. Concordance. survival package vignette, 2023 (the
       infinitesimal-jackknife variance and the tree algorithm).

    Examples
    --------
    >>> res = concordance_arrays(np.array([1.0, 2, 3, 4]), np.array([1, 1, 0, 1]),
    ...                          np.array([4.0, 2, 3, 1]))
    >>> round(res.concordance, 4), res.counts["concordant"], res.counts["discordant"]
    (0.8, 4.0, 1.0)
    """
    if timewt not in TIME_WEIGHTS:
        raise ConfigError(f"timewt must be one of {list(TIME_WEIGHTS)}; got {timewt!r}.")
    time = np.asarray(time, dtype=np.float64)
    risk = np.asarray(risk, dtype=np.float64)
    event_raw = np.asarray(event)
    n = time.size
    if time.ndim != 1 or event_raw.shape != (n,) or risk.shape != (n,):
        raise DataError(
            f"time, event and risk expected one value per row each; found shapes {time.shape}, "
            f"{event_raw.shape}, {risk.shape}."
        )
    if not np.all((event_raw == 0) | (event_raw == 1)):
        raise DataError("event expected 0 (censored) or 1 (event); recode the event indicator.")
    if not (np.all(np.isfinite(time)) and np.all(np.isfinite(risk))):
        raise DataError("time and risk must be finite (no NaN or inf); drop incomplete rows.")
    status = event_raw.astype(np.uint8)
    if strata is None:
        codes = np.zeros(n, dtype=np.int64)
        labels: np.ndarray = np.array([""], dtype=object)
    else:
        strata = np.asarray(strata)
        if strata.shape != (n,):
            raise DataError(f"strata expected {n} values; found {strata.shape[0]}.")
        labels, inverse = np.unique(strata, return_inverse=True)
        codes = inverse.reshape(-1).astype(np.int64)
    counting = start is not None
    if counting:
        if timewt != "n":
            raise ConfigError(
                f"timewt {timewt!r} is not defined for counting-process (start, stop] data "
                "(its censoring distribution would count every split as a censoring); use "
                "timewt='n'."
            )
        start_arr = np.asarray(start, dtype=np.float64)
        if start_arr.shape != (n,) or not np.all(np.isfinite(start_arr)):
            raise DataError(f"start expected {n} finite values.")
    else:
        start_arr = np.zeros(1)
    ranks, sizes = _dense_ranks(risk, codes)
    tcodes, n_times = _value_codes(time)
    width = int(sizes.max()) if sizes.size else 1
    n_strata_ = int(sizes.size)
    if n_strata_ * n_times * 2 * width < 1 << 62:  # one int64 key: stratum, -time, status, rank
        key = ((codes * n_times + (n_times - 1 - tcodes)) * 2 + status) * width + ranks
        order = np.argsort(key, kind="stable")
    else:
        order = np.lexsort((ranks, status, -time, codes))
    if counting:
        start_order = np.lexsort((-start_arr, codes))
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        start_sorted = start_arr[start_order]
        start_position = position[start_order]
    else:
        start_sorted = np.zeros(1)
        start_position = np.zeros(1, dtype=np.int64)
    n_strata = sizes.size
    bounds = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=n_strata))))
    counts = np.zeros((n_strata, 6))
    in_order = np.zeros((n, 3))
    _sweep(
        bounds,
        ranks[order],
        sizes,
        time[order],
        status[order],
        start_sorted,
        start_position,
        counting,
        timewt == "n/G2",
        counts,
        in_order,
    )
    influence = np.empty((n, 3))
    influence[order] = in_order
    total = counts[:, :5].sum(axis=0)
    n_pairs = total[0] + total[1] + total[2]
    if n_pairs <= 0:
        raise DataError(
            "No comparable pairs: the concordance needs an event while another patient (in the "
            "same stratum) is still at risk."
        )
    somers = (total[0] - total[1]) / n_pairs
    dfbeta = ((influence[:, 0] - influence[:, 1]) - somers * influence[:, :3].sum(axis=1)) / (
        n_pairs * 2.0
    )
    cluster_codes = None
    summed = dfbeta
    if cluster is not None:
        cluster = np.asarray(cluster)
        if cluster.shape != (n,):
            raise DataError(f"cluster expected {n} values; found {cluster.shape[0]}.")
        cluster_codes = np.unique(cluster, return_inverse=True)[1].reshape(-1)
        summed = np.bincount(cluster_codes, weights=dfbeta)
    events_by = np.bincount(codes, weights=status.astype(np.float64), minlength=n_strata)
    pairs_by = counts[:, 0] + counts[:, 1] + counts[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        c_by = (counts[:, 0] + counts[:, 2] / 2.0) / pairs_by
    by_stratum = pd.DataFrame(
        {
            "stratum": labels,
            "n": np.bincount(codes, minlength=n_strata),
            "events": events_by.astype(np.int64),
            **{c: counts[:, k] for k, c in enumerate(COUNT_COLUMNS)},
            "concordance": c_by,
        }
    )
    return ConcordanceResult(
        concordance=(somers + 1.0) / 2.0,
        variance=float(np.sum(summed * summed)),
        cox_variance=float(counts[:, 5].sum() / (4.0 * n_pairs * n_pairs)),
        counts={c: float(total[k]) for k, c in enumerate(COUNT_COLUMNS)},
        by_stratum=by_stratum,
        influence=dfbeta,
        n=n,
        events=int(status.sum()),
        timewt=timewt,
        outcome_digest=_digest(time, status, codes, start_arr if counting else None),
        cluster=cluster_codes,
    )


def compare_concordance(
    first: ConcordanceResult,
    second: ConcordanceResult,
    *,
    labels: Sequence[str] = ("first", "second"),
) -> ConcordanceComparison:
    """Compare two C's computed on the same patients (R's ``concordance(fit1, fit2)``).

    Parameters
    ----------
    first, second : ConcordanceResult
        From :func:`pooled.models.cox.cox_concordance` (or :func:`concordance_arrays`) on the
        same rows, outcome
        and strata, with the same ``timewt``; e.g. a clinical model and the clinical model
        plus a marker.
    labels : pair of str
        Names of the two models in the table.

    Returns
    -------
    ConcordanceComparison
        The 2 x 2 covariance from the two sets of influences and the test of ``C2 - C1``.

    Raises
    ------
    DataError
        The two were computed on different rows, outcomes, strata or time weights.

    References
    ----------
    .. [1] Therneau TM, Atkinson EJ. Concordance. survival package vignette, 2023.
    .. [2] Pencina MJ, D'Agostino RB. Overall C as a measure of discrimination in survival
       analysis: model specific population value and confidence interval estimation. Stat Med
       2004;23:2109-23.

    Examples
    --------
    >>> t = np.arange(1.0, 9.0); e = np.array([1, 1, 0, 1, 1, 0, 1, 1])
    >>> a = concordance_arrays(t, e, -t + np.array([0, 3, 0, 0, 2, 0, 0, 1]))
    >>> b = concordance_arrays(t, e, -t)
    >>> round(compare_concordance(a, b).difference, 4)
    0.1053
    """
    if first.outcome_digest != second.outcome_digest or first.n != second.n:
        raise DataError(
            "compare_concordance expected two concordances of the same patients (same rows, "
            f"outcome and strata); got n = {first.n} and {second.n} with different outcomes. "
            "Fit both models on the same complete cases."
        )
    if first.timewt != second.timewt:
        raise DataError(
            f"compare_concordance expected the same timewt; got {first.timewt!r} and "
            f"{second.timewt!r}."
        )
    if len(labels) != 2:
        raise ConfigError(f"labels expected two names; got {list(labels)}.")
    same_cluster = (first.cluster is None and second.cluster is None) or (
        first.cluster is not None
        and second.cluster is not None
        and np.array_equal(first.cluster, second.cluster)
    )
    if not same_cluster:
        raise DataError(
            "compare_concordance expected the same clustering of both (R: 'models must have "
            "identical clustering'); compute both with the same cluster, or none."
        )
    influence = np.column_stack((first.influence, second.influence))
    if first.cluster is not None:
        influence = np.column_stack(
            [np.bincount(first.cluster, weights=column) for column in influence.T]
        )
    covariance = influence.T @ influence
    diff = second.concordance - first.concordance
    var = covariance[0, 0] + covariance[1, 1] - 2.0 * covariance[0, 1]
    se = math.sqrt(max(var, 0.0))
    z = diff / se if se > 0 else float("nan")
    return ConcordanceComparison(
        labels=(str(labels[0]), str(labels[1])),
        concordance=np.array([first.concordance, second.concordance]),
        covariance=covariance,
        difference=diff,
        se_difference=se,
        z=z,
        p_value=float(2.0 * stats.norm.sf(abs(z))) if se > 0 else float("nan"),
        results=(first, second),
    )

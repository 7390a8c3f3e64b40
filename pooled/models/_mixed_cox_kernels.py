"""Compiled risk-set passes of the mixed-effects Cox model (:mod:`pooled.models.mixed_cox`).

The rows are sorted once by stratum and by descending time, so that every tie group (same
stratum, same time) is a contiguous run and a stratum's risk sets are running sums over its
groups. Each row carries ``p`` fixed covariates (centred) and ``q`` random-effect columns
(intercept 1 and/or the marker, not centred) that multiply the random effects of its
centre; ``ridx[i, k]`` is the position of that random effect in the vector ``b`` (length
``m``), ``ract[i, k]`` its position among the random effects *active* in the row's stratum
(``act_idx[act_ptr[s]:act_ptr[s + 1]]``). With baselines stratified by centre a stratum has
only its own centre's ``q`` random effects active, so every per-group sum has ``p + q``
entries and the information of the random effects is block-diagonal; without strata every
centre is active in the one stratum (the random effects' information is then dense, as in a
frailty model).

Two passes:

* :func:`cox_pass` -- log partial likelihood, score and information of (beta, b) at given
  values (Efron or Breslow ties): per stratum, loop 1 over the groups forms the running
  risk-set sums, the log-likelihood, the per-group weights and the rank-one terms of the
  information; loop 2 over the rows computes each row's weight (the sum of the group
  weights of every risk set it belongs to), and the weighted sums of the rows' outer
  products are then dot products over the covariates' columns, with the rows in centre order
  (``cpos``, ``seg_ptr``, ``XTc``, ``ZTc``), so that a centre's rows are contiguous.
* :func:`trace_gradient` -- the gradient, with respect to (beta, b), of
  ``tr(A I_bb(beta, b))`` for a fixed matrix ``A`` (the inverse of the penalised random-effects
  information): the third-derivative term in the exact gradient of the Laplace
  log-likelihood. Same two loops, per-row derivative of the trace accumulated by rows.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "baseline_pass",
    "counting_sort",
    "cox_pass",
    "group_sums",
    "local1_derivs",
    "local1_maximise",
    "local1_setup",
    "rows_in_order",
    "spd_inverse",
    "trace_gradient",
    "transposed_in_order",
]


@numba.njit(cache=True, nogil=True)
def counting_sort(key: np.ndarray, n_keys: int) -> np.ndarray:  # pragma: no cover
    """Stable permutation sorting integer ``key`` (0 .. n_keys - 1) ascending, O(n + n_keys)."""
    n = key.shape[0]
    count = np.zeros(n_keys + 1, dtype=np.int64)
    for i in range(n):
        count[key[i] + 1] += 1
    for k in range(n_keys):
        count[k + 1] += count[k]
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        k = key[i]
        order[count[k]] = i
        count[k] += 1
    return order


# the sums over rows may be reassociated (vectorised): they are deterministic for a given
# problem, and agree with the sequential sums to rounding
@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _weighted_row_sums(
    XTc: np.ndarray,
    ZTc: np.ndarray,
    seg_ptr: np.ndarray,
    rvc: np.ndarray,
    gic: np.ndarray,
    trace: bool,
    U: np.ndarray,
    info: np.ndarray,
    tg: np.ndarray,
) -> None:  # pragma: no cover
    """Subtract ``sum_i rv_i (x_i, z_i)`` from ``U``, add ``sum_i rv_i (x_i, z_i)(x_i, z_i)'``
    (lower triangle; a row's random effects are its centre's) to ``info``, and with ``trace``
    ``sum_i gi_i (x_i, z_i)`` to ``tg``; rows in centre order (see :func:`cox_pass`)."""
    p = XTc.shape[0]
    q = ZTc.shape[0]
    for c in range(seg_ptr.shape[0] - 1):
        lo = seg_ptr[c]
        hi = seg_ptr[c + 1]
        size = hi - lo
        w = rvc[lo:hi]
        gw = gic[lo:hi] if trace else gic
        # slices indexed from 0: the loops vectorise (no negative-index wraparound)
        for j in range(p):
            xj = XTc[j, lo:hi]
            s = 0.0
            for i in range(size):
                s += xj[i] * w[i]
            U[j] -= s
            for k in range(j + 1):
                xk = XTc[k, lo:hi]
                s = 0.0
                for i in range(size):
                    s += xj[i] * xk[i] * w[i]
                info[j, k] += s
            if trace:
                s = 0.0
                for i in range(size):
                    s += xj[i] * gw[i]
                tg[j] += s
        for k in range(q):
            gk = p + c * q + k
            zk = ZTc[k, lo:hi]
            s = 0.0
            for i in range(size):
                s += zk[i] * w[i]
            U[gk] -= s
            for j in range(p):
                xj = XTc[j, lo:hi]
                s = 0.0
                for i in range(size):
                    s += zk[i] * xj[i] * w[i]
                info[gk, j] += s
            for k2 in range(k + 1):
                z2 = ZTc[k2, lo:hi]
                s = 0.0
                for i in range(size):
                    s += zk[i] * z2[i] * w[i]
                info[gk, p + c * q + k2] += s
            if trace:
                s = 0.0
                for i in range(size):
                    s += zk[i] * gw[i]
                tg[gk] += s


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _rank_one(
    ST: np.ndarray,
    ET: np.ndarray,
    cq: np.ndarray,
    tie_row: np.ndarray,
    ne: int,
    nt: int,
    wdt: int,
    blk: np.ndarray,
) -> None:  # pragma: no cover
    """The rank-one part of the information over a stratum's event groups, lower triangle:
    ``blk = sum_e q1 S S' - sum_t (q2 (S E' + E S') - q3 E E')`` (S, E: columns of ``ST``,
    ``ET``; q1..q3: the columns of ``cq``; tied group t is event group ``tie_row[t]``)."""
    q1 = np.ascontiguousarray(cq[:ne, 0])
    for j in range(wdt):
        sj = ST[j, :ne]
        for k in range(j + 1):
            sk = ST[k, :ne]
            s = 0.0
            for e in range(ne):
                s += q1[e] * sj[e] * sk[e]
            blk[j, k] = s
    if nt == 0:
        return
    # the tied groups' S, q2 and q3, gathered
    St = np.empty((wdt, nt))
    q2 = np.empty(nt)
    q3 = np.empty(nt)
    for t in range(nt):
        e = tie_row[t]
        q2[t] = cq[e, 1]
        q3[t] = cq[e, 2]
        for j in range(wdt):
            St[j, t] = ST[j, e]
    for j in range(wdt):
        sj = St[j]
        ej = ET[j, :nt]
        for k in range(j + 1):
            sk = St[k]
            ek = ET[k, :nt]
            s = 0.0
            for t in range(nt):
                s += q2[t] * (sj[t] * ek[t] + ej[t] * sk[t]) - q3[t] * ej[t] * ek[t]
            blk[j, k] -= s


@numba.njit(cache=True, nogil=True)
def rows_in_order(
    A: np.ndarray, order: np.ndarray, shift: np.ndarray
) -> np.ndarray:  # pragma: no cover
    """``A[order] - shift`` (rows gathered, columns shifted) in one pass."""
    n = order.shape[0]
    k = A.shape[1]
    out = np.empty((n, k))
    for i in range(n):
        src = order[i]
        for j in range(k):
            out[i, j] = A[src, j] - shift[j]
    return out


@numba.njit(cache=True, nogil=True)
def group_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Sums of ``values`` over the runs ``starts[g]:starts[g + 1]`` (int64)."""
    out = np.zeros(starts.shape[0] - 1, dtype=np.int64)
    for g in range(starts.shape[0] - 1):
        s = 0
        for i in range(starts[g], starts[g + 1]):
            s += values[i]
        out[g] = s
    return out


@numba.njit(cache=True, nogil=True)
def transposed_in_order(A: np.ndarray, pos: np.ndarray) -> np.ndarray:  # pragma: no cover
    """``A`` (n x k) transposed, row ``i`` of ``A`` to column ``pos[i]``."""
    n, k = A.shape
    out = np.empty((k, n))
    for i in range(n):
        for j in range(k):
            out[j, pos[i]] = A[i, j]
    return out


@numba.njit(cache=True, nogil=True)
def cox_pass(
    X: np.ndarray,
    Z: np.ndarray,
    ridx: np.ndarray,
    ract: np.ndarray,
    event: np.ndarray,
    grp_start: np.ndarray,
    grp_nev: np.ndarray,
    str_gstart: np.ndarray,
    act_ptr: np.ndarray,
    act_idx: np.ndarray,
    cpos: np.ndarray,
    seg_ptr: np.ndarray,
    XTc: np.ndarray,
    ZTc: np.ndarray,
    u_event: np.ndarray,
    beta: np.ndarray,
    b: np.ndarray,
    efron: bool,
    second: bool,
    r: np.ndarray,
    U: np.ndarray,
    info: np.ndarray,
    A: np.ndarray,
    tg: np.ndarray,
    base_h: np.ndarray,
    base_v: np.ndarray,
    base_df: np.ndarray,
    base_dr: np.ndarray,
) -> float:  # pragma: no cover
    """Log partial likelihood; fills ``r`` (risk scores), ``U`` (score) and ``info``.

    ``U`` (length p + m) and ``info`` ((p + m) x (p + m)) are overwritten; fixed effects first,
    then random effects. With ``second`` false only ``r`` and the log-likelihood are computed.
    When ``A`` (m x m) is not empty, ``tg`` receives the gradient of ``tr(A I_bb)`` at the same
    point (what :func:`trace_gradient` computes), in the same loops. When ``base_h`` is not
    empty, the four ``base_*`` arrays receive what :func:`baseline_pass` computes.

    Per stratum, loop 1 forms the running risk-set sums and keeps, for every group with
    events, the sums over the risk set (``S``) and over its deaths (``E``, only where deaths
    are tied) in the columns of two matrices; the rank-one part of the information,
    ``sum_g q1 S S' - q2 (S E' + E S') + q3 E E'``, is then a set of vectorised sums over
    the groups (:func:`_rank_one`) and the products with ``A`` matrix products. Loop 2 computes
    each row's weight in the information (the sum of the group weights of every risk set it
    is in) and in the trace gradient; the sums over rows weighted by them (``X' W X``, the
    random-by-fixed and random blocks, the scores) are then dot products over the columns
    of ``XTc`` and ``ZTc``: the covariates transposed with the rows in centre order (row
    ``i`` at ``cpos[i]``, centre ``c`` at ``seg_ptr[c]:seg_ptr[c + 1]``), whose random
    effects are ``c * q .. c * q + q - 1``.
    """
    n, p = X.shape
    q = Z.shape[1]
    n_strata = str_gstart.shape[0] - 1
    dim = U.shape[0]
    trace = second and A.shape[0] > 0
    base = second and base_h.shape[0] > 0
    for j in range(dim):
        U[j] = u_event[j]  # the deaths' covariates (the risk sets' share is subtracted below)
    if second:
        for j in range(dim):
            for k in range(dim):
                info[j, k] = 0.0
    if trace:
        for j in range(dim):
            tg[j] = 0.0
    ng = grp_nev.shape[0]
    w1 = np.zeros(ng)
    w2 = np.zeros(ng)
    loglik = 0.0
    amax = 0
    emax = 0
    for s in range(n_strata):
        a = act_ptr[s + 1] - act_ptr[s]
        if a > amax:
            amax = a
        ne_s = 0
        for g in range(str_gstart[s], str_gstart[s + 1]):
            if grp_nev[g] > 0:
                ne_s += 1
        if ne_s > emax:
            emax = ne_s
    width = p + amax
    s1 = np.zeros(width)
    e1 = np.zeros(width)
    gpos = np.zeros(width, dtype=np.int64)
    # scratch: every row of these is written before it is read (event groups only)
    ew = emax if second else 0
    # column e of SmatT: the risk-set sums of event group e; column t of EmatT: the deaths'
    # sums of tied group t (rows contiguous for the sums over groups)
    SmatT = np.empty((width, ew))
    EmatT = np.empty((width, ew))
    cq = np.empty((ew, 3))  # q1, q2, q3 of each event group
    ct = np.empty((ew, 6))  # tt, et and the cubic moments m30 .. m33 (trace)
    gidx = np.empty(ew, dtype=np.int64)  # group of each event row of the matrices
    tie_row = np.empty(ew, dtype=np.int64)  # column of SmatT of each column of EmatT
    tie_of = np.empty(ew, dtype=np.int64)  # column of EmatT of each of SmatT, -1 if none
    blk = np.empty((width, width))
    na = amax if trace else 0
    ga1 = np.empty((ng if trace else 0, na))
    ga2 = np.empty((ng if trace else 0, na))
    be1 = np.empty(ng if trace else 0)
    be2 = np.empty(ng if trace else 0)
    Aact = np.zeros((na, na))
    # the rows' weights, in centre order: in the information and score (rv), in the trace
    # gradient (gi)
    rvc = np.empty(n if second else 0)  # every row is written in loop 2
    arow = np.empty(n if trace else 0)  # each row's z' A z
    no_ga = np.zeros(na)
    gic = np.empty(n if trace else 0)
    run = np.zeros(na)
    tot = np.zeros(na)
    for s in range(n_strata):
        a = act_ptr[s + 1] - act_ptr[s]
        wdt = p + a
        for j in range(p):
            gpos[j] = j
        for k in range(a):
            gpos[p + k] = p + act_idx[act_ptr[s] + k]
        if trace:
            for k in range(a):
                for k2 in range(a):
                    Aact[k, k2] = A[act_idx[act_ptr[s] + k], act_idx[act_ptr[s] + k2]]
        for j in range(wdt):
            s1[j] = 0.0
        s0 = 0.0
        tt = 0.0
        g0 = str_gstart[s]
        g1 = str_gstart[s + 1]
        ne = 0
        nt = 0
        # loop 1: groups in descending time
        for g in range(g0, g1):
            e0 = 0.0
            et = 0.0
            d = grp_nev[g]
            if second and d > 0:
                for j in range(wdt):
                    e1[j] = 0.0
            for i in range(grp_start[g], grp_start[g + 1]):
                eta = 0.0
                for j in range(p):
                    eta += X[i, j] * beta[j]
                for k in range(q):
                    eta += Z[i, k] * b[ridx[i, k]]
                ri = np.exp(eta)
                r[i] = ri
                s0 += ri
                ai = 0.0
                if trace:
                    for k in range(q):
                        for k2 in range(q):
                            ai += Z[i, k] * A[ridx[i, k], ridx[i, k2]] * Z[i, k2]
                    tt += ri * ai
                    arow[i] = ai
                if second:
                    for j in range(p):
                        s1[j] += ri * X[i, j]
                    for k in range(q):
                        s1[p + ract[i, k]] += ri * Z[i, k]
                if event[i]:
                    loglik += eta
                    e0 += ri
                    et += ri * ai
                    if second:
                        for j in range(p):
                            e1[j] += ri * X[i, j]
                        for k in range(q):
                            e1[p + ract[i, k]] += ri * Z[i, k]
            if d == 0:
                if base:
                    base_h[g] = 0.0
                    base_v[g] = 0.0
                    for j in range(p):
                        base_df[g, j] = 0.0
                    for k in range(base_dr.shape[1]):
                        base_dr[g, k] = 0.0
                continue
            use_efron = efron and d > 1
            a1 = 0.0
            a2 = 0.0
            b1 = 0.0
            b2 = 0.0
            b3 = 0.0
            m30 = 0.0
            m31 = 0.0
            m32 = 0.0
            m33 = 0.0
            if use_efron:
                for kk in range(d):
                    c = kk / d
                    den = s0 - c * e0
                    loglik -= np.log(den)
                    inv = 1.0 / den
                    inv2 = inv * inv
                    inv3 = inv2 * inv
                    a1 += inv
                    a2 += c * inv
                    b1 += inv2
                    b2 += c * inv2
                    b3 += c * c * inv2
                    m30 += inv3
                    m31 += c * inv3
                    m32 += c * c * inv3
                    m33 += c * c * c * inv3
            else:
                loglik -= d * np.log(s0)
                inv = 1.0 / s0
                a1 = d * inv
                b1 = d * inv * inv
                m30 = d * inv * inv * inv
            w1[g] = a1
            w2[g] = a2
            if base:
                base_h[g] = a1
                base_v[g] = b1
                for j in range(p):
                    base_df[g, j] = -(b1 * s1[j] - b2 * e1[j])
                for k in range(base_dr.shape[1]):
                    base_dr[g, k] = -(b1 * s1[p + k] - b2 * e1[p + k]) if k < a else 0.0
            if second:
                for j in range(wdt):
                    SmatT[j, ne] = s1[j]
                # the deaths' sums only where Efron's correction applies (tied deaths): the
                # other groups' terms in them are 0
                if use_efron:
                    for j in range(wdt):
                        EmatT[j, nt] = e1[j]
                    tie_row[nt] = ne
                    tie_of[ne] = nt
                    nt += 1
                else:
                    tie_of[ne] = -1
                cq[ne, 0] = b1
                cq[ne, 1] = b2
                cq[ne, 2] = b3
                ct[ne, 0] = tt
                ct[ne, 1] = et
                ct[ne, 2] = m30
                ct[ne, 3] = m31
                ct[ne, 4] = m32
                ct[ne, 5] = m33
                gidx[ne] = g
                ne += 1
        if not second:
            continue
        # rank-one part of the information: matrix products over the event groups
        if ne > 0:
            _rank_one(SmatT, EmatT, cq, tie_row, ne, nt, wdt, blk)
            for j in range(wdt):
                gj = gpos[j]
                for k in range(j + 1):
                    info[gj, gpos[k]] -= blk[j, k]
        if trace and ne > 0:
            Sb = np.ascontiguousarray(SmatT[p : p + a, :ne])
            Eb = np.ascontiguousarray(EmatT[p : p + a, :nt])
            Aa = np.ascontiguousarray(Aact[:a, :a])
            AS = np.dot(Aa, Sb)  # (A S')' as A is symmetric: a x ne
            AE = np.dot(Aa, Eb)
            for e in range(ne):
                sas = 0.0
                sae = 0.0
                eae = 0.0
                t = tie_of[e]
                for k in range(a):
                    sas += Sb[k, e] * AS[k, e]
                if t >= 0:
                    for k in range(a):
                        sae += Sb[k, e] * AE[k, t]
                        eae += Eb[k, t] * AE[k, t]
                b1 = cq[e, 0]
                b2 = cq[e, 1]
                b3 = cq[e, 2]
                tt_ = ct[e, 0]
                et_ = ct[e, 1]
                g = gidx[e]
                be1[g] = -(tt_ * b1 - et_ * b2) + 2.0 * (
                    sas * ct[e, 2] - 2.0 * sae * ct[e, 3] + eae * ct[e, 4]
                )
                be2[g] = -(tt_ * b2 - et_ * b3) + 2.0 * (
                    sas * ct[e, 3] - 2.0 * sae * ct[e, 4] + eae * ct[e, 5]
                )
                if t >= 0:
                    for k in range(a):
                        ga1[g, k] = -2.0 * (b1 * AS[k, e] - b2 * AE[k, t])
                        ga2[g, k] = -2.0 * (b2 * AS[k, e] - b3 * AE[k, t])
                else:
                    for k in range(a):
                        ga1[g, k] = -2.0 * b1 * AS[k, e]
                        ga2[g, k] = -2.0 * b2 * AS[k, e]
        # loop 2: each row's weight is the sum of w1 over the risk sets it is in
        total = 0.0
        tot_b = 0.0
        for g in range(g0, g1):
            total += w1[g]
        if trace:
            for k in range(a):
                tot[k] = 0.0
                run[k] = 0.0
            for g in range(g0, g1):
                if grp_nev[g] > 0:
                    tot_b += be1[g]
                    for k in range(a):
                        tot[k] += ga1[g, k]
        before = 0.0
        before_b = 0.0
        for g in range(g0, g1):
            cum = total - before
            cb = tot_b - before_b
            before += w1[g]
            has_ev = grp_nev[g] > 0
            # a death's own terms, multiplied by 0.0 / 1.0 (no branch per row)
            w2g = w2[g]
            be2g = be2[g] if trace and has_ev else 0.0
            ga2g = ga2[g] if trace and has_ev else no_ga
            for i in range(grp_start[g], grp_start[g + 1]):
                ev = 1.0 if event[i] else 0.0
                v = cum - ev * w2g
                rvc[cpos[i]] = r[i] * v
                if trace:
                    coef = arow[i] * v + cb - ev * be2g
                    for k in range(q):
                        pos = ract[i, k]
                        coef += Z[i, k] * (tot[pos] - run[pos] - ev * ga2g[pos])
                    gic[cpos[i]] = r[i] * coef
            if trace and has_ev:
                before_b += be1[g]
                for k in range(a):
                    run[k] += ga1[g, k]
    if second:
        # the sums over rows: fixed x fixed, then per centre random x fixed and random x
        # random (lower triangle; a row's random effects are its centre's), scores, trace
        _weighted_row_sums(XTc, ZTc, seg_ptr, rvc, gic, trace, U, info, tg)
        # the lower triangle was filled (rows >= columns); mirror it
        for j in range(dim):
            for k in range(j):
                val = info[j, k] + info[k, j]
                info[j, k] = val
                info[k, j] = val
    return loglik


@numba.njit(cache=True, nogil=True)
def trace_gradient(
    X: np.ndarray,
    Z: np.ndarray,
    ridx: np.ndarray,
    ract: np.ndarray,
    event: np.ndarray,
    grp_start: np.ndarray,
    grp_nev: np.ndarray,
    str_gstart: np.ndarray,
    act_ptr: np.ndarray,
    act_idx: np.ndarray,
    r: np.ndarray,
    A: np.ndarray,
    efron: bool,
    out: np.ndarray,
) -> None:  # pragma: no cover
    """Gradient of ``tr(A I_bb)`` with respect to (beta, b) at the risk scores ``r``.

    ``A`` is m x m (symmetric), ``out`` has length p + m and is overwritten. With
    F = sum over event groups and tied deaths k of [tau_k / den_k - N_k' A N_k / den_k^2],
    tau_k the A-weighted second moment of the random design, N_k its first moment and
    den_k the (Efron-corrected) risk-set total, dF/d eta_i is r_i times a combination of
    the group coefficients of every risk set row i is in; the gradient is sum_i dF/d eta_i w_i.
    """
    n, p = X.shape
    q = Z.shape[1]
    n_strata = str_gstart.shape[0] - 1
    dim = out.shape[0]
    for j in range(dim):
        out[j] = 0.0
    ng = grp_nev.shape[0]
    amax = 0
    for s in range(n_strata):
        a = act_ptr[s + 1] - act_ptr[s]
        if a > amax:
            amax = a
    al1 = np.zeros(ng)
    al2 = np.zeros(ng)
    be1 = np.zeros(ng)
    be2 = np.zeros(ng)
    ga1 = np.zeros((ng, amax))
    ga2 = np.zeros((ng, amax))
    s1 = np.zeros(amax)
    e1 = np.zeros(amax)
    As = np.zeros(amax)
    Ae = np.zeros(amax)
    Aact = np.zeros((amax, amax))
    arow = np.zeros(n)
    for s in range(n_strata):
        a = act_ptr[s + 1] - act_ptr[s]
        for k in range(a):
            for k2 in range(a):
                Aact[k, k2] = A[act_idx[act_ptr[s] + k], act_idx[act_ptr[s] + k2]]
        for k in range(a):
            s1[k] = 0.0
        s0 = 0.0
        tt = 0.0
        g0 = str_gstart[s]
        g1 = str_gstart[s + 1]
        for g in range(g0, g1):
            e0 = 0.0
            et = 0.0
            for k in range(a):
                e1[k] = 0.0
            for i in range(grp_start[g], grp_start[g + 1]):
                ri = r[i]
                # a_i = z_i' A_cc z_i
                ai = 0.0
                for k in range(q):
                    for k2 in range(q):
                        ai += Z[i, k] * A[ridx[i, k], ridx[i, k2]] * Z[i, k2]
                arow[i] = ai
                s0 += ri
                tt += ri * ai
                for k in range(q):
                    s1[ract[i, k]] += ri * Z[i, k]
                if event[i]:
                    e0 += ri
                    et += ri * ai
                    for k in range(q):
                        e1[ract[i, k]] += ri * Z[i, k]
            d = grp_nev[g]
            if d == 0:
                continue
            sas = 0.0
            sae = 0.0
            eae = 0.0
            for k in range(a):
                tk = 0.0
                uk = 0.0
                for k2 in range(a):
                    tk += Aact[k, k2] * s1[k2]
                    uk += Aact[k, k2] * e1[k2]
                As[k] = tk
                Ae[k] = uk
                sas += s1[k] * tk
                sae += s1[k] * uk
                eae += e1[k] * uk
            x1 = 0.0
            x2 = 0.0
            y1 = 0.0
            y2 = 0.0
            q1 = 0.0
            q2 = 0.0
            q3 = 0.0
            for kk in range(d):
                c = kk / d if (efron and d > 1) else 0.0
                den = s0 - c * e0
                inv = 1.0 / den
                tau = tt - c * et
                nan_ = sas - 2.0 * c * sae + c * c * eae
                term = -tau * inv * inv + 2.0 * nan_ * inv * inv * inv
                x1 += inv
                x2 += c * inv
                y1 += term
                y2 += c * term
                q1 += inv * inv
                q2 += c * inv * inv
                q3 += c * c * inv * inv
            al1[g] = x1
            al2[g] = x2
            be1[g] = y1
            be2[g] = y2
            for k in range(a):
                ga1[g, k] = -2.0 * (q1 * As[k] - q2 * Ae[k])
                ga2[g, k] = -2.0 * (q2 * As[k] - q3 * Ae[k])
        # loop 2: cumulative coefficients from each group to the end of the stratum
        tot_a = 0.0
        tot_b = 0.0
        for k in range(a):
            As[k] = 0.0  # reused: total of ga1
        for g in range(g0, g1):
            tot_a += al1[g]
            tot_b += be1[g]
            for k in range(a):
                As[k] += ga1[g, k]
        cum_a = 0.0
        cum_b = 0.0
        for k in range(a):
            Ae[k] = 0.0  # reused: running sum of ga1 before g
        for g in range(g0, g1):
            ca = tot_a - cum_a
            cb = tot_b - cum_b
            for i in range(grp_start[g], grp_start[g + 1]):
                if event[i]:
                    coef = arow[i] * (ca - al2[g]) + (cb - be2[g])
                    for k in range(q):
                        pos = ract[i, k]
                        coef += Z[i, k] * (As[pos] - Ae[pos] - ga2[g, pos])
                else:
                    coef = arow[i] * ca + cb
                    for k in range(q):
                        pos = ract[i, k]
                        coef += Z[i, k] * (As[pos] - Ae[pos])
                gi = r[i] * coef
                for j in range(p):
                    out[j] += gi * X[i, j]
                for k in range(q):
                    out[p + ridx[i, k]] += gi * Z[i, k]
            cum_a += al1[g]
            cum_b += be1[g]
            for k in range(a):
                Ae[k] += ga1[g, k]


@numba.njit(cache=True, nogil=True)
def baseline_pass(
    X: np.ndarray,
    Z: np.ndarray,
    ract: np.ndarray,
    event: np.ndarray,
    grp_start: np.ndarray,
    grp_nev: np.ndarray,
    str_gstart: np.ndarray,
    act_ptr: np.ndarray,
    r: np.ndarray,
    efron: bool,
    hazard: np.ndarray,
    variance: np.ndarray,
    dfix: np.ndarray,
    drand: np.ndarray,
) -> None:  # pragma: no cover
    """Baseline hazard increments at the reference (centred x, b = 0) per tie group.

    Per group: ``hazard`` = sum over tied deaths k of 1 / den_k (Breslow: d / S0; Efron
    with den_k = S0 - k/d E0), ``variance`` = sum 1 / den_k^2 (the Poisson part of its
    variance), ``dfix`` / ``drand`` = its derivative with respect to the fixed effects and
    the stratum's active random effects, -sum (S1 - c_k E1) / den_k^2. Groups without
    events get zeros.
    """
    n, p = X.shape
    q = Z.shape[1]
    n_strata = str_gstart.shape[0] - 1
    amax = drand.shape[1]
    s1 = np.zeros(p + amax)
    e1 = np.zeros(p + amax)
    for s in range(n_strata):
        a = act_ptr[s + 1] - act_ptr[s]
        for j in range(p + a):
            s1[j] = 0.0
        s0 = 0.0
        for g in range(str_gstart[s], str_gstart[s + 1]):
            e0 = 0.0
            for j in range(p + a):
                e1[j] = 0.0
            for i in range(grp_start[g], grp_start[g + 1]):
                ri = r[i]
                s0 += ri
                for j in range(p):
                    s1[j] += ri * X[i, j]
                for k in range(q):
                    s1[p + ract[i, k]] += ri * Z[i, k]
                if event[i]:
                    e0 += ri
                    for j in range(p):
                        e1[j] += ri * X[i, j]
                    for k in range(q):
                        e1[p + ract[i, k]] += ri * Z[i, k]
            d = grp_nev[g]
            hazard[g] = 0.0
            variance[g] = 0.0
            for j in range(p):
                dfix[g, j] = 0.0
            for k in range(amax):
                drand[g, k] = 0.0
            if d == 0:
                continue
            h = 0.0
            v = 0.0
            w2 = 0.0
            for kk in range(d):
                c = kk / d if (efron and d > 1) else 0.0
                den = s0 - c * e0
                h += 1.0 / den
                v += 1.0 / (den * den)
                w2 += c / (den * den)
            hazard[g] = h
            variance[g] = v
            for j in range(p):
                dfix[g, j] = -(v * s1[j] - w2 * e1[j])
            for k in range(a):
                drand[g, k] = -(v * s1[p + k] - w2 * e1[p + k])


@numba.njit(cache=True, nogil=True)
def local1_derivs(
    lam: float,
    mu: np.ndarray,
    nu: np.ndarray,
    y0: np.ndarray,
    bt: np.ndarray,
    bt2: float,
    h: np.ndarray,
) -> tuple[float, float, float]:  # pragma: no cover
    """The one-term local model of the Laplace log-likelihood and its first two derivatives
    in ``lam`` (:meth:`pooled.models._mixed_cox_core.LocalModel1._derivs`), as sums over the
    ``m`` eigenvalues in one loop."""
    m = mu.shape[0]
    F = 0.0
    F1 = 0.0
    F2 = 0.0
    for i in range(m):
        inv = 1.0 / (mu[i] + lam)
        y = y0[i] - lam * bt[i]
        yi = y * inv
        bi = bt[i] * inv
        nl = 1.0 / (nu[i] + lam)
        F += 0.5 * y * yi - 0.5 * np.log(nu[i] + lam) - 0.5 * h[i] * yi
        F1 += -bt[i] * yi - 0.5 * yi * yi - 0.5 * nl + 0.5 * h[i] * bi + 0.5 * h[i] * yi * inv
        F2 += (
            bt[i] * bi
            + 2.0 * bi * yi
            + yi * yi * inv
            + 0.5 * nl * nl
            - h[i] * bi * inv
            - h[i] * yi * inv * inv
        )
    F += -0.5 * lam * bt2 + 0.5 * m * np.log(lam)
    F1 += -0.5 * bt2 + 0.5 * m / lam
    F2 += -0.5 * m / lam**2
    return F, F1, F2


@numba.njit(cache=True, nogil=True)
def local1_setup(
    information: np.ndarray, score: np.ndarray, b: np.ndarray, g: np.ndarray, p: int
) -> tuple[
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    np.ndarray,
    float,
    np.ndarray,
    np.ndarray,
    np.ndarray,
]:  # pragma: no cover
    """The eigen-expansion of the one-term local model (:class:`LocalModel1`) from a pass:
    ``mu, V`` (eigenvalues and vectors of ``J = I_bb - I_bf I_ff^-1 I_fb``), ``nu`` (those of
    ``I_bb``), ``y0, bt, bt2, h`` (score, random effects and trace gradient in that basis),
    ``cuf = I_ff^-1 U_f`` and ``cfb = I_ff^-1 I_fb``. ``g`` empty: no trace gradient."""
    dim = information.shape[0]
    m = dim - p
    ff = np.ascontiguousarray(information[:p, :p])
    fb = np.ascontiguousarray(information[:p, p:])
    # I_ff^-1 [I_fb, U_f] by the Cholesky factor (LinAlgError when I_ff is not PD)
    X = np.empty((p, m + 1))
    X[:, :m] = fb
    X[:, m] = score[:p]
    if p > 0:
        L = np.linalg.cholesky(ff)
        for c in range(m + 1):
            for i in range(p):
                s = X[i, c]
                for k in range(i):
                    s -= L[i, k] * X[k, c]
                X[i, c] = s / L[i, i]
            for i in range(p - 1, -1, -1):
                s = X[i, c]
                for k in range(i + 1, p):
                    s -= L[k, i] * X[k, c]
                X[i, c] = s / L[i, i]
    cfb = np.ascontiguousarray(X[:, :m])
    cuf = np.ascontiguousarray(X[:, m])
    ibb = np.ascontiguousarray(information[p:, p:])
    J = ibb - np.dot(fb.T.copy(), cfb)
    J = (J + J.T) / 2.0
    mu, V = np.linalg.eigh(J)
    nu = np.linalg.eigvalsh(ibb)
    Vt = np.ascontiguousarray(V.T)
    y0 = np.dot(Vt, score[p:] - np.dot(cuf, fb))
    bt = np.dot(Vt, b)
    bt2 = float(np.dot(b, b))
    if g.shape[0] > 0:
        h = np.dot(Vt, g[p:] - np.dot(g[:p], cfb))
    else:
        h = np.zeros(m)
    return mu, np.ascontiguousarray(V), nu, y0, bt, bt2, h, cuf, cfb


@numba.njit(cache=True, nogil=True)
def local1_maximise(
    x: float, lo: float, hi: float, tol: float, model: tuple
) -> float:  # pragma: no cover
    """Safeguarded Newton on the log-variance ``x`` of the one-term local model (bisection
    when the curvature is wrong); ``x`` starts inside ``[lo, hi]``; ``model`` holds the
    arguments of :func:`local1_derivs` after ``lam``."""
    for _ in range(200):
        lam = np.exp(-x)
        _, F1, F2 = local1_derivs(lam, *model)
        g1 = -lam * F1
        h1 = F2 * lam * lam + F1 * lam
        if g1 > 0:
            lo = max(lo, x)
        else:
            hi = min(hi, x)
        if h1 < 0:
            step = max(-2.0, min(2.0, -g1 / h1))
        else:
            step = 2.0 if g1 > 0 else -2.0
        if abs(step) < tol or hi - lo < tol:
            break
        new = x + step
        if not lo < new < hi:
            new = 0.5 * (lo + hi)
        x = new
    return x


@numba.njit(cache=True, nogil=True)
def spd_inverse(a: np.ndarray, out: np.ndarray) -> bool:  # pragma: no cover
    """Inverse of the symmetric matrix ``a`` (its lower triangle) into ``out`` by its Cholesky
    factor; False (``out`` undefined) when ``a`` is not positive definite."""
    n = a.shape[0]
    L = np.zeros((n, n))
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not s > 0.0:
            return False
        d = np.sqrt(s)
        L[j, j] = d
        for i in range(j + 1, n):
            s = a[i, j]
            for k in range(j):
                s -= L[i, k] * L[j, k]
            L[i, j] = s / d
    # inverse of L (lower triangular), then out = L^-T L^-1
    Li = np.zeros((n, n))
    for j in range(n):
        Li[j, j] = 1.0 / L[j, j]
        for i in range(j + 1, n):
            s = 0.0
            for k in range(j, i):
                s -= L[i, k] * Li[k, j]
            Li[i, j] = s / L[i, i]
    for i in range(n):
        for j in range(i + 1):
            s = 0.0
            for k in range(i, n):
                s += Li[k, i] * Li[k, j]
            out[i, j] = s
            out[j, i] = s
    return True

"""Numerical core of the mixed-effects Cox model: sorted problem, inner Newton, Laplace.

Private to :mod:`pooled.models.mixed_cox`. Notation: ``gamma = (beta, b)``, fixed effects
first; ``b`` (length ``m = K q``) holds the random effects centre by centre (``b[c q + k]`` is
centre ``c``'s effect on random column ``k``); ``Sigma`` is the q x q covariance of one
centre's random effects, ``P = I_K (x) Sigma^-1`` the penalty; ``phi`` the variance
parameters on the optimiser's scale: ``log(variance)`` of each random column, then
``atanh(correlation)`` when q = 2.

Definitions follow coxme 2.2 (Therneau, ``coxme.fit``):

* penalised partial log-likelihood ``PPL = l(beta, b) - b' P b / 2``;
* ``Integrated = PPL(gamma_hat) - [log det(I_K (x) Sigma) + log det H_bb] / 2`` with
  ``H_bb`` the random-effects block of the penalised information at the solution (the
  Laplace approximation of log of the integral of exp(l) over b ~ N(0, Sigma); the
  (2 pi)^(m/2) factors cancel, no other constant);
* ``NULL`` the log partial likelihood at beta = 0, b = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize

from pooled.models._mixed_cox_kernels import (
    counting_sort,
    cox_pass,
    group_sums,
    local1_derivs,
    local1_maximise,
    local1_setup,
    rows_in_order,
    spd_inverse,
    trace_gradient,
    transposed_in_order,
)

__all__ = ["InnerFit", "Problem", "covariance_from_phi"]

_NO_MATRIX = np.zeros((0, 0))
_NO_BASELINE = (np.zeros(0), np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0)))


def _codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer codes 0..k-1 in ascending order of ``values`` (O(n) for small integers)."""
    values = np.asarray(values)
    n = values.shape[0]
    if values.dtype.kind in "iub" or (
        values.dtype.kind == "f" and n and np.all(values == np.floor(values))
    ):
        v = values.astype(np.int64)
        lo, hi = (int(v.min()), int(v.max())) if n else (0, 0)
        if hi - lo <= 4 * n + 1024:
            present = np.bincount(v - lo, minlength=hi - lo + 1) > 0
            lookup = np.cumsum(present) - 1
            return lookup[v - lo].astype(np.int64), int(present.sum())
    uniques, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1), int(uniques.size)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Codes 0..k-1 of the distinct values, ascending (dense ranks; an unstable sort)."""
    order = np.argsort(values)
    ordered = values[order]
    new = np.empty(values.shape[0], dtype=np.int64)
    new[:1] = 0
    new[1:] = ordered[1:] != ordered[:-1]
    ranks = np.empty(values.shape[0], dtype=np.int64)
    ranks[order] = np.cumsum(new)
    return ranks


def _small_int_codes(values: np.ndarray) -> np.ndarray | None:
    """Codes 0..k-1 (ascending) of whole-number values in a small range, else None."""
    n = values.shape[0]
    if not n or not np.all(values == np.floor(values)):
        return None
    v = values.astype(np.int64)
    lo, hi = int(v.min()), int(v.max())
    if hi - lo > 4 * n + 1024:
        return None
    present = np.bincount(v - lo, minlength=hi - lo + 1) > 0
    lookup = np.cumsum(present) - 1
    return lookup[v - lo].astype(np.int64)


def covariance_from_phi(phi: np.ndarray, q: int) -> np.ndarray:
    """Sigma (q x q) from phi = (log var_1, ..., log var_q, atanh(rho) if q = 2)."""
    if q == 1:
        return np.array([[np.exp(phi[0])]])
    v1, v2 = np.exp(phi[0]), np.exp(phi[1])
    rho = np.tanh(phi[2])
    cov = rho * np.sqrt(v1 * v2)
    return np.array([[v1, cov], [cov, v2]])


def covariance_derivatives(phi: np.ndarray, q: int) -> list[np.ndarray]:
    """d Sigma / d phi_j for each component of phi."""
    sigma = covariance_from_phi(phi, q)
    if q == 1:
        return [sigma.copy()]
    v1, v2 = sigma[0, 0], sigma[1, 1]
    cov = sigma[0, 1]
    rho = np.tanh(phi[2])
    d1 = np.array([[v1, cov / 2.0], [cov / 2.0, 0.0]])
    d2 = np.array([[0.0, cov / 2.0], [cov / 2.0, v2]])
    dc = (1.0 - rho * rho) * np.sqrt(v1 * v2)
    d3 = np.array([[0.0, dc], [dc, 0.0]])
    return [d1, d2, d3]


@dataclass(slots=True)
class InnerFit:
    """The penalised fit at given variance parameters (mutable scratch, not a result)."""

    phi: np.ndarray
    gamma: np.ndarray
    loglik: float  # l(beta, b): partial log-likelihood without penalty
    ppl: float  # penalised partial log-likelihood
    penalty: float  # b' P b / 2
    score: np.ndarray  # penalised score
    hessian: np.ndarray  # penalised information H = I + blockdiag(0, P)
    information: np.ndarray  # I (unpenalised)
    logdet_sigma: float  # log det (I_K (x) Sigma)
    logdet_hbb: float
    laplace: float
    iterations: int
    converged: bool
    r: np.ndarray


class Problem:
    """A sorted mixed-effects Cox problem: fixed design, random design, strata, ties.

    Parameters
    ----------
    X : (n, p) fixed-effect covariates (centred inside).
    Z : (n, q) random-effect design (1 for an intercept, the marker for a slope).
    time, event : follow-up and 0/1 event.
    centre : (n,) integer centre codes 0 .. K-1.
    strata : (n,) integer stratum codes or None.
    efron : Efron (True) or Breslow ties.
    """

    def __init__(
        self,
        X: np.ndarray,
        Z: np.ndarray,
        time: np.ndarray,
        event: np.ndarray,
        centre: np.ndarray,
        n_centres: int,
        strata: np.ndarray | None,
        efron: bool,
    ) -> None:
        X = np.asarray(X, dtype=np.float64)
        Z = np.asarray(Z, dtype=np.float64)
        n, p = X.shape
        q = Z.shape[1]
        self.n, self.p, self.q, self.K = n, p, q, n_centres
        self.m = n_centres * q
        self.efron = efron
        centre = np.asarray(centre, dtype=np.int64)
        if strata is None:
            s_codes = np.zeros(n, dtype=np.int64)
            n_strata = 1
        else:
            s_codes, n_strata = _codes(np.asarray(strata))
        time = np.asarray(time, dtype=np.float64)
        t_codes = _small_int_codes(time)
        if t_codes is None:  # the ranks of the distinct times (a fast unstable sort)
            t_codes = _ranks(time)
        # stable two-key counting sort, time descending then stratum (the order of a stable
        # argsort of -time, without its cost)
        n_times = int(t_codes.max()) + 1 if n else 0
        order = counting_sort((n_times - 1 - t_codes).astype(np.int64), n_times)
        order = order[counting_sort(s_codes[order], n_strata)]
        self.order = order
        # (a product with ones: numpy's column mean of a row-major matrix is 10x slower)
        self.means = (np.ones(n) @ X) / n if n else np.zeros(p)
        self.X = rows_in_order(X, order, self.means)
        self.Z = rows_in_order(Z, order, np.zeros(q))
        self.event_u8 = np.ascontiguousarray(np.asarray(event)[order].astype(np.uint8))
        self.n_events = int(self.event_u8.sum())
        s_sorted = s_codes[order]
        t_sorted = time[order]
        c_sorted = centre[order]
        self.centre_sorted = c_sorted
        self.stratum_sorted = s_sorted
        self.time_sorted = t_sorted
        change = np.empty(n, dtype=bool)
        change[0] = True
        change[1:] = (s_sorted[1:] != s_sorted[:-1]) | (t_sorted[1:] != t_sorted[:-1])
        starts = np.flatnonzero(change)
        self.grp_start = np.append(starts, n).astype(np.int64)
        self.grp_nev = group_sums(self.event_u8, self.grp_start)
        grp_stratum = s_sorted[starts]
        sfirst = np.flatnonzero(np.r_[True, grp_stratum[1:] != grp_stratum[:-1]])
        self.str_gstart = np.append(sfirst, starts.size).astype(np.int64)
        self.grp_time = self.time_sorted[starts]
        self.grp_stratum = grp_stratum
        self.n_strata = n_strata
        # active random effects per stratum: the centres present in it
        pair_key = s_sorted * n_centres + c_sorted
        if n_strata * n_centres <= 4 * n + 1024:
            pair = np.flatnonzero(np.bincount(pair_key, minlength=n_strata * n_centres))
        else:
            pair = np.unique(pair_key)
        pair_s, pair_c = pair // n_centres, pair % n_centres
        counts = np.bincount(pair_s, minlength=n_strata)
        first_pair = np.concatenate(([0], np.cumsum(counts)))
        pos_in_stratum = np.arange(pair.size) - first_pair[pair_s]
        lookup = np.full(n_strata * n_centres, -1, dtype=np.int64)
        lookup[pair] = pos_in_stratum
        cpos = lookup[pair_key]
        ks = np.arange(q)
        self.act_ptr = (first_pair * q).astype(np.int64)
        self.act_idx = (pair_c[:, None] * q + ks[None, :]).reshape(-1).astype(np.int64)
        self.ridx = np.ascontiguousarray(c_sorted[:, None] * q + ks[None, :]).astype(np.int64)
        self.ract = np.ascontiguousarray(cpos[:, None] * q + ks[None, :]).astype(np.int64)
        self.local = bool(np.all(counts == 1))
        # the covariates transposed with the rows in centre order, for the pass's weighted
        # sums over rows (sorted row i at cpos[i]; centre c at seg_ptr[c]:seg_ptr[c + 1])
        corder = counting_sort(c_sorted, n_centres) if n else np.empty(0, dtype=np.int64)
        self.cpos = np.empty(n, dtype=np.int64)
        self.cpos[corder] = np.arange(n)
        sizes = np.bincount(c_sorted, minlength=n_centres)
        self.seg_ptr = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self.XTc = transposed_in_order(self.X, self.cpos)
        self.ZTc = transposed_in_order(self.Z, self.cpos)
        # the deaths' share of the score (constant): sum of (x, z) over the deaths
        ev = self.event_u8.astype(np.float64)
        self.u_event = np.zeros(p + self.m)
        self.u_event[:p] = ev @ self.X
        for k in range(q):
            self.u_event[p:] += np.bincount(
                self.ridx[:, k], weights=ev * self.Z[:, k], minlength=self.m
            )
        self._u_event0 = self.u_event[:p].copy()
        self._r = np.empty(n)
        self._U = np.empty(p + self.m)
        self._info = np.empty((p + self.m, p + self.m))
        # the same problem without random effects (for the Cox fit that starts everything)
        self._Z0 = np.empty((n, 0))
        self._ZT0 = np.empty((0, n))
        self._idx0 = np.empty((n, 0), dtype=np.int64)
        self._act_ptr0 = np.zeros(n_strata + 1, dtype=np.int64)
        self._act_idx0 = np.empty(0, dtype=np.int64)
        # the arrays a pass reads, in :func:`cox_pass`'s order: with the random effects, and
        # without them (the Cox start)
        self._layout = (
            self.X,
            self.Z,
            self.ridx,
            self.ract,
            self.event_u8,
            self.grp_start,
            self.grp_nev,
            self.str_gstart,
            self.act_ptr,
            self.act_idx,
            self.cpos,
            self.seg_ptr,
            self.XTc,
            self.ZTc,
            self.u_event,
        )
        self._layout0 = (
            self.X,
            self._Z0,
            self._idx0,
            self._idx0,
            self.event_u8,
            self.grp_start,
            self.grp_nev,
            self.str_gstart,
            self._act_ptr0,
            self._act_idx0,
            self.cpos,
            self.seg_ptr,
            self.XTc,
            self._ZT0,
            self._u_event0,
        )

    # ------------------------------------------------------------------------------------
    def loglik(self, gamma: np.ndarray) -> float:
        p = self.p
        return float(
            cox_pass(
                *self._layout,
                np.ascontiguousarray(gamma[:p]),
                np.ascontiguousarray(gamma[p:]),
                self.efron,
                False,
                self._r,
                self._U,
                self._info,
                _NO_MATRIX,
                self._U,
                *_NO_BASELINE,
            )
        )

    def baseline_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Scratch for the baseline-hazard pieces a pass can fill (see :func:`cox_pass`)."""
        ng = self.grp_nev.size
        amax = int(np.max(np.diff(self.act_ptr)))
        return np.empty(ng), np.empty(ng), np.empty((ng, self.p)), np.empty((ng, amax))

    def derivatives(
        self,
        gamma: np.ndarray,
        A: np.ndarray | None = None,
        baseline: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Log partial likelihood, score, information, risk scores at gamma; with ``A`` the
        gradient of tr(A I_bb) there, and with ``baseline`` (from :meth:`baseline_arrays`)
        the baseline-hazard pieces, in the same pass."""
        p = self.p
        r = np.empty(self.n)
        U = np.empty(p + self.m)
        info = np.empty((p + self.m, p + self.m))
        tg = np.empty(p + self.m) if A is not None else U
        ll = cox_pass(
            *self._layout,
            np.ascontiguousarray(gamma[:p]),
            np.ascontiguousarray(gamma[p:]),
            self.efron,
            True,
            r,
            U,
            info,
            _NO_MATRIX if A is None else np.ascontiguousarray(A),
            tg,
            *(_NO_BASELINE if baseline is None else baseline),
        )
        return float(ll), U, info, r, (tg if A is not None else None)

    def fixed_derivatives(self, beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Log partial likelihood, score and information of beta with b = 0 (no random
        block: as cheap as a Cox pass)."""
        p = self.p
        U = np.empty(p)
        info = np.empty((p, p))
        ll = cox_pass(
            *self._layout0,
            np.ascontiguousarray(beta, dtype=np.float64),
            np.empty(0),
            self.efron,
            True,
            np.empty(self.n),
            U,
            info,
            _NO_MATRIX,
            U,
            *_NO_BASELINE,
        )
        return float(ll), U, info

    def trace_gradient(self, r: np.ndarray, A: np.ndarray) -> np.ndarray:
        out = np.empty(self.p + self.m)
        trace_gradient(
            *self._layout[:10],  # X .. act_idx, as cox_pass reads them
            r,
            np.ascontiguousarray(A),
            self.efron,
            out,
        )
        return out

    # ------------------------------------------------------------------------------------
    def penalty_matrix(self, sigma: np.ndarray) -> np.ndarray:
        """``I_K (x) Sigma^-1``: block diagonal, one block per centre."""
        q = sigma.shape[0]
        if q == 1:
            return np.eye(self.m) / sigma[0, 0]
        inv = np.linalg.inv(sigma)
        out = np.zeros((self.m, self.m))
        for k in range(self.K):  # K small blocks: cheaper than np.kron's general machinery
            out[k * q : (k + 1) * q, k * q : (k + 1) * q] = inv
        return out

    def evaluate(self, gamma: np.ndarray, phi: np.ndarray) -> InnerFit:
        """Everything at (gamma, phi) without iterating."""
        ll, U, info, r, _ = self.derivatives(gamma)
        return self.assemble(gamma, phi, ll, U, info, r)

    def assemble(
        self,
        gamma: np.ndarray,
        phi: np.ndarray,
        ll: float,
        U: np.ndarray,
        info: np.ndarray,
        r: np.ndarray,
    ) -> InnerFit:
        """Penalised quantities at (gamma, phi) from the unpenalised ones of a pass."""
        p = self.p
        sigma = covariance_from_phi(phi, self.q)
        P = self.penalty_matrix(sigma)
        b = gamma[p:]
        Pb = P @ b
        penalty = 0.5 * float(b @ Pb)
        score = U.copy()
        score[p:] -= Pb
        H = info.copy()
        H[p:, p:] += P
        sign, logdet_sigma_q = np.linalg.slogdet(sigma)
        logdet_sigma = self.K * float(logdet_sigma_q)
        chol = scipy.linalg.cho_factor(H[p:, p:], lower=True, check_finite=False)
        logdet_hbb = 2.0 * float(np.sum(np.log(np.diag(chol[0]))))
        ppl = ll - penalty
        return InnerFit(
            phi=np.asarray(phi, dtype=np.float64).copy(),
            gamma=gamma.copy(),
            loglik=ll,
            ppl=ppl,
            penalty=penalty,
            score=score,
            hessian=H,
            information=info,
            logdet_sigma=logdet_sigma,
            logdet_hbb=logdet_hbb,
            laplace=ppl - 0.5 * (logdet_sigma + logdet_hbb),
            iterations=0,
            converged=False,
            r=r,
        )

    def fit(
        self, phi: np.ndarray, init: np.ndarray, *, tol: float = 1e-10, max_iter: int = 50
    ) -> InnerFit:
        """Newton-Raphson on the penalised partial likelihood at fixed phi (step halving).

        Converged when the next Newton step is below ``tol`` in every coefficient
        (relative to 1 + the largest coefficient), or the Newton decrement U' H^-1 U is at
        the rounding floor; the returned fit is evaluated at the last point, so its
        coefficients are within that step of the maximum. (A small decrement alone is not
        enough: the log-determinant in the Laplace log-likelihood moves with the
        coefficients to first order.)
        """
        gamma = np.asarray(init, dtype=np.float64).copy()
        cur = self.evaluate(gamma, phi)
        it = 0
        for it in range(1, max_iter + 1):  # noqa: B007
            step = _solve(cur.hessian, cur.score)
            decrement = float(cur.score @ step)
            size = float(np.max(np.abs(step))) if step.size else 0.0
            scale = 1.0 + float(np.max(np.abs(cur.gamma))) if step.size else 1.0
            if size <= tol * scale or decrement < 1e-24 * (1.0 + abs(cur.ppl)):
                cur.converged = True
                break
            new = self.evaluate(cur.gamma + step, phi)
            halvings = 0
            while not (np.isfinite(new.ppl) and new.ppl >= cur.ppl - 1e-12 * abs(cur.ppl)):
                halvings += 1
                if halvings > 30:
                    break
                step = step / 2.0
                new = self.evaluate(cur.gamma + step, phi)
            cur = new
        cur.iterations = it
        return cur

    def laplace_gradient(self, fit: InnerFit) -> tuple[np.ndarray, np.ndarray]:
        """Exact gradient of the Laplace log-likelihood in phi at a converged inner fit.

        Also returns d gamma_hat / d phi (columns), the predictor for warm starts.
        """
        p, q, K = self.p, self.q, self.K
        phi = fit.phi
        sigma = covariance_from_phi(phi, q)
        sinv = np.linalg.inv(sigma)
        dsig = covariance_derivatives(phi, q)
        H = fit.hessian
        hinv = np.linalg.inv(H)
        A = np.linalg.inv(H[p:, p:])
        g = self.trace_gradient(fit.r, A)
        b = fit.gamma[p:].reshape(K, q)
        grad = np.empty(len(phi))
        dgamma = np.empty((p + self.m, len(phi)))
        for j, ds in enumerate(dsig):
            dsinv = -sinv @ ds @ sinv  # d Sigma^-1 / d phi_j
            quad = float(np.einsum("ck,kl,cl->", b, dsinv, b))
            tr_sigma = K * float(np.trace(sinv @ ds))
            dP = np.kron(np.eye(K), dsinv)
            tr_a = float(np.sum(A * dP))
            rhs = np.zeros(p + self.m)
            rhs[p:] = -(dP @ fit.gamma[p:])
            v = hinv @ rhs
            dgamma[:, j] = v
            grad[j] = -0.5 * quad - 0.5 * tr_sigma - 0.5 * (tr_a + float(g @ v))
        return grad, dgamma


@dataclass(slots=True)
class FixedFit:
    """The Cox model without random effects (b = 0), fitted on the same sorted problem.

    ``loglik`` is at ``beta``; ``loglik_max`` adds half the remaining Newton decrement (the
    maximum to third order when the fit stopped early); ``score`` and ``information`` are the
    full (p + m) ones at (beta, 0), whose random block gives the score test of the variance.
    """

    beta: np.ndarray
    loglik: float
    loglik_max: float
    loglik_null: float
    score: np.ndarray
    information: np.ndarray
    iterations: int
    converged: bool


def fit_fixed(
    problem: Problem,
    *,
    tol: float = 1e-10,
    max_iter: int = 50,
    init: np.ndarray | None = None,
    loglik_null: float | None = None,
) -> FixedFit:
    """Newton-Raphson for the fixed effects with every random effect held at 0.

    Stops when the next step is below ``tol`` (relative to 1 + the largest coefficient).
    """
    p = problem.p
    beta = np.zeros(p) if init is None else np.asarray(init, dtype=np.float64).copy()
    ll, U, info = problem.fixed_derivatives(beta)
    if loglik_null is None:
        loglik_null = ll if init is None else problem.fixed_derivatives(np.zeros(p))[0]
    # the full pass at (beta, 0) (its random block is the score test) replaces the fixed pass
    # once the step is small enough that the next one should be below ``tol`` (Newton's
    # steps shrink quadratically: a Cox fit's next step is ~0.1 x the square of the last)
    full: tuple[float, np.ndarray, np.ndarray] | None = None
    last_before_tol = float(np.sqrt(10.0 * tol))

    def evaluate(beta: np.ndarray, last_step: float) -> tuple[float, np.ndarray, np.ndarray]:
        nonlocal full
        if last_step > last_before_tol:
            full = None
            return problem.fixed_derivatives(beta)
        gamma = np.zeros(p + problem.m)
        gamma[:p] = beta
        ll, U_full, info_full, _, _ = problem.derivatives(gamma)
        full = (ll, U_full, info_full)
        return ll, U_full[:p], info_full[:p, :p]

    converged = False
    it = 0
    decrement = 0.0
    for it in range(1, max_iter + 1):  # noqa: B007
        step = _solve(info, U)
        decrement = float(U @ step)
        size = float(np.max(np.abs(step))) / (1.0 + float(np.max(np.abs(beta))))
        if size <= tol:
            converged = True
            break
        new_beta = beta + step
        new = evaluate(new_beta, size)
        halvings = 0
        while not (np.isfinite(new[0]) and new[0] >= ll - 1e-12 * abs(ll)) and halvings < 30:
            halvings += 1
            step = step / 2.0
            new_beta = beta + step
            new = evaluate(new_beta, size)
        beta = new_beta
        ll, U, info = new
    if full is None:
        gamma = np.zeros(p + problem.m)
        gamma[:p] = beta
        ll, U_all, info_all, _, _ = problem.derivatives(gamma)
    else:
        ll, U_all, info_all = full
    return FixedFit(
        beta.copy(), ll, ll + 0.5 * max(decrement, 0.0), loglik_null, U_all, info_all, it, converged
    )


@dataclass(slots=True)
class OuterFit:
    """The maximum of the Laplace log-likelihood over phi."""

    fit: InnerFit
    gradient: np.ndarray
    hessian: np.ndarray  # of the Laplace log-likelihood in phi (finite differences)
    iterations: int
    evaluations: int
    inner_iterations: int
    converged: bool
    at_bound: np.ndarray  # phi components stopped at a bound


def _curvature(hess: np.ndarray) -> np.ndarray:
    """A positive-definite matrix from minus a Hessian (eigenvalues floored)."""
    w, v = np.linalg.eigh(-(hess + hess.T) / 2.0)
    w = np.maximum(w, 1e-3 * max(1.0, float(np.max(np.abs(w)))))
    return (v * w) @ v.T


def optimise(
    problem: Problem,
    phi0: np.ndarray,
    gamma0: np.ndarray,
    curvature0: np.ndarray | None,
    *,
    lower: np.ndarray,
    upper: np.ndarray,
    tol_inner: float,
    tol_outer: float,
    max_outer: int,
    hessian_step: float = 1e-4,
) -> OuterFit:
    """Maximise the Laplace log-likelihood over phi with exact gradients.

    Quasi-Newton (BFGS on -L, started from ``curvature0``) with step halving and box bounds
    until the step is below 1e-5, then Newton steps with the finite-difference Hessian of the
    exact gradient (which is kept for the standard errors) until the step is below
    ``tol_outer``. Each evaluation warm-starts the inner Newton from the first-order
    prediction gamma_hat + (d gamma_hat / d phi) step.
    """
    inner_total = 0
    evaluations = 0

    def evaluate(phi: np.ndarray, start: np.ndarray) -> tuple[InnerFit, np.ndarray, np.ndarray]:
        nonlocal inner_total, evaluations
        fit = problem.fit(phi, start, tol=tol_inner)
        inner_total += fit.iterations
        evaluations += 1
        grad, dgamma = problem.laplace_gradient(fit)
        return fit, grad, dgamma

    phi = np.clip(np.asarray(phi0, dtype=np.float64), lower, upper)
    fit, grad, dgamma = evaluate(phi, gamma0)
    B = _curvature(curvature0) if curvature0 is not None else np.eye(len(phi))
    converged = False
    iterations = 0
    hess: np.ndarray | None = None

    def propose(g: np.ndarray, curv: np.ndarray) -> np.ndarray:
        step = np.linalg.solve(curv, g)
        big = float(np.max(np.abs(step)))
        if big > 2.0:
            step *= 2.0 / big
        return np.clip(phi + step, lower, upper) - phi

    for iterations in range(1, max_outer + 1):  # noqa: B007
        if hess is None:
            step = propose(grad, B)
            if float(np.max(np.abs(step))) < 1e-5:
                hess = _fd_hessian(evaluate, fit, grad, dgamma, hessian_step, lower, upper)
                continue
        else:
            step = propose(grad, _curvature(hess))
        if float(np.max(np.abs(step))) < tol_outer:
            converged = True
            break
        new, new_grad, new_dgamma = evaluate(phi + step, fit.gamma + dgamma @ step)
        halvings = 0
        while new.laplace < fit.laplace - 1e-12 * abs(fit.laplace) and halvings < 30:
            halvings += 1
            step = step / 2.0
            new, new_grad, new_dgamma = evaluate(phi + step, fit.gamma + dgamma @ step)
        s = step
        y = grad - new_grad  # change in the gradient of -L
        if hess is None and float(y @ s) > 1e-12 * float(np.linalg.norm(y) * np.linalg.norm(s)):
            Bs = B @ s
            B = B - np.outer(Bs, Bs) / float(s @ Bs) + np.outer(y, y) / float(y @ s)
        phi = new.phi.copy()
        fit, grad, dgamma = new, new_grad, new_dgamma
    if hess is None:
        hess = _fd_hessian(evaluate, fit, grad, dgamma, hessian_step, lower, upper)
    at_bound = (phi <= lower + 1e-8) | (phi >= upper - 1e-8)
    return OuterFit(fit, grad, hess, iterations, evaluations, inner_total, converged, at_bound)


def _fd_hessian(evaluate, fit, grad, dgamma, h, lower, upper) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Hessian of L in phi: central differences of the exact gradient."""
    k = len(fit.phi)
    H = np.empty((k, k))
    for j in range(k):
        e = np.zeros(k)
        e[j] = h
        up = evaluate(fit.phi + e, fit.gamma + dgamma @ e)[1]
        down = evaluate(fit.phi - e, fit.gamma - dgamma @ e)[1]
        H[:, j] = (up - down) / (2.0 * h)
    return (H + H.T) / 2.0


def _solve(H: np.ndarray, u: np.ndarray) -> np.ndarray:
    try:
        factor = scipy.linalg.cho_factor(H, lower=True, check_finite=False)
        return scipy.linalg.cho_solve(factor, u, check_finite=False)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(H, u, rcond=None)[0]


# ----------------------------------------------------------------------------------------
# Joint iteration: one pass per step, variance parameters from a local model
# ----------------------------------------------------------------------------------------


class LocalModel:
    """The Laplace log-likelihood of the quadratic expansion of l at gamma_t, as a function
    of phi, with the first-order change of log det H_bb in gamma.

    ``value(phi) = PPL_m(phi) - K log det Sigma / 2 - log det(I_bb + P) / 2
    - g' (gamma_m(phi) - gamma_t) / 2`` where ``gamma_m(phi)`` maximises the quadratic model
    ``PPL_m`` of the penalised partial likelihood (one Newton step from gamma_t) and ``g`` is
    the gradient of ``tr(A I_bb)`` at gamma_t (``A`` the inverse penalised random-effects
    information there). At a point where gamma_t = gamma_hat(phi_t), ``value`` and its
    gradient agree with the Laplace log-likelihood and its exact gradient, so a fixed point
    of "maximise the local model, step, re-expand" is the maximum of the Laplace
    log-likelihood. (:class:`LocalModel1` is the closed form for one random term.)
    """

    def __init__(
        self,
        problem: Problem,
        gamma: np.ndarray,
        loglik: float,
        score: np.ndarray,
        information: np.ndarray,
        g: np.ndarray | None,
    ) -> None:
        self.p, self.q, self.K, self.m = problem.p, problem.q, problem.K, problem.m
        p, q, K = self.p, self.q, self.K
        self.gamma = gamma
        self.score = score
        self.info = information
        self.g = g
        self.ibb = information[p:, p:]
        self.b_t = gamma[p:]
        # positions of the q x q diagonal blocks of the random-effects penalty
        c = np.repeat(np.arange(K), q * q)
        k = np.tile(np.repeat(np.arange(q), q), K)
        lpos = np.tile(np.tile(np.arange(q), q), K)
        self.rows = c * q + k
        self.cols = c * q + lpos

    def _parts(self, phi: np.ndarray):  # type: ignore[no-untyped-def]
        p, q, K = self.p, self.q, self.K
        sigma = covariance_from_phi(phi, q)
        sinv = np.linalg.inv(sigma)
        pvals = np.tile(sinv.ravel(), K)
        H = self.info.copy()
        H[p + self.rows, p + self.cols] += pvals
        cf = scipy.linalg.cho_factor(H, lower=True, check_finite=False)
        pb = (self.b_t.reshape(K, q) @ sinv).reshape(-1)
        s = self.score.copy()
        s[p:] -= pb
        delta = scipy.linalg.cho_solve(cf, s, check_finite=False)
        return sigma, sinv, pvals, cf, delta

    def value_gradient(self, phi: np.ndarray) -> tuple[float, np.ndarray]:
        """Local model value (minus the constant l_t) and its exact gradient in phi."""
        p, q, K, m = self.p, self.q, self.K, self.m
        try:
            sigma, sinv, pvals, cf, delta = self._parts(phi)
            hbb = self.ibb.copy()
            hbb[self.rows, self.cols] += pvals
            chb = scipy.linalg.cho_factor(hbb, lower=True, check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            return -np.inf, np.zeros(len(phi))
        b_new = self.b_t + delta[p:]
        bm = b_new.reshape(K, q)
        quad = float(self.score @ delta) - 0.5 * float(delta @ self.info @ delta)
        pen = 0.5 * float(np.sum((bm @ sinv) * bm))
        logdet_hbb = 2.0 * float(np.sum(np.log(np.diag(chb[0]))))
        logdet_sigma = K * float(np.linalg.slogdet(sigma)[1])
        value = quad - pen - 0.5 * (logdet_sigma + logdet_hbb)
        if self.g is not None:
            value -= 0.5 * float(self.g @ delta)
        A = scipy.linalg.cho_solve(chb, np.eye(m), check_finite=False)
        ablocks = A.reshape(K, q, K, q)[np.arange(K), :, np.arange(K), :].sum(axis=0)
        dsig = covariance_derivatives(phi, q)
        dsinv = np.array([-sinv @ ds @ sinv for ds in dsig])  # (k, q, q)
        dpb = np.einsum("cl,jlk->jck", bm, dsinv).reshape(len(dsig), -1)
        grad = (
            -0.5 * (dpb @ b_new)
            - 0.5 * K * np.array([np.trace(sinv @ ds) for ds in dsig])
            - 0.5 * np.einsum("kl,jkl->j", ablocks, dsinv)
        )
        if self.g is not None:
            rhs = np.zeros((p + m, len(dsig)))
            rhs[p:] = -dpb.T
            grad = grad - 0.5 * (self.g @ scipy.linalg.cho_solve(cf, rhs, check_finite=False))
        return value, grad

    def gamma_at(self, phi: np.ndarray) -> np.ndarray:
        return self.gamma + self._parts(phi)[4]

    def hessian(self, phi: np.ndarray, h: float = 1e-5) -> np.ndarray:
        k = len(phi)
        H = np.empty((k, k))
        for j in range(k):
            e = np.zeros(k)
            e[j] = h
            H[:, j] = (self.value_gradient(phi + e)[1] - self.value_gradient(phi - e)[1]) / (2 * h)
        return (H + H.T) / 2.0

    def maximise(
        self,
        phi: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        tol: float = 1e-12,
        hessian: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Newton (curvature recomputed only when a step fails) with box bounds.

        Stops when the step or the predicted increase is negligible, or when even a short
        step along the Newton direction (with a fresh curvature) does not increase the model.
        """
        phi = np.clip(np.asarray(phi, dtype=np.float64), lower, upper)
        val, grad = self.value_gradient(phi)
        hess = self.hessian(phi) if hessian is None else hessian
        fresh = hessian is None
        for _ in range(100):
            step = np.linalg.solve(_curvature(hess), grad)
            big = float(np.max(np.abs(step)))
            if big > 2.0:
                step *= 2.0 / big
            new_phi = np.clip(phi + step, lower, upper)
            step = new_phi - phi
            if float(np.max(np.abs(step))) < tol or float(grad @ step) < 1e-15 * (1 + abs(val)):
                break
            new_val, new_grad = self.value_gradient(new_phi)
            if not new_val >= val - 1e-13 * (1 + abs(val)):
                if not fresh:
                    hess = self.hessian(phi)
                    fresh = True
                    continue
                halvings = 0
                while not new_val >= val - 1e-13 * (1 + abs(val)) and halvings < 20:
                    halvings += 1
                    step = step / 2.0
                    new_phi = phi + step
                    new_val, new_grad = self.value_gradient(new_phi)
                if halvings >= 20:
                    break
            elif float(new_grad @ step) > 0.5 * float(grad @ step):
                # still climbing as steeply: the curvature is overestimated (a flat direction,
                # e.g. a correlation running to +-1); extend the step while it pays
                for _ in range(8):
                    far = np.clip(phi + 2.0 * (new_phi - phi), lower, upper)
                    if float(np.max(np.abs(far - new_phi))) < tol:
                        break
                    far_val, far_grad = self.value_gradient(far)
                    if not far_val > new_val:
                        break
                    new_phi, new_val, new_grad = far, far_val, far_grad
            # secant (BFGS) update of the curvature keeps Newton fast without new Hessians
            s_, y_ = new_phi - phi, new_grad - grad
            phi, val, grad = new_phi, new_val, new_grad
            if float(y_ @ s_) < 0:
                B = -hess
                Bs = B @ s_
                B = B - np.outer(Bs, Bs) / float(s_ @ Bs) + np.outer(y_, y_) / float(-(y_ @ s_))
                hess = -B
            fresh = False
        return phi, hess


def _inverse_hbb(information: np.ndarray, p: int, P: np.ndarray) -> np.ndarray:
    """(I_bb + P)^-1."""
    return _inverse_hbb_block(information[p:, p:], P)


def _inverse_hbb_block(ibb: np.ndarray, P: np.ndarray) -> np.ndarray:
    H = np.ascontiguousarray(ibb + P)
    out = np.empty_like(H)
    if spd_inverse(H, out):
        return out
    return np.linalg.pinv(H)


@dataclass(slots=True)
class JointFit:
    fit: InnerFit
    hessian: np.ndarray  # local-model Hessian of the Laplace log-likelihood in phi
    passes: int
    converged: bool
    at_bound: np.ndarray
    baseline: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # at fit.gamma


_NEAR = 20.0
_EMPTY = np.empty(0)


def joint_optimise(
    problem: Problem,
    fixed: FixedFit,
    *,
    lower: np.ndarray,
    upper: np.ndarray,
    tol: float,
    tol_phi: float,
    max_iter: int,
) -> JointFit:
    """Maximise the Laplace log-likelihood, one risk-set pass (and one trace pass) per step.

    Starts from the Cox fit without random effects; each step expands the penalised partial
    likelihood to second order at the current coefficients (exact score and information of
    the pass), maximises the local model of the Laplace log-likelihood over phi
    (:class:`LocalModel`), and moves the coefficients by the Newton step at the new phi.
    Stops when both moves are below the tolerances (``tol`` relative to 1 + the largest
    coefficient, ``tol_phi`` absolute on the log-variance scale).
    """
    p, q = problem.p, problem.q
    gamma = np.zeros(p + problem.m)
    gamma[:p] = fixed.beta
    local = LocalModel1 if q == 1 else LocalModel
    model = local(problem, gamma, fixed.loglik, fixed.score, fixed.information, None)
    # start: best point of a coarse grid of the initial local model, then its maximum
    grid = np.linspace(np.log(1e-4), np.log(4.0), 9)
    if q == 1:
        starts = [np.array([x]) for x in grid]
    else:
        starts = [np.array([x, y, 0.0]) for x in grid[::2] for y in grid[::2]]
    starts = [np.clip(s, lower, upper) for s in starts]
    if isinstance(model, LocalModel1):  # the whole grid in one vectorised evaluation
        values = model.values(np.exp(-np.array([s[0] for s in starts])))
        phi = starts[int(np.argmax(values))]
    else:
        phi = max(starts, key=lambda s: model.value_gradient(s)[0])
    phi, hess = model.maximise(phi, lower, upper)
    new_gamma = model.gamma_at(phi)
    # A for the trace gradient of the first pass: from the expansion at b = 0 (afterwards the
    # previous pass's A; at the fixed point the two agree)
    A = _inverse_hbb(fixed.information, p, problem.penalty_matrix(covariance_from_phi(phi, q)))
    prev_ll, prev_gamma = fixed.loglik, gamma
    prev_info: np.ndarray | None = None
    passes = 0
    converged = False
    final_pass: tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray, np.ndarray] | None = (
        None
    )
    baseline = problem.baseline_arrays()
    # Once the steps are within a factor `_NEAR` of the tolerances, the next pass is likely
    # the last, which only verifies: it skips the trace gradient and the local model reuses
    # the last one (its change over a step that small moves the next step by far less than
    # the tolerance). Never twice in a row, so a stale gradient is not carried on.
    reuse = False
    g_last: np.ndarray | None = None
    for _ in range(max_iter):
        ll, U, info, r, g = problem.derivatives(new_gamma, None if reuse else A, baseline)
        passes += 1
        if reuse:
            g = g_last
        sigma = covariance_from_phi(phi, q)
        P = problem.penalty_matrix(sigma)
        halvings = 0
        # the Newton step in gamma must not lower the penalised likelihood at the new phi
        old_ppl = prev_ll - 0.5 * float(prev_gamma[p:] @ P @ prev_gamma[p:])
        while halvings < 30 and not (
            np.isfinite(ll)
            and ll - 0.5 * float(new_gamma[p:] @ P @ new_gamma[p:])
            >= old_ppl - 1e-12 * abs(old_ppl)
        ):
            halvings += 1
            new_gamma = (new_gamma + prev_gamma) / 2.0
            ll, U, info, r, g = problem.derivatives(new_gamma, A, baseline)
            passes += 1
            reuse = False
        gamma = new_gamma
        final_pass = (gamma, phi, ll, U, info, r)
        model = local(problem, gamma, ll, U, info, g)
        new_phi, hess = model.maximise(phi, lower, upper, hessian=hess)
        new_gamma = model.gamma_at(new_phi)
        # A for the next pass (its trace gradient comes out of the same pass): the new
        # variances with I_bb predicted at the new coefficients by the secant along the last
        # step (the steps line up as the iteration converges)
        ibb_next = info[p:, p:]
        step = new_gamma - gamma
        if prev_info is not None:
            last = gamma - prev_gamma
            denom = float(last @ last)
            if denom > 0:
                ratio = float(step @ last) / denom
                ibb_next = ibb_next + ratio * (info[p:, p:] - prev_info)
        A = _inverse_hbb_block(ibb_next, problem.penalty_matrix(covariance_from_phi(new_phi, q)))
        prev_info = info[p:, p:].copy()
        dphi = float(np.max(np.abs(new_phi - phi)))
        dgamma = float(np.max(np.abs(new_gamma - gamma)))
        prev_ll, prev_gamma = ll, gamma
        phi = new_phi
        tol_gamma = tol * (1.0 + float(np.max(np.abs(gamma))))
        if dphi <= tol_phi and dgamma <= tol_gamma:
            converged = True
            break
        reuse = not reuse and dphi <= _NEAR * tol_phi and dgamma <= _NEAR * tol_gamma
        g_last = g
    assert final_pass is not None
    fit = problem.assemble(*final_pass)
    hess = model.hessian(fit.phi)
    at_bound = (fit.phi <= lower + 1e-8) | (fit.phi >= upper - 1e-8)
    fit.iterations = passes
    fit.converged = converged
    return JointFit(fit, hess, passes, converged, at_bound, baseline)


class LocalModel1:
    """:class:`LocalModel` for one random term (q = 1), in closed form.

    With ``P = lam I`` (``lam = exp(-phi)``) the Newton step's random part is
    ``(J + lam I)^-1 y`` with ``J = I_bb - I_bf I_ff^-1 I_fb`` (beta profiled out) and
    ``y = y0 - lam b_t``; in the eigenbasis of ``J`` (and of ``I_bb`` for the log-determinant)
    the model, its first and second derivatives are sums over the m eigenvalues.
    """

    def __init__(
        self,
        problem: Problem,
        gamma: np.ndarray,
        loglik: float,
        score: np.ndarray,
        information: np.ndarray,
        g: np.ndarray | None,
    ) -> None:
        p = problem.p
        self.p, self.m = p, problem.m
        self.gamma = gamma
        (self.mu, self.V, self.nu, self.y0, self.bt, self.bt2, self.h, self.cuf, self.cfb) = (
            local1_setup(
                np.ascontiguousarray(information),
                np.ascontiguousarray(score),
                np.ascontiguousarray(gamma[p:]),
                _EMPTY if g is None else np.ascontiguousarray(g),
                p,
            )
        )

    @property
    def _model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
        return self.mu, self.nu, self.y0, self.bt, self.bt2, self.h

    def _derivs(self, lam: float) -> tuple[float, float, float]:
        """The model and its first two derivatives in lam (sums over the eigenvalues)."""
        return local1_derivs(lam, *self._model)

    def value_gradient(self, phi: np.ndarray) -> tuple[float, np.ndarray]:
        lam = float(np.exp(-phi[0]))
        F, F1, _ = self._derivs(lam)
        return F, np.array([-lam * F1])

    def values(self, lams: np.ndarray) -> np.ndarray:
        """The model at several lam at once (the value of :meth:`_derivs`, first element)."""
        lam = lams[:, None]
        inv = 1.0 / (self.mu[None, :] + lam)
        y = self.y0[None, :] - lam * self.bt[None, :]
        yi = y * inv
        return (
            0.5 * np.sum(y * yi, axis=1)
            - 0.5 * lams * self.bt2
            + 0.5 * self.m * np.log(lams)
            - 0.5 * np.sum(np.log(self.nu[None, :] + lam), axis=1)
            - 0.5 * (yi @ self.h)
        )

    def hessian(self, phi: np.ndarray) -> np.ndarray:
        lam = float(np.exp(-phi[0]))
        _, F1, F2 = self._derivs(lam)
        return np.array([[F2 * lam * lam + F1 * lam]])

    def gamma_at(self, phi: np.ndarray) -> np.ndarray:
        lam = float(np.exp(-phi[0]))
        y = self.y0 - lam * self.bt
        db = self.V @ (y / (self.mu + lam))
        df = self.cuf - self.cfb @ db
        return self.gamma + np.concatenate((df, db))

    def maximise(
        self,
        phi: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        tol: float = 1e-12,
        hessian: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Safeguarded Newton on the log-variance (bisection when the curvature is wrong)."""
        lo, hi = float(lower[0]), float(upper[0])
        x = local1_maximise(min(max(float(phi[0]), lo), hi), lo, hi, tol, self._model)
        out = np.array([x])
        return out, self.hessian(out)

"""Natural cubic splines exactly as R's ``splines::ns``, for continuous markers in Cox models.

A natural cubic spline is cubic between its knots and linear beyond its two boundary knots.
R's ``ns(x, df)`` builds its basis from the cubic B-spline basis on the knots (the boundary
knots repeated four times, :func:`bspline_basis`, R's ``splineDesign``), drops the first
B-spline (no intercept), and keeps the part orthogonal to the two constraints "second
derivative zero at each boundary knot": with ``C`` the 2 x m matrix of the B-splines' second
derivatives at the boundary knots and ``Q`` the orthogonal factor of the Householder QR of
``C'`` (LINPACK's ``dqrdc2``, as R's ``qr()``), the basis is ``B Q[:, 2:]``. Beyond the
boundary knots ``predict()`` continues each basis function linearly (its value and slope at
the knot). Interior knots default to quantiles of ``x`` (R's type 7) at ``1/df, ..., (df-1)/df``;
boundary knots to the range of ``x``.

:class:`NaturalSplineBasis` holds the knots and evaluates the basis at any ``x`` (R's
``predict(ns_object, newx)``); :func:`natural_spline_basis` chooses the knots from data: from
all values (R's rule) or from the values above the lower boundary (``knots_at="nonzero"``:
for a count with many zeros, so the interior knots do not collapse onto the boundary at 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pooled.errors import ConfigError, DataError

__all__ = [
    "KnotRule",
    "NaturalSplineBasis",
    "bspline_basis",
    "natural_spline_basis",
    "quantile_type7",
]

KnotRule = Literal["nonzero", "all"]
KNOT_RULES: tuple[str, ...] = ("nonzero", "all")
_ORDER = 4  # cubic


def _interval(knots: np.ndarray, x: np.ndarray, order: int) -> np.ndarray:
    """Index ``i`` of the knot interval ``[t_i, t_{i+1})`` holding each ``x``; ``x`` equal to
    the last knot uses the last interval of positive length (the limit from the left, as R's
    ``splineDesign``)."""
    n_basis = knots.size - order
    index = np.searchsorted(knots, x, side="right") - 1
    return np.clip(index, order - 1, n_basis - 1)


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with 0 where the denominator is 0 (coincident knots)."""
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _bspline_derivative(
    knots: np.ndarray, x: np.ndarray, interval: np.ndarray, order: int, deriv: int
) -> np.ndarray:
    """The ``deriv``-th derivative of every B-spline of ``order`` at ``x`` (n x m)."""
    m = knots.size - order
    if deriv >= order:
        return np.zeros((x.size, m))
    if order == 1:
        out = np.zeros((x.size, m))
        out[np.arange(x.size), interval] = 1.0
        return out
    lower = _bspline_derivative(knots, x, interval, order - 1, max(deriv - 1, 0))
    i = np.arange(m)
    left_width = knots[i + order - 1] - knots[i]
    right_width = knots[i + order] - knots[i + 1]
    left = lower[:, :m]
    right = lower[:, 1 : m + 1]
    if deriv == 0:
        xc = x[:, None]
        return (
            _safe_ratio(xc - knots[i], left_width) * left
            + _safe_ratio(knots[i + order] - xc, right_width) * right
        )
    k = float(order - 1)
    return k * (_safe_ratio(left, left_width) - _safe_ratio(right, right_width))


def bspline_basis(
    knots: Sequence[float] | np.ndarray,
    x: Sequence[float] | np.ndarray,
    *,
    order: int = _ORDER,
    deriv: int | Sequence[int] = 0,
) -> np.ndarray:
    """The B-spline basis (or a derivative of it) at ``x``: R's ``splineDesign``.

    Parameters
    ----------
    knots : sequence of float
        The full, non-decreasing knot sequence (boundary knots repeated ``order`` times for
        the usual clamped basis).
    x : sequence of float
        Where to evaluate; must lie within ``[knots[order - 1], knots[-order]]``. ``x`` at the
        last knot takes the limit from the left.
    order : int
        4 for cubic splines.
    deriv : int or sequence of int
        The derivative, one for all ``x`` or one per ``x`` (R's ``derivs``).

    Returns
    -------
    ndarray, shape (len(x), len(knots) - order)

    Raises
    ------
    DataError
        An ``x`` outside the knots' range.

    References
    ----------
    .. [1] de Boor C. A Practical Guide to Splines. Revised ed. Springer; 2001. Chapter IX
       (the recurrence of B-splines and of their derivatives).

    Examples
    --------
    >>> b = bspline_basis([0, 0, 0, 0, 1, 1, 1, 1], [0.0, 0.5, 1.0])
    >>> b.sum(axis=1).round(12).tolist()
    [1.0, 1.0, 1.0]
    """
    t = np.asarray(knots, dtype=np.float64)
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    if np.any(np.diff(t) < 0):
        raise ConfigError("bspline_basis expected non-decreasing knots.")
    m = t.size - order
    if m < 1:
        raise ConfigError(f"bspline_basis needs at least {order + 1} knots; got {t.size}.")
    low, high = t[order - 1], t[m]
    outside = (xs < low) | (xs > high) | ~np.isfinite(xs)
    if np.any(outside):
        raise DataError(
            f"bspline_basis: x must lie within the knots' range [{low:g}, {high:g}]; got "
            f"{xs[outside][:3].tolist()}."
        )
    interval = _interval(t, xs, order)
    derivs = np.broadcast_to(np.asarray(deriv, dtype=np.int64), xs.shape)
    out = np.empty((xs.size, m))
    for d in np.unique(derivs):
        rows = derivs == d
        out[rows] = _bspline_derivative(t, xs[rows], interval[rows], order, int(d))
    return out


def quantile_type7(values: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Sample quantiles by R's ``quantile(x, probs, type = 7)``, with R's arithmetic
    (``(1 - h) x[lo] + h x[hi]``), so knots equal R's to the last bit.

    Examples
    --------
    >>> quantile_type7(np.array([3.0, 1.0, 2.0, 10.0]), np.array([0.5])).tolist()
    [2.5]
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    index = 1.0 + max(n - 1, 0) * np.asarray(probabilities, dtype=np.float64)
    lo = np.floor(index).astype(np.int64)
    hi = np.ceil(index).astype(np.int64)
    out = x[lo - 1].copy()
    upper = x[hi - 1]
    move = (index > lo) & (upper != out)
    h = (index - lo)[move]
    out[move] = (1.0 - h) * out[move] + h * upper[move]
    return out


def _householder_complement(constraint: np.ndarray) -> np.ndarray:
    """Columns 3.. of ``Q`` of the Householder QR of ``constraint`` (m x 2), LINPACK's
    ``dqrdc2`` sign convention (R's ``qr()``): ``Q = H_1 H_2``, ``H_j`` reflecting column j's
    sub-vector ``v`` with ``w = v + sign(v_1) ||v|| e_1``."""
    a = np.array(constraint, dtype=np.float64)
    m, p = a.shape
    q = np.eye(m)
    for j in range(p):
        v = a[j:, j].copy()
        norm = float(np.linalg.norm(v))
        if norm == 0.0:
            continue
        w = v.copy()
        w[0] += norm if v[0] >= 0 else -norm
        w /= np.linalg.norm(w)
        a[j:, :] -= 2.0 * np.outer(w, w @ a[j:, :])
        q[:, j:] -= 2.0 * np.outer(q[:, j:] @ w, w)  # Q <- Q H_j
    return q[:, p:]


@dataclass(frozen=True, slots=True)
class NaturalSplineBasis:
    """A natural cubic spline basis with fixed knots (the attributes of R's ``ns`` object).

    Attributes
    ----------
    knots : tuple of float
        The interior knots, ascending.
    boundary_knots : (float, float)
        Lower and upper boundary knot; beyond them the basis continues linearly.
    intercept : bool
        Keep the first B-spline (``ns(..., intercept = TRUE)``); a Cox model has none.
    """

    knots: tuple[float, ...]
    boundary_knots: tuple[float, float]
    intercept: bool = False

    def __post_init__(self) -> None:
        low, high = self.boundary_knots
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise DataError(
                f"natural spline: boundary knots must be finite with lower < upper; got "
                f"{list(self.boundary_knots)} (does the variable take at least two values?)."
            )
        inner = np.asarray(self.knots, dtype=float)
        if np.any(np.diff(inner) < 0):
            raise ConfigError(f"natural spline: knots must be ascending; got {list(self.knots)}.")
        if np.any((inner <= low) | (inner >= high)):
            raise DataError(
                f"natural spline: interior knots {list(self.knots)} must lie strictly between "
                f"the boundary knots {list(self.boundary_knots)}. With many values at a "
                "boundary (zero counts) choose knots at quantiles of the other values "
                "(knots_at='nonzero') or give them."
            )

    @property
    def df(self) -> int:
        """Number of basis functions (columns): interior knots + 1 (+ 1 with an intercept)."""
        return len(self.knots) + 1 + int(self.intercept)

    @property
    def all_knots(self) -> np.ndarray:
        """The B-spline knot sequence: each boundary knot four times and the interior knots."""
        low, high = self.boundary_knots
        return np.sort(np.concatenate(([low] * _ORDER, self.knots, [high] * _ORDER)))

    def evaluate(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        """The basis at ``x`` (R's ``predict(ns_object, x)``), shape (len(x), df); NaN rows
        where ``x`` is missing; linear beyond the boundary knots.

        Examples
        --------
        >>> basis = NaturalSplineBasis(knots=(1.0,), boundary_knots=(0.0, 2.0))
        >>> basis.evaluate([0.0, 1.0, 2.0, 3.0]).shape
        (4, 2)
        """
        values = np.asarray(x, dtype=np.float64).reshape(-1)
        t = self.all_knots
        low, high = self.boundary_knots
        n_bspline = t.size - _ORDER
        full = np.full((values.size, n_bspline), np.nan)
        finite = np.isfinite(values)
        below = finite & (values < low)
        above = finite & (values > high)
        inside = finite & ~below & ~above
        if inside.any():
            full[inside] = bspline_basis(t, values[inside])
        for mask, pivot in ((below, low), (above, high)):
            if mask.any():
                at = bspline_basis(t, [pivot, pivot], deriv=[0, 1])
                full[mask] = at[0] + np.outer(values[mask] - pivot, at[1])
        constraint = bspline_basis(t, [low, high], deriv=2)
        if not self.intercept:
            constraint = constraint[:, 1:]
            full = full[:, 1:]
        complement = _householder_complement(constraint.T)
        return full @ complement

    def contrast(self, x: Sequence[float] | np.ndarray, reference: float) -> np.ndarray:
        """``N(x) - N(reference)``: the rows that give the log hazard ratio of ``x`` against
        ``reference`` when multiplied by the spline's coefficients."""
        return self.evaluate(x) - self.evaluate([reference])[0]

    def column_names(self, prefix: str) -> tuple[str, ...]:
        """``prefix_ns1, prefix_ns2, ...`` (R names them ``ns(x, df = 3)1, ...``)."""
        return tuple(f"{prefix}_ns{j + 1}" for j in range(self.df))


def natural_spline_basis(
    x: Sequence[float] | np.ndarray,
    *,
    df: int | None = None,
    knots: Sequence[float] | None = None,
    knots_at: KnotRule = "all",
    boundary_knots: tuple[float, float] | None = None,
    intercept: bool = False,
) -> NaturalSplineBasis:
    """The natural cubic spline basis R's ``ns(x, df = , knots = )`` builds from data.

    Parameters
    ----------
    x : sequence of float
        The values (missing ones are ignored).
    df : int, optional
        Degrees of freedom (basis columns): ``df - 1 - intercept`` interior knots at the
        quantiles ``1/(k+1), ..., k/(k+1)`` (R's type 7). Ignored when ``knots`` is given.
    knots : sequence of float, optional
        The interior knots themselves.
    knots_at : {"all", "nonzero"}
        Quantiles of all values (R's rule, the default here for parity) or of the values above
        the lower boundary knot (``"nonzero"``: for a count with many zeros).
    boundary_knots : (float, float), optional
        Default: the range of ``x``.
    intercept : bool
        R's ``intercept``; False in a Cox model.

    Returns
    -------
    NaturalSplineBasis

    Raises
    ------
    ConfigError
        Neither ``df`` nor ``knots``, ``df`` too small, or an unknown ``knots_at``.
    DataError
        Fewer than two distinct values, or knots that fall on a boundary knot.

    References
    ----------
    .. [1] Hastie TJ. Generalized additive models. Chapter 7 of Chambers JM, Hastie TJ (eds).
       Statistical Models in S. Wadsworth; 1992 (``ns``).
    .. [2] Riley RD, Moons KGM, Snell KIE, et al. A guide to systematic review and
       meta-analysis of prognostic factor studies. BMJ 2019;364:k4597 (keep continuous markers
       continuous).

    Examples
    --------
    >>> basis = natural_spline_basis(np.log1p(np.arange(20.0)), df=3)
    >>> basis.df, len(basis.knots)
    (3, 2)
    """
    values = np.asarray(x, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if knots_at not in KNOT_RULES:
        raise ConfigError(f"knots_at must be one of {list(KNOT_RULES)}; got {knots_at!r}.")
    if values.size < 2 and boundary_knots is None:
        raise DataError(
            f"natural spline: expected at least two values to place the knots; got {values.size}."
        )
    if boundary_knots is None:
        boundary = (float(values.min()), float(values.max()))
    else:
        boundary = (float(min(boundary_knots)), float(max(boundary_knots)))
    if knots is not None:
        inner = tuple(float(k) for k in sorted(knots))
    else:
        if df is None:
            raise ConfigError("natural_spline_basis expected df or knots; got neither.")
        n_inner = int(df) - 1 - int(intercept)
        if n_inner < 0:
            raise ConfigError(
                f"natural spline: df must be at least {1 + int(intercept)}; got {df}."
            )
        source = values[(values >= boundary[0]) & (values <= boundary[1])]
        if knots_at == "nonzero":
            source = source[source > boundary[0]]
        if n_inner and source.size == 0:
            raise DataError(
                "natural spline: no values above the lower boundary knot to place the "
                "interior knots at."
            )
        probabilities = np.arange(1, n_inner + 1) * (1.0 / (n_inner + 1))
        inner = tuple(float(k) for k in quantile_type7(source, probabilities)) if n_inner else ()
    return NaturalSplineBasis(knots=inner, boundary_knots=boundary, intercept=intercept)

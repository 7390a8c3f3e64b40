"""The CTC count as a continuous marker: the hazard-ratio curve, count categories, linearity.

A cut-off (CTC >= 1 or >= 5 per 7.5 ml) keeps one bit of the count. The prognostic-factor
guidance asks to keep a continuous marker continuous and to treat cut-points as sensitivity
analyses; the pooled analyses report hazard ratios by count category (Bidard et al. 2018:
1, 2, 3-4, >= 5 CTC). :func:`fit_count_response` fits, on the same patients, three stratified
Cox models of the count per 7.5 ml (after volume normalisation), each with the same
adjustment covariates:

* **spline**: a natural cubic spline (:mod:`pooled.models.splines`, R's ``ns``) of
  ``x = log1p(count)``; the curve of the hazard ratio against a reference count (default 0)
  with pointwise 95 % intervals, ``log HR(c) = (N(x_c) - N(x_ref)) b`` with variance
  ``d' V d`` (R: ``coxph(Surv ~ ns(x, df = 3) + ... + strata(centre))``);
* **linear**: ``x`` itself (one hazard ratio per unit of log(1 + count));
* **categorical**: count categories from right-closed intervals (R's ``cut(count, c(-Inf,
  breaks, Inf))``; breaks 0, 1, 2, 4 give 0, 1, 2, 3-4, >= 5), the first as reference.

The spline nests the linear form (a natural spline space contains the linear functions), so
the likelihood-ratio test of the spline against the linear model on ``df - 1`` degrees of
freedom is the test of non-linearity; the AIC of the three forms compares them. The result
also carries the distribution of the count (for the plot under the curve).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from pooled.errors import ConfigError, DataError
from pooled.models.cox import CoxResult, CoxSpec, fit_cox
from pooled.models.design import build_design
from pooled.models.splines import KnotRule, NaturalSplineBasis, natural_spline_basis
from pooled.results import tidy_frame

__all__ = [
    "DEFAULT_BREAKS",
    "DEFAULT_GRID",
    "CountResponseResult",
    "CountResponseSpec",
    "count_categories",
    "count_category_labels",
    "count_spline_basis",
    "fit_count_response",
]

Ties = Literal["efron", "breslow"]
DEFAULT_BREAKS: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
DEFAULT_GRID: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)
_Z975 = float(stats.norm.ppf(0.975))
CURVE_POINTS = 201


def count_category_labels(breaks: Sequence[float]) -> tuple[str, ...]:
    """Labels of the right-closed count categories of ``breaks``.

    Whole-number breaks give count labels (``0, 1, 2, 3-4, >=5`` for 0, 1, 2, 4); other
    breaks interval labels (``<=0.5, (0.5, 3], >3``).

    Examples
    --------
    >>> count_category_labels([0, 1, 2, 4])
    ('0', '1', '2', '3-4', '>=5')
    >>> count_category_labels([4])
    ('0-4', '>=5')
    """
    edges = [float(b) for b in breaks]
    if not edges or any(b2 <= b1 for b1, b2 in zip(edges, edges[1:], strict=False)):
        raise ConfigError(f"count categories: breaks must be ascending and distinct; got {edges}.")
    if all(float(b).is_integer() and b >= 0 for b in edges):
        labels = ["0" if edges[0] == 0 else f"0-{edges[0]:g}"]
        for a, b in zip(edges, edges[1:], strict=False):
            labels.append(f"{b:g}" if b == a + 1 else f"{a + 1:g}-{b:g}")
        labels.append(f">={edges[-1] + 1:g}")
        return tuple(labels)
    labels = [f"<={edges[0]:g}"]
    labels += [f"({a:g}, {b:g}]" for a, b in zip(edges, edges[1:], strict=False)]
    labels.append(f">{edges[-1]:g}")
    return tuple(labels)


def count_categories(
    counts: pd.Series | np.ndarray,
    breaks: Sequence[float] = DEFAULT_BREAKS,
    labels: Sequence[str] = (),
) -> pd.Series:
    """The count category of each value: right-closed intervals ``(-inf, b_1], (b_1, b_2], ...,
    (b_k, inf)`` (R's ``cut(count, c(-Inf, breaks, Inf), right = TRUE)``), as text labels;
    missing stays missing.

    A count per 7.5 ml between two whole numbers (a 15 ml sample: 1 cell = 0.5 per 7.5 ml)
    belongs to the upper one: with breaks 0, 1, 2, 4, 0.5 is in category ``1``.

    Examples
    --------
    >>> count_categories(pd.Series([0.0, 0.5, 3.0, 4.5, None])).tolist()
    ['0', '1', '3-4', '>=5', None]
    """
    names = tuple(labels) or count_category_labels(breaks)
    if len(names) != len(breaks) + 1:
        raise ConfigError(
            f"count categories: {len(breaks)} breaks make {len(breaks) + 1} categories; got "
            f"{len(names)} labels {list(names)}."
        )
    values = pd.Series(counts, dtype=float) if not isinstance(counts, pd.Series) else counts
    numbers = values.astype(float).to_numpy()
    index = np.searchsorted(np.asarray(breaks, dtype=float), numbers, side="left")
    out = np.array([names[i] if np.isfinite(v) else None for i, v in zip(index, numbers, strict=True)],
                   dtype=object)  # fmt: skip
    return pd.Series(out, index=values.index, dtype=object)


def count_spline_basis(
    counts: pd.Series | np.ndarray,
    *,
    df: int = 3,
    knots: Sequence[float] | None = None,
    knots_at: KnotRule = "nonzero",
) -> NaturalSplineBasis:
    """The natural spline basis of ``log1p(count)``: interior knots at quantiles of the
    non-zero counts (or of all counts), or at the given counts; boundary knots at the range.

    Examples
    --------
    >>> basis = count_spline_basis(np.array([0, 0, 0, 1, 2, 5, 9, 40.0]), df=3)
    >>> [round(float(np.expm1(k)), 2) for k in basis.knots]
    [2.0, 8.33]
    """
    x = np.log1p(np.asarray(counts, dtype=float))
    inner = None if knots is None else [math.log1p(float(k)) for k in knots]
    return natural_spline_basis(x, df=df, knots=inner, knots_at=knots_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class CountResponseSpec:
    """Options of :func:`fit_count_response`.

    Parameters
    ----------
    duration, event : str
        Outcome columns.
    count : str
        The count per 7.5 ml (``ctc_per_7_5ml``), >= 0.
    covariates, categorical : tuple
        Adjustment covariates (as :class:`~pooled.models.cox.CoxSpec`) and which are
        categorical with their reference level.
    strata : tuple of str
        Baseline hazards per stratum (centre).
    ties : {"efron", "breslow"}
    df : int
        Spline degrees of freedom (basis columns), >= 2; ignored when ``knots`` or ``basis``
        is given.
    knots : tuple of float, optional
        Interior knots as counts per 7.5 ml.
    knots_at : {"nonzero", "all"}
        Knots at quantiles of the non-zero counts (default) or of all counts (R's ``ns``).
    basis : NaturalSplineBasis, optional
        A basis with fixed knots (on ``log1p`` of the count), e.g. the one the cohort's
        exposure columns were built with; overrides ``df``, ``knots`` and ``knots_at``.
    breaks, labels : tuple
        The count categories (:func:`count_categories`).
    reference : float
        The reference count of the hazard-ratio curve.
    grid : tuple of float
        Counts at which the curve is tabulated.
    name : str
        Prefix of the term names: ``{name}`` (categories, e.g. ``ctc>=5``), ``{name}_log1p``,
        ``{name}_ns1, ...``.
    tol : float
        Newton-Raphson convergence of the Cox fits.
    analysis, endpoint : str
        Labels carried into the tidy table.
    """

    duration: str
    event: str
    count: str = "ctc_per_7_5ml"
    covariates: tuple[str, ...] = ()
    categorical: tuple[tuple[str, str], ...] = ()
    strata: tuple[str, ...] = ("centre",)
    ties: Ties = "efron"
    df: int = 3
    knots: tuple[float, ...] | None = None
    knots_at: KnotRule = "nonzero"
    basis: NaturalSplineBasis | None = None
    breaks: tuple[float, ...] = DEFAULT_BREAKS
    labels: tuple[str, ...] = ()
    reference: float = 0.0
    grid: tuple[float, ...] = DEFAULT_GRID
    name: str = "ctc"
    tol: float = 1e-10
    analysis: str = ""
    endpoint: str = ""

    def __post_init__(self) -> None:
        if self.basis is None and self.knots is None and self.df < 2:
            raise ConfigError(
                f"CountResponseSpec.df must be >= 2 for a spline (df = 1 is the linear form, "
                f"fitted anyway); got {self.df}."
            )
        if not self.reference >= 0:
            raise ConfigError(
                f"CountResponseSpec.reference must be a count >= 0; got {self.reference}."
            )
        if isinstance(self.covariates, str):
            raise ConfigError("CountResponseSpec.covariates expected a tuple of column names.")
        count_category_labels(self.breaks)  # checks the breaks

    @property
    def category_labels(self) -> tuple[str, ...]:
        return self.labels or count_category_labels(self.breaks)

    @property
    def linear_term(self) -> str:
        return f"{self.name}_log1p"


@dataclass(frozen=True, slots=True)
class CountResponseResult:
    """The count as a continuous marker: three Cox fits on the same patients and what they say.

    Attributes
    ----------
    spline, linear, categorical : CoxResult
        The three forms (same patients, same adjustment and strata).
    basis : NaturalSplineBasis
        The spline basis of ``log1p(count)`` (its knots are the ones used).
    curve : DataFrame
        A fine grid from 0 to the largest count: ``count, x, log_hr, std_error, hr,
        ci_lower, ci_upper`` (spline, against ``spec.reference``) and ``linear_log_hr``,
        ``linear_hr`` (the linear form), for the plot.
    grid : DataFrame
        The same at ``spec.grid`` with ``beyond_data`` (count above the largest observed, the
        spline continued linearly).
    categories : DataFrame
        ``level, n, events, estimate, std_error, hr, ci_lower, ci_upper, p_value`` (the
        reference level with HR 1).
    nonlinearity : dict
        ``chisq, df, p_value``: LR test of the spline against the linear form.
    aic : DataFrame
        ``form, n_parameters, loglik, aic, delta_aic`` (linear, spline, categorical).
    distribution : DataFrame
        ``count, n``: how many analysed patients have each count per 7.5 ml.
    n, events : int
    dropped : DataFrame
        Patients left out (missing count, covariate or outcome) per centre and reason.
    spec : CountResponseSpec
    """

    spline: CoxResult
    linear: CoxResult
    categorical: CoxResult
    basis: NaturalSplineBasis
    curve: pd.DataFrame
    grid: pd.DataFrame
    categories: pd.DataFrame
    nonlinearity: dict[str, float]
    aic: pd.DataFrame
    distribution: pd.DataFrame
    n: int
    events: int
    dropped: pd.DataFrame
    spec: CountResponseSpec

    @property
    def knots_count(self) -> tuple[float, ...]:
        """The interior knots as counts per 7.5 ml (``expm1`` of the knots on ``log1p``)."""
        return tuple(float(np.expm1(k)) for k in self.basis.knots)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: the curve at the grid (``model = "count_spline"``, ``row_type =
        "curve"``, term ``count 5 vs 0``), the categories (``count_categories``), the linear
        form (``count_linear``, per unit of log(1 + count)), the non-linearity test
        (``count_nonlinearity``; ``chisq``, ``df``) and the AIC of each form (``count_aic``;
        ``aic``, ``delta_aic``). Extra columns ``row_type, count, level, beyond_data, chisq,
        df, aic, delta_aic, knots``."""
        spec = self.spec
        base = {"analysis": spec.analysis, "endpoint": spec.endpoint, "n": self.n,
                "events": self.events}  # fmt: skip
        knots = ", ".join(f"{k:.4g}" for k in self.knots_count)
        rows: list[dict[str, Any]] = []
        for rec in self.grid.to_dict("records"):
            rows.append({**base, "model": "count_spline",
                         "term": f"count {rec['count']:g} vs {spec.reference:g}",
                         "estimate": rec["log_hr"], "std_error": rec["std_error"],
                         "hr": rec["hr"], "ci_lower": rec["ci_lower"], "ci_upper": rec["ci_upper"],
                         "row_type": "curve", "count": rec["count"],
                         "beyond_data": rec["beyond_data"], "knots": knots})  # fmt: skip
        for rec in self.categories.to_dict("records"):
            rows.append({**base, "model": "count_categories", "term": f"{spec.name}{rec['level']}",
                         "estimate": rec["estimate"], "std_error": rec["std_error"],
                         "hr": rec["hr"], "ci_lower": rec["ci_lower"], "ci_upper": rec["ci_upper"],
                         "p_value": rec["p_value"], "row_type": "category", "level": rec["level"],
                         "n": rec["n"], "events": rec["events"]})  # fmt: skip
        lin = self.linear.to_frame()
        found = lin.loc[lin["term"] == spec.linear_term].iloc[0]
        rows.append({**base, "model": "count_linear", "term": spec.linear_term,
                     **{c: found[c] for c in ("estimate", "std_error", "hr", "ci_lower",
                                              "ci_upper", "p_value")},
                     "row_type": "linear"})  # fmt: skip
        test = self.nonlinearity
        rows.append({**base, "model": "count_nonlinearity", "term": "spline vs linear",
                     "p_value": test["p_value"], "row_type": "test", "chisq": test["chisq"],
                     "df": test["df"], "knots": knots})  # fmt: skip
        for rec in self.aic.to_dict("records"):
            rows.append({**base, "model": "count_aic", "term": rec["form"], "row_type": "aic",
                         "df": rec["n_parameters"], "aic": rec["aic"],
                         "delta_aic": rec["delta_aic"]})  # fmt: skip
        return tidy_frame(rows)


def _curve_table(
    counts: np.ndarray,
    basis: NaturalSplineBasis,
    spline: CoxResult,
    terms: tuple[str, ...],
    reference: float,
    linear: CoxResult,
    linear_term: str,
) -> pd.DataFrame:
    index = [spline.term_names.index(t) for t in terms]
    beta = spline.coefficients[index]
    cov = spline.vcov[np.ix_(index, index)]
    x = np.log1p(counts)
    contrast = basis.contrast(x, float(np.log1p(reference)))
    at_reference = counts == reference
    contrast[at_reference] = 0.0  # exactly (vectorised and scalar log1p may differ by an ulp)
    log_hr = contrast @ beta
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", contrast, cov, contrast), 0.0))
    slope = linear.coefficient(linear_term)
    linear_log_hr = np.where(at_reference, 0.0, (x - float(np.log1p(reference))) * slope)
    return pd.DataFrame(
        {
            "count": counts,
            "x": x,
            "log_hr": log_hr,
            "std_error": se,
            "hr": np.exp(log_hr),
            "ci_lower": np.exp(log_hr - _Z975 * se),
            "ci_upper": np.exp(log_hr + _Z975 * se),
            "linear_log_hr": linear_log_hr,
            "linear_hr": np.exp(linear_log_hr),
        }
    )


def fit_count_response(data: pd.DataFrame, spec: CountResponseSpec) -> CountResponseResult:
    """Fit the count as a spline, a linear term and categories; curve, test, AIC.

    Parameters
    ----------
    data : DataFrame
        One row per patient with the count, the outcome, covariates and strata.
    spec : CountResponseSpec

    Returns
    -------
    CountResponseResult

    Raises
    ------
    ConfigError
        A column named by the spec is absent.
    DataError
        A negative count, too few distinct counts for the spline, an empty category, or a
        Cox model the data cannot support.

    References
    ----------
    .. [1] Riley RD, Moons KGM, Snell KIE, et al. A guide to systematic review and
       meta-analysis of prognostic factor studies. BMJ 2019;364:k4597.
    .. [2] Bidard FC, Michiels S, Riethdorf S, et al. Circulating tumor cells in breast cancer
       patients treated by neoadjuvant chemotherapy: a meta-analysis. J Natl Cancer Inst
       2018;110:560-7.
    .. [3] Royston P, Sauerbrei W. Multivariable Model-building. Wiley; 2008. Chapter 9
       (splines; the likelihood-ratio test of non-linearity).

    Examples
    --------
    >>> # fit_count_response(cohort, CountResponseSpec(duration="os_months", event="os_event",
    >>> #                    covariates=("age",), df=3)).grid[["count", "hr"]]
    """
    if spec.count not in data.columns:
        raise ConfigError(
            f"count column {spec.count!r} expected in the data; found {list(data.columns)[:12]}."
        )
    required = tuple(dict.fromkeys((spec.duration, spec.event, *spec.strata)))
    design = build_design(
        data,
        (spec.count, *spec.covariates),
        categorical=spec.categorical,
        required=required,
        centre="centre" if "centre" in data.columns else None,
    )
    work = data.iloc[design.rows].copy()
    counts = work[spec.count].astype(float).to_numpy()
    if np.any(counts < 0):
        raise DataError(
            f"'{spec.count}' expected counts >= 0; found {counts[counts < 0][:3].tolist()}."
        )
    basis = spec.basis
    if basis is None:
        basis = count_spline_basis(counts, df=spec.df, knots=spec.knots, knots_at=spec.knots_at)
    x = np.log1p(counts)
    spline_terms = basis.column_names(spec.name)
    columns = {spec.linear_term: x, spec.name: count_categories(work[spec.count], spec.breaks,
                                                                spec.labels).to_numpy()}  # fmt: skip
    values = basis.evaluate(x)
    for j, term in enumerate(spline_terms):
        columns[term] = values[:, j]
    work = work.assign(**columns)
    labels = spec.category_labels
    cox = CoxSpec(
        duration=spec.duration,
        event=spec.event,
        covariates=spline_terms + spec.covariates,
        categorical=spec.categorical,
        strata=spec.strata,
        ties=spec.ties,
        tol=spec.tol,
        max_iter=100,
        term_lr_tests=False,
        concordance=False,
        analysis=spec.analysis,
        endpoint=spec.endpoint,
    )
    spline = fit_cox(work, cox)
    linear = fit_cox(work, replace(cox, covariates=(spec.linear_term, *spec.covariates)))
    present = [level for level in labels if (work[spec.name] == level).any()]
    if labels[0] not in present:
        raise DataError(
            f"count categories: no analysed patient in the reference category {labels[0]!r}."
        )
    categorical = fit_cox(
        work,
        replace(
            cox,
            covariates=(spec.name, *spec.covariates),
            categorical=((spec.name, labels[0]), *spec.categorical),
        ),
    )
    max_count = float(counts.max())
    fine = np.unique(np.concatenate((np.expm1(np.linspace(0.0, math.log1p(max_count), CURVE_POINTS)),
                                     [spec.reference])))  # fmt: skip
    curve = _curve_table(fine, basis, spline, spline_terms, spec.reference, linear,
                         spec.linear_term)  # fmt: skip
    grid = _curve_table(np.asarray(spec.grid, dtype=float), basis, spline, spline_terms,
                        spec.reference, linear, spec.linear_term)  # fmt: skip
    grid["beyond_data"] = grid["count"] > max_count
    event = work[spec.event].astype(float).to_numpy()
    cat_frame = categorical.to_frame()
    rows = []
    for level in present:
        in_level = (work[spec.name] == level).to_numpy()
        row: dict[str, Any] = {"level": level, "n": int(in_level.sum()),
                               "events": int(event[in_level].sum())}  # fmt: skip
        if level == labels[0]:
            row.update(estimate=0.0, std_error=0.0, hr=1.0, ci_lower=1.0, ci_upper=1.0,
                       p_value=np.nan)  # fmt: skip
        else:
            found = cat_frame.loc[cat_frame["term"] == f"{spec.name}{level}"].iloc[0]
            row.update({c: float(found[c]) for c in ("estimate", "std_error", "hr", "ci_lower",
                                                     "ci_upper", "p_value")})  # fmt: skip
        rows.append(row)
    chisq = max(2.0 * (spline.loglik - linear.loglik), 0.0)
    df = basis.df - 1
    nonlinearity = {"chisq": chisq, "df": float(df),
                    "p_value": float(stats.chi2.sf(chisq, df)) if df > 0 else float("nan")}  # fmt: skip
    forms = (("linear", linear), ("spline", spline), ("categorical", categorical))
    aic = pd.DataFrame(
        {
            "form": [f for f, _ in forms],
            "n_parameters": [fit.n_parameters for _, fit in forms],
            "loglik": [fit.loglik for _, fit in forms],
            "aic": [fit.aic for _, fit in forms],
        }
    )
    aic["delta_aic"] = aic["aic"] - aic["aic"].min()
    distribution = (
        pd.Series(counts).value_counts().sort_index().rename_axis("count").rename("n").reset_index()
    )
    return CountResponseResult(
        spline=spline,
        linear=linear,
        categorical=categorical,
        basis=basis,
        curve=curve,
        grid=grid,
        categories=pd.DataFrame(rows),
        nonlinearity=nonlinearity,
        aic=aic,
        distribution=distribution,
        n=spline.n,
        events=spline.events,
        dropped=design.dropped,
        spec=spec,
    )

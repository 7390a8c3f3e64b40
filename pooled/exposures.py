"""Exposures and derived covariates of an analysis config, computed into columns of the cohort.

Markers as the pooled analyses define them: CTC >= 1 or >= 5 per 7.5 ml (counts normalised
by the blood volume analysed), DTC >= 1, any numeric field >= a cut-off (a receptor in
fmol/l), a logical expression on patient fields, HER2-positive CTC (DETECT), a CTC phenotype
score from the ER- and HER2-positive CTC counts with the formula in the config (DETECT's
endocrine responsiveness score), clinical-risk vs CTC-risk concordance (STIC CTC). The serial
exposures (change category, trajectory group) come from ``pooled.models.serial`` and
``pooled.models.trajectories`` and are attached by the cohort step
(:mod:`pooled.steps.cohort`). The specs of the exposure and the covariates, as the config
(:mod:`pooled.config`) parses them, are defined here.

Expressions (exposure ``expr``, phenotype ``formula``, derived covariates, cohort rules) are
evaluated by the safe evaluator of :mod:`harmonization.expressions`, never by ``eval``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from harmonization.errors import ExpressionError
from pooled.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from pooled.models.splines import NaturalSplineBasis

REFERENCE_VOLUME_ML = 7.5
CONCORDANCE_LEVELS = ("low_low", "low_high", "high_low", "high_high")  # clinical_ctc
ExposureKind = Literal[
    "threshold",  # a numeric field >= threshold (CTC per 7.5 ml, DTC, a receptor in fmol/l)
    "expression",  # a logical expression on patient fields (expr)
    "her2_ctc",  # at least `threshold` HER2-positive CTC (DETECT)
    "phenotype_score",  # formula on CTC counts, >= threshold (DETECT endocrine responsiveness)
    "change_category",  # baseline -> follow-up CTC+/- (b2CTC)
    "trajectory_group",  # latent CTC trajectory group (tCTC)
    "risk_concordance",  # clinical risk vs CTC risk (STIC CTC)
    "count_categories",  # CTC per 7.5 ml in categories (0, 1, 2, 3-4, >=5; Bidard 2018)
    "continuous",  # log1p(CTC per 7.5 ml) as a natural cubic spline in the Cox models
    "time_dependent",  # serial CTC status carried forward (baseline status in the cohort)
]
EXPOSURE_KINDS: tuple[str, ...] = (
    "threshold", "expression", "her2_ctc", "phenotype_score", "change_category",
    "trajectory_group", "risk_concordance", "count_categories", "continuous", "time_dependent",
)  # fmt: skip
SERIAL_KINDS = ("change_category", "trajectory_group")
TIME_DEPENDENT_KINDS = ("time_dependent",)  # from the serial samples, status over time
THRESHOLD_KINDS = ("threshold", "her2_ctc", "phenotype_score", "risk_concordance")
CTC_MARKERS = ("ctc_count", "ctc_per_7_5ml")
# The CTC count itself as the exposure: categories or a spline of log1p(CTC per 7.5 ml); how
# it is cut and smoothed is the section of the count-response step (``COUNT_STEP``).
COUNT_KINDS = ("count_categories", "continuous")
COUNT_STEP = "count_response"


@dataclass(frozen=True, slots=True)
class ExposureSpec:
    """The marker exposure of the analysis, derived into a column named ``name``."""

    name: str
    kind: ExposureKind = "threshold"
    marker: str = "ctc_count"
    threshold: float = 1.0
    per_7_5ml: bool = True
    formula: str = ""  # phenotype_score: an expression on patient columns
    expr: str = ""  # expression: a logical (or 0/1) expression on patient columns
    follow_up_window: tuple[float, float] = (22.0, 36.0)  # change_category: days
    levels: tuple[str, ...] = ()  # categorical exposures: level order, first = reference


@dataclass(frozen=True, slots=True)
class CovariateSpec:
    """A covariate: a column of the analysis dataset, or derived from an expression."""

    name: str
    categorical: bool = False
    reference: str | None = None
    expr: str = ""  # derived covariate: computed on the cohort before the models

    @property
    def derived(self) -> bool:
        return bool(self.expr)


def exposure_reference(exposure: ExposureSpec) -> str:
    """Reference level of a categorical exposure: the config's first level, else the lowest.

    Examples
    --------
    >>> exposure_reference(ExposureSpec("tCTC", kind="trajectory_group"))
    'undetectable'
    """
    if exposure.levels:
        return exposure.levels[0]
    return {"trajectory_group": "undetectable", "change_category": "CTC-/CTC-"}.get(
        exposure.kind, ""
    )


def ctc_per_7_5ml(patients: pd.DataFrame) -> pd.Series:
    """CTC count normalised to 7.5 ml of blood (the derived field where present)."""
    if "ctc_per_7_5ml" in patients.columns and patients["ctc_per_7_5ml"].notna().any():
        return patients["ctc_per_7_5ml"].astype(float)
    volume = patients.get(
        "ctc_blood_volume_ml", pd.Series(REFERENCE_VOLUME_ML, index=patients.index)
    )
    return patients["ctc_count"].astype(float) * REFERENCE_VOLUME_ML / volume.astype(float)


def _at_least(values: pd.Series, threshold: float) -> pd.Series:
    out = (values >= threshold).astype(float)
    return out.where(values.notna())


def evaluate_expression(patients: pd.DataFrame, text: str, *, where: str = "") -> pd.Series:
    """Evaluate an expression of the config on the patients (one value per row).

    Raises :class:`ConfigError` when the expression does not compile or names a column the
    patients do not have.
    """
    from harmonization.expressions import compile_expression

    try:
        expression = compile_expression(text, allowed_names=list(patients.columns), where=where)
        values = expression.evaluate(patients)
    except ExpressionError as exc:
        raise ConfigError(str(exc)) from None
    return pd.Series(values, index=patients.index)


def as_indicator(values: pd.Series, *, what: str) -> pd.Series:
    """A logical (or 0/1) result as 0/1 floats, missing kept; anything else is a ConfigError."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype("Float64").astype(float)
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.astype(float)
        odd = numbers[numbers.notna() & ~numbers.isin([0.0, 1.0])]
        if len(odd) == 0:
            return numbers
        example = odd.iloc[0]
    else:
        present = values.dropna()
        if len(present) == 0:
            return pd.Series(np.nan, index=values.index, dtype=float)
        example = present.iloc[0]
    raise ConfigError(
        f"{what} must be true/false (or 0/1); it gives values such as {example!r}. Compare it "
        "with something, e.g. 'pgr_fmol >= 10'."
    )


def derive_exposure(
    patients: pd.DataFrame, spec: ExposureSpec, *, threshold: float | None = None
) -> pd.Series:
    """The exposure column for the patients (NaN where it cannot be determined).

    Parameters
    ----------
    patients : DataFrame
        The analysis dataset's patients.
    spec : ExposureSpec
        From the analysis config.
    threshold : float, optional
        Override the config's threshold (sensitivity analyses of other cut-offs).

    Returns
    -------
    Series
        0/1 floats for binary exposures, text levels for ``risk_concordance``.

    Raises
    ------
    ConfigError
        The marker is not in the dataset, an expression cannot be evaluated, or an
        ``expression`` exposure does not give true/false.

    Examples
    --------
    >>> spec = ExposureSpec(name="ctc_positive", marker="ctc_count", threshold=5)
    >>> derive_exposure(pd.DataFrame({"ctc_count": [0, 10], "ctc_blood_volume_ml": [7.5, 15]}), spec).tolist()
    [0.0, 1.0]
    """
    cut = spec.threshold if threshold is None else threshold
    if spec.kind == "threshold":
        if spec.marker not in patients.columns and spec.marker != "ctc_per_7_5ml":
            raise ConfigError(f"exposure marker {spec.marker!r} is not in the analysis dataset.")
        if spec.marker in ("ctc_count", "ctc_per_7_5ml") and spec.per_7_5ml:
            values = ctc_per_7_5ml(patients)
        else:
            values = pd.to_numeric(patients[spec.marker], errors="coerce").astype(float)
        return _at_least(values, cut).rename(spec.name)
    if spec.kind == "expression":
        values = evaluate_expression(patients, spec.expr)
        return as_indicator(values, what=f"exposure {spec.name!r} ({spec.expr!r})").rename(
            spec.name
        )
    if spec.kind == "her2_ctc":
        return _at_least(patients["ctc_her2_positive_count"].astype(float), cut).rename(spec.name)
    if spec.kind == "phenotype_score":
        score = evaluate_expression(patients, spec.formula)
        if not pd.api.types.is_numeric_dtype(score) or pd.api.types.is_bool_dtype(score):
            raise ConfigError(
                f"exposure formula {spec.formula!r} must give numbers (a score); got values of "
                f"type {score.dtype}."
            )
        return _at_least(score.astype(float), cut).rename(spec.name)
    if spec.kind == "risk_concordance":
        ctc_high = _at_least(ctc_per_7_5ml(patients), cut)
        clinical = patients["clinical_risk"]
        ctc_level = pd.Series(np.where(ctc_high == 1, "high", "low"), index=patients.index)
        label = clinical.astype(str).str.cat(ctc_level.astype(str), sep="_")
        return label.where(clinical.notna() & ctc_high.notna()).rename(spec.name)
    if spec.kind in COUNT_KINDS:
        raise ConfigError(
            f"exposure kind {spec.kind!r} is derived by the cohort step with the categories and "
            f"spline of models.{COUNT_STEP} (count_exposure_columns), not here."
        )
    raise ConfigError(
        f"exposure kind {spec.kind!r} is derived from serial samples by the cohort step, not here."
    )


def serial_status(counts: pd.Series, volumes: pd.Series, threshold: float) -> pd.Series:
    """CTC status of serial samples: 1 where the count per 7.5 ml (count x 7.5 / volume, 7.5 ml
    where the volume is missing) is >= ``threshold``, 0 below, missing without a count.

    Examples
    --------
    >>> serial_status(pd.Series([4, 8, None]), pd.Series([7.5, 15.0, 7.5]), 5).tolist()
    [0.0, 0.0, nan]
    """
    per_75 = (
        pd.to_numeric(counts, errors="coerce").astype(float)
        * REFERENCE_VOLUME_ML
        / pd.to_numeric(volumes, errors="coerce").astype(float).fillna(REFERENCE_VOLUME_ML)
    )
    return _at_least(per_75, threshold)


def derive_covariates(
    patients: pd.DataFrame, covariates: Sequence[CovariateSpec], *, where: Sequence[str] = ()
) -> pd.DataFrame:
    """The patients with each derived covariate (``expr``) computed into its column, in order.

    A logical result becomes 0/1 floats, a number stays a float, missing stays missing; a
    text result is kept as text and must be declared categorical. Later covariates may use
    earlier ones.

    Parameters
    ----------
    patients : DataFrame
        The cohort (after the cohort rules), with the fields as stored (grade as a number).
    covariates : sequence of CovariateSpec
        The config's covariates; those without ``expr`` are left as they are.
    where : sequence of str
        Optional ``"config.yaml line 12"`` per covariate, for error messages.

    Returns
    -------
    DataFrame
        A copy with the derived columns added.

    Raises
    ------
    ConfigError
        An expression cannot be evaluated, gives dates, or gives text without
        ``categorical: true``.

    Examples
    --------
    >>> cohort = pd.DataFrame({"positive_nodes": [0, 3, None], "grade": [3, 2, 3]})
    >>> specs = [CovariateSpec("node_positive", expr="positive_nodes > 0"),
    ...          CovariateSpec("grade3", expr="grade == 3")]
    >>> derive_covariates(cohort, specs)[["node_positive", "grade3"]].to_numpy().tolist()
    [[0.0, 1.0], [1.0, 0.0], [nan, 1.0]]
    """
    out = patients.copy()
    for i, cov in enumerate(covariates):
        if not cov.expr:
            continue
        at = where[i] if i < len(where) else ""
        values = evaluate_expression(out, cov.expr, where=at)
        prefix = f"{at}: " if at else ""
        if pd.api.types.is_bool_dtype(values):
            column = values.astype("Float64").astype(float)
        elif pd.api.types.is_datetime64_any_dtype(values):
            raise ConfigError(
                f"{prefix}derived covariate {cov.name!r} ({cov.expr!r}) gives dates; a "
                "covariate must be a number, true/false or text levels."
            )
        elif pd.api.types.is_numeric_dtype(values):
            column = values.astype(float)
        else:
            if not cov.categorical:
                example = values.dropna().iloc[0] if values.notna().any() else None
                raise ConfigError(
                    f"{prefix}derived covariate {cov.name!r} ({cov.expr!r}) gives text (e.g. "
                    f"{example!r}); declare it 'categorical: true' with a 'reference' level."
                )
            column = values.astype(object).where(values.notna(), None)
        out[cov.name] = column
    return out


@dataclass(frozen=True, slots=True)
class CountScale:
    """How the CTC count (per 7.5 ml) becomes an exposure: its categories and its spline.

    ``breaks`` are the upper ends of right-closed categories (R's ``cut(count, c(-Inf,
    breaks, Inf))``: 0, 1, 2, 4 give 0, 1, 2, 3-4, >= 5), ``labels`` their names (default
    from the breaks); the spline of ``log1p(count)`` has ``df`` columns with interior knots
    at quantiles of the non-zero counts (``knots_at = "nonzero"``) or of all counts, or at
    ``knots`` (counts per 7.5 ml). ``df = 1`` is the linear term ``log1p(count)``.
    """

    breaks: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
    labels: tuple[str, ...] = ()
    df: int = 3
    knots: tuple[float, ...] = ()
    knots_at: Literal["nonzero", "all"] = "nonzero"

    @property
    def category_labels(self) -> tuple[str, ...]:
        from pooled.models.count_response import count_category_labels

        return self.labels or count_category_labels(self.breaks)

    @property
    def spline_df(self) -> int:
        return len(self.knots) + 1 if self.knots else self.df


def count_exposure_terms(
    exposure: ExposureSpec, scale: CountScale
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The columns by which a count exposure enters a Cox model, and which are categorical.

    ``count_categories``: the exposure's column of category labels (reference: the first
    category). ``continuous``: ``<name>_ns1 .. <name>_ns<df>`` (the spline of log1p(count);
    ``<name>_log1p`` when ``df = 1``), built by :func:`count_exposure_columns`.

    Examples
    --------
    >>> count_exposure_terms(ExposureSpec("ctc", kind="continuous"), CountScale(df=3))
    (('ctc_ns1', 'ctc_ns2', 'ctc_ns3'), ())
    >>> count_exposure_terms(ExposureSpec("ctc", kind="count_categories"), CountScale())
    (('ctc',), (('ctc', '0'),))
    """
    name = exposure.name
    if exposure.kind == "count_categories":
        return (name,), ((name, scale.category_labels[0]),)
    if scale.spline_df == 1:
        return (f"{name}_log1p",), ()
    return tuple(f"{name}_ns{j + 1}" for j in range(scale.spline_df)), ()


def count_spline(patients: pd.DataFrame, scale: CountScale) -> NaturalSplineBasis:
    """The natural spline basis of log1p(CTC per 7.5 ml) on these patients (their counts
    place the knots): a :class:`pooled.models.splines.NaturalSplineBasis`."""
    from pooled.models.count_response import count_spline_basis

    counts = ctc_per_7_5ml(patients).dropna()
    return count_spline_basis(
        counts.to_numpy(dtype=float),
        df=scale.spline_df,
        knots=scale.knots or None,
        knots_at=scale.knots_at,
    )


def count_exposure_columns(
    patients: pd.DataFrame, exposure: ExposureSpec, scale: CountScale, *, spline: bool = True
) -> pd.DataFrame:
    """The patients with a count exposure's columns: ``<name>`` the count category (the
    exposure as Kaplan-Meier curves and tables show it, for both kinds) and, for
    ``continuous`` (with ``spline``), ``<name>_log1p`` and the spline columns of
    :func:`count_exposure_terms`, the basis placed on these patients' counts.

    Examples
    --------
    >>> cohort = pd.DataFrame({"ctc_count": [0, 1, 3, 8, 0, 30.0], "ctc_blood_volume_ml": 7.5})
    >>> count_exposure_columns(cohort, ExposureSpec("ctc", kind="count_categories"),
    ...                        CountScale())["ctc"].tolist()
    ['0', '1', '3-4', '>=5', '0', '>=5']
    """
    from pooled.models.count_response import count_categories

    out = patients.copy()
    counts = ctc_per_7_5ml(out)
    name = exposure.name
    out[name] = count_categories(counts, scale.breaks, scale.labels)
    if exposure.kind != "continuous" or not spline:
        return out
    out[f"{name}_log1p"] = np.log1p(counts.to_numpy(dtype=float))
    if scale.spline_df > 1:
        basis = count_spline(out, scale)
        terms, _ = count_exposure_terms(exposure, scale)
        values = basis.evaluate(out[f"{name}_log1p"].to_numpy(dtype=float))
        for j, term in enumerate(terms):
            out[term] = values[:, j]
    return out

"""Design matrices built R-style from a DataFrame, with complete-case bookkeeping.

Numeric covariates enter as they are; categorical covariates become treatment dummies
against a chosen reference level, named like R (``subtypeluminal_b``); interactions ``a:b``
are named and ordered like R's ``model.matrix`` for ``a * b + c``: main effects in the
order given, then the interaction columns (the first factor varying fastest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from pooled.errors import ConfigError, DataError

__all__ = ["Design", "DesignSpec", "build_design", "build_spec_design", "categorical_levels"]


class DesignSpec(Protocol):
    """What :func:`build_spec_design` reads from a model spec (e.g. ``CoxSpec``)."""

    @property
    def covariates(self) -> tuple[str, ...]: ...

    @property
    def categorical(self) -> tuple[tuple[str, str], ...]: ...

    @property
    def interactions(self) -> tuple[tuple[str, str], ...]: ...

    @property
    def strata(self) -> tuple[str, ...]: ...

    @property
    def cluster(self) -> str | None: ...

    @property
    def required_columns(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Design:
    """A design matrix with the rows it kept and the patients it dropped.

    Attributes
    ----------
    matrix : ndarray, shape (n_kept, p)
        Float64 model matrix, no intercept.
    term_names : tuple of str
        Column names, R-style (``age``, ``subtypeluminal_b``, ``ctc_positive:subtypeher2_positive``).
    term_sources : tuple of str
        For each column, the covariate or interaction it comes from (``subtype``,
        ``ctc_positive:subtype``); used to drop a whole term.
    rows : ndarray of int
        Positions (``iloc``) of the kept rows in the input data.
    dropped : DataFrame
        Complete-case losses: columns ``centre, reason, n_dropped`` (``reason`` names the
        missing columns, e.g. ``"missing: age"``); empty when nobody was dropped.
    levels : tuple of (column, levels)
        Levels of each categorical covariate, reference level first.
    n_input : int
        Number of rows handed in.
    """

    matrix: np.ndarray
    term_names: tuple[str, ...]
    term_sources: tuple[str, ...]
    rows: np.ndarray
    dropped: pd.DataFrame
    levels: tuple[tuple[str, tuple[str, ...]], ...]
    n_input: int

    @property
    def n(self) -> int:
        """Number of rows kept."""
        return int(self.matrix.shape[0])

    def kept(self, data: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``data`` (the frame the design was built from) that the design kept;
        ``data`` itself when nobody was dropped (read it, do not modify it)."""
        return _take_rows(data, self.rows)

    def columns_of(self, source: str) -> tuple[int, ...]:
        """Column positions belonging to covariate or interaction ``source``."""
        return tuple(i for i, s in enumerate(self.term_sources) if s == source)


def categorical_levels(values: pd.Series, reference: str, column: str) -> tuple[str, ...]:
    """Levels of a categorical column, reference first, the rest in R's order.

    R's order is the order of a pandas ``Categorical``'s categories when the column is one,
    and otherwise the sorted distinct values (what ``factor()`` does). Levels absent from
    ``values`` are dropped (``droplevels``).
    """
    present = values.dropna()
    if isinstance(values.dtype, pd.CategoricalDtype):
        seen = set(present.astype(str).unique())
        ordered = [str(c) for c in values.cat.categories if str(c) in seen]
    else:
        ordered = sorted(present.astype(str).unique())
    if str(reference) not in ordered:
        raise DataError(
            f"Categorical covariate '{column}': reference level '{reference}' expected among "
            f"the analysed patients; found levels {ordered}. Choose one of these as reference."
        )
    return (str(reference),) + tuple(v for v in ordered if v != str(reference))


def _take_rows(data: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """``data.iloc[rows]``, without the copy when ``rows`` are all rows in order."""
    return data if rows.size == len(data) else data.iloc[rows]


def _missing(column: pd.Series | pd.DataFrame) -> np.ndarray:
    """Missing values of a column (of any of its copies, when the label is duplicated)."""
    dtype = column.dtype if isinstance(column, pd.Series) else None
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
        values = column.to_numpy()  # numpy floats, integers, booleans: only NaN is missing
        if dtype.kind == "f":
            return np.asarray(np.isnan(values))
        return np.zeros(values.size, bool)
    m = np.asarray(column.isna().to_numpy(), dtype=bool)
    return np.asarray(m.any(axis=1)) if m.ndim == 2 else m


def _missing_reason(missing: pd.DataFrame) -> pd.Series:
    columns = list(missing.columns)
    labels = np.array(columns, dtype=object)

    def label(row: np.ndarray) -> str:
        return "missing: " + ", ".join(labels[row])

    values = missing.to_numpy()
    return pd.Series([label(r) for r in values], index=missing.index, dtype=object)


def build_design(
    data: pd.DataFrame,
    covariates: Sequence[str],
    *,
    categorical: Sequence[tuple[str, str]] = (),
    interactions: Sequence[tuple[str, str]] = (),
    required: Sequence[str] = (),
    centre: str | None = "centre",
    missing: Mapping[str, np.ndarray] | None = None,
) -> Design:
    """Build an R-style design matrix from ``data`` on complete cases.

    Parameters
    ----------
    data : DataFrame
        One row per patient.
    covariates : sequence of str
        Main effects in formula order.
    categorical : sequence of (column, reference level)
        Which covariates are categorical, each with its reference level.
    interactions : sequence of (str, str)
        Pairwise interactions; both members must be among ``covariates``.
    required : sequence of str
        Further columns that must be present for a row to be kept (time, event, strata).
    centre : str or None
        Column used to count dropped patients per centre (``None``: one row, ``centre=""``).
    missing : mapping of str to bool array, optional
        Missing values of some columns, already known to the caller (``isna``, one per row
        of ``data``); the other columns are checked here.

    Returns
    -------
    Design

    Raises
    ------
    ConfigError
        A named column is absent, or an interaction names a covariate not in the model.
    DataError
        A non-numeric covariate is not declared categorical, no row is complete, or a column
        is constant among the kept rows.

    References
    ----------
    .. [1] Chambers JM, Hastie TJ. Statistical Models in S. Wadsworth; 1992. Chapter 2
       (model formulae, treatment contrasts).

    Examples
    --------
    >>> df = pd.DataFrame({"x": [1.0, 2.0, None, 4.0], "g": ["a", "b", "a", "c"],
    ...                    "centre": ["A", "A", "B", "B"]})
    >>> d = build_design(df, ["x", "g"], categorical=[("g", "a")], interactions=[("x", "g")])
    >>> d.term_names
    ('x', 'gb', 'gc', 'x:gb', 'x:gc')
    """
    covariates = tuple(covariates)
    cat_ref = dict(categorical)
    for column in cat_ref:
        if column not in covariates:
            raise ConfigError(
                f"Categorical column '{column}' is not among the covariates {list(covariates)}; "
                "add it to the covariates or remove it from `categorical`."
            )
    for a, b in interactions:
        for member in (a, b):
            if member not in covariates:
                raise ConfigError(
                    f"Interaction '{a}:{b}': '{member}' expected among the main effects "
                    f"{list(covariates)}; add it to the covariates (as R's `a * b` does)."
                )
    if len(set(covariates)) != len(covariates):
        raise ConfigError(f"Covariates must be distinct; got {list(covariates)}.")
    used = list(dict.fromkeys(list(covariates) + [c for c in required if c]))
    absent = [c for c in used if c not in data.columns]
    if centre is not None and centre not in data.columns:
        absent.append(centre)
    if absent:
        raise ConfigError(
            f"Columns {absent} expected in the data; found columns {list(data.columns)}. "
            "Check the spelling in the analysis spec."
        )

    # column by column: no copy of the used columns when nothing is missing
    known = missing or {}
    missing_by_column = {c: known[c] if c in known else _missing(data[c]) for c in used}
    dropped_mask = np.zeros(len(data), dtype=bool)
    for m in missing_by_column.values():
        dropped_mask |= m
    rows = np.flatnonzero(~dropped_mask)
    if dropped_mask.any():
        missing_rows = pd.DataFrame(
            {c: m[dropped_mask] for c, m in missing_by_column.items()},
            index=data.index[dropped_mask],
        )
        reasons = _missing_reason(missing_rows)
        centres = (
            data.loc[dropped_mask, centre].astype(str)
            if centre is not None
            else pd.Series("", index=reasons.index)
        )
        dropped = (
            pd.DataFrame({"centre": centres.to_numpy(), "reason": reasons.to_numpy()})
            .groupby(["centre", "reason"], sort=True)
            .size()
            .rename("n_dropped")
            .reset_index()
        )
    else:
        dropped = pd.DataFrame(
            {
                "centre": np.empty(0, dtype=object),
                "reason": np.empty(0, dtype=object),
                "n_dropped": np.empty(0, dtype=np.int64),
            }
        )
    if rows.size == 0:
        raise DataError(
            f"No complete rows: every one of {len(data)} patients misses one of {used}. "
            "Check the columns or use multiple imputation (missing='mice')."
        )
    kept = _take_rows(data, rows)

    blocks: dict[str, tuple[list[str], np.ndarray]] = {}
    levels: list[tuple[str, tuple[str, ...]]] = []
    for column in covariates:
        series = kept[column]
        if column in cat_ref:
            lv = categorical_levels(series, cat_ref[column], column)
            levels.append((column, lv))
            as_text = series.astype(str).to_numpy()
            if len(lv) < 2:
                raise DataError(
                    f"Categorical covariate '{column}' has a single level {lv[0]!r} among the "
                    f"{len(kept)} analysed patients; it has no effect to estimate. Remove it."
                )
            dummy_names = [f"{column}{level}" for level in lv[1:]]
            mat = np.column_stack([(as_text == level).astype(np.float64) for level in lv[1:]])
            blocks[column] = (dummy_names, mat)
        else:
            if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
                raise DataError(
                    f"Covariate '{column}' expected numeric; found dtype {series.dtype} "
                    f"(e.g. {series.iloc[0]!r}). Declare it categorical with a reference level, "
                    f"e.g. categorical=(('{column}', '<level>'),)."
                )
            blocks[column] = ([column], series.to_numpy(dtype=np.float64).reshape(-1, 1))

    names: list[str] = []
    sources: list[str] = []
    mats: list[np.ndarray] = []
    for column in covariates:
        cnames, mat = blocks[column]
        names += cnames
        sources += [column] * len(cnames)
        mats.append(mat)
    for a, b in interactions:
        names_a, mat_a = blocks[a]
        names_b, mat_b = blocks[b]
        for jb, nb in enumerate(names_b):
            for ja, na in enumerate(names_a):
                names.append(f"{na}:{nb}")
                sources.append(f"{a}:{b}")
                mats.append((mat_a[:, ja] * mat_b[:, jb]).reshape(-1, 1))
    matrix = np.ascontiguousarray(np.hstack(mats)) if mats else np.empty((len(kept), 0))

    if len(kept) > 1:
        constant = np.flatnonzero(np.all(matrix == matrix[0], axis=0))
        if constant.size:
            which = [names[j] for j in constant]
            raise DataError(
                f"Terms {which} are constant among the {len(kept)} analysed patients "
                f"(value {matrix[0, constant[0]]!r}); a constant covariate has no effect to "
                "estimate. Remove it, or check the coding / the subgroup."
            )
    return Design(
        matrix=matrix,
        term_names=tuple(names),
        term_sources=tuple(sources),
        rows=rows,
        dropped=dropped,
        levels=tuple(levels),
        n_input=len(data),
    )


def _centre_column(data: pd.DataFrame, spec: DesignSpec) -> str | None:
    """The column dropped patients are counted by: ``centre``, else the cluster or stratum."""
    if "centre" in data.columns:
        return "centre"
    if spec.cluster:
        return spec.cluster
    return spec.strata[0] if spec.strata else None


def build_spec_design(data: pd.DataFrame, spec: DesignSpec) -> Design:
    """The complete-case design of a model spec (covariates, categorical levels, interactions).

    Rows need every covariate and the spec's ``required_columns`` (outcome, strata, cluster);
    dropped patients are counted per ``centre`` (or per cluster / first stratum when the data
    have no ``centre`` column). Shared by the Cox fit, its multiple imputation and its
    proportional-hazards test, so all of them analyse the same rows.

    Parameters
    ----------
    data : DataFrame
        One row per patient.
    spec : DesignSpec
        A model spec with ``covariates, categorical, interactions, strata, cluster`` and
        ``required_columns`` (``CoxSpec``).

    Returns
    -------
    Design

    References
    ----------
    .. [1] Chambers JM, Hastie TJ. Statistical Models in S. Wadsworth; 1992. Chapter 2.

    Examples
    --------
    >>> from pooled.models.cox import CoxSpec
    >>> df = pd.DataFrame({"t": [5, 8, 3], "e": [1, 0, 1], "x": [1.0, None, 0.0],
    ...                    "centre": ["A", "A", "B"]})
    >>> build_spec_design(df, CoxSpec(duration="t", event="e", covariates=("x",))).n
    2
    """
    return build_design(
        data,
        spec.covariates,
        categorical=spec.categorical,
        interactions=spec.interactions,
        required=spec.required_columns,
        centre=_centre_column(data, spec),
    )

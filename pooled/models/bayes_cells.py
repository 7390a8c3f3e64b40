"""Collapse patient-level survival data into the cells of a piecewise-exponential model.

The piecewise-exponential (PE) proportional-hazards likelihood of patient ``i`` with exposure
``e_ik`` and event indicator ``d_ik`` in interval ``k`` and linear predictor ``eta_ik`` is

    log L = sum_ik d_ik * eta_ik - e_ik * exp(eta_ik).

When ``eta`` is constant over a set of patient-intervals (a *cell*), the cell's events
``D = sum d`` and person-time ``E = sum e`` are sufficient statistics:
``sum d * eta - e * exp(eta) = D * eta - E * exp(eta)``. A cell here is a combination of
centre x interval x marker x subtype x the values of the discrete covariates, so the model
never expands patients into person-period rows.

A continuous covariate ``x`` (more distinct values than ``max_discrete_levels``) breaks that
constancy. Its event part stays collapsed, because it is linear:
``sum d_ik * x_i * gamma = gamma * sum_i d_i x_i``. Only the person-time part
``sum e_ik * exp(eta_cell + x_i * gamma)`` needs the patient x interval exposures, and only
the rows with positive exposure (the *exposure trick*). Alternatively the covariate can be
categorised into quantile groups (``continuous="categorise"``), which changes the model but
collapses completely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from pooled.errors import ConfigError, DataError


@dataclass(frozen=True, slots=True)
class CellData:
    """Sufficient statistics of the piecewise-exponential likelihood.

    Attributes
    ----------
    cut_points : interior cut points (months); interval ``k`` is ``(cut[k-1], cut[k]]``.
    centres, subtypes : level names in model order (subtype reference first).
    terms : names of the covariate columns of ``cell_x`` / ``patient_x`` (R-style names).
    cell_centre, cell_interval, cell_subtype : integer codes per cell.
    cell_marker : 0/1 marker per cell.
    cell_x : discrete covariate values per cell (``n_cells x n_discrete``), numeric
        covariates centred at their mean.
    events, exposure : events and person-time per cell. With continuous covariates
        ``exposure`` is unused (zeros) and the exposure rows below carry person-time.
    continuous_terms : names of the continuous (exposure-trick) covariates.
    event_x_sum : sum over events of the (centred, standardised) continuous covariates.
    patient_x : centred and standardised continuous covariates per patient
        (``n x n_continuous``).
    row_cell, row_patient, row_exposure : patient x interval rows with positive exposure.
    cell_pattern : the pattern of each cell.
    pattern_centre, pattern_marker, pattern_subtype, pattern_x : the covariate patterns
        (centre x marker x subtype x discrete covariates) observed in the data; a cell is a
        pattern x interval.
    pattern_exposure : person-time per pattern and interval (``n_patterns x n_intervals``),
        zeros included (with continuous covariates it is not sufficient, but it still gives
        the crude rates used to scale the model's parameters).
    patient_pattern : each patient's pattern.
    patient_exposure : person-time per patient and interval (``n x n_intervals``) when there
        are continuous covariates, else an empty ``0 x n_intervals`` array.
    patient_last, patient_partial : each patient's last interval and the person-time in it;
        a patient has the full ``interval_width`` in every earlier interval.
    interval_width : widths of the intervals (the open last one has width 0 here, as no
        patient passes through it).
    covariate_means : the centring constants of the numeric covariates.
    continuous_scales : the standard deviations the continuous covariates are divided by
        (the model's coefficients for them are per standard deviation, which keeps the
        posterior well scaled for NUTS; results report them per unit).
    n, n_events : patients and events analysed; ``centre_n`` etc. per level.
    n_zero_time : patients with a time of exactly 0 (used: an event at time 0 adds its log
        rate and no person-time, as in the patient-level likelihood and in R's ``coxph``).
    """

    cut_points: tuple[float, ...]
    centres: tuple[str, ...]
    subtypes: tuple[str, ...]
    terms: tuple[str, ...]
    continuous_terms: tuple[str, ...]
    cell_centre: np.ndarray
    cell_interval: np.ndarray
    cell_subtype: np.ndarray
    cell_marker: np.ndarray
    cell_x: np.ndarray
    events: np.ndarray
    exposure: np.ndarray
    event_x_sum: np.ndarray
    patient_x: np.ndarray
    row_cell: np.ndarray
    row_patient: np.ndarray
    row_exposure: np.ndarray
    cell_pattern: np.ndarray
    pattern_centre: np.ndarray
    pattern_marker: np.ndarray
    pattern_subtype: np.ndarray
    pattern_x: np.ndarray
    pattern_exposure: np.ndarray
    patient_pattern: np.ndarray
    patient_exposure: np.ndarray
    patient_last: np.ndarray
    patient_partial: np.ndarray
    interval_width: np.ndarray
    covariate_means: tuple[tuple[str, float], ...]
    continuous_scales: tuple[float, ...]
    n: int
    n_events: int
    n_dropped: int
    centre_n: tuple[int, ...]
    centre_events: tuple[int, ...]
    subtype_n: tuple[int, ...]
    subtype_events: tuple[int, ...]
    n_zero_time: int = 0

    @property
    def n_cells(self) -> int:
        return int(self.events.shape[0])

    @property
    def n_intervals(self) -> int:
        return len(self.cut_points) + 1

    @property
    def n_patterns(self) -> int:
        return int(self.pattern_centre.shape[0])


def event_quantile_cuts(time: np.ndarray, event: np.ndarray, n_intervals: int) -> np.ndarray:
    """Interior cut points at the ``1/K, ..., (K-1)/K`` quantiles of the event times.

    Duplicated quantiles (tied event times) are merged, so fewer than ``K`` intervals may
    result. The last interval is open to the right.
    """
    if n_intervals < 1:
        raise ConfigError(f"n_intervals must be >= 1; got {n_intervals}.")
    times = np.asarray(time, dtype=float)[np.asarray(event, dtype=bool)]
    if times.size == 0:
        raise DataError("No events in the data: the piecewise-exponential model needs events.")
    probs = np.arange(1, n_intervals) / n_intervals
    cuts = np.unique(np.quantile(times, probs)) if probs.size else np.array([])
    return cuts[(cuts > 0) & (cuts < times.max())]


def interval_exposure(time: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Person-time per patient and interval, and each patient's last interval.

    Intervals are ``(0, c1], (c1, c2], ..., (c_{K-1}, inf)``: a patient whose time falls
    exactly on a cut point has its event in the interval that ends there.
    """
    edges = np.concatenate([[0.0], cuts, [np.inf]])
    lower, upper = edges[:-1], edges[1:]
    exposure = np.clip(np.minimum(time[:, None], upper[None, :]) - lower[None, :], 0.0, None)
    last = np.searchsorted(cuts, time, side="left")
    return exposure, last


def _categorise(values: pd.Series, n_groups: int) -> pd.Series:
    codes = pd.qcut(values, q=n_groups, labels=False, duplicates="drop")
    return pd.Series([f"q{int(c) + 1}" for c in codes], index=values.index)


def collapse_cells(
    data: pd.DataFrame,
    *,
    duration: str,
    event: str,
    marker: str,
    centre: str,
    subtype: str | None,
    subtype_levels: Sequence[str],
    covariates: Sequence[str],
    categorical_reference: Sequence[tuple[str, str]] = (),
    cut_points: Sequence[float] | None = None,
    n_intervals: int = 10,
    continuous: Literal["exposure", "categorise"] = "exposure",
    max_discrete_levels: int = 10,
    n_categories: int = 4,
) -> CellData:
    """Collapse a patient-level frame into piecewise-exponential cells (see module docstring).

    Rows with a missing value in any used column are dropped (complete-case analysis, as in
    R's ``coxph``); their count is kept in ``n_dropped``.
    """
    columns = [duration, event, marker, centre, *covariates]
    if subtype is not None:
        columns.append(subtype)
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise DataError(
            f"Columns {missing} are not in the data (found {list(data.columns)}). "
            "Name the columns of the analysis dataset in BayesSpec."
        )
    frame = data[list(dict.fromkeys(columns))].dropna()
    n_dropped = len(data) - len(frame)
    if frame.empty:
        raise DataError("No complete rows left after dropping missing values.")
    time = frame[duration].to_numpy(dtype=float)
    status = frame[event].to_numpy()
    if not np.isin(status, [0, 1]).all():
        raise DataError(f"Column '{event}' must be 0/1; found {sorted(set(status))[:5]}.")
    status = status.astype(int)
    if (time < 0).any():
        raise DataError(
            f"Column '{duration}' must be >= 0; found {int((time < 0).sum())} negative values."
        )
    marker_values = frame[marker].to_numpy()
    if not np.isin(marker_values, [0, 1]).all():
        raise DataError(f"Column '{marker}' must be 0/1; found {sorted(set(marker_values))[:5]}.")
    marker_values = marker_values.astype(int)

    centre_codes, centre_levels = pd.factorize(frame[centre].astype(str), sort=True)
    if subtype is not None:
        observed = set(frame[subtype].astype(str))
        unknown = sorted(observed - set(subtype_levels))
        if unknown:
            raise DataError(
                f"Column '{subtype}' has levels {unknown} not in subtype_levels "
                f"{list(subtype_levels)}; recode them or list them in BayesSpec.subtype_levels."
            )
        if subtype_levels[0] not in observed:
            raise DataError(
                f"The reference subtype '{subtype_levels[0]}' has no patients; put an observed "
                "level first in BayesSpec.subtype_levels."
            )
        subtypes = tuple(level for level in subtype_levels if level in observed)
        subtype_codes = pd.Categorical(
            frame[subtype].astype(str), categories=list(subtypes)
        ).codes.astype(int)
    else:
        subtype_codes = np.zeros(len(frame), dtype=int)
        subtypes = ("all",)

    if cut_points is None:
        cuts = event_quantile_cuts(time, status, n_intervals)
    else:
        cuts = np.unique(np.asarray(cut_points, dtype=float))
        if (cuts <= 0).any():
            raise ConfigError(f"cut_points must be > 0; got {list(cut_points)}.")
    exposure, last = interval_exposure(time, cuts)
    n_int = cuts.size + 1

    # Design: discrete covariate columns (collapsed) and continuous ones (exposure trick).
    references = dict(categorical_reference)
    discrete_cols: list[np.ndarray] = []
    discrete_names: list[str] = []
    cont_cols: list[np.ndarray] = []
    cont_names: list[str] = []
    means: list[tuple[str, float]] = []
    scales: list[float] = []
    for name in covariates:
        series = frame[name]
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        if numeric and series.nunique() > max_discrete_levels and continuous == "categorise":
            series = _categorise(series, n_categories)
            numeric = False
        if numeric:
            values = series.to_numpy(dtype=float)
            mean = float(values.mean())
            means.append((name, mean))
            if series.nunique() > max_discrete_levels:
                scale = float(values.std()) or 1.0
                cont_cols.append((values - mean) / scale)
                cont_names.append(name)
                scales.append(scale)
            else:
                discrete_cols.append(values - mean)
                discrete_names.append(name)
            continue
        text = series.astype(str)
        levels = sorted(text.unique())
        ref = references.get(name, levels[0])
        if ref not in levels:
            raise ConfigError(
                f"Reference level '{ref}' of '{name}' is not among its levels {levels}."
            )
        for level in levels:
            if level != ref:
                discrete_cols.append((text == level).to_numpy(dtype=float))
                discrete_names.append(f"{name}{level}")

    n = len(frame)
    x_disc = np.column_stack(discrete_cols) if discrete_cols else np.zeros((n, 0))
    x_cont = np.column_stack(cont_cols) if cont_cols else np.zeros((n, 0))

    # Patient-level pattern (everything except interval), then cells = pattern x interval.
    pattern_frame = pd.DataFrame(
        {"centre": centre_codes, "marker": marker_values, "subtype": subtype_codes}
    )
    for j in range(x_disc.shape[1]):
        pattern_frame[f"x{j}"] = x_disc[:, j]
    pattern_codes, pattern_index = pd.factorize(pd.MultiIndex.from_frame(pattern_frame), sort=True)
    patterns = pattern_index.to_frame(index=False).to_numpy(dtype=float)
    n_patterns = patterns.shape[0]

    cell_id_all = pattern_codes[:, None] * n_int + np.arange(n_int)[None, :]
    exposure_sum = np.bincount(
        cell_id_all.ravel(), weights=exposure.ravel(), minlength=n_patterns * n_int
    )
    event_cell = pattern_codes * n_int + last
    event_sum = np.bincount(event_cell, weights=status, minlength=n_patterns * n_int)
    # an event at time 0 has no person-time but still counts (d log rate, as in the
    # patient-level likelihood), so its cell is kept
    keep = (exposure_sum > 0) | (event_sum > 0)
    new_id = np.full(n_patterns * n_int, -1, dtype=int)
    new_id[keep] = np.arange(int(keep.sum()))
    kept = np.flatnonzero(keep)
    pattern_of_cell = kept // n_int

    rows_p, rows_k = np.nonzero(exposure > 0)
    if cont_names:
        row_cell: np.ndarray = new_id[pattern_codes[rows_p] * n_int + rows_k]
        row_patient: np.ndarray = rows_p.astype(np.int64)
        row_exposure = exposure[rows_p, rows_k]
        cell_exposure: np.ndarray = np.zeros(kept.size)
    else:
        row_cell = np.zeros(0, dtype=int)
        row_patient = np.zeros(0, dtype=np.int64)
        row_exposure = np.zeros(0)
        cell_exposure = exposure_sum[keep]

    centre_n = np.bincount(centre_codes, minlength=len(centre_levels))
    centre_events = np.bincount(centre_codes, weights=status, minlength=len(centre_levels))
    subtype_n = np.bincount(subtype_codes, minlength=len(subtypes))
    subtype_events = np.bincount(subtype_codes, weights=status, minlength=len(subtypes))
    return CellData(
        cut_points=tuple(float(c) for c in cuts),
        centres=tuple(str(c) for c in centre_levels),
        subtypes=subtypes,
        terms=tuple(discrete_names),
        continuous_terms=tuple(cont_names),
        cell_centre=patterns[pattern_of_cell, 0].astype(int),
        cell_interval=(kept % n_int).astype(int),
        cell_subtype=patterns[pattern_of_cell, 2].astype(int),
        cell_marker=patterns[pattern_of_cell, 1].astype(float),
        cell_x=patterns[pattern_of_cell, 3:],
        events=event_sum[keep],
        exposure=cell_exposure,
        event_x_sum=(status[:, None] * x_cont).sum(axis=0),
        patient_x=x_cont,
        row_cell=row_cell,
        row_patient=row_patient,
        row_exposure=row_exposure,
        cell_pattern=pattern_of_cell.astype(np.int64),
        pattern_centre=patterns[:, 0].astype(int),
        pattern_marker=patterns[:, 1].astype(float),
        pattern_subtype=patterns[:, 2].astype(int),
        pattern_x=patterns[:, 3:],
        pattern_exposure=exposure_sum.reshape(n_patterns, n_int),
        patient_pattern=pattern_codes.astype(np.int64),
        patient_exposure=exposure if cont_names else np.zeros((0, n_int)),
        patient_last=last.astype(np.int64),
        patient_partial=exposure[np.arange(n), last],
        interval_width=np.diff(np.concatenate([[0.0], cuts, [cuts[-1] if cuts.size else 0.0]])),
        covariate_means=tuple(means),
        continuous_scales=tuple(scales),
        n=n,
        n_events=int(status.sum()),
        n_dropped=int(n_dropped),
        centre_n=tuple(int(v) for v in centre_n),
        centre_events=tuple(int(v) for v in centre_events),
        subtype_n=tuple(int(v) for v in subtype_n),
        subtype_events=tuple(int(v) for v in subtype_events),
        n_zero_time=int((time == 0).sum()),
    )

"""What a centre computes: pure functions of its harmonised data and a request's parameters.

Each function takes the centre's patients (one row per patient, the analysis dataset of its
own store: ``pooled federate export``) or its validation findings, and the request's
parameters (plain JSON), and returns one message of aggregates that has passed
:func:`pooled.federated.disclosure.check_release`. Nothing here knows vantage6: the partial
functions of :mod:`pooled.federated.algorithm` call these on a node and in the in-process mock
alike, and the centre's disclosure policy comes from its own environment
(:meth:`DisclosurePolicy.from_environment`), tightened but never loosened by the request.

Messages and what they hold:

``summary``
    patients and events of the cohort's complete cases, the complete-case losses (a count,
    small-cell suppressed), and the levels of each categorical term present (no counts).
``cox``
    for each coefficient vector asked: the log partial likelihood, score vector and
    information matrix of the centre's strata (:func:`pooled.federated.cox_sums.cox_sums`).
``logrank``
    per exposure group: patients, observed and expected events, and the variance matrix.
``km``
    per exposure group and time bin: patients at risk at the bin's start, events and
    censored in the bin.
``two_stage``
    the centre's own Cox estimate of the exposure's log hazard ratio and its SE, or the
    reason it has none.
``describe``
    per variable and exposure group: counts per level (suppressed) or n, sum and sum of
    squares of a numeric variable.
``validation``
    findings per rule and severity (suppressed).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pooled.federated.cox_sums import cox_sums
from pooled.federated.disclosure import (
    DisclosurePolicy,
    DisclosureRefused,
    check_release,
    require_counts,
    small,
    suppress_cells,
)
from pooled.federated.request import (
    FederatedRequest,
    centre_design,
    complete_rows,
    prepare_cohort_frame,
    present_levels,
)

__all__ = [
    "centre_cox",
    "centre_describe",
    "centre_km",
    "centre_logrank",
    "centre_name",
    "centre_summary",
    "centre_two_stage",
    "centre_validation",
]


def centre_name(data: pd.DataFrame) -> str:
    """The centre's label, from its data's ``centre`` column."""
    if "centre" not in data.columns or data.empty:
        return "unknown"
    names = sorted(data["centre"].dropna().astype(str).unique())
    return "+".join(names) if names else "unknown"


def _policy(request: FederatedRequest) -> DisclosurePolicy:
    return DisclosurePolicy.from_environment().tightened(request.policy)


def _event_times(frame: pd.DataFrame, request: FederatedRequest) -> list[float]:
    """The centre's event times that are not whole numbers (counts may equal whole ones)."""
    if request.duration not in frame.columns:
        return []
    times = frame.loc[frame[request.event] == 1, request.duration].to_numpy(dtype=np.float64)
    return [float(t) for t in np.unique(times) if t != np.floor(t)]


def _release(
    message: dict[str, Any],
    *,
    centre: str,
    request: FederatedRequest,
    method: str,
    frame: pd.DataFrame | None = None,
) -> dict[str, Any]:
    forbidden = {"no_event_times": _event_times(frame, request)} if frame is not None else None
    message = {"centre": centre, "request_id": request.request_id, **message}
    return check_release(
        message, centre=centre, request_id=request.request_id, method=method, forbidden=forbidden
    )


def _floats(values: np.ndarray) -> list[Any]:
    return np.asarray(values, dtype=np.float64).tolist()


# --------------------------------------------------------------------------------------------
# One-stage Cox
# --------------------------------------------------------------------------------------------


def centre_summary(data: pd.DataFrame, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Patients, events and categorical levels of the centre's complete cases.

    Refused (``min_patients``, ``min_events``) when the centre has too few of either.
    """
    request = FederatedRequest.from_dict(parameters["request"])
    centre = centre_name(data)
    policy = _policy(request)
    frame = prepare_cohort_frame(data, request)
    kept = complete_rows(frame, request)
    events = int((kept[request.event] == 1).sum())
    require_counts(policy, centre=centre, patients=len(kept), events=events)
    dropped = len(frame) - len(kept)
    return _release(
        {
            "n": len(kept),
            "events": events,
            "n_dropped": None if small(dropped, policy) else dropped,
            "levels": present_levels(frame, request),
        },
        centre=centre,
        request=request,
        method="summary",
        frame=frame,
    )


def centre_cox(data: pd.DataFrame, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Log partial likelihood, score and information of the centre at each coefficient
    vector asked.

    ``parameters``: ``request`` (a :class:`FederatedRequest` as a dict), ``levels`` (the
    consortium's levels of each categorical term, reference first) and ``evaluations``: a
    list of ``{"beta": [...], "columns": [...] or None}`` (``columns``: the design columns
    used, for the fits without one term behind the per-term likelihood-ratio tests).
    """
    request = FederatedRequest.from_dict(parameters["request"])
    centre = centre_name(data)
    policy = _policy(request)
    frame = prepare_cohort_frame(data, request)
    design = centre_design(frame, request, parameters["levels"])
    events = int(design.event.sum())
    require_counts(policy, centre=centre, patients=design.n, events=events)
    answers = []
    for item in parameters["evaluations"]:
        columns = item.get("columns")
        X = design.matrix if columns is None else design.matrix[:, list(columns)]
        sums = cox_sums(
            X, design.time, design.event, design.strata, np.asarray(item["beta"], dtype=float),
            ties=request.ties,  # type: ignore[arg-type]
        )  # fmt: skip
        answers.append(
            {
                "loglik": sums.loglik,
                "score": _floats(sums.score),
                "information": _floats(sums.information),
            }
        )
    return _release(
        {"n": design.n, "events": events, "terms": list(design.term_names), "evaluations": answers},
        centre=centre,
        request=request,
        method="cox",
        frame=frame,
    )


# --------------------------------------------------------------------------------------------
# Log-rank and Kaplan-Meier
# --------------------------------------------------------------------------------------------


def _group_label(value: Any) -> Any:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    return value.item() if isinstance(value, np.generic) else value


def centre_logrank(data: pd.DataFrame, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Per exposure group: patients, observed and expected events and their variance matrix
    (R's ``survdiff`` pieces), summed over the centre's strata.

    Refused when the centre has too few patients or events, or when an exposure group has
    between 1 and ``min_cell - 1`` patients (``min_cell``).
    """
    from pooled.models.km import logrank_arrays

    request = FederatedRequest.from_dict(parameters["request"])
    centre = centre_name(data)
    policy = _policy(request)
    frame = prepare_cohort_frame(data, request)
    group = request.exposure_spec.name
    strata = list(request.strata)
    frame = frame.dropna(subset=[group, *strata])
    events = int((frame[request.event] == 1).sum())
    require_counts(policy, centre=centre, patients=len(frame), events=events)
    codes, levels = pd.factorize(frame[group], sort=True)
    n = np.bincount(codes, minlength=len(levels))
    for level, count in zip(levels, n, strict=True):
        if small(int(count), policy):
            raise DisclosureRefused(
                "min_cell",
                f"exposure group {group}={_group_label(level)} has fewer than {policy.min_cell} "
                "patients; its observed events would describe them. Leave this centre out of "
                "the log-rank test.",
                centre,
            )
    within = request.within_centre_strata
    if within:
        scodes, slevels = pd.factorize(
            frame[list(within)].astype(str).agg("\x1f".join, axis=1), sort=True
        )
        observed, expected, variance = logrank_arrays(
            frame[request.duration].to_numpy(float), frame[request.event].to_numpy(float),
            codes, len(levels), scodes, len(slevels),
        )  # fmt: skip
    else:
        observed, expected, variance = logrank_arrays(
            frame[request.duration].to_numpy(float),
            frame[request.event].to_numpy(float),
            codes,
            len(levels),
        )
    return _release(
        {
            "groups": [_group_label(v) for v in levels],
            "n": [int(c) for c in n],
            "observed": _floats(observed),
            "expected": _floats(expected),
            "variance": _floats(variance),
        },
        centre=centre,
        request=request,
        method="logrank",
        frame=frame,
    )


def km_edges(width: float, max_time: float) -> np.ndarray:
    """Bin edges ``0, width, 2 width, ...`` up to the first edge at or beyond ``max_time``."""
    if not (width > 0 and np.isfinite(width)):
        from pooled.errors import ConfigError

        raise ConfigError(f"the Kaplan-Meier bin width must be a positive number; got {width!r}.")
    k = int(np.ceil(max_time / width)) if max_time > 0 else 1
    return np.arange(k + 1, dtype=np.float64) * width


def binned_counts(
    time: np.ndarray, event: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At risk at each edge (``time >= edge``), and events and censored in each bin
    ``[edge_k, edge_k+1)``; times beyond the last edge count only as at risk there."""
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.float64) == 1
    at_risk = np.array([(time >= a).sum() for a in edges], dtype=np.int64)
    bins = np.searchsorted(edges, time, side="right") - 1  # bin of each time
    inside = bins < len(edges) - 1
    nb = len(edges) - 1
    events = np.bincount(bins[inside & event], minlength=nb)[:nb]
    censored = np.bincount(bins[inside & ~event], minlength=nb)[:nb]
    return at_risk, events.astype(np.int64), censored.astype(np.int64)


def centre_km(data: pd.DataFrame, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Kaplan-Meier counts of the centre in time bins, per exposure group.

    ``parameters``: ``request``, ``width`` (bin width, in the endpoint's months) and
    ``max_time`` (the last edge; ``None``: the centre's longest follow-up, rounded up to a
    whole bin). Released per group: patients at risk at each edge, events and censored in
    each bin; no time of any patient.

    Refused when the centre has too few patients or events, or when a released count is
    between 1 and ``min_cell - 1`` (``min_cell``; the message names the group and bin and
    suggests a wider bin or an earlier ``max_time``).
    """
    request = FederatedRequest.from_dict(parameters["request"])
    centre = centre_name(data)
    policy = _policy(request)
    frame = prepare_cohort_frame(data, request)
    group = request.exposure_spec.name
    events_total = int((frame[request.event] == 1).sum())
    require_counts(policy, centre=centre, patients=len(frame), events=events_total)
    width = float(parameters["width"])
    max_time = parameters.get("max_time")
    horizon = float(max_time) if max_time is not None else float(frame[request.duration].max())
    edges = km_edges(width, horizon)
    curves = []
    for level, part in frame.groupby(group, sort=True):
        at_risk, ev, cens = binned_counts(
            part[request.duration].to_numpy(float), part[request.event].to_numpy(float), edges
        )
        for what, values, offset in (
            ("at risk", at_risk, 0),
            ("events", ev, 0),
            ("censored", cens, 0),
        ):
            for k, value in enumerate(values):
                if small(int(value), policy):
                    a = edges[k + offset]
                    where = f"at {a:g}" if what == "at risk" else f"in [{a:g}, {edges[k + 1]:g})"
                    raise DisclosureRefused(
                        "min_cell",
                        f"{group}={_group_label(level)}: {what} {where} is a cell under "
                        f"{policy.min_cell}. Ask for wider bins (width > {width:g}) or an "
                        "earlier max_time.",
                        centre,
                    )
        curves.append(
            {
                "group": _group_label(level),
                "at_risk": [int(v) for v in at_risk],
                "events": [int(v) for v in ev],
                "censored": [int(v) for v in cens],
            }
        )
    return _release(
        {"width": width, "n_bins": len(edges) - 1, "curves": curves},
        centre=centre,
        request=request,
        method="km",
        frame=frame,
    )


# --------------------------------------------------------------------------------------------
# Two-stage
# --------------------------------------------------------------------------------------------

_COUNT_IN_TEXT = re.compile(r"\s*\((?:n|events?)\s*=\s*\d+\)")


def _reason_of(error: Exception) -> str:
    """The centre's reason from :func:`fit_two_stage`'s message, without counts."""
    text = str(error)
    found = re.search(r"no centre gives an estimate \((.*)\)\. Check", text, flags=re.S)
    reason = found.group(1) if found else "not estimable in this centre"
    reason = reason.split(": ", 1)[1] if ": " in reason else reason
    return _COUNT_IN_TEXT.sub("", reason)


def centre_two_stage(data: pd.DataFrame, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Stage one of the two-stage analysis: the centre's own Cox model of the exposure.

    The model is the request's terms without interactions and without strata (as ``pooled
    run`` fits stage one, :func:`pooled.models.two_stage.fit_two_stage` on the centre alone).
    Released: patients and events, the exposure's log hazard ratio and its SE (or the reason
    there is none, without counts), the note on covariates constant in the centre, and the
    patients and events per exposure group (small-cell suppressed).
    """
    from pooled.errors import ConvergenceWarning, DataError
    from pooled.models.cox import CoxSpec
    from pooled.models.meta import MetaSpec
    from pooled.models.two_stage import TwoStageSpec, fit_two_stage

    request = FederatedRequest.from_dict(parameters["request"])
    centre = centre_name(data)
    policy = _policy(request)
    frame = prepare_cohort_frame(data, request)
    marker = request.exposure_spec.name
    spec = TwoStageSpec(
        cox=CoxSpec(
            duration=request.duration,
            event=request.event,
            covariates=request.terms,
            categorical=request.categorical,
            strata=(),
            ties=request.ties,  # type: ignore[arg-type]
            term_lr_tests=False,
            concordance=False,
        ),
        marker=marker,
        meta=MetaSpec(method="FE"),
    )
    kept = frame.dropna(subset=[request.duration, request.event, *request.terms])
    events = int((kept[request.event] == 1).sum())
    require_counts(policy, centre=centre, patients=len(kept), events=events)
    row: dict[str, Any] = {"n": len(kept), "events": events, "log_hr": None, "se": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = fit_two_stage(frame, spec)
        rec = result.per_centre.iloc[0]
        row.update(
            log_hr=float(rec["log_hr"]), se=float(rec["se"]), included=True, reason="",
            note=_COUNT_IN_TEXT.sub("", str(rec["note"] or "")),
        )  # fmt: skip
        counts = [rec[c] for c in ("n_marker_positive", "events_marker_positive",
                                   "n_marker_negative", "events_marker_negative")]  # fmt: skip
    except DataError as error:
        row.update(included=False, reason=_reason_of(error), note="")
        counts = [np.nan] * 4
    names = ("n_marker_positive", "events_marker_positive", "n_marker_negative",
             "events_marker_negative")  # fmt: skip
    for name, value in zip(names, counts, strict=True):
        row[name] = None if pd.isna(value) or small(int(value), policy) else int(value)
    return _release(row, centre=centre, request=request, method="two_stage", frame=frame)


# --------------------------------------------------------------------------------------------
# Descriptive tables and the validation summary
# --------------------------------------------------------------------------------------------


def _is_categorical(series: pd.Series, declared: bool) -> bool:
    if declared or not pd.api.types.is_numeric_dtype(series):
        return True
    present = pd.unique(series.dropna())
    return bool(len(present) > 0 and set(np.asarray(present, dtype=float)) <= {0.0, 1.0})


def centre_describe(data: pd.DataFrame, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The centre's part of the characteristics table, by exposure group.

    ``parameters``: ``request`` and optionally ``variables`` (default: the request's terms
    other than the exposure, then the endpoint's event). Per variable and group: for a
    categorical (or 0/1) variable the count of each level and of missing values, small cells
    suppressed (:func:`suppress_cells`); for a numeric variable the number of values, missing
    values, their sum and sum of squares (suppressed when fewer than ``min_patients`` values).
    A group of fewer than ``min_cell`` patients is suppressed as a whole.
    """
    request = FederatedRequest.from_dict(parameters["request"])
    centre = centre_name(data)
    policy = _policy(request)
    frame = prepare_cohort_frame(data, request)
    require_counts(policy, centre=centre, patients=len(frame))
    group = request.exposure_spec.name
    declared = {name for name, _ in request.categorical}
    variables: Sequence[str] = parameters.get("variables") or [
        *[t for t in request.terms if t != group],
        request.event,
    ]
    missing = [v for v in variables if v not in frame.columns]
    if missing:
        from pooled.errors import ConfigError

        raise ConfigError(f"describe: variables {missing} are not in the centre's cohort.")
    groups = []
    for level, part in frame.groupby(group, sort=True):
        entry: dict[str, Any] = {"group": _group_label(level)}
        if small(len(part), policy):
            entry.update(n=None, variables={})
            groups.append(entry)
            continue
        entry["n"] = len(part)
        described: dict[str, Any] = {}
        for name in variables:
            values = part[name]
            if _is_categorical(frame[name], name in declared):
                text = values.dropna().map(lambda v: str(_group_label(v)))
                counts = text.value_counts()
                labels = sorted(counts.index)
                cells = [int(counts[label]) for label in labels] + [int(values.isna().sum())]
                shown = suppress_cells(cells, policy)
                described[name] = {
                    "kind": "categorical",
                    "levels": labels,
                    "counts": shown[:-1],
                    "missing": shown[-1],
                }
            else:
                numbers = values.dropna().to_numpy(dtype=np.float64)
                hide = policy.enabled and len(numbers) < policy.min_patients
                n_missing = int(values.isna().sum())
                described[name] = {
                    "kind": "numeric",
                    "n": None if hide else len(numbers),
                    "missing": None if small(n_missing, policy) else n_missing,
                    "sum": None if hide else float(numbers.sum()),
                    "sum_squares": None if hide else float((numbers * numbers).sum()),
                }
        entry["variables"] = described
        groups.append(entry)
    return _release(
        {"group_by": group, "variables": list(variables), "groups": groups},
        centre=centre,
        request=request,
        method="describe",
        frame=frame,
    )


def centre_validation(findings: pd.DataFrame, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The validation summary of the centre's upload: findings per rule and severity.

    ``findings`` is the centre's table of validation findings (``rule`` and ``severity``
    columns; ``pooled federate export`` writes it from the store). Counts between 1 and
    ``min_cell - 1`` are released as ``None``; no row, value or total is released.
    """
    request_id = str(parameters.get("request_id", ""))
    policy = DisclosurePolicy.from_environment().tightened(parameters.get("policy"))
    for column in ("rule", "severity"):
        if column not in findings.columns:
            from pooled.errors import DataError

            raise DataError(
                f"the validation summary expected the centre's findings (columns rule, "
                f"severity); the data have no {column!r} column. Point the task at the "
                "'findings' database (pooled federate export writes it)."
            )
    centre = (
        centre_name(findings)
        if "centre" in findings.columns
        else str(parameters.get("centre", "unknown"))
    )
    counts = findings.groupby(["rule", "severity"], sort=True).size().reset_index(name="n")
    rows = [
        {
            "rule": str(rule),
            "severity": str(severity),
            "findings": None if small(int(n), policy) else int(n),
        }
        for rule, severity, n in zip(counts["rule"], counts["severity"], counts["n"], strict=True)
    ]
    return check_release(
        {"centre": centre, "request_id": request_id, "rules": rows},
        centre=centre,
        request_id=request_id,
        method="validation",
    )

"""Two-stage IPD meta-analysis: a Cox model within each centre, then random-effects pooling.

Stage one fits the Cox model of :mod:`pooled.models.cox` to each centre's patients on their
own (no strata: the centre is the unit); stage two pools the marker's log hazard ratios with
:func:`pooled.models.meta.fit_meta`. Centres where the marker effect cannot be estimated (no
events at all, no events in one marker group, the marker constant, a failed fit) stay in the
per-centre table with ``included = False`` and the reason, so the forest plot and the report
show every centre.

The interaction is done the two-stage way as well (as Stata's ``ipdmetan`` and Fisher et al.
recommend): the marker x subtype interaction is estimated within each centre and the
within-centre interactions are pooled, which avoids the aggregation (ecological) bias of
comparing marker effects across centres. The one-stage interaction (stratified Cox with
``marker * subtype``) is fitted on the same patients and reported beside it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pooled.errors import ConfigError, ConvergenceWarning, DataError
from pooled.models.cox import CoxResult, CoxSpec, fit_cox, outcome_values
from pooled.models.meta import MetaResult, MetaSpec, fit_meta
from pooled.results import tidy_frame

__all__ = [
    "TwoStageInteractionResult",
    "TwoStageResult",
    "TwoStageSpec",
    "fit_two_stage",
    "fit_two_stage_interaction",
]

_Z975 = float(stats.norm.ppf(0.975))

PER_CENTRE_COLUMNS = (
    "centre",
    "n",
    "events",
    "n_dropped",
    "log_hr",
    "se",
    "hr",
    "ci_lower",
    "ci_upper",
    "included",
    "reason",
    "note",
    "n_marker_positive",
    "events_marker_positive",
    "n_marker_negative",
    "events_marker_negative",
    "weight_percent",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TwoStageSpec:
    """Options of a two-stage IPD meta-analysis.

    Parameters
    ----------
    cox
        The stage-one Cox model. Its strata are applied within each centre, except the
        centre column itself, which is removed (every stage-one model is one centre). A
        ``cluster`` is ignored and per-term LR tests are switched off in stage one.
    marker
        The covariate whose log hazard ratio is pooled (a 0/1 column such as
        ``"ctc_positive"``; a numeric marker works too, without the per-group event check).
    meta
        The stage-two pooling (default REML, no Hartung-Knapp).
    centre
        The column identifying centres.
    """

    cox: CoxSpec
    marker: str = "ctc_positive"
    meta: MetaSpec = field(default_factory=MetaSpec)
    centre: str = "centre"

    def __post_init__(self) -> None:
        if self.marker not in self.cox.covariates:
            raise ConfigError(
                f"TwoStageSpec.marker '{self.marker}' expected among the Cox covariates "
                f"{list(self.cox.covariates)}. Add it to CoxSpec.covariates."
            )
        if any(self.marker in pair for pair in self.cox.interactions):
            raise ConfigError(
                f"TwoStageSpec.cox must not contain an interaction with the marker "
                f"'{self.marker}' (its coefficient would be a subgroup effect); use "
                "fit_two_stage_interaction for the two-stage interaction."
            )
        if self.cox.missing != "complete_case":
            raise ConfigError(
                "TwoStageSpec.cox.missing expected 'complete_case' (each centre is fitted on "
                f"its complete cases); got {self.cox.missing!r}."
            )

    @property
    def stage_one(self) -> CoxSpec:
        """The Cox spec fitted within each centre."""
        return replace(
            self.cox,
            strata=tuple(s for s in self.cox.strata if s != self.centre),
            cluster=None,
            term_lr_tests=False,
        )


@dataclass(frozen=True, slots=True)
class TwoStageResult:
    """Per-centre Cox estimates of the marker and their pooled estimate.

    Attributes
    ----------
    per_centre
        One row per centre (sorted): ``centre, n, events, n_dropped, log_hr, se, hr,
        ci_lower, ci_upper, included, reason, note, n_marker_positive,
        events_marker_positive, n_marker_negative, events_marker_negative,
        weight_percent``. ``n``/``events`` count the complete cases of the centre,
        ``n_dropped`` the patients lost to missing values; ``reason`` says why an excluded
        centre is excluded, ``note`` records covariates dropped within a centre because
        they are constant there (R would report NA for them).
    meta
        The pooled estimate (:class:`~pooled.models.meta.MetaResult`) over included centres.
    spec
        The :class:`TwoStageSpec` used.
    """

    per_centre: pd.DataFrame
    meta: MetaResult
    spec: TwoStageSpec

    @property
    def n_included(self) -> int:
        return int(self.per_centre["included"].sum())

    @property
    def excluded(self) -> pd.DataFrame:
        """The centres left out of the pooling, with their reason."""
        return self.per_centre.loc[~self.per_centre["included"], ["centre", "reason"]]

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per centre (``row_type = "centre"``, excluded centres with
        ``NaN`` estimates and their ``reason``), then the pooled row (``row_type =
        "pooled"``) with the heterogeneity columns of
        :meth:`pooled.models.meta.MetaResult.to_frame`."""
        analysis = self.spec.cox.analysis or "two_stage"
        endpoint = self.spec.cox.endpoint
        rows = _centre_rows(self.per_centre, analysis, endpoint, self.spec.marker)
        pooled = self.meta.to_frame(analysis=analysis, endpoint=endpoint)
        pooled_row = _record(pooled[pooled["row_type"] == "pooled"])
        pooled_row["n"] = int(self.per_centre.loc[self.per_centre["included"], "n"].sum())
        pooled_row["events"] = int(self.per_centre.loc[self.per_centre["included"], "events"].sum())
        pooled_row["model"] = f"two_stage_{self.meta.spec.label}"
        rows.append(pooled_row)
        return tidy_frame(rows)


def _record(frame: pd.DataFrame) -> dict[str, Any]:
    """The first row of ``frame`` as a plain dict."""
    return {str(k): v for k, v in frame.iloc[0].to_dict().items()}


def _centre_rows(
    table: pd.DataFrame, analysis: str, endpoint: str, term: str
) -> list[dict[str, Any]]:
    rows = []
    for i in range(len(table)):
        rec = table.iloc[i]
        rows.append(
            {
                "analysis": analysis,
                "endpoint": endpoint,
                "model": "cox_per_centre",
                "term": term,
                "estimate": rec["log_hr"],
                "std_error": rec["se"],
                "hr": rec["hr"],
                "ci_lower": rec["ci_lower"],
                "ci_upper": rec["ci_upper"],
                "p_value": float(2 * stats.norm.sf(abs(rec["log_hr"] / rec["se"])))
                if rec["included"]
                else np.nan,
                "n": rec["n"],
                "events": rec["events"],
                "row_type": "centre",
                "centre": rec["centre"],
                "included": bool(rec["included"]),
                "reason": rec["reason"],
                # a per-centre model that differs from the configured one says how
                "note": rec.get("note", "") or "",
                "weight_percent": rec["weight_percent"],
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# Stage one helpers
# --------------------------------------------------------------------------------------------


def _required_columns(spec: CoxSpec, extra: tuple[str, ...] = ()) -> list[str]:
    cols = [spec.duration, spec.event, *spec.covariates, *spec.strata, *extra]
    return list(dict.fromkeys(cols))


def _check_columns(data: pd.DataFrame, columns: list[str], centre: str) -> None:
    missing = [c for c in [*columns, centre] if c not in data.columns]
    if missing:
        raise ConfigError(
            f"Two-stage analysis: columns {missing} expected in the data; found "
            f"{list(data.columns)}. Check the CoxSpec and TwoStageSpec.centre."
        )


def _is_binary(values: pd.Series) -> bool:
    present = pd.unique(values.dropna())
    return bool(len(present) > 0 and set(np.asarray(present, dtype=float)) <= {0.0, 1.0})


def _constant_covariates(frame: pd.DataFrame, spec: CoxSpec, keep: str) -> list[str]:
    """Covariates with a single value among these patients (other than ``keep``)."""
    return [c for c in spec.covariates if c != keep and frame[c].nunique(dropna=True) <= 1]


def _without(spec: CoxSpec, columns: list[str]) -> CoxSpec:
    if not columns:
        return spec
    drop = set(columns)
    return replace(
        spec,
        covariates=tuple(c for c in spec.covariates if c not in drop),
        categorical=tuple(pair for pair in spec.categorical if pair[0] not in drop),
        interactions=tuple(
            pair for pair in spec.interactions if pair[0] not in drop and pair[1] not in drop
        ),
    )


def _fit_quietly(frame: pd.DataFrame, spec: CoxSpec) -> tuple[CoxResult | None, str]:
    """Fit one centre; return the result (or None) and a problem description."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            result = fit_cox(frame, spec)
        except DataError as error:
            return None, f"Cox fit failed: {error}"
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    if not result.converged:
        return None, "Cox fit did not converge: " + " ".join(messages)
    return result, " ".join(messages)


def _marker_counts(frame: pd.DataFrame, marker: str, event: str) -> dict[str, float]:
    positive = frame[marker] == 1
    ev = frame[event] == 1
    return {
        "n_marker_positive": int(positive.sum()),
        "events_marker_positive": int((positive & ev).sum()),
        "n_marker_negative": int((~positive).sum()),
        "events_marker_negative": int((~positive & ev).sum()),
    }


def _marker_problem(counts: dict[str, float], marker: str) -> str:
    if counts["n_marker_positive"] == 0:
        return f"no patients with {marker}=1"
    if counts["n_marker_negative"] == 0:
        return f"no patients with {marker}=0"
    if counts["events_marker_positive"] == 0:
        return f"no events among {marker}=1 (n={counts['n_marker_positive']})"
    if counts["events_marker_negative"] == 0:
        return f"no events among {marker}=0 (n={counts['n_marker_negative']})"
    return ""


def fit_two_stage(data: pd.DataFrame, spec: TwoStageSpec) -> TwoStageResult:
    """Two-stage IPD meta-analysis of a marker's hazard ratio across centres.

    Stage one fits ``spec.stage_one`` (the Cox model without the centre strata) to each
    centre's complete cases and takes the marker's log HR and its SE; centres where it cannot
    be estimated are kept in the table with the reason. Stage two pools the included
    centres with :func:`pooled.models.meta.fit_meta` and ``spec.meta``.

    Parameters
    ----------
    data
        One row per patient, with the centre column.
    spec
        Stage-one model, marker and pooling options.

    Returns
    -------
    TwoStageResult

    Raises
    ------
    ConfigError
        If a column named in the spec is absent.
    DataError
        If no centre yields an estimate (the message lists every centre's reason).

    References
    ----------
    .. [1] Simmonds MC, Higgins JPT, Stewart LA, et al. Meta-analysis of individual patient
       data from randomized trials: a review of methods used in practice. Clin Trials
       2005;2:209-17.
    .. [2] Burke DL, Ensor J, Riley RD. Meta-analysis using individual participant data:
       one-stage and two-stage approaches, and why they may differ. Stat Med 2017;36:855-75.
    .. [3] Fisher DJ. Two-stage individual participant data meta-analysis and generalized
       forest plots. Stata J 2015;15:369-96.

    Examples
    --------
    >>> spec = TwoStageSpec(
    ...     cox=CoxSpec(duration="os_months", event="os_event",
    ...                 covariates=("ctc_positive", "age", "node_positive", "grade3")),
    ...     marker="ctc_positive", meta=MetaSpec(method="REML"))
    >>> # res = fit_two_stage(cohort, spec); res.per_centre; res.meta.estimate
    """
    stage_one = spec.stage_one
    columns = _required_columns(stage_one)
    _check_columns(data, columns, spec.centre)
    # bad outcome values are an error of the data, not a reason to leave a centre out
    outcome_values(data.dropna(subset=columns), stage_one.duration, stage_one.event)
    binary = _is_binary(data[spec.marker])
    rows: list[dict[str, Any]] = []
    for centre, group in data.groupby(spec.centre, sort=True):
        complete = group.dropna(subset=columns)
        counts = _marker_counts(complete, spec.marker, stage_one.event) if binary else {}
        row: dict[str, Any] = {
            "centre": centre,
            "n": int(len(complete)),
            "events": int((complete[stage_one.event] == 1).sum()),
            "n_dropped": int(len(group) - len(complete)),
            "log_hr": np.nan,
            "se": np.nan,
            "included": False,
            "reason": "",
            "note": "",
            **counts,
        }
        rows.append(row)
        if row["n"] == 0:
            row["reason"] = "no complete cases"
            continue
        if row["events"] == 0:
            row["reason"] = "no events"
            continue
        if complete[spec.marker].nunique() <= 1:
            value = complete[spec.marker].iloc[0]
            shown = f"{value:g}" if isinstance(value, float | np.floating) else str(value)
            row["reason"] = f"{spec.marker} constant ({shown} for every patient)"
            continue
        if binary:
            problem = _marker_problem(counts, spec.marker)
            if problem:
                row["reason"] = problem
                continue
        constant = _constant_covariates(complete, stage_one, spec.marker)
        centre_spec = _without(stage_one, constant)
        if constant:
            row["note"] = f"constant in this centre, left out: {', '.join(constant)}"
        result, problem = _fit_quietly(complete, centre_spec)
        if result is None:
            row["reason"] = problem
            continue
        j = result.term_names.index(spec.marker)
        se = float(np.sqrt(result.covariance[j, j]))
        if not np.isfinite(se):
            row["reason"] = "standard error of the marker is not finite"
            continue
        if f"'{spec.marker}'" in problem:
            row["reason"] = problem
            continue
        if problem:
            row["note"] = f"{row['note']}; {problem}" if row["note"] else problem
        row.update(log_hr=float(result.coefficients[j]), se=se, included=True)
    table = pd.DataFrame(rows)
    table = _finish_table(table)
    included = table["included"].to_numpy(dtype=bool)
    if not included.any():
        reasons = "; ".join(
            f"{c}: {r}" for c, r in zip(table["centre"], table["reason"], strict=True)
        )
        raise DataError(
            f"Two-stage analysis of '{spec.marker}': no centre gives an estimate ({reasons}). "
            "Check the endpoint and the marker coding, or use the one-stage model."
        )
    meta = fit_meta(
        table.loc[included, "log_hr"].to_numpy(),
        table.loc[included, "se"].to_numpy() ** 2,
        spec.meta,
        labels=list(table.loc[included, "centre"]),
        term=spec.marker,
    )
    weights = dict(zip(meta.per_study["label"], meta.per_study["weight_percent"], strict=True))
    table["weight_percent"] = [weights.get(c, 0.0) for c in table["centre"]]
    table.loc[~table["included"], "weight_percent"] = np.nan
    return TwoStageResult(per_centre=table[list(PER_CENTRE_COLUMNS)], meta=meta, spec=spec)


def _finish_table(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    for column in (
        "n_marker_positive",
        "events_marker_positive",
        "n_marker_negative",
        "events_marker_negative",
    ):
        if column not in table.columns:
            table[column] = np.nan
    table["hr"] = np.exp(table["log_hr"])
    table["ci_lower"] = np.exp(table["log_hr"] - _Z975 * table["se"])
    table["ci_upper"] = np.exp(table["log_hr"] + _Z975 * table["se"])
    table["weight_percent"] = np.nan
    return table


# --------------------------------------------------------------------------------------------
# Two-stage interaction
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TwoStageInteractionResult:
    """Marker x subgroup interaction estimated within centres and pooled, beside the
    one-stage estimate.

    Attributes
    ----------
    per_centre
        One row per centre and interaction term (``marker:by<level>``): ``centre, term,
        level, n, events, n_level, events_level, log_ratio, se, included, reason, note,
        weight_percent``. ``log_ratio`` is the log of the ratio of the marker's hazard
        ratio in ``level`` to that in the reference level, within the centre.
    pooled
        The pooled interaction per term (:class:`~pooled.models.meta.MetaResult`; absent
        when no centre could estimate the term).
    one_stage
        The stratified (by centre) one-stage Cox model with the same interaction, on the
        same complete cases.
    comparison
        One row per term: ``term, level, two_stage_estimate, two_stage_se,
        two_stage_ci_lower, two_stage_ci_upper, two_stage_p_value, k, tau2,
        one_stage_estimate, one_stage_se, one_stage_ci_lower, one_stage_ci_upper,
        one_stage_p_value`` (log scale).
    spec, by, reference
        The spec, the subgroup column and its reference level.
    """

    per_centre: pd.DataFrame
    pooled: dict[str, MetaResult]
    one_stage: CoxResult | None
    comparison: pd.DataFrame
    spec: TwoStageSpec
    by: str
    reference: str

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: per-centre interaction rows (``row_type = "centre"``), the pooled
        two-stage rows (``"pooled"``) and the one-stage rows (``"one_stage"``); ``hr`` is the
        ratio of hazard ratios."""
        analysis = self.spec.cox.analysis or "two_stage_interaction"
        endpoint = self.spec.cox.endpoint
        rows: list[dict[str, Any]] = []
        for i in range(len(self.per_centre)):
            rec = self.per_centre.iloc[i]
            est, se = rec["log_ratio"], rec["se"]
            rows.append(
                {
                    "analysis": analysis,
                    "endpoint": endpoint,
                    "model": "cox_per_centre",
                    "term": rec["term"],
                    "estimate": est,
                    "std_error": se,
                    "hr": np.exp(est),
                    "ci_lower": np.exp(est - _Z975 * se),
                    "ci_upper": np.exp(est + _Z975 * se),
                    "p_value": float(2 * stats.norm.sf(abs(est / se)))
                    if rec["included"]
                    else np.nan,
                    "n": rec["n"],
                    "events": rec["events"],
                    "row_type": "centre",
                    "centre": rec["centre"],
                    "included": bool(rec["included"]),
                    "reason": rec["reason"],
                    "weight_percent": rec["weight_percent"],
                }
            )
        for term, meta in self.pooled.items():
            frame = meta.to_frame(analysis=analysis, endpoint=endpoint)
            row = _record(frame[frame["row_type"] == "pooled"])
            sub = self.per_centre[(self.per_centre["term"] == term) & self.per_centre["included"]]
            row.update(
                term=term,
                model=f"two_stage_{meta.spec.label}",
                n=int(sub["n"].sum()),
                events=int(sub["events"].sum()),
            )
            rows.append(row)
        if self.one_stage is not None:
            one = self.one_stage.to_frame()
            for term in self.comparison["term"]:
                if term in set(one["term"]):
                    row = _record(one[one["term"] == term])
                    row.update(analysis=analysis, endpoint=endpoint, row_type="one_stage")
                    rows.append(row)
        return tidy_frame(rows)


def fit_two_stage_interaction(
    data: pd.DataFrame, spec: TwoStageSpec, by: str = "subtype"
) -> TwoStageInteractionResult:
    """Two-stage estimate of the marker x ``by`` interaction, beside the one-stage one.

    Within each centre the Cox model ``spec.stage_one`` plus ``marker * by`` is fitted and the
    interaction coefficients ``marker:by<level>`` (log ratio of the marker's HR in ``level``
    to its HR in the reference level) are taken; each is pooled across centres with
    ``spec.meta``. Because only within-centre contrasts are pooled, the result is free of
    the aggregation bias that across-centre differences in subtype mix can cause.

    A level's interaction is estimable in a centre only if that level and the reference
    level each have marker-positive and marker-negative patients with events in both
    groups. Patients of non-estimable levels are left out of that centre's model and the
    centre is listed for that term with the reason (e.g. ``no patients with
    subtype=her2_positive``); a centre whose reference level is not estimable contributes
    to no term. Nothing is dropped silently.

    The one-stage model (stratified by centre, ``marker * by``) is fitted to the same
    complete cases for comparison.

    Parameters
    ----------
    data
        One row per patient, with the centre column.
    spec
        Stage-one model (must contain ``marker`` and ``by``, with ``by`` categorical),
        marker and pooling options.
    by
        The categorical subgroup column (default ``"subtype"``).

    Returns
    -------
    TwoStageInteractionResult

    Raises
    ------
    ConfigError
        If ``by`` is not a categorical covariate of ``spec.cox``.

    References
    ----------
    .. [1] Fisher DJ, Carpenter JR, Morris TP, et al. Meta-analytical methods to identify who
       benefits most from treatments: daft, deluded, or deft approach? BMJ 2017;356:j573.
    .. [2] Riley RD, Debray TPA, Fisher D, et al. Individual participant data meta-analysis
       to examine interactions between treatment effect and participant-level covariates:
       statistical recommendations for conduct and planning. Stat Med 2020;39:2115-37.
    .. [3] Fisher DJ. Two-stage individual participant data meta-analysis and generalized
       forest plots. Stata J 2015;15:369-96.

    Examples
    --------
    >>> spec = TwoStageSpec(
    ...     cox=CoxSpec(duration="os_months", event="os_event",
    ...                 covariates=("ctc_positive", "subtype", "age"),
    ...                 categorical=(("subtype", "luminal_a"),)))
    >>> # res = fit_two_stage_interaction(cohort, spec, by="subtype"); res.comparison
    """
    categorical = dict(spec.cox.categorical)
    if by not in spec.cox.covariates or by not in categorical:
        raise ConfigError(
            f"fit_two_stage_interaction: '{by}' expected as a categorical covariate of the Cox "
            f"spec (covariates {list(spec.cox.covariates)}, categorical "
            f"{list(categorical)}). Add it with its reference level."
        )
    reference = str(categorical[by])
    marker = spec.marker
    stage_one = replace(spec.stage_one, interactions=((marker, by),))
    columns = _required_columns(stage_one)
    _check_columns(data, columns, spec.centre)
    complete_all = data.dropna(subset=[*columns, spec.centre])
    outcome_values(complete_all, stage_one.duration, stage_one.event)
    levels_all = sorted(str(v) for v in complete_all[by].astype(str).unique())
    other_levels = [lv for lv in levels_all if lv != reference]
    terms = {lv: f"{marker}:{by}{lv}" for lv in other_levels}
    event = stage_one.event

    rows: list[dict[str, Any]] = []
    for centre, group in data.groupby(spec.centre, sort=True):
        complete = group.dropna(subset=columns)
        by_values = complete[by].astype(str)
        n_dropped = int(len(group) - len(complete))

        def level_problem(level: str, frame=complete, values=by_values) -> str:
            sub = frame[values == level]
            if len(sub) == 0:
                return f"no patients with {by}={level}"
            counts = _marker_counts(sub, marker, event)
            problem = _marker_problem(counts, marker)
            return f"{by}={level}: {problem}" if problem else ""

        ref_problem = level_problem(reference)
        problems = {lv: level_problem(lv) for lv in other_levels}
        usable = [lv for lv in other_levels if not problems[lv]]
        base = {"centre": centre, "n_dropped": n_dropped, "note": ""}
        centre_rows: dict[str, dict[str, Any]] = {}
        for lv in other_levels:
            sub = complete[by_values == lv]
            centre_rows[lv] = {
                **base,
                "term": terms[lv],
                "level": lv,
                "n": np.nan,
                "events": np.nan,
                "n_level": int(len(sub)),
                "events_level": int((sub[event] == 1).sum()),
                "log_ratio": np.nan,
                "se": np.nan,
                "included": False,
                "reason": "",
            }
        rows.extend(centre_rows.values())
        if ref_problem:
            for lv in other_levels:
                centre_rows[lv]["reason"] = f"reference {ref_problem}"
            continue
        for lv in other_levels:
            if problems[lv]:
                centre_rows[lv]["reason"] = problems[lv]
        if not usable:
            continue
        fit_frame = complete[by_values.isin([reference, *usable])]
        constant = _constant_covariates(fit_frame, stage_one, marker)
        constant = [c for c in constant if c != by]
        centre_spec = _without(stage_one, constant)
        note = f"constant in this centre, left out: {', '.join(constant)}" if constant else ""
        left_out = [lv for lv in other_levels if problems[lv] and lv in set(by_values)]
        if left_out:
            extra = f"patients with {by} in {left_out} left out of this centre's model"
            note = f"{note}; {extra}" if note else extra
        result, problem = _fit_quietly(fit_frame, centre_spec)
        n_fit = int(len(fit_frame))
        events_fit = int((fit_frame[event] == 1).sum())
        for lv in usable:
            row = centre_rows[lv]
            row.update(n=n_fit, events=events_fit, note=note)
            if result is None:
                row["reason"] = problem
                continue
            term = terms[lv]
            if term not in result.term_names:
                row["reason"] = f"term {term} not estimable in this centre"
                continue
            j = result.term_names.index(term)
            se = float(np.sqrt(result.covariance[j, j]))
            if f"'{term}'" in problem or not np.isfinite(se):
                row["reason"] = problem or "standard error not finite"
                continue
            if problem:
                row["note"] = f"{row['note']}; {problem}" if row["note"] else problem
            row.update(log_ratio=float(result.coefficients[j]), se=se, included=True)

    table = pd.DataFrame(
        rows,
        columns=[
            "centre",
            "term",
            "level",
            "n",
            "events",
            "n_level",
            "events_level",
            "n_dropped",
            "log_ratio",
            "se",
            "included",
            "reason",
            "note",
        ],
    )
    table["weight_percent"] = np.nan
    pooled: dict[str, MetaResult] = {}
    for lv in other_levels:
        term = terms[lv]
        mask = (table["term"] == term) & table["included"].astype(bool)
        if not mask.any():
            continue
        meta = fit_meta(
            table.loc[mask, "log_ratio"].to_numpy(),
            table.loc[mask, "se"].to_numpy() ** 2,
            spec.meta,
            labels=list(table.loc[mask, "centre"]),
            term=term,
        )
        pooled[term] = meta
        table.loc[mask, "weight_percent"] = meta.per_study["weight_percent"].to_numpy()

    one_stage_spec = replace(
        spec.cox,
        interactions=((marker, by),),
        strata=(spec.centre,),
        cluster=None,
        term_lr_tests=False,
    )
    try:
        one_stage: CoxResult | None = fit_cox(complete_all, one_stage_spec)
    except DataError:
        one_stage = None
    comparison = _comparison(other_levels, terms, pooled, one_stage)
    return TwoStageInteractionResult(
        per_centre=table,
        pooled=pooled,
        one_stage=one_stage,
        comparison=comparison,
        spec=spec,
        by=by,
        reference=reference,
    )


def _comparison(
    levels: list[str],
    terms: dict[str, str],
    pooled: dict[str, MetaResult],
    one_stage: CoxResult | None,
) -> pd.DataFrame:
    rows = []
    for lv in levels:
        term = terms[lv]
        row: dict[str, Any] = {"term": term, "level": lv}
        meta = pooled.get(term)
        row.update(
            two_stage_estimate=meta.estimate if meta else np.nan,
            two_stage_se=meta.se if meta else np.nan,
            two_stage_ci_lower=meta.ci_lower if meta else np.nan,
            two_stage_ci_upper=meta.ci_upper if meta else np.nan,
            two_stage_p_value=meta.p_value if meta else np.nan,
            k=meta.k if meta else 0,
            tau2=meta.tau2 if meta else np.nan,
        )
        if one_stage is not None and term in one_stage.term_names:
            j = one_stage.term_names.index(term)
            est = float(one_stage.coefficients[j])
            se = float(one_stage.std_errors[j])
            row.update(
                one_stage_estimate=est,
                one_stage_se=se,
                one_stage_ci_lower=est - _Z975 * se,
                one_stage_ci_upper=est + _Z975 * se,
                one_stage_p_value=float(2 * stats.norm.sf(abs(est / se))),
            )
        else:
            row.update(
                one_stage_estimate=np.nan,
                one_stage_se=np.nan,
                one_stage_ci_lower=np.nan,
                one_stage_ci_upper=np.nan,
                one_stage_p_value=np.nan,
            )
        rows.append(row)
    return pd.DataFrame(rows)

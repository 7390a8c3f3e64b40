"""What the report says about a run's assumptions: proportional hazards, few centres, one-stage
versus two-stage estimates, and the fit statistics of the Cox models.

Everything here reads the run (:class:`~pooled.run_output.RunOutput`) and returns raw numbers
or plain sentences; the report rounds and places them. Nothing is refitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pooled.plots.forest import p_relation

if TYPE_CHECKING:  # pragma: no cover
    from pooled.run_output import ModelOutput, RunOutput

__all__ = [
    "DEFAULT_ALPHA",
    "MIN_CENTRES_PREDICTION",
    "MIN_CENTRES_RANDOM_EFFECTS",
    "PHCheck",
    "centre_model_differences",
    "config_document",
    "exposure_name",
    "fit_statistics",
    "method_label",
    "one_vs_two_stage",
    "ph_checks",
    "time_split_rows",
    "two_stage_caveat",
    "zph_alpha",
]

DEFAULT_ALPHA = 0.05
#: Below this many centres, tau^2, I^2 and the random-effects interval are poorly estimated.
MIN_CENTRES_RANDOM_EFFECTS = 5
#: The prediction interval is shown from this many centres on (t with k - 2 df).
MIN_CENTRES_PREDICTION = 3


# ---------------------------------------------------------------------------------------------
# the run's settings


def config_document(run: RunOutput) -> Mapping[str, Any]:
    """The config as run (``run.config_text``) as a mapping (empty when it does not parse)."""
    import yaml

    try:
        doc = yaml.safe_load(run.config_text or "")
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, Mapping) else {}


def zph_alpha(run: RunOutput) -> float:
    """The level of the PH flag: the config's ``models.zph.alpha`` (default 0.05)."""
    models = config_document(run).get("models")
    zph = models.get("zph") if isinstance(models, Mapping) else None
    alpha = zph.get("alpha") if isinstance(zph, Mapping) else None
    try:
        value = float(alpha) if alpha is not None else DEFAULT_ALPHA
    except (TypeError, ValueError):
        return DEFAULT_ALPHA
    return value if 0.0 < value < 1.0 else DEFAULT_ALPHA


def exposure_name(run: RunOutput) -> str:
    """The run's exposure: the definitions' exposure, else the first term of a Cox model."""
    definitions = run.characteristics.get("definitions")
    if isinstance(definitions, pd.DataFrame) and "section" in definitions:
        found = definitions.loc[definitions["section"] == "Exposure", "item"]
        if len(found):
            return str(found.iloc[0])
    exposure = config_document(run).get("exposure")
    if isinstance(exposure, Mapping) and exposure.get("name"):
        return str(exposure["name"])
    for out in run.outputs:
        spec = getattr(out.result, "spec", None)
        covariates = getattr(spec, "covariates", None)
        if out.kind == "cox" and covariates:
            return str(covariates[0])
    return ""


def _exposure_terms(result: Any, exposure: str) -> list[str]:
    """The terms of a Cox result that code the exposure (one for a 0/1 exposure)."""
    names = list(getattr(result, "term_names", ()) or ())
    sources = list(getattr(result, "term_sources", ()) or names)
    terms = [t for t, s in zip(names, sources, strict=False) if s == exposure]
    return terms or ([exposure] if exposure else [])


# ---------------------------------------------------------------------------------------------
# proportional hazards


@dataclass(frozen=True, slots=True)
class PHCheck:
    """The PH test of an endpoint's exposure (and the global test) at the report's level.

    ``model`` names the Cox output that was tested, ``time_split`` the output with
    period-specific HRs of the endpoint (``None`` when the run has none).
    """

    endpoint: str
    zph: ModelOutput
    model: str
    exposure: str
    terms: tuple[str, ...]
    alpha: float
    exposure_chisq: float
    exposure_df: float
    exposure_p: float
    global_chisq: float
    global_df: float
    global_p: float
    time_split: ModelOutput | None = None

    @property
    def rejects_exposure(self) -> bool:
        return bool(np.isfinite(self.exposure_p) and self.exposure_p < self.alpha)

    @property
    def rejects_global(self) -> bool:
        return bool(np.isfinite(self.global_p) and self.global_p < self.alpha)

    @property
    def rejects(self) -> bool:
        """The exposure's HR is flagged: its own or the global PH test rejects."""
        return self.rejects_exposure or self.rejects_global

    def flag(self, *, tested: bool = True) -> str:
        """Short text for a table cell (``""`` when nothing rejects). An HR of the exposure
        from another model than the tested one (``tested=False``: the univariable model) is
        flagged only when the exposure's own test rejects; the global test speaks about the
        tested model's other terms."""
        if self.rejects_exposure:
            return f"PH violated ({self.exposure} test p {p_relation(self.exposure_p)})"
        if self.rejects_global and tested:
            return f"PH violated (global test p {p_relation(self.global_p)})"
        return ""

    def note(self, subject: str) -> str:
        """A sentence flagging ``subject`` (e.g. "the centres' HRs") as it depends on the
        tested model: an average of a time-varying effect of the exposure, or estimated beside
        other terms whose effect changes (global rejection only); ``""`` when nothing rejects."""
        if not self.rejects:
            return ""
        where = f"{self.flag()} in {self.model}"
        if self.rejects_exposure:
            return (
                f"{where}: {subject} average an effect of {self.exposure} that changes over time."
            )
        others = [t for t in self.rejecting_terms if t not in self.terms]
        if len(others) > 1:
            which = f"the effects of {', '.join(others)} change over time"
        else:
            which = f"the effect of {others[0] if others else 'a term'} changes over time"
        return f"{where}: {which}; {subject} come from models that assume proportional hazards."

    @property
    def rejecting_terms(self) -> tuple[str, ...]:
        """The tested model's terms whose own PH test rejects."""
        table = self.zph.result.table
        hits = table.loc[(table["term"] != "GLOBAL") & (table["p_value"] < self.alpha), "term"]
        return tuple(str(t) for t in hits)

    def sentence(self) -> str:
        """What the test found, in words, with what to do about it."""
        tests = (
            f"the scaled-Schoenfeld test of {self.exposure} gives chi^2 = "
            f"{self.exposure_chisq:.2f} on {self.exposure_df:g} df, p {p_relation(self.exposure_p)}"
        )
        if np.isfinite(self.global_p):
            tests += (
                f"; the global test chi^2 = {self.global_chisq:.2f} on {self.global_df:g} df, "
                f"p {p_relation(self.global_p)}"
            )
        if not self.rejects:
            return (
                f"Proportional hazards not rejected at alpha = {self.alpha:g} "
                f"({self.model}): {tests}."
            )
        after = (
            " The period-specific HRs below show how the effect changes."
            if self.time_split is not None
            else " No period-specific HRs were fitted (models.cox.time_split)."
        )
        if self.rejects_exposure:
            return (
                f"Proportional hazards rejected at alpha = {self.alpha:g} ({self.model}): "
                f"{tests}. The hazard ratio of {self.exposure} is an average over follow-up of "
                "an effect that changes with time; read it with the Schoenfeld plot." + after
            )
        others = [t for t in self.rejecting_terms if t not in self.terms]
        if len(others) > 1:
            which = f"the effects of {', '.join(others)} change with time"
        elif others:
            which = f"the effect of {others[0]} changes with time"
        else:
            which = "no single term rejects, but their joint test does"
        return (
            f"Proportional hazards rejected by the global test at alpha = {self.alpha:g} "
            f"({self.model}): {tests}. The exposure's own test does not reject; {which}. The "
            f"adjusted hazard ratio of {self.exposure} is estimated alongside a time-varying "
            "effect; read it with the Schoenfeld plots." + after
        )


def _row(table: pd.DataFrame, terms: Iterable[str]) -> tuple[float, float, float]:
    """chisq, df and p of the first of ``terms`` found in a PH table (NaN when none)."""
    wanted = list(terms)
    rows = table.loc[table["term"].astype(str).isin(wanted)]
    if not len(rows):
        return float("nan"), float("nan"), float("nan")
    rows = rows.sort_values("p_value", kind="stable")
    first = rows.iloc[0]
    return float(first["chisq"]), float(first["df"]), float(first["p_value"])


def ph_checks(run: RunOutput, alpha: float | None = None) -> dict[str, PHCheck]:
    """Per endpoint, the PH check of the exposure in the tested Cox model (the adjusted one).

    When a categorical exposure has several terms, the smallest of their p-values decides.
    """
    level = zph_alpha(run) if alpha is None else alpha
    exposure = exposure_name(run)
    checks: dict[str, PHCheck] = {}
    for out in run.outputs:
        if out.kind != "zph" or out.endpoint in checks:
            continue
        table = getattr(out.result, "table", None)
        if not isinstance(table, pd.DataFrame) or "term" not in table:
            continue
        tested = _tested_model(run, out)
        result = tested.result if tested is not None else None
        terms = _exposure_terms(result, exposure)
        chisq, df, p = _row(table, terms)
        g_chisq, g_df, g_p = _row(table, ["GLOBAL"])
        time_split = next(
            (o for o in run.outputs if o.kind == "time_split" and o.endpoint == out.endpoint),
            None,
        )
        checks[out.endpoint] = PHCheck(
            endpoint=out.endpoint,
            zph=out,
            model=(tested.label or tested.name) if tested is not None else "Cox model",
            exposure=exposure,
            terms=tuple(terms),
            alpha=level,
            exposure_chisq=chisq,
            exposure_df=df,
            exposure_p=p,
            global_chisq=g_chisq,
            global_df=g_df,
            global_p=g_p,
            time_split=time_split,
        )
    return checks


def _tested_model(run: RunOutput, zph: ModelOutput) -> ModelOutput | None:
    """The Cox output whose spec the PH test carries (the adjusted model of its endpoint)."""
    spec = getattr(zph.result, "spec", None)
    for other in run.outputs:
        if other.kind == "cox" and spec is not None and getattr(other.result, "spec", None) == spec:
            return other
    return next(
        (o for o in run.outputs if o.kind == "cox" and o.name == f"cox_{zph.endpoint}_adjusted"),
        None,
    )


def time_split_rows(out: ModelOutput, exposure: str = "") -> pd.DataFrame:
    """The period-specific HRs of a ``time_split`` output: ``period, term, hr, ci_lower,
    ci_upper, p_value`` (and ``n``, ``events`` when present), the exposure's rows when the
    table has them. The period is the table's ``period`` (or ``interval``) column, else
    built from ``start``/``stop`` columns, else the term."""
    frame = out.to_frame()
    if frame.empty:
        return frame
    if "row_type" in frame and (frame["row_type"] == "period").any():
        frame = frame.loc[frame["row_type"] == "period"]  # TimeSplitResult: the period rows
        if "label" in frame:
            frame = frame.assign(period=frame["label"].astype(str) + " months")
    if exposure and "term" in frame:
        mine = frame["term"].astype(str).str.startswith(exposure)
        if mine.any():
            frame = frame.loc[mine]
    period = next(
        (
            frame[c].astype(str)
            for c in ("period", "interval", "time_period", "window")
            if c in frame
        ),
        None,
    )
    if period is None:
        start = next((c for c in ("start", "from", "period_start", "lower") if c in frame), None)
        stop = next((c for c in ("stop", "end", "to", "period_end", "upper") if c in frame), None)
        if start and stop:
            period = pd.Series(
                [
                    f"{_num(a)}-{_num(b)} months"
                    if np.isfinite(_float(b))
                    else f"> {_num(a)} months"
                    for a, b in zip(frame[start], frame[stop], strict=True)
                ],
                index=frame.index,
            )
        else:
            period = frame.get("term", pd.Series("", index=frame.index)).astype(str)
    shown = pd.DataFrame({"period": period.to_numpy()})
    for column in ("term", "hr", "ci_lower", "ci_upper", "p_value", "n", "events"):
        if column in frame:
            shown[column] = frame[column].to_numpy()
    return shown.reset_index(drop=True)


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _num(x: Any) -> str:
    value = _float(x)
    return f"{value:g}" if np.isfinite(value) else str(x)


# ---------------------------------------------------------------------------------------------
# fit statistics

#: (column, attribute names a Cox result may carry it under), in display order.
FIT_STATISTICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loglik_null", ("loglik_null", "log_likelihood_null")),
    ("loglik", ("loglik", "log_likelihood")),
    ("lr_chisq", ("lr_test", "lr_chisq", "likelihood_ratio_test")),
    ("lr_df", ("lr_df", "likelihood_ratio_df")),
    ("lr_p_value", ("lr_p_value", "likelihood_ratio_p_value")),
    ("wald_chisq", ("wald_test", "wald_chisq")),
    ("wald_df", ("wald_df",)),
    ("wald_p_value", ("wald_p_value",)),
    ("score_chisq", ("score_test", "score_chisq")),
    ("score_df", ("score_df",)),
    ("score_p_value", ("score_p_value",)),
    ("robust_score_chisq", ("robust_score_test", "robust_score_chisq")),
    ("robust_score_df", ("robust_score_df",)),
    ("robust_score_p_value", ("robust_score_p_value",)),
    ("aic", ("aic", "AIC")),
    ("concordance", ("concordance", "c_index", "harrell_c", "concordance_index")),
    (
        "concordance_se",
        ("concordance_se", "concordance_std_error", "c_index_se", "harrell_c_se"),
    ),
)
_STATISTIC_COLUMNS = {name for name, _ in FIT_STATISTICS}


def _value(result: Any, names: Iterable[str]) -> float:
    for name in names:
        try:
            value = getattr(result, name)
        except Exception:  # a property that cannot be computed for this fit
            continue
        if callable(value):
            continue
        number = _float(value)
        if value is not None and not isinstance(value, (bool, np.bool_)):
            return number
    return float("nan")


def fit_statistics(result: Any) -> dict[str, float]:
    """The model-level fit statistics a Cox result carries, under fixed names.

    Read, in this order of precedence, from the result's ``fit_statistics`` (a mapping, a
    one-row DataFrame, or a method returning either), the model-level columns of its tidy
    table (a column of :data:`FIT_STATISTICS` constant over the rows), and its attributes
    (:data:`FIT_STATISTICS` lists the names). The df of the LR and score tests default to
    the number of coefficients. Statistics the result does not carry are left out.
    """
    stats: dict[str, float] = {}
    for name, attributes in FIT_STATISTICS:
        value = _value(result, attributes)
        if np.isfinite(value):
            stats[name] = value
    to_frame = getattr(result, "to_frame", None)
    if callable(to_frame):
        try:
            frame = to_frame()
        except Exception:  # a result whose table cannot be built has no columns to read
            frame = None
        if isinstance(frame, pd.DataFrame) and len(frame):
            for column in frame.columns:
                key = str(column)
                if key in _STATISTIC_COLUMNS and key != "lr_p_value":  # per-term LR p
                    values = pd.to_numeric(frame[column], errors="coerce").dropna().unique()
                    if len(values) == 1:
                        stats[key] = float(values[0])
    model_statistics = getattr(result, "model_statistics", None)
    if callable(model_statistics):  # CoxResult: {"model_loglik": ..., "model_aic": ...}
        for key, value in model_statistics().items():
            number = _float(value)
            if np.isfinite(number):
                stats[str(key).removeprefix("model_")] = number
    given = getattr(result, "fit_statistics", None)
    if callable(given):
        given = given()
    if isinstance(given, pd.DataFrame):  # a one-row table; a long one (term rows) is not
        wide = len(given) == 1 and "term" not in given.columns
        given = {str(k): v for k, v in given.iloc[0].to_dict().items()} if wide else None
    if isinstance(given, Mapping):
        for key, value in given.items():
            number = _float(value)
            if np.isfinite(number):
                stats[str(key)] = number
    n_parameters = _value(result, ("n_parameters",))
    for test in ("lr", "wald", "score", "robust_score"):
        if f"{test}_chisq" not in stats:  # a df or p without its test says nothing
            stats.pop(f"{test}_df", None)
            stats.pop(f"{test}_p_value", None)
        elif f"{test}_df" not in stats and test != "robust_score" and np.isfinite(n_parameters):
            stats[f"{test}_df"] = n_parameters
    return stats


def method_label(meta: Any) -> str:
    """``"REML, Hartung-Knapp"`` for a meta-analysis spec's label ``"REML_knha"``."""
    spec = getattr(meta, "spec", meta)
    label = str(getattr(spec, "label", "") or getattr(spec, "method", ""))
    return label.replace("_knha", ", Hartung-Knapp")


# ---------------------------------------------------------------------------------------------
# two-stage


def two_stage_caveat(meta: Any) -> str:
    """A warning for random effects from few centres (``""`` from 5 centres on)."""
    k = int(getattr(meta, "k", 0))
    if k >= MIN_CENTRES_RANDOM_EFFECTS:
        return ""
    method = method_label(meta)
    knha = bool(getattr(getattr(meta, "spec", None), "knha", False))
    text = (
        f"Only {k} centre{'s' if k != 1 else ''} pooled: with fewer than "
        f"{MIN_CENTRES_RANDOM_EFFECTS} centres the between-centre variance (tau^2), I^2 and "
        "the random-effects interval are poorly estimated"
    )
    if knha:
        text += (
            f"; the Hartung-Knapp interval uses a t distribution with {max(k - 1, 0)} df and is "
            "very wide"
        )
    if k < MIN_CENTRES_PREDICTION:
        text += "; no prediction interval is given (it needs at least 3 centres)"
    text += (
        ". Read the pooled estimate as a summary of these centres, not as evidence about "
        "centres in general"
    )
    if method:
        text += f" ({method})"
    return text + "."


def centre_model_differences(result: Any) -> pd.DataFrame:
    """Per centre of a two-stage result, how its stage-one model differs from the one-stage
    model: ``centre, pooled, n, events, difference`` (terms left out because they are
    constant there, the reason a centre is not pooled); centres fitted as specified are
    left out."""
    table = getattr(result, "per_centre", None)
    if not isinstance(table, pd.DataFrame) or not len(table):
        return pd.DataFrame(columns=["centre", "pooled", "n", "events", "difference"])
    rows = []
    for rec in table.to_dict("records"):
        included = bool(rec.get("included", True))
        parts = []
        reason = str(rec.get("reason") or "")
        note = str(rec.get("note") or "")
        if not included:
            parts.append(f"not pooled: {reason or 'no estimate'}")
        if note:
            parts.append(note)
        if parts:
            rows.append(
                {
                    "centre": str(rec.get("centre", "")),
                    "pooled": included,
                    "n": rec.get("n", np.nan),
                    "events": rec.get("events", np.nan),
                    "difference": "; ".join(parts),
                }
            )
    return pd.DataFrame(rows, columns=["centre", "pooled", "n", "events", "difference"])


def _one_stage(run: RunOutput, endpoint: str) -> ModelOutput | None:
    named = next(
        (o for o in run.outputs if o.kind == "cox" and o.name == f"cox_{endpoint}_adjusted"), None
    )
    if named is not None:
        return named
    cox = [o for o in run.outputs if o.kind == "cox" and o.endpoint == endpoint]
    return max(cox, key=lambda o: len(getattr(o.result, "term_names", ())), default=None)


def one_vs_two_stage(run: RunOutput) -> pd.DataFrame:
    """Per endpoint with a two-stage model, the exposure's one-stage (adjusted, stratified
    Cox) and two-stage (pooled) estimates side by side, with whether they disagree.

    Columns: ``endpoint, exposure, one_stage_hr, one_stage_ci_lower, one_stage_ci_upper,
    one_stage_log_hr, one_stage_se, one_stage_n, one_stage_events, two_stage_hr, ...,
    two_stage_centres, difference_log_hr, larger_se, disagree, centre_differences``
    (raw numbers). ``disagree`` when the log HRs differ by more than the larger of the two
    standard errors (a descriptive yardstick: both estimates come from the same patients).
    """
    exposure = exposure_name(run)
    rows = []
    for out in run.outputs:
        if out.kind != "two_stage":
            continue
        meta = getattr(out.result, "meta", None)
        if meta is None:
            continue
        one = _one_stage(run, out.endpoint)
        row: dict[str, Any] = {"endpoint": out.endpoint, "exposure": exposure}
        if one is not None:
            frame = one.to_frame()
            term = _exposure_terms(one.result, exposure)[0] if exposure else ""
            found = frame.loc[frame["term"].astype(str) == term]
            if len(found):
                rec = found.iloc[0]
                row.update(
                    one_stage_model=one.label or one.name,
                    one_stage_hr=float(rec["hr"]),
                    one_stage_ci_lower=float(rec["ci_lower"]),
                    one_stage_ci_upper=float(rec["ci_upper"]),
                    one_stage_log_hr=float(rec["estimate"]),
                    one_stage_se=float(rec["std_error"]),
                    one_stage_n=rec["n"],
                    one_stage_events=rec["events"],
                )
        ratio = bool(meta.spec.exponentiate)
        per_centre = getattr(out.result, "per_centre", pd.DataFrame())
        included = (
            per_centre.loc[per_centre["included"].astype(bool)]
            if "included" in per_centre
            else per_centre
        )
        row.update(
            two_stage_model=out.label or out.name,
            two_stage_hr=float(np.exp(meta.estimate)) if ratio else float(meta.estimate),
            two_stage_ci_lower=float(np.exp(meta.ci_lower)) if ratio else float(meta.ci_lower),
            two_stage_ci_upper=float(np.exp(meta.ci_upper)) if ratio else float(meta.ci_upper),
            two_stage_log_hr=float(meta.estimate),
            two_stage_se=float(meta.se),
            two_stage_n=int(included["n"].sum()) if "n" in included else np.nan,
            two_stage_events=int(included["events"].sum()) if "events" in included else np.nan,
            two_stage_centres=int(meta.k),
        )
        if "one_stage_log_hr" in row:
            diff = row["two_stage_log_hr"] - row["one_stage_log_hr"]
            larger = max(row["one_stage_se"], row["two_stage_se"])
            row.update(
                difference_log_hr=diff,
                larger_se=larger,
                disagree=bool(np.isfinite(diff) and abs(diff) > larger),
            )
        differences = centre_model_differences(out.result)
        row["centre_differences"] = "; ".join(
            f"{c}: {d}"
            for c, d in zip(differences["centre"], differences["difference"], strict=True)
        )
        rows.append(row)
    return pd.DataFrame(rows)


def why_they_differ(row: Mapping[str, Any], strata: str = "centre") -> list[str]:
    """Sentences on what differs between the one-stage and the two-stage model of a row of
    :func:`one_vs_two_stage`."""
    reasons = [
        f"the one-stage model is stratified by {strata} with one effect of each covariate "
        "for all centres; the two-stage model fits every covariate separately within each "
        "centre and weights the centres' exposure estimates by their precision (plus tau^2)"
    ]
    n1, n2 = _float(row.get("one_stage_n")), _float(row.get("two_stage_n"))
    if np.isfinite(n1) and np.isfinite(n2) and n1 != n2:
        reasons.append(
            f"they analyse different patients: {int(n1):,} in the one-stage model, "
            f"{int(n2):,} in the pooled centres"
        )
    if row.get("centre_differences"):
        reasons.append("stage-one models differ by centre: " + str(row["centre_differences"]))
    return reasons

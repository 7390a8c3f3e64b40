"""Publication tables of a run: display formatting (the only rounding) and ``tables.xlsx``.

Results keep raw numbers; this module turns them into what a manuscript prints: hazard
ratios with two decimals, "1.23 (1.01-1.50)" text, p-values as "<0.001" or three decimals.
In the workbook the numbers stay numbers, shown through Excel number formats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pooled.plots.forest import format_p_value, format_ratio_ci

if TYPE_CHECKING:  # pragma: no cover
    from pooled.report.checks import PHCheck
    from pooled.run_output import ModelOutput, RunOutput

__all__ = [
    "FIT_STATISTIC_NAMES",
    "bayes_table",
    "comparison_table",
    "fit_statistics_table",
    "format_frame",
    "format_number",
    "heterogeneity_table",
    "hazard_ratio_table",
    "model_flow_table",
    "subgroup_table",
    "time_split_table",
    "write_tables_xlsx",
]

# column name -> (kind) for display formatting and Excel number formats
_RATIO = {"hr", "ci_lower", "ci_upper", "pi_lower", "pi_upper", "HR", "95% CI lower"}
_RATIO |= {"95% CI upper", "PI lower", "PI upper"}
_P = {"p_value", "q_p_value", "lr_p_value", "p", "Q p", "Interaction p", "LR p", "Wald p"}
_P |= {"Score p", "Robust score p", "PH test p"}
_PERCENT = {"i2", "weight_percent", "I^2 (%)", "Weight (%)"}
_INTEGER = {"n", "events", "k", "q_df", "df", "n_risk", "n_patients", "Patients", "Events"}
_INTEGER |= {"received", "analysed", "Centres", "n_groups", "divergences", "cohort"}
_INTEGER |= {"LR df", "Wald df", "Score df", "Robust score df", "not used", "patients"}
_INTEGER |= {"One-stage patients", "One-stage events", "Two-stage patients", "Two-stage events"}
_INTEGER |= {"from dates", "from delivered durations", "source not recorded"}
_PROBABILITY = {"prob_hr_gt_1", "P(HR > 1)", "r_hat", "mcse_median", "C (Harrell)", "C SE"}
_PROBABILITY |= {"One-stage SE", "Two-stage SE", "Difference in log HR", "Larger SE"}
_MONTHS = {"median (months)", "median 95% CI lower", "median 95% CI upper", "median"}
_ROUNDED = {"ess_bulk", "ess_tail", "aic", "bic", "loglik", "chisq", "Q", "AIC", "Log-lik (null)"}
_ROUNDED |= {"Log-lik", "LR chi^2", "Wald chi^2", "Score chi^2", "Robust score chi^2"}
_RATIO |= {"One-stage HR", "Two-stage HR", "One-stage CI lower", "One-stage CI upper"}
_RATIO |= {"Two-stage CI lower", "Two-stage CI upper"}

EXCEL_FORMATS = {
    "ratio": "0.00",
    "p": "0.000",
    "percent": "0.0",
    "integer": "0",
    "rounded": "0.00",
    "other": "0.000",
}


def _kind(column: str) -> str:
    if column in _RATIO:
        return "ratio"
    if column in _P:
        return "p"
    if column in _PERCENT or column in _MONTHS:
        return "percent"
    if column in _INTEGER or column.startswith("excluded"):
        return "integer"
    if column in _PROBABILITY or column.startswith("prob_hr_gt") or column.startswith("P(HR"):
        return "probability"
    if column in _ROUNDED:
        return "rounded"
    return "other"


def format_number(value: Any, kind: str = "other") -> str:
    """Display text for one value: ``kind`` is ratio, p, percent, integer, probability, other."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if not isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    x = float(value)
    if not np.isfinite(x):
        return "" if np.isnan(x) else ("inf" if x > 0 else "-inf")
    if kind == "ratio":
        return f"{x:.2f}"
    if kind == "p":
        return format_p_value(x)
    if kind == "percent":
        return f"{x:.1f}"
    if kind == "integer":
        return f"{x:,.0f}" if x == round(x) else f"{x:.1f}"
    if kind == "probability":
        return f"{x:.3f}"
    if kind == "rounded":
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"


def _all_whole(values: pd.Series) -> bool:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    finite = numbers[np.isfinite(numbers)]
    return bool(finite.size) and bool(np.all(finite == np.round(finite)))


def format_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with every cell as display text (rounded by column kind); text left as is.

    Numeric columns of unnamed kind whose values are all whole numbers (counts, months,
    group numbers) print without decimals.
    """
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        kind = _kind(str(column))
        values = frame[column]
        if (
            kind == "other"
            and pd.api.types.is_numeric_dtype(values)
            and not pd.api.types.is_bool_dtype(values)
            and _all_whole(values)
        ):
            kind = "integer"
        out[column] = [format_number(v, kind) for v in values.tolist()]
    return out


def _ci_text(frame: pd.DataFrame) -> list[str]:
    return [
        format_ratio_ci(h, lo, hi)
        for h, lo, hi in zip(frame["hr"], frame["ci_lower"], frame["ci_upper"], strict=True)
    ]


def hazard_ratio_table(
    outputs: Iterable[ModelOutput], checks: Mapping[str, PHCheck] | None = None
) -> pd.DataFrame:
    """Manuscript HR table: every Cox term, each two-stage pooled row, each Bayesian pooled
    and predictive row (raw numbers plus an "HR (95% CI)" text column).

    With the run's PH ``checks`` (:func:`pooled.report.checks.ph_checks`), the tested
    model's terms carry their own PH test p-value (``PH test p``) and every row of the
    exposure at an endpoint whose PH check rejects carries the flag (``PH check``).
    """
    checks = checks or {}
    rows = []
    for out in outputs:
        frame = out.to_frame()
        if frame.empty:
            continue
        if out.kind == "cox":
            pick = frame
        elif out.kind == "two_stage" and "row_type" in frame:
            pick = frame[frame["row_type"] == "pooled"]
        elif out.kind in ("bayes", "bayes_meta") and "quantity" in frame:
            pick = frame[frame["quantity"].isin(["pooled", "predictive", "subtype"])]
        elif out.kind == "sensitivity":
            pick = frame
        else:
            continue
        check = checks.get(out.endpoint)
        ph_p: dict[str, float] = {}
        if check is not None and out.kind == "cox" and check.model == (out.label or out.name):
            table = check.zph.result.table
            ph_p = {str(t): float(p) for t, p in zip(table["term"], table["p_value"], strict=True)}
        tested = out.kind != "cox" or (check is not None and check.model == (out.label or out.name))
        for rec in pick.to_dict("records"):
            term = str(rec.get("term", ""))
            flag = check.flag(tested=tested) if check is not None and term in check.terms else ""
            rows.append(
                {
                    "Analysis": out.label or out.name,
                    "Endpoint": str(rec.get("endpoint", out.endpoint) or out.endpoint).upper(),
                    "Model": rec.get("model", ""),
                    "Term": rec.get("term", ""),
                    "HR": rec.get("hr", np.nan),
                    "95% CI lower": rec.get("ci_lower", np.nan),
                    "95% CI upper": rec.get("ci_upper", np.nan),
                    "p": rec.get("p_value", np.nan),
                    "Patients": rec.get("n", np.nan),
                    "Events": rec.get("events", np.nan),
                    "PH test p": ph_p.get(term, np.nan),
                    "PH check": flag,
                }
            )
    table = pd.DataFrame(
        rows,
        columns=[
            "Analysis",
            "Endpoint",
            "Model",
            "Term",
            "HR",
            "95% CI lower",
            "95% CI upper",
            "p",
            "Patients",
            "Events",
            "PH test p",
            "PH check",
        ],
    )
    table.insert(
        5,
        "HR (95% CI)",
        [
            format_ratio_ci(h, lo, hi)
            for h, lo, hi in zip(
                table["HR"], table["95% CI lower"], table["95% CI upper"], strict=True
            )
        ],
    )
    return table


def heterogeneity_table(outputs: Iterable[ModelOutput]) -> pd.DataFrame:
    """One row per two-stage meta-analysis: pooled HR, tau^2, I^2, Q (df, p), prediction
    interval (from 3 centres on, else empty), centres pooled, and the caveat for fewer than
    5 centres."""
    from pooled.report.checks import MIN_CENTRES_PREDICTION, two_stage_caveat

    rows = []
    for out in outputs:
        meta = getattr(out.result, "meta", None)
        if out.kind != "two_stage" or meta is None:
            continue
        ratio = bool(meta.spec.exponentiate)

        def tr(x: float, ratio: bool = ratio) -> float:
            return float(np.exp(x)) if ratio else float(x)

        rows.append(
            {
                "Analysis": out.label or out.name,
                "Endpoint": out.endpoint.upper(),
                "Method": meta.spec.label,
                "Centres": meta.k,
                "HR": tr(meta.estimate),
                "95% CI lower": tr(meta.ci_lower),
                "95% CI upper": tr(meta.ci_upper),
                "p": meta.p_value,
                "tau^2": meta.tau2,
                "I^2 (%)": meta.i2,
                "Q": meta.q,
                "df": meta.q_df,
                "Q p": meta.q_p_value,
                "PI lower": tr(meta.pi_lower) if meta.k >= MIN_CENTRES_PREDICTION else np.nan,
                "PI upper": tr(meta.pi_upper) if meta.k >= MIN_CENTRES_PREDICTION else np.nan,
                "Caveat": two_stage_caveat(meta),
            }
        )
    return pd.DataFrame(rows)


#: Display names of the fit statistics (:data:`pooled.report.checks.FIT_STATISTICS`).
FIT_STATISTIC_NAMES: Mapping[str, str] = {
    "loglik_null": "Log-lik (null)",
    "loglik": "Log-lik",
    "lr_chisq": "LR chi^2",
    "lr_df": "LR df",
    "lr_p_value": "LR p",
    "wald_chisq": "Wald chi^2",
    "wald_df": "Wald df",
    "wald_p_value": "Wald p",
    "score_chisq": "Score chi^2",
    "score_df": "Score df",
    "score_p_value": "Score p",
    "robust_score_chisq": "Robust score chi^2",
    "robust_score_df": "Robust score df",
    "robust_score_p_value": "Robust score p",
    "aic": "AIC",
    "concordance": "C (Harrell)",
    "concordance_se": "C SE",
}


def fit_statistics_table(outputs: Iterable[ModelOutput]) -> pd.DataFrame:
    """One row per Cox model (and interaction model): patients, events and the fit
    statistics its result carries (:func:`pooled.report.checks.fit_statistics`): log-
    likelihoods, LR / Wald / score tests with df and p, AIC, Harrell's C with its SE.
    Columns no model carries are left out; statistics beyond the known ones keep their name."""
    from pooled.report.checks import fit_statistics

    rows = []
    for out in outputs:
        if out.kind == "cox":
            result = out.result
        elif out.kind == "interaction" and getattr(out.result, "fit", None) is not None:
            result = out.result.fit
        else:
            continue
        stats = fit_statistics(result)
        rows.append(
            {
                "Analysis": out.label or out.name,
                "Endpoint": out.endpoint.upper(),
                "Patients": getattr(result, "n", np.nan),
                "Events": getattr(result, "events", np.nan),
                **{FIT_STATISTIC_NAMES.get(k, k): v for k, v in stats.items()},
            }
        )
    table = pd.DataFrame(rows)
    if not len(table):
        return table
    known = ["Analysis", "Endpoint", "Patients", "Events", *FIT_STATISTIC_NAMES.values()]
    ordered = [c for c in known if c in table.columns]
    ordered += [c for c in table.columns if c not in ordered]
    return table[ordered].dropna(axis=1, how="all")


def time_split_table(run: RunOutput) -> pd.DataFrame:
    """The period-specific HRs of every ``time_split`` output (``Analysis, Endpoint`` and the
    rows of :func:`pooled.report.checks.time_split_rows`)."""
    from pooled.report.checks import exposure_name, time_split_rows

    exposure = exposure_name(run)
    frames: list[pd.DataFrame] = []
    for out in run.outputs:
        if out.kind != "time_split":
            continue
        rows = time_split_rows(out, exposure)
        if len(rows):
            rows.insert(0, "Endpoint", out.endpoint.upper())
            rows.insert(0, "Analysis", out.label or out.name)
            frames.append(rows)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


_COMPARISON_NAMES = {
    "endpoint": "Endpoint",
    "exposure": "Exposure",
    "one_stage_hr": "One-stage HR",
    "one_stage_ci_lower": "One-stage CI lower",
    "one_stage_ci_upper": "One-stage CI upper",
    "one_stage_se": "One-stage SE",
    "one_stage_n": "One-stage patients",
    "one_stage_events": "One-stage events",
    "two_stage_hr": "Two-stage HR",
    "two_stage_ci_lower": "Two-stage CI lower",
    "two_stage_ci_upper": "Two-stage CI upper",
    "two_stage_se": "Two-stage SE",
    "two_stage_n": "Two-stage patients",
    "two_stage_events": "Two-stage events",
    "two_stage_centres": "Centres",
    "difference_log_hr": "Difference in log HR",
    "larger_se": "Larger SE",
    "disagree": "Disagree beyond SE",
    "centre_differences": "Per-centre model differences",
}


def comparison_table(run: RunOutput) -> pd.DataFrame:
    """One-stage against two-stage estimates of the exposure, per endpoint, with display
    column names (:func:`pooled.report.checks.one_vs_two_stage`; SEs on the log scale)."""
    from pooled.report.checks import one_vs_two_stage

    frame = one_vs_two_stage(run)
    if not len(frame):
        return frame
    columns = [c for c in _COMPARISON_NAMES if c in frame.columns]
    table = frame[columns].rename(columns=_COMPARISON_NAMES)
    table["Endpoint"] = table["Endpoint"].astype(str).str.upper()
    return table


def subgroup_table(outputs: Iterable[ModelOutput]) -> pd.DataFrame:
    """The marker's HR within each subgroup level, with the interaction LR p-value."""
    rows = []
    for out in outputs:
        if out.kind != "interaction":
            continue
        within = getattr(out.result, "within", None)
        test = getattr(out.result, "test", None)
        if within is None:
            continue
        for rec in within.to_dict("records"):
            rows.append(
                {
                    "Analysis": out.label or out.name,
                    "Endpoint": out.endpoint.upper(),
                    "Subgroup": rec.get("level", rec.get("term")),
                    "HR": rec["hr"],
                    "95% CI lower": rec["ci_lower"],
                    "95% CI upper": rec["ci_upper"],
                    "p": rec["p_value"],
                    "Interaction p": getattr(test, "p_value", np.nan),
                }
            )
    table = pd.DataFrame(rows)
    if len(table):
        table.insert(6, "HR (95% CI)", _ci_text(table.rename(columns=_CI_NAMES)))
    return table


_CI_NAMES = {"HR": "hr", "95% CI lower": "ci_lower", "95% CI upper": "ci_upper"}

_BAYES_COLUMNS = [
    "quantity",
    "level",
    "term",
    "estimate",
    "hr",
    "ci_lower",
    "ci_upper",
    "prob_hr_gt_1",
    "r_hat",
    "ess_bulk",
    "ess_tail",
    "divergences",
]


def model_flow_table(run: RunOutput) -> pd.DataFrame:
    """Patients used by each model: cohort, left out by reason, analysed (summed over
    centres), and how many miss each covariate; empty for runs without a model flow."""
    flow = getattr(run, "model_flow", None)
    if flow is None or not len(flow.table):
        return pd.DataFrame()
    return flow.summary()


def bayes_table(out: ModelOutput) -> pd.DataFrame:
    """Posterior summary of a Bayesian output with its convergence diagnostics."""
    frame = out.to_frame()
    columns = [c for c in _BAYES_COLUMNS if c in frame.columns]
    columns += [c for c in frame.columns if str(c).startswith("prob_hr_gt_") and c not in columns]
    return frame[columns].reset_index(drop=True)


def _sheet_name(name: str, used: set[str]) -> str:
    bad = "[]:*?/\\"
    clean = "".join("_" if ch in bad else ch for ch in name)[:31] or "Sheet"
    candidate, i = clean, 2
    while candidate.lower() in used:
        suffix = f" ({i})"
        candidate = clean[: 31 - len(suffix)] + suffix
        i += 1
    used.add(candidate.lower())
    return candidate


def _format_sheet(sheet: Any, frame: pd.DataFrame, note: str = "") -> None:
    from openpyxl.styles import Alignment, Border, Font, Side
    from openpyxl.utils import get_column_letter

    bold = Font(bold=True)
    rule = Border(bottom=Side(style="thin"))
    header_row = 1
    for cells in sheet.iter_rows():
        for cell in cells:  # a label starting with '=' (e.g. a centre's arm name) stays text
            if cell.data_type == "f":
                cell.data_type = "s"
    for cell in sheet[header_row]:
        cell.font = bold
        cell.border = rule
        cell.alignment = Alignment(vertical="bottom", wrap_text=True)
    sheet.freeze_panes = sheet.cell(row=header_row + 1, column=1)
    for j, column in enumerate(frame.columns, start=1):
        letter = get_column_letter(j)
        kind = _kind(str(column))
        values = frame[column]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if numeric:
            fmt = EXCEL_FORMATS.get(kind, "0.000")
            if kind == "probability":
                fmt = "0.000"
            if kind == "p":
                fmt = '[<0.001]"<0.001";0.000'
            for row in range(header_row + 1, header_row + 1 + len(frame)):
                sheet[f"{letter}{row}"].number_format = fmt
        texts = [str(column)] + [format_number(v, kind) for v in values.tolist()]
        width = min(max(len(t) for t in texts) + 2, 60)
        sheet.column_dimensions[letter].width = max(width, 8)
    if note:
        sheet.cell(row=len(frame) + 3, column=1, value=note).font = Font(italic=True)


def write_tables_xlsx(run: RunOutput, path: str | Path) -> Path:
    """Write the publication tables of a run to one workbook.

    Sheets: the exclusion flow per centre; the patients each model used; each
    patient-characteristics table (e.g. by
    marker status, by centre); hazard ratios; heterogeneity; subgroups; Bayesian
    posteriors; and all results (the raw tidy table). Headers are bold with a rule, columns
    sized to their contents, numbers kept as numbers with manuscript number formats.

    Examples
    --------
    >>> # write_tables_xlsx(run, "reports/paddy/tables.xlsx")
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheets: list[tuple[str, pd.DataFrame, str]] = [
        ("Exclusion flow", run.flow.to_frame(), "Patients per centre at each step.")
    ]
    model_use = model_flow_table(run)
    if len(model_use):
        sheets.append(
            (
                "Model flow",
                model_use,
                "Cohort patients each model used; per centre in model_flow.csv.",
            )
        )
    from pooled.report.checks import ph_checks
    from pooled.report.guidelines import cohort_profile, prisma_checklist, remark_profile

    special = {
        "definitions": ("Definitions", "What the run analysed, as configured."),
        "endpoint_delivery": (
            "Endpoint delivery",
            "Per centre: endpoints computed from dates or delivered as durations, and the "
            "time origin.",
        ),
        "missing_by_centre": (
            "Missing by centre",
            "Patients missing each variable; 'not collected': the centre has no value at all.",
        ),
    }
    if "definitions" in run.characteristics:
        title, note = special["definitions"]
        sheets.insert(0, (title, run.characteristics["definitions"], note))
    profile = remark_profile(run)
    sheets.append(("Cohort profile", cohort_profile(run), "Received to analysis cohort."))
    if len(profile):
        sheets.append(
            (
                "Reporting profile",
                profile,
                "REMARK profile: per analysis the patients it did not use, with reasons, and "
                "the patients and events it analysed.",
            )
        )
    for name, table in run.characteristics.items():
        if name == "definitions":
            continue
        title, note = special.get(name, (f"Characteristics {name.replace('_', ' ')}", ""))
        sheets.append((title, table, note))
    checks = ph_checks(run)
    sheets.append(
        (
            "Hazard ratios",
            hazard_ratio_table(run.outputs, checks),
            "HR: hazard ratio; CI: confidence interval (credible interval for Bayesian rows). "
            "PH check: the proportional-hazards test of the exposure (or the global test) "
            "rejects at the configured level; the HR averages an effect changing over time.",
        )
    )
    fits = fit_statistics_table(run.outputs)
    if len(fits):
        sheets.append(("Fit statistics", fits, "Harrell's C within strata; tests on the df shown."))
    split = time_split_table(run)
    if len(split):
        sheets.append(("Period-specific HRs", split, "HR of the exposure within each period."))
    het = heterogeneity_table(run.outputs)
    if len(het):
        sheets.append(
            (
                "Heterogeneity",
                het,
                "PI: 95% prediction interval for a new centre (from 3 centres on).",
            )
        )
    comparison = comparison_table(run)
    if len(comparison):
        sheets.append(
            (
                "One- vs two-stage",
                comparison,
                "SE on the log-HR scale; 'disagree' when the log HRs differ by more than the "
                "larger SE.",
            )
        )
    sub = subgroup_table(run.outputs)
    if len(sub):
        sheets.append(
            ("Subgroups", sub, "Interaction p: likelihood-ratio test of the interaction.")
        )
    for o in run.outputs:
        if o.kind in ("bayes", "bayes_meta"):
            sheets.append((f"Bayes {o.endpoint}".strip(), bayes_table(o), o.label))
    sheets.append(("PRISMA-IPD", prisma_checklist(run), "Which PRISMA-IPD items this run covers."))
    sheets.append(("All results", run.results(), "Raw numbers, as results.csv."))

    used: set[str] = set()
    with pd.ExcelWriter(out, engine="openpyxl") as writer:
        for title, frame, note in sheets:
            name = _sheet_name(title, used)
            frame = frame.reset_index(drop=True)
            frame.to_excel(writer, sheet_name=name, index=False)
            _format_sheet(writer.sheets[name], frame, note)
    return out

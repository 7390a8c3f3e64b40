"""Reporting-guideline items of a run: a REMARK-style profile and a PRISMA-IPD checklist.

REMARK (reporting recommendations for tumour marker prognostic studies) asks for the flow of
patients through the study: how many entered, how many were excluded and why, and, for each
analysis, the patients and events it used. PRISMA-IPD asks a pooled analysis of individual
participant data to report, among others, which IPD were obtained, how their integrity was
checked, how heterogeneity was handled and which sensitivity analyses were run. Both read the
run only (:class:`~pooled.run_output.RunOutput`); they return raw tables for the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harmonization.schema import Reason
from pooled.report.checks import method_label

if TYPE_CHECKING:  # pragma: no cover
    from pooled.run_output import ModelOutput, RunOutput

__all__ = ["cohort_profile", "events_of", "prisma_checklist", "remark_profile"]

_BLOCKING = (str(Reason.BLOCKING_ERROR), str(Reason.DUPLICATE_ID))


def events_of(out: ModelOutput) -> float:
    """The events a model analysed (NaN when the result does not say)."""
    result = out.result
    for candidate in (getattr(result, "fit", None), result):
        events = getattr(candidate, "events", None)
        if isinstance(events, (int, np.integer, float, np.floating)) and not isinstance(
            events, bool
        ):
            return float(events)
    summary = getattr(result, "summary", None)
    if isinstance(summary, pd.DataFrame) and "events" in summary:
        return float(summary["events"].sum())
    frame = out.to_frame()
    if "row_type" in frame and (frame["row_type"] == "pooled").any():
        frame = frame.loc[frame["row_type"] == "pooled"]
    if "events" in frame:
        values = pd.to_numeric(frame["events"], errors="coerce").dropna()
        if len(values):
            return float(values.iloc[0])
    return float("nan")


def cohort_profile(run: RunOutput) -> pd.DataFrame:
    """The patients from received to the analysis cohort: ``stage, patients, detail`` (one
    row per exclusion step with its reason, in the order of the flow)."""
    flow = run.flow
    received = int(sum(int(n) for n in flow.received.values()))
    rows: list[dict[str, Any]] = [
        {
            "stage": "received",
            "patients": received,
            "detail": f"{len(flow.received)} centres",
        }
    ]
    steps = flow.steps
    if len(steps):
        grouped = steps.groupby(["step", "reason", "detail"], sort=True)["n"].sum().reset_index()
        for rec in grouped.to_dict("records"):
            if int(rec["n"]) == 0:
                continue
            rows.append(
                {
                    "stage": f"excluded: {rec['reason']}",
                    "patients": int(rec["n"]),
                    "detail": str(rec["detail"]),
                }
            )
    rows.append(
        {
            "stage": "analysis cohort",
            "patients": int(np.asarray(flow.analysed()).sum()),
            "detail": "",
        }
    )
    return pd.DataFrame(rows, columns=["stage", "patients", "detail"])


def remark_profile(run: RunOutput) -> pd.DataFrame:
    """Per analysis: the cohort, the patients it did not use with every reason, the patients
    and events it analysed (``model_flow`` of the run, summed over centres).

    Columns: ``analysis, model, endpoint, cohort, not used, reasons, analysed, events``.
    """
    flow = getattr(run, "model_flow", None)
    columns = ["analysis", "model", "endpoint", "cohort", "not used", "reasons", "analysed"]
    columns.append("events")
    if flow is None or not len(flow.table):
        return pd.DataFrame(columns=columns)
    outputs = {o.name: o for o in run.outputs}
    table = flow.table
    rows = []
    for model in flow.models:
        mine = table.loc[table["model"] == model]
        excluded = mine.loc[mine["step"] == "excluded"]
        text = _reasons_text(excluded)
        out = outputs.get(model)
        base, _, part = model.partition(": ")
        label = out.label if out is not None else (outputs[base].label if base in outputs else "")
        events = events_of(out) if out is not None else np.nan
        if out is None and part:
            label = f"{label or base}: {part}"
            events = _sensitivity_events(outputs.get(base), part)
        rows.append(
            {
                "analysis": label or model,
                "model": model,
                "endpoint": str(mine["endpoint"].iloc[0]),
                "cohort": int(mine.loc[mine["step"] == "cohort", "n"].sum()),
                "not used": int(excluded["n"].sum()),
                "reasons": text or "none",
                "analysed": int(mine.loc[mine["step"] == "analysed", "n"].sum()),
                "events": events,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _reasons_text(excluded: pd.DataFrame) -> str:
    """``"covariate missing (complete-case): age 106, grade 4; endpoint missing: dfs 12"``:
    each reason once, with its details and counts, in the order of the flow."""
    parts = []
    details = excluded.assign(detail=excluded["detail"].fillna("").astype(str))
    for reason, group in details.groupby("reason", sort=False):
        counts = group.groupby("detail", sort=False)["n"].sum()
        shown = [f"{d} {int(n):,}" if d else f"{int(n):,}" for d, n in counts.items() if int(n)]
        if shown:
            parts.append(f"{reason}: {', '.join(shown)}")
    return "; ".join(parts)


def _sensitivity_events(out: ModelOutput | None, analysis: str) -> float:
    """The events of one row (``without A``) of a sensitivity table."""
    if out is None:
        return float("nan")
    frame = out.to_frame()
    if "model" not in frame or "events" not in frame:
        return float("nan")
    found = frame.loc[frame["model"].astype(str) == f"sensitivity: {analysis}", "events"]
    values = pd.to_numeric(found, errors="coerce").dropna()
    return float(values.iloc[0]) if len(values) else float("nan")


def prisma_checklist(run: RunOutput) -> pd.DataFrame:
    """PRISMA-IPD items a pooled analysis report answers: ``item, covered, what the run
    shows`` with ``covered`` one of yes, partly, no."""
    flow = run.flow
    prov = dict(run.provenance)
    received = int(sum(int(n) for n in flow.received.values()))
    analysed = int(np.asarray(flow.analysed()).sum())
    kinds = {o.kind for o in run.outputs}
    rows: list[tuple[str, str, str]] = []
    centres_with_data = sum(1 for n in flow.received.values() if int(n) > 0)
    rows.append(
        (
            "IPD obtained (flow of centres and patients)",
            "yes",
            f"{centres_with_data} of {len(flow.received)} centres delivered IPD: {received:,} "
            f"patients received, {analysed:,} in the analysis cohort; every exclusion with "
            "its reason in the exclusion flow and, per model, in the reporting profile. "
            "Centres or studies invited but not providing IPD are not known to the run.",
        )
    )
    steps = flow.steps
    blocking = (
        steps.loc[steps["reason"].astype(str).isin(_BLOCKING)] if len(steps) else pd.DataFrame()
    )
    n_blocked = int(blocking["n"].sum()) if len(blocking) else 0
    rules = (
        blocking.loc[blocking["n"] > 0, "detail"].astype(str).drop_duplicates().tolist()
        if len(blocking)
        else []
    )
    versions = prov.get("upload_versions") or {}
    hashes = prov.get("upload_sha256") or {}
    integrity = (
        f"every upload validated against the schema at ingest; {n_blocked:,} rows with "
        "blocking findings excluded"
        + (f" (rules: {', '.join(rules)})" if rules else "")
        + f"; uploads identified by version and sha256 for {len(versions or hashes)} centres "
        "(reproducibility section). Not in this report: the non-blocking findings and the "
        "centre-level checks (follow-up completeness, counts against published reports), "
        "which are in the validation reports of the store (`pooled store report`)."
    )
    rows.append(("IPD integrity checks and their results", "partly", integrity))
    origin = prov.get("time_origin", "")
    not_converted = prov.get("origin_not_converted") or {}
    rows.append(
        (
            "Harmonised definitions of exposure and outcomes",
            "yes",
            "definitions section: exposure, each endpoint's definition and how every centre "
            "delivered it"
            + (f"; times counted from {origin}" if origin else "")
            + (
                "; durations of "
                + ", ".join(f"{c} ({n})" for c, n in sorted(not_converted.items()))
                + " could not be converted to that origin"
                if not_converted
                else ""
            )
            + ".",
        )
    )
    methods = []
    if "cox" in kinds:
        methods.append("one-stage Cox models stratified by centre")
    if "two_stage" in kinds:
        methods.append("two-stage random-effects meta-analysis of per-centre Cox models")
    if kinds & {"bayes", "bayes_meta"}:
        methods.append("Bayesian hierarchical models with random centre effects")
    rows.append(
        (
            "Methods of synthesis (one-stage, two-stage)",
            "yes" if methods else "no",
            "; ".join(methods)
            + ("; compared side by side" if {"cox", "two_stage"} <= kinds else ""),
        )
    )
    het = []
    for out in run.of_kind("two_stage"):
        meta = getattr(out.result, "meta", None)
        if meta is not None:
            het.append(f"{out.endpoint.upper()}: {method_label(meta)}, k = {meta.k} centres")
    rows.append(
        (
            "Methods for heterogeneity (tau^2, I^2, Q, prediction interval)",
            "yes" if het else "no",
            ("; ".join(het) + ". Caveat below 5 centres; prediction interval from 3 centres on.")
            if het
            else "no two-stage model in this run.",
        )
    )
    rows.append(
        (
            "Exploration of variation (subgroups, interactions)",
            "yes" if "interaction" in kinds else "no",
            ", ".join(o.label or o.name for o in run.of_kind("interaction"))
            or "no interaction in this run.",
        )
    )
    sens = []
    for out in run.of_kind("sensitivity"):
        frame = out.to_frame()
        if "model" in frame:
            labels = frame["model"].astype(str).str.replace("sensitivity: ", "").tolist()
            sens.append(f"{out.label or out.name}: {', '.join(labels)}")
    rows.append(
        (
            "Sensitivity analyses",
            "yes" if sens else "no",
            "; ".join(sens) or "no sensitivity analysis in this run.",
        )
    )
    rows.append(
        (
            "Missing data",
            "yes",
            "complete-case models; missing and not-collected values per variable and centre "
            "in the patient characteristics; patients each model did not use, with reasons, "
            "in the reporting profile.",
        )
    )
    rows.append(
        (
            "Model assumptions (proportional hazards)",
            "yes" if "zph" in kinds else "no",
            "scaled-Schoenfeld tests with flags on the hazard ratios"
            if "zph" in kinds
            else "no PH test in this run.",
        )
    )
    rows.append(
        (
            "Risk of bias within centres and across centres",
            "partly" if "two_stage" in kinds else "no",
            "funnel plots of the centre estimates (from 3 centres); no risk-of-bias "
            "assessment of the centres' cohorts is recorded in the run.",
        )
    )
    rows.append(
        (
            "Certainty of the evidence (e.g. GRADE)",
            "no",
            "not assessed by the software.",
        )
    )
    return pd.DataFrame(rows, columns=["item", "covered", "what the run shows"])

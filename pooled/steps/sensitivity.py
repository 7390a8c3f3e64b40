"""Sensitivity analyses of the primary endpoint's adjusted Cox model: one row each.

Section ``sensitivity``: refit without each centre, at other cut-offs of the exposure, with
other missing-covariate handling; the further ties of ``models.cox`` add rows too. An
analysis the data cannot support is a row with a note; each fit whose patients differ from
the adjusted model's is accounted for in the model flow. The refits, and the imputations of
multiple imputation, are tasks run where the ``execution`` section says
(:mod:`pooled.steps.bootstrap`; in this process without it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

from harmonization.schema import Reason
from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.errors import DataError, PooledWarning
from pooled.exposures import COUNT_KINDS, THRESHOLD_KINDS, derive_exposure
from pooled.model_flow import ModelFlow, account_for_model
from pooled.run_output import ModelOutput, SensitivityResult
from pooled.steps.base import AnalysisContext, Step, endpoint_frame, per_centre
from pooled.steps.cox import COX, cox_flow, cox_spec

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "sensitivity", "section",
        "Sensitivity analyses of the primary endpoint's adjusted Cox model: one row each in "
        "the sensitivity table (an analysis the data cannot support is a row with a note).",
        "sensitivity: {leave_one_centre_out: true, thresholds: [2, 3], missing: [mice]}",
        default={},
    ),
    ConfigKey(
        "sensitivity.leave_one_centre_out", "boolean",
        "Refit without each centre in turn.",
        "sensitivity: {leave_one_centre_out: true}", default=False,
    ),
    ConfigKey(
        "sensitivity.thresholds", "list of numbers",
        "Other cut-offs of the exposure (kinds threshold, her2_ctc, phenotype_score, "
        "risk_concordance).",
        "sensitivity: {thresholds: [2, 3]}", default=(),
    ),
    ConfigKey(
        "sensitivity.missing", "list of choices",
        "Missing-covariate handling: complete cases (the primary analysis) or multiple "
        "imputation by chained equations.",
        "sensitivity: {missing: [mice]}", default=(), allowed=("complete_case", "mice"),
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SensitivitySpec:
    """The ``sensitivity`` section."""

    leave_one_centre_out: bool = False
    thresholds: tuple[float, ...] = ()
    missing: tuple[Literal["complete_case", "mice"], ...] = ()


def parse_sensitivity(section: SectionReader) -> SensitivitySpec:
    """The ``sensitivity`` section; other cut-offs need an exposure with a cut-off."""
    thresholds = section.get("thresholds")
    kind = section.config.exposure.kind
    if thresholds and kind not in THRESHOLD_KINDS:
        raise section.error(
            ("thresholds",),
            f"'thresholds' needs an exposure with a cut-off (kind {', '.join(THRESHOLD_KINDS)});"
            f" the exposure is of kind {kind!r}. Remove 'thresholds'.",
        )
    return SensitivitySpec(
        leave_one_centre_out=section.get("leave_one_centre_out"),
        thresholds=thresholds,
        missing=section.get("missing"),
    )


def runs_at(section: SensitivitySpec, ctx: AnalysisContext) -> bool:
    """At the primary endpoint, when the section or further Cox ties ask for an analysis."""
    wanted = (
        section.leave_one_centre_out
        or section.thresholds
        or section.missing
        or len(ctx.section(COX.name).ties) > 1
    )
    return ctx.endpoint == ctx.primary_endpoint and bool(wanted)


def fit_noting(data: Any, spec: Any) -> tuple[Any, list[tuple[type[Warning], str]]]:
    """A sensitivity analysis's Cox fit as a task: the fit, or the ``DataError`` the data
    raised, and the warnings it gave (re-issued where the run is, wherever the fit ran)."""
    from pooled.models.cox import fit_cox

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            outcome: Any = fit_cox(data, spec)
        except DataError as exc:
            outcome = exc
    return outcome, [(w.category, str(w.message)) for w in caught]


def _fit_all(
    analyses: list[tuple[str, Any, Any, dict[str, Any]]], ctx: AnalysisContext
) -> list[Any]:
    """Every analysis's fit (or its ``DataError``), in order, on the run's engine: one task per
    refit, and one per imputation of a multiply imputed analysis."""
    import contextlib

    from pooled.distributed.engine import Task, active_engine, engine, run_tasks
    from pooled.distributed.mice import fit_cox_mice_tasks
    from pooled.steps.bootstrap import execution_of

    execution = execution_of(ctx)
    specs = [
        cox_spec(ctx, ctx.endpoint, interactions=False, term_lr_tests=False, **changes)
        for _, _, _, changes in analyses
    ]
    session = (
        engine(execution)
        if execution.kind != "serial" and active_engine() is None
        else contextlib.nullcontext()
    )
    outcomes: list[Any] = [None] * len(analyses)
    with session:
        plain = [i for i, spec in enumerate(specs) if spec.missing != "mice"]
        run = run_tasks(
            [
                Task(f"sensitivity-{i + 1:03d}", fit_noting, (analyses[i][1], specs[i]))
                for i in plain
            ],
            execution=execution,
        )
        for i, (fit, caught) in zip(plain, run.values(), strict=True):
            for category, message in caught:
                warnings.warn(message, category, stacklevel=4)
            outcomes[i] = fit
        for i, spec in enumerate(specs):
            if spec.missing == "mice":
                try:
                    outcomes[i] = fit_cox_mice_tasks(analyses[i][1], spec, execution=execution)
                except DataError as exc:
                    outcomes[i] = exc
    return outcomes


def run_sensitivity(
    cohort: AnalysisDataset, section: SensitivitySpec, ctx: AnalysisContext
) -> list[ModelOutput]:
    """The exposure's HR in the adjusted Cox model under each sensitivity analysis.

    The refits (and the imputations of a multiple imputation) are independent tasks, run
    where the ``execution`` section says (in this process without it), with the same results
    wherever they run.
    """
    from pooled.results import tidy_frame

    endpoint, exposure = ctx.endpoint, ctx.exposure
    patients = cohort.patients
    data = endpoint_frame(patients, endpoint)
    rows: list[dict[str, Any]] = []
    flows: list[ModelFlow] = []
    output = f"sensitivity_{endpoint}"
    primary = cox_spec(ctx, endpoint, interactions=False)
    needed = [*primary.covariates, *primary.strata]
    reference = account_for_model(  # the patients of the adjusted model, to compare with
        patients,
        model="",
        endpoint=endpoint,
        analysed=per_centre(data.dropna(subset=needed)),
        required=(primary.duration, primary.event),
        covariates=needed,
    )
    # (label, patients, what they leave out, changes to the adjusted model), in table order
    analyses: list[tuple[str, Any, dict[str, Any] | None, dict[str, Any]]] = []
    for ties in ctx.section(COX.name).ties[1:]:
        analyses.append((f"ties {ties}", data, None, {"ties": ties}))
    if section.leave_one_centre_out and data["centre"].nunique() > 1:
        for centre in sorted(data["centre"].unique()):
            label = f"without {centre}"
            analyses.append(
                (
                    label,
                    data.loc[data["centre"] != centre],
                    {"left_out": patients["centre"] == centre, "left_out_detail": label},
                    {},
                )
            )
    for threshold in section.thresholds:
        label = f"cut-off >= {threshold:g}"
        alt = data.copy()
        alt[exposure.name] = derive_exposure(alt, exposure, threshold=threshold)
        undetermined = derive_exposure(patients, exposure, threshold=threshold).isna()
        analyses.append(
            (
                label,
                alt.loc[alt[exposure.name].notna()],
                {
                    "left_out": undetermined,
                    "left_out_reason": str(Reason.MISSING_MARKER),
                    "left_out_detail": label,
                },
                {},
            )
        )
    for method in section.missing:
        analyses.append((method.replace("_", "-"), data, None, {"missing": method}))
    if not analyses:
        return []
    if exposure.kind in COUNT_KINDS:  # several terms: nothing to refit for this table
        reason = (
            f"the exposure {exposure.name!r} ({exposure.kind}) has no single hazard ratio; "
            "see its terms in the Cox table and models.count_response"
        )
        warnings.warn(
            f"sensitivity analyses ({endpoint}) not run: {reason}", PooledWarning, stacklevel=2
        )
        fits: list[Any] = [DataError(reason)] * len(analyses)
    else:
        fits = _fit_all(analyses, ctx)
    for (label, subset, left_out, _), fit in zip(analyses, fits, strict=True):
        found = None
        if not isinstance(fit, DataError):
            frame = fit.to_frame()
            matches = frame.loc[frame["term"] == exposure.name]
            if len(matches):
                found = matches.iloc[0]
            else:  # a categorical exposure has several terms
                fit = DataError(
                    f"the exposure {exposure.name!r} ({exposure.kind}) has no single hazard "
                    "ratio; see its terms in the Cox table"
                )
        row: dict[str, Any]
        if found is not None:
            row = {str(key): value for key, value in found.items()}
            flow = cox_flow(patients, subset, fit, f"{output}: {label}", **(left_out or {}))
            if not ModelFlow.concat([reference, flow]).same_patients("", f"{output}: {label}"):
                flows.append(flow)
        else:
            if exposure.kind not in COUNT_KINDS:  # (count exposures: warned once above)
                warnings.warn(
                    f"sensitivity analysis '{label}' ({endpoint}) skipped: {fit}",
                    PooledWarning,
                    stacklevel=2,
                )
            row = {"term": exposure.name, "note": f"not estimable: {fit}"}
        row.update(model=f"sensitivity: {label}", analysis=ctx.name, endpoint=endpoint)
        rows.append(row)
    return [
        ModelOutput(
            output,
            "sensitivity",
            endpoint,
            SensitivityResult(tidy_frame(rows)),
            f"Sensitivity analyses, {endpoint.upper()}",
            flow=ModelFlow.concat(flows),
        )
    ]


SENSITIVITY = Step(
    name="sensitivity",
    label="sensitivity",
    run=run_sensitivity,
    section="sensitivity",
    keys=KEYS,
    parse=parse_sensitivity,
    enabled=runs_at,
    title="Sensitivity analyses (`sensitivity`)",
)

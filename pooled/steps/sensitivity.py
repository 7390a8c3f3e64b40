"""Sensitivity analyses of the primary endpoint's adjusted Cox model: one row each.

Section ``sensitivity``: refit without each centre, at other cut-offs of the exposure, with
other missing-covariate handling; the further ties of ``models.cox`` add rows too. An
analysis the data cannot support is a row with a note; each fit whose patients differ from
the adjusted model's is accounted for in the model flow.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

from harmonization.schema import Reason
from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.errors import DataError, PooledWarning
from pooled.exposures import THRESHOLD_KINDS, derive_exposure
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


def run_sensitivity(
    cohort: AnalysisDataset, section: SensitivitySpec, ctx: AnalysisContext
) -> list[ModelOutput]:
    """The exposure's HR in the adjusted Cox model under each sensitivity analysis."""
    from pooled.models.cox import fit_cox
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

    def marker_row(
        subset: Any, label: str, left_out: dict[str, Any] | None = None, **changes: Any
    ) -> None:
        """The marker's HR on ``subset``; an analysis the data cannot support is a row with a note."""
        spec = cox_spec(ctx, endpoint, interactions=False, term_lr_tests=False, **changes)
        row: dict[str, Any]
        try:
            fit = fit_cox(subset, spec)
            frame = fit.to_frame()
            matches = frame.loc[frame["term"] == exposure.name]
            if not len(matches):  # a categorical or spline exposure has several terms
                raise DataError(
                    f"the exposure {exposure.name!r} ({exposure.kind}) has no single hazard "
                    "ratio; see its terms in the Cox table"
                )
            found = matches.iloc[0]
            row = {str(key): value for key, value in found.items()}
            flow = cox_flow(patients, subset, fit, f"{output}: {label}", **(left_out or {}))
            if not ModelFlow.concat([reference, flow]).same_patients("", f"{output}: {label}"):
                flows.append(flow)
        except DataError as exc:
            warnings.warn(
                f"sensitivity analysis '{label}' ({endpoint}) skipped: {exc}",
                PooledWarning,
                stacklevel=3,
            )
            row = {"term": exposure.name, "note": f"not estimable: {exc}"}
        row.update(model=f"sensitivity: {label}", analysis=ctx.name, endpoint=endpoint)
        rows.append(row)

    for ties in ctx.section(COX.name).ties[1:]:
        marker_row(data, f"ties {ties}", ties=ties)
    if section.leave_one_centre_out and data["centre"].nunique() > 1:
        for centre in sorted(data["centre"].unique()):
            label = f"without {centre}"
            marker_row(
                data.loc[data["centre"] != centre],
                label,
                {"left_out": patients["centre"] == centre, "left_out_detail": label},
            )
    for threshold in section.thresholds:
        label = f"cut-off >= {threshold:g}"
        alt = data.copy()
        alt[exposure.name] = derive_exposure(alt, exposure, threshold=threshold)
        undetermined = derive_exposure(patients, exposure, threshold=threshold).isna()
        marker_row(
            alt.loc[alt[exposure.name].notna()],
            label,
            {
                "left_out": undetermined,
                "left_out_reason": str(Reason.MISSING_MARKER),
                "left_out_detail": label,
            },
        )
    for method in section.missing:
        marker_row(data, method.replace("_", "-"), missing=method)
    if not rows:
        return []
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

"""The validation rule catalogue: every rule's id, severity, whether it blocks the row, and
its documented meaning.

The catalogue is a frozen registry (:data:`RULES`, keyed by :class:`RuleId`). Validation
(:mod:`harmonization.validate`) only emits findings whose rule is in it, and the centre-facing
documentation ``docs/validation_rules.md`` is generated from it by :func:`rules_markdown` (a
test checks the file is current; regenerate it with ``python -m harmonization.rules``).

A row with a finding of a *blocking* rule stays in the harmonised table and in the store,
flagged ``blocking = True`` with the rule id in ``reasons``; the analysis dataset excludes it
with the :class:`~harmonization.schema.Reason` given by :func:`reason_of`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from harmonization.schema import Reason

Severity = Literal["error", "warning", "info"]
Scope = Literal["cell", "upload", "centre", "consortium"]

SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

#: Columns of every findings table, in this order (the shared contract).
FINDING_COLUMNS: tuple[str, ...] = (
    "centre",
    "file",
    "sheet",
    "row",
    "column",
    "value",
    "rule",
    "severity",
    "message",
    "field",
)

DEFAULT_DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "validation_rules.md"


class RuleId(enum.StrEnum):
    """Ids of the validation rules (the values appear in findings and in ``reasons``)."""

    TYPE = "type"
    CODE = "code"
    INTEGER = "integer"
    RANGE = "range"
    PLAUSIBLE_RANGE = "plausible_range"
    REQUIRED_MISSING = "required_missing"
    DUPLICATE_ID = "duplicate_id"
    DATE_ORDER = "date_order"
    EVENT_AFTER_LAST_CONTACT = "event_after_last_contact"
    DEATH_BEFORE_RECURRENCE = "death_before_recurrence"
    CONTACT_AFTER_DEATH = "contact_after_death"
    FUTURE_DATE = "future_date"
    EVENT_FLAG = "event_flag"
    RECEPTOR_CONSISTENCY = "receptor_consistency"
    ORPHAN_SAMPLE = "orphan_sample"
    REQUIRED_COLUMN = "required_column"
    UNMAPPED_COLUMN = "unmapped_column"
    BLANK_ROWS = "blank_rows"
    MOSTLY_MISSING = "mostly_missing"
    FOLLOWUP_COMPLETENESS = "followup_completeness"
    MEDIAN_FOLLOWUP = "median_followup"
    REPORTED_PATIENTS = "reported_patients"
    REPORTED_EVENTS = "reported_events"
    REPORTED_POSITIVITY = "reported_positivity"
    EVENT_RATE_OUTLIER = "event_rate_outlier"
    POSITIVITY_OUTLIER = "positivity_outlier"
    CROSS_CENTRE_DUPLICATE = "cross_centre_duplicate"
    AMBIGUOUS_DECIMAL = "ambiguous_decimal"
    IMPLAUSIBLE_DATE = "implausible_date"
    DERIVED_RANGE = "derived_range"
    ENDPOINT_CONSISTENCY = "endpoint_consistency"
    CENTRE_MISMATCH = "centre_mismatch"
    COPIES_DISAGREE = "copies_disagree"
    RAGGED_ROW = "ragged_row"
    UNCLOSED_QUOTE = "unclosed_quote"
    MULTILINE_RECORD = "multiline_record"
    FORMULA_WITHOUT_VALUE = "formula_without_value"
    UNNAMED_COLUMN = "unnamed_column"
    DUPLICATE_HEADER = "duplicate_header"
    NO_DATA_ROWS = "no_data_rows"
    MAPPING_CHECK = "mapping_check"
    MAPPING_CHECK_ERROR = "mapping_check_error"


@dataclass(frozen=True, slots=True)
class Rule:
    """One validation rule.

    Attributes
    ----------
    id : the rule id used in findings.
    severity : ``error``, ``warning`` or ``info``.
    blocks_row : a finding of this rule excludes the row from analysis (it stays in the store).
    scope : ``cell`` (one cell of one row), ``upload`` (the whole upload), ``centre`` (one
        centre's data as a whole) or ``consortium`` (a centre compared with the others).
    title : a short name for summaries.
    meaning : what the rule checks and how to fix a finding.
    """

    id: RuleId
    severity: Severity
    blocks_row: bool
    scope: Scope
    title: str
    meaning: str


def _rule(
    id: RuleId, severity: Severity, blocks_row: bool, scope: Scope, title: str, meaning: str
) -> tuple[RuleId, Rule]:
    return id, Rule(id, severity, blocks_row, scope, title, " ".join(meaning.split()))


RULES: MappingProxyType[RuleId, Rule] = MappingProxyType(
    dict(
        [
            _rule(RuleId.TYPE, "error", False, "cell", "Unreadable value", """
                The cell cannot be read as the field's type: text in a number column, or a
                date that does not follow the centre's date format. The value is treated as
                missing. Fix the cell, or the date format / decimal sign in the centre
                mapping."""),
            _rule(RuleId.CODE, "error", False, "cell", "Unknown code", """
                The value is not one of the schema's codes for the field and the centre
                mapping does not translate it (under `codes`). The value is treated as
                missing. Fix the cell, or add the centre's code to its mapping."""),
            _rule(RuleId.INTEGER, "error", False, "cell", "Not a whole number", """
                A count (an integer field such as `ctc_count`) holds a fractional number. The
                value is treated as missing. Counts are whole numbers of cells or nodes."""),
            _rule(RuleId.RANGE, "error", False, "cell", "Out of range", """
                The value is outside the schema's hard limits (`min`/`max`, after unit
                conversion), e.g. a negative CTC count or an age of 170. The value is treated
                as missing. Check the cell and the unit the centre uses."""),
            _rule(RuleId.PLAUSIBLE_RANGE, "warning", False, "cell", "Implausible value", """
                The value is inside the hard limits but outside the plausible range
                (`warn_min`/`warn_max`), e.g. a blood volume of 80 ml or an age of 15. The
                value is kept; please confirm it."""),
            _rule(RuleId.REQUIRED_MISSING, "error", True, "cell", "Required value missing", """
                A required field (e.g. `patient_id`, `setting`) is empty in this row. The row
                is excluded from analysis until the value is supplied."""),
            _rule(RuleId.DUPLICATE_ID, "error", True, "cell", "Duplicate patient id", """
                The patient id (for serial samples: patient id and time point) occurs more
                than once in the upload. The finding names each occurrence after the first
                and the row of the first; all occurrences are excluded until the duplicate
                is resolved."""),
            _rule(RuleId.DATE_ORDER, "error", True, "cell", "Dates in the wrong order", """
                `surgery_date` before `diagnosis_date` (names the surgery date); an event or
                contact date (recurrence, distant recurrence, progression, treatment failure,
                death, last contact) before the time origin (`diagnosis_date` in early,
                `sample_date` in metastatic disease; names that date); in early disease a
                `sample_date` more than 365 days before diagnosis or more than 365 days after
                surgery (names the sample date)."""),
            _rule(RuleId.EVENT_AFTER_LAST_CONTACT, "error", True, "cell",
                  "Event after last contact", """
                A recurrence, distant recurrence, progression or treatment-failure date lies
                after `last_contact_date` in a patient who is alive (for a dead patient: a
                treatment-failure date after `death_date`). Names the event date. The last
                contact date is the last date the patient was known to be alive and
                event-free status known; it cannot precede an event."""),
            _rule(RuleId.DEATH_BEFORE_RECURRENCE, "error", True, "cell",
                  "Death before recurrence", """
                `death_date` lies before a recurrence, distant recurrence or progression date
                of the same patient. Names the death date (one finding per row)."""),
            _rule(RuleId.CONTACT_AFTER_DEATH, "error", True, "cell", "Contact after death", """
                `last_contact_date` lies more than 30 days after `death_date`. Names the last
                contact date."""),
            _rule(RuleId.FUTURE_DATE, "error", True, "cell", "Date in the future", """
                A date lies after the day of validation (often a typo in the year). Names that
                date; the date is then left out of the other date rules."""),
            _rule(RuleId.EVENT_FLAG, "error", True, "cell", "Event flag contradicts dates", """
                A delivered `<endpoint>_event` flag contradicts the delivered dates: e.g. a
                `death_date` is present but `os_event` is 0, or `os_event` is 1 although the
                centre delivers dates and there is no `death_date` (for `bcss_event`: the
                cause of death). Names the event flag column."""),
            _rule(RuleId.AMBIGUOUS_DECIMAL, "error", False, "cell", "Ambiguous decimal sign", """
                A number written as text uses the other decimal sign than the centre's mapping
                says (`56.5` where the centre writes `56,5`, or `1,4` where it writes `1.4`),
                so it could be a decimal or a thousands separator. The value is not read
                (treated as missing). Write it with the centre's decimal sign, or correct
                `decimal` in the mapping."""),
            _rule(RuleId.IMPLAUSIBLE_DATE, "error", False, "cell", "Implausible date", """
                A date before the schema's earliest plausible date (`dates.earliest`, e.g.
                1950-01-01); typically a year typed into a date cell (Excel shows 2009 as
                1905-07-01) or a wrong century. The date is treated as missing."""),
            _rule(RuleId.DERIVED_RANGE, "error", False, "cell", "Derived time out of range", """
                A survival time computed from the dates (e.g. `os_months` from diagnosis to
                last contact) falls outside the schema's range for that time (e.g. more than
                600 months). Names the date that ends the time; the endpoint is treated as
                missing for the row. Check both dates."""),
            _rule(RuleId.ENDPOINT_CONSISTENCY, "error", True, "cell",
                  "Endpoints contradict each other", """
                Delivered endpoint flags or times contradict each other given the endpoint
                definitions: a death (`os_event` 1) with `dfs_event` 0 although DFS counts
                death as an event; a `bcss_event` without `os_event`; a DFS, DDFS, PFS or TTF
                time beyond the OS time of the same patient. Names the flag or time that
                disagrees."""),
            _rule(RuleId.CENTRE_MISMATCH, "error", True, "cell", "Row of another centre", """
                The upload's own centre column names another centre than the centre mapping.
                The row is excluded: was another centre's file sent under this mapping?"""),
            _rule(RuleId.COPIES_DISAGREE, "error", False, "cell",
                  "Duplicated columns disagree", """
                The same header is written twice in the upload and the two columns hold
                different values on this row. Neither is read; correct or delete one copy."""),
            _rule(RuleId.RAGGED_ROW, "error", True, "cell", "Row with too many or too few fields",
                  """
                A csv row has more or fewer fields than the header (a stray separator, a
                missing one, or a row written with another separator), so its values may be
                shifted. Names the row; the row is excluded until it is corrected."""),
            _rule(RuleId.UNCLOSED_QUOTE, "error", True, "cell", "Unclosed quote", """
                A csv line opens a quote (`"`) that is never closed, which would swallow
                every later row into one cell. The line is read with the quote as a plain
                character so no later row is lost, and the row is excluded until the quote
                is removed or closed."""),
            _rule(RuleId.MULTILINE_RECORD, "warning", False, "cell", "Row spans several lines",
                  """
                A quoted csv value contains line breaks, so one row spans several lines of
                the file. The row is read; check that the value is meant to span lines."""),
            _rule(RuleId.FORMULA_WITHOUT_VALUE, "error", False, "cell",
                  "Formula without a saved value", """
                An .xlsx cell holds a formula whose result was never saved (the workbook was
                written by a program that does not calculate), so the cell reads as empty.
                Open the file in Excel, let it calculate and save it (or paste values)."""),
            _rule(RuleId.MAPPING_CHECK, "warning", False, "cell", "Centre-specific check", """
                A consistency rule the centre mapping states for this centre's columns
                (`checks:` with `severity: warning`, an expression that must be true on every
                row) is false on this row; the message is the mapping's. The row is kept."""),
            _rule(RuleId.MAPPING_CHECK_ERROR, "error", True, "cell",
                  "Centre-specific check failed", """
                As `mapping_check`, for a check the mapping marks `severity: error`: the row
                is excluded until it is corrected."""),
            _rule(RuleId.RECEPTOR_CONSISTENCY, "warning", False, "cell",
                  "Receptors inconsistent", """
                `er_status`/`pr_status` disagree with `er_percent`/`pr_percent` (positive at
                >= 1 % stained nuclei), `her2_status` disagrees with `her2_ihc`/`her2_ish`
                (positive: IHC 3+, or 2+ with ISH amplification), or a delivered `subtype`
                disagrees with the subtype derived from receptors, HER2, grade and Ki-67.
                Names the status (or subtype) column. The delivered status is kept."""),
            _rule(RuleId.ORPHAN_SAMPLE, "error", True, "cell", "Sample without patient", """
                A serial sample's `patient_id` does not occur in the centre's patients table.
                Names the patient id column of the samples table."""),
            _rule(RuleId.REQUIRED_COLUMN, "error", True, "upload", "Required column missing", """
                A required schema field is not provided by the centre mapping (no column and
                no constant). Every row is excluded until the mapping provides it."""),
            _rule(RuleId.UNMAPPED_COLUMN, "info", False, "upload", "Column not used", """
                An upload column that no schema field maps. It is not read; map it in the
                centre mapping if it holds schema data."""),
            _rule(RuleId.UNNAMED_COLUMN, "warning", False, "upload", "Column without header",
                  """
                A column has data but no header, so it is not read. Give it a header and map
                it, or delete it."""),
            _rule(RuleId.DUPLICATE_HEADER, "warning", False, "upload", "Header written twice", """
                The same header is written on two or more columns. A mapping that names it
                reads every copy: where only one copy has a value that value is used, where
                they disagree the cell is a `copies_disagree` finding. Rename or delete the
                extra column."""),
            _rule(RuleId.NO_DATA_ROWS, "error", False, "upload", "No data rows", """
                The table has a header but no data rows. `pooled ingest` refuses it unless
                `--allow-empty` is given (then the centre is stored with 0 patients and
                appears in the exclusion flow with 0 received)."""),
            _rule(RuleId.BLANK_ROWS, "info", False, "upload", "Blank rows", """
                Fully blank rows between data rows were skipped (counted, not lost)."""),
            _rule(RuleId.MOSTLY_MISSING, "warning", False, "centre", "Field mostly missing", """
                More than half of the centre's rows have no value for a mapped field (event
                dates, cause of death and ISH, which are empty by design for most patients,
                are not checked)."""),
            _rule(RuleId.FOLLOWUP_COMPLETENESS, "warning", False, "centre",
                  "Follow-up incomplete", """
                Clark's completeness index (observed over potential follow-up time up to the
                centre's data cut-off, the latest contact or death date) is below 0.8, or in
                early disease fewer than half of the patients could have been followed for 5
                years. Update the last contact dates."""),
            _rule(RuleId.MEDIAN_FOLLOWUP, "info", False, "centre", "Median follow-up", """
                Median follow-up by the reverse Kaplan-Meier method (overall survival with
                censoring as the event), with its interquartile range, in months."""),
            _rule(RuleId.REPORTED_PATIENTS, "error", False, "centre",
                  "Patients differ from report", """
                The number of distinct patients in the upload differs by more than 2 % from
                the number the centre published or reported (`reported.patients` in the
                mapping; PRISMA-IPD integrity check)."""),
            _rule(RuleId.REPORTED_EVENTS, "warning", False, "centre",
                  "Events differ from report", """
                The number of events of an endpoint differs by more than 5 % (and by more
                than one event) from `reported.events` in the mapping."""),
            _rule(RuleId.REPORTED_POSITIVITY, "warning", False, "centre",
                  "Positivity differs from report", """
                The share of marker-positive patients (`ctc_positive`: >= 1 CTC per 7.5 ml in
                early, >= 5 in metastatic disease, unless a threshold is given;
                `dtc_positive`: >= 1 DTC) differs by more than 5 percentage points from
                `reported.positivity` in the mapping."""),
            _rule(RuleId.EVENT_RATE_OUTLIER, "warning", False, "consortium",
                  "Event rate far from others", """
                The centre's event rate per person-year (overall survival, and disease-free
                survival in early / progression-free survival in metastatic disease) is far
                from the pooled rate of the other centres in the same setting: funnel-plot
                Poisson z-score with |z| > 3 (needs at least 3 centres)."""),
            _rule(RuleId.POSITIVITY_OUTLIER, "warning", False, "consortium",
                  "Positivity far from others", """
                The centre's share of CTC- or DTC-positive patients is far from the pooled
                share of the other centres in the same setting: funnel-plot binomial z-score
                with |z| > 3 (needs at least 3 centres)."""),
            _rule(RuleId.CROSS_CENTRE_DUPLICATE, "warning", False, "consortium",
                  "Same patient at two centres", """
                A patient of this centre has the same fingerprint as a patient of another
                centre (diagnosis and surgery dates, age, tumour size, positive nodes, grade,
                ER/PR/HER2 status): probably one patient sent twice. Names the patient id; the
                message names the other centre's patient and row."""),
        ]
    )
)  # fmt: skip


def rule(rule_id: str) -> Rule:
    """The catalogue entry of ``rule_id``; ``KeyError`` naming the known ids otherwise."""
    try:
        return RULES[RuleId(rule_id)]
    except ValueError:
        raise KeyError(
            f"'{rule_id}' is not a validation rule; known rules: {', '.join(RULES)}."
        ) from None


def reason_of(rule_id: str) -> Reason:
    """The exclusion-flow :class:`Reason` of a blocking rule id found in ``reasons``."""
    if rule_id == RuleId.DUPLICATE_ID:
        return Reason.DUPLICATE_ID
    return Reason.BLOCKING_ERROR


def blocking_rules() -> frozenset[str]:
    """Ids of the rules whose findings exclude the row from analysis."""
    return frozenset(str(r.id) for r in RULES.values() if r.blocks_row)


def rules_frame():  # -> pd.DataFrame (pandas imported lazily to keep this module light)
    """The catalogue as a table: ``rule, severity, blocks_row, scope, title, meaning``."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "rule": str(r.id),
                "severity": r.severity,
                "blocks_row": r.blocks_row,
                "scope": r.scope,
                "title": r.title,
                "meaning": r.meaning,
            }
            for r in RULES.values()
        ]
    )


_SCOPE_HEADINGS = {
    "cell": "Row-level rules (one cell of one row)",
    "upload": "Whole-upload rules",
    "centre": "Centre-level rules (one centre's data as a whole)",
    "consortium": "Cross-centre rules (a centre compared with the others)",
}


def rules_markdown() -> str:
    """The rule catalogue as markdown (the content of ``docs/validation_rules.md``)."""
    lines = [
        "# Validation rules",
        "",
        "<!-- Generated by harmonization.rules.rules_markdown(); do not edit by hand. -->",
        "<!-- Regenerate with: .venv/bin/python -m harmonization.rules -->",
        "",
        "Every finding of `pooled validate` names one of these rules. Findings have the",
        "columns `" + ", ".join(FINDING_COLUMNS) + "`: `row` is the row number as you see it",
        "in your own file and `column` your own header (`(constant)` for a value the centre",
        "mapping sets for every row). A *blocking* finding keeps the row in the store but",
        "excludes it from analysis until it is corrected; a non-blocking error (type, code,",
        "integer, range) sets the cell missing.",
        "",
    ]
    for scope, heading in _SCOPE_HEADINGS.items():
        lines += [
            f"## {heading}",
            "",
            "| rule | severity | blocks row | meaning |",
            "|---|---|---|---|",
        ]
        for r in RULES.values():
            if r.scope == scope:
                blocks = "yes" if r.blocks_row else "no"
                lines.append(f"| `{r.id}` | {r.severity} | {blocks} | **{r.title}.** {r.meaning} |")
        lines.append("")
    return "\n".join(lines)


def write_rules_doc(path: str | Path | None = None) -> Path:
    """Write :func:`rules_markdown` to ``path`` (default ``docs/validation_rules.md``)."""
    target = Path(path) if path is not None else DEFAULT_DOC_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(rules_markdown(), encoding="utf-8")
    return target


if __name__ == "__main__":  # pragma: no cover
    print(write_rules_doc())

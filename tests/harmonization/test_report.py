"""Report writers: JSON with the contract's keys, the annotated workbook re-opened with
openpyxl (highlight and comment on the right cell), the terminal summary, and the rule
catalogue and its generated documentation."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from openpyxl import load_workbook

from harmonization.io import read_upload
from harmonization.report import (
    SEVERITY_FILLS,
    summary_table,
    summary_text,
    write_validation_json,
    write_validation_xlsx,
)
from harmonization.rules import (
    DEFAULT_DOC_PATH,
    FINDING_COLUMNS,
    RULES,
    RuleId,
    blocking_rules,
    reason_of,
    rule,
    rules_markdown,
)
from harmonization.schema import Reason
from harmonization.validate import ValidationReport
from tests.harmonization.helpers import (
    HEADERS,
    SAV_HEADERS,
    clean_patients,
    mapping_dict,
    row_of,
    run,
    upload,
)

CONTRACT_RULES = {
    "type", "code", "integer", "range", "plausible_range", "required_missing", "duplicate_id",
    "date_order", "event_after_last_contact", "death_before_recurrence", "contact_after_death",
    "future_date", "event_flag", "receptor_consistency", "required_column", "unmapped_column",
    "blank_rows", "mostly_missing", "followup_completeness", "median_followup",
    "event_rate_outlier", "positivity_outlier", "cross_centre_duplicate", "reported_patients",
    "reported_events", "reported_positivity",
}  # fmt: skip


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    frame = clean_patients(25, seed=3)

    def edit(cells: pd.DataFrame) -> None:
        for field, pos, value in [("age", 2, 170), ("ctc_blood_volume_ml", 5, 80),
                                  ("age", 8, "alt")]:  # fmt: skip
            cells[field] = cells[field].astype(object)
            cells.iloc[pos, cells.columns.get_loc(field)] = value

    path = upload(tmp, frame, "xlsx", edit=edit)
    fields = [c for c in frame.columns if c != "clinical_risk"]
    report, tables = run(path, mapping_dict(fields))
    raw = read_upload(path, sheet="Patienten", header_row=4)
    return tmp, report, raw


def test_json_has_contract_keys_and_rows(checked):
    tmp, report, _ = checked
    path = write_validation_json(report, tmp / "out" / "validation.json")
    records = json.loads(path.read_text(encoding="utf-8"))
    assert len(records) == len(report.findings)
    assert all(list(r) == list(FINDING_COLUMNS) for r in records)
    by_rule = {r["rule"]: r for r in records}
    assert by_rule["range"]["row"] == row_of(2, "xlsx") and by_rule["range"]["column"] == "Alter"
    assert by_rule["median_followup"]["row"] is None


def test_xlsx_highlights_and_comments_the_offending_cells(checked):
    tmp, report, raw = checked
    path = write_validation_xlsx(report, [raw], tmp / "validation.xlsx")
    book = load_workbook(path)
    assert book.sheetnames == ["Summary", "Findings", "Patienten"]
    sheet = book["Patienten"]
    headers = [c.value for c in sheet[4]]
    assert headers == list(raw.columns)  # header on the same row, same column letters
    age_col = headers.index(HEADERS["age"]) + 1
    vol_col = headers.index(HEADERS["ctc_blood_volume_ml"]) + 1
    cell = sheet.cell(row=row_of(2, "xlsx"), column=age_col)
    assert cell.value == 170
    assert cell.fill.fgColor.rgb == SEVERITY_FILLS["error"]
    assert "range" in cell.comment.text and "'age'" in cell.comment.text
    warn = sheet.cell(row=row_of(5, "xlsx"), column=vol_col)
    assert warn.fill.fgColor.rgb == SEVERITY_FILLS["warning"]
    assert "plausible_range" in warn.comment.text
    typo = sheet.cell(row=row_of(8, "xlsx"), column=age_col)
    assert typo.value == "alt" and "type" in typo.comment.text
    # the unmapped column's header carries an info note; clean cells carry none
    risk = sheet.cell(row=4, column=headers.index(HEADERS["clinical_risk"]) + 1)
    assert risk.fill.fgColor.rgb == SEVERITY_FILLS["info"] and risk.comment is not None
    assert sheet.cell(row=row_of(3, "xlsx"), column=age_col).comment is None
    # the data row numbers match the person's file
    assert sheet.cell(row=row_of(0, "xlsx"), column=1).value == raw.cells.iloc[0, 0]
    findings = book["Findings"]
    assert [c.value for c in findings[1]] == list(FINDING_COLUMNS)
    assert findings.freeze_panes == "A2" and findings.auto_filter.ref.startswith("A1:")
    assert findings.max_row == len(report.findings) + 1
    summary = [c.value for row in book["Summary"].iter_rows() for c in row]
    assert "range" in summary and RULES[RuleId.RANGE].meaning in summary


def test_xlsx_for_sav_puts_case_n_on_row_n_plus_one(tmp_path):
    frame = clean_patients(12, seed=4)
    frame.loc[6, "age"] = 150.0
    path = upload(tmp_path, frame, "sav")
    report, _ = run(path, mapping_dict(list(frame.columns), kind="sav"))
    raw = read_upload(path)
    book = load_workbook(write_validation_xlsx(report, raw, tmp_path / "v.xlsx"))
    sheet = book[book.sheetnames[2]]
    headers = [c.value for c in sheet[1]]
    cell = sheet.cell(row=7 + 1, column=headers.index(SAV_HEADERS["age"]) + 1)
    assert cell.value == 150 and "range" in cell.comment.text


def test_terminal_summary(checked):
    _, report, _ = checked
    text = summary_text(report)
    assert "2 error(s), 1 warning(s)" in text
    from rich.console import Console

    console = Console(width=160, record=True)
    console.print(summary_table(report))
    out = console.export_text()
    assert "range" in out and "plausible_range" in out and "Alter" in out
    assert "No findings" in summary_text(ValidationReport.empty())


def test_report_counts_and_merge(checked):
    _, report, _ = checked
    assert report.counts_by_severity == {"error": 2, "warning": 1, "info": 2}
    assert report.counts_by_rule["rule"].tolist()[:2] == ["range", "type"]
    merged = report.merge(report)
    assert merged.n_findings == 2 * report.n_findings and merged.has_errors
    assert ValidationReport.empty().merge(report) is report
    with pytest.raises(ValueError, match="lack the column"):
        ValidationReport(pd.DataFrame({"rule": []}))


def test_catalogue_covers_the_contract():
    assert CONTRACT_RULES <= {str(r) for r in RULES}
    assert rule("duplicate_id").blocks_row and rule("range").severity == "error"
    assert not rule("range").blocks_row and rule("plausible_range").severity == "warning"
    assert "duplicate_id" in blocking_rules() and "receptor_consistency" not in blocking_rules()
    assert reason_of("duplicate_id") is Reason.DUPLICATE_ID
    assert reason_of("date_order") is Reason.BLOCKING_ERROR
    with pytest.raises(KeyError, match="not a validation rule"):
        rule("nonsense")
    with pytest.raises(TypeError):
        RULES["x"] = None  # type: ignore[index]


def test_generated_rules_doc_is_current():
    assert DEFAULT_DOC_PATH.read_text(encoding="utf-8") == rules_markdown(), (
        "docs/validation_rules.md is stale: run .venv/bin/python -m harmonization.rules"
    )

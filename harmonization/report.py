"""Centre-facing validation reports: JSON, an annotated workbook, and a terminal summary.

- :func:`write_validation_json` writes the findings as a list of JSON objects with the keys
  ``centre, file, sheet, row, column, value, rule, severity, message, field``.
- :func:`write_validation_xlsx` writes a workbook the data manager can act on: a *Summary*
  sheet (counts by severity and by rule, with each rule's meaning), a *Findings* sheet
  (autofilter, frozen header, readable widths) and, for each uploaded table, the data as the
  centre sent it, with the header and every data row on the same row number and column
  letter as in their own file, offending cells filled by severity and commented with the
  rule and message.
- :func:`summary_table` (a ``rich`` table) and :func:`summary_text` (one paragraph) for the
  terminal.

Only this module rounds numbers (for display); findings keep the raw values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harmonization.io import RawUpload
from harmonization.mapping import MappedTable
from harmonization.rules import FINDING_COLUMNS, RULES, SEVERITIES, RuleId
from harmonization.validate import ValidationReport

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "SEVERITY_FILLS",
    "summary_table",
    "summary_text",
    "write_frames_xlsx",
    "write_validation_json",
    "write_validation_xlsx",
]

#: Cell fill colours (ARGB hex) by severity.
SEVERITY_FILLS: dict[str, str] = {"error": "FFF4A6A6", "warning": "FFFFE08A", "info": "FFBFD7F2"}
_RICH_STYLES = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_MAX_COMMENTS_PER_CELL = 5


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def write_validation_json(report: ValidationReport, path: str | Path) -> Path:
    """Write the findings as a JSON list of objects (keys in the contract's order).

    Parameters
    ----------
    report : ValidationReport
    path : str or Path
        The ``validation.json`` to write (folders are created).

    Returns
    -------
    Path

    Examples
    --------
    >>> write_validation_json(report, "out/validation.json")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [
        {c: _json_value(v) for c, v in zip(FINDING_COLUMNS, row, strict=True)}
        for row in report.findings[list(FINDING_COLUMNS)].itertuples(index=False, name=None)
    ]
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def _column_letter(index: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(index)


def _cell_value(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.to_pydatetime()
    return value


def _as_text(cell: Any) -> Any:
    """Keep text text: openpyxl turns a string starting with '=' into a live formula."""
    if getattr(cell, "data_type", None) == "f":
        cell.data_type = "s"
    return cell


def _safe(sheet: Any, value: Any) -> Any:
    """A value for ``sheet.append``: text starting with '=' goes in as text, never a formula
    (a centre's cell or header such as '=HYPERLINK(...)' must not run in our report)."""
    from openpyxl.cell import WriteOnlyCell

    value = _cell_value(value)
    if isinstance(value, str) and value.startswith("="):
        return _as_text(WriteOnlyCell(sheet, value=value))
    return value


def _set_widths(sheet: Any, widths: Sequence[float]) -> None:
    for i, width in enumerate(widths, start=1):
        sheet.column_dimensions[_column_letter(i)].width = width


def _summary_sheet(workbook: Any, report: ValidationReport) -> None:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font, PatternFill

    sheet = workbook.create_sheet("Summary")
    _set_widths(sheet, [26, 11, 9, 12, 100])
    bold = Font(bold=True)

    def cells(values: Sequence[Any], *, font: Any = None, fill: str | None = None) -> list[Any]:
        out = []
        for v in values:
            c = _as_text(WriteOnlyCell(sheet, value=v))
            if font is not None:
                c.font = font
            if fill is not None:
                c.fill = PatternFill("solid", fgColor=fill)
            c.alignment = Alignment(wrap_text=True, vertical="top")
            out.append(c)
        return out

    f = report.findings
    centres = ", ".join(sorted({str(c) for c in f["centre"].dropna()})) or "-"
    files = ", ".join(sorted({str(c) for c in f["file"].dropna() if str(c)})) or "-"
    sheet.append(cells(["Validation report"], font=Font(bold=True, size=14)))
    sheet.append(cells(["Centre(s)", centres]))
    sheet.append(cells(["File(s)", files]))
    sheet.append(cells([summary_text(report)]))
    sheet.append([])
    sheet.append(cells(["Severity", "Findings"], font=bold))
    for severity, n in report.counts_by_severity.items():
        sheet.append(cells([severity, n], fill=SEVERITY_FILLS[severity]))
    sheet.append([])
    sheet.append(cells(["Rule", "Severity", "Findings", "Blocks row", "Meaning"], font=bold))
    counts = report.counts_by_rule
    for rule_id, severity, n in counts[["rule", "severity", "n"]].itertuples(
        index=False, name=None
    ):
        rule = RULES[RuleId(rule_id)]
        sheet.append(
            cells(
                [rule_id, severity, int(n), "yes" if rule.blocks_row else "no", rule.meaning],
                fill=SEVERITY_FILLS.get(severity),
            )
        )
    sheet.append([])
    sheet.append(cells(["All rules"], font=bold))
    for rule in RULES.values():
        sheet.append(
            cells([str(rule.id), rule.severity, None, "yes" if rule.blocks_row else "no",
                   f"{rule.title}. {rule.meaning}"])
        )  # fmt: skip


def _findings_sheet(workbook: Any, report: ValidationReport) -> None:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font, PatternFill

    sheet = workbook.create_sheet("Findings")
    f = report.findings[list(FINDING_COLUMNS)]
    widths = []
    for column in FINDING_COLUMNS:
        text = f[column].astype(str) if len(f) else pd.Series([], dtype=str)
        longest = int(text.str.len().quantile(0.95)) if len(text) else 0
        widths.append(
            float(min(max(len(column) + 2, longest + 2), 90 if column == "message" else 40))
        )
    _set_widths(sheet, widths)
    sheet.freeze_panes = "A2"
    last = _column_letter(len(FINDING_COLUMNS))
    sheet.auto_filter.ref = f"A1:{last}{max(len(f) + 1, 2)}"
    header = []
    for column in FINDING_COLUMNS:
        c = _as_text(WriteOnlyCell(sheet, value=column))
        c.font = Font(bold=True)
        header.append(c)
    sheet.append(header)
    fills = {s: PatternFill("solid", fgColor=c) for s, c in SEVERITY_FILLS.items()}
    severity_at = FINDING_COLUMNS.index("severity")
    for row in f.itertuples(index=False, name=None):
        values = [_safe(sheet, v) for v in row]
        cell = WriteOnlyCell(sheet, value=_cell_value(row[severity_at]))
        fill = fills.get(str(values[severity_at]))
        if fill is not None:
            cell.fill = fill
        values[severity_at] = cell
        sheet.append(values)


def _safe_title(name: str, used: set[str]) -> str:
    bad = "[]:*?/\\"
    base = "".join("_" if ch in bad else ch for ch in name)[:28] or "Data"
    title, i = base, 1
    while title.lower() in used:
        i += 1
        title = f"{base[:26]}~{i}"
    used.add(title.lower())
    return title


def _data_source(table: RawUpload | MappedTable) -> tuple[list[str], pd.DataFrame, np.ndarray, int]:
    """Headers, cells, row numbers and header row of one uploaded table as the centre sent it."""
    if isinstance(table, RawUpload):
        return list(table.columns), table.cells, np.asarray(table.source_rows), table.header_row
    headers: list[str] = []
    fields: list[str] = []
    for name, header in table.column_of.items():
        if header != "(constant)" and header not in headers:
            headers.append(header)
            fields.append(name)
    cells = pd.DataFrame({h: table.raw[f].to_numpy() for h, f in zip(headers, fields, strict=True)})
    header_row = int(getattr(table, "header_row", 0) or 0)
    if not header_row:
        first = int(table.source_rows[0]) if len(table.source_rows) else 2
        header_row = max(first - 1, 0)
    return headers, cells, np.asarray(table.source_rows), header_row


def _data_sheet(
    workbook: Any, table: RawUpload | MappedTable, findings: pd.DataFrame, used: set[str]
) -> None:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.comments import Comment
    from openpyxl.styles import Font, PatternFill

    headers, cells, rows, header_row = _data_source(table)
    title = _safe_title(table.sheet or Path(table.file).stem, used)
    sheet = workbook.create_sheet(title)
    widths = [min(max(len(h) + 2, 8), 40) for h in headers]
    _set_widths(sheet, widths)
    # sav/dta have no header row in the file: header on row 1, case n on row n + 1
    offset = 1 if header_row == 0 else 0
    header_at = max(header_row, 1)
    sheet.freeze_panes = f"A{header_at + 1}"
    fills = {s: PatternFill("solid", fgColor=c) for s, c in SEVERITY_FILLS.items()}
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    column_index = {h: i for i, h in enumerate(headers)}
    # findings by (row, column) -> worst severity and the comment text
    marks: dict[tuple[int, int], tuple[str, list[str]]] = {}
    for r, column, rule, severity, message in findings[
        ["row", "column", "rule", "severity", "message"]
    ].itertuples(index=False, name=None):
        if pd.isna(r) or column not in column_index:
            continue
        key = (int(r), column_index[column])
        worst, notes = marks.get(key, (severity, []))
        if rank[severity] < rank[worst]:
            worst = severity
        notes.append(f"[{severity}] {rule}: {message}")
        marks[key] = (worst, notes)
    header_marks = {c for (r, c) in marks if r == header_row}

    def styled(value: Any, key: tuple[int, int] | None, *, bold: bool = False) -> Any:
        cell = _as_text(WriteOnlyCell(sheet, value=_cell_value(value)))
        if bold:
            cell.font = Font(bold=True)
        if key is not None and key in marks:
            severity, notes = marks[key]
            cell.fill = fills[severity]
            text = "\n".join(notes[:_MAX_COMMENTS_PER_CELL])
            if len(notes) > _MAX_COMMENTS_PER_CELL:
                text += f"\n... and {len(notes) - _MAX_COMMENTS_PER_CELL} more"
            comment = Comment(text, "pooled validate")
            comment.width, comment.height = 320, 40 + 18 * min(len(notes), 6)
            cell.comment = comment
        return cell

    for i in range(1, header_at):
        note = (
            f"{table.file}{' / ' + table.sheet if table.sheet else ''}: your data as received; "
            "rows and columns are where they are in your file (title rows not repeated)."
            if i == 1
            else None
        )
        sheet.append([_safe(sheet, note)])
    sheet.append(
        [
            styled(h, (header_row, j) if j in header_marks else None, bold=True)
            for j, h in enumerate(headers)
        ]
    )
    values = cells.to_numpy(dtype=object)
    current = header_at
    for position, number in enumerate(rows):
        target = int(number) + offset
        while current + 1 < target:
            sheet.append([])
            current += 1
        sheet.append(
            [
                styled(v, (int(number), j) if (int(number), j) in marks else None)
                for j, v in enumerate(values[position])
            ]
        )
        current = target


def write_validation_xlsx(
    report: ValidationReport,
    tables_or_raw: Sequence[RawUpload | MappedTable] | RawUpload | MappedTable,
    path: str | Path,
) -> Path:
    """Write the centre-facing validation workbook.

    Parameters
    ----------
    report : ValidationReport
        The findings.
    tables_or_raw : RawUpload or MappedTable, or a sequence of them
        The uploaded tables. A :class:`~harmonization.io.RawUpload` reproduces every column as
        sent; a :class:`~harmonization.mapping.MappedTable` only the mapped columns. Findings
        are matched to a table by file and sheet.
    path : str or Path
        The ``validation.xlsx`` to write.

    Returns
    -------
    Path

    Notes
    -----
    Each data sheet has the header on the same row as in the centre's file and each data row
    on its own row number (blank rows stay blank; the title block above the header is not
    repeated), in the same column letters. For SPSS / Stata files the header is on row 1 and
    case *n* on row *n* + 1. Offending cells are filled by their worst severity and carry a
    comment naming each rule and message.

    Examples
    --------
    >>> write_validation_xlsx(report, [raw], "out/validation.xlsx")  # doctest: +SKIP
    """
    from openpyxl import Workbook

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(tables_or_raw, RawUpload | MappedTable):
        tables_or_raw = [tables_or_raw]
    workbook = Workbook(write_only=True)
    _summary_sheet(workbook, report)
    _findings_sheet(workbook, report)
    used = {"summary", "findings"}
    f = report.findings
    for table in tables_or_raw:
        mine = f.loc[(f["file"] == table.file) & (f["sheet"].fillna("") == (table.sheet or ""))]
        _data_sheet(workbook, table, mine, used)
    workbook.save(path)
    return path


def write_frames_xlsx(frames: dict[str, pd.DataFrame], path: str | Path) -> Path:
    """Tables as sheets of one workbook, text kept as text (a cell starting with '=' never
    becomes a formula), dates as dates, missing as empty.

    Examples
    --------
    >>> write_frames_xlsx({"patients": ds.patients}, "analysis.xlsx")  # doctest: +SKIP
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    path = Path(path)
    workbook = Workbook(write_only=True)
    used: set[str] = set()
    for name, frame in frames.items():
        sheet = workbook.create_sheet(_safe_title(name, used))
        header = []
        for column in frame.columns:
            cell = _as_text(WriteOnlyCell(sheet, value=str(column)))
            cell.font = Font(bold=True)
            header.append(cell)
        sheet.append(header)
        for row in frame.itertuples(index=False, name=None):
            sheet.append([_safe(sheet, v) for v in row])
    workbook.save(path)
    return path


def summary_text(report: ValidationReport) -> str:
    """One paragraph for the terminal or an e-mail: counts and the commonest problems."""
    counts = report.counts_by_severity
    f = report.findings
    if not len(f):
        return "No findings: the upload passed every validation rule."
    centres = sorted({str(c) for c in f["centre"].dropna()})
    n_blocked = report.blocked_rows
    top = report.counts_by_rule.head(3)
    common = ", ".join(f"{r} ({n})" for r, n in zip(top["rule"], top["n"], strict=True))
    verdict = (
        "The upload has errors that must be corrected before its rows can all be analysed."
        if counts["error"]
        else "The upload has no errors."
    )
    return (
        f"Validation of {', '.join(centres) or 'the upload'}: {counts['error']} error(s), "
        f"{counts['warning']} warning(s) and {counts['info']} note(s); {n_blocked} row(s) "
        f"are excluded from analysis until corrected. Commonest: {common}. {verdict}"
    )


def summary_table(report: ValidationReport, *, max_rows: int = 20) -> Table:
    """A ``rich`` table of findings by rule (severity, count, rule meaning, first example).

    Examples
    --------
    >>> from rich.console import Console  # doctest: +SKIP
    >>> Console().print(summary_table(report))  # doctest: +SKIP
    """
    from rich.table import Table

    table = Table(title="Validation findings by rule", caption=summary_text(report))
    table.add_column("severity")
    table.add_column("rule")
    table.add_column("n", justify="right")
    table.add_column("first example")
    f = report.findings
    counts = report.counts_by_rule
    for rule_id, severity, n in counts.head(max_rows)[["rule", "severity", "n"]].itertuples(
        index=False, name=None
    ):
        example = f.loc[f["rule"] == rule_id].iloc[0]
        where = (
            f"row {example['row']}, column '{example['column']}': "
            if not pd.isna(example["row"])
            else ""
        )
        table.add_row(
            f"[{_RICH_STYLES[severity]}]{severity}[/]",
            rule_id,
            str(int(n)),
            where + str(example["message"]),
        )
    if len(counts) > max_rows:
        table.add_row("", f"... {len(counts) - max_rows} more rules", "", "")
    return table

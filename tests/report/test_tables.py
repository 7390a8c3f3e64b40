"""tables.xlsx: manuscript formatting, raw numbers kept, rows traceable to the results."""

from __future__ import annotations

import numpy as np
import pytest

from pooled.report.tables import format_frame, format_number, hazard_ratio_table


@pytest.fixture(scope="module")
def workbook(rendered):
    from openpyxl import load_workbook

    return load_workbook(rendered.xlsx)


def _header(sheet):
    return [c.value for c in sheet[1]]


def test_sheets(workbook):
    names = workbook.sheetnames
    assert names[0] == "Exclusion flow"
    for name in (
        "Characteristics by marker",
        "Characteristics by centre",
        "Hazard ratios",
        "Heterogeneity",
        "Subgroups",
        "All results",
    ):
        assert name in names
    assert all(len(n) <= 31 for n in names)


def test_header_bold_widths_and_frozen(workbook):
    for sheet in workbook.worksheets:
        assert all(cell.font.bold for cell in sheet[1] if cell.value is not None)
        assert sheet.freeze_panes == "A2"
        widths = [sheet.column_dimensions[c.column_letter].width for c in sheet[1]]
        assert all(w and w >= 8 for w in widths)


def test_hazard_ratios_are_numbers_with_formats(run_output, workbook):
    sheet = workbook["Hazard ratios"]
    header = _header(sheet)
    col = {name: i for i, name in enumerate(header)}
    expected = hazard_ratio_table(run_output.outputs)
    values = list(sheet.iter_rows(min_row=2, max_row=len(expected) + 1, values_only=True))
    assert all(row[col["Term"]] for row in values)
    # after the table: one blank row, then the footnote
    assert sheet.cell(row=len(expected) + 2, column=1).value is None
    assert "hazard ratio" in sheet.cell(row=len(expected) + 3, column=1).value
    hr = np.array([row[col["HR"]] for row in values], dtype=float)
    # unrounded: equal to full precision (Excel keeps about 16 digits), not to 2 decimals
    np.testing.assert_allclose(hr, expected["HR"].to_numpy(dtype=float), rtol=1e-15, atol=0)
    assert np.any(np.abs(hr * 100 - np.round(hr * 100)) > 1e-6)
    cell = sheet.cell(row=2, column=col["HR"] + 1)
    assert cell.number_format == "0.00"
    p_cell = sheet.cell(row=2, column=col["p"] + 1)
    assert "0.000" in p_cell.number_format
    texts = [row[col["HR (95% CI)"]] for row in values]
    assert texts[0] == expected["HR (95% CI)"].iloc[0]
    # the adjusted Cox marker row equals the results table
    results = run_output.results()
    cox = results[(results["output"] == "cox_os_adjusted") & (results["term"] == "ctc_positive")]
    assert np.isclose(hr, float(cox["hr"].iloc[0]), rtol=1e-15, atol=0).any()


def test_heterogeneity_sheet(run_output, workbook):
    sheet = workbook["Heterogeneity"]
    header = _header(sheet)
    row = next(sheet.iter_rows(min_row=2, values_only=True))
    meta = next(o for o in run_output.outputs if o.kind == "two_stage").result.meta
    record = dict(zip(header, row, strict=True))
    assert record["tau^2"] == pytest.approx(meta.tau2, rel=1e-15)
    assert record["I^2 (%)"] == pytest.approx(meta.i2, rel=1e-15)
    assert record["Q"] == pytest.approx(meta.q, rel=1e-15)
    assert record["Q p"] == pytest.approx(meta.q_p_value, rel=1e-15)
    assert record["PI lower"] == pytest.approx(np.exp(meta.pi_lower), rel=1e-15)
    assert record["Centres"] == meta.k


def test_flow_sheet_reconciles(run_output, workbook):
    sheet = workbook["Exclusion flow"]
    header = _header(sheet)
    n = len(run_output.flow.received) + 1
    rows = list(sheet.iter_rows(min_row=2, max_row=n + 1, values_only=True))
    total = dict(zip(header, rows[-1], strict=True))
    assert total["centre"] == "total"
    assert total["analysed"] == int(run_output.flow.analysed().sum())


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (1.23456, "ratio", "1.23"),
        (0.0002, "p", "<0.001"),
        (2899.0, "integer", "2,899"),
        (float("nan"), "ratio", ""),
        (12.5, "percent", "12.5"),
        ("luminal_a", "other", "luminal_a"),
        (True, "other", "yes"),
    ],
)
def test_format_number(value, kind, text):
    assert format_number(value, kind) == text


def test_format_frame_whole_numbers_and_kinds():
    import pandas as pd

    frame = pd.DataFrame({"time": [12.0, 24.0], "hr": [1.0, 1.23456], "p_value": [0.5, 1e-5]})
    shown = format_frame(frame)
    assert shown["time"].tolist() == ["12", "24"]
    assert shown["hr"].tolist() == ["1.00", "1.23"]
    assert shown["p_value"].tolist() == ["0.500", "<0.001"]
    assert frame["hr"].iloc[1] == 1.23456  # the input is untouched


def test_labels_starting_with_equals_stay_text(run_output, tmp_path):
    """A label from a centre's data (e.g. a treatment arm '=cmd') is text in tables.xlsx."""
    from dataclasses import replace

    from openpyxl import load_workbook

    from pooled.report.tables import write_tables_xlsx

    name, table = next(iter(run_output.characteristics.items()))
    table = table.copy()
    table.iloc[0, 0] = '=HYPERLINK("http://x","arm")'
    run = replace(run_output, characteristics={**run_output.characteristics, name: table})
    path = write_tables_xlsx(run, tmp_path / "tables.xlsx")
    book = load_workbook(path)
    kinds = {c.data_type for sheet in book for row in sheet.iter_rows() for c in row}
    assert "f" not in kinds
    values = {c.value for sheet in book for row in sheet.iter_rows() for c in row}
    assert '=HYPERLINK("http://x","arm")' in values

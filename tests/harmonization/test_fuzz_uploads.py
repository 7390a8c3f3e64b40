"""Property tests: corrupted uploads never crash, lose a record, or change a value silently.

Hypothesis writes a small valid centre upload (csv, xlsx or sav) of known patients, corrupts
it the way real uploads are corrupted (stray quotes, other separators, ragged rows, other
encodings, decimal points in a decimal-comma file, years in date cells, formulas without a
saved value, duplicated or unnamed columns, blank rows, Excel serials, the 1904 date system,
long fields, padded or upper-case codes, sentinel codes), reads, maps and validates it, and
asserts three invariants:

1. no traceback: the pipeline returns, or raises a one-line ``HarmonizationError``;
2. every physical record is accounted for: each non-blank line / sheet row / case below the
   header is a stored row (a csv row spanning lines is reported);
3. no stored value differs from what the source cell means without a finding on that cell
   (or a row-level finding on its row).

``make test`` runs 100 generated uploads per file type; ``make fuzz`` runs 1,000
(``POOLED_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harmonization.errors import HarmonizationError
from harmonization.mapping import CentreMapping
from harmonization.upload import check_upload

EXAMPLES = int(os.environ.get("POOLED_FUZZ_EXAMPLES", "100"))
TODAY = dt.date(2024, 6, 1)
#: Findings that speak for a whole row (the row's values may be shifted or cut).
ROW_RULES = {"ragged_row", "unclosed_quote", "multiline_record"}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=os.environ.get("POOLED_FUZZ_RANDOM") is None,
)

# field -> (csv/xlsx header, sav variable)
HEADERS = {
    "patient_id": ("Pat-Nr", "PatNr"),
    "age": ("Alter", "Alter"),
    "tumour_size_mm": ("Tumorgröße", "Groesse"),
    "positive_nodes": ("N+", "Nplus"),
    "grade": ("Grading", "Grading"),
    "er_status": ("ER", "ER"),
    "chemotherapy": ("Chemo", "Chemo"),
    "diagnosis_date": ("ED", "ED"),
    "last_contact_date": ("Letzter Kontakt", "Kontakt"),
    "ctc_count": ("CTC", "CTC"),
}
FIELDS = tuple(HEADERS)
NUMBERS = ("age", "tumour_size_mm", "positive_nodes", "grade", "ctc_count")
DATES = ("diagnosis_date", "last_contact_date")


@dataclass
class Upload:
    """A generated upload: what each data row holds and where it ended up in the file."""

    kind: str
    path: Path
    mapping: dict[str, Any]
    expected: list[dict[str, Any]]  # per generated row: field -> the value the cell means
    row_of: list[int]  # per generated row: its row number as the person sees it
    flagged: list[set[str]] = field(default_factory=list)  # cells whose meaning is unclear
    header_row: int = 1
    row_level: set[int] = field(default_factory=set)  # rows corrupted as a whole


def patients(draw: Any, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        dx = dt.date(2005, 1, 1) + dt.timedelta(days=draw(st.integers(0, 3650)))
        rows.append(
            {
                "patient_id": f"P{i + 1:03d}",
                "age": draw(st.integers(300, 800)) / 10,
                "tumour_size_mm": draw(st.integers(5, 50)),  # mm; written in cm
                "positive_nodes": draw(st.integers(0, 12)),
                "grade": draw(st.integers(1, 3)),
                "er_status": draw(st.sampled_from(["positive", "negative"])),
                "chemotherapy": draw(st.booleans()),
                "diagnosis_date": dx,
                "last_contact_date": dx + dt.timedelta(days=draw(st.integers(200, 3000))),
                "ctc_count": draw(st.integers(0, 40)),
            }
        )
    return rows


def mapping_for(kind: str, *, header_row: int = 1, encoding: str = "latin-1") -> dict[str, Any]:
    at = 1 if kind == "sav" else 0
    columns: dict[str, Any] = {f: {"column": h[at]} for f, h in HEADERS.items()}
    columns["setting"] = {"value": "early"}
    columns["tumour_size_mm"]["unit"] = "cm"
    columns["er_status"]["codes"] = {"pos": "positive", "neg": "negative", 1: "positive",
                                     0: "negative"}  # fmt: skip
    source: dict[str, Any] = {"table": "patients", "columns": columns}
    if kind == "csv":
        source.update({"delimiter": ";", "encoding": encoding, "header_row": header_row})
    elif kind == "xlsx":
        source.update({"sheet": "Daten", "header_row": header_row})
    return {
        "centre": "ulm",
        "decimal": "," if kind == "csv" else ".",
        "date_format": "%d.%m.%Y",
        "missing_codes": ["", "999", "-9", "k.A."],
        "sources": [source],
    }


# -- csv ---------------------------------------------------------------------------------------


def csv_text(row: dict[str, Any]) -> dict[str, str]:
    return {
        "patient_id": row["patient_id"],
        "age": f"{row['age']:g}".replace(".", ","),
        "tumour_size_mm": f"{row['tumour_size_mm'] / 10:g}".replace(".", ","),
        "positive_nodes": str(row["positive_nodes"]),
        "grade": str(row["grade"]),
        "er_status": "pos" if row["er_status"] == "positive" else "neg",
        "chemotherapy": "ja" if row["chemotherapy"] else "nein",
        "diagnosis_date": row["diagnosis_date"].strftime("%d.%m.%Y"),
        "last_contact_date": row["last_contact_date"].strftime("%d.%m.%Y"),
        "ctc_count": str(row["ctc_count"]),
    }


CSV_CORRUPTIONS = (
    "stray_quote", "extra_field", "short_row", "comma_row", "decimal_point", "blank_line",
    "padding", "upper_code", "long_id", "year_only", "missing_code", "garbage_number",
)  # fmt: skip


@st.composite
def csv_uploads(draw: Any, folder: Path) -> Upload:
    n = draw(st.integers(3, 10))
    rows = patients(draw, n)
    expected = [dict(r) for r in rows]
    flagged: list[set[str]] = [set() for _ in rows]
    lines: list[list[str] | str] = [[csv_text(r)[f] for f in FIELDS] for r in rows]
    row_level: set[int] = set()
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(CSV_CORRUPTIONS))
        i = draw(st.integers(0, n - 1))
        line = lines[i]
        if isinstance(line, str) or i in row_level:
            continue  # one row-level corruption per row (two could cancel out: -1 +1 field)
        j = draw(st.integers(0, len(FIELDS) - 1))
        name = FIELDS[j]
        if kind == "stray_quote":
            line[j] = '"' + line[j]
            row_level.add(i)
        elif kind == "extra_field":
            line.append(draw(st.sampled_from(["x", "12", "ja"])))
            row_level.add(i)
        elif kind == "short_row":
            del line[-1]
            row_level.add(i)
        elif kind == "comma_row":
            lines[i] = ",".join(line)
            row_level.add(i)
        elif kind == "decimal_point" and name in ("age", "tumour_size_mm") and "," in line[j]:
            line[j] = line[j].replace(",", ".")
            flagged[i].add(name)  # 56.5 or 565? read as neither without a finding
        elif kind == "padding":
            line[j] = "  " + line[j] + " "
        elif kind == "upper_code" and name in ("er_status", "chemotherapy"):
            line[j] = line[j].upper()
        elif kind == "long_id" and name == "patient_id":
            line[j] = "Q" * 140_000 + line[j]
            expected[i]["patient_id"] = line[j]
        elif kind == "year_only" and name in DATES:
            line[j] = str(expected[i][name].year)
            flagged[i].add(name)
        elif kind == "missing_code" and name in NUMBERS:
            line[j] = draw(st.sampled_from(["999", "-9", "k.A."]))
            expected[i][name] = None
        elif kind == "garbage_number" and name in NUMBERS:
            line[j] = draw(st.sampled_from(["n.b.", "12a", "?", "1,2,3"]))
            flagged[i].add(name)
    encoding = draw(st.sampled_from(["latin-1", "utf-8", "utf-8-sig", "utf-16", "cp1252"]))
    title = draw(st.integers(0, 2))
    text_lines = [f"Studie {k + 1}" for k in range(title)] + [";".join(h[0] for h in HEADERS.values())]
    row_of = []
    for line in lines:
        if draw(st.booleans()) and draw(st.booleans()):
            text_lines.append("")  # a blank line between rows
        text_lines.append(line if isinstance(line, str) else ";".join(line))
        row_of.append(len(text_lines))
    path = folder / "upload.csv"
    path.write_bytes(("\r\n".join(text_lines) + "\r\n").encode(encoding))
    mapping = mapping_for("csv", header_row=title + 1, encoding=encoding)
    return Upload("csv", path, mapping, expected, row_of, flagged, header_row=title + 1,
                  row_level=row_level)  # fmt: skip


# -- xlsx ----------------------------------------------------------------------------------------


XLSX_CORRUPTIONS = (
    "text_decimal_comma", "year_in_date", "serial_date", "formula", "duplicate_same",
    "duplicate_different", "unnamed_column", "blank_row", "error_value", "upper_code",
    "equals_text",
)  # fmt: skip


@st.composite
def xlsx_uploads(draw: Any, folder: Path) -> Upload:
    from openpyxl import Workbook
    from openpyxl.utils.datetime import CALENDAR_MAC_1904, to_excel

    n = draw(st.integers(3, 10))
    rows = patients(draw, n)
    expected = [dict(r) for r in rows]
    flagged: list[set[str]] = [set() for _ in rows]
    cells: list[list[Any]] = []
    for r in rows:
        cells.append([
            r["patient_id"], r["age"], r["tumour_size_mm"] / 10, r["positive_nodes"], r["grade"],
            "pos" if r["er_status"] == "positive" else "neg", "ja" if r["chemotherapy"] else "nein",
            dt.datetime.combine(r["diagnosis_date"], dt.time()),
            dt.datetime.combine(r["last_contact_date"], dt.time()), r["ctc_count"],
        ])  # fmt: skip
    header: list[Any] = [h[0] for h in HEADERS.values()]
    formulas: list[tuple[int, int, str]] = []
    texts: list[tuple[int, int]] = []
    extra_columns: list[tuple[Any, list[Any]]] = []
    blank_before: set[int] = set()
    epoch1904 = draw(st.booleans()) and draw(st.booleans())  # a workbook in the 1904 system
    epoch = CALENDAR_MAC_1904 if epoch1904 else None
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(XLSX_CORRUPTIONS))
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(0, len(FIELDS) - 1))
        name = FIELDS[j]
        if kind == "text_decimal_comma" and name == "age":
            cells[i][j] = f"{expected[i]['age']:g}".replace(".", ",")
            if "," in cells[i][j]:
                flagged[i].add(name)
        elif kind == "year_in_date" and name in DATES:
            cells[i][j] = expected[i][name].year
            flagged[i].add(name)
        elif kind == "serial_date" and name in DATES:
            moment = dt.datetime.combine(expected[i][name], dt.time())
            cells[i][j] = int(to_excel(moment, epoch) if epoch else to_excel(moment))
        elif kind == "formula" and name in NUMBERS:
            formulas.append((i, j, f"={cells[i][j]}+0"))
            flagged[i].add(name)
        elif kind == "duplicate_same" and not extra_columns:
            extra_columns.append((header[j], [c[j] for c in cells]))
        elif kind == "duplicate_different" and not extra_columns and name in ("age", "grade"):
            values = [c[j] for c in cells]
            values[i] = (values[i] or 0) + 1
            extra_columns.append((header[j], values))
            flagged[i].add(name)
        elif kind == "unnamed_column" and not extra_columns:
            extra_columns.append((None, ["note" if k == i else None for k in range(n)]))
        elif kind == "blank_row":
            blank_before.add(i)
        elif kind == "error_value" and name in ("age", "ctc_count"):
            cells[i][j] = "#N/A"
            flagged[i].add(name)
        elif kind == "upper_code" and name in ("er_status", "chemotherapy"):
            cells[i][j] = str(cells[i][j]).upper()
        elif kind == "equals_text" and name == "patient_id":
            cells[i][j] = "=" + cells[i][j]
            texts.append((i, j))
            expected[i]["patient_id"] = cells[i][j]
    workbook = Workbook()
    if epoch1904:
        workbook.epoch = CALENDAR_MAC_1904
    sheet = workbook.active
    sheet.title = "Daten"
    title = draw(st.integers(0, 3))
    for k in range(title):
        sheet.append([f"Studie {k + 1}"] if k == 0 else [])
    sheet.append(header + [h for h, _ in extra_columns])
    row_of = []
    for i, values in enumerate(cells):
        if i in blank_before:
            sheet.append([])
        sheet.append(values + [v[i] for _, v in extra_columns])
        row_of.append(sheet.max_row)
        for k, c in enumerate(sheet[sheet.max_row]):
            if (i, k) in texts:
                c.data_type = "s"
            if isinstance(c.value, dt.datetime):
                c.number_format = "dd.mm.yyyy"
    for i, j, text in formulas:
        sheet.cell(row=row_of[i], column=j + 1).value = text  # saved without a cached value
    path = folder / "upload.xlsx"
    workbook.save(path)
    return Upload("xlsx", path, mapping_for("xlsx", header_row=title + 1), expected, row_of,
                  flagged, header_row=title + 1)  # fmt: skip


# -- sav -----------------------------------------------------------------------------------------


@st.composite
def sav_uploads(draw: Any, folder: Path) -> Upload:
    import pyreadstat

    n = draw(st.integers(3, 10))
    rows = patients(draw, n)
    expected = [dict(r) for r in rows]
    flagged: list[set[str]] = [set() for _ in rows]
    frame = pd.DataFrame(
        {
            "PatNr": [r["patient_id"] for r in rows],
            "Alter": [r["age"] for r in rows],
            "Groesse": [r["tumour_size_mm"] / 10 for r in rows],
            "Nplus": [float(r["positive_nodes"]) for r in rows],
            "Grading": [float(r["grade"]) for r in rows],
            "ER": [1.0 if r["er_status"] == "positive" else 0.0 for r in rows],
            "Chemo": [1.0 if r["chemotherapy"] else 0.0 for r in rows],
            "ED": pd.to_datetime([r["diagnosis_date"] for r in rows]),
            "Kontakt": pd.to_datetime([r["last_contact_date"] for r in rows]),
            "CTC": [float(r["ctc_count"]) for r in rows],
        }
    )
    blank_cases: list[int] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["sentinel", "out_of_range", "fraction", "padding", "blank"]))
        i = draw(st.integers(0, n - 1))
        if kind == "sentinel":
            column, name = draw(st.sampled_from([("Alter", "age"), ("CTC", "ctc_count")]))
            frame.loc[i, column] = draw(st.sampled_from([999.0, -9.0]))
            expected[i][name] = None
        elif kind == "out_of_range":
            frame.loc[i, "Alter"] = 170.0
            flagged[i].add("age")
        elif kind == "fraction":
            frame.loc[i, "Nplus"] = 2.5
            flagged[i].add("positive_nodes")
        elif kind == "padding":
            frame.loc[i, "PatNr"] = "  " + frame.loc[i, "PatNr"] + " "
        elif kind == "blank":
            blank_cases.append(i)
    if blank_cases:  # a fully empty case between the patients
        empty = pd.DataFrame({c: [None] for c in frame.columns}).astype(frame.dtypes.to_dict())
        at = blank_cases[0]
        frame = pd.concat([frame.iloc[:at], empty, frame.iloc[at:]], ignore_index=True)
    row_of = [i + 1 + (1 if blank_cases and i >= blank_cases[0] else 0) for i in range(n)]
    path = folder / "upload.sav"
    pyreadstat.write_sav(frame, str(path))
    return Upload("sav", path, mapping_for("sav"), expected, row_of, flagged)


# -- the invariants ------------------------------------------------------------------------------------


def same(stored: Any, meant: Any) -> bool:
    if meant is None or (isinstance(meant, float) and np.isnan(meant)):
        return stored is None or pd.isna(stored)
    if stored is None or pd.isna(stored):
        return False
    if isinstance(meant, dt.date):
        return pd.Timestamp(stored) == pd.Timestamp(meant)
    if isinstance(meant, bool):
        return bool(stored) == meant
    if isinstance(meant, int | float):
        return abs(float(stored) - float(meant)) <= 1e-9 * max(1.0, abs(float(meant)))
    return str(stored) == str(meant)


def check_invariants(upload: Upload) -> None:
    mapping = CentreMapping.from_dict(upload.mapping)
    try:
        checked = check_upload(upload.path, mapping, today=TODAY)
    except HarmonizationError as exc:  # 1. a one-line reason, never a traceback
        assert "\n" not in str(exc) and str(exc)
        return
    table = checked.tables[0]
    data = table.data.set_index("source_row")
    findings = checked.report.findings
    cells = {(int(r), str(c)) for r, c in zip(findings["row"], findings["column"], strict=True)
             if not pd.isna(r)}  # fmt: skip
    rows_with_row_finding = {
        int(r) for r, rule in zip(findings["row"], findings["rule"], strict=True)
        if not pd.isna(r) and rule in ROW_RULES
    }  # fmt: skip
    # 2. every generated record is a stored row (at the row number the person sees)
    assert sorted(data.index) == sorted(upload.row_of), (sorted(data.index), upload.row_of)
    raw = checked.raw[0]
    if upload.kind == "csv":
        assert raw.lines is not None
        covered = {k for a, b in raw.lines.tolist() for k in range(a, b + 1)}
        assert set(upload.row_of) <= covered
        multi = {int(r) for r, (a, b) in zip(raw.source_rows, raw.lines.tolist(), strict=True) if b > a}
        assert multi <= rows_with_row_finding
    # 3. nothing changed without a finding on its cell (or its row)
    at = 1 if upload.kind == "sav" else 0
    for i, row_number in enumerate(upload.row_of):
        stored = data.loc[row_number]
        for name in FIELDS:
            header = HEADERS[name][at]
            meant = upload.expected[i][name]
            has_finding = (row_number, header) in cells or row_number in rows_with_row_finding
            if not same(stored[name], meant):
                assert has_finding, (
                    f"{upload.kind} row {row_number} '{header}': stored {stored[name]!r} but the "
                    f"cell means {meant!r}, and there is no finding on it"
                )


@FUZZ
@given(data=st.data())
def test_corrupted_csv_uploads(tmp_path_factory: Any, data: Any) -> None:
    folder = tmp_path_factory.mktemp("csv")
    check_invariants(data.draw(csv_uploads(folder)))


@FUZZ
@given(data=st.data())
def test_corrupted_xlsx_uploads(tmp_path_factory: Any, data: Any) -> None:
    folder = tmp_path_factory.mktemp("xlsx")
    check_invariants(data.draw(xlsx_uploads(folder)))


@FUZZ
@given(data=st.data())
def test_corrupted_sav_uploads(tmp_path_factory: Any, data: Any) -> None:
    folder = tmp_path_factory.mktemp("sav")
    check_invariants(data.draw(sav_uploads(folder)))


@pytest.mark.parametrize("kind", ["csv", "xlsx", "sav"])
def test_clean_generated_uploads_pass_without_errors(tmp_path: Path, kind: str) -> None:
    """The generator's uncorrupted uploads are valid: findings above come from corruption."""
    strategy = {"csv": csv_uploads, "xlsx": xlsx_uploads, "sav": sav_uploads}[kind]

    @settings(max_examples=5, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(data=st.data())
    def clean(data: Any) -> None:
        folder = tmp_path / f"clean{np.random.default_rng().integers(1 << 30)}"
        folder.mkdir()
        upload = data.draw(strategy(folder))
        if any(upload.flagged) or upload.row_level:
            return
        checked = check_upload(upload.path, CentreMapping.from_dict(upload.mapping), today=TODAY)
        assert not checked.report.has_errors, checked.report.findings.to_string()

    clean()

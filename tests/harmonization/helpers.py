"""Test helpers: clean simulated patients and real upload files written the way centres do.

- :func:`clean_patients` returns schema-typed patient records that pass every rule.
- :func:`write_xlsx` writes a workbook with a title block above the header and several
  sheets; :func:`write_csv` a semicolon / decimal-comma / Latin-1 csv; :func:`write_sav` an
  SPSS file (pyreadstat).
- :func:`mapping_dict` / :func:`make_mapping` build the matching centre mapping.
- :func:`find` picks findings by rule, row and column as the person sees them.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harmonization.derive import derive_her2_status, derive_subtype
from harmonization.mapping import CentreMapping, read_and_map
from harmonization.schema import Schema, load_schema
from harmonization.validate import ValidationReport, validate

TODAY = dt.date(2024, 6, 1)
CUTOFF = pd.Timestamp("2021-12-31")

#: Upload headers as a German centre writes them (field -> header).
HEADERS: dict[str, str] = {
    "patient_id": "Pat-Nr",
    "setting": "Setting",
    "age": "Alter",
    "menopausal_status": "Menopause",
    "tumour_size_mm": "Tumorgröße",
    "positive_nodes": "N+",
    "grade": "Grading",
    "er_status": "ER",
    "pr_status": "PR",
    "er_percent": "ER %",
    "pr_percent": "PR %",
    "her2_ihc": "HER2 IHC",
    "her2_ish": "HER2 ISH",
    "her2_status": "HER2",
    "ki67_percent": "Ki-67",
    "subtype": "Subtyp",
    "ctc_count": "CTC",
    "ctc_blood_volume_ml": "Blutvolumen",
    "dtc_count": "DTC",
    "chemotherapy": "Chemo",
    "endocrine_therapy": "Endokrin",
    "line_of_therapy": "Therapielinie",
    "clinical_risk": "Risiko",
    "diagnosis_date": "ED",
    "surgery_date": "OP-Datum",
    "sample_date": "Blutentnahme",
    "last_contact_date": "Letzter Kontakt",
    "recurrence_date": "Rezidiv",
    "distant_recurrence_date": "Fernmetastase",
    "progression_date": "Progress",
    "treatment_failure_date": "Therapieversagen",
    "death_date": "Tod",
    "death_cause": "Todesursache",
    "os_event": "OS-Status",
    "pgr_fmol": "PgR (fmol/l)",  # only in schemas that add it (tests of schema extensions)
}
#: SPSS variable names (no spaces or signs allowed).
SAV_HEADERS: dict[str, str] = {
    f: "".join(ch for ch in h.replace("ö", "oe") if ch.isalnum()) or f for f, h in HEADERS.items()
}
SAV_HEADERS["positive_nodes"] = "Nplus"
SAV_HEADERS["er_percent"] = "ERpct"
SAV_HEADERS["pr_percent"] = "PRpct"

CODES: dict[str, dict[str, Any]] = {
    "er_status": {"pos": "positive", "neg": "negative"},
    "pr_status": {"pos": "positive", "neg": "negative"},
    "her2_status": {"pos": "positive", "neg": "negative"},
    "her2_ish": {"amp": "amplified", "nicht amp": "not_amplified"},
    "menopausal_status": {"prä": "pre", "prae": "pre", "peri": "peri", "post": "post"},
    "death_cause": {"mamma-ca": "breast_cancer", "andere": "other", "unklar": "unknown"},
}
_DISPLAY_CODES: dict[str, dict[Any, str]] = {
    f: {v: k for k, v in reversed(list(c.items()))} for f, c in CODES.items()
}
DATE_FIELDS = (
    "diagnosis_date", "surgery_date", "sample_date", "last_contact_date", "recurrence_date",
    "distant_recurrence_date", "progression_date", "treatment_failure_date", "death_date",
)  # fmt: skip
BOOLEAN_FIELDS = ("chemotherapy", "endocrine_therapy", "os_event")


def clean_patients(
    n: int, *, seed: int = 0, setting: str = "early", start: int = 1, prefix: str = "P"
) -> pd.DataFrame:
    """``n`` consistent patients (schema field names and types) that pass every rule."""
    rng = np.random.default_rng(seed)
    ids = [f"{prefix}{i:05d}" for i in range(start, start + n)]
    age = np.round(rng.uniform(30, 80, n), 1)
    er_pct = np.where(rng.random(n) < 0.7, rng.integers(10, 100, n), 0).astype(float)
    pr_pct = np.where(er_pct > 0, rng.integers(0, 90, n), 0).astype(float)
    ihc = rng.choice(np.array(["0", "1+", "2+", "3+"], dtype=object), n, p=[0.3, 0.3, 0.25, 0.15])
    ish = np.where(
        ihc == "2+", rng.choice(np.array(["amplified", "not_amplified"], dtype=object), n), None
    )
    her2 = derive_her2_status(pd.Series(ihc), pd.Series(ish))
    er = np.where(er_pct >= 1, "positive", "negative").astype(object)
    pr = np.where(pr_pct >= 1, "positive", "negative").astype(object)
    grade = rng.integers(1, 4, n).astype(float)
    ki67 = np.round(rng.uniform(2, 60, n), 0)
    subtype = derive_subtype(er, pr, her2, grade, ki67)
    diagnosis = pd.Timestamp("2009-01-01") + pd.to_timedelta(rng.integers(0, 2200, n), unit="D")
    alive_until = CUTOFF - pd.to_timedelta(rng.integers(0, 90, n), unit="D")
    span = (alive_until - diagnosis).days.to_numpy()
    recurrence = np.where(rng.random(n) < 0.25, rng.uniform(0.1, 0.8, n) * span, np.nan)
    distant = np.where(rng.random(n) < 0.6, recurrence + rng.uniform(0, 0.1, n) * span, np.nan)
    dies = rng.random(n) < 0.2
    death_day = np.where(
        dies,
        np.fmax(
            np.nan_to_num(np.fmax(recurrence, distant), nan=0), rng.uniform(0.2, 0.95, n) * span
        )
        + 10,
        np.nan,
    )

    def days(x: np.ndarray) -> pd.Series:
        return pd.Series(diagnosis) + pd.to_timedelta(np.floor(x), unit="D")

    death = days(death_day)
    last_contact = death.where(death.notna(), pd.Series(alive_until))
    frame = pd.DataFrame(
        {
            "patient_id": ids,
            "setting": setting,
            "age": age,
            "menopausal_status": np.where(age > 52, "post", "pre").astype(object),
            "tumour_size_mm": np.round(rng.uniform(5, 60, n), 0),
            "positive_nodes": rng.integers(0, 8, n).astype(float),
            "grade": grade,
            "er_status": er,
            "pr_status": pr,
            "er_percent": er_pct,
            "pr_percent": pr_pct,
            "her2_ihc": ihc,
            "her2_ish": ish,
            "her2_status": her2,
            "ki67_percent": ki67,
            "subtype": subtype,
            "ctc_count": rng.poisson(0.8, n).astype(float),
            "ctc_blood_volume_ml": 7.5,
            "dtc_count": rng.poisson(0.5, n).astype(float),
            "chemotherapy": rng.random(n) < 0.5,
            "endocrine_therapy": er == "positive",
            "clinical_risk": rng.choice(np.array(["low", "high"], dtype=object), n),
            "diagnosis_date": diagnosis,
            "surgery_date": diagnosis + pd.to_timedelta(rng.integers(10, 60, n), unit="D"),
            "sample_date": diagnosis + pd.to_timedelta(rng.integers(0, 10, n), unit="D"),
            "last_contact_date": last_contact,
            "recurrence_date": days(recurrence),
            "distant_recurrence_date": days(distant),
            "death_date": death,
            "death_cause": np.where(
                dies, np.where(np.isnan(recurrence), "other", "breast_cancer"), None
            ).astype(object),
            "os_event": dies,
        }
    )
    if setting == "metastatic":
        frame["sample_date"] = frame["diagnosis_date"]
        frame["surgery_date"] = pd.NaT
        frame["progression_date"] = frame["recurrence_date"]
        frame["recurrence_date"] = pd.NaT
        frame["distant_recurrence_date"] = pd.NaT
        frame["line_of_therapy"] = rng.integers(1, 4, n).astype(float)
    return frame


def display_cells(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """What a centre's spreadsheet holds: codes, ja/nein, dates as datetimes or dd.mm.yyyy
    text, numbers as numbers (xlsx, sav) or decimal-comma text (csv)."""
    out = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        col = frame[name]
        if name in DATE_FIELDS:
            dates = pd.to_datetime(col)
            if kind == "csv":
                out[name] = dates.dt.strftime("%d.%m.%Y").where(dates.notna(), "")
            elif kind == "sav":
                out[name] = dates
            else:
                out[name] = [None if pd.isna(d) else d.to_pydatetime() for d in dates]
        elif name in BOOLEAN_FIELDS:
            out[name] = [None if pd.isna(v) else ("ja" if v else "nein") for v in col]
        elif name in _DISPLAY_CODES:
            out[name] = [None if v is None or pd.isna(v) else _DISPLAY_CODES[name].get(v, v)
                         for v in col]  # fmt: skip
        elif pd.api.types.is_numeric_dtype(col):
            values = col.to_numpy(dtype=float)
            if kind == "csv":
                out[name] = ["" if np.isnan(v) else (f"{v:g}".replace(".", ",")) for v in values]
            else:
                out[name] = [None if np.isnan(v) else (int(v) if v.is_integer() else v)
                             for v in values]  # fmt: skip
        else:
            out[name] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v
                         for v in col]  # fmt: skip
    return out


def write_xlsx(
    path: Path,
    sheets: Mapping[str, tuple[Sequence[Sequence[Any]], Sequence[str], Sequence[Sequence[Any]]]],
) -> Path:
    """A workbook; each sheet ``name -> (title rows, header, data rows)``."""
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.remove(workbook.active)
    for name, (title, header, rows) in sheets.items():
        sheet = workbook.create_sheet(name)
        for line in title:
            sheet.append(list(line))
        sheet.append(list(header))
        for row in rows:
            sheet.append(list(row))
    workbook.save(path)
    return path


def write_csv(
    path: Path,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    delimiter: str = ";",
    encoding: str = "latin-1",
    title: Sequence[str] = (),
) -> Path:
    """A csv as German Excel writes it: semicolons, decimal commas, Latin-1."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    for line in title:
        writer.writerow([line])
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def write_sav(path: Path, frame: pd.DataFrame) -> Path:
    """An SPSS .sav file (pyreadstat)."""
    import pyreadstat

    pyreadstat.write_sav(frame, str(path))
    return path


def rows_of(frame: pd.DataFrame) -> list[list[Any]]:
    return [[None if (isinstance(v, float) and np.isnan(v)) else v for v in row]
            for row in frame.itertuples(index=False, name=None)]  # fmt: skip


def mapping_dict(
    fields: Sequence[str],
    *,
    centre: str = "ulm",
    kind: str = "xlsx",
    sheet: str | None = "Patienten",
    header_row: int | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    samples: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The centre mapping for an upload written by these helpers."""
    headers = headers or (SAV_HEADERS if kind == "sav" else HEADERS)
    columns: dict[str, Any] = {}
    for f in fields:
        spec: dict[str, Any] = {"column": headers[f]}
        if f in CODES:
            spec["codes"] = CODES[f]
        columns[f] = spec
    source: dict[str, Any] = {"table": "patients", "columns": columns}
    if kind == "xlsx":
        source.update({"sheet": sheet, "header_row": header_row or 4})
    elif kind == "csv":
        source.update({"header_row": header_row or 1, "encoding": "latin-1", "delimiter": ";"})
    doc: dict[str, Any] = {
        "centre": centre,
        "missing_codes": ["", "999", "-9", "n.a.", "unbekannt"],
        "date_format": "%d.%m.%Y",
        "decimal": "," if kind == "csv" else ".",
        "sources": [source],
    }
    if samples is not None:
        doc["sources"].append(dict(samples))
    doc.update(extra or {})
    return doc


@functools.cache
def schema() -> Schema:
    """The consortium schema, parsed once per test session."""
    return load_schema()


def make_mapping(doc: Mapping[str, Any]) -> CentreMapping:
    return CentreMapping.from_dict(
        dict(doc), schema=schema(), where=f"<test mapping {doc.get('centre')}>"
    )


def xlsx_upload(
    path: Path,
    frame: pd.DataFrame,
    *,
    title: Sequence[Sequence[Any]] = (("Studie XY: CTC-Register",), ("Stand 2022",), ()),
    sheet: str = "Patienten",
    other_sheets: Mapping[str, Any] | None = None,
) -> Path:
    """``frame`` (schema names) as an xlsx with German headers below a title block."""
    cells = display_cells(frame, "xlsx")
    sheets: dict[str, Any] = {"Info": ((), ["Hinweis"], [["Siehe Patientenblatt"]])}
    sheets[sheet] = (title, [HEADERS[c] for c in cells.columns], rows_of(cells))
    sheets.update(other_sheets or {})
    return write_xlsx(path, sheets)


def csv_upload(path: Path, frame: pd.DataFrame, *, title: Sequence[str] = ()) -> Path:
    cells = display_cells(frame, "csv")
    return write_csv(path, [HEADERS[c] for c in cells.columns], rows_of(cells), title=title)


def sav_upload(path: Path, frame: pd.DataFrame) -> Path:
    cells = display_cells(frame, "sav")
    cells.columns = [SAV_HEADERS[c] for c in cells.columns]
    for column in cells.columns:
        if cells[column].dtype == object:
            cells[column] = cells[column].map(lambda v: "" if v is None else str(v))
    return write_sav(path, cells)


def run(
    path: Path, doc: Mapping[str, Any], *, today: dt.date = TODAY
) -> tuple[ValidationReport, list[Any]]:
    """read_and_map + validate every table (patients first) of an upload."""
    mapping = make_mapping(doc)
    report = ValidationReport.empty()
    tables = []
    patients = None
    for mapped in read_and_map(path, mapping, schema=schema()):
        part, table = validate(mapped, mapping, schema=schema(), today=today, patients=patients)
        if table.table == "patients":
            patients = table
        report = report.merge(part)
        tables.append(table)
    return report, tables


def find(
    report: ValidationReport, rule: str, *, row: int | None = None, column: str | None = None
) -> pd.DataFrame:
    f = report.findings
    sel = f["rule"] == rule
    if row is not None:
        sel &= f["row"] == row
    if column is not None:
        sel &= f["column"] == column
    return f.loc[sel.fillna(False)]


def errors(report: ValidationReport) -> pd.DataFrame:
    return report.findings.loc[report.findings["severity"] == "error"]


HEADER_ROW = {"xlsx": 4, "csv": 1, "sav": 0}


def upload(
    directory: Path,
    frame: pd.DataFrame,
    kind: str = "xlsx",
    *,
    edit: Any = None,
    name: str = "upload",
) -> Path:
    """Write ``frame`` as an upload of ``kind``; ``edit(cells)`` may change the display cells
    (keyed by schema field names) before writing, to plant raw errors."""
    cells = display_cells(frame, kind)
    if edit is not None:
        edit(cells)
    path = directory / f"{name}.{kind}"
    if kind == "xlsx":
        title = (("Studie XY: CTC-Register",), ("Stand 2022",), ())
        sheets: dict[str, Any] = {"Info": ((), ["Hinweis"], [["Siehe Patientenblatt"]])}
        sheets["Patienten"] = (title, [HEADERS[c] for c in cells.columns], rows_of(cells))
        return write_xlsx(path, sheets)
    if kind == "csv":
        return write_csv(path, [HEADERS[c] for c in cells.columns], rows_of(cells))
    cells.columns = [SAV_HEADERS[c] for c in cells.columns]
    for column in cells.columns:
        if cells[column].dtype == object:
            cells[column] = cells[column].map(lambda v: "" if v is None else str(v))
    return write_sav(path, cells)


def row_of(position: int, kind: str) -> int:
    """The row number the person sees for data row ``position`` (0-based) of an upload."""
    return HEADER_ROW[kind] + 1 + position


def problems(report: ValidationReport) -> pd.DataFrame:
    """Errors and warnings (info findings are notes, not problems)."""
    return report.findings.loc[report.findings["severity"] != "info"]

"""Survival's ``colon`` trial as three centre uploads in three shapes (for ``test_colon.py``).

From ``tests/reference/colon.csv`` (written by ``make_colon.R``: two records per patient,
etype 1 recurrence and etype 2 death, times in days), one row per patient, split by id as
``make_colon.R`` splits it:

* **leiden** (ids 1-310): ``leiden.xlsx``, sheet ``Patiënten``, a three-row title block and
  Dutch headers on row 4; codes ``man/vrouw``, ``goed/matig/slecht``, ``ja/nee``; days;
  missing values as empty cells.
* **muenster** (ids 311-620): ``muenster.csv``, ``;``-separated, Latin-1, CRLF, German
  headers with umlauts; times in weeks with 4 decimals and a decimal comma
  (``f"{days / 7:.4f}"``, the C rule R's ``sprintf("%.4f", days / 7)`` uses), age as
  ``43,0``; missing values as ``k.A.``.
* **boston** (ids 621-929): ``boston.sav`` (SPSS), English variable names, numeric codes
  with value labels for ``sex``, ``rx`` and ``differ``; days; missing values system-missing.

Every centre sends both recurrence and death as recorded: recurrence flag and the etype-1
time (which is the censoring time when there was no recurrence), death flag and the etype-2
time. Relapse-free survival is derived by the centre mappings (``tests/e2e/colon/``).

Deterministic: the same ``colon.csv`` gives the same bytes (fixed xlsx document and zip
times, fixed SPSS header time).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

REFERENCE = Path(__file__).resolve().parent.parent / "reference"
COLON_CSV = REFERENCE / "colon.csv"
CENTRES: dict[str, tuple[int, int]] = {  # centre -> (first id, last id), as make_colon.R
    "leiden": (1, 310),
    "muenster": (311, 620),
    "boston": (621, 929),
}
FIXED_TIME = dt.datetime(2024, 3, 1, 0, 0, 0)

LEIDEN_SHEET = "Patiënten"
LEIDEN_TITLE = (
    "Adjuvante chemotherapie coloncarcinoom (levamisol / 5-FU), Leiden",
    "Export datum: 01-03-2024",
    "",
)
LEIDEN_HEADERS = (
    "Patiëntnummer",
    "Leeftijd",
    "Geslacht (man/vrouw)",
    "Behandeling (Obs/Lev/Lev+5FU)",
    "Differentiatie (goed/matig/slecht)",
    "Uitbreiding (1-4)",
    "Obstructie (ja/nee)",
    "Positieve klieren",
    "Recidief (ja/nee)",
    "Dagen tot recidief",
    "Overleden (ja/nee)",
    "Dagen tot overlijden",
)
MUENSTER_HEADERS = (
    "Patientennummer",
    "Alter",
    "Geschlecht (m/w)",
    "Therapie",
    "Differenzierung (G1/G2/G3)",
    "Ausdehnung",
    "Obstruktion (ja/nein)",
    "Lymphknoten positiv",
    "Rezidiv (ja/nein)",
    "Zeit bis Rezidiv (Wochen)",
    "Verstorben (ja/nein)",
    "Überlebenszeit (Wochen)",
)
MUENSTER_MISSING = "k.A."
MUENSTER_THERAPY = {"Obs": "Beobachtung", "Lev": "Levamisol", "Lev+5FU": "Levamisol + 5-FU"}
BOSTON_LABELS: dict[str, dict[float, str]] = {
    "sex": {0.0: "female", 1.0: "male"},
    "rx": {1.0: "Obs", 2.0: "Lev", 3.0: "Lev+5FU"},
    "differ": {1.0: "well", 2.0: "moderate", 3.0: "poor"},
}
BOSTON_COLUMN_LABELS = {
    "patient_id": "Study number",
    "age": "Age at registration (years)",
    "sex": "Sex",
    "rx": "Randomised treatment",
    "differ": "Differentiation of tumour",
    "extent": "Extent of local spread (1 submucosa - 4 contiguous structures)",
    "obstruct": "Obstruction of colon by tumour (1 yes)",
    "nodes": "Number of positive lymph nodes",
    "recurrence": "Recurrence (1 yes)",
    "recurrence_days": "Days to recurrence or last follow-up",
    "death": "Died (1 yes)",
    "death_days": "Days to death or last follow-up",
}


def colon_patients(path: Path = COLON_CSV) -> pd.DataFrame:
    """One row per patient from the long ``colon.csv``, with its centre (sorted by id).

    Columns: ``id, centre, rx, sex, age, obstruct, nodes, differ, extent, rec, rec_days,
    death, death_days`` (``nodes`` and ``differ`` may be missing).
    """
    long = pd.read_csv(path)
    rec = long.loc[long["etype"] == 1].set_index("id").sort_index()
    dth = long.loc[long["etype"] == 2].set_index("id").sort_index()
    if not rec.index.equals(dth.index):
        raise ValueError(f"{path}: every patient needs one recurrence and one death record.")
    out = dth[["rx", "sex", "age", "obstruct", "nodes", "differ", "extent"]].copy()
    out["rec"] = rec["status"].astype(int)
    out["rec_days"] = rec["time"].astype(int)
    out["death"] = dth["status"].astype(int)
    out["death_days"] = dth["time"].astype(int)
    out = out.reset_index()
    out.insert(1, "centre", "")
    for centre, (first, last) in CENTRES.items():
        out.loc[out["id"].between(first, last), "centre"] = centre
    return out


def weeks_text(days: int) -> str:
    """Days as weeks with 4 decimals and a decimal comma (C's ``%.4f``, as R's sprintf)."""
    return f"{days / 7:.4f}".replace(".", ",")


def _optional_int(value: float) -> int | None:
    return None if pd.isna(value) else int(value)


def _yes_no(flag: int, yes: str, no: str) -> str:
    return yes if int(flag) == 1 else no


def write_leiden(patients: pd.DataFrame, path: Path) -> Path:
    """Centre A: xlsx, Dutch headers under a title block, codes as words, days."""
    from openpyxl import Workbook

    grades = {1: "goed", 2: "matig", 3: "slecht"}
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(LEIDEN_SHEET)
    for line in LEIDEN_TITLE:
        sheet.append([line] if line else [])
    sheet.append(list(LEIDEN_HEADERS))
    for row in patients.itertuples(index=False):
        sheet.append(
            [
                f"L-{row.id:04d}",
                int(row.age),
                _yes_no(row.sex, "man", "vrouw"),
                row.rx,
                None if pd.isna(row.differ) else grades[int(row.differ)],
                int(row.extent),
                _yes_no(row.obstruct, "ja", "nee"),
                _optional_int(row.nodes),
                _yes_no(row.rec, "ja", "nee"),
                int(row.rec_days),
                _yes_no(row.death, "ja", "nee"),
                int(row.death_days),
            ]
        )
    props = workbook.properties
    props.creator = "LUMC datamanagement"
    props.created = FIXED_TIME
    props.modified = FIXED_TIME
    tmp = path.with_suffix(".tmp.xlsx")
    workbook.save(tmp)
    _normalise_xlsx(tmp, path)
    tmp.unlink()
    return path


def _normalise_xlsx(source: Path, target: Path) -> None:
    """Copy an xlsx archive with fixed entry times and fixed document times."""
    stamp = re.compile(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)")
    fixed = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=FIXED_TIME.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            data = zin.read(item)
            if item.filename == "docProps/core.xml":
                data = stamp.sub(lambda m: m.group(1) + fixed + m.group(2), data)
            zout.writestr(info, data)


def write_muenster(patients: pd.DataFrame, path: Path) -> Path:
    """Centre B: csv with ``;``, Latin-1, decimal comma, weeks, ``k.A.`` for missing."""
    with open(path, "w", encoding="latin-1", newline="") as handle:
        writer = csv.writer(handle, delimiter=";", lineterminator="\r\n")
        writer.writerow(MUENSTER_HEADERS)
        for row in patients.itertuples(index=False):
            writer.writerow(
                [
                    f"MS{row.id:05d}",
                    f"{row.age:.1f}".replace(".", ","),
                    _yes_no(row.sex, "m", "w"),
                    MUENSTER_THERAPY[row.rx],
                    MUENSTER_MISSING if pd.isna(row.differ) else f"G{int(row.differ)}",
                    str(int(row.extent)),
                    _yes_no(row.obstruct, "ja", "nein"),
                    MUENSTER_MISSING if pd.isna(row.nodes) else str(int(row.nodes)),
                    _yes_no(row.rec, "ja", "nein"),
                    weeks_text(row.rec_days),
                    _yes_no(row.death, "ja", "nein"),
                    weeks_text(row.death_days),
                ]
            )
    return path


def write_boston(patients: pd.DataFrame, path: Path) -> Path:
    """Centre C: SPSS .sav, English names, numeric codes with value labels, days."""
    import pyreadstat

    rx_code = {label: code for code, label in BOSTON_LABELS["rx"].items()}
    frame = pd.DataFrame(
        {
            "patient_id": patients["id"].astype(float),
            "age": patients["age"].astype(float),
            "sex": patients["sex"].astype(float),
            "rx": patients["rx"].map(rx_code).astype(float),
            "differ": patients["differ"].astype(float),
            "extent": patients["extent"].astype(float),
            "obstruct": patients["obstruct"].astype(float),
            "nodes": patients["nodes"].astype(float),
            "recurrence": patients["rec"].astype(float),
            "recurrence_days": patients["rec_days"].astype(float),
            "death": patients["death"].astype(float),
            "death_days": patients["death_days"].astype(float),
        }
    ).reset_index(drop=True)
    if frame["rx"].isna().any():
        raise ValueError("colon.csv holds a treatment arm other than Obs, Lev, Lev+5FU.")
    pyreadstat.write_sav(
        frame,
        str(path),
        column_labels=[BOSTON_COLUMN_LABELS[c] for c in frame.columns],
        variable_value_labels=BOSTON_LABELS,
    )
    with open(path, "r+b") as handle:  # fixed creation date and time in the header (92-108)
        handle.seek(92)
        handle.write(b"01 Mar 2400:00:00")
    return path


def write_colon_uploads(out_dir: str | Path) -> dict[str, Path]:
    """Write the three centres' uploads into ``out_dir``; return centre -> upload path.

    Examples
    --------
    >>> uploads = write_colon_uploads(tmp_path)  # doctest: +SKIP
    >>> sorted(uploads)  # doctest: +SKIP
    ['boston', 'leiden', 'muenster']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    patients = colon_patients()
    parts = {c: patients.loc[patients["centre"] == c] for c in CENTRES}
    if sum(len(p) for p in parts.values()) != len(patients):
        raise ValueError("every colon patient must fall into one centre's id range.")
    return {
        "leiden": write_leiden(parts["leiden"], out / "leiden.xlsx"),
        "muenster": write_muenster(parts["muenster"], out / "muenster.csv"),
        "boston": write_boston(parts["boston"], out / "boston.sav"),
    }


def pipeline_months(days: np.ndarray, centre: str) -> np.ndarray:
    """Months as the pipeline computes them from a centre's upload: the delivered number
    (for muenster the 4-decimal weeks text, parsed) times the unit factor."""
    days = np.asarray(days, dtype=np.int64)
    if centre == "muenster":
        weeks = np.array([float(weeks_text(int(d)).replace(",", ".")) for d in days])
        return weeks * (7 / 30.4375)
    return days.astype(np.float64) * (1 / 30.4375)

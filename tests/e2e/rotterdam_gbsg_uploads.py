"""Survival's ``rotterdam`` and ``gbsg`` as two centre uploads (for ``test_rotterdam_gbsg.py``).

From ``tests/reference/rotterdam.csv`` and ``tests/reference/gbsg.csv`` (written by
``make_rotterdam_gbsg.R``: the data as shipped with survival 3.5-3), one upload per cohort:

* **rotterdam** (2,982 patients): ``rotterdam.xlsx``, sheet ``Tumorbank``, a three-row title
  block and Dutch headers on row 4; codes ``pre/post``, ``ja/nee``, the size category as
  shipped (``<=20``, ``20-50``, ``>50``); recurrence and death recorded separately, each with
  its own time in days (``Dagen tot recidief`` is the recurrence censoring time when there was
  no recurrence). Relapse-free survival is derived by the centre mapping
  (``rotterdam_gbsg/rotterdam.yaml``).
* **gbsg** (686 patients): ``gbsg.csv``, ``;``-separated, Latin-1, CRLF, German headers with
  umlauts (``Tumorgröße (mm)``), menopausal status ``prä/post``, ``ja/nein``; age written with
  a decimal comma (``49,0``); relapse-free survival delivered as a duration in days with its
  status (0/1); no overall survival (not collected).

Deterministic: the same CSV files give the same bytes (fixed xlsx document and zip times).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import zipfile
from pathlib import Path

import pandas as pd

REFERENCE = Path(__file__).resolve().parent.parent / "reference"
ROTTERDAM_CSV = REFERENCE / "rotterdam.csv"
GBSG_CSV = REFERENCE / "gbsg.csv"
CENTRES = ("rotterdam", "gbsg")
FIXED_TIME = dt.datetime(2024, 3, 1, 0, 0, 0)

ROTTERDAM_SHEET = "Tumorbank"
ROTTERDAM_TITLE = (
    "Rotterdam tumorbank: primair mammacarcinoom, operatie 1978-1993",
    "Export datum: 01-03-2024",
    "",
)
ROTTERDAM_HEADER_ROW = len(ROTTERDAM_TITLE) + 1  # as seen in the spreadsheet (1-based)
ROTTERDAM_HEADERS = (
    "Patiëntnummer",
    "Jaar van operatie",
    "Leeftijd",
    "Menopauze (pre/post)",
    "Tumorgrootte (<=20, 20-50, >50)",
    "Gradering",
    "Positieve klieren",
    "PgR (fmol/l)",
    "ER (fmol/l)",
    "Hormonale therapie (ja/nee)",
    "Chemotherapie (ja/nee)",
    "Dagen tot recidief",
    "Recidief (ja/nee)",
    "Dagen tot overlijden",
    "Overleden (ja/nee)",
)
GBSG_HEADERS = (
    "Patientennummer",
    "Alter",
    "Menopausenstatus",
    "Tumorgröße (mm)",
    "Grading",
    "Lymphknoten positiv",
    "PgR (fmol/l)",
    "ER (fmol/l)",
    "Hormontherapie (ja/nein)",
    "Rezidivfreie Zeit (Tage)",
    "Status",
)


def rotterdam_id(pid: int) -> str:
    return f"RTM-{int(pid):04d}"


def gbsg_id(pid: int) -> str:
    return f"GBSG-{int(pid):04d}"


def read_rotterdam(path: Path = ROTTERDAM_CSV) -> pd.DataFrame:
    """rotterdam.csv as written by make_rotterdam_gbsg.R (size as its label text)."""
    return pd.read_csv(path, dtype={"size": str}, keep_default_na=False)


def read_gbsg(path: Path = GBSG_CSV) -> pd.DataFrame:
    return pd.read_csv(path)


def _yes_no(flag: int, yes: str, no: str) -> str:
    return yes if int(flag) == 1 else no


def write_rotterdam(patients: pd.DataFrame, path: Path) -> Path:
    """Centre 1: xlsx, Dutch headers under a title block, codes as words, days."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(ROTTERDAM_SHEET)
    for line in ROTTERDAM_TITLE:
        sheet.append([line] if line else [])
    sheet.append(list(ROTTERDAM_HEADERS))
    for row in patients.itertuples(index=False):
        sheet.append(
            [
                rotterdam_id(row.pid),
                int(row.year),
                int(row.age),
                "post" if int(row.meno) == 1 else "pre",
                str(row.size),
                int(row.grade),
                int(row.nodes),
                int(row.pgr),
                int(row.er),
                _yes_no(row.hormon, "ja", "nee"),
                _yes_no(row.chemo, "ja", "nee"),
                int(row.rtime),
                _yes_no(row.recur, "ja", "nee"),
                int(row.dtime),
                _yes_no(row.death, "ja", "nee"),
            ]
        )
    props = workbook.properties
    props.creator = "Erasmus MC tumorbank"
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


def write_gbsg(patients: pd.DataFrame, path: Path) -> Path:
    """Centre 2: csv with ``;``, Latin-1, decimal comma (age), German codes, RFS in days."""
    with open(path, "w", encoding="latin-1", newline="") as handle:
        writer = csv.writer(handle, delimiter=";", lineterminator="\r\n")
        writer.writerow(GBSG_HEADERS)
        for row in patients.itertuples(index=False):
            writer.writerow(
                [
                    gbsg_id(row.pid),
                    f"{float(row.age):.1f}".replace(".", ","),
                    "post" if int(row.meno) == 1 else "prä",
                    str(int(row.size)),
                    str(int(row.grade)),
                    str(int(row.nodes)),
                    str(int(row.pgr)),
                    str(int(row.er)),
                    _yes_no(row.hormon, "ja", "nein"),
                    str(int(row.rfstime)),
                    str(int(row.status)),
                ]
            )
    return path


def write_rotterdam_gbsg_uploads(out_dir: str | Path) -> dict[str, Path]:
    """Write the two centres' uploads into ``out_dir``; return centre -> upload path.

    Examples
    --------
    >>> uploads = write_rotterdam_gbsg_uploads(tmp_path)  # doctest: +SKIP
    >>> sorted(uploads)  # doctest: +SKIP
    ['gbsg', 'rotterdam']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "rotterdam": write_rotterdam(read_rotterdam(), out / "rotterdam.xlsx"),
        "gbsg": write_gbsg(read_gbsg(), out / "gbsg.csv"),
    }

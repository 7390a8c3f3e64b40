"""Writing a centre's upload in its own format, its mapping YAML, and planting errors.

A centre's clean harmonised rows (from :mod:`pooled.simulate.cohort`) are turned into the
cells the centre would write (:func:`format_cells`: its headers, codes, missing-value code,
date style, decimal comma, units, CTC per 15 ml), a few cells are spoiled on purpose
(:func:`plant_errors`, each a single-cell error of a validation rule of the contract, recorded
with the row and column the person sees), and the rows are streamed into the file by an
:class:`UploadWriter` (csv and write-only xlsx in chunks; SPSS ``.sav`` at close).
:func:`mapping_document` writes the correct mapping for the upload.

Files are byte-for-byte reproducible: xlsx archives get fixed timestamps and document
properties; the ``.sav`` header's creation date and time are fixed.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pooled.simulate.profiles import Profile, header

FIXED_TIME = dt.datetime(2024, 1, 1, 0, 0, 0)
EXCEL_EPOCH = pd.Timestamp("1899-12-30")
MIN_ERRORS_PER_KIND = 3  # planted errors of each kind in a centre of >= 200 patients

NUMBER_FIELDS = {
    "age", "tumour_size_mm", "er_percent", "pr_percent", "ki67_percent", "ctc_blood_volume_ml",
    "days_from_baseline",
}  # fmt: skip
INTEGER_FIELDS = {
    "positive_nodes", "grade", "dtc_count", "ctc_count", "line_of_therapy", "timepoint",
}  # fmt: skip
BOOLEAN_FIELDS = {
    "chemotherapy", "endocrine_therapy", "anti_her2_therapy", "bisphosphonate",
    "os_event", "bcss_event", "dfs_event", "ddfs_event", "pfs_event", "ttf_event",
}  # fmt: skip
DURATION_FIELDS = {"os_months", "bcss_months", "dfs_months", "ddfs_months", "pfs_months",
                   "ttf_months"}  # fmt: skip
STRING_FIELDS = {"patient_id", "treatment_arm"}

# Category codes per language: harmonised code -> what the centre writes.
CATEGORY_CODES: dict[str, dict[str, dict[str, Any]]] = {
    "menopausal_status": {
        "de": {"pre": "prä", "peri": "peri", "post": "post"},
        "en": {"pre": "pre", "peri": "peri", "post": "post"},
        "spss": {"pre": 1.0, "peri": 2.0, "post": 3.0},
    },
    "her2_ish": {
        "de": {"amplified": "amplifiziert", "not_amplified": "nicht amplifiziert"},
        "en": {"amplified": "amplified", "not_amplified": "not amplified"},
        "spss": {"amplified": 1.0, "not_amplified": 0.0},
    },
    "her2_ihc": {
        "de": {"0": "0", "1+": "1+", "2+": "2+", "3+": "3+"},
        "en": {"0": "0", "1+": "1+", "2+": "2+", "3+": "3+"},
        "spss": {"0": 0.0, "1+": 1.0, "2+": 2.0, "3+": 3.0},
    },
    "subtype": {
        "de": {
            "luminal_a": "Luminal A",
            "luminal_b": "Luminal B",
            "her2_positive": "HER2+",
            "triple_negative": "TNBC",
        },
        "en": {
            "luminal_a": "Luminal A",
            "luminal_b": "Luminal B",
            "her2_positive": "HER2+",
            "triple_negative": "TNBC",
        },
        "spss": {"luminal_a": 1.0, "luminal_b": 2.0, "her2_positive": 3.0, "triple_negative": 4.0},
    },
    "death_cause": {
        "de": {"breast_cancer": "Brustkrebs", "other": "andere", "unknown": "unklar"},
        "en": {"breast_cancer": "breast cancer", "other": "other", "unknown": "not known"},
        "spss": {"breast_cancer": 1.0, "other": 2.0, "unknown": 3.0},
    },
    "treatment_arm": {},
}
GRADE_CODES_DE = {1.0: "G1", 2.0: "G2", 3.0: "G3"}
OS_FLAG_WITH_DATES = ("dead", "alive")


@dataclass(frozen=True, slots=True)
class PlantedError:
    """One planted single-cell error, where the person sees it in their file."""

    centre: str
    file: str
    sheet: str
    row: int
    column: str
    kind: str
    field: str
    value: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- formatting
def _is_missing(values: pd.Series) -> np.ndarray:
    return values.isna().to_numpy()


def _number_text(value: float, decimal: str) -> str:
    if float(value).is_integer():
        return str(int(value))
    text = repr(round(float(value), 6))
    return text.replace(".", decimal) if decimal != "." else text


def _missing_token(profile: Profile, kind: str) -> Any:
    if kind == "date" or profile.missing_token == "":
        return None if profile.extension != "csv" else ""
    return profile.missing_token


def format_values(field: str, values: pd.Series, profile: Profile) -> list[Any]:
    """Cells a centre with ``profile`` writes for the harmonised ``values`` of ``field``."""
    v = values.reset_index(drop=True)
    missing = _is_missing(v)
    text_format = profile.extension == "csv"
    if field in STRING_FIELDS:
        out = v.astype(object).where(~missing, "" if profile.extension != "xlsx" else None)
        return out.tolist()
    if field.endswith("_date"):
        token = _missing_token(profile, "date")
        dates = pd.to_datetime(v)
        cells: list[Any]
        if profile.date_style == "datetime":
            cells = [d.to_pydatetime() for d in dates.where(~missing, pd.Timestamp(0))]
        elif profile.date_style == "excel_serial":
            cells = ((dates - EXCEL_EPOCH).dt.days.fillna(0).astype(np.int64)).tolist()
        elif profile.date_style == "spss":
            cells = [d.date() for d in dates.where(~missing, pd.Timestamp(0))]
        elif profile.date_style == "text_dmy":
            cells = dates.dt.strftime("%d.%m.%Y").tolist()
        else:
            cells = dates.dt.strftime("%Y-%m-%d").tolist()
        return [token if m else c for c, m in zip(cells, missing, strict=True)]
    token = _missing_token(profile, "value")
    if field in DURATION_FIELDS:
        days = np.round(v.to_numpy(dtype=float, na_value=np.nan) * 30.4375)
        return [
            token if m else (str(int(d)) if text_format else int(d))
            for d, m in zip(days, missing, strict=True)
        ]
    if field in BOOLEAN_FIELDS:
        yes_no: tuple[Any, Any] = (
            OS_FLAG_WITH_DATES
            if field == "os_event" and profile.os_flag_with_dates
            else profile.yes_no
        )
        yes, no = yes_no
        flags = v.astype(object).to_numpy()
        return [
            token if m else (yes if bool(f) else no) for f, m in zip(flags, missing, strict=True)
        ]
    if field in ("er_status", "pr_status", "her2_status"):
        pos, neg = profile.receptor
        status = v.astype(object).to_numpy()
        return [
            token if m else (pos if s == "positive" else neg)
            for s, m in zip(status, missing, strict=True)
        ]
    if field in CATEGORY_CODES:
        codes = CATEGORY_CODES[field][profile.language]
        return [
            token if m else codes[str(c)] for c, m in zip(v.astype(object), missing, strict=True)
        ]
    numbers = v.to_numpy(dtype=float, na_value=np.nan)
    if field == "grade" and profile.language == "de":
        return [token if m else GRADE_CODES_DE[x] for x, m in zip(numbers, missing, strict=True)]
    if field == "tumour_size_mm" and profile.tumour_size_unit == "cm":
        numbers = np.round(numbers / 10.0, 1)
    if field in INTEGER_FIELDS or field in NUMBER_FIELDS:
        if text_format:
            return [
                token if m else _number_text(x, profile.decimal)
                for x, m in zip(numbers, missing, strict=True)
            ]
        if profile.extension == "sav":
            return [float(token) if m else float(x) for x, m in zip(numbers, missing, strict=True)]
        return [
            token if m else (int(x) if float(x).is_integer() else float(x))
            for x, m in zip(numbers, missing, strict=True)
        ]
    raise KeyError(f"no cell format for field {field!r}")


def format_cells(frame: pd.DataFrame, fields: tuple[str, ...], profile: Profile) -> pd.DataFrame:
    """The centre's cells (object DataFrame, columns = schema fields) for harmonised rows."""
    return pd.DataFrame({f: format_values(f, frame[f], profile) for f in fields}, dtype=object)


def one_cell(field: str, value: Any, profile: Profile) -> Any:
    """The cell written for one harmonised value."""
    return format_values(field, pd.Series([value]), profile)[0]


# ---------------------------------------------------------------------------- planting
def _choose(rng: np.random.Generator, eligible: np.ndarray, used: np.ndarray, k: int) -> np.ndarray:
    pool = np.flatnonzero(eligible & ~used)
    if k <= 0 or len(pool) == 0:
        return np.zeros(0, dtype=np.int64)
    picked = rng.choice(pool, size=min(k, len(pool)), replace=False)
    return np.sort(picked)


def _days(series: pd.Series) -> np.ndarray:
    """Day numbers of a datetime Series (NaT -> a very small number)."""
    values = pd.to_datetime(series).to_numpy(dtype="datetime64[D]")
    out = values.astype(np.int64)
    out[np.isnat(values)] = np.iinfo(np.int64).min
    return out


def _num(column: pd.Series, i: int) -> float:
    return float(column.to_numpy(dtype=float)[i])


def _date(day: int) -> pd.Timestamp:
    return pd.Timestamp(np.datetime64(int(day), "D"))


def planted_kinds(setting: str, profile: Profile, table: str = "patients") -> tuple[str, ...]:
    """The row-level rule ids that fit a centre's format."""
    if table == "samples":
        return ("integer", "range")
    kinds = []
    if profile.extension != "sav":
        kinds.append("type")
    kinds += ["code", "integer", "range", "plausible_range", "required_missing", "duplicate_id"]
    if profile.delivers == "dates":
        kinds += ["date_order", "event_after_last_contact", "contact_after_death", "future_date"]
        if profile.last_contact_if_dead == "blank":
            kinds.append("death_before_recurrence")
        if profile.os_flag_with_dates:
            kinds.append("event_flag")
    if profile.percents:
        kinds.append("receptor_consistency")
    return tuple(kinds)


def plant_errors(
    frame: pd.DataFrame,
    cells: pd.DataFrame,
    *,
    setting: str,
    profile: Profile,
    rng: np.random.Generator,
    centre: str,
    file: str,
    sheet: str,
    first_row: int,
    rate: float,
    minimum: int,
    table: str = "patients",
    skip: tuple[str, ...] = (),
) -> list[PlantedError]:
    """Spoil single cells of ``cells`` in place; return what was planted where.

    Each planted error changes exactly one cell (the cell the validation contract says the
    finding names) and no row gets two. ``first_row`` is the row number, as the person sees
    it, of the first row of ``cells``. ``skip`` leaves out kinds (the trajectory scenario does
    not spoil patient ids, whose samples would then be orphans: a second finding).
    """
    n = len(frame)
    used = np.zeros(n, dtype=bool)
    planted: list[PlantedError] = []
    k_default = max(int(round(rate * n)), minimum)
    needs = {"receptor_consistency": "er_percent", "event_flag": "os_event",
             "death_before_recurrence": "death_date", "date_order": "sample_date"}  # fmt: skip
    kinds = tuple(
        k
        for k in planted_kinds(setting, profile, table)
        if needs.get(k, "patient_id") in frame and k not in skip
    )
    early = setting == "early"

    def record(i: int, field: str, value: Any, kind: str) -> None:
        cells.iat[i, int(cells.columns.get_loc(field))] = value  # type: ignore[arg-type]
        used[i] = True
        planted.append(
            PlantedError(
                centre=centre,
                file=file,
                sheet=sheet,
                row=int(first_row + i),
                column=header(profile, field),
                kind=kind,
                field=field,
                value="" if value is None else str(value),
            )
        )

    has = {
        c: frame[c].notna().to_numpy() if c in frame else np.zeros(n, bool) for c in frame.columns
    }
    everyone = np.ones(n, dtype=bool)
    budget = max(n // 4, 1)  # at most a quarter of the rows get an error
    for kind in kinds:
        k = min(k_default, budget - int(used.sum()))
        if kind == "type":
            for i in _choose(rng, has["age"], used, k):
                record(i, "age", f"ca. {int(_num(frame['age'], i))}", kind)
        elif kind == "code":
            field = (
                "chemotherapy" if table == "patients" and "chemotherapy" in cells else "er_status"
            )
            token: Any = {"de": "vielleicht", "en": "unclear", "spss": 7.0}[profile.language]
            if profile.extension == "csv" and profile.yes_no == ("1", "0"):
                token = "2"
            for i in _choose(rng, has[field], used, k):
                record(i, field, token, kind)
        elif kind == "integer":
            field = (
                "ctc_count"
                if table == "samples"
                else ("positive_nodes" if early else "line_of_therapy")
            )
            if field not in cells:
                field = "ctc_count"
            for i in _choose(rng, has[field], used, k):
                record(i, field, one_cell(field, _num(frame[field], i) + 0.5, profile), kind)
        elif kind == "range":
            if table == "samples":
                for i in _choose(rng, has["ctc_count"], used, k):
                    record(
                        i,
                        "ctc_count",
                        one_cell("ctc_count", -float(rng.integers(1, 5)), profile),
                        kind,
                    )
            else:
                for i in _choose(rng, has["age"], used, k):
                    record(i, "age", one_cell("age", _num(frame["age"], i) + 100.0, profile), kind)
        elif kind == "plausible_range":
            for i in _choose(rng, has["age"], used, k):
                record(i, "age", one_cell("age", float(rng.integers(12, 18)), profile), kind)
        elif kind == "required_missing":
            for i in _choose(rng, everyone, used, k):
                record(i, "patient_id", "" if profile.extension != "xlsx" else None, kind)
        elif kind == "duplicate_id":
            targets = _choose(rng, np.arange(n) > 0, used, k)
            used[targets] = True
            for j in targets:
                sources = np.flatnonzero(~used[:j])
                if len(sources) == 0:
                    used[j] = False
                    continue
                i = int(rng.choice(sources))
                used[i] = True
                record(int(j), "patient_id", cells["patient_id"].iat[i], kind)
        elif kind == "date_order":
            if early:
                for i in _choose(rng, has["surgery_date"] & has["diagnosis_date"], used, k):
                    day = _days(frame["diagnosis_date"].iloc[[i]])[0] - int(rng.integers(5, 61))
                    record(i, "surgery_date", one_cell("surgery_date", _date(day), profile), kind)
            else:
                for i in _choose(rng, has["progression_date"], used, k):
                    day = _days(frame["sample_date"].iloc[[i]])[0] - int(rng.integers(10, 201))
                    record(
                        i,
                        "progression_date",
                        one_cell("progression_date", _date(day), profile),
                        kind,
                    )
        elif kind == "event_after_last_contact":
            field = "recurrence_date" if early else "progression_date"
            alive = ~has["death_date"] & has["last_contact_date"] & has[field]
            for i in _choose(rng, alive, used, k):
                day = _days(frame["last_contact_date"].iloc[[i]])[0] + int(rng.integers(30, 301))
                record(i, field, one_cell(field, _date(day), profile), kind)
        elif kind == "death_before_recurrence":
            field = "recurrence_date" if early else "progression_date"
            origin = "diagnosis_date" if early else "sample_date"
            gap = _days(frame[field]) - _days(frame[origin])
            ok = has["death_date"] & has[field] & (gap >= 10)
            if early:
                only_local = ok & ~has["distant_recurrence_date"]
                ok = only_local if only_local.sum() >= k else ok
            for i in _choose(rng, ok, used, k):
                event = _days(frame[field].iloc[[i]])[0]
                day = event - int(rng.integers(1, min(100, int(gap[i]))))
                record(i, "death_date", one_cell("death_date", _date(day), profile), kind)
        elif kind == "contact_after_death":
            for i in _choose(rng, has["death_date"], used, k):
                day = _days(frame["death_date"].iloc[[i]])[0] + int(rng.integers(45, 401))
                record(
                    i, "last_contact_date", one_cell("last_contact_date", _date(day), profile), kind
                )
        elif kind == "future_date":
            events = [c for c in ("recurrence_date", "distant_recurrence_date", "progression_date",
                                  "treatment_failure_date", "death_date") if c in has]  # fmt: skip
            quiet = has["last_contact_date"] & ~np.any([has[c] for c in events], axis=0)
            for i in _choose(rng, quiet, used, k):
                day = _days(frame["last_contact_date"].iloc[[i]])[0] + int(round(70 * 365.25))
                record(
                    i, "last_contact_date", one_cell("last_contact_date", _date(day), profile), kind
                )
        elif kind == "event_flag":
            for i in _choose(rng, has["os_event"], used, k):
                dead = bool(frame["os_event"].iat[i])
                record(i, "os_event", one_cell("os_event", not dead, profile), kind)
        elif kind == "receptor_consistency":
            pr_pos = (frame["pr_status"] == "positive").to_numpy()
            her2_pos = (frame["her2_status"] == "positive").to_numpy()
            ok = has["er_percent"] & has["er_status"] & (pr_pos | her2_pos)
            chosen = _choose(rng, ok, used, k)
            for n_done, i in enumerate(chosen):
                if profile.delivers_subtype and n_done % 2 == 1:
                    current = str(frame["subtype"].iat[i])
                    other = "luminal_a" if current != "luminal_a" else "luminal_b"
                    record(i, "subtype", one_cell("subtype", other, profile), kind)
                else:
                    flipped = "negative" if frame["er_status"].iat[i] == "positive" else "positive"
                    record(i, "er_status", one_cell("er_status", flipped, profile), kind)
        else:  # pragma: no cover - kinds come from planted_kinds
            raise AssertionError(kind)
    return planted


# ---------------------------------------------------------------------------- writers
class UploadWriter:
    """Streams one centre's rows into its upload file (one or two tables)."""

    def __init__(self, path: Path, profile: Profile) -> None:
        self.path = path
        self.profile = profile
        self._csv_handle: Any = None
        self._csv: Any = None
        self._workbook: Any = None
        self._sheets: dict[str, Any] = {}
        self._sav_parts: list[pd.DataFrame] = []
        self._sav_labels: dict[str, dict[float, str]] = {}
        if profile.extension == "csv":
            self._csv_handle = open(path, "w", encoding=profile.encoding, newline="")
            self._csv = csv.writer(
                self._csv_handle, delimiter=profile.delimiter, lineterminator="\r\n"
            )
        elif profile.extension == "xlsx":
            from openpyxl import Workbook

            self._workbook = Workbook(write_only=True)

    def start_table(
        self,
        sheet: str,
        headers: list[str],
        title: tuple[str, ...] = (),
        *,
        header_row: int | None = None,
    ) -> None:
        header_row = self.profile.header_row if header_row is None else header_row
        if self.profile.extension == "csv":
            self._csv.writerow(headers)
        elif self.profile.extension == "xlsx":
            ws = self._workbook.create_sheet(sheet)
            for line in title:
                ws.append([line])
            for _ in range(header_row - 1 - len(title)):
                ws.append([])
            ws.append(headers)
            self._sheets[sheet] = ws
        else:
            self._sav_headers = headers

    def set_value_labels(self, labels: dict[str, dict[float, str]]) -> None:
        self._sav_labels = labels

    def write(self, sheet: str, cells: pd.DataFrame, headers: list[str]) -> None:
        if self.profile.extension == "csv":
            self._csv.writerows(cells.itertuples(index=False, name=None))
        elif self.profile.extension == "xlsx":
            ws = self._sheets[sheet]
            for row in cells.itertuples(index=False, name=None):
                ws.append(list(row))
        else:
            part = cells.copy()
            part.columns = headers
            self._sav_parts.append(part)

    def close(self) -> None:
        if self.profile.extension == "csv":
            self._csv_handle.close()
        elif self.profile.extension == "xlsx":
            props = self._workbook.properties
            props.creator = "pooled simulate"
            props.created = FIXED_TIME
            props.modified = FIXED_TIME
            tmp = self.path.with_suffix(".tmp.xlsx")
            self._workbook.save(tmp)
            _normalise_xlsx(tmp, self.path)
            tmp.unlink()
        else:
            _write_sav(self.path, self._sav_parts, self._sav_labels)


def _normalise_xlsx(source: Path, target: Path) -> None:
    """Copy an xlsx archive with fixed entry timestamps and fixed document times."""
    stamp = re.compile(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)")
    fixed = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            if item.filename == "docProps/core.xml":
                data = stamp.sub(lambda m: m.group(1) + fixed + m.group(2), zin.read(item))
                zout.writestr(info, data)
                continue
            with zin.open(item) as src, zout.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _write_sav(path: Path, parts: list[pd.DataFrame], labels: dict[str, dict[float, str]]) -> None:
    import pyreadstat

    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    for column in frame.columns:
        sample = next((v for v in frame[column] if v is not None and v == v and v != ""), None)
        if isinstance(sample, float | int) and not isinstance(sample, bool):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
        elif isinstance(sample, dt.date):
            frame[column] = frame[column].where(frame[column].notna(), None)
        else:
            frame[column] = frame[column].map(lambda v: "" if v is None else str(v))
    pyreadstat.write_sav(frame, str(path), variable_value_labels=labels or None)
    with open(path, "r+b") as handle:  # fixed creation date and time in the header (bytes 92-108)
        handle.seek(92)
        handle.write(b"01 Jan 2400:00:00")


# ---------------------------------------------------------------------------- mapping YAML
def column_mapping(field: str, profile: Profile, setting: str) -> dict[str, Any] | str:
    """The mapping entry (``columns:`` value) for one delivered field."""
    head = header(profile, field)
    entry: dict[str, Any] = {"column": head}
    lang = profile.language
    if field in ("er_status", "pr_status", "her2_status"):
        pos, neg = profile.receptor
        entry["codes"] = {_yaml_key(pos): "positive", _yaml_key(neg): "negative"}
    elif field in BOOLEAN_FIELDS:
        yes_no: tuple[Any, Any] = (
            OS_FLAG_WITH_DATES
            if field == "os_event" and profile.os_flag_with_dates
            else profile.yes_no
        )
        yes, no = yes_no
        entry["codes"] = {_yaml_key(yes): True, _yaml_key(no): False}
    elif field in CATEGORY_CODES and CATEGORY_CODES[field]:
        codes = CATEGORY_CODES[field][lang]
        entry["codes"] = {_yaml_key(v): k for k, v in codes.items() if _yaml_key(v) != k}
        if not entry["codes"]:
            del entry["codes"]
    elif field == "grade" and lang == "de":
        entry["codes"] = {v: int(k) for k, v in GRADE_CODES_DE.items()}
    if field == "tumour_size_mm" and profile.tumour_size_unit == "cm":
        entry["unit"] = "cm"
    if field.endswith("_date") and profile.date_style == "excel_serial":
        entry["date_format"] = "excel"
    return entry["column"] if len(entry) == 1 else entry


def _yaml_key(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def mapping_document(
    *,
    centre: str,
    description: str,
    profile: Profile,
    setting: str,
    fields: tuple[str, ...],
    file: str,
    reported: dict[str, Any],
    sample_fields: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The centre mapping (``configs/centres`` format) for an upload written with ``profile``."""
    date_format = {
        "datetime": "iso",
        "excel_serial": "excel",
        "text_dmy": "%d.%m.%Y",
        "spss": "iso",
        "iso_text": "iso",
    }[profile.date_style]
    doc: dict[str, Any] = {
        "centre": centre,
        "description": description,
        "missing_codes": list(profile.missing_codes),
        "date_format": date_format,
        "decimal": profile.decimal,
        "delivers": profile.delivers,
    }
    if profile.delivers == "durations":
        doc["duration_unit"] = profile.duration_unit
    doc["reported"] = reported
    columns: dict[str, Any] = {}
    for field in fields:
        columns[field] = column_mapping(field, profile, setting)
        if field == "ctc_count" and "ctc_blood_volume_ml" not in fields:
            columns["ctc_blood_volume_ml"] = {"value": profile.ctc_volume_ml}
    columns = {"setting": {"value": setting}, **columns}
    source: dict[str, Any] = {"table": "patients"}
    if profile.extension == "xlsx":
        source["sheet"] = profile.sheet
        source["header_row"] = profile.header_row
    if profile.extension == "csv":
        source["encoding"] = profile.encoding
        source["delimiter"] = profile.delimiter
    source["columns"] = columns
    doc["sources"] = [source]
    if sample_fields:
        samples: dict[str, Any] = {"table": "samples"}
        if profile.extension == "xlsx":
            samples["sheet"] = profile.samples_sheet
            samples["header_row"] = 1
        samples["columns"] = {f: column_mapping(f, profile, setting) for f in sample_fields}
        doc["sources"].append(samples)
    return doc


def dump_yaml(doc: dict[str, Any], path: Path, comment: str = "") -> None:
    import yaml

    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    head = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    path.write_text(head + text, encoding="utf-8")


def cells_to_csv_text(cells: pd.DataFrame, profile: Profile) -> str:  # pragma: no cover - debug
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=profile.delimiter).writerows(
        cells.itertuples(index=False, name=None)
    )
    return buffer.getvalue()

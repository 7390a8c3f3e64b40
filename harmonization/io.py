"""Reading centre uploads as they are: ``read_upload(path) -> RawUpload``.

Formats: ``.xlsx`` (openpyxl, any sheet, header on any row), ``.csv`` / ``.txt`` (comma,
semicolon or tab; any encoding), SPSS ``.sav`` and Stata ``.dta`` (pyreadstat). Cells are
kept as the reader gives them (numbers, text, datetimes); nothing is interpreted here.
Every data row keeps the row number the person sees in their own file, so findings can
point back to it. A file that cannot be read raises :class:`UploadError` with one clear
sentence naming the file and what to do.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from harmonization.errors import UploadError

UploadFormat = Literal["xlsx", "csv", "sav", "dta"]
_EXTENSIONS: dict[str, UploadFormat] = {
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".sav": "sav",
    ".zsav": "sav",
    ".dta": "dta",
}


@dataclass(frozen=True, slots=True)
class RawUpload:
    """One table (sheet) of an upload, read as it is.

    Attributes
    ----------
    path, file, sheet : where it came from (``sheet`` is ``""`` for csv/sav/dta).
    format : the file format.
    header_row : 1-based row of the header as seen in the file (0 for sav/dta: no header row).
    columns : the headers as written (blank headers become ``column_<n>``).
    cells : object DataFrame, one column per header, one row per non-blank data row.
    source_rows : for each row of ``cells``, its row number as the person sees it.
    blank_rows : number of fully blank rows skipped below the header (counted, not lost).
    sha256 : hash of the whole file's bytes.
    value_labels : SPSS/Stata value labels per column (empty for other formats).
    """

    path: str
    file: str
    sheet: str
    format: UploadFormat
    header_row: int
    columns: tuple[str, ...]
    cells: pd.DataFrame
    source_rows: np.ndarray
    blank_rows: int
    sha256: str
    value_labels: dict[str, dict[Any, str]] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(len(self.cells))


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def detect_format(path: str | Path) -> UploadFormat:
    """The upload format from the file extension; :class:`UploadError` if unknown."""
    suffix = Path(path).suffix.lower()
    try:
        return _EXTENSIONS[suffix]
    except KeyError:
        raise UploadError(
            f"{Path(path).name}: unsupported file type '{suffix or '(none)'}'; "
            f"expected one of {', '.join(sorted(_EXTENSIONS))}. Save the sheet as .xlsx or .csv."
        ) from None


def list_sheets(path: str | Path) -> list[str]:
    """Sheet names of an ``.xlsx`` file (``[""]`` for single-table formats)."""
    if detect_format(path) != "xlsx":
        return [""]
    workbook = _open_workbook(Path(path))
    try:
        return list(workbook.sheetnames)
    finally:
        workbook.close()


def read_upload(
    path: str | Path,
    *,
    sheet: str | None = None,
    header_row: int = 1,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> RawUpload:
    """Read one table of a centre upload as it is.

    Parameters
    ----------
    path : str or Path
        The upload file.
    sheet : str, optional
        ``.xlsx`` sheet name; default the first sheet.
    header_row : int, default 1
        1-based row number of the header as the person sees it (ignored for sav/dta).
    encoding : str, optional
        Text encoding of a csv; default UTF-8 (with BOM) and, failing that, an
        :class:`UploadError` that suggests ``encoding: latin-1`` in the mapping.
    delimiter : str, optional
        csv delimiter; default sniffed among ``,``, ``;`` and tab.

    Returns
    -------
    RawUpload

    Raises
    ------
    UploadError
        Missing, empty, binary or unreadable file; a sheet that does not exist; no header.

    Examples
    --------
    >>> raw = read_upload("uploads/ulm.xlsx", sheet="Patienten", header_row=4)  # doctest: +SKIP
    >>> raw.columns[:3]  # doctest: +SKIP
    ('Pat-Nr', 'Alter', 'ED')
    """
    path = Path(path)
    name = path.name
    if not path.exists():
        raise UploadError(f"{path}: no such file.")
    if path.is_dir():
        raise UploadError(f"{path}: is a folder, not an upload file.")
    if path.stat().st_size == 0:
        raise UploadError(f"{name}: the file is empty (0 bytes); ask the centre to resend it.")
    if header_row < 1:
        raise UploadError(f"{name}: header_row must be 1 or more; got {header_row}.")
    fmt = detect_format(path)
    sha = file_sha256(path)
    if fmt == "xlsx":
        return _read_xlsx(path, sheet, header_row, sha)
    if fmt == "csv":
        return _read_csv(path, header_row, encoding, delimiter, sha)
    return _read_stat(path, fmt, sha)


def _open_workbook(path: Path) -> Any:
    import zipfile

    from openpyxl import load_workbook

    try:
        return load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise UploadError(
            f"{path.name}: not a readable .xlsx workbook ({type(exc).__name__}); "
            "open it in Excel and save it again as .xlsx."
        ) from None


def _header_names(values: list[Any]) -> tuple[str, ...]:
    names: list[str] = []
    seen: dict[str, int] = {}
    for position, value in enumerate(values, start=1):
        text = "" if value is None else str(value).strip()
        if not text:
            text = f"column_{position}"
        if text in seen:
            seen[text] += 1
            text = f"{text}.{seen[text]}"
        else:
            seen[text] = 0
        names.append(text)
    return tuple(names)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _assemble(
    path: Path,
    sheet: str,
    fmt: UploadFormat,
    header_row: int,
    rows: list[tuple[Any, ...]] | list[list[Any]],
    first_row_number: int,
    sha: str,
) -> RawUpload:
    """Turn the rows below a header into a RawUpload, skipping (and counting) blank rows."""
    where = f"{path.name}" + (f", sheet '{sheet}'" if sheet else "")
    if len(rows) < header_row:
        raise UploadError(
            f"{where}: has {len(rows)} row(s), so there is no header on row {header_row}; "
            "check header_row in the centre mapping."
        )
    header = list(rows[header_row - 1])
    while header and _is_blank(header[-1]):
        header.pop()
    if not header:
        raise UploadError(
            f"{where}: row {header_row} is empty, so it cannot be the header; "
            "check header_row in the centre mapping."
        )
    columns = _header_names(header)
    width = len(columns)
    data: list[list[Any]] = []
    numbers: list[int] = []
    blank_numbers: list[int] = []
    for number, row in enumerate(rows[header_row:], start=header_row + first_row_number):
        values = list(row[:width])
        if len(values) < width:
            values.extend([None] * (width - len(values)))
        if all(_is_blank(v) for v in values):
            blank_numbers.append(number)
            continue
        data.append(values)
        numbers.append(number)
    # Blank rows between data rows are counted; trailing blank rows are not data at all.
    last = numbers[-1] if numbers else 0
    blank = sum(1 for number in blank_numbers if number < last)
    cells = pd.DataFrame(data, columns=list(columns), dtype=object)
    return RawUpload(
        path=str(path),
        file=path.name,
        sheet=sheet,
        format=fmt,
        header_row=header_row,
        columns=columns,
        cells=cells,
        source_rows=np.asarray(numbers, dtype=np.int64),
        blank_rows=blank,
        sha256=sha,
    )


def _read_xlsx(path: Path, sheet: str | None, header_row: int, sha: str) -> RawUpload:
    workbook = _open_workbook(path)
    try:
        names = list(workbook.sheetnames)
        if sheet is None:
            sheet = names[0]
        elif sheet not in names:
            lowered = {n.strip().lower(): n for n in names}
            if sheet.strip().lower() in lowered:
                sheet = lowered[sheet.strip().lower()]
            else:
                raise UploadError(
                    f"{path.name}: has no sheet '{sheet}'; its sheets are "
                    f"{', '.join(repr(n) for n in names)}. Fix 'sheet' in the centre mapping."
                )
        worksheet = workbook[sheet]
        rows = list(worksheet.iter_rows(values_only=True))
    finally:
        workbook.close()
    return _assemble(path, sheet, "xlsx", header_row, rows, 1, sha)


def _read_csv(
    path: Path, header_row: int, encoding: str | None, delimiter: str | None, sha: str
) -> RawUpload:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise UploadError(
            f"{path.name}: looks like a binary file, not text; export the data as .csv or .xlsx."
        )
    codec = encoding or "utf-8-sig"
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        raise UploadError(
            f"{path.name}: is not valid {codec} text (byte {exc.start}); set "
            "'encoding: latin-1' (or the centre's encoding) in the centre mapping."
        ) from None
    except LookupError:
        raise UploadError(
            f"{path.name}: unknown encoding '{codec}' in the centre mapping."
        ) from None
    if not text.strip():
        raise UploadError(f"{path.name}: the file has no text; ask the centre to resend it.")
    if delimiter is None:
        sample = "\n".join(text.splitlines()[header_row - 1 : header_row + 20])
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ";" if sample.count(";") > sample.count(",") else ","
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    # csv rows keep their own line numbers only when no field spans lines; that is the
    # common case and the row number the person sees in a spreadsheet program.
    return _assemble(path, "", "csv", header_row, rows, 1, sha)


def _read_stat(path: Path, fmt: UploadFormat, sha: str) -> RawUpload:
    import pyreadstat

    reader = pyreadstat.read_sav if fmt == "sav" else pyreadstat.read_dta
    try:
        frame, meta = reader(str(path))
    except Exception as exc:  # pyreadstat raises its own ReadstatError and others
        kind = "SPSS .sav" if fmt == "sav" else "Stata .dta"
        raise UploadError(
            f"{path.name}: not a readable {kind} file ({type(exc).__name__}: {exc}); "
            "ask the centre to export it again."
        ) from None
    if frame.shape[1] == 0:
        raise UploadError(f"{path.name}: the file has no variables.")
    cells = frame.astype(object).where(frame.notna(), None)
    labels = {column: dict(meta.variable_value_labels.get(column, {})) for column in frame.columns}
    keep = ~cells.apply(lambda col: col.map(_is_blank)).all(axis=1).to_numpy()
    return RawUpload(
        path=str(path),
        file=path.name,
        sheet="",
        format=fmt,
        header_row=0,
        columns=tuple(str(c) for c in frame.columns),
        cells=cells.loc[keep].reset_index(drop=True),
        source_rows=(np.flatnonzero(keep) + 1).astype(np.int64),
        blank_rows=int((~keep).sum()),
        sha256=sha,
        value_labels={k: v for k, v in labels.items() if v},
    )

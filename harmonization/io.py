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
import warnings
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
class ReadNote:
    """Something the reader saw that validation must report at a row and column.

    Attributes
    ----------
    kind : the validation rule id (``ragged_row``, ``unclosed_quote``, ``multiline_record``,
        ``unnamed_column``, ``duplicate_header``, ``formula_without_value``).
    row : the row number as the person sees it (``None`` for the whole upload).
    column : the header as in :attr:`RawUpload.columns` (``None`` for a whole row).
    value : the offending text (shortened).
    message : one sentence saying what was found and how to fix it.
    """

    kind: str
    row: int | None
    column: str | None
    value: str
    message: str


@dataclass(frozen=True, slots=True)
class RawUpload:
    """One table (sheet) of an upload, read as it is.

    Attributes
    ----------
    path, file, sheet : where it came from (``sheet`` is ``""`` for csv/sav/dta).
    format : the file format.
    header_row : 1-based row of the header as seen in the file (0 for sav/dta: no header row).
    columns : the headers as written (blank headers become ``column_<n>``; a header written
        twice gets ``.1``, ``.2`` ... on its later copies, see ``duplicates``).
    cells : object DataFrame, one column per header, one row per non-blank data row.
    source_rows : for each row of ``cells``, its row number as the person sees it.
    blank_rows : number of fully blank rows skipped between data rows (counted, not lost).
    sha256 : hash of the whole file's bytes.
    value_labels : SPSS/Stata value labels per column (empty for other formats).
    notes : what the reader saw that validation reports (ragged rows, stray quotes, data
        without a header, duplicated headers, formulas without a saved value).
    duplicates : header as written -> the names of its copies in ``columns`` (first first).
    epoch : the workbook's date system, ``"1900"`` or ``"1904"`` (Excel serial numbers).
    records : physical records below the header (data rows, blank rows and trailing blank
        rows); ``n_rows + blank rows + trailing blank rows == records`` always.
    letters : the spreadsheet column letter of each header (``""`` for csv/sav/dta).
    lines : csv only: the first and last physical line of the file each data row was read
        from (they differ when a quoted value spans lines); ``None`` for other formats.
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
    notes: tuple[ReadNote, ...] = ()
    duplicates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    epoch: Literal["1900", "1904"] = "1900"
    records: int = -1
    letters: tuple[str, ...] = ()
    lines: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(len(self.cells))

    def letter(self, column: str) -> str:
        """The spreadsheet letter of ``column`` (``""`` where the format has none)."""
        if not self.letters:
            return ""
        try:
            return self.letters[self.columns.index(column)]
        except ValueError:
            return ""


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
    except Exception as exc:  # zipfile, XML and openpyxl raise many types for a damaged file
        kind = "BadZipFile" if isinstance(exc, zipfile.BadZipFile) else type(exc).__name__
        raise UploadError(
            f"{path.name}: not a readable .xlsx workbook ({kind}); "
            "open it in Excel and save it again as .xlsx."
        ) from None


def _short(value: Any, limit: int = 60) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _column_letter(index: int) -> str:
    """1 -> A, 27 -> AA."""
    letters = ""
    while index > 0:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _header_names(values: list[Any]) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """Header names (blank -> ``column_<n>``, copies -> ``name.1``) and the duplicates."""
    names: list[str] = []
    seen: dict[str, list[str]] = {}
    taken: set[str] = set()
    for position, value in enumerate(values, start=1):
        text = "" if value is None else str(value).replace("\ufeff", "").strip()
        if not text:
            text = f"column_{position}"
        base = text
        if base in seen:
            k = len(seen[base])
            text = f"{base}.{k}"
            while text in taken:
                k += 1
                text = f"{base}.{k}"
            seen[base].append(text)
        else:
            seen[base] = [text]
        taken.add(text)
        names.append(text)
    duplicates = {base: tuple(copies) for base, copies in seen.items() if len(copies) > 1}
    return tuple(names), duplicates


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _assemble(
    path: Path,
    sheet: str,
    fmt: UploadFormat,
    header_row: int,
    rows: list[tuple[Any, ...]] | list[list[Any]],
    sha: str,
    *,
    notes: list[ReadNote] | None = None,
    keep: set[int] | None = None,
    epoch: Literal["1900", "1904"] = "1900",
    field_counts: list[int] | None = None,
    spans: list[tuple[int, int]] | None = None,
) -> RawUpload:
    """Turn the rows below a header into a RawUpload, skipping (and counting) blank rows.

    ``keep`` holds row numbers that are data even if they look blank (formula cells without
    a saved value); ``field_counts`` (csv) is the number of fields of each record as written.
    """
    where = f"{path.name}" + (f", sheet '{sheet}'" if sheet else "")
    notes = list(notes or [])
    keep = keep or set()
    if len(rows) < header_row:
        raise UploadError(
            f"{where}: has {len(rows)} row(s), so there is no header on row {header_row}; "
            "check header_row in the centre mapping."
        )
    header = list(rows[header_row - 1])
    named = len(header)
    while named and _is_blank(header[named - 1]):
        named -= 1
    if not named:
        raise UploadError(
            f"{where}: row {header_row} is empty, so it cannot be the header; "
            "check header_row in the centre mapping."
        )
    body = rows[header_row:]
    first_number = header_row + 1
    # data written beyond the last named header is kept as unnamed columns, never cut
    widest = named
    for row in body:
        last = len(row)
        while last > widest and _is_blank(row[last - 1]):
            last -= 1
        widest = max(widest, last)
    if fmt == "csv":
        # in a csv, fields beyond the header's own fields are ragged rows, not columns
        widest = max(named, min(widest, len(header)))
    header = (header + [None] * widest)[:widest]
    columns, duplicates = _header_names(header)
    letters = tuple(_column_letter(i) for i in range(1, widest + 1)) if fmt == "xlsx" else ()
    data: list[list[Any]] = []
    numbers: list[int] = []
    blank_numbers: list[int] = []
    for offset, record in enumerate(body):
        number = first_number + offset
        values: list[Any] = list(record[:widest])
        if len(values) < widest:
            values.extend([None] * (widest - len(values)))
        if all(_is_blank(v) for v in values) and number not in keep:
            extra_text = [v for v in record[widest:] if not _is_blank(v)]
            if not extra_text:
                blank_numbers.append(number)
                continue
        data.append(values)
        numbers.append(number)
    if fmt == "csv" and field_counts is not None:
        notes.extend(
            _ragged_notes(rows, header_row, field_counts[header_row - 1], columns, numbers,
                          field_counts)
        )  # fmt: skip
    for index in range(named, widest):
        name = columns[index]
        filled = [n for n, v in zip(numbers, (d[index] for d in data), strict=True) if not _is_blank(v)]
        if filled:
            letter = f" (column {letters[index]})" if letters else f" (field {index + 1})"
            notes.append(
                ReadNote(
                    "unnamed_column", header_row, name, str(len(filled)),
                    f"column {index + 1}{letter} has data in {len(filled)} row(s) (first on row "
                    f"{filled[0]}) but no header, so it is not read; give it a header and map "
                    "it, or delete it.",
                )
            )  # fmt: skip
    for base, copies in duplicates.items():
        positions = [columns.index(c) for c in copies]
        where_cols = ", ".join(
            (f"{letters[p]}" if letters else f"field {p + 1}") for p in positions
        )
        notes.append(
            ReadNote(
                "duplicate_header", header_row, copies[0], base,
                f"the header '{base}' is written {len(copies)} times ({where_cols}); a mapping "
                "that names it reads every copy and reports rows where they disagree. Rename "
                "or delete the extra column.",
            )
        )  # fmt: skip
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
        notes=tuple(notes),
        duplicates=duplicates,
        epoch=epoch,
        records=len(body),
        letters=letters,
        lines=None
        if spans is None
        else np.asarray([spans[n - 1] for n in numbers], dtype=np.int64).reshape(-1, 2),
    )


def _ragged_notes(
    rows: list[tuple[Any, ...]] | list[list[Any]],
    header_row: int,
    header_fields: int,
    columns: tuple[str, ...],
    numbers: list[int],
    field_counts: list[int],
) -> list[ReadNote]:
    """csv records with more or fewer fields than the header (values shifted or cut)."""
    notes: list[ReadNote] = []
    data_numbers = set(numbers)
    for offset, row in enumerate(rows[header_row:]):
        number = header_row + 1 + offset
        if number not in data_numbers:
            continue
        count = field_counts[header_row + offset]
        if count > header_fields:
            extra = [v for v in row[header_fields:] if not _is_blank(v)]
            if not extra:
                continue
            notes.append(
                ReadNote(
                    "ragged_row", number, None, _short("; ".join(map(str, extra))),
                    f"the row has {count} fields but the header has {header_fields}: the "
                    f"values {_short(', '.join(repr(str(v)) for v in extra), 80)} have no "
                    "column, so the row's values may be shifted; the row is excluded until "
                    "it is corrected.",
                )
            )  # fmt: skip
        elif count < header_fields:
            only = row[0] if row else ""
            other = [d for d in ",;\t|" if isinstance(only, str) and d in only]
            if count == 1 and other and header_fields > 1:
                message = (
                    f"the row is one field although the header has {header_fields}; it seems "
                    f"written with another separator ({other[0]!r}); the row is excluded until "
                    "it is written like the others."
                )
            else:
                missing = ", ".join(f"'{c}'" for c in columns[count:header_fields][:5])
                message = (
                    f"the row has {count} fields but the header has {header_fields}; "
                    f"{missing}{' ...' if header_fields - count > 5 else ''} would be empty "
                    "and earlier values may be shifted; the row is excluded until it is "
                    "corrected."
                )
            notes.append(ReadNote("ragged_row", number, None, _short(only), message))
    return notes


def _formula_cells_without_value(workbook: Any, worksheet: Any) -> set[tuple[int, int]]:
    """(row, column) of formula cells that have no saved value (read as empty otherwise)."""
    import re
    import xml.etree.ElementTree as ET

    archive = getattr(workbook, "_archive", None)
    sheet_path = getattr(worksheet, "_worksheet_path", None)
    if archive is None or sheet_path is None:
        return set()
    found = False
    with archive.open(sheet_path) as handle:
        tail = b""
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            if re.search(rb"<(\w+:)?f[ >/]", tail + chunk):
                found = True
                break
            tail = chunk[-16:]
    if not found:
        return set()
    out: set[tuple[int, int]] = set()
    from openpyxl.utils.cell import coordinate_to_tuple

    with archive.open(sheet_path) as handle:
        for _event, element in ET.iterparse(handle, events=("end",)):
            if element.tag.endswith("}c") or element.tag == "c":
                formula = value = None
                for child in element:
                    if child.tag.endswith("}f") or child.tag == "f":
                        formula = child
                    elif child.tag.endswith("}v") or child.tag == "v":
                        value = child
                    elif child.tag.endswith("}is"):
                        value = child
                if formula is not None and (value is None or not (value.text or "").strip()):
                    ref = element.get("r")
                    if ref:
                        out.add(coordinate_to_tuple(ref))
                element.clear()
            elif element.tag.endswith("}row"):
                element.clear()
    return out


def _read_xlsx(path: Path, sheet: str | None, header_row: int, sha: str) -> RawUpload:
    from openpyxl.utils.datetime import CALENDAR_MAC_1904

    workbook = _open_workbook(path)
    try:
        names = list(workbook.sheetnames)
        if not names:
            raise UploadError(f"{path.name}: the workbook has no sheets.")
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
        epoch: Literal["1900", "1904"] = "1904" if workbook.epoch == CALENDAR_MAC_1904 else "1900"
        try:
            worksheet = workbook[sheet]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # out-of-range dates become '#VALUE!' cells
                rows = list(worksheet.iter_rows(values_only=True))
            formulas = _formula_cells_without_value(workbook, worksheet)
        except UploadError:
            raise
        except Exception as exc:  # a damaged sheet inside a readable workbook
            raise UploadError(
                f"{path.name}: sheet '{sheet}' cannot be read ({type(exc).__name__}: "
                f"{_short(exc, 80)}); open the workbook in Excel and save it again."
            ) from None
    finally:
        workbook.close()
    notes: list[ReadNote] = []
    keep: set[int] = set()
    if formulas:
        header = list(rows[header_row - 1]) if len(rows) >= header_row else []
        names_, _ = _header_names(header)
        by_row: dict[int, list[int]] = {}
        for row, column in sorted(formulas):
            if row > header_row:
                by_row.setdefault(row, []).append(column)
        for row, columns in by_row.items():
            keep.add(row)
            for column in columns:
                name = names_[column - 1] if column - 1 < len(names_) else f"column_{column}"
                notes.append(
                    ReadNote(
                        "formula_without_value", row, name, f"{_column_letter(column)}{row}",
                        f"cell {_column_letter(column)}{row} holds a formula whose value was "
                        "never saved (the file was written by a program that does not "
                        "calculate); the cell is read as empty. Open the file in Excel, let it "
                        "calculate, and save it again (or paste values).",
                    )
                )  # fmt: skip
    return _assemble(path, sheet, "xlsx", header_row, rows, sha, notes=notes, keep=keep,
                     epoch=epoch)  # fmt: skip


#: Byte-order marks and the encodings they announce (longest first).
_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_WIDE = ("utf-16", "utf-32", "utf16", "utf32")


def _decode(data: bytes, encoding: str | None, name: str) -> str:
    """Text of a csv: a byte-order mark decides (it is unambiguous), else the mapping's
    encoding, else UTF-8."""
    bom_codec = next((c for bom, c in _BOMS if data.startswith(bom)), None)
    codec = bom_codec or encoding or "utf-8-sig"
    if codec.lower().replace("_", "-") in ("utf-8", "utf8"):
        codec = "utf-8-sig"
    wide = codec.lower().replace("_", "-").startswith(_WIDE)
    if not wide and b"\x00" in data[:8192]:
        raise UploadError(
            f"{name}: looks like a binary file, not text (or UTF-16 text without a byte-order "
            "mark: then set 'encoding: utf-16-le' in the centre mapping); export the data as "
            ".csv or .xlsx."
        )
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UploadError(
            f"{name}: is not valid {codec} text (byte {exc.start}, line {line}); set "
            "'encoding: latin-1' (or the centre's encoding) in the centre mapping."
        ) from None
    except LookupError:
        raise UploadError(f"{name}: unknown encoding '{codec}' in the centre mapping.") from None
    return text.lstrip("\ufeff")


_LINE_END = __import__("re").compile(r"\r\n|\r|\n")


def _physical_lines(text: str) -> list[str]:
    """The file's lines as a spreadsheet program splits them (line ends kept)."""
    lines: list[str] = []
    start = 0
    for match in _LINE_END.finditer(text):
        lines.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        lines.append(text[start:])
    return lines


def _parse_record(text: str, delimiter: str) -> list[str] | None:
    """Fields of one record, or ``None`` when a quote is still open at its end."""
    try:
        rows = list(csv.reader([text], delimiter=delimiter, strict=True))
    except csv.Error:
        # strict mode refuses a stray quote inside a field or an open quote at the end
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
        except csv.Error:
            return None
        if len(rows) != 1:
            return None
    if not rows:
        return [""]
    return rows[0]


def _looks_like_record(line: str, delimiter: str, width: int) -> bool:
    return width > 1 and line.count(delimiter) >= max(1, width - 1)


def _csv_records(
    text: str, delimiter: str, name: str
) -> tuple[list[list[str]], list[int], list[tuple[int, int]], list[ReadNote]]:
    """Records of a csv with every physical line accounted for.

    Returns the records, their field counts, the physical line span of each record and the
    notes (stray quotes that would swallow later rows, records spanning several lines).
    A stray quote is read literally and its row reported, so later rows are never lost.
    """
    lines = _physical_lines(text)
    fast: list[list[str]] = []
    spans: list[tuple[int, int]] = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        previous = 0
        simple = True
        for row in reader:
            if reader.line_num - previous != 1:
                simple = False
                break
            fast.append(row)
            spans.append((reader.line_num, reader.line_num))
            previous = reader.line_num
        if simple and previous == len(lines):
            return fast, [len(r) for r in fast], spans, []
    except csv.Error:
        pass
    # careful path, line by line
    records: list[list[str]] = []
    spans = []
    notes: list[ReadNote] = []
    width = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        fields = _parse_record(line, delimiter)
        if fields is not None:
            records.append(fields)
            spans.append((i + 1, i + 1))
            width = max(width, len(fields))
            i += 1
            continue
        # a quote opened on this line: find where it closes
        j, buffer, closed = i, line, None
        while j + 1 < len(lines) and j - i < 50 and len(buffer) < 1_000_000:
            j += 1
            if _looks_like_record(lines[j], delimiter, width) and _parse_record(
                lines[j], delimiter
            ) is not None:
                break  # the next line is a row of its own: the quote is never closed
            buffer += lines[j]
            closed = _parse_record(buffer, delimiter)
            if closed is not None:
                break
        number = len(records) + 1
        if closed is not None:
            records.append(closed)
            spans.append((i + 1, j + 1))
            notes.append(
                ReadNote(
                    "multiline_record", number, None, _short(buffer),
                    f"the row runs over lines {i + 1}-{j + 1} of the file because a quoted value "
                    "contains line breaks; check that the value is meant to span lines.",
                )
            )  # fmt: skip
            i = j + 1
            continue
        literal = next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter, quoting=csv.QUOTE_NONE))
        records.append(literal)
        spans.append((i + 1, i + 1))
        notes.append(
            ReadNote(
                "unclosed_quote", number, None, _short(line.rstrip("\r\n")),
                f"line {i + 1} opens a quote (\") that is never closed, which would swallow the "
                "rows after it; the line was read with the quote as a plain character and the "
                "row is excluded until the quote is removed or closed.",
            )
        )  # fmt: skip
        i += 1
    return records, [len(r) for r in records], spans, notes


def _read_csv(
    path: Path, header_row: int, encoding: str | None, delimiter: str | None, sha: str
) -> RawUpload:
    data = path.read_bytes()
    text = _decode(data, encoding, path.name)
    if not text.strip():
        raise UploadError(f"{path.name}: the file has no text; ask the centre to resend it.")
    if delimiter is None:
        sample = "\n".join(text.splitlines()[header_row - 1 : header_row + 20])
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
        except csv.Error:
            seen = {d: sample.count(d) for d in ";,\t|"}
            delimiter = max(seen, key=lambda d: seen[d]) if any(seen.values()) else ","
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        records, counts, spans, notes = _csv_records(text, delimiter, path.name)
    finally:
        csv.field_size_limit(limit)
    # csv rows are numbered by record, as a spreadsheet program shows them
    return _assemble(path, "", "csv", header_row, records, sha, notes=notes, field_counts=counts,
                     spans=spans)  # fmt: skip


def _read_stat(path: Path, fmt: UploadFormat, sha: str) -> RawUpload:
    import pyreadstat

    reader = pyreadstat.read_sav if fmt == "sav" else pyreadstat.read_dta
    try:
        frame, meta = reader(str(path))
    except Exception as exc:  # pyreadstat raises its own ReadstatError and others
        kind = "SPSS .sav" if fmt == "sav" else "Stata .dta"
        raise UploadError(
            f"{path.name}: not a readable {kind} file ({type(exc).__name__}: {_short(exc, 80)}); "
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
        records=int(len(frame)),
    )

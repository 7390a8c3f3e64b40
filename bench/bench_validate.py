"""Benchmark: validating (and ingesting) 100,000 patients from an .xlsx upload.

Writes a 100,000-patient workbook (every patient field of the schema, a title block above
the header on row 4, a second sheet), then times

- plain ``pandas.read_excel(engine="openpyxl")`` of the same sheet (the reference),
- ``read_upload`` + ``apply_mapping`` + ``validate`` (the harmonisation pipeline),
- ``Store.ingest`` of the validated table into a fresh DuckDB store.

Target (issue 2): validation adds at most 50 % on top of reading the file. Prints a markdown
table and writes ``bench/results/validate.md``.

Run: ``.venv/bin/python -m bench.bench_validate [--n 100000] [--repeat 1]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harmonization.io import read_upload
from harmonization.mapping import CentreMapping, apply_mapping
from harmonization.schema import load_schema
from harmonization.validate import validate
from tests.harmonization.helpers import (
    HEADERS,
    clean_patients,
    display_cells,
    mapping_dict,
)

RESULTS = Path(__file__).resolve().parent / "results" / "validate.md"
EXTRA_HEADERS = {
    "ctc_her2_positive_count": "CTC HER2+",
    "ctc_er_positive_count": "CTC ER+",
    "anti_her2_therapy": "Anti-HER2",
    "bisphosphonate": "Bisphosphonat",
    "treatment_arm": "Studienarm",
    "ttf_date": "Therapieversagen",
}


def make_frame(n: int, seed: int = 2026) -> pd.DataFrame:
    """``n`` patients with every patient field of the schema (dates, not durations)."""
    rng = np.random.default_rng(seed)
    frame = clean_patients(n, seed=seed)
    frame["ctc_her2_positive_count"] = np.minimum(rng.poisson(0.3, n), frame["ctc_count"])
    frame["ctc_er_positive_count"] = np.minimum(rng.poisson(0.3, n), frame["ctc_count"])
    frame["anti_her2_therapy"] = frame["her2_status"].eq("positive")
    frame["bisphosphonate"] = rng.random(n) < 0.2
    frame["treatment_arm"] = rng.choice(np.array(["A", "B", None], dtype=object), n)
    frame["treatment_failure_date"] = frame["recurrence_date"]
    frame["progression_date"] = pd.NaT
    frame["line_of_therapy"] = np.nan
    # a sprinkling of real-world errors so the rules have something to find
    bad = rng.choice(n, size=n // 200, replace=False)
    frame.loc[bad[: len(bad) // 3], "age"] = 150.0
    frame.loc[bad[len(bad) // 3 :], "ctc_blood_volume_ml"] = 40.0
    return frame


def write_workbook(frame: pd.DataFrame, path: Path) -> list[str]:
    """Write with openpyxl in write-only mode; returns the headers."""
    from openpyxl import Workbook

    headers_of = {**HEADERS, **EXTRA_HEADERS}
    cells = display_cells(frame, "xlsx")
    headers = [headers_of[c] for c in cells.columns]
    book = Workbook(write_only=True)
    info = book.create_sheet("Info")
    info.append(["Benchmark upload"])
    sheet = book.create_sheet("Patienten")
    sheet.append(["CTC-Register, Datenexport"])
    sheet.append([f"Stand {dt.date.today():%d.%m.%Y}"])
    sheet.append([])
    sheet.append(headers)
    for row in cells.itertuples(index=False, name=None):
        sheet.append([None if isinstance(v, float) and np.isnan(v) else v for v in row])
    book.save(path)
    return list(cells.columns)


def timed(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    schema = load_schema()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.xlsx"
        start = time.perf_counter()
        fields = write_workbook(make_frame(args.n), path)
        t_write = time.perf_counter() - start
        headers = {**HEADERS, **EXTRA_HEADERS}
        doc = mapping_dict(fields, headers=headers)
        mapping = CentreMapping.from_dict(doc, schema=schema, where="<bench mapping>")
        source = mapping.sources[0]
        t_pandas, frame = timed(
            lambda: pd.read_excel(path, sheet_name="Patienten", header=3, engine="openpyxl"),
            args.repeat,
        )
        t_read, raw = timed(lambda: read_upload(path, sheet="Patienten", header_row=4), args.repeat)
        t_map, mapped = timed(
            lambda: apply_mapping(raw, mapping, source, schema=schema), args.repeat
        )
        t_validate, (report, table) = timed(
            lambda: validate(mapped, mapping, schema=schema, today=dt.date(2024, 6, 1)),
            args.repeat,
        )
        t_ingest = float("nan")
        try:
            from harmonization.store import Store

            def ingest() -> object:
                db = Path(tmp) / f"store_{time.perf_counter_ns()}.db"
                with Store(db) as store:
                    return store.ingest([table], report, mapping_path="<bench>")

            t_ingest, _ = timed(ingest, args.repeat)
        except ImportError:  # pragma: no cover - the store is optional for this benchmark
            pass
    assert len(frame) == args.n == table.n_rows
    pipeline = t_read + t_map + t_validate
    rows = [
        ("pandas.read_excel (openpyxl), reference", t_pandas),
        ("read_upload", t_read),
        ("apply_mapping", t_map),
        ("validate (rules + derived fields + report)", t_validate),
        ("read_upload + apply_mapping + validate", pipeline),
        ("Store.ingest (DuckDB)", t_ingest),
    ]
    counts = report.counts_by_severity
    lines = [
        "## Validation benchmark (`bench/bench_validate.py`)",
        "",
        f"{args.n:,} patients, {len(fields)} patient fields, one .xlsx sheet with a title block "
        f"(written in {t_write:.0f} s); best of {args.repeat}; {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, pandas {pd.__version__}.",
        "",
        "| step | seconds | relative to pandas read |",
        "|---|---:|---:|",
        *[f"| {name} | {sec:.2f} | {sec / t_pandas:.2f} |" for name, sec in rows],
        "",
        f"- Validation (mapping + rules) adds **{(t_map + t_validate) / t_pandas:.0%}** on top of "
        f"the plain pandas read; the whole pipeline takes {pipeline / t_pandas:.2f} x the read "
        f"(target: <= 1.50 x, i.e. validation adds at most 50 %).",
        f"- `validate` alone: {t_validate:.2f} s ({t_validate / t_pandas:.0%} of the read).",
        f"- Findings: {counts['error']:,} errors, {counts['warning']:,} warnings, "
        f"{counts['info']:,} notes; {table.n_blocking:,} blocking rows.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

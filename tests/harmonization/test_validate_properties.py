"""Property tests (hypothesis) of the mapping + validation invariants on real csv files:
no row is ever dropped, every finding's row exists in the upload, a clean table gives no
errors, and one planted range error gives exactly one finding."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harmonization.io import read_upload
from tests.harmonization.helpers import (
    HEADERS,
    clean_patients,
    display_cells,
    errors,
    mapping_dict,
    row_of,
    rows_of,
    run,
    write_csv,
)

FIELDS = ["patient_id", "setting", "age", "ctc_count", "ctc_blood_volume_ml", "grade",
          "diagnosis_date", "last_contact_date", "death_date", "er_status"]  # fmt: skip
JUNK = st.one_of(
    st.none(),
    st.sampled_from(["", "n.a.", "999", "abc", "-1", "1,5", "31.02.2010", "pos", "?", "early"]),
    st.integers(-5, 500).map(str),
    st.text(alphabet="abcäöü0123456789,.-/ ", max_size=8),
)
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 25),
    junk=st.lists(st.tuples(st.integers(0, 24), st.sampled_from(FIELDS), JUNK), max_size=12),
    blank_at=st.lists(st.integers(0, 24), max_size=3),
)
def test_no_row_dropped_and_findings_point_at_real_rows(seed, n, junk, blank_at):
    frame = clean_patients(n, seed=seed)[FIELDS]
    cells = display_cells(frame, "csv")
    for position, field, value in junk:
        if position < n:
            cells[field] = cells[field].astype(object)
            cells.iloc[position, cells.columns.get_loc(field)] = value
    rows = rows_of(cells)
    for at in sorted(set(blank_at), reverse=True):
        if 0 < at < len(rows):
            rows.insert(at, [None] * len(FIELDS))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_csv(Path(tmp) / "u.csv", [HEADERS[f] for f in FIELDS], rows)
        raw = read_upload(path, header_row=1, encoding="latin-1", delimiter=";")
        report, (table,) = run(path, mapping_dict(FIELDS, kind="csv"))
    assert len(table.data) == raw.n_rows
    assert table.data["source_row"].tolist() == raw.source_rows.tolist()
    rows_seen = set(raw.source_rows.tolist()) | {raw.header_row}
    f = report.findings
    located = f["row"].dropna().astype(int)
    assert set(located) <= rows_seen
    assert set(f["column"].dropna()) <= set(raw.columns) | set(FIELDS) | {"(constant)"}
    # every blocked row has a reason and every reason names a rule
    blocked = table.data["blocking"].to_numpy()
    assert (table.data["reasons"].to_numpy()[blocked] != "").all()
    assert (table.data["reasons"].to_numpy()[~blocked] == "").all()


@SETTINGS
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40),
       setting=st.sampled_from(["early", "metastatic"]))  # fmt: skip
def test_clean_generated_table_has_no_errors(seed, n, setting):
    frame = clean_patients(n, seed=seed, setting=setting)
    cells = display_cells(frame, "csv")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_csv(Path(tmp) / "c.csv", [HEADERS[c] for c in cells.columns], rows_of(cells))
        report, (table,) = run(path, mapping_dict(list(frame.columns), kind="csv"))
    assert errors(report).empty, errors(report).to_dict("records")
    assert not table.data["blocking"].any()


@SETTINGS
@given(seed=st.integers(0, 10_000), n=st.integers(2, 30), data=st.data())
def test_one_planted_range_error_one_finding(seed, n, data):
    frame = clean_patients(n, seed=seed)
    position = data.draw(st.integers(0, n - 1))
    field, value = data.draw(
        st.sampled_from([("age", 130.5), ("ctc_count", -2.0), ("positive_nodes", 101.0),
                         ("er_percent", 140.0), ("tumour_size_mm", 401.0)])
    )  # fmt: skip
    frame.loc[position, field] = value
    cells = display_cells(frame, "csv")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_csv(Path(tmp) / "p.csv", [HEADERS[c] for c in cells.columns], rows_of(cells))
        report, (table,) = run(path, mapping_dict(list(frame.columns), kind="csv"))
    found = errors(report)
    assert found[["rule", "row", "column"]].values.tolist() == [
        ["range", row_of(position, "csv"), HEADERS[field]]
    ]
    assert pd.isna(table.data[field].iloc[position])

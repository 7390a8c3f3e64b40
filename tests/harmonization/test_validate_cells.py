"""Cell rules (type, code, integer, range, plausible_range, required_missing, duplicate_id) and
whole-upload rules, on real .xlsx (title block above the header, several sheets), .csv
(semicolons, decimal commas, Latin-1) and .sav files: each planted error is found exactly once,
at the row and column the person sees."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harmonization.errors import MappingError
from harmonization.mapping import CentreMapping
from tests.harmonization.helpers import (
    HEADERS,
    SAV_HEADERS,
    clean_patients,
    find,
    mapping_dict,
    problems,
    row_of,
    run,
    upload,
    write_xlsx,
)

N = 30


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return clean_patients(N, seed=11)


def _set(field: str, position: int, value: object):
    def edit(cells: pd.DataFrame) -> None:
        cells[field] = cells[field].astype(object)
        cells.iloc[position, cells.columns.get_loc(field)] = value

    return edit


# (kind, field, position, raw value written in the cell, expected rule)
RAW_CASES = [
    ("xlsx", "age", 3, "siebzig", "type"),
    ("xlsx", "diagnosis_date", 7, "31.02.2010", "type"),
    ("xlsx", "er_status", 5, "vielleicht", "code"),
    ("xlsx", "chemotherapy", 9, "evtl.", "code"),
    ("xlsx", "ctc_count", 2, 2.5, "integer"),
    ("xlsx", "age", 4, 170, "range"),
    ("xlsx", "ctc_count", 6, -1, "range"),
    ("xlsx", "grade", 8, 4, "range"),
    ("xlsx", "age", 10, 15, "plausible_range"),
    ("xlsx", "ctc_blood_volume_ml", 11, 80, "plausible_range"),
    ("xlsx", "setting", 12, None, "required_missing"),
    ("csv", "age", 3, "70 J.", "type"),
    ("csv", "tumour_size_mm", 4, "12,5,1", "type"),
    ("csv", "menopausal_status", 5, "unbek.", "code"),
    ("csv", "positive_nodes", 6, "1,5", "integer"),
    ("csv", "ctc_blood_volume_ml", 7, "0,2", "range"),
    ("csv", "ctc_blood_volume_ml", 8, "3,5", "plausible_range"),
    ("csv", "patient_id", 9, "", "required_missing"),
    ("csv", "sample_date", 10, "2010-13-01", "type"),
]


@pytest.mark.parametrize(("kind", "field", "position", "value", "rule"), RAW_CASES)
def test_planted_cell_error_is_found_once_at_its_cell(
    tmp_path, base, kind, field, position, value, rule
):
    path = upload(tmp_path, base, kind, edit=_set(field, position, value))
    report, (table,) = run(path, mapping_dict(list(base.columns), kind=kind))
    found = problems(report)
    assert len(found) == 1, found.to_dict("records")
    hit = found.iloc[0]
    assert hit["rule"] == rule
    assert hit["row"] == row_of(position, kind)
    assert hit["column"] == HEADERS[field]
    assert hit["field"] == field
    assert hit["file"] == path.name
    # the cell is missing in the harmonised table when the rule sets it missing (a receptor
    # status is then derived from its percentage)
    if rule in ("type", "code", "integer", "range") and field != "er_status":
        assert pd.isna(table.data[field].iloc[position])
        assert not table.data["blocking"].iloc[position]
    if rule == "plausible_range":
        assert table.data[field].iloc[position] == pytest.approx(float(value.replace(",", ".")) if isinstance(value, str) else value)  # fmt: skip
    if rule == "required_missing":
        assert table.data["blocking"].iloc[position]
        assert table.data["reasons"].iloc[position] == "required_missing"
    assert table.data["blocking"].sum() == (rule == "required_missing")


@pytest.mark.parametrize("kind", ["xlsx", "csv", "sav"])
def test_clean_upload_gives_no_errors_or_warnings(tmp_path, base, kind):
    path = upload(tmp_path, base, kind)
    report, (table,) = run(path, mapping_dict(list(base.columns), kind=kind))
    assert problems(report).empty, problems(report).to_dict("records")
    assert set(report.findings["rule"]) == {"median_followup"}
    assert len(table.data) == N
    assert table.data["source_row"].tolist() == [row_of(i, kind) for i in range(N)]
    assert not table.data["blocking"].any()


def test_sav_range_error_names_case_and_variable(tmp_path, base):
    frame = base.copy()
    frame.loc[13, "age"] = 150.0
    path = upload(tmp_path, frame, "sav")
    report, _ = run(path, mapping_dict(list(base.columns), kind="sav"))
    found = problems(report)
    assert found[["rule", "row", "column"]].values.tolist() == [["range", 14, SAV_HEADERS["age"]]]


def test_duplicate_id_names_later_occurrence_and_first_row(tmp_path, base):
    path = upload(tmp_path, base, "xlsx", edit=_set("patient_id", 17, base["patient_id"][4]))
    report, (table,) = run(path, mapping_dict(list(base.columns)))
    found = problems(report)
    assert found[["rule", "row", "column"]].values.tolist() == [
        ["duplicate_id", row_of(17, "xlsx"), "Pat-Nr"]
    ]
    assert f"row {row_of(4, 'xlsx')}" in found["message"].iloc[0]
    blocked = np.flatnonzero(table.data["blocking"].to_numpy())
    assert blocked.tolist() == [4, 17]
    assert set(table.data["reasons"].iloc[[4, 17]]) == {"duplicate_id"}


def test_unmapped_columns_and_header_row(tmp_path, base):
    path = upload(tmp_path, base, "xlsx")
    fields = [c for c in base.columns if c not in ("dtc_count", "clinical_risk")]
    report, _ = run(path, mapping_dict(fields))
    notes = find(report, "unmapped_column")
    assert sorted(notes["column"]) == sorted([HEADERS["dtc_count"], HEADERS["clinical_risk"]])
    assert (notes["row"] == 4).all() and (notes["severity"] == "info").all()
    assert problems(report).empty


def test_required_column_missing_blocks_every_row(tmp_path, base):
    path = upload(tmp_path, base, "xlsx")
    fields = [c for c in base.columns if c != "setting"]
    report, (table,) = run(path, mapping_dict(fields))
    found = problems(report)
    assert found[["rule", "row", "column"]].values.tolist() == [["required_column", 4, "setting"]]
    assert table.data["blocking"].all()
    assert (table.data["reasons"] == "required_column").all()
    assert len(table.data) == N


def test_constant_mapping_and_blank_rows_between_data(tmp_path, base):
    frame = base.drop(columns=["setting"])
    rows = [[v for v in r] for r in frame.astype(object).itertuples(index=False)]
    from tests.harmonization.helpers import display_cells, rows_of

    cells = rows_of(display_cells(frame, "xlsx"))
    cells.insert(10, [None] * len(cells[0]))
    cells.insert(11, [None] * len(cells[0]))
    del rows
    path = write_xlsx(
        tmp_path / "blank.xlsx",
        {
            "Deckblatt": ((), ["x"], [[1]]),
            "Patienten": ((("Titel",), ("",), ()), [HEADERS[c] for c in frame.columns], cells),
        },
    )
    doc = mapping_dict(list(frame.columns))
    doc["sources"][0]["columns"]["setting"] = {"value": "early"}
    report, (table,) = run(path, doc)
    assert problems(report).empty
    blank = find(report, "blank_rows")
    assert blank[["row", "value"]].values.tolist() == [[4, "2"]]
    # rows after the blank rows keep the row numbers the person sees
    assert table.data["source_row"].iloc[10] == row_of(12, "xlsx")
    assert len(table.data) == N


def test_constant_with_bad_code_is_the_mapping_authors_error(tmp_path, base):
    """A constant the schema does not accept is refused when the mapping loads: it is the
    mapping author's typo, not the centre's, so it never reaches the centre's report."""
    frame = base.drop(columns=["setting"])
    doc = mapping_dict(list(frame.columns), kind="csv")
    doc["sources"][0]["columns"]["setting"] = {"value": "adjuvant"}
    with pytest.raises(MappingError, match=r"columns\.setting\.value: 'adjuvant'.*early, metastatic"):
        CentreMapping.from_dict(doc)


def test_lazy_validation_collects_every_failure(tmp_path, base):
    def edit(cells: pd.DataFrame) -> None:
        for field, pos, value in [("age", 1, "x"), ("ctc_count", 2, -3), ("grade", 3, 7)]:
            cells[field] = cells[field].astype(object)
            cells.iloc[pos, cells.columns.get_loc(field)] = value

    path = upload(tmp_path, base, "xlsx", edit=edit)
    report, _ = run(path, mapping_dict(list(base.columns)))
    found = problems(report)
    assert found[["rule", "row"]].values.tolist() == [["type", 6], ["range", 7], ["range", 8]]
    assert report.has_errors and report.n_errors == 3

"""Realistic bad uploads and mappings: nothing is lost or changed without a finding.

One test (or a few) per defect found when the tool met real consortium data (issue "Real
consortium data, safely"): every physical record is stored or reported with its row, and a
value that is not read as written carries a finding on its cell.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from harmonization.errors import MappingError, SchemaError, UploadError
from harmonization.io import read_upload
from harmonization.mapping import CentreMapping
from harmonization.schema import load_schema_text
from harmonization.upload import check_upload

TODAY = dt.date(2024, 6, 1)


def small_mapping(**changes: Any) -> dict[str, Any]:
    """A decimal-comma, ;-separated Latin-1 csv centre with a few fields."""
    columns: dict[str, Any] = {
        "patient_id": "id",
        "setting": {"value": "early"},
        "age": "age",
        "tumour_size_mm": {"column": "size", "unit": "cm"},
        "diagnosis_date": "dx",
        "last_contact_date": "lc",
    }
    columns.update(changes.pop("columns", {}))
    source = {"table": "patients", "delimiter": ";", "encoding": "latin-1", "columns": columns}
    source.update(changes.pop("source", {}))
    doc = {"centre": "ulm", "decimal": ",", "date_format": "%d.%m.%Y", "sources": [source]}
    doc.update(changes)
    return doc


HEADER = "id;age;size;dx;lc"


def row(i: int, age: str = "56,5", size: str = "1,4") -> str:
    return f"P{i:03d};{age};{size};01.03.2010;01.03.2015"


def write(path: Path, lines: list[str], encoding: str = "latin-1") -> Path:
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def check(path: Path, doc: dict[str, Any]) -> Any:
    return check_upload(path, CentreMapping.from_dict(doc), today=TODAY)


def rules_at(checked: Any) -> set[tuple[str, int | None]]:
    f = checked.report.findings
    return {(r, None if pd.isna(x) else int(x)) for r, x in zip(f["rule"], f["row"], strict=True)}


# -- 1. quotes ---------------------------------------------------------------------------------


def test_unclosed_quote_keeps_every_later_row(tmp_path):
    lines = [HEADER] + [row(i) for i in range(1, 37)]
    lines[4] = lines[4].replace("P004;", 'P004;"')  # the stray quote swallowed 32 rows before
    checked = check(write(tmp_path / "u.csv", lines), small_mapping())
    data = checked.tables[0].data
    assert len(data) == 36
    assert ("unclosed_quote", 5) in rules_at(checked)
    assert data.loc[data["source_row"] == 5, "blocking"].item()
    assert not data.loc[data["source_row"] != 5, "blocking"].any()
    assert data["patient_id"].tolist()[5:] == [f"P{i:03d}" for i in range(6, 37)]


def test_unclosed_quote_with_a_tail_over_128kb_is_a_finding_not_a_crash(tmp_path):
    lines = [HEADER, row(1), 'P002;50;"' + "x" * 200_000, row(3)]
    checked = check(write(tmp_path / "big.csv", lines), small_mapping())
    assert len(checked.tables[0].data) == 3
    assert ("unclosed_quote", 3) in rules_at(checked)


def test_a_field_over_131072_characters_is_read(tmp_path):
    lines = [HEADER, row(1), f"{'Q' * 140_000};50;1;01.03.2010;01.03.2015"]
    checked = check(write(tmp_path / "long.csv", lines), small_mapping())
    assert len(checked.tables[0].data) == 2


def test_a_quoted_value_over_two_lines_is_one_row_with_a_warning(tmp_path):
    lines = [HEADER, row(1), 'P002;50;"1,\nok";01.03.2010;01.03.2015', row(3)]
    raw = read_upload(write(tmp_path / "m.csv", lines), delimiter=";", encoding="latin-1")
    assert raw.n_rows == 3 and [n.kind for n in raw.notes] == ["multiline_record"]


# -- 2. decimal signs --------------------------------------------------------------------------


def test_point_in_a_decimal_comma_file_is_ambiguous_not_multiplied(tmp_path):
    lines = [HEADER, row(1), row(2, age="56.5", size="1.4"), row(3, age="1.234,5")]
    checked = check(write(tmp_path / "d.csv", lines), small_mapping())
    data = checked.tables[0].data
    assert data["age"].tolist()[0] == 56.5 and data["tumour_size_mm"].tolist()[0] == 14.0
    assert np.isnan(data["age"].iloc[1]) and np.isnan(data["tumour_size_mm"].iloc[1])
    f = checked.report.findings
    ambiguous = f.loc[f["rule"] == "ambiguous_decimal"]
    assert sorted(zip(ambiguous["row"], ambiguous["column"], ambiguous["value"], strict=True)) == [
        (3, "age", "56.5"), (3, "size", "1.4")
    ]  # fmt: skip
    # a thousands point together with the decimal comma is unambiguous: read as 1234.5
    # (and then out of age's range)
    out_of_range = f.loc[(f["rule"] == "range") & (f["row"] == 4)]
    assert "got 1234.5" in out_of_range["message"].item()


@pytest.mark.parametrize("word, sign", [("comma", ","), ("point", "."), (",", ","), (".", ".")])
def test_decimal_sign_words(word, sign):
    mapping = CentreMapping.from_dict(small_mapping(decimal=word))
    assert mapping.sources[0].decimal == sign


def test_unknown_decimal_sign_is_a_mapping_error():
    with pytest.raises(MappingError, match="decimal sign must be"):
        CentreMapping.from_dict(small_mapping(decimal="komma"))


def test_comma_in_a_decimal_point_file_is_ambiguous(tmp_path):
    lines = ["id,age,size,dx,lc", "P1,56.5,1.4,01.03.2010,01.03.2015", "P2,\"56,5\",2,01.03.2010,01.03.2015"]
    doc = small_mapping(decimal=".", source={"delimiter": ","})
    checked = check(write(tmp_path / "p.csv", lines), doc)
    assert ("ambiguous_decimal", 3) in rules_at(checked)
    assert np.isnan(checked.tables[0].data["age"].iloc[1])


# -- 3. dates ------------------------------------------------------------------------------------


def _xlsx(path: Path, header: list[str], rows: list[list[Any]], *, date1904: bool = False,
          date_format: str | None = None) -> Path:  # fmt: skip
    from openpyxl import Workbook

    workbook = Workbook()
    if date1904:
        from openpyxl.utils.datetime import CALENDAR_MAC_1904

        workbook.epoch = CALENDAR_MAC_1904
    sheet = workbook.active
    sheet.title = "Data"
    sheet.append(header)
    for values in rows:
        sheet.append(values)
        if date_format:
            for cell in sheet[sheet.max_row]:
                if isinstance(cell.value, dt.datetime | int):
                    cell.number_format = date_format
    workbook.save(path)
    return path


def xlsx_mapping(**columns: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "patient_id": "id", "setting": {"value": "early"}, "age": "age",
        "diagnosis_date": {"column": "dx", "date_format": "excel"},
        "last_contact_date": {"column": "lc", "date_format": "excel"},
    }  # fmt: skip
    base.update(columns)
    return {"centre": "ulm", "sources": [{"table": "patients", "sheet": "Data", "columns": base}]}


def test_a_year_typed_into_a_date_cell_is_a_finding_not_1905(tmp_path):
    rows = [["P1", 50, 40238, 42064], ["P2", 50, 2009, 42064]]  # serials; 2009 = a year
    checked = check(_xlsx(tmp_path / "y.xlsx", ["id", "age", "dx", "lc"], rows), xlsx_mapping())
    data = checked.tables[0].data
    assert data["diagnosis_date"].iloc[0] == pd.Timestamp("2010-03-01")
    assert pd.isna(data["diagnosis_date"].iloc[1])
    f = checked.report.findings
    hit = f.loc[(f["row"] == 3) & (f["column"] == "dx")]
    assert len(hit) == 1 and "looks like a year" in hit["message"].item()
    assert np.isnan(data["os_months"].iloc[1])  # never 1,361 months


def test_a_year_in_a_date_formatted_cell_is_caught_too(tmp_path):
    rows = [["P1", 50, dt.datetime(2010, 3, 1), dt.datetime(2015, 3, 1)],
            ["P2", 50, dt.datetime(1905, 7, 1), dt.datetime(2015, 3, 1)]]  # Excel shows 2009 so
    path = _xlsx(tmp_path / "y2.xlsx", ["id", "age", "dx", "lc"], rows, date_format="dd.mm.yyyy")
    checked = check(path, xlsx_mapping())
    assert pd.isna(checked.tables[0].data["diagnosis_date"].iloc[1])
    assert ("type", 3) in rules_at(checked)


def test_dates_before_the_schemas_earliest_are_implausible(tmp_path):
    lines = [HEADER, row(1), "P002;50;1;01.03.1932;01.03.2015"]
    checked = check(write(tmp_path / "e.csv", lines), small_mapping())
    assert ("implausible_date", 3) in rules_at(checked)
    assert pd.isna(checked.tables[0].data["diagnosis_date"].iloc[1])


def test_derived_times_are_checked_against_the_schema_range(tmp_path):
    lines = [HEADER, row(1), "P002;50;1;01.03.1955;01.03.2015"]  # 720 months > max 600
    checked = check(write(tmp_path / "r.csv", lines), small_mapping())
    f = checked.report.findings
    hit = f.loc[f["rule"] == "derived_range"]
    assert hit["row"].tolist() == [3] and hit["column"].tolist() == ["lc"]
    assert np.isnan(checked.tables[0].data["os_months"].iloc[1])
    assert checked.tables[0].data["os_months"].iloc[0] == pytest.approx(60.0, abs=0.1)


def test_1904_workbooks_are_read_in_their_own_date_system(tmp_path):
    rows = [["P1", 50, 38776, 40602]]  # serials in the 1904 system: 2010-03-01, 2015-03-01
    path = _xlsx(tmp_path / "mac.xlsx", ["id", "age", "dx", "lc"], rows, date1904=True)
    checked = check(path, xlsx_mapping())
    data = checked.tables[0].data
    assert data["diagnosis_date"].iloc[0] == pd.Timestamp("2010-03-01")
    assert data["last_contact_date"].iloc[0] == pd.Timestamp("2015-03-01")


# -- 5. empty uploads ----------------------------------------------------------------------------


def test_header_only_upload_is_an_error(tmp_path):
    checked = check(write(tmp_path / "h.csv", [HEADER]), small_mapping())
    assert checked.report.has_errors
    assert "no_data_rows" in set(checked.report.findings["rule"])


# -- 7. ragged rows and unnamed columns ------------------------------------------------------------


def test_ragged_rows_are_reported_and_blocked(tmp_path):
    lines = [HEADER, row(1), row(2) + ";surplus", "P003;50;1", "P004,50,1,01.03.2010,01.03.2015",
             row(5)]  # fmt: skip
    checked = check(write(tmp_path / "rag.csv", lines), small_mapping())
    data = checked.tables[0].data
    assert len(data) == 5
    ragged = checked.report.findings.query("rule == 'ragged_row'")
    assert ragged["row"].tolist() == [3, 4, 5]
    assert ragged["column"].tolist() == ["id"] * 3
    assert data.set_index("source_row")["blocking"].to_dict() == {
        2: False, 3: True, 4: True, 5: True, 6: False
    }  # fmt: skip
    assert "another separator" in ragged["message"].iloc[2]


def test_data_under_a_blank_header_is_a_finding(tmp_path):
    path = _xlsx(tmp_path / "n.xlsx", ["id", "age", "dx", "lc", None],
                 [["P1", 50, 40238, 42064, "note"], ["P2", 51, 40238, 42064, None]])  # fmt: skip
    checked = check(path, xlsx_mapping())
    f = checked.report.findings
    hit = f.loc[f["rule"] == "unnamed_column"]
    assert len(hit) == 1 and "column 5 (column E)" in hit["message"].item()


# -- 8. duplicated headers -----------------------------------------------------------------------------


def test_a_header_written_twice_reads_both_copies(tmp_path):
    path = _xlsx(tmp_path / "dup.xlsx", ["id", "age", "dx", "lc", "age"],
                 [["P1", None, 40238, 42064, 54], ["P2", 60, 40238, 42064, 61],
                  ["P3", 70, 40238, 42064, 70]])  # fmt: skip
    checked = check(path, xlsx_mapping())
    data = checked.tables[0].data
    assert data["age"].iloc[0] == 54 and np.isnan(data["age"].iloc[1]) and data["age"].iloc[2] == 70
    f = checked.report.findings
    assert f.loc[f["rule"] == "copies_disagree", "row"].tolist() == [3]
    assert "duplicate_header" in set(f["rule"])


# -- 9. formulas without a saved value -----------------------------------------------------------------


def test_formula_cells_without_a_value_are_findings(tmp_path):
    path = _xlsx(tmp_path / "f.xlsx", ["id", "age", "dx", "lc"],
                 [["P1", "=40+10", 40238, 42064], ["P2", 51, 40238, 42064]])  # fmt: skip
    checked = check(path, xlsx_mapping())
    f = checked.report.findings
    hit = f.loc[f["rule"] == "formula_without_value"]
    assert hit[["row", "column"]].values.tolist() == [[2, "age"]]
    assert np.isnan(checked.tables[0].data["age"].iloc[0])


# -- 12. inputs that used to give tracebacks --------------------------------------------------------------


def test_a_count_of_1e20_is_a_range_finding(tmp_path):
    doc = small_mapping(columns={"ctc_count": "ctc"})
    lines = ["id;age;size;dx;lc;ctc", row(1) + ";1e20", row(2) + ";3"]
    checked = check(write(tmp_path / "c.csv", lines), doc)
    assert ("range", 2) in rules_at(checked)
    assert checked.tables[0].data["ctc_count"].tolist()[1] == 3


@pytest.mark.parametrize(
    "change, message",
    [
        ({"source": {"delimiter": ";;"}}, "delimiter must be one character"),
        ({"date_format": "%Q"}, "not a date pattern"),
        ({"source": {"encoding": "klingon"}}, "unknown text encoding"),
        ({"columns": {"er_status": {"column": "er", "codes": {"pos": "positiv"}}}},
         "'pos' is recoded to 'positiv'.*did you mean 'positive'"),
        ({"columns": {"chemotherapy": {"column": "c", "codes": {"ja": "jawohl"}}}},
         "expected true or false"),
        ({"delivers": "durations", "columns": {"os_event": "death"}}, "'os_months' is not"),
        ({"columns": {"dfs_months": "t", "dfs_event": "e", "os_months": "ot"}}, "'os_event' is not"),
        ({"reported": {"events": {"overall": 12}}}, "not an endpoint"),
        ({"origin": "operation"}, "'origin'.*diagnosis, surgery, sample"),
    ],
)  # fmt: skip
def test_mapping_mistakes_are_refused_when_the_mapping_loads(change, message):
    with pytest.raises(MappingError, match=message):
        CentreMapping.from_dict(small_mapping(**change))


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("centre: ulm\ncentre: tue\nsources: []\n", encoding="utf-8")
    with pytest.raises(MappingError, match="key 'centre' appears twice.*lines 1 and 2"):
        CentreMapping.from_yaml(path)


def test_a_latin1_mapping_is_a_clear_error(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes("centre: ulm\nsources:\n  - columns: {age: Größe}\n".encode("latin-1"))
    with pytest.raises(MappingError, match="not UTF-8 text.*line 3"):
        CentreMapping.from_yaml(path)


def test_duplicate_keys_in_the_schema_are_refused():
    with pytest.raises(SchemaError, match="appears twice"):
        load_schema_text("name: x\ntables:\n  patients:\n    fields: {}\n    fields: {}\n")


def test_a_damaged_sheet_inside_a_valid_workbook_is_an_upload_error(tmp_path):
    good = _xlsx(tmp_path / "g.xlsx", ["id", "age"], [["P1", 50]])
    broken = tmp_path / "b.xlsx"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("sheet1.xml"):
                data = data[: len(data) // 2]  # truncated XML
            target.writestr(item, data)
    with pytest.raises(UploadError, match="sheet 'Data' cannot be read"):
        read_upload(broken)


# -- 14. encodings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-8-sig"])
def test_utf16_and_bom_csv_are_read(tmp_path, encoding):
    lines = ["id;age;size;dx;lc", "P1;56,5;1;01.03.2010;01.03.2015"]
    path = write(tmp_path / "w.csv", lines, encoding="utf-16" if encoding != "utf-8-sig" else encoding)
    doc = small_mapping(source={"encoding": encoding if encoding != "utf-16-le" else "utf-16"})
    checked = check(path, doc)
    assert checked.tables[0].data["patient_id"].tolist() == ["P1"]
    assert checked.tables[0].data["age"].tolist() == [56.5]


def test_a_utf8_bom_with_encoding_utf8_does_not_hide_the_first_header(tmp_path):
    path = write(tmp_path / "b.csv", ["id;age;size;dx;lc", row(1)], encoding="utf-8-sig")
    checked = check(path, small_mapping(source={"encoding": "utf-8"}))
    assert checked.tables[0].data["patient_id"].tolist() == ["P001"]


# -- 15. a centre column of another centre ----------------------------------------------------------------


def test_rows_whose_centre_column_names_another_centre_are_blocked(tmp_path):
    lines = ["id;age;size;dx;lc;Zentrum", row(1) + ";ulm", row(2) + ";tuebingen"]
    checked = check(write(tmp_path / "z.csv", lines), small_mapping(columns={"centre": "Zentrum"}))
    data = checked.tables[0].data
    assert data["centre"].tolist() == ["ulm", "ulm"]
    assert data["blocking"].tolist() == [False, True]
    assert ("centre_mismatch", 3) in rules_at(checked)


# -- delivered endpoints: consistency and their time origin ------------------------------------


def durations_mapping(**changes: Any) -> dict[str, Any]:
    doc = small_mapping(
        delivers="durations",
        duration_unit="days",
        columns={
            "surgery_date": "op", "os_months": "os_days", "os_event": "dead",
            "dfs_months": "dfs_days", "dfs_event": "dfs",
        },
    )  # fmt: skip
    doc.update(changes)
    return doc


DURATION_HEADER = "id;age;size;dx;lc;op;os_days;dead;dfs_days;dfs"


def test_delivered_endpoints_that_contradict_each_other_are_blocked(tmp_path):
    lines = [
        DURATION_HEADER,
        "P1;50;1;01.03.2010;;15.03.2010;1000;1;400;1",
        "P2;50;1;01.03.2010;;15.03.2010;1000;1;1000;0",  # died, but DFS without event
        "P3;50;1;01.03.2010;;15.03.2010;1000;0;1200;0",  # DFS time beyond OS time
        "P4;50;1;01.03.2010;;15.03.2010;1000;0;1000;0",
    ]
    checked = check(write(tmp_path / "d.csv", lines), durations_mapping())
    f = checked.report.findings
    hits = f.loc[f["rule"] == "endpoint_consistency", ["row", "column"]].values.tolist()
    assert hits == [[3, "dfs"], [4, "dfs_days"]]
    assert checked.tables[0].data["blocking"].tolist() == [False, True, True, False]


def test_delivered_durations_from_surgery_convert_to_diagnosis_where_dates_allow(tmp_path):
    import warnings

    from harmonization.store import Store
    from pooled.dataset import build_analysis_dataset
    from pooled.errors import PooledWarning

    lines = [
        DURATION_HEADER,
        "P1;50;1;01.03.2010;;31.03.2010;1000;1;400;1",  # surgery 30 days after diagnosis
        "P2;50;1;01.03.2010;;;1000;0;1000;0",  # no surgery date: cannot be converted
    ]
    checked = check(write(tmp_path / "o.csv", lines), durations_mapping(origin="surgery"))
    assert checked.tables[0].data["time_origin"].tolist() == ["surgery", "surgery"]
    with Store(tmp_path / "s.db") as store:
        store.ingest(list(checked.tables), checked.report)
    with Store(tmp_path / "s.db", read_only=True) as store:
        as_sent = build_analysis_dataset(store).patients
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = build_analysis_dataset(store, origin="diagnosis")
    months = ds.patients["os_months"].tolist()
    assert months[0] == pytest.approx((1000 + 30) / 30.4375, rel=1e-12)
    assert months[1] == pytest.approx(as_sent["os_months"].iloc[1], rel=1e-12)
    assert ds.patients["time_origin"].tolist() == ["diagnosis", "surgery"]
    assert ds.provenance["origin_not_converted"] == {"ulm": 1}
    assert any(issubclass(w.category, PooledWarning) and "ulm (1 patients)" in str(w.message)
               for w in caught)  # fmt: skip


# -- derived fields from several columns ----------------------------------------------------


def test_relapse_free_survival_derived_from_four_columns(tmp_path):
    """RFS as a centre defines it: recurrence time if recurrence, else time to death or last
    contact; event = recurrence or death. A bad input cell is a finding on that cell."""
    doc = small_mapping(
        delivers="durations",
        duration_unit="days",
        columns={
            "dfs_months": {"expr": "where(Rezidiv == 'ja', `Tage bis Rezidiv`, `Tage bis Tod`)"},
            "dfs_event": {"expr": "Rezidiv == 'ja' or Tod == 'ja'"},
            "os_months": "Tage bis Tod",
            "os_event": "Tod",
        },
    )
    lines = [
        "id;age;size;dx;lc;Rezidiv;Tage bis Rezidiv;Tod;Tage bis Tod",
        "P1;50;1;01.03.2010;;ja;400;nein;1000",
        "P2;50;1;01.03.2010;;nein;;ja;800",
        "P3;50;1;01.03.2010;;nein;;nein;1200",
        "P4;50;1;01.03.2010;;ja;12x;nein;900",  # a bad cell in an input of the expression
    ]
    checked = check(write(tmp_path / "rfs.csv", lines), doc)
    data = checked.tables[0].data
    days = [400, 800, 1200, np.nan]
    np.testing.assert_allclose(data["dfs_months"], np.array(days) / 30.4375, rtol=1e-12)
    assert data["dfs_event"].tolist()[:3] == [True, True, False]
    f = checked.report.findings
    bad = f.loc[f["rule"] == "type"]
    assert bad[["row", "column", "value"]].values.tolist() == [[5, "Tage bis Rezidiv", "12x"]]
    assert "unmapped_column" not in set(f["rule"])  # columns read by an expression are used
    assert checked.tables[0].column_of["dfs_months"] == "Rezidiv, Tage bis Rezidiv, Tage bis Tod"


def test_an_expression_naming_a_missing_column_is_a_mapping_error(tmp_path):
    doc = small_mapping(columns={"grade": {"expr": "Grad + 1"}})
    with pytest.raises(MappingError, match="no column 'Grad'"):
        check(write(tmp_path / "g.csv", [HEADER, row(1)]), doc)


def test_a_forbidden_expression_is_refused_when_the_mapping_loads():
    with pytest.raises(MappingError, match="not allowed"):
        CentreMapping.from_dict(small_mapping(columns={"grade": {"expr": "age.__class__"}}))


def test_types_say_how_an_expression_reads_a_column(tmp_path):
    doc = small_mapping(
        columns={"positive_nodes": {"expr": "Knoten", "types": {"Knoten": "number"}}}
    )
    lines = ["id;age;size;dx;lc;Knoten", row(1) + ";3", row(2) + ";viele", row(3) + ";keine"]
    checked = check(write(tmp_path / "k.csv", lines), doc)
    assert checked.tables[0].data["positive_nodes"].tolist()[0] == 3
    f = checked.report.findings
    assert f.loc[f["rule"] == "type", "row"].tolist() == [3, 4]
    with pytest.raises(MappingError, match="not a column the expression reads"):
        CentreMapping.from_dict(small_mapping(columns={"grade": {"expr": "G", "types": {"H": "text"}}}))


def test_centres_counting_time_from_different_origins_are_not_pooled_silently(tmp_path):
    import warnings

    from harmonization.store import Store
    from pooled.dataset import build_analysis_dataset
    from pooled.errors import PooledWarning

    surgery = durations_mapping(origin="surgery")
    diagnosis = durations_mapping(centre="tue")
    lines = [DURATION_HEADER, "P1;50;1;01.03.2010;;31.03.2010;1000;1;400;1"]
    with Store(tmp_path / "s.db") as store:
        for doc, name in ((surgery, "a.csv"), (diagnosis, "b.csv")):
            checked = check(write(tmp_path / name, lines), doc)
            store.ingest(list(checked.tables), checked.report)
    with Store(tmp_path / "s.db", read_only=True) as store:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = build_analysis_dataset(store)
    assert ds.provenance["time_origins"] == {"tue": {"diagnosis": 1}, "ulm": {"surgery": 1}}
    assert any(issubclass(w.category, PooledWarning) and "different origins" in str(w.message)
               for w in caught)  # fmt: skip


def test_mapping_checks_flag_rows_the_centres_definitions_make_doubtful(tmp_path):
    """A mapping's `checks:` (true on good rows) gives a finding on each failing row."""
    doc = small_mapping(
        columns={"os_months": {"column": "Tage bis Tod", "unit": "days"}, "os_event": "Tod",
                 "dfs_months": {"column": "Tage bis Tod", "unit": "days"}, "dfs_event": "Tod"},
        delivers="durations",
        source={"checks": [
            {"expr": "not (Rezidiv == 'nein' and Tod == 'ja' and `Tage bis Tod` > `Tage bis Rezidiv`)",
             "message": "died without recurrence after recurrence follow-up ended"},
            {"expr": "`Tage bis Tod` >= 0", "message": "negative time", "severity": "error"},
        ]},
    )  # fmt: skip
    lines = [
        "id;age;size;dx;lc;Rezidiv;Tage bis Rezidiv;Tod;Tage bis Tod",
        "P1;50;1;01.03.2010;;nein;500;ja;900",  # doubtful: warning
        "P2;50;1;01.03.2010;;nein;900;ja;900",
        "P3;50;1;01.03.2010;;ja;400;nein;-5",  # error: blocked
    ]
    checked = check(write(tmp_path / "c.csv", lines), doc)
    f = checked.report.findings
    got = f.loc[f["rule"].str.startswith("mapping_check"), ["row", "column", "rule", "severity"]]
    assert got.values.tolist() == [
        [2, "Rezidiv", "mapping_check", "warning"],
        [4, "Tage bis Tod", "mapping_check_error", "error"],
    ]
    assert checked.tables[0].data["blocking"].tolist() == [False, False, True]
    assert "unmapped_column" not in set(f["rule"])  # the checks' columns are read
    with pytest.raises(MappingError, match="checks\\[0\\].message"):
        CentreMapping.from_dict(small_mapping(source={"checks": [{"expr": "age > 0"}]}))

"""The versioned store: two versions of a centre kept, the latest analysed, nothing lost."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harmonization.errors import StoreError
from harmonization.mapping import CentreMapping
from harmonization.schema import DEFAULT_SCHEMA_PATH, Schema, load_schema_text
from harmonization.store import STORE_COLUMNS, VERSION_COLUMNS, Store
from harmonization.upload import check_upload
from harmonization.validate import validate_consortium
from pooled.dataset import build_analysis_dataset
from tests.harmonization.helpers import (
    HEADERS,
    TODAY,
    clean_patients,
    display_cells,
    make_mapping,
    mapping_dict,
    rows_of,
    schema,
    write_xlsx,
    xlsx_upload,
)

FIELDS = (
    "patient_id",
    "age",
    "diagnosis_date",
    "surgery_date",
    "last_contact_date",
    "death_date",
    "grade",
)


def _upload(tmp_path: Path, name: str, frame: pd.DataFrame, centre: str = "ulm"):
    fields = [f for f in FIELDS if f in frame.columns]
    doc = mapping_dict(fields, centre=centre, extra={})
    doc["sources"][0]["columns"]["setting"] = {"value": "early"}
    mapping = make_mapping(doc)
    path = xlsx_upload(tmp_path / name, frame[fields])
    return check_upload(path, mapping, today=TODAY)


def _ingest(store: Store, checked, when: str = "2024-06-01 10:00"):
    return store.ingest(
        list(checked.tables),
        checked.report,
        mapping_path="ulm.yaml",
        ingested_at=dt.datetime.fromisoformat(when),
    )


def test_two_versions_are_kept_and_the_latest_is_analysed(tmp_path: Path) -> None:
    first = clean_patients(40, seed=1)
    second = pd.concat([first, clean_patients(5, seed=2, start=41)], ignore_index=True)
    with Store(tmp_path / "pooled.db") as store:
        v1 = _ingest(store, _upload(tmp_path, "ulm_v1.xlsx", first))
        v2 = _ingest(store, _upload(tmp_path, "ulm_v2.xlsx", second), "2024-07-01 10:00")
        assert (v1.version, v2.version) == (1, 2)
        assert len(store.records("patients", versions={"ulm": 1})) == 40
        assert len(store.records("patients")) == 45
        ds = build_analysis_dataset(store)
        assert ds.versions == {"ulm": 2}
        assert len(ds.patients) == 45
        pinned = build_analysis_dataset(store, versions={"ulm": 1})
        assert len(pinned.patients) == 40
        uploads = store.uploads()
        assert list(uploads["version"]) == [1, 2]
        assert uploads["sha256"].nunique() == 2


def test_provenance_on_every_row(tmp_path: Path) -> None:
    checked = _upload(tmp_path, "ulm.xlsx", clean_patients(10, seed=3))
    with Store(tmp_path / "pooled.db") as store:
        _ingest(store, checked)
        records = store.records("patients")
    assert set(records["source_file"]) == {"ulm.xlsx"}
    assert set(records["source_sheet"]) == {"Patienten"}
    # the header is on row 4 (title block above it): data rows are 5..14 as Excel shows them
    assert sorted(records["source_row"]) == list(range(5, 15))
    assert set(records["upload_sha256"]) == {checked.sha256}
    assert set(records["upload_version"]) == {1}
    assert records["ingested_at"].notna().all()


def test_same_bytes_twice_is_not_a_new_version(tmp_path: Path) -> None:
    checked = _upload(tmp_path, "ulm.xlsx", clean_patients(10, seed=3))
    with Store(tmp_path / "pooled.db") as store:
        _ingest(store, checked)
        again = _ingest(store, checked)
        assert again.duplicate_of == 1
        assert len(store.uploads()) == 1


def test_blocking_rows_are_stored_and_counted_in_the_flow(tmp_path: Path) -> None:
    frame = clean_patients(30, seed=4)
    frame.loc[5, "patient_id"] = frame.loc[4, "patient_id"]  # duplicate id: blocks both rows
    frame.loc[10, "surgery_date"] = frame.loc[10, "diagnosis_date"] - pd.Timedelta(days=40)
    checked = _upload(tmp_path, "ulm.xlsx", frame)
    with Store(tmp_path / "pooled.db") as store:
        result = _ingest(store, checked)
        assert result.rows["patients"] == 30  # nothing lost
        assert result.blocking["patients"] == 3
        ds = build_analysis_dataset(store)
    flow = ds.flow.to_frame().set_index("centre")
    assert flow.loc["ulm", "received"] == 30
    assert flow.loc["ulm", "analysed"] == 27 == len(ds.patients)
    excluded = [c for c in flow.columns if c.startswith("excluded")]
    assert flow.loc["ulm", excluded].sum() == 3
    assert any("duplicate_id" in c for c in excluded) and any("date_order" in c for c in excluded)


def test_rejected_version_is_not_read_by_default(tmp_path: Path) -> None:
    with Store(tmp_path / "pooled.db") as store:
        _ingest(store, _upload(tmp_path, "a.xlsx", clean_patients(10, seed=5)))
        _ingest(store, _upload(tmp_path, "b.xlsx", clean_patients(12, seed=6)), "2024-07-01 10:00")
        store.set_status("ulm", 2, "rejected")
        assert store.latest_versions() == {"ulm": 1}
        assert len(store.records("patients")) == 10


def test_errors_name_what_exists(tmp_path: Path) -> None:
    with Store(tmp_path / "pooled.db") as store:
        _ingest(store, _upload(tmp_path, "a.xlsx", clean_patients(10, seed=5)))
        with pytest.raises(
            StoreError, match=r"centre 'ulm' has no version 7 .* stored versions: \[1\]"
        ):
            store.records("patients", versions={"ulm": 7})
        with pytest.raises(StoreError, match="centre 'bonn' has no accepted upload"):
            store.records("patients", centres=["bonn"])
    with pytest.raises(StoreError, match="no such store"):
        Store(tmp_path / "missing.db", read_only=True)


# -- version identity: upload bytes + mapping + schema -----------------------------------------

MENO_FIELDS = (*FIELDS, "menopausal_status")
WRONG_MENOPAUSE = {"prä": "post", "prae": "post", "peri": "peri", "post": "pre"}


def _mapping_file(tmp_path: Path, name: str, codes: dict | None = None, centre: str = "ulm"):
    """A centre mapping written as YAML (so it has a text and a sha256) and loaded back."""
    doc = mapping_dict(list(MENO_FIELDS), centre=centre, extra={})
    doc["sources"][0]["columns"]["setting"] = {"value": "early"}
    if codes is not None:
        doc["sources"][0]["columns"]["menopausal_status"]["codes"] = codes
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return CentreMapping.from_yaml(path, schema=schema())


def _checked(upload: Path, mapping: CentreMapping, used: Schema | None = None):
    return check_upload(upload, mapping, schema=used or schema(), today=TODAY)


def _put(store: Store, checked, *, used: Schema | None = None, when: str = "2024-06-01 10:00",
         **options):  # fmt: skip
    return store.ingest(
        list(checked.tables),
        checked.report,
        mapping=checked.mapping,
        schema=used or schema(),
        upload_path=checked.path,
        ingested_at=dt.datetime.fromisoformat(when),
        **options,
    )


def _schema_with_comment(comment: str) -> Schema:
    """The consortium schema with one more comment line: same fields, another sha256."""
    return load_schema_text(DEFAULT_SCHEMA_PATH.read_text(encoding="utf-8") + f"\n# {comment}\n")


def test_corrected_mapping_for_the_same_bytes_is_a_new_version(tmp_path: Path) -> None:
    upload = xlsx_upload(tmp_path / "ulm.xlsx", clean_patients(20, seed=7)[list(MENO_FIELDS)])
    wrong = _mapping_file(tmp_path, "ulm_wrong.yaml", WRONG_MENOPAUSE)
    right = _mapping_file(tmp_path, "ulm.yaml")
    assert wrong.sha256 != right.sha256
    with Store(tmp_path / "pooled.db") as store:
        first = _put(store, _checked(upload, wrong))
        second = _put(store, _checked(upload, right), when="2024-06-02 10:00")
        again = _put(store, _checked(upload, right), when="2024-06-03 10:00")
        assert (first.version, second.version) == (1, 2)
        assert second.duplicate_of is None
        assert again.duplicate_of == 2 and again.version == 2
        versions = store.versions("ulm")
        assert versions["version"].tolist() == [1, 2]
        assert versions["upload_sha256"].nunique() == 1
        assert versions["mapping_sha256"].tolist() == [wrong.sha256, right.sha256]
        assert store.mapping_text("ulm", 1) == wrong.text
        assert store.mapping_text("ulm", 2) == right.text
        # the analysis reads the corrected version
        records = store.records("patients")
        assert set(records["upload_version"]) == {2}
        meno = clean_patients(20, seed=7)["menopausal_status"].tolist()
        assert records["menopausal_status"].tolist() == meno
        # texts and files are kept once per sha256
        counts = store._con.execute(
            "SELECT (SELECT count(*) FROM texts), (SELECT count(*) FROM files)"
        ).fetchone()
        assert counts == (3, 1)  # two mappings + one schema; one upload


def test_a_changed_schema_is_a_new_version_and_its_text_is_kept(tmp_path: Path) -> None:
    upload = xlsx_upload(tmp_path / "ulm.xlsx", clean_patients(12, seed=8)[list(MENO_FIELDS)])
    mapping = _mapping_file(tmp_path, "ulm.yaml")
    changed = _schema_with_comment("a field was documented")
    assert changed.sha256 != schema().sha256
    with Store(tmp_path / "pooled.db") as store:
        _put(store, _checked(upload, mapping))
        result = _put(store, _checked(upload, mapping, changed), used=changed)
        assert result.version == 2 and result.duplicate_of is None
        assert store.schema_text("ulm", 1) == schema().text
        assert store.schema_text("ulm", 2) == changed.text
        assert store.versions()["schema_sha256"].tolist() == [schema().sha256, changed.sha256]
        compiled = store.schema_for({"ulm": 2})
        assert compiled is not None and compiled.sha256 == changed.sha256
        assert compiled.table("patients").field("ctc_count").type == "integer"


def test_without_mapping_text_the_same_bytes_stay_one_version(tmp_path: Path) -> None:
    """Callers that pass no mapping (or one built from a dict) keep today's behaviour."""
    checked = _upload(tmp_path, "ulm.xlsx", clean_patients(10, seed=3))
    assert checked.mapping.text == ""
    with Store(tmp_path / "pooled.db") as store:
        _ingest(store, checked)
        again = store.ingest(list(checked.tables), checked.report, mapping=checked.mapping)
        assert again.duplicate_of == 1
        forced = store.ingest(list(checked.tables), checked.report, allow_duplicate=True)
        assert forced.version == 2 and forced.duplicate_of is None
        assert store.mapping_text("ulm", 1) is None and store.schema_text("ulm", 1) is None
        assert store.schema_for({"ulm": 1}) is None
        assert pd.isna(store.versions().loc[0, "mapping_sha256"])


def test_upload_bytes_are_kept_and_must_be_the_checked_file(tmp_path: Path) -> None:
    upload = xlsx_upload(tmp_path / "ulm_2024.xlsx", clean_patients(10, seed=9)[list(MENO_FIELDS)])
    other = xlsx_upload(tmp_path / "other.xlsx", clean_patients(11, seed=10)[list(MENO_FIELDS)])
    mapping = _mapping_file(tmp_path, "ulm.yaml")
    checked = _checked(upload, mapping)
    with Store(tmp_path / "pooled.db") as store:
        with pytest.raises(StoreError, match=r"other.xlsx is not the file these tables were read"):
            store.ingest(list(checked.tables), checked.report, upload_path=other)
        assert store.versions().empty  # nothing written
        _put(store, checked)
        name, content = store.upload_file("ulm", 1)  # type: ignore[misc]
        assert name == "ulm_2024.xlsx"
        assert content == upload.read_bytes()
        store.ingest(list(checked.tables), checked.report, allow_duplicate=True)
        assert store.upload_file("ulm", 2) == (name, content)  # kept once, found by sha256
        with pytest.raises(StoreError, match="mapping is for centre 'bonn'"):
            store.ingest(
                list(checked.tables), mapping=_mapping_file(tmp_path, "b.yaml", centre="bonn")
            )


def test_versions_lists_provenance_and_counts(tmp_path: Path) -> None:
    frame = clean_patients(25, seed=11)[list(MENO_FIELDS)]
    frame.loc[3, "patient_id"] = frame.loc[2, "patient_id"]  # two blocked rows
    upload = xlsx_upload(tmp_path / "ulm.xlsx", frame)
    mapping = _mapping_file(tmp_path, "ulm.yaml")
    checked = _checked(upload, mapping)
    counts = checked.report.counts_by_severity
    with Store(tmp_path / "pooled.db") as store:
        _put(store, checked, note="first delivery")
        row = store.versions().iloc[0]
    assert row["centre"] == "ulm" and row["version"] == 1 and row["status"] == "accepted"
    assert row["file"] == "ulm.xlsx" and row["upload_sha256"] == checked.sha256
    assert row["mapping_path"] == str(tmp_path / "ulm.yaml")
    assert (row["n_patients"], row["n_samples"], row["n_blocking"]) == (25, 0, 2)
    assert (row["n_errors"], row["n_warnings"], row["n_info"]) == (
        counts["error"], counts["warning"], counts["info"],
    )  # fmt: skip
    assert row["n_errors"] >= 1
    assert row["note"] == "first delivery"
    assert row["ingested_at"] == pd.Timestamp("2024-06-01 10:00")


def test_versions_columns(tmp_path: Path) -> None:
    with Store(tmp_path / "pooled.db") as store:
        _ingest(store, _upload(tmp_path, "a.xlsx", clean_patients(5, seed=1)))
        assert tuple(store.versions().columns) == VERSION_COLUMNS
        assert store.versions("bonn").empty


def test_set_status_records_when_and_why(tmp_path: Path) -> None:
    with Store(tmp_path / "pooled.db") as store:
        _ingest(store, _upload(tmp_path, "a.xlsx", clean_patients(10, seed=5)))
        _ingest(store, _upload(tmp_path, "b.xlsx", clean_patients(12, seed=6)), "2024-07-01 10:00")
        store.set_status(
            "ulm", 2, "rejected", "dates shifted by a year",
            changed_at=dt.datetime(2024, 7, 2, 9, 0),
        )  # fmt: skip
        assert store.latest_versions() == {"ulm": 1}
        row = store.versions("ulm").set_index("version").loc[2]
        assert (row["status"], row["status_reason"]) == ("rejected", "dates shifted by a year")
        store.set_status("ulm", 2, "accepted", "the centre confirmed the dates")
        assert store.latest_versions() == {"ulm": 2}
        history = store.status_history("ulm", 2)
        assert history["status"].tolist() == ["accepted", "rejected", "accepted"]
        assert history["reason"].tolist() == [
            "ingested", "dates shifted by a year", "the centre confirmed the dates",
        ]  # fmt: skip
        assert history["changed_at"].iloc[1] == pd.Timestamp("2024-07-02 09:00")
        with pytest.raises(StoreError, match="status must be one of accepted, rejected"):
            store.set_status("ulm", 1, "maybe")  # type: ignore[arg-type]
        with pytest.raises(
            StoreError, match=r"no version 9 of centre 'ulm'; stored versions: \[1, 2\]"
        ):
            store.set_status("ulm", 9, "rejected")


def test_schema_for_refuses_versions_with_different_schemas(tmp_path: Path) -> None:
    mapping_ulm = _mapping_file(tmp_path, "ulm.yaml")
    mapping_bonn = _mapping_file(tmp_path, "bonn.yaml", centre="bonn")
    up_ulm = xlsx_upload(tmp_path / "ulm.xlsx", clean_patients(8, seed=1)[list(MENO_FIELDS)])
    up_bonn = xlsx_upload(tmp_path / "bonn.xlsx", clean_patients(8, seed=2)[list(MENO_FIELDS)])
    changed = _schema_with_comment("bonn's schema")
    with Store(tmp_path / "pooled.db") as store:
        _put(store, _checked(up_ulm, mapping_ulm))
        _put(store, _checked(up_bonn, mapping_bonn, changed), used=changed)
        with pytest.raises(StoreError) as caught:
            store.schema_for({"ulm": 1, "bonn": 1})
        message = str(caught.value)
        assert f"{schema().sha256[:12]}: ulm v1" in message
        assert f"{changed.sha256[:12]}: bonn v1" in message
        assert "--schema" in message
        assert store.schema_for({"ulm": 1}).sha256 == schema().sha256  # type: ignore[union-attr]


# -- comparing versions ---------------------------------------------------------------------


def test_diff_patients_added_removed_changed(tmp_path: Path) -> None:
    base = clean_patients(10, seed=12)[list(MENO_FIELDS)]
    newer = pd.concat([base.iloc[1:], clean_patients(2, seed=13, start=50)[list(MENO_FIELDS)]])
    newer = newer.reset_index(drop=True)
    newer.loc[0, "age"] = newer.loc[0, "age"] + 10  # patient P00002
    newer.loc[3, "grade"] = 1 if newer.loc[3, "grade"] != 1 else 3  # patient P00005
    mapping = _mapping_file(tmp_path, "ulm.yaml")
    with Store(tmp_path / "pooled.db") as store:
        _put(store, _checked(xlsx_upload(tmp_path / "v1.xlsx", base), mapping))
        _put(store, _checked(xlsx_upload(tmp_path / "v2.xlsx", newer), mapping))
        d = store.diff("ulm", 1, 2)
    assert d.key == ("patient_id",)
    assert d.removed["patient_id"].tolist() == ["P00001"]
    assert d.added["patient_id"].tolist() == ["P00050", "P00051"]
    expected = {("P00002", "age"), ("P00005", "grade")}
    assert set(zip(d.changed["patient_id"], d.changed["field"], strict=True)) == expected
    age = d.changed.loc[d.changed["field"] == "age"].iloc[0]
    assert age["new"] == pytest.approx(age["old"] + 10)
    assert "source_row" not in d.fields and "upload_id" not in d.fields
    schema_fields = [
        f for f in schema().table("patients").fields if f not in ("centre", "patient_id")
    ]
    assert list(d.fields) == schema_fields  # every schema field (stored as columns), in order
    table = d.to_frame()
    assert table["change"].value_counts().to_dict() == {
        "added": 2, "removed": 1, "changed": len(expected),
    }  # fmt: skip
    assert d.counts_by_field().values.tolist() == [["age", 1], ["grade", 1]]
    assert (d.n_added, d.n_removed, d.n_changed) == (2, 1, 2)


def test_diff_of_a_version_with_itself_is_empty(tmp_path: Path) -> None:
    with Store(tmp_path / "pooled.db") as store:
        _ingest(store, _upload(tmp_path, "a.xlsx", clean_patients(10, seed=5)))
        d = store.diff("ulm", 1, 1)
        assert d.is_empty and d.to_frame().empty and d.counts_by_field().empty
        with pytest.raises(StoreError, match="no version 3 of centre 'ulm'"):
            store.diff("ulm", 1, 3)


SAMPLES_SOURCE = {
    "table": "samples",
    "sheet": "Serienproben",
    "header_row": 1,
    "columns": {
        "patient_id": "Pat-Nr",
        "timepoint": "Zeitpunkt",
        "sample_date": "Datum",
        "ctc_count": "CTC",
        "ctc_blood_volume_ml": "Volumen",
    },
}


def _with_samples(tmp_path: Path, name: str, patients: pd.DataFrame, samples: list[list]) -> Path:
    cells = display_cells(patients, "xlsx")
    return write_xlsx(
        tmp_path / name,
        {
            "Patienten": ((("Register",), ("",), ()), [HEADERS[c] for c in cells.columns],
                          rows_of(cells)),
            "Serienproben": ((), ["Pat-Nr", "Zeitpunkt", "Datum", "CTC", "Volumen"], samples),
        },
    )  # fmt: skip


def test_diff_samples_keyed_by_patient_and_timepoint(tmp_path: Path) -> None:
    patients = clean_patients(3, seed=14)[list(FIELDS)]
    ids = patients["patient_id"].tolist()
    day = pd.Timestamp("2012-01-01").to_pydatetime()
    first = [[ids[0], 0, day, 3, 7.5], [ids[0], 1, day, 1, 7.5], [ids[1], 0, day, 0, 7.5]]
    second = [[ids[0], 0, day, 3, 7.5], [ids[0], 1, day, 4, 7.5], [ids[2], 0, day, 2, 7.5]]
    doc = mapping_dict(list(FIELDS), samples=SAMPLES_SOURCE)
    doc["sources"][0]["columns"]["setting"] = {"value": "early"}
    (tmp_path / "ulm.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    mapping = CentreMapping.from_yaml(tmp_path / "ulm.yaml", schema=schema())
    with Store(tmp_path / "pooled.db") as store:
        for i, rows in enumerate((first, second)):
            _put(store, _checked(_with_samples(tmp_path, f"v{i}.xlsx", patients, rows), mapping))
        assert store.versions()["n_samples"].tolist() == [3, 3]
        d = store.diff("ulm", 1, 2, table="samples")
        patient_diff = store.diff("ulm", 1, 2)
    assert d.key == ("patient_id", "timepoint")
    assert d.added.values.tolist() == [[ids[2], 0]]
    assert d.removed.values.tolist() == [[ids[1], 0]]
    assert d.changed.values.tolist() == [[ids[0], 1, "ctc_count", 1, 4]]
    assert patient_diff.is_empty


# -- the cross-centre rules over stored versions -------------------------------------------------


def test_consortium_report_over_stored_versions_matches_the_fresh_tables(tmp_path: Path) -> None:
    """The same patients sent by ulm and bonn: stored and re-read, the cross-centre rules find
    exactly what they find on the freshly validated tables."""
    frame = clean_patients(15, seed=21)[list(MENO_FIELDS)]
    ulm = _checked(xlsx_upload(tmp_path / "ulm.xlsx", frame), _mapping_file(tmp_path, "u.yaml"))
    bonn_frame = frame.assign(patient_id=[f"B{i:03d}" for i in range(len(frame))])
    bonn = _checked(
        xlsx_upload(tmp_path / "bonn.xlsx", bonn_frame),
        _mapping_file(tmp_path, "b.yaml", centre="bonn"),
    )
    fresh = validate_consortium([*ulm.tables, *bonn.tables], schema=schema()).findings
    assert len(fresh) == 15 and set(fresh["rule"]) == {"cross_centre_duplicate"}
    with Store(tmp_path / "pooled.db") as store:
        _put(store, ulm)
        _put(store, bonn)
        tables = store.harmonised_tables()
        assert [(t.centre, t.table, t.file, t.sheet) for t in tables] == [
            ("ulm", "patients", "ulm.xlsx", "Patienten"),  # in the order ingested
            ("bonn", "patients", "bonn.xlsx", "Patienten"),
        ]
        assert tables[0].column_of["patient_id"] == "Pat-Nr"
        assert tables[0].column_of["setting"] == "(constant)"
        assert not set(STORE_COLUMNS) & set(tables[0].data.columns)
        assert tables[0].sha256 == ulm.sha256 and tables[0].n_rows == 15
        stored = store.consortium_report().findings
        pd.testing.assert_frame_equal(
            stored.sort_values(["centre", "value"]).reset_index(drop=True),
            fresh.sort_values(["centre", "value"]).reset_index(drop=True),
        )
        store.set_status("bonn", 1, "rejected", "same patients as ulm")
        assert store.consortium_report().n_findings == 0
        assert store.consortium_report({"ulm": 1, "bonn": 1}).n_findings == 15


# -- stores written before versions were identified by mapping and schema ---------------------

LEGACY_UPLOADS = [
    "upload_id", "centre", "version", "table_name", "file", "sheet", "sha256", "mapping",
    "ingested_at", "n_rows", "n_blocking", "n_errors", "n_warnings", "status",
]  # fmt: skip


def _legacy_store(tmp_path: Path) -> tuple[Path, object]:
    """A store as the previous release wrote it: ingested with today's Store, then stripped to
    the previous layout (no mapping/schema columns, no texts, files or status history)."""
    path = tmp_path / "legacy.db"
    checked = _upload(tmp_path, "ulm.xlsx", clean_patients(10, seed=3))
    with Store(path) as store:
        _ingest(store, checked)
        _ingest(store, _upload(tmp_path, "ulm2.xlsx", clean_patients(12, seed=4)), "2024-07-01")
        con = store._con
        for column in ("mapping_sha256", "schema_sha256", "status_reason",
                       "status_changed_at", "note"):  # fmt: skip
            con.execute(f"ALTER TABLE uploads DROP COLUMN {column}")
        for table in ("texts", "files", "status_history"):
            con.execute(f"DROP TABLE {table}")
        con.execute("UPDATE uploads SET status = 'rejected' WHERE version = 2")
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        columns = [r[0] for r in con.execute("DESCRIBE uploads").fetchall()]
        tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    finally:
        con.close()
    assert columns == LEGACY_UPLOADS and tables == {"uploads", "findings", "patients"}
    return path, checked


def test_a_legacy_store_reads_read_only_without_changes(tmp_path: Path) -> None:
    path, _ = _legacy_store(tmp_path)
    with Store(path, read_only=True) as store:
        versions = store.versions()
        assert versions["version"].tolist() == [1, 2]
        assert versions["status"].tolist() == ["accepted", "rejected"]
        assert versions["mapping_sha256"].isna().all() and versions["schema_sha256"].isna().all()
        assert versions["n_patients"].tolist() == [10, 12]
        assert store.mapping_text("ulm", 1) is None and store.upload_file("ulm", 1) is None
        assert store.status_history("ulm", 1).empty
        assert store.schema_for({"ulm": 1}) is None
        assert len(store.records("patients")) == 10
        diff = store.diff("ulm", 1, 2)
        assert (diff.n_added, diff.n_removed) == (2, 0)  # P00011, P00012
        assert store.consortium_report().n_findings == 0
        assert len(build_analysis_dataset(store).patients) == 10
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        assert [r[0] for r in con.execute("DESCRIBE uploads").fetchall()] == LEGACY_UPLOADS
    finally:
        con.close()


def test_a_legacy_store_is_upgraded_when_opened_for_writing(tmp_path: Path) -> None:
    path, checked = _legacy_store(tmp_path)
    with Store(path) as store:
        assert store.versions()["version"].tolist() == [1, 2]
        # the old bytes without a mapping text are still the same version ...
        assert _ingest(store, checked).duplicate_of == 1
        # ... and with a recorded mapping and schema they are a new one
        mapping = _mapping_file(tmp_path, "ulm.yaml")
        upload = xlsx_upload(tmp_path / "ulm3.xlsx", clean_patients(10, seed=3)[list(MENO_FIELDS)])
        result = _put(store, _checked(upload, mapping))
        assert result.version == 3
        store.set_status("ulm", 2, "accepted", "checked with the centre")
        assert store.status_history("ulm", 2)["reason"].tolist() == ["checked with the centre"]
        assert store.mapping_text("ulm", 3) == mapping.text
        assert store.upload_file("ulm", 3) == ("ulm3.xlsx", upload.read_bytes())
    with Store(path, read_only=True) as store:
        assert store.versions()["mapping_sha256"].notna().tolist() == [False, False, True]


# -- waiting for another process -----------------------------------------------------------------

_HOLD = (
    "import sys, time\n"
    "from harmonization.store import Store\n"
    "store = Store(sys.argv[1])\n"
    "print('holding', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
    "store.close()\n"
)
_ROOT = Path(__file__).resolve().parents[2]


def _hold(path: Path, seconds: float):
    """Another process that opens the store for writing and keeps it ``seconds``."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), str(seconds)],
        cwd=_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "holding"
    return process


def test_a_second_writer_waits_for_the_first(tmp_path: Path) -> None:
    import time

    path = tmp_path / "pooled.db"
    with Store(path) as store:
        _ingest(store, _upload(tmp_path, "a.xlsx", clean_patients(5, seed=1)))
    holder = _hold(path, 1.5)
    try:
        started = time.monotonic()
        with Store(path, timeout=30) as store:
            waited = time.monotonic() - started
            assert store.versions()["version"].tolist() == [1]
        assert waited > 0.8  # it really waited for the other process
    finally:
        holder.wait(timeout=30)


def test_a_busy_store_times_out_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "pooled.db"
    Store(path).close()
    holder = _hold(path, 30)
    try:
        for read_only in (False, True):
            with pytest.raises(
                StoreError,
                match=rf"in use by another process \(PID {holder.pid}\); waited 0.3 s.*Try again",
            ):
                Store(path, read_only=read_only, timeout=0.3)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with pytest.raises(ValueError, match="'timeout' must be >= 0"):
        Store(path, timeout=-1)


def test_diff_matches_a_patient_id_sent_twice_by_order(tmp_path: Path) -> None:
    """Duplicate ids are stored (blocked); the first record is compared with the first, the
    second with the second, and each changed record counts."""
    base = clean_patients(6, seed=15)[list(MENO_FIELDS)]
    base.loc[4, "patient_id"] = base.loc[2, "patient_id"]  # P00003 twice
    newer = base.copy()
    newer.loc[4, "age"] = base.loc[4, "age"] + 1  # only the second P00003 changes
    mapping = _mapping_file(tmp_path, "ulm.yaml")
    with Store(tmp_path / "pooled.db") as store:
        _put(store, _checked(xlsx_upload(tmp_path / "v1.xlsx", base), mapping))
        _put(store, _checked(xlsx_upload(tmp_path / "v2.xlsx", newer), mapping))
        assert store.versions()["n_blocking"].tolist() == [2, 2]
        one = store.diff("ulm", 1, 2)
        newer.loc[2, "age"] = base.loc[2, "age"] + 1  # now both change
        _put(store, _checked(xlsx_upload(tmp_path / "v3.xlsx", newer), mapping))
        two = store.diff("ulm", 1, 3)
    assert one.changed.values.tolist() == [
        ["P00003", "age", base.loc[4, "age"], base.loc[4, "age"] + 1]
    ]
    assert (one.n_changed, one.n_added, one.n_removed) == (1, 0, 0)
    assert two.changed["old"].tolist() == [base.loc[2, "age"], base.loc[4, "age"]]
    assert two.n_changed == 2 and two.counts_by_field().values.tolist() == [["age", 2]]

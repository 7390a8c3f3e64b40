"""The versioned store: two versions of a centre kept, the latest analysed, nothing lost."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from harmonization.errors import StoreError
from harmonization.store import Store
from harmonization.upload import check_upload
from pooled.dataset import build_analysis_dataset
from tests.harmonization.helpers import (
    TODAY,
    clean_patients,
    make_mapping,
    mapping_dict,
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

"""Date rules (date_order, event_after_last_contact, death_before_recurrence,
contact_after_death, future_date) and event flags, on semicolon / decimal-comma / Latin-1
csv files and xlsx: one planted date error gives exactly one finding, on the cell the
contract names."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from tests.harmonization.helpers import (
    HEADERS,
    TODAY,
    clean_patients,
    mapping_dict,
    problems,
    row_of,
    run,
    upload,
)

N = 30
D = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return clean_patients(N, seed=5)


@pytest.fixture(scope="module")
def meta() -> pd.DataFrame:
    return clean_patients(N, seed=6, setting="metastatic")


def _first(frame: pd.DataFrame, mask: pd.Series) -> int:
    hits = np.flatnonzero(mask.to_numpy())
    assert hits.size, "the clean cohort has no patient of the kind the test needs"
    return int(hits[0])


def alive_no_event(f):
    return f["death_date"].isna() & f["recurrence_date"].isna()


def dead_no_recurrence(f):
    return f["death_date"].notna() & f["recurrence_date"].isna()


Plant = Callable[[pd.DataFrame, int], None]


def _set(field: str, compute: Callable[[pd.DataFrame, int], object]) -> Plant:
    def plant(frame: pd.DataFrame, i: int) -> None:
        frame.loc[i, field] = compute(frame, i)

    return plant


# (name, which patient, planting, expected rule, expected field named)
EARLY_CASES = [
    ("surgery before diagnosis", alive_no_event,
     _set("surgery_date", lambda f, i: f.loc[i, "diagnosis_date"] - 10 * D),
     "date_order", "surgery_date"),
    ("recurrence before diagnosis", alive_no_event,
     _set("recurrence_date", lambda f, i: f.loc[i, "diagnosis_date"] - 5 * D),
     "date_order", "recurrence_date"),
    ("last contact before diagnosis", alive_no_event,
     _set("last_contact_date", lambda f, i: f.loc[i, "diagnosis_date"] - 1 * D),
     "date_order", "last_contact_date"),
    ("sample long before diagnosis", alive_no_event,
     _set("sample_date", lambda f, i: f.loc[i, "diagnosis_date"] - 400 * D),
     "date_order", "sample_date"),
    ("sample long after surgery", alive_no_event,
     _set("sample_date", lambda f, i: f.loc[i, "surgery_date"] + 400 * D),
     "date_order", "sample_date"),
    ("recurrence after last contact", alive_no_event,
     _set("recurrence_date", lambda f, i: f.loc[i, "last_contact_date"] + 30 * D),
     "event_after_last_contact", "recurrence_date"),
    ("distant recurrence after last contact", alive_no_event,
     _set("distant_recurrence_date", lambda f, i: f.loc[i, "last_contact_date"] + 1 * D),
     "event_after_last_contact", "distant_recurrence_date"),
    ("recurrence after death", dead_no_recurrence,
     _set("recurrence_date", lambda f, i: f.loc[i, "death_date"] + 30 * D),
     "death_before_recurrence", "death_date"),
    ("contact long after death", dead_no_recurrence,
     _set("last_contact_date", lambda f, i: f.loc[i, "death_date"] + 60 * D),
     "contact_after_death", "last_contact_date"),
    ("last contact in the future", alive_no_event,
     _set("last_contact_date", lambda f, i: pd.Timestamp("2031-01-15")),
     "future_date", "last_contact_date"),
    ("diagnosis in the future", alive_no_event,
     _set("diagnosis_date", lambda f, i: pd.Timestamp("2029-03-01")),
     "future_date", "diagnosis_date"),
    ("death in the future", dead_no_recurrence,
     _set("death_date", lambda f, i: pd.Timestamp("2030-05-05")),
     "future_date", "death_date"),
    ("os flag 0 for a dead patient", dead_no_recurrence,
     _set("os_event", lambda f, i: False), "event_flag", "os_event"),
    ("os flag 1 without death date", alive_no_event,
     _set("os_event", lambda f, i: True), "event_flag", "os_event"),
]  # fmt: skip


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
@pytest.mark.parametrize(
    ("name", "who", "plant", "rule", "field"),
    EARLY_CASES,
    ids=[c[0] for c in EARLY_CASES],
)
def test_planted_date_error_found_once_on_named_cell(
    tmp_path, base, kind, name, who, plant, rule, field
):
    frame = base.copy()
    i = _first(frame, who(frame))
    plant(frame, i)
    path = upload(tmp_path, frame, kind)
    report, (table,) = run(path, mapping_dict(list(frame.columns), kind=kind))
    found = problems(report)
    assert found[["rule", "row", "column", "field"]].values.tolist() == [
        [rule, row_of(i, kind), HEADERS[field], field]
    ], found.to_dict("records")
    assert table.data["blocking"].tolist() == [j == i for j in range(N)]
    assert table.data["reasons"].iloc[i] == rule


def test_death_and_contact_before_diagnosis_named_on_each_date(tmp_path, base):
    frame = base.copy()
    i = _first(frame, dead_no_recurrence(frame))
    before = frame.loc[i, "diagnosis_date"] - 3 * D
    frame.loc[i, ["death_date", "last_contact_date"]] = before
    report, _ = run(upload(tmp_path, frame, "csv"), mapping_dict(list(frame.columns), kind="csv"))
    found = problems(report)
    assert sorted(found["field"]) == ["death_date", "last_contact_date"]
    assert set(found["rule"]) == {"date_order"} and set(found["row"]) == {row_of(i, "csv")}


def test_metastatic_origin_is_sample_date(tmp_path, meta):
    frame = meta.copy()
    i = _first(frame, frame["progression_date"].notna() & frame["death_date"].isna())
    frame.loc[i, "progression_date"] = frame.loc[i, "sample_date"] - 20 * D
    report, _ = run(upload(tmp_path, frame, "csv"), mapping_dict(list(frame.columns), kind="csv"))
    found = problems(report)
    assert found[["rule", "row", "field"]].values.tolist() == [
        ["date_order", row_of(i, "csv"), "progression_date"]
    ]
    assert "sample_date" in found["message"].iloc[0]


def test_clean_metastatic_upload_has_no_problems(tmp_path, meta):
    report, (table,) = run(
        upload(tmp_path, meta, "csv"), mapping_dict(list(meta.columns), kind="csv")
    )
    assert problems(report).empty, problems(report).to_dict("records")
    assert (
        table.data["pfs_event"].sum()
        == (meta["progression_date"].notna() | meta["death_date"].notna()).sum()
    )


def test_validation_day_decides_future_dates(tmp_path, base):
    report, _ = run(
        upload(tmp_path, base, "csv"),
        mapping_dict(list(base.columns), kind="csv"),
        today=pd.Timestamp("2015-01-01").date(),
    )
    future = report.findings.loc[report.findings["rule"] == "future_date"]
    expected = sum(
        int((base[c] > pd.Timestamp("2015-01-01")).sum())
        for c in base.columns
        if c.endswith("_date")
    )
    assert len(future) == expected > 0
    assert TODAY.year == 2024


def test_bcss_flag_checks_cause_of_death(tmp_path, base):
    frame = base.copy()
    frame["bcss_event"] = frame["death_cause"].eq("breast_cancer")
    other = _first(frame, frame["death_cause"].eq("other"))
    frame.loc[other, "bcss_event"] = True
    headers = {**HEADERS, "bcss_event": "BCSS-Status"}
    from tests.harmonization import helpers

    helpers.HEADERS["bcss_event"] = "BCSS-Status"
    helpers.BOOLEAN_FIELDS = (*helpers.BOOLEAN_FIELDS, "bcss_event")
    try:
        path = upload(tmp_path, frame, "csv")
        doc = mapping_dict(list(frame.columns), kind="csv", headers=headers)
        report, _ = run(path, doc)
    finally:
        del helpers.HEADERS["bcss_event"]
        helpers.BOOLEAN_FIELDS = helpers.BOOLEAN_FIELDS[:-1]
    found = problems(report)
    assert found[["rule", "row", "column"]].values.tolist() == [
        ["event_flag", row_of(other, "csv"), "BCSS-Status"]
    ]

"""The `pooled` command: exit codes 0/1/2 and one-line reasons, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pooled.cli import app
from tests.harmonization.helpers import TODAY, clean_patients, mapping_dict, xlsx_upload

FIELDS = (
    "patient_id",
    "age",
    "diagnosis_date",
    "surgery_date",
    "last_contact_date",
    "death_date",
    "grade",
)
runner = CliRunner()


def _mapping(tmp_path: Path, **changes: object) -> Path:
    doc = mapping_dict(list(FIELDS), centre="ulm")
    doc["sources"][0]["columns"]["setting"] = {"value": "early"}
    doc["sources"][0].update(changes)
    path = tmp_path / "ulm.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _assert_unusable(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in result.output, result.output


def test_clean_upload_exits_0_and_writes_reports(tmp_path: Path) -> None:
    upload = xlsx_upload(tmp_path / "ulm.xlsx", clean_patients(20)[list(FIELDS)])
    result = _invoke(
        "validate",
        str(upload),
        "--mapping",
        str(_mapping(tmp_path)),
        "--out",
        str(tmp_path / "out"),
        "--today",
        TODAY.isoformat(),
    )
    assert result.exit_code == 0, result.output
    findings = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert not [f for f in findings if f["severity"] == "error"]
    assert (tmp_path / "out" / "validation.xlsx").exists()


def test_errors_exit_1_and_name_row_and_column(tmp_path: Path) -> None:
    frame = clean_patients(20)[list(FIELDS)].copy()
    frame["age"] = frame["age"].astype(object)
    frame.loc[3, "age"] = "alt"
    upload = xlsx_upload(tmp_path / "ulm.xlsx", frame)
    result = _invoke(
        "validate",
        str(upload),
        "--mapping",
        str(_mapping(tmp_path)),
        "--out",
        str(tmp_path / "out"),
        "--today",
        TODAY.isoformat(),
    )
    assert result.exit_code == 1, result.output
    findings = pd.DataFrame(json.loads((tmp_path / "out" / "validation.json").read_text()))
    hit = findings.loc[findings["rule"] == "type"]
    assert len(hit) == 1
    # header on row 4 under a title block: the fourth data row is row 8 as Excel shows it
    assert int(hit["row"].iloc[0]) == 8
    assert hit["column"].iloc[0] == "Alter"


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.xlsx").write_bytes(b"")
    result = _invoke(
        "validate",
        str(tmp_path / "empty.xlsx"),
        "--mapping",
        str(_mapping(tmp_path)),
        "--out",
        str(tmp_path / "o"),
    )
    _assert_unusable(result, "the file is empty")


def test_binary_file(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_bytes(bytes(range(256)) * 10)
    result = _invoke(
        "validate",
        str(tmp_path / "x.csv"),
        "--mapping",
        str(_mapping(tmp_path)),
        "--out",
        str(tmp_path / "o"),
    )
    _assert_unusable(result, "binary file")


def test_not_a_workbook(tmp_path: Path) -> None:
    (tmp_path / "x.xlsx").write_bytes(b"PK\x03\x04 definitely not a zip")
    result = _invoke(
        "validate",
        str(tmp_path / "x.xlsx"),
        "--mapping",
        str(_mapping(tmp_path)),
        "--out",
        str(tmp_path / "o"),
    )
    _assert_unusable(result, "not a readable .xlsx workbook")


def test_wrong_sheet(tmp_path: Path) -> None:
    upload = xlsx_upload(tmp_path / "ulm.xlsx", clean_patients(5)[list(FIELDS)])
    result = _invoke(
        "validate",
        str(upload),
        "--mapping",
        str(_mapping(tmp_path, sheet="Tabelle1")),
        "--out",
        str(tmp_path / "o"),
    )
    _assert_unusable(result, "has no sheet 'Tabelle1'; its sheets are 'Info', 'Patienten'")


def test_mapping_names_absent_column(tmp_path: Path) -> None:
    upload = xlsx_upload(tmp_path / "ulm.xlsx", clean_patients(5)[list(FIELDS)].drop(columns="age"))
    result = _invoke(
        "validate", str(upload), "--mapping", str(_mapping(tmp_path)), "--out", str(tmp_path / "o")
    )
    _assert_unusable(result, "has no column 'Alter'")


def test_missing_required_column_is_a_finding(tmp_path: Path) -> None:
    doc = yaml.safe_load(_mapping(tmp_path).read_text(encoding="utf-8"))
    del doc["sources"][0]["columns"]["patient_id"]
    (tmp_path / "ulm.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    upload = xlsx_upload(tmp_path / "ulm.xlsx", clean_patients(5)[list(FIELDS)])
    result = _invoke(
        "validate",
        str(upload),
        "--mapping",
        str(tmp_path / "ulm.yaml"),
        "--out",
        str(tmp_path / "o"),
        "--today",
        TODAY.isoformat(),
    )
    assert result.exit_code == 1
    findings = json.loads((tmp_path / "o" / "validation.json").read_text())
    assert any(f["rule"] == "required_column" for f in findings)


def test_malformed_mapping_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "centre: ulm\nsources:\n  - table: patients\n    columns: {patient_id: [\n",
        encoding="utf-8",
    )
    upload = xlsx_upload(tmp_path / "ulm.xlsx", clean_patients(5)[list(FIELDS)])
    result = _invoke("validate", str(upload), "--mapping", str(bad), "--out", str(tmp_path / "o"))
    _assert_unusable(result, "not valid YAML")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("sheets", "x", "unknown key 'sheets'; did you mean 'sheet'?"),
        ("header_row", 0, "'header_row' must be a whole number >= 1"),
    ],
)
def test_mapping_keys_checked(tmp_path: Path, key: str, value: object, fragment: str) -> None:
    upload = xlsx_upload(tmp_path / "ulm.xlsx", clean_patients(5)[list(FIELDS)])
    result = _invoke(
        "validate",
        str(upload),
        "--mapping",
        str(_mapping(tmp_path, **{key: value})),
        "--out",
        str(tmp_path / "o"),
    )
    _assert_unusable(result, fragment)


def test_ingest_then_dataset(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path)
    store = tmp_path / "pooled.db"
    first = xlsx_upload(tmp_path / "v1.xlsx", clean_patients(12, seed=1)[list(FIELDS)])
    second = xlsx_upload(tmp_path / "v2.xlsx", clean_patients(15, seed=2)[list(FIELDS)])
    for upload in (first, second):
        result = _invoke(
            "ingest",
            str(upload),
            "--mapping",
            str(mapping),
            "--store",
            str(store),
            "--today",
            TODAY.isoformat(),
        )
        assert result.exit_code == 0, result.output
    assert "stored version 2" in result.output
    out = tmp_path / "ds.csv"
    result = _invoke("dataset", "--store", str(store), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 15
    result = _invoke("dataset", "--store", str(store), "--out", str(out), "--version", "ulm=1")
    assert result.exit_code == 2 and "already exists" in result.output  # never silently replaced
    assert len(pd.read_csv(out)) == 15
    result = _invoke(
        "dataset", "--store", str(store), "--out", str(out), "--version", "ulm=1", "--overwrite"
    )
    assert len(pd.read_csv(out)) == 12
    flow = pd.read_csv(tmp_path / "ds_flow.csv")
    assert flow.loc[flow["centre"] == "ulm", "analysed"].item() == 12

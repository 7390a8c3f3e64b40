"""`pooled store`: list, show, diff, reject / accept, report and check on real stores built
from real uploads; exit codes 0 / 1 / 2 and one-line reasons, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from openpyxl import load_workbook
from typer.testing import CliRunner

from harmonization.mapping import CentreMapping
from harmonization.schema import DEFAULT_SCHEMA_PATH, Schema, load_schema_text
from harmonization.store import Store
from harmonization.upload import check_upload
from harmonization.validate import validate_consortium
from pooled.cli import app
from pooled.simulate import simulate_consortium
from tests.harmonization.helpers import TODAY, clean_patients, mapping_dict, schema, xlsx_upload

FIELDS = (
    "patient_id", "age", "diagnosis_date", "surgery_date", "last_contact_date", "death_date",
    "grade", "menopausal_status",
)  # fmt: skip
#: A mapping error as a statistician found it: pre- and postmenopausal swapped.
SWAPPED = {"prä": "post", "prae": "post", "peri": "peri", "post": "pre"}
runner = CliRunner()


def _invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _assert_unusable(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in result.output, result.output


def _mapping(folder: Path, name: str, *, centre: str = "ulm", codes: dict | None = None):
    doc = mapping_dict(list(FIELDS), centre=centre)
    doc["sources"][0]["columns"]["setting"] = {"value": "early"}
    if codes is not None:
        doc["sources"][0]["columns"]["menopausal_status"]["codes"] = codes
    path = folder / name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _ingest(db: Store, upload: Path, mapping_path: Path, *, used: Schema | None = None,
            keep_bytes: bool = True, note: str = ""):  # fmt: skip
    used = used or schema()
    mapping = CentreMapping.from_yaml(mapping_path, schema=used)
    checked = check_upload(upload, mapping, schema=used, today=TODAY)
    return db.ingest(
        list(checked.tables),
        checked.report,
        mapping_path=str(mapping_path),
        mapping=mapping,
        schema=used,
        upload_path=upload if keep_bytes else None,
        note=note,
    )


@pytest.fixture
def consortium(tmp_path: Path) -> dict[str, Path]:
    """ulm: one upload ingested with a wrong mapping (v1) and the corrected one (v2); bonn:
    other patients (v1)."""
    ulm = clean_patients(30, seed=31)[list(FIELDS)]
    ulm.loc[4, "age"] = 130  # one error finding, so reports have something to show
    files = {
        "ulm_upload": xlsx_upload(tmp_path / "ulm_2024.xlsx", ulm),
        "bonn_upload": xlsx_upload(
            tmp_path / "bonn.xlsx", clean_patients(20, seed=32, prefix="B")[list(FIELDS)]
        ),
        "ulm_wrong": _mapping(tmp_path, "ulm_wrong.yaml", codes=SWAPPED),
        "ulm_mapping": _mapping(tmp_path, "ulm.yaml"),
        "bonn_mapping": _mapping(tmp_path, "bonn.yaml", centre="bonn"),
        "store": tmp_path / "pooled.db",
    }
    with Store(files["store"]) as db:
        _ingest(db, files["ulm_upload"], files["ulm_wrong"])
        _ingest(db, files["ulm_upload"], files["ulm_mapping"], note="menopause codes fixed")
        _ingest(db, files["bonn_upload"], files["bonn_mapping"])
    return files


# -- no store ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["show", "ulm"],
        ["diff", "ulm", "1", "2"],
        ["reject", "ulm", "1", "--reason", "x"],
        ["accept", "ulm", "1"],
        ["report", "ulm", "--out", "rep"],
        ["check"],
    ],
)
def test_a_missing_store_is_refused_and_not_created(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "nowhere.db"
    result = _invoke("store", *args, "--store", missing)
    _assert_unusable(result, f"{missing}: no such store")
    assert not missing.exists()


# -- list / show ---------------------------------------------------------------------------------


def test_list_shows_every_version(consortium: dict[str, Path]) -> None:
    result = _invoke("store", "list", "--store", consortium["store"])
    assert result.exit_code == 0, result.output
    with Store(consortium["store"], read_only=True) as db:
        versions = db.versions()
    for row in versions.itertuples():
        assert row.mapping_sha256[:8] in result.output
    lines = [line for line in result.output.splitlines() if "│" in line]
    assert [line.split("│")[1].strip() for line in lines] == ["bonn", "ulm", "ulm"]
    assert [line.split("│")[2].strip() for line in lines] == ["1", "1", "2"]
    assert "Analysed by default (latest accepted): bonn v1, ulm v2" in " ".join(
        result.output.split()
    )
    only = _invoke("store", "list", "--store", consortium["store"], "--centre", "bonn")
    assert only.exit_code == 0 and "ulm" not in only.output.replace("Analysed", "")
    _assert_unusable(
        _invoke("store", "list", "--store", consortium["store"], "--centre", "kiel"),
        "centre 'kiel' has no versions",
    )


def test_show_gives_provenance_history_and_findings(consortium: dict[str, Path]) -> None:
    result = _invoke("store", "show", "ulm", "--store", consortium["store"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    mapping = CentreMapping.from_yaml(consortium["ulm_mapping"])
    size = consortium["ulm_upload"].stat().st_size
    assert "ulm version 2: accepted" in text
    assert "analysed yes (the latest accepted version)" in text
    assert f"sha256 {mapping.sha256}" in text and str(consortium["ulm_mapping"]) in text
    assert f"kept ({size:,} bytes)" in text
    assert f"sha256 {schema().sha256}" in text
    assert "menopause codes fixed" in text
    assert "│ range" in result.output  # the age of 130, by rule
    first = _invoke("store", "show", "ulm", "--version", "1", "--store", consortium["store"])
    assert "ulm version 1: accepted" in first.output
    assert CentreMapping.from_yaml(consortium["ulm_wrong"]).sha256 in " ".join(first.output.split())
    _assert_unusable(
        _invoke("store", "show", "ulm", "--version", "5", "--store", consortium["store"]),
        "no version 5 of centre 'ulm'; stored versions: [1, 2]",
    )


# -- diff ------------------------------------------------------------------------------------------


def test_diff_names_the_field_the_corrected_mapping_changed(
    consortium: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "diff" / "ulm_1_2.csv"
    result = _invoke("store", "diff", "ulm", "1", "2", "--store", consortium["store"], "--out", out)
    assert result.exit_code == 0, result.output
    truth = clean_patients(30, seed=31)
    swapped = truth.loc[truth["menopausal_status"].isin(["pre", "post"])]
    text = " ".join(result.output.split())
    assert f"0 added, 0 removed, {len(swapped)} changed ({len(swapped)} cells in 1 field)" in text
    assert f"│ menopausal_status │ {len(swapped)} │" in text
    table = pd.read_csv(out)
    assert list(table.columns) == ["change", "patient_id", "field", "old", "new"]
    assert sorted(table["patient_id"]) == sorted(swapped["patient_id"])
    assert set(table["field"]) == {"menopausal_status"}
    new = dict(zip(table["patient_id"], table["new"], strict=True))
    assert all(new[p] == m for p, m in zip(swapped["patient_id"], swapped["menopausal_status"],
                                           strict=True))  # fmt: skip
    same = _invoke("store", "diff", "bonn", "1", "1", "--store", consortium["store"])
    assert "The two versions hold the same records." in same.output


# -- reject / accept -------------------------------------------------------------------------------


def test_reject_and_accept_record_why_and_change_what_is_analysed(
    consortium: dict[str, Path],
) -> None:
    store = consortium["store"]
    result = _invoke("store", "reject", "ulm", "2", "--reason", "dates shifted", "--store", store)
    assert result.exit_code == 0, result.output
    assert "ulm version 2: rejected (dates shifted)." in result.output
    assert "Analyses now use ulm version 1." in result.output
    with Store(store, read_only=True) as db:
        assert db.latest_versions() == {"bonn": 1, "ulm": 1}
        assert db.versions("ulm")["status_reason"].tolist() == ["", "dates shifted"]
    shown = " ".join(_invoke("store", "show", "ulm", "--store", store).output.split())
    assert "ulm version 2: rejected (dates shifted)" in shown
    assert "analysed no (analyses use version 1 unless they pin ulm=2)" in shown
    assert "│ rejected │ dates shifted │" in shown
    result = _invoke("store", "reject", "ulm", "1", "--reason", "wrong mapping", "--store", store)
    assert "ulm has no accepted version now" in result.output
    result = _invoke("store", "accept", "ulm", "2", "--reason", "confirmed", "--store", store)
    assert result.exit_code == 0 and "Analyses now use ulm version 2." in result.output
    with Store(store, read_only=True) as db:
        assert db.status_history("ulm", 2)["status"].tolist() == [
            "accepted",
            "rejected",
            "accepted",
        ]
    _assert_unusable(
        _invoke("store", "reject", "ulm", "2", "--reason", "  ", "--store", store),
        "--reason must say why",
    )
    _assert_unusable(
        _invoke("store", "reject", "ulm", "9", "--reason", "x", "--store", store),
        "no version 9 of centre 'ulm'",
    )
    missing_reason = _invoke("store", "reject", "ulm", "2", "--store", store)
    assert missing_reason.exit_code == 2 and "--reason" in missing_reason.output


# -- report --------------------------------------------------------------------------------------


def _sheets(path: Path) -> dict[str, list[tuple]]:
    book = load_workbook(path)
    return {name: list(book[name].iter_rows(values_only=True)) for name in book.sheetnames}


def test_report_reproduces_the_validation_report(consortium: dict[str, Path], tmp_path: Path):
    fresh = tmp_path / "fresh"
    validated = _invoke(
        "validate", consortium["ulm_upload"], "--mapping", consortium["ulm_mapping"],
        "--out", fresh, "--today", TODAY.isoformat(),
    )  # fmt: skip
    assert validated.exit_code == 1, validated.output  # the age of 130
    again = tmp_path / "again"
    result = _invoke("store", "report", "ulm", "--store", consortium["store"], "--out", again)
    assert result.exit_code == 0, result.output
    assert "ulm version 2:" in result.output and "note:" not in result.output
    assert json.loads((again / "validation.json").read_text()) == json.loads(
        (fresh / "validation.json").read_text()
    )
    redone, original = _sheets(again / "validation.xlsx"), _sheets(fresh / "validation.xlsx")
    assert list(redone) == list(original) and "Patienten" in redone
    assert redone == original


def test_report_refuses_to_overwrite(consortium: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rep"
    out.mkdir()
    (out / "validation.json").write_text("[]", encoding="utf-8")
    args = ("store", "report", "ulm", "--version", "1", "--store", consortium["store"])
    _assert_unusable(_invoke(*args, "--out", out), "already exist; pass --overwrite")
    assert (out / "validation.json").read_text() == "[]"
    assert not (out / "validation.xlsx").exists()
    result = _invoke(*args, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    with Store(consortium["store"], read_only=True) as db:
        stored = db.validation_report("ulm", 1).n_findings
    assert len(json.loads((out / "validation.json").read_text())) == stored > 0


def test_report_without_stored_bytes_says_so(tmp_path: Path) -> None:
    upload = xlsx_upload(tmp_path / "ulm.xlsx", clean_patients(10, seed=33)[list(FIELDS)])
    store = tmp_path / "pooled.db"
    with Store(store) as db:
        _ingest(db, upload, _mapping(tmp_path, "ulm.yaml"), keep_bytes=False)
    result = _invoke("store", "report", "ulm", "--store", store, "--out", tmp_path / "rep")
    assert result.exit_code == 0, result.output
    assert "its upload file was not kept" in " ".join(result.output.split())
    assert list(_sheets(tmp_path / "rep" / "validation.xlsx")) == ["Summary", "Findings"]
    assert (tmp_path / "rep" / "validation.json").exists()


# -- check ---------------------------------------------------------------------------------------


def test_check_finds_the_same_patients_at_two_centres(tmp_path: Path) -> None:
    frame = clean_patients(12, seed=34)[list(FIELDS)]
    store = tmp_path / "pooled.db"
    with Store(store) as db:
        _ingest(db, xlsx_upload(tmp_path / "ulm.xlsx", frame), _mapping(tmp_path, "u.yaml"))
        _ingest(db, xlsx_upload(tmp_path / "bonn.xlsx", clean_patients(12, seed=35)[list(FIELDS)]),
                _mapping(tmp_path, "b.yaml", centre="bonn"))  # fmt: skip
    clean = _invoke("store", "check", "--store", store)
    assert clean.exit_code == 0, clean.output
    assert "2 centres (bonn v1, ulm v1): 0 findings." in clean.output
    # kiel sends ulm's patients under its own ids
    kiel = frame.assign(patient_id=[f"K{i}" for i in range(len(frame))])
    with Store(store) as db:
        _ingest(db, xlsx_upload(tmp_path / "kiel.xlsx", kiel), _mapping(tmp_path, "k.yaml",
                                                                     centre="kiel"))  # fmt: skip
    out = tmp_path / "check.csv"
    found = _invoke("store", "check", "--store", store, "--out", out)
    assert found.exit_code == 1, found.output
    assert "12 findings" in found.output and "cross_centre_duplicate" in found.output
    table = pd.read_csv(out)
    assert set(table["rule"]) == {"cross_centre_duplicate"} and set(table["centre"]) == {"kiel"}
    assert sorted(table["value"]) == sorted(kiel["patient_id"])
    only = _invoke("store", "check", "--store", store, "--centre", "ulm", "--centre", "bonn")
    assert only.exit_code == 0, only.output
    _invoke("store", "reject", "kiel", "1", "--reason", "ulm's patients", "--store", store)
    assert _invoke("store", "check", "--store", store).exit_code == 0
    _assert_unusable(
        _invoke("store", "check", "--store", store, "--centre", "essen"),
        "centre 'essen' has no accepted upload",
    )


def test_check_on_a_simulated_consortium_matches_the_fresh_uploads(tmp_path: Path) -> None:
    sim = simulate_consortium("early-ctc", seed=3, out_dir=tmp_path / "sim", n_patients=600)
    store = tmp_path / "pooled.db"
    tables = []
    with Store(store) as db:
        for mapping_path in sorted((sim.out_dir / "mappings").glob("*.yaml")):
            upload = next((sim.out_dir / "uploads").glob(f"{mapping_path.stem}.*"))
            mapping = CentreMapping.from_yaml(mapping_path, schema=schema())
            checked = check_upload(upload, mapping, schema=schema())
            tables += checked.tables
            db.ingest(list(checked.tables), checked.report, mapping=mapping, schema=schema(),
                      upload_path=upload)  # fmt: skip
    expected = validate_consortium(tables, schema=schema()).findings
    out = tmp_path / "check.csv"
    result = _invoke("store", "check", "--store", store, "--out", out)
    assert result.exit_code == (1 if len(expected) else 0), result.output
    found = pd.read_csv(out, dtype=str, keep_default_na=False)
    keys = ["centre", "rule", "value"]
    assert found[keys].values.tolist() == expected[keys].astype(str).values.tolist()


def test_check_refuses_versions_ingested_with_different_schemas(tmp_path: Path) -> None:
    other = load_schema_text(DEFAULT_SCHEMA_PATH.read_text(encoding="utf-8") + "\n# v2\n")
    store = tmp_path / "pooled.db"
    with Store(store) as db:
        _ingest(db, xlsx_upload(tmp_path / "ulm.xlsx", clean_patients(8, seed=1)[list(FIELDS)]),
                _mapping(tmp_path, "u.yaml"))  # fmt: skip
        _ingest(db, xlsx_upload(tmp_path / "bonn.xlsx", clean_patients(8, seed=2)[list(FIELDS)]),
                _mapping(tmp_path, "b.yaml", centre="bonn"), used=other)  # fmt: skip
    _assert_unusable(_invoke("store", "check", "--store", store), "pass --schema")
    chosen = _invoke("store", "check", "--store", store, "--schema", DEFAULT_SCHEMA_PATH)
    assert chosen.exit_code == 0, chosen.output

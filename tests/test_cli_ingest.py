"""`pooled ingest`, `demo`, `simulate`, `run`, `dataset` with uploads that used to lose or
change data silently, and commands that used to overwrite what they did not create."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from openpyxl import load_workbook
from typer.testing import CliRunner

from harmonization.store import Store
from pooled.cli import app
from tests.harmonization.helpers import TODAY, clean_patients, mapping_dict, xlsx_upload

FIELDS = ("patient_id", "age", "diagnosis_date", "surgery_date", "last_contact_date",
          "death_date", "grade", "tumour_size_mm", "positive_nodes", "er_status")  # fmt: skip
runner = CliRunner()


class _Result:
    """A CliRunner result with the output's line wrapping undone (rich wraps at 80)."""

    def __init__(self, result) -> None:
        self.exit_code = result.exit_code
        self.output = " ".join(result.output.split())


def _invoke(*args: str | Path) -> _Result:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return _Result(result)


def _mapping(tmp_path: Path, centre: str, **codes: dict[str, object]) -> Path:
    doc = mapping_dict(list(FIELDS), centre=centre)
    doc["sources"][0]["columns"]["setting"] = {"value": "early"}
    for field, mapping in codes.items():
        doc["sources"][0]["columns"][field]["codes"] = mapping
    path = tmp_path / f"{centre}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def _upload(tmp_path: Path, name: str, frame: pd.DataFrame) -> Path:
    return xlsx_upload(tmp_path / f"{name}.xlsx", frame[list(FIELDS)])


def _ingest(upload: Path, mapping: Path, store: Path, *more: str):
    return _invoke("ingest", upload, "--mapping", mapping, "--store", store,
                   "--today", TODAY.isoformat(), *more)  # fmt: skip


@pytest.fixture()
def two_centres(tmp_path: Path):
    ulm = clean_patients(60, seed=1, prefix="ULM-")
    tue = clean_patients(60, seed=2, prefix="TUE-")
    return {
        "ulm": (_upload(tmp_path, "ulm", ulm), _mapping(tmp_path, "ulm")),
        "tue": (_upload(tmp_path, "tue", tue), _mapping(tmp_path, "tue")),
        "store": tmp_path / "pooled.db",
    }


def test_a_corrected_mapping_makes_a_new_version(tmp_path, two_centres):
    upload, good = two_centres["ulm"]
    store = two_centres["store"]
    swapped = _mapping(tmp_path / "draft" if (tmp_path / "draft").mkdir() is None else tmp_path,
                       "ulm", er_status={"pos": "negative", "neg": "positive"})  # fmt: skip
    assert _ingest(upload, swapped, store).exit_code == 0
    again = _ingest(upload, good, store)
    assert again.exit_code == 0, again.output
    assert "stored version 2" in again.output
    same = _ingest(upload, good, store)
    assert "already stored as version 2; nothing written" in same.output
    with Store(store, read_only=True) as db:
        latest = db.records("patients")
        first = db.records("patients", versions={"ulm": 1})
    assert (latest["er_status"] != first["er_status"]).all()


def test_ingest_prints_errors_and_warnings_not_only_blocking_rows(tmp_path, two_centres):
    upload, _ = two_centres["ulm"]
    mapping = _mapping(tmp_path, "ulm", er_status={"pos": "positive"})  # 'neg' not in the codes
    result = _ingest(upload, mapping, two_centres["store"])
    assert result.exit_code == 1, result.output  # stored, with errors
    assert "code" in result.output and "errors" in result.output
    report = json.loads(
        (tmp_path / "validation" / "ulm" / "v1" / "validation.json").read_text(encoding="utf-8")
    )
    negatives = [f for f in report if f["rule"] == "code"]
    assert negatives and all(f["column"] == "ER" for f in negatives)


def test_strict_stores_nothing_when_there_are_errors(tmp_path, two_centres):
    upload, _ = two_centres["ulm"]
    mapping = _mapping(tmp_path, "ulm", er_status={"pos": "positive"})
    result = _ingest(upload, mapping, two_centres["store"], "--strict")
    assert result.exit_code == 1 and "not stored" in result.output
    with Store(two_centres["store"], read_only=True) as db:
        assert db.versions().empty


def test_header_only_upload_is_refused_unless_allowed(tmp_path, two_centres):
    store = two_centres["store"]
    _ingest(*two_centres["ulm"], store)
    empty = _upload(tmp_path, "tue_empty", clean_patients(60, seed=2, prefix="TUE-").iloc[:0])
    result = _ingest(empty, two_centres["tue"][1], store)
    assert result.exit_code == 2 and "no data rows" in result.output and "--allow-empty" in result.output
    allowed = _ingest(empty, two_centres["tue"][1], store, "--allow-empty")
    assert allowed.exit_code == 1  # stored, with the no_data_rows error
    out = tmp_path / "analysis.csv"
    assert _invoke("dataset", "--store", store, "--out", out).exit_code == 0
    flow = pd.read_csv(tmp_path / "analysis_flow.csv").set_index("centre")
    assert flow.loc["tue", "received"] == 0 and flow.loc["ulm", "received"] == 60


def test_another_centres_file_under_a_centres_mapping_is_refused(tmp_path, two_centres):
    store = two_centres["store"]
    for centre in ("ulm", "tue"):
        assert _ingest(*two_centres[centre], store).exit_code == 0
    tue_upload = two_centres["tue"][0]
    ulm_mapping = two_centres["ulm"][1]
    result = _ingest(tue_upload, ulm_mapping, store)
    assert result.exit_code == 2, result.output
    assert "not stored" in result.output and "centre 'tue'" in result.output
    assert "--allow-centre-mismatch" in result.output
    with Store(store, read_only=True) as db:
        assert db.latest_versions() == {"tue": 1, "ulm": 1}
    forced = _ingest(tue_upload, ulm_mapping, store, "--allow-centre-mismatch")
    assert forced.exit_code in (0, 1) and "stored version 2" in forced.output


def test_cross_centre_duplicates_are_checked_at_ingest(tmp_path, two_centres):
    store = two_centres["store"]
    _ingest(*two_centres["ulm"], store)
    # a third centre that sends 5 of ulm's patients again (fingerprints equal, ids its own)
    ulm = clean_patients(60, seed=1, prefix="ULM-")
    fre = clean_patients(40, seed=3, prefix="FRE-")
    both = pd.concat([fre, ulm.iloc[:5].assign(patient_id=[f"FRE-9{i}" for i in range(5)])])
    upload = _upload(tmp_path, "fre", both.reset_index(drop=True))
    result = _ingest(upload, _mapping(tmp_path, "fre"), store)
    assert "cross_centre_duplicate" in result.output
    report = json.loads((tmp_path / "validation" / "fre" / "v1" / "validation.json").read_text())
    assert sum(f["rule"] == "cross_centre_duplicate" for f in report) == 5


def test_cells_starting_with_equals_stay_text_in_validation_xlsx(tmp_path):
    from openpyxl import load_workbook as load

    frame = clean_patients(5, seed=4)[list(FIELDS)]
    upload = _upload(tmp_path, "ulm", frame)
    workbook = load(upload)
    sheet = workbook["Patienten"]
    for cell, text in ((sheet["A5"], '=HYPERLINK("http://x","y")'), (sheet["K4"], "=cmd|x")):
        cell.value = text
        cell.data_type = "s"  # text typed into the cell, as a centre's sheet may hold
    workbook.save(upload)
    out = tmp_path / "out"
    _invoke("validate", upload, "--mapping", _mapping(tmp_path, "ulm"), "--out", out,
            "--today", TODAY.isoformat())  # fmt: skip
    report = load_workbook(out / "validation.xlsx")
    kinds = {c.data_type for sheet in report for row in sheet.iter_rows() for c in row}
    assert "f" not in kinds
    values = {c.value for sheet in report for row in sheet.iter_rows() for c in row}
    assert {'=HYPERLINK("http://x","y")', "=cmd|x"} <= values


# -- commands that must not overwrite what they did not create ---------------------------------


def test_demo_and_simulate_refuse_a_folder_that_holds_data(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    store = out / "pooled.db"
    store.write_bytes(b"somebody's store")
    result = _invoke("demo", "--out", out, "--patients", "300")
    assert result.exit_code == 2 and "already exists" in result.output
    assert store.read_bytes() == b"somebody's store"
    consortium = tmp_path / "c"
    assert _invoke("simulate", "--out", consortium, "--patients", "200").exit_code == 0
    mapping = next((consortium / "mappings").glob("*.yaml"))
    mapping.write_text("# edited by hand\n", encoding="utf-8")
    again = _invoke("simulate", "--out", consortium, "--patients", "200")
    assert again.exit_code == 2 and "already holds a consortium" in again.output
    assert mapping.read_text(encoding="utf-8") == "# edited by hand\n"
    forced = _invoke("simulate", "--out", consortium, "--patients", "200", "--overwrite")
    assert forced.exit_code == 0 and mapping.read_text(encoding="utf-8") != "# edited by hand\n"


def test_run_refuses_an_out_that_is_a_file_before_fitting(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep me", encoding="utf-8")
    config = Path(__file__).resolve().parent.parent / "configs" / "analyses" / "paddy.yaml"
    result = _invoke("run", config, "--store", tmp_path / "none.db", "--out", target)
    assert result.exit_code == 2 and "is a file" in result.output
    assert target.read_text(encoding="utf-8") == "keep me"


def test_dataset_into_a_folder_that_does_not_exist(tmp_path, two_centres):
    _ingest(*two_centres["ulm"], two_centres["store"])
    out = tmp_path / "new" / "deeper" / "analysis.xlsx"
    result = _invoke("dataset", "--store", two_centres["store"], "--out", out)
    assert result.exit_code == 0, result.output
    assert out.exists() and (out.parent / "analysis_flow.csv").exists()


def test_run_uses_the_schema_the_data_were_ingested_with(tmp_path):
    """A field added to the schema is accepted by validate and ingest (--schema) and then by
    `pooled run` without being named again: the run uses the schema recorded in the store."""
    from tests.pooled.helpers import schema_with_pgr

    schema = schema_with_pgr(tmp_path)
    store = tmp_path / "pooled.db"
    for centre, seed in (("ulm", 1), ("tue", 2), ("fre", 3)):
        frame = clean_patients(80, seed=seed, prefix=f"{centre.upper()}-")
        rng = np.random.default_rng(seed)
        frame["pgr_fmol"] = np.round(rng.gamma(1.2, 20.0, len(frame)), 1)
        doc = mapping_dict([*FIELDS, "pgr_fmol"], centre=centre)
        doc["sources"][0]["columns"]["setting"] = {"value": "early"}
        mapping = tmp_path / f"{centre}.yaml"
        mapping.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        upload = xlsx_upload(tmp_path / f"{centre}.xlsx", frame[[*FIELDS, "pgr_fmol"]])
        result = _ingest(upload, mapping, store, "--schema", schema)
        assert result.exit_code == 0, result.output
    config = tmp_path / "pgr.yaml"
    config.write_text(
        "name: pgr\ncohort: {setting: early}\nendpoints: [os]\n"
        "exposure: {name: pgr_positive, marker: pgr_fmol, threshold: 10}\n"
        "covariates: [age, {name: node_positive, expr: 'positive_nodes > 0'}]\n"
        "models: {cox: {ties: efron}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    result = _invoke("run", config, "--store", store, "--out", out)
    assert result.exit_code == 0, result.output
    results = pd.read_csv(out / "results.csv")
    assert "pgr_positive" in set(results["term"])
    # with the consortium's default schema the same config is refused, naming that schema
    refused = _invoke("run", config, "--store", store, "--out", tmp_path / "run2", "--schema",
                      Path(__file__).resolve().parent.parent / "configs" / "schema.yaml")  # fmt: skip
    assert refused.exit_code == 2 and "pgr_fmol" in refused.output and "schema.yaml" in refused.output


def test_centres_that_number_patients_alike_are_not_mistaken_for_each_other(tmp_path):
    """Two centres of one trial share an id scheme (SUC-00001, ...) but not their patients:
    the second centre's first upload is stored (ids alone prove nothing)."""
    store = tmp_path / "pooled.db"
    for centre, seed in (("success_a", 5), ("success_b", 6)):
        frame = clean_patients(60, seed=seed, prefix="SUC-")
        upload = _upload(tmp_path, centre, frame)
        result = _ingest(upload, _mapping(tmp_path, centre), store)
        assert result.exit_code == 0, result.output
    with Store(store, read_only=True) as db:
        assert db.latest_versions() == {"success_a": 1, "success_b": 1}

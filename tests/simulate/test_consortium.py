"""Simulated consortia read back through their mappings, derive and validate.

Recovery tests of the whole harmonisation pipeline against the generator's known truth:
every upload maps back to the clean harmonised table exactly (apart from planted cells), the
derived fields agree, and validation finds the planted errors (recall >= 95 %, at most 5 %
of row-level findings on cells that were not planted).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harmonization.mapping import CentreMapping
from harmonization.rules import RULES
from harmonization.validate import validate
from pooled.errors import ConfigError
from pooled.simulate import simulate_consortium
from tests.simulate.helpers import compare_with_truth, load_truth, planted_cells, read_centre

SIZES = {"paddy": 2500, "epac": 1944, "early-ctc": 1500, "trajectory": 469, "ctc-count": 1000}
ROW_LEVEL_RULES = {
    "type", "code", "integer", "range", "plausible_range", "required_missing", "duplicate_id",
    "date_order", "event_after_last_contact", "death_before_recurrence", "contact_after_death",
    "future_date", "event_flag", "receptor_consistency",
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(SIZES))
def consortium(request, tmp_path_factory):
    name = request.param
    out = tmp_path_factory.mktemp(name.replace("-", "_"))
    result = simulate_consortium(name, seed=11, out_dir=out, n_patients=SIZES[name])
    return result


@pytest.fixture(scope="module")
def validated(consortium):
    """Mapped tables, validation reports and harmonised tables of every centre."""
    result = consortium
    out = result.out_dir
    truth = load_truth(out)
    items = []
    for centre in truth["centres"]:
        mapping, tables = read_centre(out, centre["centre"])
        report, table = validate(tables[0], mapping)
        items.append((centre, mapping, tables[0], report, table))
        if len(tables) > 1:
            s_report, s_table = validate(tables[1], mapping, patients=table)
            items.append((centre, mapping, tables[1], s_report, s_table))
    return truth, items


def test_files_written(consortium):
    out = consortium.out_dir
    truth = load_truth(out)
    assert truth["scenario"] == consortium.scenario
    formats = set()
    for centre in truth["centres"]:
        assert (out / "uploads" / centre["file"]).exists()
        mapping = CentreMapping.from_yaml(out / "mappings" / f"{centre['centre']}.yaml")
        assert mapping.reported["patients"] == centre["n_patients"]
        formats.add(centre["format"])
    assert sum(c["n_patients"] for c in truth["centres"]) == consortium.n_patients
    if consortium.scenario != "trajectory":
        assert formats == {"xlsx", "csv", "sav"}
    assert (out / "truth_patients.parquet").exists()


def test_planted_errors_are_single_cells(consortium):
    planted = consortium.planted
    assert set(planted["kind"]) <= ROW_LEVEL_RULES
    assert set(planted["kind"]) <= set(RULES)
    # never two errors in one row of one sheet
    assert not planted.duplicated(["centre", "sheet", "row"]).any()
    # every centre got some errors
    assert set(planted["centre"]) == set(consortium.centres["centre"])
    if consortium.scenario in ("paddy", "epac", "early-ctc"):
        assert set(planted["kind"]) == ROW_LEVEL_RULES


def test_uploads_read_back_to_the_truth(consortium):
    """Upload -> mapping -> values equals the generator's table, apart from planted cells."""
    out = consortium.out_dir
    truth = load_truth(out)
    patients = pd.read_parquet(out / "truth_patients.parquet")
    samples = (
        pd.read_parquet(out / "truth_samples.parquet")
        if consortium.truth_samples_path is not None
        else None
    )
    problems = []
    for centre in truth["centres"]:
        _, tables = read_centre(out, centre["centre"])
        rows = patients[patients["centre"] == centre["centre"]].reset_index(drop=True)
        cells = planted_cells(truth, centre["centre"], centre["sheet"])
        problems += compare_with_truth(tables[0], rows, cells)
        assert set(tables[0].values.columns) >= set(centre["delivered_fields"])
        if samples is not None:
            rows = samples[samples["centre"] == centre["centre"]].reset_index(drop=True)
            cells = planted_cells(truth, centre["centre"], centre["samples_sheet"])
            problems += compare_with_truth(tables[1], rows, cells)
    assert problems == []


def test_derived_fields_match_the_truth(consortium, validated):
    """derive (inside validate) gives the generator's endpoints and subtype on clean rows."""
    truth, items = validated
    patients = pd.read_parquet(consortium.out_dir / "truth_patients.parquet")
    endpoints = truth["endpoints"]
    checked = 0
    for centre, _, mapped, _, table in items:
        if mapped.table != "patients":
            continue
        rows = patients[patients["centre"] == centre["centre"]].reset_index(drop=True)
        clean = ~np.isin(rows["source_row"].to_numpy(),
                         [r for r, _ in planted_cells(truth, centre["centre"], centre["sheet"])])  # fmt: skip
        data = table.data.reset_index(drop=True)
        columns = [f"{e}_months" for e in endpoints] + [f"{e}_event" for e in endpoints]
        if consortium.scenario != "trajectory":
            columns.append("subtype")
        for column in columns:
            got, want = data.loc[clean, column], rows.loc[clean, column]
            if column.endswith("_months"):
                np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(float), rtol=1e-12)
            elif column.endswith("_event"):
                assert (got.astype(bool).to_numpy() == want.astype(bool).to_numpy()).all(), column
            else:
                assert (got.astype(str).to_numpy() == want.astype(str).to_numpy()).all(), column
        if "ctc_per_7_5ml" in rows:
            np.testing.assert_allclose(data.loc[clean, "ctc_per_7_5ml"].to_numpy(float),
                                       rows.loc[clean, "ctc_per_7_5ml"].to_numpy(float))  # fmt: skip
        checked += int(clean.sum())
    assert checked > 0.7 * consortium.n_patients


def test_validation_finds_the_planted_errors(validated):
    """Recall >= 95 % at the right row and column; <= 5 % of findings on unplanted cells."""
    truth, items = validated
    findings = pd.concat([report.findings for *_, report, _ in items], ignore_index=True)
    row_level = findings[findings["row"].notna()].copy()
    row_level = row_level[row_level["rule"].isin(ROW_LEVEL_RULES)]
    found = set(zip(row_level["centre"], row_level["sheet"].fillna(""),
                    row_level["row"].astype(int), row_level["column"], strict=True))  # fmt: skip
    planted = pd.DataFrame(truth["planted_errors"])
    keys = list(
        zip(planted["centre"], planted["sheet"], planted["row"], planted["column"], strict=True)
    )
    recall = np.mean([k in found for k in keys])
    assert recall >= 0.95, planted.loc[[k not in found for k in keys]].head(10).to_string()
    planted_keys = set(keys)
    on_clean = [k for k in found if k not in planted_keys]
    assert len(on_clean) <= 0.05 * len(found), on_clean[:10]
    # the finding has the planted kind
    kind_of = dict(zip(keys, planted["kind"], strict=True))
    rules = {
        (c, s or "", int(r), col): rule
        for c, s, r, col, rule in row_level[["centre", "sheet", "row", "column", "rule"]].itertuples(index=False)
    }  # fmt: skip
    wrong = [(k, kind_of[k], rules[k]) for k in planted_keys & set(rules) if rules[k] != kind_of[k]]
    assert wrong == []
    # no other row-level finding anywhere (e.g. orphan samples, derived-value checks)
    other = findings[findings["row"].notna() & ~findings["rule"].isin(ROW_LEVEL_RULES)]
    other = other[~other["rule"].isin(["unmapped_column", "blank_rows"])]
    assert other.empty, other.head().to_string()


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("scenario", ["paddy", "trajectory", "ctc-clearance"])
def test_same_seed_same_bytes(scenario, tmp_path):
    n = 400 if scenario == "paddy" else 120
    a = simulate_consortium(scenario, seed=5, out_dir=tmp_path / "a", n_patients=n)
    b = simulate_consortium(scenario, seed=5, out_dir=tmp_path / "b", n_patients=n)
    c = simulate_consortium(scenario, seed=6, out_dir=tmp_path / "c", n_patients=n)
    assert _digest(a.out_dir) == _digest(b.out_dir)
    assert len(_digest(a.out_dir)) >= 4
    differing = {k for k, v in _digest(a.out_dir).items() if _digest(c.out_dir).get(k) != v}
    assert any(k.startswith("uploads") for k in differing)


def test_options(tmp_path):
    res = simulate_consortium("early-ctc", seed=1, out_dir=tmp_path, n_patients=300, n_centres=7)
    assert len(res.centres) == 7
    assert res.centres["n_patients"].sum() == 300
    frame = res.to_frame()
    assert set(frame["endpoint"]) == {"os", "bcss", "dfs", "ddfs"}
    assert (frame["hr"] > 1).all()
    with pytest.raises(ConfigError, match="unknown scenario"):
        simulate_consortium("padddy", seed=1, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="at least the number of centres"):
        simulate_consortium("paddy", seed=1, out_dir=tmp_path, n_patients=5)


def test_progress_bar_runs(tmp_path, capsys):
    res = simulate_consortium("epac", seed=2, out_dir=tmp_path, n_patients=200, progress=True)
    assert res.centres["n_patients"].sum() == 200

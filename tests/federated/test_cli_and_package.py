"""`pooled federate` in local mode, the node export, and the algorithm package's description."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from pooled.cli import app

PACKAGE = Path(__file__).resolve().parents[2] / "pooled" / "federated"
ROOT = PACKAGE.parents[1]


def test_federate_run_writes_results_exchange_and_the_release_log(paddy, tmp_path) -> None:
    out = tmp_path / "fed"
    result = CliRunner().invoke(
        app,
        ["federate", "run", str(ROOT / "configs" / "analyses" / "paddy.yaml"), "--store", str(paddy.store),
         "--analysis", "cox", "--analysis", "logrank", "--analysis", "validation", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = pd.read_csv(out / "results.csv")
    assert {"cox", "logrank"} == set(results["analysis_kind"])
    exchange = pd.read_csv(out / "exchange.csv").set_index("analysis")
    assert exchange.loc["logrank", "rounds"] == 1 and exchange.loc["cox", "rounds"] > 3
    entries = [json.loads(line) for line in (out / "releases.jsonl").read_text().splitlines()]
    assert {e["centre"] for e in entries} == {c.name for c in paddy.centres}
    assert all({"request_id", "method", "bytes", "sha256", "message"} <= set(e) for e in entries)
    # an earlier run is not overwritten without --overwrite
    again = CliRunner().invoke(app, ["federate", "run", str(ROOT / "configs" / "analyses" / "paddy.yaml"),
                                     "--store", str(paddy.store), "--out", str(out)])  # fmt: skip
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_a_refused_analysis_exits_2_naming_the_rule(paddy, tmp_path) -> None:
    result = CliRunner().invoke(
        app,
        ["federate", "run", str(ROOT / "configs" / "analyses" / "paddy.yaml"), "--store", str(paddy.store),
         "--analysis", "km", "--km-width", "1", "--out", str(tmp_path / "km")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "min_cell" in result.output


def test_export_writes_the_node_databases(paddy, tmp_path) -> None:
    centre = paddy.centres[0].name
    result = CliRunner().invoke(
        app,
        [
            "federate",
            "export",
            "--store",
            str(paddy.store),
            "--centre",
            centre,
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    patients = pd.read_parquet(tmp_path / "patients.parquet")
    findings = pd.read_parquet(tmp_path / "findings.parquet")
    assert len(patients) == len(paddy.centres[0].patients)
    assert list(findings.columns) == ["centre", "rule", "severity"]


def test_algorithm_store_json_describes_every_function_of_the_image() -> None:
    import pooled.federated.algorithm as algorithm

    described = json.loads((PACKAGE / "algorithm_store.json").read_text())
    names = {f["name"]: f["type"] for f in described["functions"]}
    exported = {n for n in algorithm.__all__}
    assert set(names) == exported
    for name, kind in names.items():
        function = getattr(algorithm, name)
        assert kind == ("central" if name.startswith("central_") else "federated")
        flag = (
            "wrapped_in_algorithm_client_decorator"
            if kind == "central"
            else "wrapped_in_data_decorator"
        )
        assert getattr(function, flag, False), name
    dockerfile = (PACKAGE / "Dockerfile").read_text()
    assert 'PKG_NAME="pooled.federated.algorithm"' in dockerfile
    assert "wrap_algorithm()" in dockerfile


def test_centre_side_code_imports_without_vantage6() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['vantage6'] = None\n"
        "import pooled.federated.centre, pooled.federated.coordinator, pooled.federated.local\n"
        "import pooled.cli\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "ok", done.stderr

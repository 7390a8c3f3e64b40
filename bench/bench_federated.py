"""Benchmark: rounds and bytes exchanged by the federated analyses, 11 and 50 centres.

A PADDY-like consortium is simulated (``pooled simulate``), every upload validated and
ingested, and each centre of the store becomes a vantage6 organisation of the in-process
``MockAlgorithmClient``. Each analysis of ``configs/analyses/paddy.yaml`` (endpoint OS) is run
through the same central and partial functions a node runs; the coordinator counts the rounds
(one request to every centre and their answers) and the bytes of the JSON messages (requests
counted once per centre, as vantage6 sends each organisation its own copy). The federated Cox
estimate is checked against ``fit_cox`` of the pooled patients, and the bytes are set beside
those of sending the analysed patient rows themselves (the model's columns as CSV).

    .venv/bin/python -m bench.bench_federated            # 11 centres (10,307) and 50 (40,000)
    .venv/bin/python -m bench.bench_federated --quick    # 11 centres (3,000) and 50 (12,000)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from harmonization.mapping import CentreMapping
from harmonization.store import Store
from harmonization.upload import check_upload
from pooled.config import load_analysis_config
from pooled.dataset import build_analysis_dataset
from pooled.federated.local import centres_from_stores, run_local
from pooled.federated.request import request_from_config
from pooled.models.cox import fit_cox
from pooled.simulate import simulate_consortium
from pooled.steps.base import AnalysisContext, endpoint_frame
from pooled.steps.cohort import select_cohort
from pooled.steps.cox import cox_spec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ANALYSES = (
    ("Cox, Efron, 12 terms, robust SE by centre, per-term LR tests", "central_cox", {"term_lr_tests": True}, "patients"),
    ("Cox, Efron, 12 terms, robust SE by centre, no per-term LR tests", "central_cox", {"term_lr_tests": False}, "patients"),
    ("stratified log-rank", "central_logrank", {}, "patients"),
    ("two-stage (per-centre Cox + REML)", "central_two_stage", {"method": "REML", "knha": True}, "patients"),
    ("Kaplan-Meier, 12-month bins to 120 months", "central_km", {"width": 12.0, "max_time": 120.0, "exclude_refusing": True}, "patients"),
    ("characteristics table", "central_describe", {}, "patients"),
    ("validation summary", "central_validation", {}, "findings"),
)  # fmt: skip


def build(folder: Path, n_patients: int, n_centres: int, seed: int) -> Path:
    sim = simulate_consortium(
        "paddy",
        seed=seed,
        out_dir=folder / "consortium",
        n_patients=n_patients,
        n_centres=n_centres,
    )
    with Store(folder / "pooled.db") as store:
        for centre, mapping_path in sim.mappings.items():
            checked = check_upload(sim.uploads[centre], CentreMapping.from_yaml(mapping_path))
            store.ingest(list(checked.tables), checked.report, mapping_path=str(mapping_path),
                         ingested_at=dt.datetime(2026, 1, 1))  # fmt: skip
    return folder / "pooled.db"


def measure(store: Path) -> tuple[list[dict], dict]:
    cfg = load_analysis_config(ROOT / "configs" / "analyses" / "paddy.yaml")
    centres = centres_from_stores([store], origin=cfg.origin)
    request = request_from_config(cfg, "os")
    rows = []
    check: dict = {}
    for label, method, options, database in ANALYSES:
        parameters = {"request": request.to_dict(), **options}
        if method == "central_validation":
            parameters = {"request_id": request.request_id}
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_local(centres, method, parameters, database=database)
        seconds = time.perf_counter() - start
        exchange = result["exchange"]
        rows.append({
            "analysis": label, "rounds": exchange["rounds"], "bytes_sent": exchange["bytes_sent"],
            "bytes_received": exchange["bytes_received"], "seconds": seconds,
            "note": "; ".join(f"{c}: {w}" for c, w in result.get("excluded", [])) or
                    (result["error"]["message"][:80] if result.get("error") else ""),
        })  # fmt: skip
        if method == "central_cox" and options["term_lr_tests"] and "rows" in result:
            check["federated"] = pd.DataFrame(result["rows"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Store(store, read_only=True) as db:
            ds = build_analysis_dataset(db, origin=cfg.origin)
        cohort, _ = select_cohort(ds, cfg)
        frame = endpoint_frame(cohort.patients, "os")
        spec = cox_spec(
            AnalysisContext(cfg), "os", interactions=True, cluster="centre", concordance=False
        )
        pooled = fit_cox(frame, spec)
    fed = check.get("federated")
    if fed is None:
        check.update(centres=len(centres), patients=int(pooled.n), events=int(pooled.events),
                     max_rel_estimate=np.nan, max_rel_se=np.nan, loglik_diff=np.nan,
                     rows_csv_bytes=0)  # fmt: skip
        return rows, check
    check.update(
        centres=len(centres),
        patients=int(pooled.n),
        events=int(pooled.events),
        max_rel_estimate=float(np.max(np.abs(fed["estimate"] - pooled.coefficients) / np.abs(pooled.coefficients))),
        max_rel_se=float(np.max(np.abs(fed["std_error"] - pooled.std_errors) / pooled.std_errors)),
        loglik_diff=float(abs(fed["model_loglik"].iloc[0] - pooled.loglik)),
        rows_csv_bytes=len(frame[[spec.duration, spec.event, "centre", *spec.covariates]].to_csv(index=False).encode()),
    )  # fmt: skip
    return rows, check


def write(results: list[tuple[list[dict], dict]], quick: bool) -> Path:
    lines = [
        "## Federated analyses on vantage6: rounds and bytes (11 and 50 centres)",
        "",
        "`python -m bench.bench_federated" + (" --quick" if quick else "") + "`: a PADDY-like "
        "consortium simulated, validated and ingested, each centre a vantage6 organisation of "
        "the in-process `MockAlgorithmClient` running the algorithm's own central and partial "
        "functions; `configs/analyses/paddy.yaml`, endpoint OS. A round is one request to every "
        "centre and their answers; bytes are the JSON messages (a request counted once per "
        "centre). Seconds are wall time in process (the mock deep-copies every centre's data "
        "for each subtask, so they say little about a real network, where each round costs a "
        "container start at every node: a few seconds).",
        "",
    ]
    for rows, check in results:
        lines += [
            f"### {check['centres']} centres, {check['patients']:,} patients analysed, "
            f"{check['events']:,} events",
            "",
            "| analysis | rounds | bytes sent | bytes received | KB per centre | seconds (mock) | note |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            per_centre = (r["bytes_sent"] + r["bytes_received"]) / check["centres"] / 1024
            lines.append(
                f"| {r['analysis']} | {r['rounds']} | {r['bytes_sent']:,} | {r['bytes_received']:,} | "
                f"{per_centre:.1f} | {r['seconds']:.1f} | {r['note'][:120]} |"
            )
        lines += [
            "",
            f"Federated Cox vs `fit_cox` on the pooled patients: largest relative difference "
            f"{check['max_rel_estimate']:.1e} (estimates), {check['max_rel_se']:.1e} (robust SEs), "
            f"log-likelihood difference {check['loglik_diff']:.1e}. Sending the analysed rows "
            f"instead (the model's columns as CSV): {check['rows_csv_bytes']:,} bytes.",
            "",
        ]
    out = HERE / "results" / "federated.md"
    out.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = ((3000, 11), (12000, 50)) if args.quick else ((10307, 11), (40000, 50))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-federated-") as tmp:
        for n, k in sizes:
            folder = Path(tmp) / f"c{k}"
            start = time.perf_counter()
            store = build(folder, n, k, seed=2026)
            print(
                f"{k} centres: simulated and ingested {n} patients in {time.perf_counter() - start:.0f} s",
                flush=True,
            )
            results.append(measure(store))
            print(pd.DataFrame(results[-1][0]).to_string(index=False), flush=True)
    print(f"wrote {write(results, args.quick)}")


if __name__ == "__main__":
    main()

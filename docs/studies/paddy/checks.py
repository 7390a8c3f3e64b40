"""The checks behind the explanations in ``docs/studies/paddy.md``.

Run from the repository root with the project's Python (``.venv/bin/python``)::

    python docs/studies/paddy/checks.py targets 1 2 3 4 5 6 7 8 9 20260101 --out CHECKS
    python docs/studies/paddy/checks.py no-missingness --reps 500 --out CHECKS
    python docs/studies/paddy/checks.py per-centre --first 1 --last 500 --out CHECKS
    python docs/studies/paddy/checks.py summary --study STUDY --out CHECKS

``targets``: independent draws of 1,000,000 patients of the scenario, each analysed as
``pooled.simulate.truth.compute_estimands`` does (stratified Cox, Breslow ties, the adjusted
design, no missing values; seed 20260101 is the draw behind ``estimands.json``), plus the Cox
model within each centre (the limits the two-stage estimator pools); about 100 s per draw.
``no-missingness``: the study with every covariate recorded (``StudySpec(missingness=False)``,
same seed, so the same consortia); about 2 min on 2 workers. ``per-centre``: the two-stage
fits of replicates ``first..last`` with their per-centre estimates and REML weights.
``summary``: the numbers quoted in the page, from the outputs of the three and the folder of
the study (``pooled study --scenario paddy --reps 1000 --workers 2 --out STUDY``).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ENDPOINTS = ("os", "bcss", "dfs", "ddfs")


def large_draw(seed: int, n_draw: int, out: Path) -> None:
    from pooled.simulate.scenarios import get_scenario
    from pooled.simulate.truth import cox_breslow, design, draw_frame

    spec = get_scenario("paddy")
    frame = draw_frame(spec, n_draw, seed)  # as compute_estimands
    strata = frame["stratum"].to_numpy()
    x, _ = design(frame, spec, adjusted=True)
    record: dict = {"seed": seed, "n_draw": n_draw, "endpoints": {}}
    for endpoint in spec.endpoints:
        time = frame[f"{endpoint}_months"].to_numpy(float)
        event = frame[f"{endpoint}_event"].to_numpy(bool)
        beta, se = cox_breslow(time, event, x, strata)
        centres = []
        for i, centre in enumerate(spec.centres):
            rows = strata == i
            b, s = cox_breslow(time[rows], event[rows], x[rows], strata[rows])
            centres.append(
                {"centre": centre.name, "log_hr": float(b[0]), "se": float(s[0]),
                 "n": int(rows.sum()), "events": int(event[rows].sum())}
            )  # fmt: skip
        record["endpoints"][endpoint] = {
            "log_hr": float(beta[0]), "se": float(se[0]), "events": int(event.sum()),
            "per_centre": centres,
        }  # fmt: skip
    path = out / f"target_seed{seed}.json"
    path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    print(seed, {e: round(v["log_hr"], 5) for e, v in record["endpoints"].items()})


def no_missingness(reps: int, out: Path) -> None:
    from pooled.distributed.engine import ExecutionSpec
    from pooled.study.design import StudySpec
    from pooled.study.run import run_study

    spec = StudySpec(scenario="paddy", replicates=reps, missingness=False)
    folder = out / "no-missingness"
    result = run_study(
        spec, execution=ExecutionSpec(workers=2, progress=False), checkpoint=folder / "tasks"
    )
    result.estimates.to_parquet(folder / "estimates.parquet")
    result.performance.to_csv(folder / "performance.csv", index=False)


def per_centre(first: int, last: int, out: Path) -> None:
    from pooled.models.cox import CoxSpec
    from pooled.models.meta import MetaSpec
    from pooled.models.two_stage import TwoStageSpec, fit_two_stage
    from pooled.study.design import StudySpec, analysis_covariates, simulate_replicate

    spec = StudySpec(scenario="paddy")
    covariates, categorical = analysis_covariates("early")
    rows = []
    warnings.simplefilter("ignore")
    for replicate in range(first, last + 1):
        data = simulate_replicate(spec, replicate - 1)
        for endpoint in ENDPOINTS:
            cox = CoxSpec(
                duration=f"{endpoint}_months", event=f"{endpoint}_event",
                covariates=(spec.marker, *covariates), categorical=categorical,
                ties="efron", term_lr_tests=False, concordance=False,
            )  # fmt: skip
            res = fit_two_stage(
                data, TwoStageSpec(cox=cox, marker=spec.marker, meta=MetaSpec(method="REML"))
            )
            table = res.per_centre.loc[res.per_centre["included"].astype(bool)]
            for rec in table.itertuples():
                rows.append(
                    {"replicate": replicate, "endpoint": endpoint, "centre": rec.centre,
                     "log_hr": rec.log_hr, "se": rec.se, "events": rec.events,
                     "weight": rec.weight_percent / 100, "pooled": res.meta.estimate}
                )  # fmt: skip
    pd.DataFrame(rows).to_parquet(out / f"per_centre_{first}_{last}.parquet")


def summary(study: Path, out: Path) -> None:
    draws = [json.loads(p.read_text()) for p in sorted(out.glob("target_seed*.json"))]
    original = [d for d in draws if d["seed"] == 20_260_101]
    estimates = pd.read_parquet(study / "estimates.parquet")
    wide = estimates.pivot_table(
        index=["replicate", "endpoint"], columns="method", values="estimate"
    )
    targets = {}
    print("Targets (log HR): ten draws of 1,000,000")
    for endpoint in ENDPOINTS:
        b = np.array([d["endpoints"][endpoint]["log_hr"] for d in draws])
        se = np.mean([d["endpoints"][endpoint]["se"] for d in draws])
        se_mean = max(float(b.std(ddof=1)), float(se)) / np.sqrt(len(b))
        targets[endpoint] = (float(b.mean()), se_mean)
        first = original[0]["endpoints"][endpoint]["log_hr"] if original else float("nan")
        print(f"  {endpoint}: estimands.json {first:.5f}; mean of {len(b)} {b.mean():.5f} "
              f"(SE {se_mean:.5f}; SD of one draw {b.std(ddof=1):.5f}, model SE {se:.5f})")  # fmt: skip
    print("Paired differences over the study's replicates: mean (MC SE)")
    for endpoint in ENDPOINTS:
        part = wide.xs(endpoint, level="endpoint")
        for method in ("two_stage_reml", "mixed_cox"):
            d = (part[method] - part["cox_stratified"]).dropna()
            print(f"  {endpoint} {method} - cox_stratified: {d.mean():+.4f} "
                  f"({d.std() / np.sqrt(len(d)):.4f})")  # fmt: skip
    folder = out / "no-missingness"
    if (folder / "estimates.parquet").exists():
        full = pd.read_parquet(folder / "estimates.parquet")
        keys = ["replicate", "endpoint", "method"]
        both = estimates.merge(full, on=keys, suffixes=("_cc", "_full"))
        both["d"] = both["estimate_cc"] - both["estimate_full"]
        print("Complete cases minus every value recorded (same consortia): mean (MC SE)")
        for (endpoint, method), d in both.groupby(["endpoint", "method"], sort=False)["d"]:
            print(f"  {endpoint} {method}: {d.mean():+.4f} ({d.std() / np.sqrt(len(d)):.4f})")
    files = sorted(out.glob("per_centre_*.parquet"))
    if files and draws:
        _decompose(pd.concat([pd.read_parquet(p) for p in files]), draws, wide, targets)


def _decompose(pc: pd.DataFrame, draws: list, wide: pd.DataFrame, targets: dict) -> None:
    print("Two-stage minus one-stage, split (replicates with per-centre fits): mean (MC SE)")
    for endpoint in ENDPOINTS:
        limits = pd.DataFrame(
            [{c["centre"]: c["log_hr"] for c in d["endpoints"][endpoint]["per_centre"]}
             for d in draws]
        ).mean()  # fmt: skip
        g = pc.loc[pc["endpoint"] == endpoint].copy()
        g["limit"] = g["centre"].map(limits)
        g["mean_weight"] = g["centre"].map(g.groupby("centre")["weight"].mean())
        g["mean_weight"] /= g.groupby("replicate")["mean_weight"].transform("sum")
        g["a"] = g["weight"] * g["log_hr"]
        g["f"] = g["mean_weight"] * g["log_hr"]
        g["fl"] = g["mean_weight"] * g["limit"]
        r = g.groupby("replicate")[["a", "f", "fl"]].sum()
        one = wide.xs(endpoint, level="endpoint").loc[r.index, "cox_stratified"]
        limit = targets[endpoint][0]
        parts = {
            "correlation of weights and estimates": r["a"] - r["f"],
            "weighting of the centres' limits": r["fl"] - limit,
            "rest": (r["f"] - r["fl"]) - (one - limit),
        }
        text = "; ".join(
            f"{k} {v.mean():+.4f} ({v.std() / np.sqrt(len(v)):.4f})" for k, v in parts.items()
        )
        print(f"  {endpoint}: total {(r['a'] - one).mean():+.4f}; {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("targets")
    p.add_argument("seeds", nargs="+", type=int)
    p.add_argument("--patients", type=int, default=1_000_000)
    p = sub.add_parser("no-missingness")
    p.add_argument("--reps", type=int, default=500)
    p = sub.add_parser("per-centre")
    p.add_argument("--first", type=int, default=1)
    p.add_argument("--last", type=int, default=500)
    p = sub.add_parser("summary")
    p.add_argument("--study", type=Path, required=True)
    for p in sub.choices.values():
        p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "targets":
        for seed in args.seeds:
            large_draw(seed, args.patients, args.out)
    elif args.command == "no-missingness":
        no_missingness(args.reps, args.out)
    elif args.command == "per-centre":
        per_centre(args.first, args.last, args.out)
    else:
        summary(args.study, args.out)


if __name__ == "__main__":
    main()

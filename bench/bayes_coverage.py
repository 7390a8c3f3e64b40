"""Coverage of the 95 % credible intervals of the Bayesian piecewise-exponential model.

Simulates ``--reps`` consortia (default 50; 3,000 patients in 11 centres each, the PADDY-like
generator of :mod:`bench.bench_bayes`, true tau 0.1), fits the one-stage model with nutpie
(compiled once and reused: the data are ``pm.Data``), and counts how often the 95 % interval
covers the true pooled marker HR (luminal A, 1.12), the luminal B interaction (1.60 / 1.12)
and the marker HR in luminal B (1.60). Target 90-99 %.

Run: ``.venv/bin/python -m bench.bayes_coverage [--reps 50]``. Appends to
``bench/results/bayes.md``.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import pandas as pd

from bench.bench_bayes import MARKER_HR, RESULTS, simulate_paddy_like, to_markdown


def main() -> None:
    from pooled.models.bayes import (
        BayesSpec,
        SamplerSpec,
        build_piecewise_model,
        compile_model,
        fit_bayes_survival,
    )

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--patients", type=int, default=3000)
    args = parser.parse_args()
    spec = BayesSpec(
        covariates=("node_positive", "grade3", "age_group"),
        categorical_reference=(("age_group", "lt50"),),
        n_intervals=10,
        sampling=SamplerSpec(draws=1000, tune=1000, chains=2, cores=2),
    )
    truth = {
        ("pooled", ""): MARKER_HR["luminal_a"],
        ("interaction", "luminal_b"): MARKER_HR["luminal_b"] / MARKER_HR["luminal_a"],
        ("subtype", "luminal_b"): MARKER_HR["luminal_b"],
    }
    start = time.perf_counter()
    compiled = compile_model(build_piecewise_model(simulate_paddy_like(args.patients, 11), spec))
    compile_s = time.perf_counter() - start
    records = []
    for rep in range(args.reps):
        data = simulate_paddy_like(args.patients, 11, seed=10_000 + rep)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = fit_bayes_survival(data, spec, seed=rep, compiled=compiled)
        for (quantity, level), value in truth.items():
            row = res.row(quantity, level)
            records.append(
                {
                    "rep": rep,
                    "quantity": f"{quantity} {level}".strip(),
                    "covered": bool(row["ci_lower"] <= value <= row["ci_upper"]),
                    "width": math.log(row["ci_upper"] / row["ci_lower"]),
                    "divergences": res.divergences,
                    "warned": bool(caught),
                }
            )
        print(f"rep {rep}: divergences {res.divergences}", flush=True)
    elapsed = time.perf_counter() - start
    frame = pd.DataFrame(records)
    summary = (
        frame.groupby("quantity", sort=False)
        .agg(
            reps=("rep", "nunique"),
            coverage=("covered", "mean"),
            mean_log_width=("width", "mean"),
            runs_with_divergences=("divergences", lambda d: int((d > 0).sum())),
            runs_warned=("warned", "sum"),
        )
        .reset_index()
    )
    mc_se = np.sqrt(0.95 * 0.05 / args.reps)
    table = to_markdown(summary)
    print(table)
    text = (
        "\n## Coverage of 95 % credible intervals\n\n"
        f"{args.reps} simulated consortia of {args.patients:,} patients in 11 centres (true tau "
        f"0.1), 2 chains x 1,000 + 1,000, one compiled model reused ({compile_s:.0f} s to "
        f"compile, {elapsed:.0f} s in all). Monte Carlo SE of a 95 % coverage over "
        f"{args.reps} runs: {mc_se:.3f}. Target 90-99 %.\n\n" + table
    )
    previous = RESULTS.read_text() if RESULTS.exists() else ""
    head = previous[: previous.index("\n## Coverage")] if "\n## Coverage" in previous else previous
    RESULTS.write_text(head + text)


if __name__ == "__main__":
    main()

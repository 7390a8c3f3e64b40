"""Recovery of a known count-response curve: coverage of the spline's pointwise 95 % CIs.

Draws ``--reps`` consortia of the ``ctc-count`` scenario (2,000 metastatic patients in 10
centres, Weibull baselines per centre, age and line of therapy; the log HR of death against
0 CTC a known concave curve of x = log1p(CTC per 7.5 ml)), fits the stratified Cox model with a
natural cubic spline of x (df 3, knots at quantiles of the non-zero counts) plus age and line
(:func:`pooled.simulate.recovery.count_curve_replicate`) and counts how often the pointwise 95 %
CI of the log HR against 0 CTC covers the true curve at 1, 2, 3, 5, 10, 20, 50 and 100 CTC per
7.5 ml. Target: >= 93 % of grid points over replicates. Variants (the same seeds): the
scenario's curve ``1.6 tanh(0.5 x)``; R reference's curve ``1.6 (1 - exp(-0.5 x))``
(``make_splines.R``), curved most at 0 where the natural spline has no curvature; R's knot
rule (quantiles of all counts); df 4; a control with a linear true curve and fixed knots,
where the model is exactly right.

    .venv/bin/python -m bench.bench_count_recovery            # 200 replicates per variant
    .venv/bin/python -m bench.bench_count_recovery --quick    # 40
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from pooled.simulate.recovery import RECOVERY_GRID, count_curve_replicate  # noqa: E402
from pooled.simulate.scenarios import CountMetastaticModel, get_scenario  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "count_recovery.md"
TARGET = 0.93


def variants() -> list[tuple[str, dict[str, object]]]:
    spec = get_scenario("ctc-count")
    model = spec.metastatic
    assert isinstance(model, CountMetastaticModel)

    def with_form(form: str) -> object:
        effect = replace(model.count_effect, form=form)
        return replace(spec, metastatic=replace(model, count_effect=effect))

    exponential = with_form("exponential")
    return [
        (f"scenario curve {model.count_effect.description}; df 3, knots at non-zero quantiles",
         {}),
        ("same, knots at quantiles of all counts (R's ns rule)", {"knots_at": "all"}),
        ("same, df 4", {"df": 4}),
        (f"R reference's curve {replace(model.count_effect, form='exponential').description}; "
         "df 3, non-zero quantiles", {"scenario": exponential}),
        (f"control: linear truth {replace(model.count_effect, form='linear').description} "
         "(inside the spline's span); df 3, knots fixed at 4 and 13 CTC",
         {"scenario": with_form("linear"), "knots": (4.0, 13.0)}),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="40 replicates")
    args = parser.parse_args()
    reps = 40 if args.quick else args.reps
    seeds = range(1, reps + 1)
    summary_rows = []
    per_count = {}
    for label, options in variants():
        start = time.perf_counter()
        rows = pd.concat([count_curve_replicate(s, **options) for s in seeds], ignore_index=True)
        seconds = time.perf_counter() - start
        by_count = rows.groupby("count").agg(
            true=("true_log_hr", "first"),
            coverage=("covered", "mean"),
            bias=("log_hr", "mean"),
            mean_se=("std_error", "mean"),
            sd=("log_hr", "std"),
        )
        by_count["bias"] -= by_count["true"]
        per_count[label] = by_count
        coverage = float(rows["covered"].mean())
        summary_rows.append((label, coverage, float(by_count["coverage"].min()), seconds))
        print(f"{label}: coverage {coverage:.4f} ({seconds:.0f} s)", flush=True)
    lines = [
        "## Recovery of the CTC count-response curve (`ctc-count`, spline CI coverage)",
        "",
        f"{reps} simulated consortia per variant (seeds 1-{reps}; 2,000 patients in 10 centres "
        "each, about 1,800 deaths), `python -m bench.bench_count_recovery`"
        + (" --quick" if args.quick else "")
        + ". The stratified Cox model with a natural cubic spline of log1p(CTC per 7.5 ml), age "
        "and line of therapy; pointwise 95 % CI of the log HR against 0 CTC at "
        + ", ".join(f"{c:g}" for c in RECOVERY_GRID)
        + f" CTC per 7.5 ml against the true curve. Target: >= {TARGET:.0%} of the grid points "
        "over replicates. The CI test (`tests/simulate/test_count_recovery.py`) runs 40 "
        "replicates of the first variant.",
        "",
        "| variant | coverage (all points) | lowest coverage at a count | seconds |",
        "|---|---|---|---|",
    ]
    for label, coverage, lowest, seconds in summary_rows:
        mark = "" if coverage >= TARGET else " (below target)"
        lines.append(f"| {label} | {coverage:.1%}{mark} | {lowest:.1%} | {seconds:.0f} |")
    for label, table in per_count.items():
        lines += [
            "",
            f"Per count, {label}:",
            "",
            "| CTC per 7.5 ml | true log HR | coverage | bias | mean SE | SD of estimates |",
            "|---|---|---|---|---|---|",
        ]
        for count, rec in table.iterrows():
            lines.append(
                f"| {count:g} | {rec['true']:.3f} | {rec['coverage']:.1%} | {rec['bias']:+.3f} | "
                f"{rec['mean_se']:.3f} | {rec['sd']:.3f} |"
            )
    lines += [
        "",
        "Reading: under the scenario's curve the intervals cover at the target; the SD of the "
        "estimates exceeds the mean model-based SE by about 10 % at 1-5 CTC (also with a "
        "linear true curve and fixed knots, where the model is exactly right: a small-sample "
        "effect of the spline's few patients between 0 and the first knot; see the control), so "
        "coverage there is about 92 %. R reference's curve bends most at 0 CTC, where a natural spline "
        "has no curvature (its boundary knot sits on the heap of zero counts): the spline "
        "underestimates the HR at 1-2 CTC and coverage there falls to about 85 %.",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Benchmark: Kaplan-Meier by group, stratified log-rank and reverse-KM median follow-up.

The data are those of ``bench.bench_cox`` (20 centres, whole-month times, heavy ties); the
group is its first binary covariate (the "marker"). Times ours against statsmodels
(``SurvfuncRight`` per group, ``survdiff`` with strata), lifelines (``KaplanMeierFitter``
per group, ``logrank_test``, which has no strata) and, when ``Rscript`` with the survival
package is on PATH, R's ``survfit`` / ``survdiff`` timed inside R. The stratified Cox fit of
the same data (11 coefficients, Efron) is timed in the same run for the issue's target
("KM and stratified log-rank at 1M each no slower than the Cox fit"). One BLAS thread.

    .venv/bin/python -m bench.bench_km            # 10k, 100k, 1M patients
    .venv/bin/python -m bench.bench_km --quick    # 10k and 100k only
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.bench_cox import simulate  # noqa: E402
from pooled.models.cox import cox_fit_arrays  # noqa: E402
from pooled.models.km import (  # noqa: E402
    KMSpec,
    fit_kaplan_meier,
    logrank_test,
    median_followup,
)

RESULTS = Path(__file__).parent / "results" / "km.md"
TIMES = (12.0, 24.0, 36.0, 60.0)


def timed(fn, repeat: int = 1):
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def make_frame(n: int) -> tuple[pd.DataFrame, tuple]:
    X, t, e, c = simulate(n)
    df = pd.DataFrame(
        {"time": t, "event": e.astype(int), "marker": X[:, 0].astype(int), "centre": c}
    )
    return df, (X, t, e, c)


def run_ours(df: pd.DataFrame, repeat: int) -> dict:
    spec = KMSpec(duration="time", event="event", group="marker", times=TIMES)
    km_s, km = timed(lambda: fit_kaplan_meier(df, spec), repeat)
    lr_s, lr = timed(
        lambda: logrank_test(df, "time", "event", "marker", strata=("centre",)), repeat
    )
    fu_s, fu = timed(lambda: median_followup(df, "time", "event"), repeat)
    return {
        "km_s": km_s,
        "logrank_s": lr_s,
        "followup_s": fu_s,
        "chisq": lr.chisq,
        "medians": km.summary["median"].tolist(),
        "followup": fu.median,
    }


def run_statsmodels(df: pd.DataFrame) -> dict:
    from statsmodels.duration.survfunc import SurvfuncRight, survdiff

    t = df["time"].to_numpy(float)
    e = df["event"].to_numpy(float)
    g = df["marker"].to_numpy()
    c = df["centre"].to_numpy()

    def km():
        return [SurvfuncRight(t[g == level], e[g == level]) for level in (0, 1)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km_s, fits = timed(km)
        lr_s, (chisq, _) = timed(lambda: survdiff(t, e, g, strata=c))
        fu_s, fu = timed(lambda: SurvfuncRight(t, 1.0 - e))
    return {
        "km_s": km_s,
        "logrank_s": lr_s,
        "followup_s": fu_s,
        "chisq": float(chisq),
        "medians": [float(f.quantile(0.5)) for f in fits],
        "followup": float(fu.quantile(0.5)),
    }


def run_lifelines(df: pd.DataFrame) -> dict:
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test as ll_logrank

    t = df["time"].to_numpy(float)
    e = df["event"].to_numpy(float)
    g = df["marker"].to_numpy()

    def km():
        return [KaplanMeierFitter().fit(t[g == level], e[g == level]) for level in (0, 1)]

    km_s, fits = timed(km)
    lr_s, lr = timed(lambda: ll_logrank(t[g == 0], t[g == 1], e[g == 0], e[g == 1]))
    fu_s, fu = timed(lambda: KaplanMeierFitter().fit(t, 1.0 - e))
    return {
        "km_s": km_s,
        "logrank_s": lr_s,
        "followup_s": fu_s,
        "chisq_unstratified": float(lr.test_statistic),
        "medians": [float(f.median_survival_time_) for f in fits],
        "followup": float(fu.median_survival_time_),
    }


def run_r(df: pd.DataFrame, workdir: Path) -> dict | None:
    if shutil.which("Rscript") is None:
        return None
    path = workdir / "km.csv"
    df.to_csv(path, index=False)
    script = workdir / "km.R"
    script.write_text(
        f"""
suppressMessages(library(survival))
d <- read.csv("{path}")
t1 <- system.time(f <- survfit(Surv(time, event) ~ marker, data = d,
                               conf.type = "log-log"))[["elapsed"]]
t1b <- system.time(q <- quantile(f, 0.5))[["elapsed"]]
t2 <- system.time(s <- survdiff(Surv(time, event) ~ marker + strata(centre),
                                data = d))[["elapsed"]]
t3 <- system.time({{r <- survfit(Surv(time, 1 - event) ~ 1, data = d);
                    rq <- quantile(r, 0.5)}})[["elapsed"]]
cat("km", t1 + t1b, "\\n"); cat("logrank", t2, "\\n"); cat("followup", t3, "\\n")
cat("chisq", format(s$chisq, digits = 17), "\\n")
cat("medians", q$quantile, "\\n"); cat("fu", rq$quantile, "\\n")
"""
    )
    proc = subprocess.run(["Rscript", str(script)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print("R failed:", proc.stderr[-2000:])
        return None
    out: dict = {}
    for line in proc.stdout.splitlines():
        key, *vals = line.split()
        out[key] = [float(v) for v in vals]
    return {
        "km_s": out["km"][0],
        "logrank_s": out["logrank"][0],
        "followup_s": out["followup"][0],
        "chisq": out["chisq"][0],
        "medians": out["medians"],
        "followup": out["fu"][0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k patients only")
    parser.add_argument("--no-cox", action="store_true", help="skip timing the Cox fit")
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            df, (X, t, e, c) = make_frame(n)
            repeat = 5 if n <= 10_000 else (3 if n <= 100_000 else 2)
            ours = run_ours(df, repeat)
            row: dict = {"n": n, "events": int(df["event"].sum())}
            row.update({f"ours_{k}": v for k, v in ours.items()})
            if not args.no_cox:
                row["cox_s"], _ = timed(partial(cox_fit_arrays, X, t, e, c, ties="efron"))
            for name, runner in (("statsmodels", run_statsmodels), ("lifelines", run_lifelines)):
                res = runner(df)
                row.update({f"{name}_{k}": v for k, v in res.items()})
            r = run_r(df, Path(tmp))
            if r is not None:
                row.update({f"r_{k}": v for k, v in r.items()})
            rows.append(row)
            print({k: v for k, v in row.items() if k.endswith("_s")}, flush=True)
    write_report(rows)


def _fmt(value, digits: int = 3) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and np.isnan(value))
        else (f"{value:.{digits}f}")
    )


def write_report(rows: list[dict]) -> None:
    lines = [
        "## Kaplan-Meier, stratified log-rank, median follow-up (20 centres, whole months)",
        "",
        "Seconds on one core (BLAS threads = 1), best of up to 5 runs (ours) / one run "
        "(others) of `python -m bench.bench_km`, on the data of `bench.bench_cox` (group = its "
        "first binary covariate). Ours times the DataFrame functions `fit_kaplan_meier` "
        "(curves, medians with CI, survival at 12/24/36/60 months, numbers at risk), "
        "`logrank_test(..., strata=('centre',))` and `median_followup`. statsmodels: "
        "`SurvfuncRight` per group, `survdiff(..., strata=centre)`, `SurvfuncRight` on the "
        "censoring indicator. lifelines: `KaplanMeierFitter` per group, `logrank_test` "
        "(unstratified: lifelines has no stratified log-rank). R: `survfit(conf.type = "
        '"log-log")` + `quantile`, `survdiff(... + strata(centre))`, reverse `survfit` + '
        "`quantile`, timed inside R (`system.time`). Cox: our stratified Efron fit of the "
        "same data (11 coefficients).",
        "",
        "| patients | events | task | ours (s) | statsmodels (s) | lifelines (s) | R (s) "
        "| Cox fit (s) | ours / Cox |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for task, label in (
            ("km", "KM by group"),
            ("logrank", "stratified log-rank"),
            ("followup", "median follow-up"),
        ):
            ours = row[f"ours_{task}_s"]
            cox = row.get("cox_s", np.nan)
            lines.append(
                f"| {row['n']:,} | {row['events']:,} | {label} | {_fmt(ours)} "
                f"| {_fmt(row.get(f'statsmodels_{task}_s'))} "
                f"| {_fmt(row.get(f'lifelines_{task}_s'))} | {_fmt(row.get(f'r_{task}_s'))} "
                f"| {_fmt(cox)} | {_fmt(ours / cox, 2)} |"
            )
    lines += ["", "Agreement (same data):", ""]
    for row in rows:
        parts = [f"log-rank chi-square ours {row['ours_chisq']:.10g}"]
        if "r_chisq" in row:
            parts.append(f"R {row['r_chisq']:.10g}")
        parts.append(f"statsmodels {row['statsmodels_chisq']:.10g}")
        parts.append(f"medians ours {row['ours_medians']}")
        if "r_medians" in row:
            parts.append(f"R {row['r_medians']}")
        parts.append(f"statsmodels {row['statsmodels_medians']}")
        parts.append(f"lifelines {row['lifelines_medians']}")
        fu = f"median follow-up ours {row['ours_followup']}"
        if "r_followup" in row:
            fu += f", R {row['r_followup']}"
        parts.append(fu)
        lines.append(f"- n = {row['n']:,}: " + "; ".join(parts))
    big = rows[-1]
    if big["n"] >= 1_000_000 and "cox_s" in big:
        lines += ["", "Targets (issue 4, 1,000,000 patients: each no slower than the Cox fit):", ""]
        for task, label in (
            ("km", "KM by group"),
            ("logrank", "stratified log-rank"),
            ("followup", "median follow-up"),
        ):
            ours = big[f"ours_{task}_s"]
            lines.append(
                f"- {label}: {ours:.3f} s vs Cox fit {big['cox_s']:.3f} s: "
                f"{'met' if ours <= big['cox_s'] else 'MISSED'}"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()

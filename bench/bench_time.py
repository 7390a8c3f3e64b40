"""Benchmark: time in the analysis. The counting-process Cox model at up to 1M intervals and the
Fine-Gray model against R in the same run, and the immortal-time bias simulation.

1. Counting-process Cox, ``Surv(tstart, tstop, event) ~ status + age + strata(centre)``, Efron
   and Breslow, on the rows of :func:`pooled.models.timesplit.add_time_dependent` (R's
   ``tmerge``) built from the ``ctc-clearance`` generative model: ours (``cox_fit_arrays``, and
   ``fit_cox`` from the DataFrame with Harrell's C) against R's ``coxph.fit`` / ``agreg.fit`` and
   ``coxph()`` timed inside R on the same rows (CPU seconds, one BLAS thread).
2. Fine-Gray: ours (``finegray_expand`` + the case-weighted Cox fit with robust SEs by patient)
   against R's ``finegray()`` + ``coxph(weights = fgwt, cluster = id)``.
3. The immortal-time simulation: over many cohorts of the ``ctc-clearance`` model, bias,
   empirical and model SE and 95% coverage of the baseline status, the naive "ever cleared"
   exposure, the time-dependent model and landmarks at 3 and 6 months.

    .venv/bin/python -m bench.bench_time            # 100k and 1M intervals, 500 cohorts
    .venv/bin/python -m bench.bench_time --quick    # 100k intervals, 100 cohorts
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
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pooled.models.competing import CompetingRisksSpec, finegray_expand, fit_fine_gray  # noqa: E402
from pooled.models.cox import CoxSpec, cox_fit_arrays, fit_cox  # noqa: E402
from pooled.models.landmark import LandmarkSpec, fit_landmark, fit_time_dependent  # noqa: E402
from pooled.models.timesplit import add_time_dependent  # noqa: E402
from pooled.simulate.clearance_model import simulate_clearance_cohort  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "time.md"
INTERVALS_PER_PATIENT = 3.7  # of the ctc-clearance model, about


def cpu(fn, repeat: int = 1):
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return best, out


def counting_rows(n_intervals: int, seed: int = 2026) -> tuple[pd.DataFrame, float]:
    patients, samples, _ = simulate_clearance_cohort(
        int(n_intervals / INTERVALS_PER_PATIENT), seed=seed, n_centres=20
    )
    seconds, rows = cpu(
        lambda: add_time_dependent(
            patients[["patient_id", "centre", "age", "os_months", "os_event"]],
            samples,
            id="patient_id",
            duration="os_months",
            event="os_event",
            sample_time="months",
            value="positive",
            name="status",
        )  # fmt: skip
    )
    return rows, seconds


def run_r(script: str, workdir: Path) -> dict[str, list[float]] | None:
    if shutil.which("Rscript") is None:
        return None
    path = workdir / "fit.R"
    path.write_text(script)
    proc = subprocess.run(["Rscript", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print("R failed:", proc.stderr[-2000:])
        return None
    out: dict[str, list[float]] = {}
    for line in proc.stdout.splitlines():
        key, *vals = line.split()
        out[key] = [float(v) for v in vals]
    return out


def write_columns(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    data = np.column_stack([frame[c].to_numpy(dtype=float) for c in columns])
    np.asfortranarray(data).T.tofile(path)


def counting_benchmark(n_intervals: int, workdir: Path) -> dict[str, float]:
    rows, build_s = counting_rows(n_intervals)
    rows["centre_code"] = pd.factorize(rows["centre"], sort=True)[0].astype(float)
    n = len(rows)
    X = rows[["status", "age"]].to_numpy(dtype=float)
    start, stop, event = (rows[c].to_numpy(dtype=float) for c in ("tstart", "tstop", "event"))
    strata = rows["centre_code"].to_numpy()
    out: dict[str, float] = {"intervals": n, "patients": rows["patient_id"].nunique(),
                             "events": int(event.sum()), "tmerge_s": build_s}  # fmt: skip
    coefs = {}
    for ties in ("efron", "breslow"):
        seconds, fit = cpu(
            lambda ties=ties: cox_fit_arrays(
                X, stop, event, strata, ties=ties, start=start, tol=1e-9
            ),  # fmt: skip
            repeat=2 if n <= 200_000 else 1,
        )
        out[f"ours_{ties}_s"] = seconds
        coefs[ties] = fit.coefficients
    spec = CoxSpec(start="tstart", duration="tstop", event="event", covariates=("status", "age"),
                   strata=("centre",), term_lr_tests=False, tol=1e-9)  # fmt: skip
    out["ours_fit_cox_s"], _ = cpu(lambda: fit_cox(rows, spec))
    binary = workdir / "rows.bin"
    write_columns(rows, ["tstart", "tstop", "event", "status", "age", "centre_code"], binary)
    r = run_r(
        f"""
suppressMessages(library(survival))
m <- matrix(readBin("{binary}", "double", n = {n * 6}), nrow = {n})
d <- data.frame(tstart = m[, 1], tstop = m[, 2], event = m[, 3], status = m[, 4], age = m[, 5],
                centre = m[, 6])
cpu <- function(t) t[["user.self"]] + t[["sys.self"]]
x <- as.matrix(d[, c("status", "age")]); y <- Surv(d$tstart, d$tstop, d$event)
for (ties in c("efron", "breslow")) {{
  t1 <- cpu(system.time(f1 <- agreg.fit(x, y, strata = as.integer(d$centre), offset = NULL,
    init = NULL, control = coxph.control(), weights = NULL, method = ties, rownames = NULL)))
  cat(paste0("fit_", ties), t1, "\\n"); cat(paste0("coef_", ties), format(f1$coefficients, digits = 17), "\\n")
}}
t2 <- cpu(system.time(coxph(Surv(tstart, tstop, event) ~ status + age + strata(centre), data = d)))
cat("coxph", t2, "\\n")
""",
        workdir,
    )
    if r is not None:
        for ties in ("efron", "breslow"):
            out[f"r_{ties}_s"] = r[f"fit_{ties}"][0]
            out[f"max_abs_diff_{ties}"] = float(np.max(np.abs(np.array(r[f"coef_{ties}"])
                                                              - coefs[ties])))  # fmt: skip
        out["r_coxph_s"] = r["coxph"][0]
    return out


def competing_cohort(n: int, seed: int = 7) -> pd.DataFrame:
    """make_competing.R's model (Weibull cause-specific hazards, whole months), n patients."""
    rng = np.random.default_rng(seed)
    centre = rng.integers(0, 8, n)
    effect = rng.normal(0, 0.25, 8)[centre]
    ctc = rng.binomial(1, 0.3, n)
    age = np.round(np.clip(rng.normal(60, 12, n), 28, 92), 1)
    t1 = 150 * (rng.exponential(size=n) / np.exp(effect + 0.7 * ctc + 0.01 * (age - 60))) ** (
        1 / 1.2
    )
    t2 = 260 * (rng.exponential(size=n) / np.exp(0.07 * (age - 60))) ** (1 / 1.3)
    tc = rng.uniform(12, 150, n)
    tmin = np.minimum(np.minimum(t1, t2), tc)
    status = np.where(tmin == t1, 1, np.where(tmin == t2, 2, 0))
    return pd.DataFrame({"centre": centre.astype(float), "patient_id": np.arange(n, dtype=float),
                         "ctc_positive": ctc.astype(float), "age": age,
                         "time_months": np.ceil(tmin), "status": status.astype(float)})  # fmt: skip


def fine_gray_benchmark(n: int, workdir: Path) -> dict[str, float]:
    data = competing_cohort(n)
    spec = CompetingRisksSpec(duration="time_months", status="status",
                              covariates=("ctc_positive", "age"), strata=("centre",),
                              tol=1e-9)  # fmt: skip
    seconds, fit = cpu(lambda: fit_fine_gray(data, spec))
    expand_s, expanded = cpu(
        lambda: finegray_expand(data, duration="time_months", status="status", strata=("centre",))
    )
    out: dict[str, float] = {"patients": n, "rows": fit.n_rows, "events": fit.events,
                             "ours_s": seconds, "ours_expand_s": expand_s}  # fmt: skip
    binary = workdir / "competing.bin"
    write_columns(data, ["centre", "patient_id", "ctc_positive", "age", "time_months", "status"],
                  binary)  # fmt: skip
    r = run_r(
        f"""
suppressMessages(library(survival))
m <- matrix(readBin("{binary}", "double", n = {n * 6}), nrow = {n})
d <- data.frame(centre = m[, 1], patient_id = m[, 2], ctc_positive = m[, 3], age = m[, 4],
                time_months = m[, 5], status = m[, 6])
d$fstatus <- factor(d$status, levels = 0:2, labels = c("censored", "bc", "other"))
cpu <- function(t) t[["user.self"]] + t[["sys.self"]]
t0 <- cpu(system.time(fg <- finegray(Surv(time_months, fstatus) ~ . + strata(centre), data = d,
                                     etype = "bc")))
t1 <- cpu(system.time(fit <- coxph(Surv(fgstart, fgstop, fgstatus) ~ ctc_positive + age +
  strata(centre), data = fg, weights = fgwt, cluster = patient_id)))
cat("finegray", t0, "\\n"); cat("coxph", t1, "\\n"); cat("rows", nrow(fg), "\\n")
cat("coef", format(coef(fit), digits = 17), "\\n"); cat("se", format(sqrt(diag(vcov(fit))), digits = 17), "\\n")
""",
        workdir,
    )
    if r is not None:
        out["r_finegray_s"] = r["finegray"][0]
        out["r_coxph_s"] = r["coxph"][0]
        out["r_rows"] = r["rows"][0]
        out["max_abs_diff_coef"] = float(np.max(np.abs(np.array(r["coef"]) - fit.coefficients)))
        out["max_rel_diff_se"] = float(np.max(np.abs(np.array(r["se"]) / fit.std_errors - 1)))
    assert len(expanded) == fit.n_rows
    return out


def _cox(**kw) -> CoxSpec:
    return CoxSpec(duration="os_months", event="os_event", term_lr_tests=False,
                   concordance=False, **kw)  # fmt: skip


def bias_simulation(reps: int, n: int = 1500) -> pd.DataFrame:
    spec = LandmarkSpec(cox=_cox(covariates=("positive", "age")), exposure="positive",
                        value="positive", times=(3.0, 6.0))  # fmt: skip
    rows = []
    truth = {}
    for seed in range(reps):
        patients, samples, truth = simulate_clearance_cohort(n, seed=100_000 + seed)
        lm = fit_landmark(patients, samples, spec)
        fits = {
            "baseline status": fit_cox(patients, _cox(covariates=("baseline_positive", "age"))),
            "naive: ever cleared (baseline positives)": fit_cox(
                patients[patients["baseline_positive"] == 1],
                _cox(covariates=("ever_cleared", "age")),
            ),
            "time-dependent status": fit_time_dependent(
                patients, samples, spec, ph_test=False
            ).fit,  # fmt: skip
            "landmark 3 months": lm.fit_at(3),
            "landmark 6 months": lm.fit_at(6),
        }
        for name, fit in fits.items():
            rows.append({"analysis": name, "estimate": fit.coefficients[0],
                         "std_error": fit.std_errors[0]})  # fmt: skip
    frame = pd.DataFrame(rows)
    out = []
    for name, part in frame.groupby("analysis", sort=False):
        target = truth["log_hr_cleared"] if name.startswith("naive") else truth["log_hr_status"]
        est, se = part["estimate"].to_numpy(), part["std_error"].to_numpy()
        out.append({
            "analysis": name, "truth": target, "mean": est.mean(), "bias": est.mean() - target,
            "mcse_bias": est.std(ddof=1) / np.sqrt(est.size), "empirical_se": est.std(ddof=1),
            "model_se": se.mean(), "coverage": np.mean(np.abs(est - target) <= 1.96 * se),
        })  # fmt: skip
    return pd.DataFrame(out)


def write_report(counting: pd.DataFrame, fine_gray: pd.DataFrame, bias: pd.DataFrame,
                 reps: int) -> None:  # fmt: skip
    lines = [
        "## Time in the analysis: counting-process Cox, Fine-Gray, immortal-time bias (`bench/bench_time.py`)",
        "",
        "Counting-process Cox `Surv(tstart, tstop, event) ~ status + age + strata(centre)` (20 "
        "centres; a CTC status carried forward from serial samples, the `ctc-clearance` model; "
        "times in days, so Efron and Breslow differ) on the `add_time_dependent` (tmerge) rows. "
        "Ours: `cox_fit_arrays` (CPU s) and `fit_cox` from the DataFrame (design, complete cases, "
        "Harrell's C); R: `agreg.fit` (what `coxph` calls) and `coxph()` (which adds the "
        "concordance), timed inside R in the same run on the same rows. Convergence 1e-9 (R's "
        "default) for both. One BLAS thread.",
        "",
        "| intervals | patients | events | tmerge (ours) s | ours Efron s | R agreg.fit Efron s | "
        "ratio | ours Breslow s | R Breslow s | ratio | ours fit_cox s | R coxph() s | max abs "
        "diff coef (Efron / Breslow) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rec in counting.to_dict("records"):
        lines.append(
            f"| {int(rec['intervals']):,} | {int(rec['patients']):,} | {int(rec['events']):,} | "
            f"{rec['tmerge_s']:.2f} | {rec['ours_efron_s']:.2f} | {rec.get('r_efron_s', np.nan):.2f} | "
            f"{rec.get('r_efron_s', np.nan) / rec['ours_efron_s']:.1f}x | "
            f"{rec['ours_breslow_s']:.2f} | {rec.get('r_breslow_s', np.nan):.2f} | "
            f"{rec.get('r_breslow_s', np.nan) / rec['ours_breslow_s']:.1f}x | "
            f"{rec['ours_fit_cox_s']:.2f} | {rec.get('r_coxph_s', np.nan):.2f} | "
            f"{rec.get('max_abs_diff_efron', np.nan):.1e} / {rec.get('max_abs_diff_breslow', np.nan):.1e} |"
        )
    lines += [
        "",
        "Fine-Gray with centre-specific censoring weights and `strata(centre)` (make_competing.R's "
        "model, whole months): ours (`fit_fine_gray`: `finegray_expand` + the case-weighted "
        "counting-process Cox fit, robust SEs by patient) against `finegray()` + `coxph(weights = "
        "fgwt, cluster = patient_id)`.",
        "",
        "| patients | weighted rows | events | ours total s (expansion s) | R finegray s | R coxph s "
        "| ratio (R total / ours) | max abs diff coef | max rel diff robust SE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rec in fine_gray.to_dict("records"):
        r_total = rec.get("r_finegray_s", np.nan) + rec.get("r_coxph_s", np.nan)
        lines.append(
            f"| {int(rec['patients']):,} | {int(rec['rows']):,} | {int(rec['events']):,} | "
            f"{rec['ours_s']:.2f} ({rec['ours_expand_s']:.2f}) | {rec.get('r_finegray_s', np.nan):.2f} | "
            f"{rec.get('r_coxph_s', np.nan):.2f} | {r_total / rec['ours_s']:.1f}x | "
            f"{rec.get('max_abs_diff_coef', np.nan):.1e} | {rec.get('max_rel_diff_se', np.nan):.1e} |"
        )
    lines += [
        "",
        f"Immortal-time bias: {reps} cohorts of 1,500 patients of the `ctc-clearance` model "
        "(status at baseline and on days 28, 56, 84; hazard by the current status, true log HR "
        '0.9; truth for "ever cleared" = -0.9, the effect of a negative status). Log HR: mean, '
        "bias (Monte Carlo SE), empirical and mean model SE, 95% CI coverage.",
        "",
        "| analysis | truth | mean | bias (MCSE) | empirical SE | model SE | coverage |",
        "|---|---|---|---|---|---|---|",
    ]
    for rec in bias.to_dict("records"):
        lines.append(
            f"| {rec['analysis']} | {rec['truth']:.2f} | {rec['mean']:.3f} | "
            f"{rec['bias']:+.3f} ({rec['mcse_bias']:.3f}) | {rec['empirical_se']:.3f} | "
            f"{rec['model_se']:.3f} | {rec['coverage']:.1%} |"
        )
    lines += [
        "",
        'The naive "ever cleared" exposure (a baseline-positive patient with a later negative '
        "sample, analysed from time zero) makes clearance look far more protective than it is "
        "(immortal time: the cleared had to survive to their follow-up sample) and its CIs "
        "almost never cover the truth; the baseline status alone is diluted because the status "
        "changes. The time-dependent model and the landmarks (after the last sample) are "
        "unbiased (|bias| within 2 MCSE of 0 or below 0.01), with coverage "
        + ", ".join(
            f"{rec['coverage']:.1%}"
            for rec in bias.to_dict("records")
            if rec["analysis"].startswith(("time-dependent", "landmark"))
        )
        + f" (Monte Carlo SE of a 95 % coverage about {np.sqrt(0.95 * 0.05 / reps):.1%}).",
    ]
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k intervals, 100 cohorts")
    args = parser.parse_args()
    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    reps = 100 if args.quick else 500
    with tempfile.TemporaryDirectory() as tmp:
        counting = []
        for n in sizes:
            counting.append(counting_benchmark(n, Path(tmp)))
            print(counting[-1], flush=True)
        fine_gray = []
        for n in [20_000] if args.quick else [20_000, 100_000]:
            fine_gray.append(fine_gray_benchmark(n, Path(tmp)))
            print(fine_gray[-1], flush=True)
    bias = bias_simulation(reps)
    print(bias, flush=True)
    write_report(pd.DataFrame(counting), pd.DataFrame(fine_gray), bias, reps)


if __name__ == "__main__":
    main()

"""Benchmark: the Bayesian one-stage model beside the mixed Cox model and two-stage REML.

The recovery part of :mod:`bench.bench_mixed_cox` (replicated consortia with a known mean
marker log hazard ratio and between-centre SD tau, ``recovery_frame(scenario, rep)``) with a
third method fitted to the same replicates: the one-stage Bayesian piecewise-exponential
model with random centre marker effects (``pooled.models.bayes.fit_bayes_survival``,
``BayesSpec(centre_effects="random")``, same covariates). Each replicate is one task on the
project's Dask engine (``pooled.distributed.engine``), which fits all three methods:

* the one-stage random-slope mixed Cox model (b), ``strata(centre) + (ctc_positive | centre)``
  (``fit_mixed_cox``);
* two-stage REML (``fit_two_stage``), retried at tol 1e-8 as in ``bench_mixed_cox``;
* the Bayesian model, compiled once per worker and scenario (``compile_model``) and reused
  for every replicate of that structure.

Each finished replicate is written to a parquet checkpoint
(``bench/out/mixed_cox_bayes/<scenario>/``), so an interrupted run resumes and a second
scenario can be added later without refitting the first. Results go to
``bench/results/mixed_cox_bayes.md``.

    .venv/bin/python -m bench.bench_mixed_cox_bayes     # heterogeneous, paddy_like: 200 reps
                                                        # each (about 35 min on 2 cores)
    .venv/bin/python -m bench.bench_mixed_cox_bayes --scenarios heterogeneous
    .venv/bin/python -m bench.bench_mixed_cox_bayes --quick   # 4 reps, report in bench/out/
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from bench.bench_mixed_cox import (  # noqa: E402
    COVARIATES,
    SCENARIOS,
    Scenario,
    _pi_coverage,
    _two_stage,
    recovery_frame,
    recovery_row,
    spec,
)

RESULTS = Path(__file__).parent / "results" / "mixed_cox_bayes.md"
CHECKPOINTS = Path(__file__).parent / "out" / "mixed_cox_bayes"
SEED = 2026
MARKER = "ctc_positive"
METHODS = (
    ("one", "one-stage (b)"),
    ("two", "two-stage REML"),
    ("bayes", "Bayesian one-stage"),
)


@dataclass(frozen=True)
class Sampling:
    """The Bayesian fit's sampler settings (and the model's number of intervals)."""

    draws: int = 1000
    tune: int = 500
    chains: int = 2
    n_intervals: int = 8

    def describe(self) -> str:
        return (
            f"nutpie, {self.chains} chains x ({self.tune} tuning + {self.draws} draws), "
            f"one core per fit, target_accept 0.9 (the default with >= 4 centres), "
            f"{self.n_intervals} intervals at event-time quantiles"
        )


def _scenario(name: str) -> Scenario:
    found = [sc for sc in SCENARIOS if sc.name == name]
    if not found:
        raise SystemExit(
            f"unknown scenario {name!r}; expected one of {[s.name for s in SCENARIOS]}"
        )
    return found[0]


def bayes_spec(sampling: Sampling) -> Any:
    """The Bayesian model of the replicates: random centre marker effects, same covariates."""
    from pooled.models.bayes import BayesSpec, SamplerSpec

    return BayesSpec(
        duration="time",
        event="event",
        marker=MARKER,
        centre="centre",
        subtype=None,
        covariates=tuple(c for c in COVARIATES if c != MARKER),
        interaction=False,
        centre_effects="random",
        n_intervals=sampling.n_intervals,
        sampling=SamplerSpec(
            draws=sampling.draws, tune=sampling.tune, chains=sampling.chains, cores=1
        ),
        thresholds=(),
        ci_level=0.95,
    )


def two_stage_spec() -> Any:
    """Two-stage REML as ``bench_mixed_cox.recovery`` fits it."""
    from pooled.models.cox import CoxSpec
    from pooled.models.meta import MetaSpec
    from pooled.models.two_stage import TwoStageSpec

    return TwoStageSpec(
        cox=CoxSpec(duration="time", event="event", covariates=COVARIATES),
        marker=MARKER,
        meta=MetaSpec(method="REML"),
    )


#: compiled Bayesian models of this process (a Dask worker), by model structure
_COMPILED: dict[Any, Any] = {}


def _compiled(frame: pd.DataFrame, bayes: Any) -> tuple[Any, float]:
    """The compiled model for ``frame``'s structure (spec and centres) and the seconds it
    took to compile here (0 when reused)."""
    from pooled.models.bayes import build_piecewise_model, compile_model

    key = (bayes, tuple(sorted(set(frame["centre"]))))
    if key in _COMPILED:
        return _COMPILED[key], 0.0
    start = time.perf_counter()
    _COMPILED[key] = compile_model(build_piecewise_model(frame, bayes))
    return _COMPILED[key], time.perf_counter() - start


def fit_replicate(name: str, rep: int, sampling: Sampling) -> pd.DataFrame:
    """A task: replicate ``rep`` of scenario ``name``, the three methods fitted; one row."""
    from pooled.distributed.engine import task_seed
    from pooled.errors import ConvergenceError, DataError, SamplingWarning
    from pooled.models.bayes import fit_bayes_survival
    from pooled.models.mixed_cox import fit_mixed_cox

    start = time.perf_counter()
    sc = _scenario(name)
    frame, new_centre = recovery_frame(sc, rep)
    row: dict[str, Any] = {
        "scenario": name,
        "rep": rep,
        "n": len(frame),
        "events": int(frame["event"].sum()),
        "new_centre_log_hr": new_centre,
    }
    z = float(stats.norm.ppf(0.975))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = fit_mixed_cox(frame, spec("b"))
        two, retried = _two_stage(frame, two_stage_spec())
    j = one.term_names.index(MARKER)
    comp = one.variance_components().iloc[0]
    lo1, hi1 = one.prediction_interval
    row.update(
        one_beta=one.coefficients[j],
        one_se=one.std_errors[j],
        one_lo=one.coefficients[j] - z * one.std_errors[j],
        one_hi=one.coefficients[j] + z * one.std_errors[j],
        one_tau=math.sqrt(one.tau2),
        one_boundary=bool(one.boundary),
        one_tau_lo=math.sqrt(comp.ci_lower) if np.isfinite(comp.ci_lower) else np.nan,
        one_tau_hi=math.sqrt(comp.ci_upper) if np.isfinite(comp.ci_upper) else np.nan,
        one_pi=_pi_coverage(lo1, hi1, sc.beta, sc.tau),
        two_retried=bool(retried),
        two_failed=two is None,
    )
    if two is not None:
        m = two.meta
        tau2_lo = max(m.tau2 - z * m.se_tau2, 0.0)
        row.update(
            two_beta=m.estimate,
            two_se=m.se,
            two_lo=m.estimate - z * m.se,
            two_hi=m.estimate + z * m.se,
            two_tau=math.sqrt(m.tau2),
            two_boundary=bool(m.tau2 <= 0.0),
            two_tau_lo=math.sqrt(tau2_lo),
            two_tau_hi=math.sqrt(m.tau2 + z * m.se_tau2),
            two_pi=_pi_coverage(m.pi_lower, m.pi_upper, sc.beta, sc.tau),
        )
    bayes = bayes_spec(sampling)
    compiled, compile_s = _compiled(frame, bayes)
    seed = int(task_seed(SEED, rep, stream=1 + SCENARIOS.index(sc)).generate_state(1)[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = fit_bayes_survival(frame, bayes, seed=seed, compiled=compiled)
        except (ConvergenceError, DataError, np.linalg.LinAlgError) as exc:
            res = None
            row["bayes_note"] = f"{type(exc).__name__}: {exc}"[:300]
    row["bayes_compile_s"] = compile_s
    row["bayes_failed"] = res is None
    if res is not None:
        pooled = res.row("pooled")
        tau = res.row("heterogeneity")
        new = res.row("predictive", "new_centre")
        tau_draws = np.asarray(res.idata["posterior"]["tau"].values, dtype=float)
        row.update(
            bayes_beta=float(pooled["estimate"]),
            bayes_se=float(pooled["std_error"]),
            bayes_lo=math.log(pooled["ci_lower"]),
            bayes_hi=math.log(pooled["ci_upper"]),
            bayes_tau=float(tau["estimate"]),
            bayes_tau_mean=float(tau_draws.mean()),
            bayes_boundary=False,
            bayes_tau_lo=float(tau["ci_lower"]),
            bayes_tau_hi=float(tau["ci_upper"]),
            bayes_pi=_pi_coverage(
                math.log(new["ci_lower"]), math.log(new["ci_upper"]), sc.beta, sc.tau
            ),
            bayes_divergences=int(res.divergences),
            bayes_max_r_hat=res.max_r_hat,
            bayes_min_ess=res.min_ess,
            bayes_r_hat_mu=float(pooled["r_hat"]),
            bayes_r_hat_tau=float(tau["r_hat"]),
            bayes_ess_mu=float(min(pooled["ess_bulk"], pooled["ess_tail"])),
            bayes_ess_tau=float(min(tau["ess_bulk"], tau["ess_tail"])),
            bayes_sampling_warning=any(issubclass(w.category, SamplingWarning) for w in caught),
            bayes_other_warnings="; ".join(
                dict.fromkeys(
                    f"{w.category.__name__}: {w.message}"[:150]
                    for w in caught
                    if not issubclass(w.category, SamplingWarning)
                )
            )[:300],
            bayes_sampler=res.sampler,
            bayes_fit_s=res.elapsed_seconds,
            bayes_note="; ".join(res.problems)[:300],
        )
    row["task_s"] = time.perf_counter() - start
    return pd.DataFrame([row])


# --------------------------------------------------------------------------------------------
# Running and summarising
# --------------------------------------------------------------------------------------------


def run_scenario(
    sc: Scenario, replicates: int, sampling: Sampling, execution: Any, task_function: Any
) -> tuple[pd.DataFrame, dict[str, Any]]:
    from pooled.distributed.checkpoint import TaskCheckpoint
    from pooled.distributed.engine import Task, run_tasks

    manifest = {
        "bench": "mixed_cox_bayes",
        "scenario": sc.name,
        "seed": SEED,
        "draws": sampling.draws,
        "tune": sampling.tune,
        "chains": sampling.chains,
        "n_intervals": sampling.n_intervals,
    }
    folder = CHECKPOINTS / f"{sc.name}-{sampling.chains}x{sampling.tune}+{sampling.draws}"
    store = TaskCheckpoint(folder, manifest)
    tasks = [
        Task(f"rep-{rep:04d}", task_function, (sc.name, rep, sampling)) for rep in range(replicates)
    ]
    start = time.perf_counter()
    done = [0]

    def progress(key: str, frame: pd.DataFrame) -> None:
        done[0] += 1
        if done[0] <= 4 or done[0] % 25 == 0:
            r = frame.iloc[0]
            print(
                f"  {sc.name} {key}: task {r['task_s']:.1f} s (compile {r['bayes_compile_s']:.1f} "
                f"s, sampling {r.get('bayes_fit_s', np.nan):.1f} s); {done[0]} done, "
                f"{time.perf_counter() - start:.0f} s elapsed",
                flush=True,
            )

    run = run_tasks(
        tasks,
        execution=execution,
        checkpoint=store,
        description=sc.name,
        on_result=progress,
    )
    wall = time.perf_counter() - start
    table = pd.concat(run.values(), ignore_index=True)
    timing_path = folder / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    if run.computed:
        timing[f"{len(run.reused)}+{len(run.computed)}"] = {
            "wall_s": wall,
            "computed": len(run.computed),
            "reused": len(run.reused),
            "workers": execution.workers,
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        timing_path.write_text(json.dumps(timing, indent=2) + "\n")
    return table, {"wall_s": wall, "computed": len(run.computed), "runs": timing}


def summarise(sc: Scenario, table: pd.DataFrame) -> list[dict[str, Any]]:
    """Per method, over the replicates every method could fit."""
    ok = table.loc[~table["two_failed"].astype(bool) & ~table["bayes_failed"].astype(bool)]
    out = []
    for method, label in METHODS:
        beta = ok[f"{method}_beta"].to_numpy(dtype=float)
        se = ok[f"{method}_se"].to_numpy(dtype=float)
        cover = ((ok[f"{method}_lo"] <= sc.beta) & (sc.beta <= ok[f"{method}_hi"])).to_numpy()
        tau = ok[f"{method}_tau"].to_numpy(dtype=float)
        lo = ok[f"{method}_tau_lo"].to_numpy(dtype=float)
        hi = np.nan_to_num(ok[f"{method}_tau_hi"].to_numpy(dtype=float), nan=-np.inf)
        tau_cover = (lo <= sc.tau) & (sc.tau <= hi)
        pi = ok[f"{method}_pi"].to_numpy(dtype=float)
        boundary = ok[f"{method}_boundary"].to_numpy()
        out.append(recovery_row(sc, label, beta, se, cover, tau, tau_cover, boundary, pi))
    return out


def paired_differences(table: pd.DataFrame) -> list[tuple[str, float, float]]:
    """Mean difference of two methods' marker estimates on the same replicates, and its MC SE
    (much smaller than the bias MC SEs, which include the replicate-to-replicate spread)."""
    ok = table.loc[~table["two_failed"].astype(bool) & ~table["bayes_failed"].astype(bool)]
    out = []
    for a, b in (("bayes", "one"), ("bayes", "two"), ("one", "two")):
        d = (ok[f"{a}_beta"] - ok[f"{b}_beta"]).to_numpy(dtype=float)
        out.append(
            (f"{dict(METHODS)[a]} - {dict(METHODS)[b]}", d.mean(), d.std(ddof=1) / np.sqrt(d.size))
        )
    return out


def diagnostics(sc: Scenario, table: pd.DataFrame) -> dict[str, Any]:
    fits = table.loc[~table["bayes_failed"].astype(bool)]
    return {
        "scenario": sc.name,
        "fits": len(fits),
        "failed": int(table["bayes_failed"].astype(bool).sum()),
        "divergent": int((fits["bayes_divergences"] > 0).sum()),
        "divergences": int(fits["bayes_divergences"].sum()),
        "rhat_high": int((fits["bayes_max_r_hat"] > 1.01).sum()),
        "rhat_mu_tau_high": int(
            ((fits["bayes_r_hat_mu"] > 1.01) | (fits["bayes_r_hat_tau"] > 1.01)).sum()
        ),
        "ess_low": int((fits["bayes_min_ess"] < 400).sum()),
        "ess_mu_tau_low": int(((fits["bayes_ess_mu"] < 400) | (fits["bayes_ess_tau"] < 400)).sum()),
        "warned": int(fits["bayes_sampling_warning"].astype(bool).sum()),
        "max_r_hat_median": float(fits["bayes_max_r_hat"].median()),
        "max_r_hat_max": float(fits["bayes_max_r_hat"].max()),
        "min_ess_median": float(fits["bayes_min_ess"].median()),
        "ess_tau_median": float(fits["bayes_ess_tau"].median()),
        "ess_tau_min": float(fits["bayes_ess_tau"].min()),
        "samplers": ", ".join(sorted(set(fits["bayes_sampler"].astype(str)))),
        "other_warnings": sorted(
            {w for w in fits["bayes_other_warnings"].astype(str) if w and w != "nan"}
        ),
        "fit_s": float(fits["bayes_fit_s"].mean()),
        "task_s": float(table["task_s"].mean()),
        "compile_s": table.loc[table["bayes_compile_s"] > 0, "bayes_compile_s"].tolist(),
        "tau_mean_posterior_mean": float(fits["bayes_tau_mean"].mean()),
        "paired": paired_differences(table),
        "two_retried": int(table["two_retried"].astype(bool).sum()),
        "two_failed": int(table["two_failed"].astype(bool).sum()),
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

#: notes on the recorded run (bench/results/mixed_cox_bayes.md, 200 replicates of each
#: scenario at the default settings); the figures quoted are that run's
NOTES: list[str] = [
    "Settings and budget. 2 chains x (500 tuning + 1,000 draws) per fit, one core per fit, "
    "two fits at a time: 200 replicates of `heterogeneous` took 13.5 min wall (target <= 40) "
    "and 200 of `paddy_like` 19.1 min (target <= 30), on a machine shared with other jobs "
    "(load average 4-9 during the runs), mean sampling time 6.5 s and 10.3 s per fit. "
    "Compiling the model (about 40-50 s) happens once per worker and scenario; every other "
    "replicate reuses the compiled model.",
    "Sampling diagnostics at these settings. No fit diverged. The reported quantities mixed "
    "well: R-hat of mu or tau above 1.01 in 5 / 200 (`heterogeneous`) and 2 / 200 "
    "(`paddy_like`) fits, never above 1.014, and ESS of mu or tau below 400 in 6 and 4 fits "
    "(lowest 270, for tau). The package's strict rule (every element of every sampled "
    "parameter at R-hat <= 1.01, ESS >= 400) is missed more often: 81 and 43 fits raised a "
    "`SamplingWarning`, most for R-hat 1.010-1.017 of one of the 160 (88) centre x "
    "interval baseline deviations (`baseline_deviation_z`), the largest of 120-200 R-hats "
    "from 2 chains of 1,000 draws. These are half the package default (4 x (500 + 1,000)), chosen "
    "for the time budget; the coverages do not depend on those nuisance parameters at this "
    "Monte Carlo precision, but single analyses should keep the default.",
    "Marker log HR. The Bayesian posterior median is unbiased in both scenarios, and its "
    "credible interval covers at 0.945 and 0.960. On the same replicates it is lower than the "
    "mixed Cox estimate by 0.013 (`heterogeneous`) and than two-stage REML by 0.021, "
    "differences pinned down far more precisely (MC SE < 0.001) than the biases; the two "
    "partial-likelihood estimators lean away from 0 (two-stage most, per-centre Cox fits of "
    "about 200 patients each), as the Recovery table of the mixed Cox benchmark shows over 500 "
    "replicates. In `paddy_like` the posterior sd (0.050) exceeds the empirical SE (0.045) by "
    "12 %: with 11 centres and tau 0.08 the data barely inform tau, the posterior keeps mass "
    "on larger tau (from the HalfNormal(0.5) prior), and mu's interval widens accordingly.",
    "tau. The Bayesian point estimate is the posterior median, which lies below the posterior "
    "mean for a right-skewed posterior: mean of the posterior medians 0.288 in "
    "`heterogeneous` (bias -0.012, 2.4 MC SE), of the posterior means 0.295. In `paddy_like` "
    "the prior pulls tau up (posterior median 0.089, mean 0.097, truth 0.08) and the "
    "credible interval of tau, which starts near 0 in every fit, covers at 0.975. The mixed "
    "Cox model's tau interval covers at 0.675 in `paddy_like` because 29.5 % of its fits sit "
    "on the boundary tau = 0, where it gives no interval (0.957 among the other fits); "
    "two-stage REML's Wald interval of tau^2, truncated at 0, always includes 0.0064.",
    "Prediction intervals. The frequentist PIs plug in the point estimate of tau with a "
    "normal quantile and fall short (0.90-0.92 with tau 0.3, 0.78-0.82 with tau 0.08, where "
    "tau is estimated as 0 in 14-30 % of the replicates). The Bayesian predictive interval "
    "integrates over tau and comes closest with 20 centres (0.937, 2.7 MC SE below 0.95): "
    "the averaged coverage is a concave function of the interval's width, so "
    "replicate-to-replicate variation of the width alone takes it below nominal even when "
    "the width is right on average, and tau is slightly underestimated. With 11 centres and "
    "tau 0.08 the prior's extra width makes it conservative (0.974).",
    "Departures flagged above at 2 MC SE: with 30 comparisons per run one or two are "
    "expected by chance alone.",
]


def _flags(rows: list[dict[str, Any]]) -> list[str]:
    """Departures from nominal (95 %) and from the truth by more than 2 Monte Carlo SEs."""
    out = []
    for r in rows:
        where = f"`{r['scenario']}`, {r['method']}"
        for name, value, mcse in (
            ("CI coverage", r["coverage"], r["coverage_mcse"]),
            ("tau interval coverage", r["tau_coverage"], r["tau_coverage_mcse"]),
            ("PI coverage", r["pi_coverage"], r["pi_coverage_mcse"]),
        ):
            # at 0 or 1 the binomial MC SE is 0: use that of 0.95 instead
            se = mcse if mcse > 0 else math.sqrt(0.95 * 0.05 / r["replicates"])
            if abs(value - 0.95) > 2 * se:
                out.append(f"{where}: {name} {value:.3f} (MC SE {mcse:.3f}), nominal 0.95")
        if abs(r["bias"]) > 2 * r["bias_mcse"]:
            out.append(f"{where}: marker log HR bias {r['bias']:+.4f} (MC SE {r['bias_mcse']:.4f})")
        if abs(r["tau_bias"]) > 2 * r["tau_bias_mcse"]:
            out.append(f"{where}: tau bias {r['tau_bias']:+.3f} (MC SE {r['tau_bias_mcse']:.3f})")
    return out


def write_report(
    scenarios: list[Scenario],
    summary: list[dict[str, Any]],
    diag: list[dict[str, Any]],
    timing: dict[str, dict[str, Any]],
    sampling: Sampling,
    workers: int,
    path: Path = RESULTS,
) -> None:
    lines = [
        "## Recovery: Bayesian one-stage model beside the mixed Cox model and two-stage REML",
        "",
        "`python -m bench.bench_mixed_cox_bayes`: the recovery scenarios of "
        "`bench/bench_mixed_cox.py` (`recovery_frame(scenario, rep)`, the same replicates "
        "0, 1, ... as its Recovery table), each replicate one task on the Dask engine "
        f"(`ExecutionSpec(workers={workers})`, one thread per worker) fitting three methods:",
        "",
        "- one-stage (b): `fit_mixed_cox`, `strata(centre) + (ctc_positive | centre)`, Wald CI;",
        "- two-stage REML: `fit_two_stage` (per-centre Cox, REML pooling, Wald CI);",
        '- Bayesian one-stage: `fit_bayes_survival` with `BayesSpec(centre_effects="random", '
        "subtype=None, interaction=False)`, the same covariates (age, node, grade 3), "
        "piecewise-exponential baseline with centre levels and centre x interval deviations, "
        "default priors (mu ~ N(0, 1), tau ~ HalfNormal(0.5), covariates N(0, 1)); "
        f"{sampling.describe()}; compiled once per worker and scenario and reused. Point "
        "estimates are posterior medians, the model SE the posterior sd, intervals "
        "equal-tailed 95 % credible intervals.",
        "",
        "Scenarios (marker prevalence 0.27, centre baselines SD 0.3, Weibull times, uniform "
        "censoring, whole months):",
        "",
        *[f"- `{sc.name}`: {sc.description}" for sc in scenarios],
        "",
        "Mean marker log HR: bias (Monte Carlo SE), empirical SE, mean model SE (posterior sd "
        "for Bayes), coverage of the 95 % CI / credible interval (MC SE). tau: mean point "
        "estimate (REML / Laplace ML / posterior median), bias (MC SE), share of fits with "
        "tau = 0, coverage of the true tau by the 95 % interval of tau (one-stage: Wald on the "
        "log scale of tau^2 from the Laplace log-likelihood's curvature, none when tau = 0; "
        "two-stage: tau^2 +- 1.96 SE truncated at 0; Bayes: credible interval of tau). PI: "
        "expected coverage of a new centre's true log HR by the 95 % prediction interval "
        "(Bayes: the predictive interval of `new_centre_log_hr`), exact given each interval, "
        "averaged over replicates. Every row of a scenario is over the same replicates.",
        "",
        "| scenario | method | reps | bias (MCSE) | emp SE | model SE | coverage (MCSE) "
        "| tau mean | tau bias (MCSE) | tau = 0 | tau CI coverage (MCSE) | PI coverage (MCSE) |",
        "|" + "---|" * 12,
    ]
    for r in summary:
        zero = "-" if r["method"].startswith("Bayes") else f"{r['tau_zero']:.2f}"
        lines.append(
            f"| {r['scenario']} | {r['method']} | {r['replicates']} | {r['bias']:+.4f} "
            f"({r['bias_mcse']:.4f}) | {r['emp_se']:.4f} | {r['model_se']:.4f} "
            f"| {r['coverage']:.3f} ({r['coverage_mcse']:.3f}) | {r['tau_mean']:.3f} "
            f"| {r['tau_bias']:+.3f} ({r['tau_bias_mcse']:.3f}) | {zero} "
            f"| {r['tau_coverage']:.3f} ({r['tau_coverage_mcse']:.3f}) "
            f"| {r['pi_coverage']:.3f} ({r['pi_coverage_mcse']:.3f}) |"
        )
    lines += [
        "",
        "Bayesian sampling diagnostics (R-hat and bulk / tail ESS over every sampled "
        "parameter, every element, and every reported quantity; `SamplingWarning` is raised "
        "for any divergence, R-hat > 1.01 or ESS < 400):",
        "",
        "| scenario | fits | with divergences (total) | max R-hat > 1.01 | R-hat of mu or tau "
        "> 1.01 | min ESS < 400 | ESS of mu or tau < 400 | SamplingWarning | max R-hat: median, "
        "worst | min ESS: median | tau ESS: median, worst | sampling s / fit | task s |",
        "|" + "---|" * 13,
    ]
    for d in diag:
        lines.append(
            f"| {d['scenario']} | {d['fits']} | {d['divergent']} ({d['divergences']}) "
            f"| {d['rhat_high']} | {d['rhat_mu_tau_high']} | {d['ess_low']} "
            f"| {d['ess_mu_tau_low']} | {d['warned']} "
            f"| {d['max_r_hat_median']:.4f}, {d['max_r_hat_max']:.4f} "
            f"| {d['min_ess_median']:.0f} | {d['ess_tau_median']:.0f}, {d['ess_tau_min']:.0f} "
            f"| {d['fit_s']:.1f} | {d['task_s']:.1f} |"
        )
    lines += ["", "Timing and runs:", ""]
    for d in diag:
        runs = timing.get(d["scenario"], {})
        parts = [
            f"{v['computed']} replicates computed in {v['wall_s'] / 60:.1f} min wall on "
            f"{v['workers']} workers ({v['finished']})"
            + (f", {v['reused']} read from the checkpoint" if v["reused"] else "")
            for v in runs.values()
        ]
        compile_s = d["compile_s"]
        lines.append(
            f"- `{d['scenario']}`: {'; '.join(parts) or 'all replicates read from the checkpoint'}"
            f". Compilation {', '.join(f'{s:.0f}' for s in compile_s)} s (once per worker "
            f"process; included in the first tasks). Sampler: {d['samplers']}."
            + (f" Bayesian fits that failed: {d['failed']}." if d["failed"] else "")
            + (
                f" Two-stage REML retried at tol 1e-8 in {d['two_retried']} replicate(s)."
                if d["two_retried"]
                else ""
            )
            + (
                f" Two-stage REML failed in {d['two_failed']} replicate(s) (left out of every row)."
                if d["two_failed"]
                else ""
            )
            + (
                f" Other warnings of the Bayesian fits: {'; '.join(d['other_warnings'])[:300]}."
                if d["other_warnings"]
                else ""
            )
        )
    lines += [
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs).",
    ]
    lines += [
        "",
        "Paired differences of the marker estimates on the same replicates (mean, MC SE):",
        "",
        *[
            f"- `{d['scenario']}`: "
            + "; ".join(f"{name} {mean:+.4f} ({mcse:.4f})" for name, mean, mcse in d["paired"])
            for d in diag
        ],
    ]
    flags = _flags(summary)
    lines += [
        "",
        "Departures beyond 2 Monte Carlo SEs (nominal 0.95 for coverages, 0 for bias):",
        "",
        *([f"- {f}" for f in flags] or ["- none"]),
    ]
    if NOTES:
        lines += ["", "Notes:", "", *[f"- {n}" for n in NOTES]]
    text = "\n".join(lines) + "\n"
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")


def main() -> None:
    # the task function by its importable name (run as __main__, it would be pickled by value
    # and every task would get a fresh compiled-model cache)
    from bench.bench_mixed_cox_bayes import Sampling as TaskSampling
    from bench.bench_mixed_cox_bayes import fit_replicate as task_function
    from pooled.distributed.engine import ExecutionSpec, engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="4 replicates per scenario, report in bench/out/"
    )
    parser.add_argument("--replicates", type=int, default=None, help="default 200")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=None,
        help="default: heterogeneous paddy_like",
    )
    parser.add_argument("--draws", type=int, default=Sampling.draws)
    parser.add_argument("--tune", type=int, default=Sampling.tune)
    parser.add_argument("--chains", type=int, default=Sampling.chains)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-report", action="store_true", help="run, do not write the report")
    args = parser.parse_args()
    replicates = args.replicates or (4 if args.quick else 200)
    names = args.scenarios or ["heterogeneous", "paddy_like"]
    scenarios = [_scenario(n) for n in names]
    sampling = TaskSampling(draws=args.draws, tune=args.tune, chains=args.chains)
    execution = ExecutionSpec(workers=args.workers)
    summary: list[dict[str, Any]] = []
    diag: list[dict[str, Any]] = []
    timing: dict[str, dict[str, Any]] = {}
    with engine(execution):
        for sc in scenarios:
            print(f"{sc.name}: {replicates} replicates, {sampling.describe()}", flush=True)
            table, info = run_scenario(sc, replicates, sampling, execution, task_function)
            print(f"{sc.name}: {info['computed']} computed in {info['wall_s']:.0f} s", flush=True)
            summary += summarise(sc, table)
            diag.append(diagnostics(sc, table))
            timing[sc.name] = info["runs"]
    if args.no_report:
        return
    # --quick: the report goes beside the checkpoints, not to bench/results/
    path = CHECKPOINTS / "quick.md" if args.quick else RESULTS
    write_report(scenarios, summary, diag, timing, sampling, args.workers, path)


if __name__ == "__main__":
    main()

"""A RunOutput built from real fits on the reference cohort, rendered once per session."""

from __future__ import annotations

import matplotlib
import pandas as pd
import pytest

from tests.plots import fitted

matplotlib.use("Agg")


def _characteristics(data: pd.DataFrame, by: str) -> pd.DataFrame:
    groups = [("all", data)] + [(f"{by} = {k}", g) for k, g in data.groupby(by, sort=True)]
    rows = [{"characteristic": "patients, n", **{n: f"{len(g)}" for n, g in groups}}]
    rows.append(
        {
            "characteristic": "age, median",
            **{n: f"{g['age'].median():.1f}" for n, g in groups},
        }
    )
    for level in sorted(data["subtype"].unique()):
        rows.append(
            {
                "characteristic": f"subtype = {level}, n (%)",
                **{
                    n: f"{int((g['subtype'] == level).sum())} "
                    f"({100 * (g['subtype'] == level).mean():.1f})"
                    for n, g in groups
                },
            }
        )
    return pd.DataFrame(rows)


def build_run(with_bayes=None):
    from pooled.dataset import ExclusionFlow
    from pooled.results import tidy_frame
    from pooled.run_output import ModelOutput, RunOutput
    from pooled.runner import InteractionOutput, SensitivityResult

    data = fitted.cohort()
    flow = ExclusionFlow.start(data["centre"]).add(
        data.loc[data["age"].isna(), "centre"], "missing_covariate", "age"
    )
    analysed = data.dropna(subset=["age"])
    interaction = InteractionOutput(
        fit=fitted.cox_interaction(),
        test=fitted.interaction_test(),
        within=fitted.within_levels(),
        marker=fitted.MARKER,
        by="subtype",
    )
    sensitivity_rows = []
    from pooled.models.cox import fit_cox

    for centre in ("C01", "C02"):
        frame = fit_cox(
            analysed[analysed["centre"] != centre], fitted.cox_spec(term_lr_tests=False)
        ).to_frame()
        row = frame.loc[frame["term"] == fitted.MARKER].iloc[0].to_dict()
        row.update(model=f"sensitivity: without {centre}")
        sensitivity_rows.append(row)
    selection = fitted.trajectories()
    outputs = [
        ModelOutput("followup_os", "followup", "os", fitted.followup(), "Median follow-up"),
        ModelOutput(
            "km_os",
            "km",
            "os",
            fitted.km(),
            "Kaplan-Meier, OS by ctc_positive",
            {"logrank": fitted.logrank()},
        ),
        ModelOutput("logrank_os", "logrank", "os", fitted.logrank(), "Stratified log-rank"),
        ModelOutput("cox_os_adjusted", "cox", "os", fitted.cox_adjusted(), "Cox, adjusted"),
        ModelOutput("zph_os", "zph", "os", fitted.zph(), "Proportional hazards"),
        ModelOutput("interaction_os_subtype", "interaction", "os", interaction, "By subtype"),
        ModelOutput("two_stage_os", "two_stage", "os", fitted.two_stage(), "Two-stage REML"),
        ModelOutput(
            "trajectory_selection",
            "trajectory",
            "",
            selection,
            "CTC trajectory groups",
            {"observed": fitted.observed_means(selection)},
        ),
        ModelOutput(
            "sensitivity_os",
            "sensitivity",
            "os",
            SensitivityResult(tidy_frame(sensitivity_rows)),
            "Leave one centre out",
        ),
    ]
    if with_bayes is not None:
        outputs.append(
            ModelOutput("bayes_meta_os", "bayes_meta", "os", with_bayes, "Bayesian two-stage")
        )
    return RunOutput(
        name="reference",
        config_text="name: reference\nseed: 2026\nendpoints: [os]\n",
        flow=flow,
        characteristics={
            "by_marker": _characteristics(analysed, fitted.MARKER),
            "by_centre": _characteristics(analysed, "centre"),
        },
        outputs=tuple(outputs),
        provenance={
            "config": "configs/analyses/reference.yaml",
            "config_sha256": "0f" * 32,
            "seed": 2026,
            "store": "store.duckdb",
            "upload_versions": {c: 1 + i % 2 for i, c in enumerate(sorted(flow.received))},
            "upload_sha256": {c: f"{i:064x}" for i, c in enumerate(sorted(flow.received))},
            "patients_analysed": int(len(analysed)),
            "packages": {"numpy": "2.x", "pandas": "2.x", "pooled-ipd": "0.1.0"},
        },
    )


def bayes_meta():
    """A small Bayesian two-stage fit of the per-centre log HRs (few draws: diagnostics warn)."""
    import warnings

    from pooled.models.bayes import BayesMetaSpec, SamplerSpec, fit_bayes_meta

    per_centre = fitted.two_stage().per_centre
    per_centre = per_centre[per_centre["included"]]
    spec = BayesMetaSpec(
        sampling=SamplerSpec(draws=300, tune=300, chains=2, cores=1, ess_min=100),
        term=fitted.MARKER,
        endpoint="os",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_bayes_meta(
            per_centre["log_hr"],
            per_centre["se"],
            [str(c) for c in per_centre["centre"]],
            spec,
            seed=11,
        )


@pytest.fixture(scope="session")
def run_output():
    return build_run(with_bayes=bayes_meta())


@pytest.fixture(scope="session")
def rendered(run_output, tmp_path_factory):
    from pooled.report import render_report

    folder = tmp_path_factory.mktemp("report")
    return render_report(run_output, folder)


# ---------------------------------------------------------------------------------------------
# the two-centre run (crossing hazards, a covariate constant in one centre, a field one
# centre does not collect, delivered durations), through the real parser and runner


@pytest.fixture(scope="session")
def two_centre():
    from tests.report.cohorts import two_centre_run

    return two_centre_run()


@pytest.fixture(scope="session")
def two_centre_rendered(two_centre, tmp_path_factory):
    from pooled.report import render_report

    return render_report(two_centre, tmp_path_factory.mktemp("two_centre"))


class CoxWithStatistics:
    """A Cox result as another developer extends it: the real fit plus Harrell's C (and its
    SE) and the likelihood-ratio df, delegating everything else to the fit."""

    concordance = 0.634
    concordance_se = 0.0123
    lr_df = 5

    def __init__(self, fit):
        self._fit = fit

    def __getattr__(self, name):
        return getattr(self._fit, name)

    def to_frame(self):
        return self._fit.to_frame().assign(concordance=self.concordance)

    def model_statistics(self):
        stats = dict(self._fit.model_statistics())
        stats.update(model_concordance=self.concordance, model_concordance_se=self.concordance_se)
        return stats


class TimeSplitResult:
    """Period-specific HRs of the exposure (the ``time_split`` output kind)."""

    def __init__(self, rows):
        self.rows = rows

    def to_frame(self):
        from pooled.results import tidy_frame

        return tidy_frame(self.rows)


TIME_SPLIT_ROWS = [
    {"term": "pr_positive", "model": "cox_time_split", "start": 0.0, "stop": 24.0,
     "hr": 0.31, "ci_lower": 0.21, "ci_upper": 0.46, "p_value": 1e-8, "n": 641, "events": 190},
    {"term": "pr_positive", "model": "cox_time_split", "start": 24.0, "stop": 60.0,
     "hr": 2.71, "ci_lower": 2.10, "ci_upper": 3.50, "p_value": 1e-12, "n": 520, "events": 300},
    {"term": "pr_positive", "model": "cox_time_split", "start": 60.0, "stop": float("inf"),
     "hr": 2.95, "ci_lower": 1.90, "ci_upper": 4.58, "p_value": 1e-6, "n": 210, "events": 96},
    {"term": "age", "model": "cox_time_split", "start": 0.0, "stop": float("inf"),
     "hr": 1.01, "ci_lower": 1.0, "ci_upper": 1.02, "p_value": 0.2, "n": 641, "events": 586},
]  # fmt: skip


@pytest.fixture(scope="session")
def augmented(two_centre):
    """The two-centre run with a Cox result carrying C and a time-split output for DFS."""
    from dataclasses import replace

    from pooled.run_output import ModelOutput

    outputs = []
    for out in two_centre.outputs:
        if out.name == "cox_dfs_adjusted":
            out = replace(out, result=CoxWithStatistics(out.result))
        outputs.append(out)
        if out.name == "zph_dfs":
            outputs.append(
                ModelOutput(
                    "time_split_dfs",
                    "time_split",  # type: ignore[arg-type]
                    "dfs",
                    TimeSplitResult(TIME_SPLIT_ROWS),
                    "Stratified Cox, DFS, HR by period",
                )
            )
    return replace(two_centre, outputs=tuple(outputs))


@pytest.fixture(scope="session")
def augmented_rendered(augmented, tmp_path_factory):
    from pooled.report import render_report

    return render_report(augmented, tmp_path_factory.mktemp("augmented"), formats=("png",))

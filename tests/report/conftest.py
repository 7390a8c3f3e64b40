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

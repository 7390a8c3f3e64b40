"""The Bayesian model converges at the shipped configs' settings, quietly, compiled once.

* Each shipped scenario's config (``paddy`` runs the model; ``epac`` and ``early-ctc`` get the
  ``models.bayes`` defaults, what ``bayes: true`` would run) on a small simulated consortium
  of that scenario, and the PADDY config on a two-centre cohort: R-hat <= 1.01, bulk and
  tail ESS >= 400 for every sampled parameter and every reported quantity, no divergence,
  no SamplingWarning.
* A second fit of the same structure does not compile again, and gives the draws a fresh
  compilation gives.
* A demo-sized fit and its plots emit no warning at all; a fresh interpreter importing the
  model, compiling PyTensor C code and importing ArviZ prints nothing (no PyTensor BLAS
  warning, no ArviZ FutureWarning).

The fits are the slow tests of the Bayesian model (one compilation per structure, four
structures); everything else shares them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.bayes_data import scenario_frame, scenario_spec, two_centre_frame
from pooled.errors import SamplingWarning
from pooled.models import bayes
from pooled.models._backend import _find_blas_ldflags

ROOT = Path(__file__).resolve().parents[2]
RHAT_MAX, ESS_MIN = 1.01, 400.0


def assert_converged(res: bayes.BayesResult) -> None:
    every = res.parameters
    assert set(every["parameter"]) >= {"tau", "fixed_effects_z", "log_baseline_shared"}
    assert res.divergences == 0
    assert every["r_hat"].max() <= RHAT_MAX, every.to_string()
    assert min(every["ess_bulk"].min(), every["ess_tail"].min()) >= ESS_MIN, every.to_string()
    table = res.to_frame()
    assert table["r_hat"].max() <= RHAT_MAX
    assert min(table["ess_bulk"].min(), table["ess_tail"].min()) >= ESS_MIN
    assert res.converged and res.problems == ()


@pytest.fixture(scope="module")
def compiles():
    """Counts the compilations of the module's fits (``compile_model`` calls)."""
    calls: list[str] = []
    original = bayes.compile_model

    def counting(model):
        calls.append(bayes.model_structure_key(model))
        return original(model)

    patch = pytest.MonkeyPatch()
    patch.setattr(bayes, "compile_model", counting)
    bayes.clear_compiled_models()
    yield calls
    patch.undo()


@pytest.fixture(scope="module")
def two_centre(compiles):
    """The PADDY config on two PADDY centres, 2,982 patients (R survival's rotterdam size)."""
    data = two_centre_frame(2982)
    spec = scenario_spec("paddy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = bayes.fit_bayes_survival(data, spec, seed=2026)
    return res, list(caught), len(compiles)


@pytest.mark.slow
def test_two_centre_cohort_converges(two_centre):
    res, caught, _ = two_centre
    assert res.n > 2800 and res.spec.sampling.draws == 1000 and res.spec.sampling.chains == 4
    assert list(res.idata.posterior["centre_log_hr"].coords["centre"].values) == [
        "munich",
        "tuebingen",
    ]
    assert not [w for w in caught if issubclass(w.category, SamplingWarning)]
    assert_converged(res)


@pytest.fixture(scope="module")
def second_fit(two_centre, compiles):
    """Another two-centre cohort (686 patients, R survival's gbsg size), same structure,
    fitted with its plots drawn while recording every warning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pooled.plots.bayes import posterior_plot, trace_plot

    data = two_centre_frame(686, seed=11)
    spec = scenario_spec("paddy")
    before = len(compiles)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = bayes.fit_bayes_survival(data, spec, seed=2026)
        posterior_plot(res).figure.savefig(Path(os.devnull), format="png")
        np.ravel(trace_plot(res))[0].figure.savefig(Path(os.devnull), format="png")
        plt.close("all")
    return res, data, spec, list(caught), len(compiles) - before


@pytest.mark.slow
def test_second_fit_of_a_structure_does_not_compile(two_centre, second_fit, compiles):
    _, _, compiled_before = two_centre
    res, data, spec, _, new_compiles = second_fit
    assert compiled_before == 1 and new_compiles == 0
    assert res.elapsed_seconds < 60
    # the reused compiled model samples exactly what a fresh compilation samples
    bayes.clear_compiled_models()
    fresh = bayes.fit_bayes_survival(data, spec, seed=2026)
    assert len(compiles) == 2
    np.testing.assert_array_equal(
        res.idata.posterior["mu"].values, fresh.idata.posterior["mu"].values
    )
    # the key tells structures apart: no subtype terms, other priors
    key = compiles[0]
    assert bayes.model_structure_key(bayes.build_piecewise_model(data, spec)) == key
    for changed in (replace(spec, subtype=None), replace(spec, priors=bayes.PriorSpec(tau_sd=1.0))):
        assert bayes.model_structure_key(bayes.build_piecewise_model(data, changed)) != key


@pytest.mark.slow
def test_demo_sized_fit_and_plots_emit_no_warning(second_fit):
    res, _, _, caught, _ = second_fit
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    assert_converged(res)


def test_fresh_interpreter_prints_nothing(tmp_path):
    """Import, build, compile PyTensor C code (which looks up the BLAS flags) and ArviZ
    diagnostics in a new process whose ArviZ has not warned today: no output on stderr."""
    script = textwrap.dedent(
        """
        import json, warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import numpy as np
            from bench.bayes_data import two_centre_frame, scenario_spec
            from pooled.models.bayes import build_piecewise_model
            from pooled.models._backend import az, pm
            model = build_piecewise_model(two_centre_frame(300), scenario_spec("paddy"))
            point = model.initial_point(random_seed=1)
            logp = model.compile_logp()(point)
            draws = np.random.default_rng(1).normal(size=(4, 100))
            az.rhat(draws), az.ess(draws)
            import pytensor
            flags = pytensor.config.blas__ldflags
        print(json.dumps({"warnings": [str(w.message) for w in caught], "logp": float(logp),
                          "flags": flags}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTENSOR_FLAGS"}
    env["XDG_CACHE_HOME"] = str(tmp_path)  # ArviZ's once-a-day stamp: not set yet
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = json.loads(done.stdout)
    assert out["warnings"] == [] and np.isfinite(out["logp"])
    assert (tmp_path / "arviz" / "daily_warning").exists()  # ArviZ did reach its warning


def test_blas_flags_found_without_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flags = _find_blas_ldflags(tmp_path)
    assert caught == []
    assert flags in ("", "-lopenblas", "-lblas")
    assert (tmp_path / "pooled_blas_ldflags.txt").read_text().strip() == flags
    assert _find_blas_ldflags(tmp_path) == flags  # cached


SMALL = {"paddy": 2000, "epac": 1944, "early-ctc": 1500}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SMALL))
def test_shipped_config_converges_on_a_small_consortium(scenario):
    data = scenario_frame(scenario, SMALL[scenario], seed=3)
    spec = scenario_spec(scenario)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = bayes.fit_bayes_survival(data, spec, seed=2026)
    assert not [w for w in caught if issubclass(w.category, SamplingWarning)]
    assert res.to_frame()["prior"].iloc[1] == res.tau_prior == "HalfNormal(0.5)"
    assert_converged(res)

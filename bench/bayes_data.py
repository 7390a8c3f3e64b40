"""Data sets and model specs for the Bayesian benchmark and convergence tests.

* :func:`scenario_frame`: a clean simulated consortium of one shipped scenario (the
  simulator's patients, before uploads and validation), as the analysis dataset the runner
  hands to the Bayesian model: the exposure column, categorical covariates as text, complete
  cases of the endpoint, marker, centre and covariates.
* :func:`config_bayes_spec`: the :class:`~pooled.models.bayes.BayesSpec` the runner builds
  from a shipped analysis config (``models.bayes``; a config without the section gets the
  section's defaults, i.e. what ``bayes: true`` would run).
* :func:`two_centre_frame`: a two-centre cohort (two PADDY centres), in the sizes of R
  survival's ``gbsg`` (686 patients) up to ``rotterdam`` (2,982).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "analyses"
SUBTYPE = "subtype"


def load_config(scenario: str) -> Any:
    from pooled.config import load_analysis_config

    return load_analysis_config(CONFIGS / f"{scenario}.yaml")


def bayes_endpoint(cfg: Any) -> str:
    """The first endpoint the config's Bayesian model runs on."""
    endpoints = cfg.models.bayes_endpoints or cfg.endpoints
    return str(endpoints[0])


def config_bayes_spec(cfg: Any, endpoint: str | None = None) -> Any:
    """The BayesSpec that ``pooled/runner.py`` (``_bayes_outputs``) builds from ``cfg``.

    Mirrors the runner line by line so the tests check what a shipped config runs; the
    sampler settings left out of the config are SamplerSpec's defaults there as here.
    """
    from pooled.models.bayes import BayesSpec, PriorSpec, SamplerSpec

    endpoint = endpoint or bayes_endpoint(cfg)
    covariates = tuple(c.name for c in cfg.covariates if c.name not in (cfg.exposure.name, SUBTYPE))
    has_subtype = any(c.name == SUBTYPE for c in cfg.covariates)
    interaction = cfg.models.bayes_interaction and any(SUBTYPE in pair for pair in cfg.interactions)
    priors = PriorSpec.vague() if cfg.models.bayes_prior == "vague" else PriorSpec()
    return BayesSpec(
        duration=f"{endpoint}_months",
        event=f"{endpoint}_event",
        marker=cfg.exposure.name,
        subtype=SUBTYPE if has_subtype else None,
        covariates=covariates,
        categorical_reference=tuple((c, r) for c, r in cfg.categorical if c != SUBTYPE),
        interaction=interaction and has_subtype,
        n_intervals=cfg.models.bayes_intervals,
        priors=priors,
        sampling=SamplerSpec(
            draws=cfg.models.bayes_draws, tune=cfg.models.bayes_tune, chains=cfg.models.bayes_chains
        ),
        thresholds=tuple(t for t in cfg.models.bayes_thresholds if t != 1.0) or (1.5,),
        analysis=cfg.name,
        endpoint=endpoint,
    )


def scenario_frame(
    scenario: str,
    n_patients: int | None = None,
    *,
    centres: int | None = None,
    seed: int = 2026,
    sizes: dict[str, int] | None = None,
) -> pd.DataFrame:
    """A simulated consortium of ``scenario`` as the Bayesian model's analysis dataset.

    ``n_patients`` scales the scenario (default: its own size), ``centres`` keeps the first
    (largest) centres only; ``sizes`` gives patients per centre name instead.
    """
    from pooled.simulate.cohort import simulate_patients
    from pooled.simulate.scenarios import get_scenario

    spec = get_scenario(scenario)
    chosen = list(spec.centres[:centres] if centres else spec.centres)
    if sizes is None:
        total = n_patients or spec.n_patients
        weights = np.array([c.weight for c in chosen], dtype=float)
        counts = np.floor(weights / weights.sum() * total).astype(int)
        counts[0] += total - counts.sum()
        sizes = {c.name: int(k) for c, k in zip(chosen, counts, strict=True)}
    rng = np.random.default_rng(seed)
    frames = [
        simulate_patients(spec, centre, sizes[centre.name], rng)
        for centre in chosen
        if sizes.get(centre.name, 0) > 0
    ]
    patients = pd.concat(frames, ignore_index=True)
    cfg = load_config(scenario)
    return analysis_frame(patients, cfg)


def analysis_frame(patients: pd.DataFrame, cfg: Any, endpoint: str | None = None) -> pd.DataFrame:
    """The columns the runner gives the Bayesian model, complete cases only."""
    spec = config_bayes_spec(cfg, endpoint)
    out = patients.copy()
    out[spec.marker] = out["marker_positive"].astype(float)
    for name, _ in cfg.categorical:
        if name in out and pd.api.types.is_numeric_dtype(out[name]):
            out[name] = out[name].map(lambda v: None if pd.isna(v) else f"{v:g}").astype(object)
    out[spec.event] = out[spec.event].astype(float)
    needed = [spec.duration, spec.event, spec.marker, "centre", *spec.covariates]
    if spec.subtype:
        needed.append(spec.subtype)
    return out.dropna(subset=needed)[needed].reset_index(drop=True)


def two_centre_frame(n_patients: int = 2982, *, seed: int = 7) -> pd.DataFrame:
    """Two PADDY centres (tuebingen, munich profiles) with ``n_patients`` split 55 / 45."""
    first = int(round(n_patients * 0.55))
    return scenario_frame(
        "paddy", sizes={"tuebingen": first, "munich": n_patients - first}, seed=seed
    )


def scenario_spec(scenario: str, **sampling: Any) -> Any:
    """The shipped config's BayesSpec for ``scenario``, sampler settings optionally changed."""
    spec = config_bayes_spec(load_config(scenario))
    return replace(spec, sampling=replace(spec.sampling, **sampling)) if sampling else spec

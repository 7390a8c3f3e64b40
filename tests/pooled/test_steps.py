"""A model family is one step module with its keys: a toy step registered in a test-only
registry is parsed, documented and run, and the real registry does not change.

Also the registry's own checks, the order the runner walks the steps in, a step the data
cannot support (skipped with its reason) and a step that needs it (left out).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pooled.config import (
    CONFIG_KEYS,
    assemble_keys,
    config_reference,
    parse_analysis_config,
)
from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.errors import ConfigError, DataError, PooledWarning
from pooled.results import tidy_frame
from pooled.run_output import ModelOutput
from pooled.runner import run_analysis
from pooled.steps.base import AnalysisContext, ModelSection, Registry, Step, endpoint_frame
from pooled.steps.registry import STEPS
from tests.pooled.helpers import dataset, small_cohort

TOY_KEYS = (
    ConfigKey(
        "models.toy", "model switch", "A toy model: the share of events, per endpoint.",
        "models: {toy: {level: 0.9}}", default=False,
    ),
    ConfigKey(
        "models.toy.level", "number", "The toy's level, reported as it was given.",
        "models: {toy: {level: 0.8}}", default=0.95,
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ToySection(ModelSection):
    level: float = 0.95


@dataclass(frozen=True, slots=True)
class ToyResult:
    endpoint: str
    n: int
    events: int
    level: float
    saw_cox: bool

    def to_frame(self) -> pd.DataFrame:
        return tidy_frame(
            [{"model": "toy", "endpoint": self.endpoint, "term": "event_share", "n": self.n,
              "events": self.events, "estimate": self.events / self.n}]
        )  # fmt: skip


def parse_toy(section: SectionReader) -> ToySection:
    level = section.get("level")
    if not 0 < level < 1:
        raise section.error(("level",), f"'level' must lie between 0 and 1; got {level:g}.")
    return ToySection(enabled=section.enabled, level=level)


def run_toy(
    cohort: AnalysisDataset, section: ToySection, ctx: AnalysisContext
) -> list[ModelOutput]:
    if ctx.endpoint == "dfs":
        raise DataError("the toy cannot use dfs")
    data = endpoint_frame(cohort.patients, ctx.endpoint)
    result = ToyResult(
        endpoint=ctx.endpoint,
        n=len(data),
        events=int(data[f"{ctx.endpoint}_event"].sum()),
        level=section.level,
        saw_cox=ctx.output(f"cox_{ctx.endpoint}_adjusted") is not None,
    )
    return [ModelOutput(f"toy_{ctx.endpoint}", "toy", ctx.endpoint, result, "Toy model")]  # type: ignore[arg-type]


def run_after_toy(
    cohort: AnalysisDataset, section: ToySection, ctx: AnalysisContext
) -> list[ModelOutput]:
    toy = ctx.output(f"toy_{ctx.endpoint}")
    assert toy is not None
    return [ModelOutput(f"after_toy_{ctx.endpoint}", "toy", ctx.endpoint, toy.result)]  # type: ignore[arg-type]


TOY = Step(name="toy", label="toy", run=run_toy, section="models.toy", keys=TOY_KEYS,
           parse=parse_toy)  # fmt: skip
AFTER_TOY = Step(name="after_toy", label="after toy", run=run_after_toy, uses="toy",
                 requires="toy")  # fmt: skip
TOY_STEPS = STEPS.with_step(TOY, after="cox").with_step(AFTER_TOY, after="toy")

CONFIG = {
    "name": "toy",
    "endpoints": ["os", "dfs"],
    "exposure": {"name": "ctc_positive", "marker": "ctc_count", "threshold": 1},
    "covariates": ["age"],
    "models": {"km": {}, "cox": {}, "toy": {"level": 0.9}},
}


def _text(**changes: Any) -> str:
    return yaml.safe_dump({**CONFIG, **changes}, sort_keys=False)


def test_a_registered_step_is_parsed_with_its_key() -> None:
    cfg = parse_analysis_config(_text(), path="toy.yaml", registry=TOY_STEPS)
    assert cfg.section("toy") == ToySection(enabled=True, level=0.9)
    assert cfg.models.toy.level == 0.9 and cfg.models.toy_level == 0.9 and cfg.models.toy
    assert {"models.toy", "models.toy.level"} <= cfg.keys_given
    assert cfg.registry is TOY_STEPS
    off = parse_analysis_config(_text(models={"cox": {}}), path="toy.yaml", registry=TOY_STEPS)
    assert off.section("toy") == ToySection(enabled=False, level=0.95) and not off.models.toy


def test_its_key_is_checked_with_the_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"toy.yaml line \d+: 'level' must be a number"):
        parse_analysis_config(
            _text(models={"toy": {"level": "high"}}), path="toy.yaml", registry=TOY_STEPS
        )
    with pytest.raises(ConfigError, match=r"toy.yaml line \d+: 'level' must lie between 0 and 1"):
        parse_analysis_config(
            _text(models={"toy": {"level": 2}}), path="toy.yaml", registry=TOY_STEPS
        )
    with pytest.raises(ConfigError, match="unknown key 'levl'; did you mean 'level'"):
        parse_analysis_config(
            _text(models={"toy": {"levl": 0.5}}), path="toy.yaml", registry=TOY_STEPS
        )


def test_a_registered_step_is_documented() -> None:
    text = config_reference(registry=TOY_STEPS)
    for key in TOY_KEYS:
        assert f"### `{key.path}`" in text and key.meaning in text
    for key in assemble_keys(TOY_STEPS):
        assert f"### `{key.path}`" in text, key.path
    models = text.index("## Models (`models`)")
    assert models < text.index("### `models.toy`") < text.index("### `models.two_stage`")


def test_the_real_registry_does_not_change() -> None:
    assert "toy" not in STEPS.names and "toy" in TOY_STEPS.names
    assert "models.toy" not in {k.path for k in CONFIG_KEYS}
    assert "models.toy" not in config_reference()
    with pytest.raises(ConfigError, match="unknown key 'toy'"):
        parse_analysis_config(_text(), path="toy.yaml")


@pytest.fixture(scope="module")
def toy_run() -> Any:
    cfg = parse_analysis_config(_text(), path="toy.yaml", registry=TOY_STEPS)
    with pytest.warns(PooledWarning, match="toy dfs skipped: the toy cannot use dfs"):
        return run_analysis(cfg, dataset(small_cohort()))


def test_a_registered_step_runs_in_its_place(toy_run: Any) -> None:
    names = [o.name for o in toy_run.outputs]
    assert names == [
        "followup_os",
        "km_os", "logrank_os", "cox_os_univariable", "cox_os_adjusted", "toy_os",
        "after_toy_os", "zph_os",
        "km_dfs", "logrank_dfs", "cox_dfs_univariable", "cox_dfs_adjusted", "zph_dfs",
    ]  # fmt: skip
    toy = toy_run.outputs[names.index("toy_os")].result
    assert toy.level == 0.9 and toy.saw_cox
    results = toy_run.results()
    row = results.loc[results["output"] == "toy_os"]
    assert row["estimate"].item() == pytest.approx(row["events"].item() / row["n"].item())


def test_a_step_the_data_cannot_support_is_skipped_and_what_needs_it_left_out(toy_run: Any) -> None:
    assert toy_run.provenance["skipped_models"] == [
        {"step": "toy dfs", "reason": "the toy cannot use dfs"}
    ]
    assert "after_toy_dfs" not in {o.name for o in toy_run.outputs}


def test_its_output_reaches_the_report(toy_run: Any, tmp_path: Path) -> None:
    from pooled.report.render import render_report

    html = render_report(toy_run, tmp_path).html.read_text(encoding="utf-8")
    assert "Toy model" in html and "toy dfs" in html


def test_the_default_steps_run_without_a_toy() -> None:
    cfg = parse_analysis_config(_text(models={"km": {}}), path="t.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PooledWarning)
        run = run_analysis(cfg, dataset(small_cohort()))
    assert [o.name for o in run.outputs] == [
        "followup_os", "km_os", "logrank_os", "km_dfs", "logrank_dfs"
    ]  # fmt: skip
    assert run.provenance["skipped_models"] == []


def _step(name: str, **fields: Any) -> Step:
    return Step(name=name, label=name, run=run_toy, **fields)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((_step("a"), _step("a")), "registered twice"),
        ((_step("a", uses="b"), _step("b")), "uses 'b', which is not an earlier step"),
        ((_step("a", requires="z"),), "requires 'z'"),
        ((_step("a", section="models.a", keys=TOY_KEYS, parse=parse_toy),), "first key"),
        ((_step("a", section="models.toy", keys=TOY_KEYS),), "no parse"),
        ((_step("a", section="models.a.b", keys=(), parse=parse_toy),), "top-level key or"),
        ((_step("a", default_on=True),), "'default_on' is for models only"),
        ((_step("a", scope="cohort"),), "'prepare' is for scope 'cohort' only"),
    ],
)
def test_the_registry_refuses_a_step_it_cannot_place(steps: tuple[Step, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Registry(steps)


def test_a_key_declared_twice_is_refused() -> None:
    twice = Step(name="cox2", label="x", run=run_toy, section="models.cox",
                 keys=STEPS.get("cox").keys, parse=parse_toy)  # fmt: skip
    with pytest.raises(ValueError, match="declared twice: models.cox"):
        assemble_keys(STEPS.with_step(twice, after="cox"))


def test_models_keep_their_flat_names() -> None:
    cfg = parse_analysis_config(
        _text(models={"cox": {"ties": ["breslow", "efron"], "robust": True},
                      "two_stage": {"method": ["DL", "REML"], "knha": True},
                      "bayes": {"draws": 10}}),
        path="t.yaml",
    )  # fmt: skip
    models = cfg.models
    assert models.ties == "breslow" and models.cox_ties == ("breslow", "efron") and models.robust
    assert models.meta_method == "DL" and models.meta_methods == ("DL", "REML") and models.knha
    assert models.two_stage_ties == "breslow"
    assert models.bayes and models.bayes_draws == 10 and models.bayes_chains == 4
    assert not models.km and models.km_times == (12.0, 24.0, 36.0, 60.0)
    assert cfg.section("cox") is models.cox
    with pytest.raises(AttributeError, match="cfg.models has no 'tie'"):
        _ = models.tie

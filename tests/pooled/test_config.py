"""Analysis configs: every mistake named with file and line before any model runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pooled.config import check_against_data, load_analysis_config, parse_analysis_config
from pooled.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
name: test
endpoints: [os]
exposure: {name: ctc_positive, marker: ctc_count, threshold: 5}
covariates:
  - age
  - {name: subtype, reference: luminal_a}
interactions:
  - [ctc_positive, subtype]
subgroups: [subtype]
models:
  cox: {ties: efron}
  two_stage: {method: REML}
"""


@pytest.mark.parametrize("name", ["paddy", "epac", "early-ctc", "trajectory"])
def test_shipped_configs_parse(name: str) -> None:
    cfg = load_analysis_config(ROOT / "configs" / "analyses" / f"{name}.yaml")
    assert cfg.name == name
    assert cfg.endpoints


def test_good_config_parses_to_frozen_objects() -> None:
    cfg = parse_analysis_config(GOOD, path="t.yaml")
    assert cfg.exposure.threshold == 5.0
    assert cfg.categorical == (("subtype", "luminal_a"),)
    assert cfg.interactions == (("ctc_positive", "subtype"),)
    assert cfg.models.meta_method == "REML" and cfg.models.cox and not cfg.models.bayes
    with pytest.raises(AttributeError):
        cfg.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("old", "new", "line", "fragment"),
    [
        (
            "subgroups: [subtype]",
            "subgroup: [subtype]",
            9,
            "unknown key 'subgroup'; did you mean 'subgroups'?",
        ),
        ("method: REML", "method: reml2", 12, "'method' must be one of FE, DL, REML"),
        ("  - age\n", "  - agee\n", 5, "unknown covariate 'agee': not a field of table"),
        ("  - age\n", "  - agee\n", 5, "in configs/schema.yaml, a derived column"),
        ("  - age\n", "  - agee\n", 5, "did you mean 'age'?"),
        ("endpoints: [os]", "endpoints: [overall]", 2, "must be one of os, bcss"),
        ("endpoints: [os]", "endpoints: [overall]", 2, "endpoints of configs/schema.yaml"),
        ("reference: luminal_a", "reference: luminal_c", 6, "must be one of luminal_a"),
        ("  - [ctc_positive, subtype]", "  - [ctc_positive, grade]", 8, "interaction term 'grade'"),
        ("ties: efron", "ties: exact", 11, "'ties' must be one of efron, breslow"),
        ("threshold: 5", "threshold: five", 3, "'threshold' must be a number"),
    ],
)
def test_config_errors_name_the_line(old: str, new: str, line: int, fragment: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse_analysis_config(GOOD.replace(old, new), path="t.yaml")
    message = str(info.value)
    assert message.startswith(f"t.yaml line {line}:"), message
    assert fragment in message, message


def test_malformed_yaml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="t.yaml line 3: not valid YAML"):
        parse_analysis_config("name: x\nendpoints: [os\n", path="t.yaml")


def test_missing_required_key() -> None:
    with pytest.raises(ConfigError, match="missing the required key 'exposure'"):
        parse_analysis_config("name: x\nendpoints: [os]\n", path="t.yaml")


def _patients() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "centre": ["A"] * 4 + ["B"] * 4,
            "age": [50.0, 60, 55, 70, 40, 45, 65, 58],
            "subtype": ["luminal_a", "luminal_a", "luminal_b", "luminal_b"] * 2,
            "ctc_positive": [0.0, 1, 0, 1, 0, 1, 0, 1],
            "os_months": [10.0, 20, 30, 40, 50, 60, 70, 80],
            "os_event": [1.0, 0, 1, 0, 1, 0, 1, 1],
        }
    )


def test_data_checks_pass_on_good_data() -> None:
    check_against_data(parse_analysis_config(GOOD, path="t.yaml"), _patients())


def test_subgroup_level_with_one_exposure_group_is_named() -> None:
    patients = _patients()
    patients.loc[patients["subtype"] == "luminal_b", "ctc_positive"] = 1.0
    with pytest.raises(ConfigError, match=r"t.yaml line 9: subgroup level\(s\) luminal_b"):
        check_against_data(parse_analysis_config(GOOD, path="t.yaml"), patients)


def test_reference_level_absent_from_data_is_named() -> None:
    patients = _patients()
    patients["subtype"] = patients["subtype"].replace("luminal_a", "her2_positive")
    with pytest.raises(
        ConfigError, match="reference level 'luminal_a' of 'subtype' has no patients"
    ):
        check_against_data(parse_analysis_config(GOOD, path="t.yaml"), patients)


def test_empty_cohort_is_named() -> None:
    with pytest.raises(ConfigError, match="the cohort has no patients"):
        check_against_data(parse_analysis_config(GOOD, path="t.yaml"), _patients().iloc[:0])

"""Cohort rules through the safe evaluator select the same cohorts as the pandas.eval rules did.

Both treat a rule that is missing for a patient as false: an ``include`` rule then excludes
the patient, an ``exclude`` rule keeps it (``age >= 18`` with unknown age is missing in the
evaluator and was False in pandas; ``and``/``or`` agree on these rules).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pooled.config import parse_analysis_config
from pooled.errors import ConfigError
from pooled.exposures import derive_exposure
from pooled.steps.cohort import apply_cohort_rules, cohort_rule, select_cohort
from tests.pooled.helpers import dataset, small_cohort

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "configs" / "analyses").glob("*.yaml"))
RULES = {
    "include": ["age >= 40", "tumour_size_mm <= 60 or positive_nodes > 2"],
    "exclude": ["grade == 3 and positive_nodes >= 4", "ctc_count > 6"],
}


def _old_rules(patients: pd.DataFrame, cfg) -> pd.DataFrame:
    """The cohort as the pandas.eval implementation selected it."""
    out = patients
    if cfg.cohort.setting is not None:
        out = out.loc[out["setting"] == cfg.cohort.setting]
    for rule in cfg.cohort.include:
        out = out.loc[pd.Series(out.eval(rule), index=out.index).fillna(False).astype(bool)]
    for rule in cfg.cohort.exclude:
        out = out.loc[~pd.Series(out.eval(rule), index=out.index).fillna(False).astype(bool)]
    return out


def _with_rules(path: Path) -> str:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["cohort"] = {**doc.get("cohort", {}), **RULES}
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
@pytest.mark.parametrize("rules", [False, True], ids=["as shipped", "with rules"])
def test_cohort_rules_select_the_same_patients_as_before(path: Path, rules: bool) -> None:
    text = _with_rules(path) if rules else path.read_text(encoding="utf-8")
    cfg = parse_analysis_config(text, path=str(path))
    patients = small_cohort(seed=3)
    assert patients[["age", "positive_nodes", "grade"]].isna().any().all()
    got = apply_cohort_rules(dataset(patients), cfg.cohort, cfg.where)
    expected = _old_rules(patients, cfg)
    assert got.patients["patient_id"].tolist() == expected["patient_id"].tolist()
    assert len(expected) < len(patients)
    got.flow.check(got.patients)
    if rules:
        assert (got.flow.steps["reason"] == "excluded by a cohort rule").sum() > 0


SERIAL_CONFIGS = ("trajectory", "ctc-clearance")  # their exposures need serial samples


@pytest.mark.parametrize(
    "path", [p for p in SHIPPED if p.stem not in SERIAL_CONFIGS], ids=lambda p: p.stem
)
def test_the_whole_cohort_selection_is_unchanged(path: Path) -> None:
    cfg = parse_analysis_config(_with_rules(path), path=str(path))
    patients = small_cohort(seed=5)
    cohort, _ = select_cohort(dataset(patients), cfg)
    old = _old_rules(patients, cfg).copy()
    old[cfg.exposure.name] = derive_exposure(old, cfg.exposure)
    primary = cfg.endpoints[0]
    old = old.loc[
        old[cfg.exposure.name].notna()
        & old[f"{primary}_months"].notna()
        & old[f"{primary}_event"].notna()
    ]
    assert cohort.patients["patient_id"].tolist() == old["patient_id"].tolist()
    np.testing.assert_array_equal(
        cohort.patients[cfg.exposure.name].to_numpy(dtype=float),
        old[cfg.exposure.name].to_numpy(dtype=float),
    )


def test_a_missing_rule_excludes_in_include_and_keeps_in_exclude() -> None:
    patients = pd.DataFrame({"age": [17.0, 40.0, np.nan]})
    assert cohort_rule(patients, "age >= 18").tolist() == [False, True, False]
    assert cohort_rule(patients, "age < 18").tolist() == [True, False, False]
    assert cohort_rule(patients, "isna(age) or age >= 18").tolist() == [False, True, True]


def test_a_rule_that_is_not_logical_is_named() -> None:
    with pytest.raises(ConfigError, match=r"t.yaml line 3: cohort rule 'age \* 2' must be true/false"):
        cohort_rule(pd.DataFrame({"age": [17.0, 40.0]}), "age * 2", where="t.yaml line 3")

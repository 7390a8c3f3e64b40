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


# --- the new keys: schema, any-field exposures, expressions, derived covariates, options ----

PGR = """\
name: pgr
schema: pgr_schema.yaml
endpoints: [os, dfs]
exposure: {name: pgr_positive, marker: pgr_fmol, threshold: 10}
covariates:
  - age
  - {name: node_positive, expr: "positive_nodes > 0"}
  - {name: grade3, expr: "grade == 3"}
strata: [centre]
subgroups: []
models:
  cox: {ties: [efron, breslow]}
  two_stage: {method: [REML, DL], knha: true}
"""


@pytest.fixture()
def pgr_folder(tmp_path: Path) -> Path:
    from tests.pooled.helpers import schema_with_pgr

    schema_with_pgr(tmp_path)
    return tmp_path


def _parse_in(folder: Path, text: str) -> object:
    path = folder / "pgr.yaml"
    path.write_text(text, encoding="utf-8")
    return load_analysis_config(path)


def test_config_with_its_own_schema_and_new_keys_parses(pgr_folder: Path) -> None:
    cfg = _parse_in(pgr_folder, PGR)
    assert cfg.schema_path == str(pgr_folder / "pgr_schema.yaml")
    assert cfg.exposure.marker == "pgr_fmol" and not cfg.exposure.per_7_5ml
    assert [c.name for c in cfg.derived_covariates] == ["node_positive", "grade3"]
    assert cfg.derived_covariates[0].expr == "positive_nodes > 0"
    assert cfg.models.cox_ties == ("efron", "breslow") and cfg.models.ties == "efron"
    assert cfg.models.meta_methods == ("REML", "DL") and cfg.models.meta_method == "REML"
    assert cfg.models.two_stage_ties == "efron" and cfg.models.knha


def test_a_schema_passed_by_the_caller_takes_precedence(pgr_folder: Path) -> None:
    from harmonization.schema import load_schema

    path = pgr_folder / "pgr.yaml"
    path.write_text(PGR, encoding="utf-8")
    with pytest.raises(ConfigError) as info:  # the default schema has no pgr_fmol
        load_analysis_config(path, schema=load_schema())
    assert "unknown marker 'pgr_fmol'" in str(info.value)
    assert "configs/schema.yaml" in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "line", "fragments"),
    [
        # the schema key
        ("schema: pgr_schema.yaml", "schema: nowhere.yaml", 2, ["cannot read the schema file", "nowhere.yaml"]),
        # any numeric field as the marker; the schema is named
        ("marker: pgr_fmol", "marker: pgr_fmoll", 4, ["unknown marker 'pgr_fmoll'", "{schema}", "did you mean 'pgr_fmol'?"]),
        ("marker: pgr_fmol", "marker: er_status", 4, ["marker 'er_status' is a category field", "{schema}", "kind: expression"]),
        ("threshold: 10}", "threshold: 10, per_7_5ml: true}", 4, ["'per_7_5ml' applies only to CTC counts", "'pgr_fmol'"]),
        ("marker: pgr_fmol, threshold: 10", "kind: expression", 4, ["an expression exposure needs 'expr'"]),
        ("marker: pgr_fmol, threshold: 10", "kind: expression, expr: 'pgr_fmol >= '", 4, ["expression 'pgr_fmol >='", "invalid syntax"]),
        ("marker: pgr_fmol, threshold: 10", "kind: expression, expr: 'pgr_fmoll >= 10'", 4, ["uses 'pgr_fmoll'", "{schema}", "did you mean 'pgr_fmol'?"]),
        ("marker: pgr_fmol, threshold: 10", "kind: expression, expr: 'pgr_fmol >= 10', threshold: 3", 4, ["'threshold' applies only"]),
        ("name: pgr_positive,", "name: age,", 4, ["the exposure's name 'age' is a field", "{schema}"]),
        # derived covariates
        ('{name: grade3, expr: "grade == 3"}', '{name: grade, expr: "grade == 3"}', 8, ["derived covariate 'grade' has the name of a field", "{schema}"]),
        ('{name: grade3, expr: "grade == 3"}', '{name: pgr_positive, expr: "grade == 3"}', 8, ["has the exposure's name"]),
        ('{name: grade3, expr: "grade == 3"}', '{name: grade3, expr: "grad == 3"}', 8, ["uses 'grad'", "{schema}", "did you mean 'grade'?"]),
        ('{name: grade3, expr: "grade == 3"}', '{name: grade3, expr: "grade === 3"}', 8, ["expression 'grade === 3'"]),
        ('{name: grade3, expr: "grade == 3"}', '{name: grade3, expr: "grade.real"}', 8, ["attribute access"]),
        ('{name: grade3, expr: "grade == 3"}', '{name: grade 3, expr: "grade == 3"}', 8, ["must be a column name"]),
        ('{name: grade3, expr: "grade == 3"}', '{name: grade3, exp: "grade == 3"}', 8, ["unknown key 'exp'", "did you mean 'expr'?"]),
        ('{name: grade3, expr: "grade == 3"}', '{name: grade3, expr: "grade == 3", categorical: false, reference: "1"}', 8, ["has a 'reference' but 'categorical: false'"]),
        ('{name: grade3, expr: "grade == 3"}', '{name: node_positive, expr: "grade == 3"}', 8, ["'node_positive' is listed twice"]),
        ("  - age\n", "  - agee\n", 6, ["unknown covariate 'agee'", "{schema}", "give it an 'expr'", "did you mean 'age'?"]),
        # strata and subgroups know derived covariates and name the schema otherwise
        ("strata: [centre]", "strata: [centre, grade_3]", 9, ["unknown stratum column 'grade_3'", "{schema}", "did you mean 'grade3'?"]),
        ("subgroups: []", "subgroups: [node_positiv]", 10, ["unknown subgroup column 'node_positiv'", "{schema}", "did you mean 'node_positive'?"]),
        # two-stage apart from one-stage, and lists of ties / methods
        ("ties: [efron, breslow]", "ties: [efron, exact]", 12, ["'ties' must be one of efron, breslow; got 'exact'"]),
        ("ties: [efron, breslow]", "ties: [efron, efron]", 12, ["names a value twice"]),
        ("ties: [efron, breslow]", "ties: []", 12, ["needs at least one of efron, breslow"]),
        ("method: [REML, DL]", "method: [REML, reml]", 13, ["'method' must be one of FE, DL, REML", "did you mean 'REML'?"]),
        ("knha: true}", "knha: true, ties: exact}", 13, ["'ties' must be one of efron, breslow"]),
        ("knha: true}", "knha: true, tie: breslow}", 13, ["unknown key 'tie'", "did you mean 'ties'?", "allowed keys here: method, knha, ties"]),
    ],
)
def test_new_keys_errors_name_file_line_and_schema(
    pgr_folder: Path, old: str, new: str, line: int, fragments: list[str]
) -> None:
    assert old in PGR
    with pytest.raises(ConfigError) as info:
        _parse_in(pgr_folder, PGR.replace(old, new, 1))
    message = str(info.value)
    assert message.startswith(f"{pgr_folder / 'pgr.yaml'} line {line}:"), message
    for fragment in fragments:
        fragment = fragment.replace("{schema}", f"in {pgr_folder / 'pgr_schema.yaml'}")
        assert fragment in message, message


@pytest.mark.parametrize(
    ("extra", "line", "fragments"),
    [
        ("cohort: {include: ['age >= 18', 'tumour_size_mm >> 2']}\n", 14, ["expression 'tumour_size_mm >> 2'"]),
        ("cohort: {exclude: ['tumour_sise_mm > 50']}\n", 14, ["cohort rule (exclude)", "did you mean 'tumour_size_mm'?"]),
        ("sensitivity: {thresholds: [2]}\n", 14, []),  # fine for a threshold exposure
    ],
)
def test_cohort_rules_are_compiled_when_the_config_is_read(
    pgr_folder: Path, extra: str, line: int, fragments: list[str]
) -> None:
    text = PGR + extra
    if not fragments:
        _parse_in(pgr_folder, text)
        return
    with pytest.raises(ConfigError) as info:
        _parse_in(pgr_folder, text)
    message = str(info.value)
    assert message.startswith(f"{pgr_folder / 'pgr.yaml'} line {line}:"), message
    for fragment in fragments:
        assert fragment in message, message


def test_thresholds_need_an_exposure_with_a_cut_off(pgr_folder: Path) -> None:
    text = PGR.replace(
        "marker: pgr_fmol, threshold: 10", "kind: expression, expr: 'pgr_fmol >= 10'"
    ) + "sensitivity:\n  thresholds: [2, 3]\n"
    with pytest.raises(ConfigError, match=r"line 15: 'thresholds' needs an exposure with a cut-off"):
        _parse_in(pgr_folder, text)


def test_two_stage_ties_default_to_the_first_cox_ties() -> None:
    cfg = parse_analysis_config(GOOD.replace("ties: efron", "ties: [breslow, efron]"), path="t.yaml")
    assert cfg.models.two_stage_ties == "breslow" and cfg.models.cox_ties == ("breslow", "efron")
    cfg = parse_analysis_config(
        GOOD.replace("method: REML}", "method: REML, ties: efron}").replace(
            "ties: efron}", "ties: breslow}", 1
        ),
        path="t.yaml",
    )
    assert cfg.models.ties == "breslow" and cfg.models.two_stage_ties == "efron"


def test_a_key_written_twice_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(GOOD + "name: other\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"twice.yaml line 13: key 'name' appears twice .*lines 1 and 13"):
        load_analysis_config(path)


def test_a_config_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.replace("test", "t\xe9st").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: is not UTF-8 text .*line 1"):
        load_analysis_config(path)


def test_derived_text_covariate_must_be_categorical() -> None:
    from pooled.config import CovariateSpec
    from pooled.exposures import derive_covariates

    patients = pd.DataFrame({"tumour_size_mm": [10.0, 30.0, None]})
    spec = CovariateSpec("size_group", expr="'large' if tumour_size_mm > 20 else 'small'")
    with pytest.raises(ConfigError, match="gives text .* declare it 'categorical: true'"):
        derive_covariates(patients, [spec], where=["t.yaml line 7"])
    categorical = CovariateSpec(
        "size_group", categorical=True, reference="small", expr=spec.expr
    )
    out = derive_covariates(patients, [categorical])
    assert out["size_group"].tolist() == ["small", "large", None]

"""The config language is declared once (``CONFIG_KEYS``): the parser and the generated
reference ``docs/config_reference.md`` cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harmonization.expressions import FUNCTIONS
from harmonization.schema import load_schema
from pooled.config import (
    CONFIG_KEYS,
    KEYS,
    REFERENCE_PATH,
    SECTIONS,
    VALUE_TYPES,
    config_reference,
    main,
    parse_analysis_config,
    section_keys,
)
from pooled.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
# parsed as if it were configs/analyses/example.yaml, so `schema: ../schema.yaml` resolves
CONFIG_PATH = str(ROOT / "configs" / "analyses" / "example.yaml")
BASE: dict[str, Any] = {
    "name": "example",
    "endpoints": ["os", "dfs"],
    "exposure": {"name": "ctc_positive", "marker": "ctc_count", "threshold": 1},
    "covariates": ["age", {"name": "subtype", "reference": "luminal_a"}],
}


def test_the_committed_reference_is_current() -> None:
    committed = REFERENCE_PATH.read_text(encoding="utf-8")
    assert REFERENCE_PATH == ROOT / "docs" / "config_reference.md"
    assert committed == config_reference(), (
        "docs/config_reference.md is out of date; run `python -m pooled.config`."
    )


def test_the_reference_says_it_is_generated_and_lists_every_key_and_function() -> None:
    text = config_reference()
    head = "\n".join(text.splitlines()[:6])
    assert "generated" in head.lower() and "python -m pooled.config" in head
    for key in CONFIG_KEYS:
        assert f"### `{key.path}`" in text, key.path
        assert key.meaning in text
    assert "## Expressions" in text
    for name, (signature, _) in FUNCTIONS.items():
        assert f"`{signature}`" in text, name
    assert "missing excludes the patient" in text and "keeps the patient" in text


def test_check_mode_reports_a_stale_reference(tmp_path: Path, capsys) -> None:
    stale = tmp_path / "reference.md"
    stale.write_text("old\n", encoding="utf-8")
    assert main(["--check", str(stale)]) == 1
    assert main([str(stale)]) == 0
    assert main(["--check", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == config_reference()


def test_every_key_is_declared_completely() -> None:
    for key in CONFIG_KEYS:
        assert key.type in VALUE_TYPES, key.path
        assert key.meaning.strip() and key.example.strip(), key.path
        assert key.leaf in key.example, f"the example of {key.path} does not use the key"
        assert not (key.allowed and key.allowed_from), key.path
        if key.type == "choice" or key.type.endswith("choices"):
            assert key.allowed or key.allowed_from, key.path
        assert key.section in SECTIONS, key.path
    assert len(KEYS) == len(CONFIG_KEYS), "a key path is declared twice"


def _with_example(example: str) -> str:
    doc = dict(BASE)
    doc.update(yaml.safe_load(example))
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.mark.parametrize("key", CONFIG_KEYS, ids=lambda k: k.path)
def test_every_documented_key_is_accepted_with_its_example(key) -> None:
    cfg = parse_analysis_config(_with_example(key.example), path=CONFIG_PATH)
    assert key.path in cfg.keys_given


def test_the_parser_reads_every_documented_key() -> None:
    read: set[str] = set()
    for key in CONFIG_KEYS:
        read |= parse_analysis_config(_with_example(key.example), path=CONFIG_PATH).keys_given
    assert read == set(KEYS)


def _insert(doc: dict[str, Any], section: str, key: str) -> dict[str, Any]:
    """``doc`` with ``key: 1`` added to the mapping at ``section``."""
    doc = yaml.safe_load(yaml.safe_dump(doc))
    if section == "":
        doc[key] = 1
    elif section == "covariates[]":
        doc["covariates"][1][key] = 1
    elif section == "endpoints{}":
        doc["endpoints"] = {"os": {key: 1}}
    elif section.startswith("models."):
        doc.setdefault("models", {})[section.split(".")[1]] = {key: 1}
    elif "." in section:  # a section inside a top-level one (execution.bootstrap)
        outer, inner = section.split(".", 1)
        doc.setdefault(outer, {}).setdefault(inner, {})[key] = 1
    else:
        doc.setdefault(section, {})
        if section == "exposure":
            doc["exposure"] = dict(BASE["exposure"])
        doc[section][key] = 1
    return doc


@pytest.mark.parametrize("section", SECTIONS)
def test_every_key_the_parser_accepts_is_documented(section: str) -> None:
    """In every mapping of the config, the parser accepts exactly the documented keys."""
    documented = section_keys(section)
    assert documented
    with pytest.raises(ConfigError) as info:
        parse_analysis_config(yaml.safe_dump(_insert(BASE, section, "zz_unknown")), path="t.yaml")
    message = str(info.value)
    assert "unknown key 'zz_unknown'" in message, message
    assert message.rstrip(".").endswith(f"allowed keys here: {', '.join(documented)}"), message


@pytest.mark.parametrize(
    "key",
    [k for k in CONFIG_KEYS if k.default is not None and not k.required and not k.default_text
     and k.type not in ("section", "model switch")],
    ids=lambda k: k.path,
)  # fmt: skip
def test_a_default_is_what_the_parser_makes_of_it_written_out(key) -> None:
    """The default the parser returns for an absent key equals its parse when written out."""
    from pooled.config import Located, ParseContext, yaml_value

    ctx = ParseContext(Located("t.yaml", {}), load_schema())
    written = yaml.safe_load(f"value: {yaml_value(key.default)}")["value"]
    assert VALUE_TYPES[key.type].check(written, key, ctx, (key.leaf,)) == key.default


def test_data_defaults_are_every_centre_at_its_latest_version() -> None:
    cfg = parse_analysis_config(yaml.safe_dump(BASE), path="t.yaml")
    assert cfg.data.centres == () and cfg.data.versions == ()
    cfg = parse_analysis_config(
        yaml.safe_dump({**BASE, "data": {"centres": "all", "versions": "latest"}}), path="t.yaml"
    )
    assert cfg.data.centres == () and cfg.data.versions == ()

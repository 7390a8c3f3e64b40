"""Exposures that need more than one row per patient at one centre are refused when the
request is built, with the reason, before any centre is asked (not as an error from each
centre)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pooled.config import load_analysis_config
from pooled.errors import ConfigError
from pooled.federated.request import request_from_config

ANALYSES = Path(__file__).resolve().parents[2] / "configs" / "analyses"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("neoadjuvant-ctc.yaml", "'count_categories' places its categories and spline knots"),
        ("ctc-count.yaml", "'continuous' places its categories and spline knots"),
        ("ctc-clearance.yaml", "'time_dependent' needs each patient's serial samples"),
        ("trajectory.yaml", "derived from serial samples modelled across centres"),
    ],
)
def test_exposures_the_federated_model_cannot_take_are_refused(config: str, message: str) -> None:
    cfg = load_analysis_config(ANALYSES / config)
    with pytest.raises(ConfigError, match=message):
        request_from_config(cfg)


def test_a_threshold_exposure_is_accepted() -> None:
    request = request_from_config(load_analysis_config(ANALYSES / "paddy.yaml"))
    assert request.exposure_spec.kind == "threshold"

"""Simulated consortia with known truth (``pooled simulate``).

:func:`simulate_consortium` writes one upload per centre in its own format, the centre
mappings, ``truth.json`` (true parameters, estimands and every planted error) and the clean
harmonised truth table. Scenarios: ``paddy``, ``epac``, ``early-ctc``, ``trajectory``
(``docs/scenarios.md``).
"""

from pooled.simulate.consortium import simulate_consortium
from pooled.simulate.scenarios import SCENARIOS, ScenarioSpec, get_scenario
from pooled.simulate.truth import scenario_estimands
from pooled.simulate.writers import SimulationResult

__all__ = [
    "SCENARIOS",
    "ScenarioSpec",
    "SimulationResult",
    "get_scenario",
    "scenario_estimands",
    "simulate_consortium",
]

"""The analysis steps, in order: :data:`STEPS`.

The order is the report's: the follow-up, the cohort (with the serial exposures' outputs),
then per endpoint Kaplan-Meier, Cox, the PH test, the time-split Cox model, the
time-dependent Cox model, the landmark models and their comparison with the baseline model,
the competing risks, the interactions, two-stage, the random-effects Cox model, the count as a
continuous marker, the marker's added value and the model's validity across centres, Bayes and
the sensitivity analyses, then the exposure comparison and the bootstrap by centre (section
``execution``, which also says where the sensitivity analyses' refits run). The cohort step
prepares the cohort before
any other step runs. The config is parsed with the same registry (each step's section in this
order) and ``docs/config_reference.md`` is generated from it. To add a step, see
``pooled/steps/README.md``.
"""

from __future__ import annotations

from pooled.steps.added_value import ADDED_VALUE
from pooled.steps.base import Registry
from pooled.steps.bayes import BAYES
from pooled.steps.bootstrap import EXECUTION
from pooled.steps.cohort import COHORT
from pooled.steps.competing import COMPETING
from pooled.steps.count_response import COUNT_RESPONSE
from pooled.steps.cox import COX, INTERACTIONS, TIME_SPLIT
from pooled.steps.descriptives import FOLLOWUP
from pooled.steps.km import KM
from pooled.steps.landmark import LANDMARK
from pooled.steps.mixed_cox import MIXED_COX
from pooled.steps.sensitivity import SENSITIVITY
from pooled.steps.serial import COMPARISON, TRAJECTORY
from pooled.steps.time_dependent import EXPOSURE_TIMING, TIME_DEPENDENT
from pooled.steps.two_stage import TWO_STAGE
from pooled.steps.validity import VALIDITY
from pooled.steps.zph import ZPH

STEPS = Registry(
    (
        FOLLOWUP,
        COHORT,
        KM,
        COX,
        ZPH,
        TIME_SPLIT,
        TIME_DEPENDENT,
        LANDMARK,
        EXPOSURE_TIMING,
        COMPETING,
        INTERACTIONS,
        TWO_STAGE,
        MIXED_COX,
        COUNT_RESPONSE,
        ADDED_VALUE,
        VALIDITY,
        BAYES,
        TRAJECTORY,
        SENSITIVITY,
        COMPARISON,
        EXECUTION,
    )
)

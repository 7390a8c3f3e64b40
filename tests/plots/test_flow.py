"""The exclusion flow diagram shows the flow's own counts."""

from __future__ import annotations

from pooled.dataset import ExclusionFlow
from pooled.plots.flow import BOX_GID, flow_diagram
from tests.plots import fitted


def test_boxes_show_received_excluded_and_analysed():
    data = fitted.cohort()
    flow = ExclusionFlow.start(data["centre"]).add(
        data.loc[data["age"].isna(), "centre"], "missing_covariate", "age"
    )
    ax = flow_diagram(flow)
    boxes = [t.get_text() for t in ax.texts if t.get_gid() == BOX_GID]
    assert boxes[0] == f"Received\nn = {len(data):,} (8 centres)"
    assert f"Excluded: missing_covariate (age)\nn = {int(data['age'].isna().sum()):,}" in boxes
    assert boxes[-1] == f"Analysed\nn = {int(flow.analysed().sum()):,}"

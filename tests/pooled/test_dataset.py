"""The analysis dataset accounts for every patient row and every serial sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harmonization.mapping import CentreMapping
from harmonization.schema import Reason
from harmonization.store import Store
from harmonization.upload import check_upload
from pooled.dataset import build_analysis_dataset
from pooled.simulate import simulate_consortium


def test_samples_are_accounted_for(tmp_path: Path) -> None:
    sim = simulate_consortium("trajectory", seed=3, out_dir=tmp_path / "c", n_patients=160)
    received = 0
    with Store(tmp_path / "pooled.db") as store:
        for centre, mapping in sim.mappings.items():
            checked = check_upload(sim.uploads[centre], CentreMapping.from_yaml(mapping))
            received += sum(len(t.data) for t in checked.tables if t.table == "samples")
            store.ingest(list(checked.tables), checked.report)
        ds = build_analysis_dataset(store)
    assert ds.sample_flow is not None
    assert sum(ds.sample_flow.received.values()) == received
    ds.sample_flow.check(ds.samples)  # analysed samples per centre == rows kept
    # blocked patients take their samples with them, counted in the sample flow
    blocked = ds.flow.steps["n"].sum()
    assert blocked > 0
    steps = ds.sample_flow.steps
    assert (steps["detail"] == "samples: patient row blocked").any()
    # a cohort exclusion removes the excluded patients' samples too, with the same reason
    first_centre = ds.patients["centre"].iloc[0]
    narrowed = ds.exclude(ds.patients["centre"] == first_centre, Reason.COHORT_RULE, "one centre")
    assert not (narrowed.samples["centre"] == first_centre).any()
    narrowed.sample_flow.check(narrowed.samples)
    assert np.isin(narrowed.samples["patient_id"], narrowed.patients["patient_id"]).all()

"""The first tutorial, reproduced through the whole sweep path over five seeds (slow: ~1.5 min)."""

from __future__ import annotations

import statistics

import pytest
from mlflow.tracking import MlflowClient

from vgtrack.grid import expand
from vgtrack.spec import load_spec
from vgtrack.sweep import run_sweep

from conftest import SWEEPS


@pytest.mark.slow
def test_tutorial_reproduces(store):
    path = SWEEPS / "tutorial.yaml"
    spec = load_spec(path)
    assert len(spec.seeds) >= 3 and spec.train.epochs == 500
    outcome = run_sweep(spec, expand(spec), store, str(path), progress=False)
    assert outcome.finished == 15 and outcome.failed == 0
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("tutorial")
    accuracy: dict[str, list[float]] = {}
    for run in client.search_runs([experiment.experiment_id], "tags.role = 'run' and attributes.status = 'FINISHED'"):
        name = run.info.run_name.rsplit("-s", 1)[0]
        accuracy.setdefault(name, []).append(run.data.metrics["test_accuracy"])
    means = {name: statistics.mean(values) for name, values in accuracy.items()}
    assert all(len(v) == len(spec.seeds) for v in accuracy.values())
    assert means["tanh-uniform-sgd-d05-w05"] <= 0.65, means  # the deep tanh + uniform[0, 1] MLP stalls
    assert means["relu-he-sgd-d05-w05"] >= 0.80, means  # ReLU + He at the same depth learns
    assert means["tanh-uniform-sgd-d01-w05"] >= 0.75, means  # one tanh layer learns

"""What training hands to tracking: which epochs go to MLflow, and when they are sent."""

from __future__ import annotations

import numpy as np

from vgtrack.records import LAYER_STATS, EpochRecord, RecordSampler, metric_plan, metric_values


def _record(epoch: int, loss: float = 0.5, layers: int = 2) -> EpochRecord:
    names = tuple(f"layer_{i + 1:02d}" for i in range(layers))
    return EpochRecord(epoch, loss, 0.6, 0.7, 0.8, names, {s: np.full(layers, 1.0) for s in LAYER_STATS})


def test_metric_plan_keeps_a_run_near_its_budget():
    for depth in (1, 5, 10, 20):
        scalars, layers = metric_plan(500, depth + 1, 250)
        assert 500 - 1 in scalars and 500 - 1 in layers  # the final values are always in MLflow
        assert 0 in scalars and len(scalars) == 31  # the scalar curves: 125 points over 4 series
        assert 4 * len(scalars) + 4 * (depth + 1) * len(layers) <= 250
    assert metric_plan(500, 21, 250)[1] == {499}  # 84 layer series: the last epoch only
    assert metric_plan(4, 3, 50) == ({0, 1, 2, 3}, {0, 3})




def test_sampler_sends_after_first_then_every_and_strips_what_mlflow_does_not_get():
    sent, now = [], [0.0]
    sampler = RecordSampler([1], epochs=10, budget=80, send=sent.append, first=2.0, every=10.0)
    sampler._clock = lambda: now[0]
    sampler.started, sampler.next_send = 0.0, 2.0
    scalars, layers = sampler.plans[0]
    assert scalars == set(range(10)) and layers == {0, 2, 4, 7, 9}  # 40 points for 4 scalars, 40 for 8 layer series
    for epoch, t in enumerate([0.5, 1.0, 1.5, 2.5, 3.0, 12.0, 13.0, 13.5, 14.0, 30.0]):
        now[0] = t
        sampler(0, _record(epoch, loss=np.nan if epoch == 6 else 0.5))
    sampler.flush()
    assert [[r.epoch for r in batch[0]] for batch in sent] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]  # at 2.5 s, 13 s, 30 s
    records = {r.epoch: r for batch in sent for r in batch[0]}
    assert set(metric_values(records[0])) > {"train_loss", "grad_mean_abs/layer_01"}  # a layer epoch
    assert set(metric_values(records[3])) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert "grad_l2/layer_02" in metric_values(records[6])  # a non-finite loss is sent whole


def test_sampler_leaves_a_batch_due_near_the_end_to_the_final_flush():
    sent, now = [], [0.0]
    sampler = RecordSampler([1], epochs=10, budget=80, send=sent.append, first=2.0, every=10.0)
    sampler._clock = lambda: now[0]
    sampler.started, sampler.next_send = 0.0, 2.0
    for epoch in range(10):  # 0.25 s an epoch: due at 2.25 s (epoch 8), with 0.25 s left
        now[0] = 0.25 * (epoch + 1)
        sampler(0, _record(epoch))
    assert sent == []
    last = sampler.take()  # the caller logs these with the run's end
    assert [r.epoch for r in last[0]] == list(range(10)) and sent == [] and sampler.take() == {}

"""Which runs train together: every run once, in groups that can share a graph, workers kept busy."""

from __future__ import annotations

from vgtrack.grid import expand, stack_key
from vgtrack.plan import MAX_REPLICAS, group_seconds, makespan, plan_groups
from vgtrack.spec import load_spec, parse_spec

from conftest import SWEEPS, tiny_spec


def _check(groups, runs):
    assert sorted(r.key for g in groups for r in g) == sorted(r.key for r in runs)
    for group in groups:
        assert 1 <= len(group) <= MAX_REPLICAS
        assert len({stack_key(r.cell) for r in group}) == 1


def test_every_sweep_file_is_planned_whole_costliest_group_first():
    for path in sorted(SWEEPS.glob("*.yaml")):
        spec = load_spec(path)
        runs = list(expand(spec))
        groups = plan_groups(runs, 2, spec.train.epochs)
        _check(groups, runs)
        costs = [group_seconds(g, spec.train.epochs) for g in groups]
        assert costs == sorted(costs, reverse=True), path.name


def test_few_large_groups_when_they_keep_every_worker_busy():
    spec = load_spec(SWEEPS / "tutorial.yaml")  # 10 tanh + uniform runs, 5 ReLU + He runs
    assert sorted(len(g) for g in plan_groups(list(expand(spec)), 2, 500)) == [5, 10]
    assert len(plan_groups(list(expand(load_spec(SWEEPS / "full.yaml"))), 2, 500)) == 20  # 20 stack keys of 60 runs


def test_one_graph_for_two_workers_is_split_into_its_shallow_and_deep_half():
    spec = parse_spec(tiny_spec(grid={"depth": {"from": 1, "to": 10}, "width": 25, "activation": "tanh"}, seeds=4))
    runs = list(expand(spec))  # 40 runs, one stack key
    groups = plan_groups(runs, 2, 500)
    _check(groups, runs)
    assert len(groups) >= 2
    depths = sorted((min(r.cell.depth for r in g), max(r.cell.depth for r in g)) for g in groups)
    assert all(high <= low for (_, high), (low, _) in zip(depths, depths[1:]))  # bands of depth, not mixtures


def test_a_split_must_pay_for_itself():
    # Narrow layers: a layer costs its overhead whatever the replicas, so one worker keeps one graph.
    narrow = list(expand(parse_spec(tiny_spec(grid={"depth": {"from": 1, "to": 10}, "width": 5, "activation": "tanh"}, seeds=4))))
    assert plan_groups(narrow, 1, 500) == [sorted(narrow, key=lambda r: r.cell.depth)]
    # Wide layers: arithmetic dominates, and the shallow half skipping the deep layers saves more
    # than a second graph costs, even on one worker.
    wide = list(expand(parse_spec(tiny_spec(grid={"depth": {"from": 1, "to": 20}, "width": 25, "activation": "tanh"}, seeds=3))))
    split = plan_groups(wide, 1, 500)
    assert len(split) > 1
    assert sum(group_seconds(g, 500) for g in split) < group_seconds(wide, 500)


def test_makespan_gives_each_group_to_the_least_loaded_worker():
    assert makespan([5, 4, 3, 3], 2) == 8  # 5 | 4, then 3 to the 4 (7), then 3 to the 5 (8)
    assert makespan([5, 4, 3, 3], 1) == 15
    assert makespan([], 2) == 0

"""Which runs train together, and in what order: a cost model of a group, and a plan that keeps
every worker busy at the least cost.

A group of K replicas, deepest D hidden layers of width w (train.train_group), takes about
``TRACE_BASE + TRACE_PER_LAYER * D`` seconds to build its graph, then per epoch of 16 batches

    EPOCH_BASE + EPOCH_PER_LAYER * (D + 1) + REPLICA_EPOCH * K
        + K * (D + 1) * (REPLICA_LAYER + REPLICA_LAYER_PER_UNIT2 * w**2)

(the graph's per-operation overhead, the records of each replica, the arithmetic); each run then
costs RUN_OVERHEAD for its files and MLflow. Fitted to 24 groups (K 1-60, D 1-20, w 5-25, mean
error 12%) on the 2-core development machine, and checked against whole sweeps on 2 workers:
sweeps/tutorial.yaml estimated 9 s (took 8 s), sweeps/depth.yaml 59 s (46 s), sweeps/full.yaml
11 min (9 min 50 s).

A layer costs nearly as much for 4 replicas as for 40, so a few large groups cost less than many
small ones; but a group trains on one worker, and too few leave workers idle. :func:`plan_groups`
starts from the fewest groups and splits the costliest in two (its shallow and its deep half, the
shallow half skipping the deep layers) while that shortens the plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from vgtrack.grid import Run, stack_groups

TRACE_BASE, TRACE_PER_LAYER = 0.22, 0.012
EPOCH_BASE, EPOCH_PER_LAYER, REPLICA_EPOCH = 2.0e-3, 3.8e-4, 1.9e-4
REPLICA_LAYER, REPLICA_LAYER_PER_UNIT2 = 2.9e-5, 1.9e-7
RUN_OVERHEAD, START_UP = 0.08, 4.0
MAX_REPLICAS = 64  # a larger graph gains nothing: its arithmetic dominates already


def group_seconds(group: Sequence[Run], epochs: int, batches: float = 16.0) -> float:
    """Estimated seconds for one worker to train ``group`` for ``epochs`` epochs of ``batches`` batches."""
    k, depth, width = len(group), max(run.cell.depth for run in group), group[0].cell.width
    epoch = (
        EPOCH_BASE + EPOCH_PER_LAYER * (depth + 1) + REPLICA_EPOCH * k
        + k * (depth + 1) * (REPLICA_LAYER + REPLICA_LAYER_PER_UNIT2 * width**2)
    )
    return TRACE_BASE + TRACE_PER_LAYER * depth + epoch * epochs * batches / 16 + RUN_OVERHEAD * k


def makespan(costs: Sequence[float], workers: int) -> float:
    """When the last of ``workers`` is done if each takes the costliest group left next (as the pool does)."""
    loads = [0.0] * max(1, workers)
    for cost in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += cost
    return max(loads)


def plan_groups(runs: Sequence[Run], workers: int, epochs: int = 500, batches: float = 16.0) -> list[list[Run]]:
    """Groups of runs that train together, costliest first.

    Example:
        >>> [len(g) for g in plan_groups(expand(load_spec("sweeps/tutorial.yaml")), workers=2)]  # doctest: +SKIP
        [10, 5]
    """
    groups = [
        part
        for group in stack_groups(runs, len(runs) or 1)  # one group per stack key, sorted by depth
        for part in _split_evenly(group, math.ceil(len(group) / MAX_REPLICAS))
    ]
    planned = [(group_seconds(group, epochs, batches), group) for group in groups]
    best = makespan([cost for cost, _ in planned], workers)
    while True:
        splittable = [entry for entry in planned if len(entry[1]) > 1]
        if not splittable:
            break
        costliest = max(splittable, key=lambda entry: entry[0])
        halves = [(group_seconds(half, epochs, batches), half) for half in _split_evenly(costliest[1], 2)]
        trial = [entry for entry in planned if entry is not costliest] + halves
        span = makespan([cost for cost, _ in trial], workers)
        if span >= best:
            break
        planned, best = trial, span
    return [group for _, group in sorted(planned, key=lambda entry: -entry[0])]


def _split_evenly(group: list[Run], parts: int) -> list[list[Run]]:
    size = math.ceil(len(group) / max(1, parts))
    return [group[i : i + size] for i in range(0, len(group), size)]


def estimate_seconds(runs: Sequence[Run], workers: int, epochs: int, batches: float) -> float:
    """Rough wall time of a sweep of ``runs`` on ``workers`` processes of the development machine."""
    groups = plan_groups(runs, workers, epochs, batches)
    return START_UP + makespan([group_seconds(g, epochs, batches) for g in groups], workers)

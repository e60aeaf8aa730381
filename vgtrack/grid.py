"""Expand a :class:`~vgtrack.spec.SweepSpec` into its runs, in a fixed order, with stable ids.

A *cell* is one architecture + optimizer; a *run* is a (cell, seed). A run's ``key`` is a
hash of every parameter that changes its numbers (the cell, the seed, the data and the
training settings), so it is the same in every process and on every machine and a re-run
of a sweep can skip what is already done.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

from vgtrack.spec import AXES, RuleSpec, SweepSpec


@dataclass(frozen=True)
class Cell:
    """One architecture and optimizer: ``depth`` hidden Dense layers of ``width`` units."""

    depth: int
    width: int
    activation: str
    initializer: str
    optimizer: str
    learning_rate: float
    momentum: float

    @property
    def name(self) -> str:
        """Readable and sortable, e.g. ``relu-he-sgd-d05-w05``."""
        return f"{self.activation}-{self.initializer}-{self.optimizer}-d{self.depth:02d}-w{self.width:02d}"

    @property
    def config(self) -> str:
        """The configuration without its size, e.g. ``relu-he-sgd``: what a report compares."""
        return f"{self.activation}-{self.initializer}-{self.optimizer}"

    def params(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Run:
    """One (cell, seed) of a sweep, identified by ``key``."""

    cell: Cell
    seed: int
    key: str
    cell_id: str

    @property
    def name(self) -> str:
        return f"{self.cell.name}-s{self.seed}"


def stack_key(cell: Cell) -> tuple:
    """Cells with equal keys train as replicas of one graph (train.train_group): their initializer
    and seed only change the initial weights, and a shallower replica skips the deeper layers."""
    return (cell.width, cell.activation, cell.optimizer, cell.learning_rate, cell.momentum)


def stack_groups(runs: Sequence[Run], max_replicas: int) -> list[list[Run]]:
    """Split ``runs`` into groups of at most ``max_replicas`` that can share a graph.

    Within a group's key, runs are sorted by depth before they are cut into groups, so that a
    group's replicas are of similar depth and little work goes to layers a replica skips.
    """
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        by_key.setdefault(stack_key(run.cell), []).append(run)
    groups = []
    for members in by_key.values():
        members = sorted(members, key=lambda run: run.cell.depth)
        groups += [members[i : i + max_replicas] for i in range(0, len(members), max_replicas)]
    return groups


def _digest(payload: dict) -> str:
    # Canonical JSON: sorted keys, no spaces; Python's float repr is the same on every machine.
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _matches(values: dict, rule: RuleSpec) -> bool:
    return all(rule.values(axis) is None or values[axis] in rule.values(axis) for axis in AXES)


# Depth varies fastest: a depth study reads down the table in order.
ORDER = ("activation", "initializer", "optimizer", "width", "depth")


def _combinations(spec: SweepSpec, fixed: RuleSpec | None = None) -> Iterator[dict]:
    axes = [(fixed.values(axis) if fixed and fixed.values(axis) else getattr(spec.grid, axis)) for axis in ORDER]
    for combo in itertools.product(*axes):
        yield dict(zip(ORDER, combo))


class Grid(Sequence[Run]):
    """The runs of a sweep; supports ``len()`` and indexing like scikit-learn's ParameterGrid.

    Order: seed, then activation, initializer, optimizer, width, depth (depth fastest), so a
    sweep stopped halfway has covered every cell once before it repeats any with a new seed.
    """

    def __init__(self, spec: SweepSpec) -> None:
        values: list[dict] = [v for v in _combinations(spec) if not any(_matches(v, r) for r in spec.exclude)]
        for rule in spec.include:  # an include entry is a sub-grid; axes it leaves out come from the grid
            values += [v for v in _combinations(spec, rule) if v not in values]
        context = {"data": spec.data.model_dump(), "train": spec.train.model_dump()}
        self.cells: tuple[Cell, ...] = tuple(
            Cell(**v, **dict(zip(("learning_rate", "momentum"), spec.optimizers.settings(v["optimizer"]))))
            for v in values
        )
        runs = []
        for seed in spec.seeds:
            for cell in self.cells:
                cell_id = _digest({"cell": cell.params(), **context})
                runs.append(Run(cell, seed, _digest({"cell_id": cell_id, "seed": seed}), cell_id))
        self._runs = tuple(runs)

    def __len__(self) -> int:
        return len(self._runs)

    def __getitem__(self, index):  # type: ignore[override]
        return self._runs[index]


def expand(spec: SweepSpec) -> Grid:
    """The runs of ``spec`` in their fixed order.

    Example:
        >>> grid = expand(load_spec("sweeps/tutorial.yaml"))  # doctest: +SKIP
        >>> len(grid), grid[0].name
        (9, 'tanh-uniform-sgd-d01-w05-s0')
    """
    return Grid(spec)

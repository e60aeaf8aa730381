"""Sweep files: YAML in, a validated, frozen :class:`SweepSpec` out.

This is the only module that reads YAML. Every problem is reported as one
:class:`~vgtrack.errors.SpecError` line naming the file, the dotted key, the rule and
the value, e.g. ``sweeps/x.yaml: grid.depth: expected integers >= 1, got 0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from vgtrack.errors import SpecError

# Keras 3 activation names (keras.activations); tests check this list against Keras itself,
# kept static so that loading a spec does not import TensorFlow.
ACTIVATIONS = (
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish",
    "relu", "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softmax", "softplus", "softsign",
    "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus", "swish", "tanh", "tanh_shrink",
    "threshold",
)
# Names the sweep files use for kernel initializers; model.py maps them to Keras.
INITIALIZERS = ("uniform", "normal", "xavier", "xavier_normal", "he", "he_normal")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
AXES = ("depth", "width", "activation", "initializer", "optimizer")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _int_axis(value: Any) -> tuple[int, ...]:
    """A list of integers >= 1, a single integer, or a range ``{from: 1, to: 20, step: 1}``."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"from", "to", "step"})
        if unknown:
            raise ValueError(f"unknown range key {unknown[0]!r}, allowed: from, to, step")
        if "from" not in value or "to" not in value:
            raise ValueError(f"a range needs 'from' and 'to', got {_show(value)}")
        ends = [value["from"], value["to"], value.get("step", 1)]
        for end in ends:
            if not isinstance(end, int) or isinstance(end, bool) or end < 1:
                raise ValueError(f"expected range bounds as integers >= 1, got {_show(end)}")
        start, stop, step = ends
        if stop < start:
            raise ValueError(f"expected a range with from <= to, got from {start} to {stop}")
        return tuple(range(start, stop + 1, step))
    values = _as_list(value)
    for item in values:
        if not isinstance(item, int) or isinstance(item, bool) or item < 1:
            raise ValueError(f"expected integers >= 1, got {_show(item)}")
    return _distinct(values)


def _choice_axis(allowed: tuple[str, ...], what: str):
    def check(value: Any) -> tuple[str, ...]:
        values = _as_list(value)
        for item in values:
            if item not in allowed:
                raise ValueError(f"expected {what}, got {_show(item)}")
        return _distinct(values)

    return check


def _distinct(values: list) -> tuple:
    if not values:
        raise ValueError("expected at least one value, got an empty list")
    seen = set()
    for item in values:
        if item in seen:
            raise ValueError(f"expected distinct values, got {_show(item)} twice")
        seen.add(item)
    return tuple(values)


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"expected a count >= 1 or a list of integers >= 0, got {value}")
        return tuple(range(value))
    for item in _as_list(value):
        if not isinstance(item, int) or isinstance(item, bool) or item < 0:
            raise ValueError(f"expected a count >= 1 or a list of integers >= 0, got {_show(item)}")
    return _distinct(_as_list(value))


def _optional(check):
    # A rule leaves an axis out with null; the check itself runs outside the Optional so that
    # pydantic reports its message, not a union of branch errors.
    return lambda value: None if value is None else check(value)


def _list_of_rules(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_activations = _choice_axis(ACTIVATIONS, "Keras activation names such as tanh, relu, sigmoid")
_initializers = _choice_axis(INITIALIZERS, "one of " + ", ".join(INITIALIZERS))
_optimizers = _choice_axis(OPTIMIZERS, "one of " + ", ".join(OPTIMIZERS))
IntAxis = Annotated[tuple[int, ...], BeforeValidator(_int_axis)]
ActivationAxis = Annotated[tuple[str, ...], BeforeValidator(_activations)]
InitializerAxis = Annotated[tuple[str, ...], BeforeValidator(_initializers)]
OptimizerAxis = Annotated[tuple[str, ...], BeforeValidator(_optimizers)]
MaybeIntAxis = Annotated[tuple[int, ...] | None, BeforeValidator(_optional(_int_axis))]
MaybeActivationAxis = Annotated[tuple[str, ...] | None, BeforeValidator(_optional(_activations))]
MaybeInitializerAxis = Annotated[tuple[str, ...] | None, BeforeValidator(_optional(_initializers))]
MaybeOptimizerAxis = Annotated[tuple[str, ...] | None, BeforeValidator(_optional(_optimizers))]


class _Spec(BaseModel):
    # strict: YAML's "5" stays a string and 5.0 is not a depth; frozen: nothing downstream edits a spec.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataSpec(_Spec):
    """``make_circles`` as the tutorials call it; inputs scaled to [-1, 1] with MinMaxScaler."""

    n_samples: int = Field(1000, ge=2)
    noise: float = Field(0.1, ge=0)
    factor: float = Field(0.8, ge=0, lt=1)  # sklearn's default; the second tutorial uses 0.5
    random_state: int = Field(1, ge=0)  # the first tutorial's seed: the same points every time
    n_train: int = Field(500, ge=1)  # the first 500 points train, the rest test (and validate)
    evaluate_on: Literal["test", "train"] = "test"  # "train": the second tutorial scores the training points

    @model_validator(mode="after")
    def _split_fits(self) -> DataSpec:
        if self.n_train > self.n_samples:
            raise ValueError(f"n_train: expected at most n_samples ({self.n_samples}), got {self.n_train}")
        if self.evaluate_on == "test" and self.n_train == self.n_samples:
            raise ValueError(
                f"n_train: expected less than n_samples ({self.n_samples}) to leave a test set "
                f"(or set evaluate_on: train), got {self.n_train}"
            )
        return self


class GridSpec(_Spec):
    """The axes of the sweep; every combination is a cell."""

    depth: IntAxis
    width: IntAxis = (5,)
    activation: ActivationAxis = ("tanh",)
    initializer: InitializerAxis = ("uniform",)
    optimizer: OptimizerAxis = ("sgd",)


class RuleSpec(_Spec):
    """An ``exclude`` or ``include`` entry: axis values (one or a list) that a cell must match."""

    depth: MaybeIntAxis = None
    width: MaybeIntAxis = None
    activation: MaybeActivationAxis = None
    initializer: MaybeInitializerAxis = None
    optimizer: MaybeOptimizerAxis = None

    @model_validator(mode="after")
    def _not_empty(self) -> RuleSpec:
        if all(getattr(self, axis) is None for axis in AXES):
            raise ValueError("expected at least one of " + ", ".join(AXES) + ", got an empty rule")
        return self

    def values(self, axis: str) -> tuple | None:
        return getattr(self, axis)


class SGDSpec(_Spec):
    learning_rate: float = Field(0.01, gt=0)  # the tutorial's SGD(lr=0.01, momentum=0.9)
    momentum: float = Field(0.9, ge=0, lt=1)


class AdamSpec(_Spec):
    learning_rate: float = Field(0.001, gt=0)  # Keras' default


class RMSpropSpec(_Spec):
    learning_rate: float = Field(0.001, gt=0)  # Keras' default, as the second tutorial uses it
    momentum: float = Field(0.0, ge=0, lt=1)


class OptimizersSpec(_Spec):
    """Per-optimizer settings; every cell with that optimizer uses them."""

    sgd: SGDSpec = SGDSpec()
    adam: AdamSpec = AdamSpec()
    rmsprop: RMSpropSpec = RMSpropSpec()

    def settings(self, name: str) -> tuple[float, float]:
        """(learning_rate, momentum) for an optimizer name; momentum is 0 where it has none."""
        chosen = getattr(self, name)
        return chosen.learning_rate, getattr(chosen, "momentum", 0.0)


class TrainSpec(_Spec):
    epochs: int = Field(500, ge=1)  # the tutorial trains for 500 epochs
    batch_size: int = Field(32, ge=1)  # Keras' default batch size, as the tutorials use it


class TrackingSpec(_Spec):
    # None: MLFLOW_TRACKING_URI if set, else the embedded sqlite:///mlruns/mlflow.db.
    uri: str | None = None
    # MLflow metric points per run, about: half for the four scalar curves, half for the per-layer
    # statistics (records.metric_plan). Each point costs ~0.1 ms of the sweep process on the sqlite
    # store, as much as training a run for a few epochs; history.parquet keeps every epoch anyway.
    # 150: 18 points per scalar curve; fewer left most of the cost, which is per series, in place.
    metric_points: int = Field(150, ge=10, le=100_000)
    save_model: bool = False  # also log the trained Keras model as model.keras (keras.saving.load_model)


class QueueSpec(_Spec):
    """The shared queue of runs (``--storage``, Optuna on PostgreSQL): how dead workers are found."""

    heartbeat: int = Field(10, ge=1)  # seconds between a worker's heartbeats for the runs it holds
    grace: int = Field(60, ge=2)  # seconds without a heartbeat after which a run is stale and retried
    retries: int = Field(2, ge=0)  # retries of a run whose worker died; then the run is FAILED

    @model_validator(mode="after")
    def _grace_outlasts_heartbeat(self) -> QueueSpec:
        if self.grace <= self.heartbeat:
            raise ValueError(f"grace: expected more than heartbeat ({self.heartbeat}) seconds, got {self.grace}")
        return self


Rules = Annotated[tuple[RuleSpec, ...], BeforeValidator(_list_of_rules)]


class SweepSpec(_Spec):
    """A validated sweep file. Build it with :func:`load_spec`."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
    experiment: str | None = None
    data: DataSpec = DataSpec()
    grid: GridSpec
    exclude: Rules = ()
    include: Rules = ()
    seeds: Annotated[tuple[int, ...], BeforeValidator(_seeds)] = (0,)
    train: TrainSpec = TrainSpec()
    optimizers: OptimizersSpec = OptimizersSpec()
    tracking: TrackingSpec = TrackingSpec()
    queue: QueueSpec = QueueSpec()

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name


_TYPE_WORDS = {
    "int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
    "string_type": "a string", "bool_type": "true or false", "dict_type": "a mapping",
    "model_type": "a mapping", "model_attributes_type": "a mapping", "list_type": "a list",
    "tuple_type": "a list",
}


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys allowed next to the unknown key at ``loc``, found by walking the models."""
    model: Any = SweepSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        args = [a for a in getattr(annotation, "__args__", ()) if a is not Ellipsis]
        model = next((a for a in [annotation, *args] if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _message(error: dict) -> tuple[str, str]:
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return _dotted(loc), f"unknown key, allowed: {', '.join(_allowed_keys(loc))}"
    if kind == "missing":
        return _dotted(loc), "required key is missing"
    if kind == "value_error":
        text = str(ctx.get("error", error["msg"]))
        # A model-level rule names its own key first ("n_train: ..."): fold it into the path.
        head, sep, rest = text.partition(": ")
        if sep and head.isidentifier() and " " not in head:
            return _dotted((*loc, head)), rest
        return _dotted(loc), text
    if kind in _TYPE_WORDS:
        return _dotted(loc), f"expected {_TYPE_WORDS[kind]}, got {_show(value)}"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = format(next(iter(ctx.values())), "g")
        return _dotted(loc), f"expected a value {bounds[kind]} {limit}, got {_show(value)}"
    if kind == "literal_error":
        return _dotted(loc), f"expected one of {ctx.get('expected', '')}, got {_show(value)}"
    if kind == "string_pattern_mismatch":
        return _dotted(loc), f"expected letters, digits, '_', '.', '-' (starting with a letter or digit), got {_show(value)}"
    return _dotted(loc), f"{error['msg']}, got {_show(value)}"


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Validate an already-parsed mapping; raise :class:`SpecError` naming ``source``."""
    if not isinstance(data, dict):
        raise SpecError(source, "", f"expected a mapping of sweep keys at the top level, got {_show(data)}")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        key, message = _message(exc.errors()[0])
        raise SpecError(source, key, message) from None
    from vgtrack.grid import expand  # an empty grid is bad input too; caught here, at the edge

    if len(expand(spec)) == 0:
        raise SpecError(source, "exclude", "expected at least one cell to remain, got an empty grid")
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file.

    Example:
        >>> spec = load_spec("sweeps/smoke.yaml")  # doctest: +SKIP
        >>> spec.grid.depth
        (1, 3)
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(source, "", "file not found") from None
    except OSError as exc:
        raise SpecError(source, "", f"cannot read the file: {exc.strerror}") from None
    return loads_spec(text, source)


def loads_spec(text: str, source: str = "<spec>") -> SweepSpec:
    """Validate the text of a sweep file (a worker reads it from the shared queue)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(source, "", f"invalid YAML{where}: {problem}") from None
    return parse_spec(data, source)

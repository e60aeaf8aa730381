"""``python -m vgtrack.bench``: the tutorial's ``model.fit`` against vgtrack's sweep path, side by side.

Both train the same slice of cells in one invocation:

- baseline: plain ``keras.Sequential`` + ``model.fit(..., validation_data=..., epochs=E, verbose=0)``,
  one model after another, no instrumentation, no tracking (in a child process);
- vgtrack: the whole sweep path (per-layer statistics, worker processes, MLflow logging into a
  fresh sqlite store, artifacts), each pass in a new process, after one pass not counted (it warms
  the disk cache); and, alternating with it, the same path with tracking off (nothing kept), which
  measures tracking's share of the wall time.

The machine's speed drifts from pass to pass by more than tracking costs (a pass without tracking
has taken 8.5 s and, two passes later, 11.2 s), so vgtrack's numbers are medians over the passes,
printed with their range.

It prints seconds per run for each, their ratio, vgtrack's time split, tracking's share of the
wall time, the peak RSS of a worker and a projection of ``sweeps/full.yaml``'s wall time on this
machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from statistics import fmean, median

from vgtrack.grid import Cell, expand
from vgtrack.spec import SweepSpec, load_spec, parse_spec

FULL = Path(__file__).resolve().parents[1] / "sweeps" / "full.yaml"


def slice_spec(
    depths: list[int], widths: list[int], configs: list[str], seeds: int, epochs: int, metric_points: int | None = None,
) -> SweepSpec:
    """The benchmark slice as a sweep: ``configs`` are ``activation-initializer`` pairs, all with SGD;
    ``metric_points`` as the sweep file's ``tracking.metric_points`` (None: its default)."""
    pairs = [config.split("-", 1) for config in configs]
    return parse_spec({
        "name": "bench",
        "grid": {"depth": depths, "width": widths, "activation": pairs[0][0], "initializer": pairs[0][1], "optimizer": "sgd"},
        "include": [{"activation": a, "initializer": i} for a, i in pairs[1:]],
        "seeds": seeds,
        "train": {"epochs": epochs},
        **({"tracking": {"metric_points": metric_points}} if metric_points is not None else {}),
    }, "<bench>")


def fit_baseline(cell: Cell, seed: int, data, epochs: int, validate: bool = True) -> tuple[float, float]:
    """The tutorial's way: build, compile, ``model.fit`` with validation data. Returns (seconds, final test accuracy).

    ``validate=False`` trains the same way without the per-epoch validation pass (it does not
    touch the weights) and evaluates the test set once at the end: the same final accuracy in
    about 40% less time, for tests that need only that.
    """
    import keras

    from vgtrack.model import build_model, build_optimizer

    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = build_model(cell)
    model.compile(loss="binary_crossentropy", optimizer=build_optimizer(cell), metrics=["accuracy"])
    if not validate:
        model.fit(data.x_train, data.y_train, epochs=epochs, verbose=0)
        return time.perf_counter() - started, float(model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)["accuracy"])
    history = model.fit(data.x_train, data.y_train, validation_data=(data.x_test, data.y_test), epochs=epochs, verbose=0)
    return time.perf_counter() - started, float(history.history["val_accuracy"][-1])


def _baseline_child(spec: SweepSpec, limit: int | None) -> list[float]:
    from vgtrack.data import load_dataset

    data = load_dataset(spec.data)
    runs = list(expand(spec))[:limit]
    return [fit_baseline(run.cell, run.seed, data, spec.train.epochs)[0] for run in runs]


def run_baseline(spec: SweepSpec, limit: int | None) -> list[float]:
    """Seconds per baseline run, measured in a fresh child process (so its memory is its own)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_baseline_child, (spec, limit))


def run_vgtrack(spec: SweepSpec, workers: int, folder: str, tracking: bool = True):
    """The sweep path into a fresh sqlite store (or, ``tracking=False``, keeping nothing); returns
    (wall seconds, SweepOutcome)."""
    from vgtrack.sweep import run_sweep

    spec_file = Path(folder) / "bench.yaml"
    spec_file.write_text(spec.model_dump_json())
    started = time.perf_counter()
    outcome = run_sweep(
        spec, expand(spec), f"sqlite:///{folder}/mlruns/mlflow.db", str(spec_file), progress=False, workers=workers, tracking=tracking,
    )
    return time.perf_counter() - started, outcome


def _vgtrack_child(spec: SweepSpec, workers: int, tracking: bool, connection) -> None:
    with tempfile.TemporaryDirectory(prefix="vgtrack-bench-") as folder:
        connection.send(run_vgtrack(spec, workers, folder, tracking))


def run_vgtrack_fresh(spec: SweepSpec, workers: int, tracking: bool):
    """:func:`run_vgtrack` in a new process, as ``python -m vgtrack.sweep`` runs: a process that
    has swept before keeps its fork server, TensorFlow already imported, and would start seconds sooner."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_vgtrack_child, args=(spec, workers, tracking, send))
    child.start()
    send.close()
    try:
        return receive.recv()
    finally:
        child.join()


def statistics_share(spec: SweepSpec, workers: int) -> float:
    """Share of training time that the per-layer statistics cost: the slice trained with and without them."""
    from vgtrack.data import load_dataset
    from vgtrack.plan import plan_groups
    from vgtrack.train import train_group

    data = load_dataset(spec.data)
    groups = plan_groups(list(expand(spec)), workers, spec.train.epochs)
    seconds = {}
    for statistics in (True, False, True):  # the first pass also warms up TensorFlow
        started = time.perf_counter()
        for group in groups:
            train_group(group, data, spec.train, statistics=statistics)
        seconds[statistics] = time.perf_counter() - started
    return max(0.0, (seconds[True] - seconds[False]) / seconds[True])


def project_full(per_run_training: float, per_run_fixed: float, epochs: int, workers: int) -> float:
    """Wall seconds of sweeps/full.yaml: its runs at the slice's per-run cost, training scaled to its epochs.

    Conservative: the full grid stacks up to 60 replicas per graph where the slice stacks 8, and
    graph tracing (counted in training here) does not grow with epochs.
    """
    full = load_spec(FULL)
    runs = len(expand(full))
    return runs * (per_run_training * full.train.epochs / epochs + per_run_fixed) / workers


# The slice's sweep-file keys, as the flags that set them (a SpecError names the key).
FLAG_OF_KEY = {
    "grid.depth": "--depths", "grid.width": "--widths", "grid": "--configs", "include": "--configs", "seeds": "--seeds",
    "train.epochs": "--epochs", "tracking.metric_points": "--metric-points",
}


def _integers(flag: str, text: str) -> list[int]:
    """``--depths 1,5,10`` as integers.

    Raises:
        UsageError: not comma-separated integers.
    """
    from vgtrack.errors import UsageError

    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag}: expected comma-separated integers such as 1,5,10, got {text!r}") from None


def _configs(text: str) -> list[str]:
    """``--configs tanh-uniform,relu-he``, each an activation and an initializer joined by ``-``.

    Raises:
        UsageError: an item is not such a pair.
    """
    from vgtrack.errors import UsageError

    configs = text.split(",")
    for config in configs:
        activation, _, initializer = config.partition("-")
        if not activation or not initializer:
            raise UsageError(f"--configs: expected activation-initializer pairs such as tanh-uniform,relu-he, got {config!r}")
    return configs


def parse_slice(args: argparse.Namespace) -> SweepSpec:
    """The slice the flags describe.

    Raises:
        UsageError: a flag's value is not allowed, named as ``--flag: rule, got value``.
    """
    from vgtrack.errors import SpecError, UsageError

    for flag in ("seeds", "epochs", "workers", "repeats", "baseline_runs"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')}: expected an integer >= 1, got {value}")
    depths, widths = _integers("--depths", args.depths), _integers("--widths", args.widths)
    try:
        return slice_spec(depths, widths, _configs(args.configs), args.seeds, args.epochs, args.metric_points)
    except SpecError as exc:
        flag = next((f for key, f in FLAG_OF_KEY.items() if exc.key == key or exc.key.startswith((key + ".", key + "["))), exc.key)
        raise UsageError(f"{flag}: {exc.message}") from None


def _span(seconds: list[float]) -> str:
    return f"{min(seconds):.1f}-{max(seconds):.1f} s"


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    from vgtrack.sweep import default_workers

    parser = argparse.ArgumentParser(prog="python -m vgtrack.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="1,5,10,20", help="comma-separated depths (default 1,5,10,20)")
    parser.add_argument("--widths", default="5,25", help="comma-separated widths (default 5,25)")
    parser.add_argument("--configs", default="tanh-uniform,relu-he", help="activation-initializer pairs (default tanh-uniform,relu-he)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=default_workers(), help="vgtrack worker processes (default: the cores)")
    parser.add_argument("--metric-points", type=int, default=None, metavar="N",
                        help="MLflow metric points per run, as tracking.metric_points in a sweep file (default: its default, 150)")
    parser.add_argument("--baseline-runs", type=int, default=None, metavar="N",
                        help="time only the first N baseline runs (default: all; the per-run mean is what is compared)")
    parser.add_argument("--repeats", type=int, default=5, metavar="R",
                        help="vgtrack passes with tracking and without, alternating (default 5 each; medians are reported)")
    args = parser.parse_args(argv)
    from vgtrack.errors import UsageError

    try:
        spec = parse_slice(args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    n = len(expand(spec))
    print(f"slice: {n} runs ({args.depths} depth x {args.widths} width x {args.configs} x SGD x {args.seeds} seeds), "
          f"{args.epochs} epochs, {spec.tracking.metric_points} metric points a run; vgtrack on {args.workers} workers", file=sys.stderr)
    # Not counted: the first pass after an install or a reboot reads every module from disk (and
    # compiles what has no bytecode yet); a user pays that once, not per sweep.
    wall, _ = run_vgtrack_fresh(spec, args.workers, True)
    print(f"vgtrack warm-up pass (not counted): {wall:.1f} s", file=sys.stderr)
    # With tracking and without, alternating: a drift in the machine's speed hits both alike.
    passes: dict[bool, list] = {True: [], False: []}
    for tracking in (True, False) * args.repeats:
        wall, outcome = run_vgtrack_fresh(spec, args.workers, tracking)
        passes[tracking].append((wall, outcome))
        print(f"vgtrack {'with' if tracking else 'without'} tracking: {wall:.1f} s", file=sys.stderr)
    print("now the baseline ...", file=sys.stderr)
    baseline = run_baseline(spec, args.baseline_runs)
    share = statistics_share(spec, args.workers)

    tracked = passes[True]
    walls, walls_off = [w for w, _ in tracked], [w for w, _ in passes[False]]
    wall, wall_off = median(walls), median(walls_off)
    training = median(o.training_seconds for _, o in tracked)
    mlflow, files = median(o.tracking_seconds for _, o in tracked), median(o.artifact_seconds for _, o in tracked)
    tracking = mlflow + files
    stats = training * share
    busy = training + tracking
    per_base = fmean(baseline)
    per_vg = wall / n
    projected = project_full(training / n, tracking / n, args.epochs, args.workers)
    rows = [
        ("runs", f"{n} x {args.epochs} epochs" + (f" (baseline timed on {len(baseline)})" if len(baseline) < n else "")),
        ("baseline: model.fit, s/run", f"{per_base:.2f}"),
        (f"vgtrack ({args.workers} workers), s/run", f"{per_vg:.3f} (wall {wall:.1f} s, median of {len(tracked)}: {_span(walls)})"),
        ("ratio baseline/vgtrack", f"{per_base / per_vg:.0f}x"),
        ("vgtrack CPU time: training", f"{training - stats:.1f} s ({(training - stats) / busy:.0%})"),
        ("vgtrack CPU time: statistics", f"{stats:.1f} s ({stats / busy:.0%})"),
        ("vgtrack CPU time: tracking", f"{tracking:.1f} s ({tracking / busy:.0%}): MLflow {mlflow:.1f} s, artifact files {files:.1f} s"),
        ("tracking's CPU at start-up", f"{median(o.store_seconds for _, o in tracked):.1f} s: MLflow's import and a new store, beside the TensorFlow import"),
        ("tracking's share of the wall time", f"{(wall - wall_off) / wall:.0%}: {wall:.1f} s with it, {wall_off:.1f} s without ({_span(walls_off)})"),
        ("peak RSS per worker", f"{max(o.worker_peak_rss_mb for _, o in tracked):.0f} MB"),
        ("projected sweeps/full.yaml", f"{projected / 60:.0f} min (1,200 runs x 500 epochs, {args.workers} workers)"),
    ]
    print(_table(rows))
    return 0 if all(o.finished == n for _, o in tracked) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m vgtrack.sweep SPEC``: train every run of a sweep file and log it to MLflow.

Runs that already have a FINISHED run in the experiment are skipped, so running the same
command again resumes an interrupted sweep. Ctrl-C (or SIGTERM) stops the workers at once,
marks every run in progress KILLED and exits with status 130.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vgtrack.errors import SpecError, UsageError
from vgtrack.grid import Grid, Run, expand
from vgtrack.heap import long_lived
from vgtrack.plan import estimate_seconds, plan_groups
from vgtrack.priority import at_lowest_priority
from vgtrack.spec import SweepSpec, load_spec
from vgtrack.stopping import Interrupted, StopFlag
from vgtrack.tracking import log_sampled


@dataclass
class SweepOutcome:
    total: int
    skipped: int
    finished: int = 0
    failed: int = 0
    interrupted: bool = False
    tracking_seconds: float = 0.0  # CPU seconds the sweep process spent logging to MLflow
    training_seconds: float = 0.0  # CPU seconds the workers spent in train_group, summed
    artifact_seconds: float = 0.0  # CPU seconds the workers spent writing history.parquet and figures
    worker_peak_rss_mb: float = 0.0  # the largest peak resident memory of a worker
    store_seconds: float = 0.0  # CPU seconds the sweep process spent importing MLflow and opening its store, at start-up

    @property
    def missing(self) -> int:
        return self.total - self.skipped - self.finished


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(spec: SweepSpec, grid: Grid, workers: int) -> str:
    """The ``--dry-run`` text: run count, the cells as a table, estimated duration."""
    import pandas as pd

    table = pd.DataFrame([c.params() for c in grid.cells])
    table.index = [c.name for c in grid.cells]
    with pd.option_context("display.max_rows", 40, "display.width", 120):
        cells = table.to_string(max_rows=40)
    return (
        f"{spec.name}: {len(grid)} runs = {len(grid.cells)} cells x {len(spec.seeds)} seeds "
        f"x {spec.train.epochs} epochs\n{cells}\n"
        f"estimated duration: ~{_duration(estimate_seconds(list(grid), workers, spec.train.epochs, _batches(spec)))} "
        f"on {workers} worker{'s' if workers > 1 else ''}"
    )


def _batches(spec: SweepSpec) -> float:
    """Batches per epoch: what the cost model (vgtrack.plan) scales an epoch by."""
    from vgtrack.train import batches_per_epoch

    return batches_per_epoch(spec.data.n_train, spec.train.batch_size)


def run_params(spec: SweepSpec, run: Run) -> dict:
    """What MLflow records as the run's params: every axis, the seed, training and data settings."""
    return {**run.cell.params(), "seed": run.seed, **spec.train.model_dump(), **spec.data.model_dump()}


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class _Sweeping:
    """The parent's side of a sweep: turns worker messages into MLflow runs and a progress bar."""

    def __init__(self, spec: SweepSpec, tracker, groups: list[list[Run]], bar, outcome: SweepOutcome) -> None:
        self.spec, self.tracker, self.groups, self.bar, self.outcome = spec, tracker, groups, bar, outcome
        self.runs: dict[int, list] = {}  # gid -> RunTrackers of a started group
        self.outcomes: dict[int, list] = {}  # gid -> RunOutcomes of a trained group
        self.remaining = set(range(len(groups)))
        self.tracking_seconds = 0.0
        self.worker_training = self.worker_artifacts = self.worker_peak_rss_mb = 0.0

    def start_group(self, gid: int) -> list:
        """The RunTrackers of group gid, its MLflow runs created (RUNNING) on first call."""
        if gid not in self.runs:
            self.runs[gid] = [self.tracker.start_run(run, self.spec.name, run_params(self.spec, run)) for run in self.groups[gid]]
        return self.runs[gid]

    def start_groups(self, first: int, more) -> None:
        """Create the runs of the first ``first`` groups, then of the groups after them while ``more()``."""
        for gid in range(len(self.groups)):
            if gid >= first and not more():
                return
            self.start_group(gid)

    def handle(self, message) -> None:
        started = time.process_time()
        kind, gid = message[0], message[1]
        if kind == "start":
            self.start_group(gid)
        elif kind == "epochs":
            log_sampled(self.start_group(gid), message[2])
        elif kind == "trained":  # the numbers now, while the worker writes the files
            outcomes, last = message[2], message[3]
            trackers = self.start_group(gid)
            log_sampled(trackers, last, write=False)  # written with the run's end tags, in one call
            for run_tracker, out in zip(trackers, outcomes):
                run_tracker.conclude(out.seconds, out.tags, out.failure)
            self.outcomes[gid] = outcomes
        elif kind == "files":
            self._end(gid, message[2], message[3])
        elif kind == "done":
            timings = message[2]
            self.worker_training += timings.training
            self.worker_artifacts += timings.artifacts
            self.worker_peak_rss_mb = max(self.worker_peak_rss_mb, timings.peak_rss_mb)
            self._close(gid)
        elif kind == "error":
            self.fail_group(gid, f"crashed: {message[2].strip().splitlines()[-1]}")
        self.tracking_seconds += time.process_time() - started

    def _end(self, gid: int, i: int, artifacts: str | None) -> None:
        """Run i of group gid has its files: upload them and end the run."""
        run, out = self.groups[gid][i], self.outcomes[gid][i]
        self.runs[gid][i].end(artifacts, failed=out.failure is not None)
        if out.failure is None:
            self.outcome.finished += 1
            note = f"{run.name} test_acc={out.final['test_accuracy']:.3f} {out.tags.get('verdict', '')}"
        else:
            self.outcome.failed += 1
            note = f"{run.name} FAILED: {out.failure}"
        self.bar.update(1)
        self.bar.set_postfix_str(note, refresh=False)

    def fail_group(self, gid: int, reason: str) -> None:
        """The group's runs that have not ended fail (their worker crashed or died)."""
        for run_tracker in self.start_group(gid):
            if not run_tracker.ended:
                run_tracker.fail(reason)
                self.outcome.failed += 1
                self.bar.update(1)
        self._close(gid)

    def _close(self, gid: int) -> None:
        self.runs.pop(gid, None)
        self.outcomes.pop(gid, None)
        self.remaining.discard(gid)

    def kill_in_flight(self, reason: str) -> None:
        """Every started run that has not ended becomes KILLED."""
        for gid in list(self.runs):
            for run_tracker in self.runs.pop(gid):
                run_tracker.kill(reason)  # a run that has ended stays as it is


def run_sweep(
    spec: SweepSpec, grid: Grid, uri: str, spec_path: str, progress: bool = True, workers: int | None = None,
    tracking: bool = True, origin: str = "tracking URI",
) -> SweepOutcome:
    """Train and log every run of ``grid`` not yet FINISHED in the experiment, on ``workers`` processes.

    ``tracking=False`` trains the same way and keeps nothing (no MLflow, no artifact files, no
    records sent by the workers): ``python -m vgtrack.bench`` measures what tracking costs with it.
    ``origin`` says where ``uri`` came from (tracking.uri_origin), for the error if it does not open.

    Raises:
        UsageError: nobody answers at ``uri``, or its store cannot be opened (nothing was trained).

    Example:
        >>> spec = load_spec("sweeps/smoke.yaml")  # doctest: +SKIP
        >>> run_sweep(spec, expand(spec), "sqlite:///mlruns/mlflow.db", "sweeps/smoke.yaml").finished
        8
    """
    from vgtrack.pool import WorkerPool
    from vgtrack.tracking import NullTracker, open_tracker

    workers = workers or default_workers()
    with tempfile.TemporaryDirectory(prefix="vgtrack-") as folder:
        pool = WorkerPool(workers, spec, folder, tracking)  # the workers import TensorFlow while MLflow opens its store
        try:
            started = time.process_time()
            with long_lived():  # MLflow's modules and store, left out of the collections logging sets off
                tracker = at_lowest_priority(open_tracker, uri, spec.experiment_name, origin) if tracking else NullTracker()
            opened = time.process_time() - started
            outcome = _sweep(spec, grid, tracker, spec_path, progress, workers, pool)
            outcome.store_seconds = opened
            return outcome
        finally:
            gc.unfreeze()  # what long_lived froze goes back to the collector: a caller's process goes on after the sweep
            pool.terminate()


def _sweep(spec: SweepSpec, grid: Grid, tracker, spec_path: str, progress: bool, workers: int, pool) -> SweepOutcome:
    from tqdm import tqdm

    reaped = tracker.reap_orphans()
    done = tracker.finished_keys()
    todo = [run for run in grid if run.key not in done]
    outcome = SweepOutcome(total=len(grid), skipped=len(grid) - len(todo))
    note = f", {reaped} orphaned RUNNING runs marked KILLED" if reaped else ""
    print(f"{spec.name}: {len(grid)} runs, {outcome.skipped} already finished (skipped), {len(todo)} to run{note}", file=sys.stderr)
    if not todo:
        return outcome
    groups = plan_groups(todo, workers, spec.train.epochs, _batches(spec))
    tracker.open(spec.name, len(grid), spec_path, Path(spec_path).read_text(encoding="utf-8"))
    status = "FAILED"
    bar = tqdm(total=len(grid), initial=outcome.skipped, unit="run", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    sweeping = _Sweeping(spec, tracker, groups, bar, outcome)
    with StopFlag() as stop:
        try:
            for gid, group in enumerate(groups):
                pool.submit(gid, group)
            # Runs are created now, while the fork server still imports TensorFlow, instead of
            # competing with the workers' training: those of the groups that start first, then
            # of the next groups until the workers are up.
            started = time.process_time()
            at_lowest_priority(sweeping.start_groups, min(workers, len(groups)), lambda: pool.starting() and not stop.requested)
            sweeping.tracking_seconds += time.process_time() - started
            while sweeping.remaining:
                if stop.requested:
                    raise Interrupted
                message = pool.get(timeout=0.2)
                if message is not None:
                    sweeping.handle(message)
                for gid, reason in pool.lost_groups():
                    sweeping.fail_group(gid, reason)
            pool.close()
            status = "FINISHED"
        except (Interrupted, KeyboardInterrupt):
            pool.terminate()
            sweeping.kill_in_flight("interrupted (Ctrl-C or SIGTERM)")
            status, outcome.interrupted = "KILLED", True
        except BaseException as exc:
            pool.terminate()
            for gid in list(sweeping.runs):
                sweeping.fail_group(gid, f"the sweep crashed: {type(exc).__name__}: {exc}")
            raise
        finally:
            bar.close()
            outcome.tracking_seconds = sweeping.tracking_seconds
            outcome.training_seconds = sweeping.worker_training
            outcome.artifact_seconds = sweeping.worker_artifacts
            outcome.worker_peak_rss_mb = sweeping.worker_peak_rss_mb
            tracker.close(status, {"finished": str(outcome.finished), "failed": str(outcome.failed), "skipped": str(outcome.skipped)})
    return outcome


def run_queued(
    spec: SweepSpec, grid: Grid, uri: str, spec_path: str, storage: str, workers: int, enqueue_only: bool, origin: str = "tracking URI",
) -> int:
    """The coordinator of a sweep across machines: enqueue its runs in the shared queue (Optuna RDB
    storage), then run ``workers`` local ``python -m vgtrack.worker`` processes until none is left.

    Idempotent: a run already waiting, running or done (in the queue, or FINISHED in MLflow) is
    not enqueued again. Returns the exit status.

    Raises:
        UsageError: ``storage`` or ``uri`` cannot be reached (nothing was enqueued; a bad ``storage``
            is found before the tracking store is opened, which for sqlite would create it).
    """
    import subprocess

    from vgtrack.tracking import open_tracker
    from vgtrack.workqueue import PARENT_ATTR, TRACKING_ATTR, RunQueue

    RunQueue.check(storage)
    tracker = open_tracker(uri, spec.experiment_name, origin)
    q = spec.queue
    queue = RunQueue.create(storage, spec.name, q.heartbeat, q.grace, q.retries)
    finished = tracker.finished_keys()
    text = Path(spec_path).read_text(encoding="utf-8")
    added = queue.enqueue(text, spec_path, [(run.key, run_params(spec, run)) for run in grid], skip=finished)
    queue.set_attr(TRACKING_ATTR, uri)
    counts = queue.counts()
    elsewhere = len({run.key for run in grid} & finished) - counts["complete"]
    print(
        f"{spec.name}: {len(grid)} runs, {added} enqueued now; queue: {counts['complete']} complete, {counts['running']} running, "
        f"{counts['waiting']} waiting, {counts['failed']} failed" + (f"; {elsewhere} finished outside the queue" if elsewhere > 0 else ""),
        file=sys.stderr,
    )
    if counts["waiting"] + counts["running"] == 0:
        print(f"{spec.name}: the sweep is complete", file=sys.stderr)
        return 0
    if enqueue_only:
        print(f"{spec.name}: start workers with: python -m vgtrack.worker --storage {storage} --study {spec.name}", file=sys.stderr)
        return 0
    tracker.open(spec.name, len(grid), spec_path, text)
    queue.set_attr(PARENT_ATTR, tracker.parent_id)
    command = [sys.executable, "-m", "vgtrack.worker", "--storage", storage, "--study", spec.name, "--tracking-uri", uri]
    procs = [subprocess.Popen(command) for _ in range(workers)]
    status = "FAILED"
    with StopFlag() as stop:
        try:
            while any(p.poll() is None for p in procs):
                if stop.requested:
                    raise Interrupted
                time.sleep(0.2)
            status = "FINISHED"
        except (Interrupted, KeyboardInterrupt):
            status = "KILLED"
            for p in procs:  # each worker ends its runs KILLED and hands them back to the queue
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        finally:
            counts = queue.counts()
            tracker.close(status, {k: str(v) for k, v in counts.items()})
    print(
        f"{spec.name}: queue: {counts['complete']} complete, {counts['failed']} failed, "
        f"{counts['waiting'] + counts['running']} not done",
        file=sys.stderr,
    )
    return 130 if status == "KILLED" else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vgtrack.sweep",
        description="Train every run of a sweep file and log it to MLflow (default: sqlite:///mlruns/mlflow.db).",
    )
    parser.add_argument("spec", help="sweep file, e.g. sweeps/depth.yaml")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (overrides MLFLOW_TRACKING_URI and the spec)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and an estimated duration; train nothing")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="training processes (default: the number of cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--storage", metavar="URL",
        help="run across machines: enqueue the runs in this Optuna RDB storage (postgresql://USER@HOST/DB), then work on them",
    )
    parser.add_argument("--enqueue-only", action="store_true", help="with --storage: enqueue the runs and exit; workers train them")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 2
    grid = expand(spec)
    if args.workers is not None and args.workers < 1:
        print(f"--workers: expected an integer >= 1, got {args.workers}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe(spec, grid, args.workers or default_workers()))
        return 0
    from vgtrack.tracking import resolve_uri, uri_origin

    uri = resolve_uri(args.tracking_uri, spec.tracking.uri)
    origin = uri_origin(args.tracking_uri, spec.tracking.uri, args.spec)
    if args.enqueue_only and not args.storage:
        print("--enqueue-only: needs --storage URL (the shared queue)", file=sys.stderr)
        return 2
    if args.storage:
        try:
            return run_queued(spec, grid, uri, args.spec, args.storage, args.workers or default_workers(), args.enqueue_only, origin)
        except UsageError as exc:
            print(exc, file=sys.stderr)
            return 2
    started = time.monotonic()
    try:
        outcome = run_sweep(spec, grid, uri, args.spec, progress=not args.no_progress, workers=args.workers, origin=origin)
    except UsageError as exc:  # the tracking store: it is opened while the workers start
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the sweep's own handler was in place (start-up): nothing is RUNNING yet
        print(f"{spec.name}: interrupted while starting", file=sys.stderr)
        return 130
    print(
        f"{spec.name}: {outcome.finished} finished, {outcome.failed} failed, {outcome.skipped} skipped, "
        f"{outcome.missing} not done, in {_duration(time.monotonic() - started)}; tracking URI {uri}",
        file=sys.stderr,
    )
    return 130 if outcome.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m vgtrack.worker --storage URL --study NAME [--tracking-uri URI]``: work on a queued sweep.

Joins the sweep that ``python -m vgtrack.sweep SPEC --storage URL`` enqueued (the sweep file
itself is stored in the queue), claims WAITING runs a few at a time (runs that can share a
graph train together), trains them, logs them to MLflow and commits each result to the queue.
It leaves, with status 0, when no run is waiting or running anywhere.

A run counts once: its MLflow run is marked FINISHED only after the queue accepted the
result (:meth:`vgtrack.workqueue.RunQueue.complete`). Before each claim a worker reaps:
runs whose worker stopped sending heartbeats are failed and retried (Optuna), and the MLflow
runs they left RUNNING are ended as the queue says (:func:`reconcile`). Ctrl-C or SIGTERM:
the runs in progress end KILLED and go back to the queue, and the worker exits (status 130).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

from vgtrack.errors import SpecError, UsageError
from vgtrack.heap import long_lived
from vgtrack.stopping import Interrupted, StopFlag
from vgtrack.workqueue import PARENT_ATTR, SPEC_ATTR, TRACKING_ATTR, Claim, RunQueue

MAX_GROUP = 16  # runs one worker claims at once (when they can share a graph)


class Heartbeats(threading.Thread):
    """Records a heartbeat every ``interval`` seconds for every trial the worker holds."""

    def __init__(self, queue: RunQueue, interval: float) -> None:
        super().__init__(daemon=True, name="vgtrack-heartbeats")
        self.queue, self.interval = queue, interval
        self.held: set[int] = set()
        self._lock, self._stop = threading.Lock(), threading.Event()

    def hold(self, trial_ids) -> None:
        with self._lock:
            self.held |= set(trial_ids)

    def drop(self, trial_ids) -> None:
        with self._lock:
            self.held -= set(trial_ids)

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                held = sorted(self.held)
            for trial_id in held:
                try:
                    self.queue.heartbeat(trial_id)
                except Exception as exc:  # the database stayed away past the queue's patience: try again next beat
                    print(f"heartbeat for trial {trial_id} failed: {type(exc).__name__}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()


def reconcile(queue: RunQueue, tracker) -> int:
    """Reap stale trials, then end the MLflow runs that dead workers left RUNNING, as their trials say.

    - trial COMPLETE: the worker died after the result counted: the run is complete, FINISHED;
    - trial WAITING: handed back (or retried): KILLED;
    - trial FAIL: the worker stopped sending heartbeats: KILLED if a retry is queued, else FAILED.

    Returns how many runs were ended.
    """
    queue.reap()
    live = None
    ended = 0
    for run in tracker.queue_runs(queue.name):
        trial_id = run.data.tags.get("trial_id", "")
        if not trial_id.isdigit():
            continue
        state = queue.trial(int(trial_id)).state.name
        if state == "RUNNING":
            continue
        if state == "COMPLETE":
            tracker.end_run(run.info.run_id, "FINISHED", "its worker died after the queue accepted the result")
        elif state == "WAITING":
            tracker.end_run(run.info.run_id, "KILLED", "handed back to the queue")
        else:
            live = queue.live_keys() if live is None else live
            if run.data.tags.get("run_key") in live:
                tracker.end_run(run.info.run_id, "KILLED", "its worker stopped sending heartbeats; the run was retried")
            else:
                tracker.end_run(run.info.run_id, "FAILED", "its worker stopped sending heartbeats, and no retries are left")
        ended += 1
    return ended


def _claim_group(queue: RunQueue, waiting: list[Claim], runs: dict) -> list[Claim]:
    """Claim the oldest waiting run and, up to a share of the queue, waiting runs that can train with it."""
    from vgtrack.grid import stack_key

    first = next((c for c in waiting if c.run_key in runs), None)
    if first is None:
        return []
    key = stack_key(runs[first.run_key].cell)
    cap = max(1, min(MAX_GROUP, math.ceil(len(waiting) / 8)))
    claimed: list[Claim] = []
    for candidate in waiting:
        if len(claimed) == cap:
            break
        if candidate.run_key in runs and stack_key(runs[candidate.run_key].cell) == key and queue.claim(candidate.trial_id):
            claimed.append(candidate)
    return claimed


class Worker:
    """One worker's loop over a queued sweep. ``run()`` returns how many runs it trained."""

    def __init__(self, queue: RunQueue, tracking_uri: str | None, stop: StopFlag) -> None:
        """Raises UsageError: the tracking URI (``--tracking-uri``, else the coordinator's) does not answer."""
        from vgtrack.tracking import open_tracker, resolve_uri, uri_origin

        self.queue, self.stop = queue, stop
        self._load_spec()
        attrs = queue.attrs
        queued_uri = attrs.get(TRACKING_ATTR) or self.spec.tracking.uri  # the coordinator's, kept in the queue
        self.uri = resolve_uri(tracking_uri, queued_uri)
        self.tracker = open_tracker(self.uri, self.spec.experiment_name, uri_origin(tracking_uri, queued_uri, f"study {queue.name}"))
        self.tracker.attach(attrs.get(PARENT_ATTR))
        self.heartbeat = attrs["heartbeat"]
        self.trained = 0

    def _load_spec(self) -> None:
        from vgtrack.data import load_dataset
        from vgtrack.grid import expand
        from vgtrack.spec import loads_spec

        attrs = self.queue.attrs
        self.spec = loads_spec(attrs[SPEC_ATTR], f"study {self.queue.name}")
        self.runs = {run.key: run for run in expand(self.spec)}
        self.data = load_dataset(self.spec.data)

    def run(self) -> int:
        beats = Heartbeats(self.queue, self.heartbeat)
        beats.start()
        try:
            while not self.stop.requested:
                reconcile(self.queue, self.tracker)
                waiting = self.queue.waiting()
                if any(c.run_key not in self.runs for c in waiting):
                    self._load_spec()  # the coordinator enqueued a changed sweep file since this worker started
                if not waiting:
                    if not self._running():
                        return self.trained
                    self._pause(self.heartbeat)  # others hold runs: wait, in case their workers die
                    continue
                claims = _claim_group(self.queue, waiting, self.runs)
                if claims:
                    beats.hold(c.trial_id for c in claims)
                    try:
                        self._train(claims)
                    finally:
                        beats.drop(c.trial_id for c in claims)
            raise Interrupted
        finally:
            beats.stop()

    def _running(self) -> bool:
        from optuna.trial import TrialState

        return bool(self.queue.trials((TrialState.RUNNING,)))

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stop.requested:
            time.sleep(0.2)

    def _train(self, claims: list[Claim]) -> None:
        from vgtrack.artifacts import run_outcome
        from vgtrack.records import RecordSampler
        from vgtrack.sweep import run_params
        from vgtrack.tracking import log_sampled
        from vgtrack.train import train_group
        from vgtrack.verdict import chance_level

        spec, group = self.spec, [self.runs[c.run_key] for c in claims]
        # The coordinator may have opened the sweep's parent run after this worker started.
        self.tracker.attach(self.queue.attrs.get(PARENT_ATTR))
        trackers = []
        for claim, run in zip(claims, group):
            tags = {"study": self.queue.name, "trial_id": str(claim.trial_id), "trial": str(claim.number), "attempt": str(claim.attempt)}
            trackers.append(self.tracker.start_run(run, spec.name, run_params(spec, run), tags))
            self.queue.set_trial_attr(claim.trial_id, "mlflow_run_id", trackers[-1].run_id)

        sampler = RecordSampler(
            [run.cell.depth for run in group], spec.train.epochs, spec.tracking.metric_points, lambda batch: log_sampled(trackers, batch)
        )

        def on_epoch(i, record) -> None:
            if self.stop.requested:
                raise Interrupted
            sampler(i, record)

        try:
            results = train_group(group, self.data, spec.train, on_epoch)
            log_sampled(trackers, sampler.take(), write=False)  # written with the run's end, in the same call
        except BaseException as exc:
            interrupted = isinstance(exc, (Interrupted, KeyboardInterrupt))
            log_sampled(trackers, sampler.take(), write=False)  # the epochs trained so far, written with the run's end
            for claim, run_tracker in zip(claims, trackers):
                if interrupted:
                    self.queue.release(claim.trial_id)
                    run_tracker.kill("interrupted (Ctrl-C or SIGTERM); handed back to the queue")
                else:
                    self.queue.fail(claim.trial_id)
                    run_tracker.fail(f"the worker crashed: {type(exc).__name__}: {exc}")
            raise
        chance = chance_level(self.data.y_test)
        with tempfile.TemporaryDirectory(prefix="vgtrack-worker-") as folder:
            for i, (claim, run, result, run_tracker) in enumerate(zip(claims, group, results, trackers)):
                out = run_outcome(Path(folder) / str(i), run, result, chance, spec.tracking.save_model)
                if out.failure is not None:
                    self.queue.fail(claim.trial_id)
                    run_tracker.fail(out.failure, out.artifacts, out.tags)
                    print(f"{run.name}: FAILED: {out.failure}", file=sys.stderr)
                    continue
                accuracy = out.final["test_accuracy"]
                counted = run_tracker.finish(out.seconds, out.artifacts, out.tags, commit=lambda c=claim, a=accuracy: self.queue.complete(c.trial_id, a))
                self.trained += counted
                note = "" if counted else " (superseded: it was declared stale and retried elsewhere)"
                print(f"{run.name}: test_acc={accuracy:.3f} {out.tags.get('verdict', '')}{note}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vgtrack.worker",
        description="Work on a sweep queued with `python -m vgtrack.sweep SPEC --storage URL` until no run is left.",
    )
    parser.add_argument("--storage", required=True, help="the queue's database, e.g. postgresql://USER@HOST/DB")
    parser.add_argument("--study", required=True, help="the sweep's name (its `name:` in the sweep file)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://HOST:5000 (default: MLFLOW_TRACKING_URI, else the coordinator's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with StopFlag() as stop:
        try:
            with long_lived():  # Optuna's and MLflow's modules live as long as the worker (see vgtrack.heap)
                worker = Worker(RunQueue.open(args.storage, args.study), args.tracking_uri, stop)
        except (UsageError, SpecError) as exc:
            print(exc, file=sys.stderr)
            return 2
        from vgtrack.train import warm_up

        with long_lived():  # and TensorFlow's, imported before the first claim
            warm_up()
        try:
            trained = worker.run()
        except (Interrupted, KeyboardInterrupt):
            print(f"{args.study}: worker stopped; its runs in progress were handed back to the queue", file=sys.stderr)
            return 130
    print(f"{args.study}: no run left; this worker trained {trained}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

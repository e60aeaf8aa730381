"""Local worker processes: each trains groups of runs and streams what it produced back.

The parent process is the only one that talks to MLflow (no "database is locked" on the
embedded sqlite store, whatever ``--workers`` is) and it logs while the workers train. A
worker sends, per group:

- ``("start", gid, pid)`` when it begins;
- ``("epochs", gid, {i: [EpochRecord, ...]})`` every few seconds: run i's records of the epochs
  that go to MLflow (records.RecordSampler);
- ``("trained", gid, [RunOutcome, ...], {i: [EpochRecord, ...]})`` as soon as training ends: each
  run's final numbers and verdict, and its last sampled records, which the parent logs while
  the worker writes the files;
- ``("files", gid, i, folder)`` once run i's artifact files are written (folder None: none kept);
- ``("done", gid, Timings)`` after the last of them;
- ``("error", gid, text)`` if the group crashed.

Workers are forked from a fork server that has imported TensorFlow once (:mod:`vgtrack.preload`)
but run nothing of it: TensorFlow does not survive a fork once its runtime has started, and in
the server it never starts. Workers ignore Ctrl-C: the parent decides when to stop them.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import resource
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from vgtrack.grid import Run
from vgtrack.spec import SweepSpec


@dataclass(frozen=True)
class Timings:
    """CPU seconds a worker spent on one group: training (graph, statistics included) and artifact files.

    CPU time, not wall time: the workers and the sweep process share the cores, and a busy
    neighbour should not count as this process's work.
    """

    training: float
    artifacts: float
    peak_rss_mb: float  # the worker's peak resident memory so far (its own: workers are not the sweep's children)


class _SweepGone(Exception):
    """The sweep process ended (SIGKILL, say): nobody reads this worker's messages any more."""


def _sweep_alive() -> bool:
    """Whether the sweep process that started this worker still runs.

    Not ``os.getppid()``: a worker's parent is the fork server, which outlives the sweep for as
    long as any worker does. multiprocessing gives each worker a pipe from the process that asked
    for it, and that pipe closes when the sweep process ends, however it ends.
    """
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


def run_group(gid: int, runs: list[Run], spec: SweepSpec, data, folder: Path, send, tracking: bool = True) -> None:
    """Train ``runs`` as one group, stream sampled records, report, write artifacts. Runs in a worker.

    ``tracking=False``: no records streamed and no artifact files written (see sweep.run_sweep).
    """
    from vgtrack.artifacts import run_summary, write_run_artifacts
    from vgtrack.records import RecordSampler
    from vgtrack.train import train_group
    from vgtrack.verdict import chance_level

    def send_epochs(batch) -> None:
        if not _sweep_alive():  # nobody will log this group
            raise _SweepGone
        send(("epochs", gid, batch))

    sampler = RecordSampler([run.cell.depth for run in runs], spec.train.epochs, spec.tracking.metric_points, send_epochs) if tracking else None
    send(("start", gid, os.getpid()))
    started = time.process_time()
    results = train_group(runs, data, spec.train, sampler)
    trained = time.process_time()
    chance = chance_level(data.y_test)
    send(("trained", gid, [run_summary(result, chance) for result in results], sampler.take() if sampler is not None else {}))
    for i, (run, result) in enumerate(zip(runs, results)):
        written = write_run_artifacts(folder / f"{gid}-{i}", run.cell, result, spec.tracking.save_model) if tracking else None
        send(("files", gid, i, None if written is None else str(written)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    send(("done", gid, Timings(trained - started, time.process_time() - trained, peak)))


def _worker_main(tasks, results, spec: SweepSpec, folder: str, tracking: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent handles it
    from vgtrack.data import load_dataset
    from vgtrack.train import warm_up

    warm_up()  # TensorFlow's settings, before the first group (the fork server imported it already)

    data = load_dataset(spec.data)
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if not _sweep_alive():  # leave instead of waiting forever
                break
            continue
        if task is None:
            return
        gid, runs = task
        try:
            run_group(gid, runs, spec, data, Path(folder), results.put, tracking)
        except _SweepGone:
            break
        except Exception:
            results.put(("error", gid, traceback.format_exc(limit=5)))
    # The sweep is gone: exit without waiting to flush messages into a pipe nobody reads.
    results.cancel_join_thread()


def _context():
    """Fork server with TensorFlow preloaded where the platform has one, else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["vgtrack.preload"])  # a failed preload only means workers import it themselves
    return context


class WorkerPool:
    """``workers`` processes training groups from a task queue.

    Example:
        >>> pool = WorkerPool(2, spec, "/tmp/vgtrack-artifacts")  # doctest: +SKIP
        >>> pool.submit(0, runs)
        >>> pool.get(timeout=1.0)
        ('start', 0, 12345)
    """

    def __init__(self, workers: int, spec: SweepSpec, folder: str | Path, tracking: bool = True) -> None:
        context = _context()
        self._context, self._spec, self._folder, self._tracking = context, spec, str(folder), tracking
        self.tasks, self.results = context.Queue(), context.Queue()
        self.processes: list = []
        self._owner: dict[int, int] = {}  # gid -> pid of the worker training it
        self._stopped = False
        self._deaths = 0
        # The first start waits for the fork server to import TensorFlow (seconds): start the workers
        # from a thread, so that the caller opens its MLflow store meanwhile on the other core.
        self._start_error: BaseException | None = None
        self._starting = threading.Thread(target=self._start_all, args=(workers,), name="vgtrack-pool-start", daemon=True)
        self._starting.start()

    def _start_all(self, workers: int) -> None:
        try:
            for _ in range(workers):
                self.processes.append(self._start())
        except BaseException as exc:  # raised to the caller by lost_groups
            self._start_error = exc

    def _start(self):
        process = self._context.Process(
            target=_worker_main, args=(self.tasks, self.results, self._spec, self._folder, self._tracking), daemon=True
        )
        process.start()
        return process

    def starting(self) -> bool:
        """Whether the workers are still being started (the first waits for the fork server's imports)."""
        return self._starting.is_alive()

    def submit(self, gid: int, runs: list[Run]) -> None:
        self.tasks.put((gid, runs))

    def get(self, timeout: float):
        """The next message, or None after ``timeout`` seconds."""
        try:
            message = self.results.get(timeout=timeout)
        except queue.Empty:
            return None
        if message[0] == "start":
            self._owner[message[1]] = message[2]
        elif message[0] in ("done", "error"):
            self._owner.pop(message[1], None)
        return message

    def lost_groups(self) -> list[tuple[int, str]]:
        """Groups whose worker died (killed, out of memory); a replacement worker is started.

        Raises:
            RuntimeError: the workers could not be started, or keep dying (e.g. they cannot even
                import what they need), so replacing them is pointless.
        """
        if self._starting.is_alive():
            return []
        if self._start_error is not None:
            raise RuntimeError(f"worker processes could not start: {self._start_error!r}") from self._start_error
        lost = []
        for index, process in enumerate(self.processes):
            if process.exitcode is None:
                continue
            self._deaths += 1
            if self._deaths > 2 * len(self.processes):
                raise RuntimeError(f"worker processes keep dying (the last with exit code {process.exitcode})")
            for gid, pid in list(self._owner.items()):
                if pid == process.pid:
                    lost.append((gid, f"worker process {pid} died (exit code {process.exitcode})"))
                    del self._owner[gid]
            self.processes[index] = self._start()
        return lost

    def close(self) -> None:
        """Let the workers finish and exit."""
        self._starting.join()
        for _ in self.processes:
            self.tasks.put(None)
        for process in self.processes:
            process.join(timeout=30)
        self.terminate()

    def terminate(self) -> None:
        """Stop every worker now (Ctrl-C, SIGTERM or an error in the parent). Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._starting.join()
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
        for q in (self.tasks, self.results):
            q.cancel_join_thread()
            q.close()

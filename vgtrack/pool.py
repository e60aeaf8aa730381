"""Local worker processes: each trains groups of runs and streams what it produced back.

The parent process is the only one that talks to MLflow (no "database is locked" on the
embedded sqlite store, whatever ``--workers`` is) and it logs while the workers train. A
worker sends, per group:

- ``("start", gid, pid)`` when it begins;
- ``("epochs", gid, {i: [EpochRecord, ...]})`` every few seconds: run i's records of the
  epochs that go to MLflow (records.logged_epochs);
- ``("done", gid, [RunOutcome, ...], Timings)`` with each run's artifact folder written;
- ``("error", gid, text)`` if the group crashed.

Workers are started with the "spawn" method (TensorFlow does not survive fork) and ignore
Ctrl-C: the parent decides when to stop them.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from vgtrack.grid import Run
from vgtrack.spec import SweepSpec

SEND_EVERY = 2.0  # seconds between "epochs" messages: the MLflow UI stays current, messages stay few


@dataclass(frozen=True)
class Timings:
    """CPU seconds a worker spent on one group: training (graph, statistics included) and artifact files.

    CPU time, not wall time: the workers and the sweep process share the cores, and a busy
    neighbour should not count as this process's work.
    """

    training: float
    artifacts: float


def run_group(gid: int, runs: list[Run], spec: SweepSpec, data, folder: Path, send) -> None:
    """Train ``runs`` as one group, stream sampled records, write artifacts, report. Runs in a worker."""
    from vgtrack.artifacts import run_outcome
    from vgtrack.records import RecordSampler
    from vgtrack.train import train_group
    from vgtrack.verdict import chance_level

    parent = os.getppid()

    def send_epochs(batch) -> None:
        if os.getppid() != parent:  # the sweep process died (SIGKILL): nobody will log this group
            raise SystemExit(1)
        send(("epochs", gid, batch))

    sampler = RecordSampler([run.cell.depth for run in runs], spec.train.epochs, spec.tracking.metric_points, send_epochs, SEND_EVERY)
    send(("start", gid, os.getpid()))
    started = time.process_time()
    results = train_group(runs, data, spec.train, sampler)
    trained = time.process_time()
    sampler.flush()
    chance = chance_level(data.y_test)
    outcomes = [
        run_outcome(folder / f"{gid}-{i}", run, result, chance, spec.tracking.save_model)
        for i, (run, result) in enumerate(zip(runs, results))
    ]
    send(("done", gid, outcomes, Timings(trained - started, time.process_time() - trained)))


def _worker_main(tasks, results, spec: SweepSpec, folder: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent handles it
    from vgtrack.data import load_dataset
    from vgtrack.train import warm_up

    warm_up()  # import TensorFlow now, while the parent opens the MLflow store

    parent = os.getppid()
    data = load_dataset(spec.data)
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the sweep process died: leave instead of waiting forever
                return
            continue
        if task is None:
            return
        gid, runs = task
        try:
            run_group(gid, runs, spec, data, Path(folder), results.put)
        except Exception:
            results.put(("error", gid, traceback.format_exc(limit=5)))


class WorkerPool:
    """``workers`` processes training groups from a task queue.

    Example:
        >>> pool = WorkerPool(2, spec, "/tmp/vgtrack-artifacts")  # doctest: +SKIP
        >>> pool.submit(0, runs)
        >>> pool.get(timeout=1.0)
        ('start', 0, 12345)
    """

    def __init__(self, workers: int, spec: SweepSpec, folder: str | Path) -> None:
        context = multiprocessing.get_context("spawn")
        self._context, self._spec, self._folder = context, spec, str(folder)
        self.tasks, self.results = context.Queue(), context.Queue()
        self.processes = [self._start() for _ in range(workers)]
        self._owner: dict[int, int] = {}  # gid -> pid of the worker training it
        self._stopped = False
        self._deaths = 0

    def _start(self):
        process = self._context.Process(
            target=_worker_main, args=(self.tasks, self.results, self._spec, self._folder), daemon=True
        )
        process.start()
        return process

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
            RuntimeError: workers keep dying (e.g. they cannot even start), so replacing them is pointless.
        """
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

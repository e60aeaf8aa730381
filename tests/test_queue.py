"""Sweeps across machines, tested natively on 127.0.0.1: the shared queue (Optuna RDB storage) on a real
PostgreSQL, a real ``mlflow server`` (PostgreSQL backend, served artifacts) and real worker processes.

Fresh databases are created for the test session and dropped after it. Without a PostgreSQL at
127.0.0.1:5432 (user root, trust auth; PGHOST/PGPORT/PGUSER override) these tests skip, saying why.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import yaml

from conftest import MLFLOW_SERVER_ENV, ROOT, tiny_spec

PG = {"host": os.environ.get("PGHOST", "127.0.0.1"), "port": os.environ.get("PGPORT", "5432"), "user": os.environ.get("PGUSER", "root")}
FAST_FAULTS = {"heartbeat": 1, "grace": 4, "retries": 1}
# For tests where no worker fails: a grace no CPU starvation reaches. With 4 s, a heartbeat held up
# that long (three workers, the coordinator, an MLflow server and PostgreSQL on two cores) makes
# the queue retry a run whose worker is alive, and the test sees a stray attempt.
NO_FAULTS = {"heartbeat": 1, "grace": 60, "retries": 1}


def _admin():
    import psycopg

    return psycopg.connect(host=PG["host"], port=PG["port"], user=PG["user"], dbname="postgres", autocommit=True, connect_timeout=3)


def _url(db: str) -> str:
    return f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{db}"


@pytest.fixture(scope="session")
def databases():
    """Two fresh databases, (queue, mlflow backend), dropped at the end of the session."""
    try:
        admin = _admin()
    except Exception as exc:
        pytest.skip(f"no PostgreSQL at {PG['host']}:{PG['port']} for user {PG['user']}: {' '.join(str(exc).split())[:120]}")
    names = [f"vgtrack_test_{os.getpid()}_{part}" for part in ("queue", "mlflow")]
    with admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    yield tuple(_url(name) for name in names)
    with _admin() as admin:  # a new connection: a test may have restarted PostgreSQL
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(databases, tmp_path_factory):
    """A real ``mlflow server`` on a free loopback port: PostgreSQL backend store, served artifacts."""
    import requests

    port = _free_port()
    artifacts = tmp_path_factory.mktemp("served-artifacts")
    log = open(tmp_path_factory.mktemp("mlflow-log") / "server.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", databases[1], "--serve-artifacts",
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **MLFLOW_SERVER_ENV},
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if requests.get(uri + "/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            pytest.fail(f"mlflow server did not start: {log.read()[-2000:]}")
        time.sleep(0.5)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture
def cluster(databases, mlflow_server, tmp_path):
    """(queue storage URL, tracking URI, write(spec) -> path) for one test; each test uses its own sweep name."""

    def write(spec: dict):
        path = tmp_path / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return databases[0], mlflow_server, write


def _sweep(path, storage, uri, *extra, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "vgtrack.sweep", str(path), "--storage", storage, "--tracking-uri", uri, "--no-progress", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=kwargs.get("timeout", 600),
    )


def _worker(storage, study, uri):
    return subprocess.Popen(
        [sys.executable, "-m", "vgtrack.worker", "--storage", storage, "--study", study, "--tracking-uri", uri],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _exit_ok(procs, timeout: float) -> list[str]:
    """Wait for each of ``procs`` to exit with status 0; their stderr, in order."""
    errs = []
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        errs.append(err)
    return errs


def _runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, []
    return client, client.search_runs([exp.experiment_id], "tags.role = 'run'", max_results=1000)


def _study(storage: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


def _wait_for_training(uri: str, experiment: str, procs, timeout: float = 240.0):
    """The first RUNNING run that has logged a train_loss point."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"a worker exited ({proc.returncode}) early: {proc.stderr.read()[-2000:]}")
        client, runs = _runs(uri, experiment)
        for run in runs:
            if run.info.status == "RUNNING" and client.get_metric_history(run.info.run_id, "train_loss"):
                return run
        time.sleep(0.3)
    raise AssertionError("no run started training in time")


def _one_finished_per_key(runs, expected: int) -> list:
    finished = [r for r in runs if r.info.status == "FINISHED"]
    keys = [r.data.tags["run_key"] for r in finished]
    assert len(finished) == expected and len(set(keys)) == expected, sorted(keys)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    return finished


@pytest.mark.slow
def test_queued_sweep_runs_each_run_once_across_three_workers_and_rerun_enqueues_nothing(cluster):
    storage, uri, write = cluster
    spec = tiny_spec(name="q-three", grid={"depth": [1, 2, 3], "width": [3, 4], "activation": ["tanh", "relu"]}, seeds=2, queue=NO_FAULTS)
    path = write(spec)
    enqueued = _sweep(path, storage, uri, "--enqueue-only")
    assert enqueued.returncode == 0, enqueued.stderr
    assert "q-three: 24 runs, 24 enqueued now; queue: 0 complete, 0 running, 24 waiting, 0 failed" in enqueued.stderr
    coordinator = subprocess.Popen(  # enqueues nothing more, opens the sweep's parent run, works alongside the two
        [sys.executable, "-m", "vgtrack.sweep", str(path), "--storage", storage, "--tracking-uri", uri, "--no-progress", "--workers", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while "mlflow_parent_run_id" not in _study(storage, "q-three").user_attrs and coordinator.poll() is None:
        assert time.monotonic() < deadline, "the coordinator did not open its parent run"
        time.sleep(0.3)
    joined = [_worker(storage, "q-three", uri) for _ in range(2)]
    _, err = coordinator.communicate(timeout=300)
    assert coordinator.returncode == 0, err
    assert "0 enqueued now" in err
    for err in _exit_ok(joined, timeout=300):
        assert "no run left" in err
    _, runs = _runs(uri, "q-three")
    finished = _one_finished_per_key(runs, 24)
    assert len(runs) == 24  # no duplicates, no stray attempts
    assert {r.data.tags["study"] for r in finished} == {"q-three"}
    assert len({r.data.tags["mlflow.parentRunId"] for r in finished}) == 1
    study = _study(storage, "q-three")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 24
    # running the coordinator again: nothing enqueued, the sweep is reported complete, no new trials
    again = _sweep(path, storage, uri)
    assert again.returncode == 0, again.stderr
    assert "q-three: 24 runs, 0 enqueued now; queue: 24 complete, 0 running, 0 waiting, 0 failed" in again.stderr
    assert "q-three: the sweep is complete" in again.stderr
    assert len(_study(storage, "q-three").trials) == 24


# Long enough that a worker is still training when the test acts on its first metrics (logged 2 s
# into a group): a tiny group trains 0.5 ms an epoch on the fastest machine seen (6,000 epochs in
# about 3 s), 3 ms on the slowest (2026-12-02), where each retry of a run trains all of it again.
LONG_EPOCHS = 10_000


def _one_worker_mid_run(cluster, name: str):
    """Enqueue two long runs that cannot share a graph, start one worker, wait until it trains one.

    Returns (storage, tracking URI, the worker process, the MLflow run it is training).
    """
    storage, uri, write = cluster
    spec = tiny_spec(name=name, grid={"depth": 1, "width": 3, "activation": ["tanh", "relu"]}, train={"epochs": LONG_EPOCHS, "batch_size": 32}, queue=FAST_FAULTS)
    assert _sweep(write(spec), storage, uri, "--enqueue-only").returncode == 0
    worker = _worker(storage, name, uri)
    return storage, uri, worker, _wait_for_training(uri, name, [worker])


@pytest.mark.slow
def test_sigkilled_worker_run_is_retried_once_and_its_attempt_ends_killed(cluster):
    storage, uri, victim_worker, victim = _one_worker_mid_run(cluster, "q-kill")
    rescuers = [_worker(storage, "q-kill", uri) for _ in range(2)]  # one takes the other run, one waits out the grace
    victim_worker.kill()
    victim_worker.wait(timeout=30)
    _exit_ok(rescuers, timeout=600)
    client, runs = _runs(uri, "q-kill")
    finished = _one_finished_per_key(runs, 2)
    killed = client.get_run(victim.info.run_id)
    assert killed.info.status == "KILLED"
    assert "stopped sending heartbeats" in killed.data.tags["end_reason"]
    assert victim.data.tags["run_key"] in {r.data.tags["run_key"] for r in finished}
    retried = next(r for r in finished if r.data.tags["run_key"] == victim.data.tags["run_key"])
    assert retried.data.tags["attempt"] == "2"
    states = sorted(t.state.name for t in _study(storage, "q-kill").trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL"]


@pytest.mark.slow
def test_paused_worker_that_resumes_after_its_run_was_retried_does_not_finish_it_twice(cluster):
    storage, uri, sleeper, paused = _one_worker_mid_run(cluster, "q-pause")
    sleeper.send_signal(signal.SIGSTOP)
    rescuers = [_worker(storage, "q-pause", uri) for _ in range(2)]
    try:
        _exit_ok(rescuers, timeout=600)  # one trains the other run, one retries the paused run after the grace period
    finally:
        sleeper.send_signal(signal.SIGCONT)
    _, err = sleeper.communicate(timeout=300)
    assert sleeper.returncode == 0, err
    client, runs = _runs(uri, "q-pause")
    _one_finished_per_key(runs, 2)
    assert client.get_run(paused.info.run_id).info.status == "KILLED"


def test_workers_ending_the_same_dead_runs_at_once_all_succeed(cluster):
    # Every worker reaps before it claims: after a worker dies, several may end its runs at the same
    # moment, and MLflow's set_tag (a read, then an insert) lets all but the first fail on the key.
    from vgtrack.tracking import SweepTracker

    _, uri, _ = cluster
    reapers = [SweepTracker(uri, "q-reap-race") for _ in range(4)]
    run_ids = [reapers[0].client.create_run(reapers[0].experiment_id, tags={"role": "run"}).info.run_id for _ in range(30)]
    start, errors = threading.Barrier(len(reapers)), []

    def reap(tracker) -> None:
        start.wait()
        try:
            for run_id in run_ids:
                tracker.end_run(run_id, "KILLED", "its worker stopped sending heartbeats; the run was retried")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reap, args=(tracker,)) for tracker in reapers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    _, runs = _runs(uri, "q-reap-race")
    assert sorted(r.info.run_id for r in runs) == sorted(run_ids)
    assert {(r.info.status, r.data.tags["end_reason"]) for r in runs} == {("KILLED", "its worker stopped sending heartbeats; the run was retried")}


def test_sigterm_stops_a_worker_within_seconds_its_run_killed_and_handed_back(cluster):
    storage, uri, worker, victim = _one_worker_mid_run(cluster, "q-term")
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert time.monotonic() - sent < 30
    assert worker.returncode == 130, err
    client, runs = _runs(uri, "q-term")
    assert client.get_run(victim.info.run_id).info.status == "KILLED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len(client.get_metric_history(victim.info.run_id, "train_loss")) > 0  # what was logged is kept
    trials = _study(storage, "q-term").trials
    assert sorted(t.state.name for t in trials) == ["WAITING", "WAITING"]  # handed back, no retry used up


def test_unreachable_storage_or_tracking_uri_is_one_line_exit_2_and_nothing_enqueued(cluster, databases):
    import optuna

    storage, uri, write = cluster
    path = write(tiny_spec(name="q-bad"))
    cases = [
        (f"{storage}_missing", uri, "--storage "),
        ("postgresql://root@127.0.0.1:1/x", uri, "--storage postgresql://root@127.0.0.1:1/x: cannot open the database"),
        ("not a url", uri, "--storage not a url: not a database URL"),
        (storage, "http://127.0.0.1:1", "--tracking-uri http://127.0.0.1:1: no MLflow server answers"),
    ]
    for bad_storage, bad_uri, expected in cases:
        done = _sweep(path, bad_storage, bad_uri, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith(expected), done.stderr
    assert "q-bad" not in optuna.get_all_study_names(storage)
    worker = subprocess.run(
        [sys.executable, "-m", "vgtrack.worker", "--storage", storage, "--study", "q-missing", "--tracking-uri", uri],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert worker.returncode == 2 and worker.stderr.startswith("--study q-missing: no such sweep in ")


def _restart_postgres() -> None:
    import shutil
    from pathlib import Path

    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").is_dir() else []
    if not versions or shutil.which("pg_ctlcluster") is None or os.geteuid() != 0 or PG["host"] not in ("127.0.0.1", "localhost"):
        pytest.skip("restarting PostgreSQL needs the local Debian cluster (pg_ctlcluster) and root")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"], check=True, timeout=120)


@pytest.mark.slow
def test_sweep_survives_a_postgresql_restart_mid_sweep(cluster):
    storage, uri, write = cluster
    spec = tiny_spec(
        # four runs, claimed one at a time by two workers: the first two train through the restart, the last two are claimed after it
        name="q-restart", grid={"depth": 1, "width": 3, "activation": ["tanh", "relu"]}, seeds=2,
        train={"epochs": LONG_EPOCHS, "batch_size": 32}, queue={"heartbeat": 1, "grace": 20, "retries": 1},
    )
    path = write(spec)
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "vgtrack.sweep", str(path), "--storage", storage, "--tracking-uri", uri, "--no-progress", "--workers", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_for_training(uri, "q-restart", [coordinator])
    _restart_postgres()  # the queue and MLflow's backend store go away for a few seconds
    _, err = coordinator.communicate(timeout=900)
    assert coordinator.returncode == 0, err
    assert "q-restart: queue: 4 complete, 0 failed, 0 not done" in err
    _, runs = _runs(uri, "q-restart")
    _one_finished_per_key(runs, 4)
    assert len(runs) == 4
    assert sorted(t.state.name for t in _study(storage, "q-restart").trials) == ["COMPLETE"] * 4

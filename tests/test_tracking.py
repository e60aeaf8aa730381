"""The MLflow sink on its own, on real sqlite stores in temp dirs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from vgtrack.grid import expand
from vgtrack.records import LAYER_STATS, EpochRecord
from vgtrack.spec import parse_spec
from vgtrack.tracking import SweepTracker

from conftest import ROOT, tiny_spec

OPEN = "import sys; from vgtrack.tracking import open_client; open_client(sys.argv[1]).search_experiments(); print('ok')"


def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    # MLflow alone breaks here ("Online migration expected to match one row"); the lock serializes creation.
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN, uri], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err[-1500:]


def _records(epochs: int, layers: int):
    names = tuple(f"layer_{i + 1:02d}" for i in range(layers))
    return [
        EpochRecord(e, 0.5, 0.6, 0.7, 0.8, names, {s: np.full(layers, e + 1.0) for s in LAYER_STATS})
        for e in range(epochs)
    ]


def test_a_run_writes_everything_within_mlflows_batch_limits(store, tmp_path):
    run = expand(parse_spec(tiny_spec()))[0]
    tracker = SweepTracker(store, "limits")
    params = {f"p{i:03d}": i for i in range(150)}  # more than the 100 params one call takes
    run_tracker = tracker.start_run(run, "limits", params)
    run_tracker.log_records(_records(epochs=100, layers=3))  # 100 x (4 + 4 x 3) = 1,600 points: two calls
    files = tmp_path / "files"
    files.mkdir()
    (files / "history.parquet").write_bytes(b"x" * 100)
    tags = {f"t{i:03d}": "v" for i in range(120)}
    assert run_tracker.finish(1.5, files, tags)
    client = tracker.client
    got = client.get_run(run_tracker.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {k: str(v) for k, v in params.items()}
    assert set(tags) <= set(got.data.tags)
    assert len(client.get_metric_history(run_tracker.run_id, "grad_l2/layer_03")) == 100
    assert got.data.metrics["train_seconds"] == 1.5
    assert [f.path for f in client.list_artifacts(run_tracker.run_id)] == ["history.parquet"]


def test_a_runs_last_records_are_written_with_its_end_in_one_call(store, monkeypatch):
    run = expand(parse_spec(tiny_spec()))[0]
    tracker = SweepTracker(store, "last")
    run_tracker = tracker.start_run(run, "last", {"depth": 2})
    calls = []
    log_batch = tracker.client.log_batch
    monkeypatch.setattr(tracker.client, "log_batch", lambda *a, **k: calls.append(k) or log_batch(*a, **k))
    run_tracker.log_records(_records(epochs=5, layers=2), write=False)
    assert calls == []
    assert run_tracker.finish(2.0, None, {"verdict": "learns"})
    assert len(calls) == 1 and len(calls[0]["metrics"]) == 5 * (4 + 4 * 2) + 1 and len(calls[0]["params"]) == 1
    got = tracker.client.get_run(run_tracker.run_id)
    assert got.info.status == "FINISHED" and got.data.tags["verdict"] == "learns"
    assert len(tracker.client.get_metric_history(run_tracker.run_id, "kernel_l1/layer_02")) == 5


def test_a_killed_run_keeps_its_params_and_metrics(store):
    run = expand(parse_spec(tiny_spec()))[0]
    tracker = SweepTracker(store, "killed")
    run_tracker = tracker.start_run(run, "killed", {"depth": 3})
    run_tracker.kill("interrupted")  # before any metrics arrived: the params are still written
    got = tracker.client.get_run(run_tracker.run_id)
    assert got.info.status == "KILLED" and got.data.params == {"depth": "3"} and got.data.tags["end_reason"] == "interrupted"


def test_a_reader_in_the_store_does_not_block_the_sweeps_writes(store):
    # The MLflow UI or a report reading while a sweep logs. In SQLite's default journal mode a
    # read transaction holds off every commit ("database is locked" after the busy timeout).
    import sqlite3
    import time

    from vgtrack.tracking import _sqlite_file

    tracker = SweepTracker(store, "readers")
    run_tracker = tracker.start_run(expand(parse_spec(tiny_spec()))[0], "readers", {"depth": 1})
    reader = sqlite3.connect(_sqlite_file(store))
    assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM runs").fetchone()  # a read transaction, left open
    started = time.monotonic()
    run_tracker.log_records(_records(epochs=3, layers=2))
    assert run_tracker.finish(1.0, None)
    assert time.monotonic() - started < 3
    reader.close()
    assert tracker.client.get_run(run_tracker.run_id).info.status == "FINISHED"

"""End to end through ``python -m vgtrack.sweep`` on real MLflow sqlite stores in temp dirs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vgtrack.sweep import main
from vgtrack.tracking import open_client

from conftest import ROOT, tiny_spec


def _children(uri: str, experiment: str = "tiny"):
    client = open_client(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.role = 'run'", max_results=1000)
    return client, runs


def _parents(uri: str, experiment: str = "tiny"):
    client = open_client(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.role = 'sweep'", max_results=1000)


def test_sweep_logs_params_metrics_tags_and_artifacts(write_spec, store, capsys):
    path = write_spec(tiny_spec())
    assert main([str(path), "--tracking-uri", store, "--no-progress"]) == 0
    client, runs = _children(store)
    assert sorted(r.info.run_name for r in runs) == sorted(
        ["tanh-xavier-sgd-d01-w03-s0", "tanh-xavier-sgd-d02-w03-s0", "relu-xavier-sgd-d01-w03-s0", "relu-xavier-sgd-d02-w03-s0"]
    )
    assert {r.info.status for r in runs} == {"FINISHED"}
    (parent,) = _parents(store)
    assert parent.info.status == "FINISHED"
    assert {k: parent.data.tags[k] for k in ("finished", "failed", "skipped")} == {"finished": "4", "failed": "0", "skipped": "0"}
    run = next(r for r in runs if r.info.run_name == "relu-xavier-sgd-d02-w03-s0")
    params = run.data.params
    assert {k: params[k] for k in ("depth", "width", "activation", "initializer", "optimizer", "seed", "epochs", "batch_size")} == {
        "depth": "2", "width": "3", "activation": "relu", "initializer": "xavier", "optimizer": "sgd",
        "seed": "0", "epochs": "4", "batch_size": "32",
    }
    assert (params["learning_rate"], params["momentum"], params["n_samples"], params["factor"]) == ("0.01", "0.9", "120", "0.8")
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == parent.info.run_id
    assert tags["sweep"] == "tiny" and tags["seed"] == "0" and len(tags["run_key"]) == 16 and len(tags["cell_id"]) == 16
    # step = epoch; metric_points 50: 25 for the 4 scalars (every epoch of 4), 25 for a depth-2 run's
    # 12 layer series (2 each: the first epoch and the last)
    for key in ("test_accuracy", "train_loss"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1, 2, 3]
    for key in ("grad_mean_abs/layer_01", "kernel_l1/layer_03"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 3]
    layer_keys = sorted(k for k in run.data.metrics if k.startswith("grad_mean_abs/"))
    assert layer_keys == ["grad_mean_abs/layer_01", "grad_mean_abs/layer_02", "grad_mean_abs/layer_03"]
    for stat in ("grad_std", "grad_l2", "kernel_l1"):
        assert f"{stat}/layer_03" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"history.parquet", "accuracy.png", "gradients.png"}
    import pandas as pd

    frame = pd.read_parquet(client.download_artifacts(run.info.run_id, "history.parquet"))
    assert len(frame) == 4 and frame["test_accuracy"].iloc[-1] == pytest.approx(run.data.metrics["test_accuracy"])
    assert "spec.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_rerun_skips_finished_runs(write_spec, store, capsys):
    path = write_spec(tiny_spec())
    assert main([str(path), "--tracking-uri", store, "--no-progress"]) == 0
    capsys.readouterr()
    assert main([str(path), "--tracking-uri", store, "--no-progress"]) == 0
    assert "4 runs, 4 already finished (skipped), 0 to run" in capsys.readouterr().err
    _, runs = _children(store)
    assert len(runs) == 4
    # one more seed: only the new runs train
    path = write_spec(tiny_spec(seeds=2))
    assert main([str(path), "--tracking-uri", store, "--no-progress"]) == 0
    assert "8 runs, 4 already finished (skipped), 4 to run" in capsys.readouterr().err
    _, runs = _children(store)
    assert len(runs) == 8 and len({r.data.tags["run_key"] for r in runs}) == 8


def test_the_sweep_process_freezes_its_imports_while_it_sweeps(write_spec, store, monkeypatch):
    """MLflow's modules stay out of the sweep process's full collections while it logs, and are
    handed back to the collector when the sweep ends."""
    import gc

    import vgtrack.sweep

    frozen, sweep = [], vgtrack.sweep._sweep

    def counting(*args, **kwargs):
        frozen.append(gc.get_freeze_count())
        return sweep(*args, **kwargs)

    monkeypatch.setattr(vgtrack.sweep, "_sweep", counting)
    assert main([str(write_spec(tiny_spec())), "--tracking-uri", store, "--no-progress"]) == 0
    assert frozen[0] > 10_000 and gc.get_freeze_count() == 0


def test_runs_are_created_for_the_first_groups_then_while_the_workers_start(write_spec, store):
    """What the sweep process does while the fork server imports TensorFlow: the runs of the groups
    that start first, then of the next groups for as long as the workers are not up."""
    from vgtrack.grid import expand
    from vgtrack.spec import load_spec
    from vgtrack.sweep import SweepOutcome, _Sweeping
    from vgtrack.tracking import SweepTracker

    spec = load_spec(write_spec(tiny_spec(grid={"depth": 1, "width": [3, 4, 5, 6], "activation": "tanh", "initializer": "xavier"})))
    groups = [[run] for run in expand(spec)]  # four groups (one width each)
    tracker = SweepTracker(store, spec.experiment_name)
    sweeping = _Sweeping(spec, tracker, groups, None, SweepOutcome(total=4, skipped=0))
    answers = iter([True, False])  # the workers come up after the second group
    sweeping.start_groups(1, lambda: next(answers))
    assert sorted(sweeping.runs) == [0, 1]
    _, runs = _children(store)
    assert sorted(r.info.run_name for r in runs) == sorted(run.name for group in groups[:2] for run in group)
    assert {r.info.status for r in runs} == {"RUNNING"}


def test_dry_run_trains_nothing(write_spec, tmp_path, capsys):
    path = write_spec(tiny_spec(seeds=3))
    assert main([str(path), "--dry-run", "--tracking-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny: 12 runs = 4 cells x 3 seeds x 4 epochs\n")
    assert "relu-xavier-sgd-d02-w03" in out and "estimated duration: ~" in out
    assert not (tmp_path / "mlruns").exists()


NOBODY = "http://127.0.0.1:1"  # a port nothing listens on: the connection is refused at once


@pytest.mark.parametrize("origin", ["flag", "env", "spec"])
def test_a_tracking_uri_nobody_answers_is_one_line_naming_where_it_came_from(origin, write_spec, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = write_spec(tiny_spec(tracking={"uri": NOBODY}) if origin == "spec" else tiny_spec())
    flags = ["--tracking-uri", NOBODY] if origin == "flag" else []
    if origin == "env":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", NOBODY)
    assert main([str(path), "--no-progress", *flags]) == 2
    named = {"flag": "--tracking-uri", "env": "MLFLOW_TRACKING_URI", "spec": f"{path}: tracking.uri"}[origin]
    assert capsys.readouterr().err.splitlines()[-1:] == [f"{named} {NOBODY}: no MLflow server answers (ConnectionError)"]
    assert not (tmp_path / "mlruns").exists()  # nothing trained or logged anywhere else


def test_a_tracking_store_that_cannot_open_is_one_line(write_spec, capsys):
    path = write_spec(tiny_spec())
    assert main([str(path), "--no-progress", "--tracking-uri", "bogus://x"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("--tracking-uri bogus://x: cannot open the tracking store: UnsupportedModelRegistryStoreURIException: ")
    assert not any("Traceback" in line for line in lines)


@pytest.mark.parametrize("storage", ["not a url", "bogus://x"])
def test_a_bad_storage_fails_before_the_tracking_store_is_made(storage, write_spec, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default tracking store would be ./mlruns/mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = write_spec(tiny_spec())
    assert main([str(path), "--no-progress", "--storage", storage]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"--storage {storage}: "), lines
    assert not (tmp_path / "mlruns").exists()


def test_failed_run_is_recorded_and_the_sweep_goes_on(write_spec, store):
    # depth 3 relu + N(0, 1) at lr 1e12 diverges to NaN; the other cell trains normally
    spec = tiny_spec(grid={"depth": 3, "activation": ["relu", "tanh"], "initializer": "normal"}, optimizers={"sgd": {"learning_rate": 1e12}})
    spec["exclude"] = []
    path = write_spec(spec)
    assert main([str(path), "--tracking-uri", store, "--no-progress"]) == 0
    _, runs = _children(store)
    by_name = {r.info.run_name: r for r in runs}
    failed = by_name["relu-normal-sgd-d03-w05-s0"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["failure_reason"].startswith("train loss became nan")
    assert len(by_name) == 2


def _wait_for_running(uri: str, proc, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the sweep exited ({proc.returncode}) before a run started: {proc.stderr.read()[-2000:]}")
        try:
            client, runs = _children(uri)
        except Exception:  # the store or experiment does not exist yet
            runs = []
        running = [r for r in runs if r.info.status == "RUNNING"]
        if running and client.get_metric_history(running[0].info.run_id, "train_loss"):
            return running[0]
        time.sleep(0.3)
    raise AssertionError("no run started training in time")


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (workers, the fork server they come from), read from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _gone(pids: set[int], timeout: float) -> set[int]:
    """The processes of ``pids`` still alive (zombies count as gone) after waiting up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        alive = set()
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.add(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


# Long enough that no run ends before the test stops the sweep: a tiny run trains 0.5-3 ms an epoch
# (the fastest and the slowest machine seen), its first metrics reach MLflow 2 s after its group
# starts, and the test acts on them.
LONG_EPOCHS = 8_000


def _start_sweep(path, uri):
    return subprocess.Popen(
        [sys.executable, "-m", "vgtrack.sweep", str(path), "--tracking-uri", uri, "--no-progress"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_marks_the_run_killed_and_rerun_finishes(write_spec, store, signum):
    path = write_spec(tiny_spec(train={"epochs": LONG_EPOCHS, "batch_size": 32}))
    proc = _start_sweep(path, store)
    victim = _wait_for_running(store, proc)
    workers = _descendants(proc.pid)
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10, "a stop request must be honoured within seconds"
    assert proc.returncode == 130, err
    assert not _gone(workers, timeout=10)
    client, runs = _children(store)
    assert {r.info.status for r in runs} == {"KILLED"}
    assert client.get_run(victim.info.run_id).info.status == "KILLED"
    assert [p.info.status for p in _parents(store)] == ["KILLED"]
    assert len(client.get_metric_history(victim.info.run_id, "train_loss")) > 0  # what was logged is kept


@pytest.mark.slow
def test_sigkilled_sweep_is_reaped_and_rerun(write_spec, store, capsys):
    path = write_spec(tiny_spec(train={"epochs": LONG_EPOCHS, "batch_size": 32}))
    proc = _start_sweep(path, store)
    victim = _wait_for_running(store, proc)
    workers = _descendants(proc.pid)
    assert len(workers) >= 2
    proc.kill()
    proc.wait(timeout=30)
    assert not _gone(workers, timeout=20), "workers must leave once their sweep process is gone"
    client, _ = _children(store)
    assert client.get_run(victim.info.run_id).info.status == "RUNNING"  # nobody could end it
    proc = _start_sweep(path, store)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "orphaned RUNNING runs marked KILLED" in err
    client, runs = _children(store)
    assert client.get_run(victim.info.run_id).info.status == "KILLED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 4 and len({r.data.tags["run_key"] for r in finished}) == 4
    assert victim.data.tags["run_key"] in {r.data.tags["run_key"] for r in finished}
    assert sorted(p.info.status for p in _parents(store)) == ["FINISHED", "KILLED"]


@pytest.mark.slow
def test_workers_leave_when_the_sweep_process_is_killed(write_spec, store):
    # Every epoch goes to MLflow: the workers' messages are larger than a pipe holds, so a worker
    # that waited to flush them into a pipe nobody reads would never exit.
    path = write_spec(tiny_spec(train={"epochs": 3000, "batch_size": 32}, tracking={"metric_points": 100_000}))
    proc = _start_sweep(path, store)
    _wait_for_running(store, proc)
    workers = _descendants(proc.pid)
    proc.kill()
    proc.wait(timeout=30)
    assert not _gone(workers, timeout=20)


def test_saved_model_loads_and_reproduces_the_logged_accuracy(write_spec, store):
    import keras
    import numpy as np

    from vgtrack.data import load_dataset
    from vgtrack.spec import parse_spec

    content = tiny_spec(grid={"depth": 2, "width": 3, "activation": "relu", "initializer": "he"}, tracking={"save_model": True})
    path = write_spec(content)
    assert main([str(path), "--tracking-uri", store, "--no-progress", "--workers", "1"]) == 0
    client, (run,) = _children(store)
    assert "model.keras" in {a.path for a in client.list_artifacts(run.info.run_id)}
    model = keras.saving.load_model(client.download_artifacts(run.info.run_id, "model.keras"))
    data = load_dataset(parse_spec(content).data)
    accuracy = np.mean((model.predict(data.x_test, verbose=0)[:, 0] > 0.5) == data.y_test)
    assert accuracy == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-6)
    _, keras_accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
    assert keras_accuracy == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-6)


def test_two_workers_share_one_sqlite_store(write_spec, store):
    path = write_spec(tiny_spec(grid={"depth": [1, 2, 3], "width": [3, 4], "activation": ["tanh", "relu"]}, seeds=2))
    done = subprocess.run(
        [sys.executable, "-m", "vgtrack.sweep", str(path), "--tracking-uri", store, "--no-progress", "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "database is locked" not in done.stderr
    assert "24 finished, 0 failed, 0 skipped, 0 not done" in done.stderr
    _, runs = _children(store)
    assert len(runs) == 24 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["run_key"] for r in runs}) == 24
    assert len({r.data.tags["pid"] for r in runs}) == 1  # one process writes to MLflow: the sweep's

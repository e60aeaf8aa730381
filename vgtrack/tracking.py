"""Where records go: the MLflow sink. The only module that imports mlflow.

One parent run per sweep invocation (:class:`SweepTracker`), one nested child run per
(cell, seed) (:class:`RunTracker`). A child becomes FINISHED only after its metrics and
artifacts are all written, so a FINISHED run is always complete and is what a re-run skips.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import closing
from pathlib import Path

from vgtrack.grid import Run
from vgtrack.records import EpochRecord, metric_values

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
# MLflow prints a "View run at <url>" line for every run it ends on a server; a sweep ends thousands.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# MLflow's usage telemetry inspects every client call it wraps (about 3 ms of a run's 35 on the
# sqlite store); a sweep makes thousands. MLFLOW_DISABLE_TELEMETRY=false turns it back on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
MAX_BATCH = 1000  # MLflow's limit on values (metrics, params and tags together) in one log_batch call
REASON_CHARS = 5000  # of a failure or end reason kept in its tag (a traceback can be longer than MLflow takes)


def resolve_uri(cli_uri: str | None, spec_uri: str | None) -> str:
    """``--tracking-uri`` beats ``MLFLOW_TRACKING_URI``, which beats the spec, which beats the default."""
    return cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or spec_uri or DEFAULT_URI


def uri_origin(cli_uri: str | None, spec_uri: str | None, spec_path: str) -> str:
    """Where :func:`resolve_uri` took its URI from, as an error about the URI names it.

    Example:
        >>> uri_origin(None, "http://mlflow:5000", "sweeps/depth.yaml")  # doctest: +SKIP (MLFLOW_TRACKING_URI unset)
        'sweeps/depth.yaml: tracking.uri'
    """
    if cli_uri:
        return "--tracking-uri"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return "MLFLOW_TRACKING_URI"
    if spec_uri:
        return f"{spec_path}: tracking.uri"
    return "tracking URI"


def _sqlite_file(uri: str) -> Path | None:
    # sqlite:///rel/path.db and sqlite:////abs/path.db: the path is what follows the third slash.
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?")[0])


def _sqlite_dir(uri: str) -> Path | None:
    path = _sqlite_file(uri)
    return None if path is None else path.parent


def open_client(uri: str):
    """An ``MlflowClient`` whose store is ready to use.

    MLflow creates and migrates a new sqlite store on first use, and two processes doing that at
    once break it ("Online migration expected to match one row"). For sqlite URIs, store creation
    is serialized with a lock file next to the database; other stores are opened as they are.

    A sqlite store is switched to write-ahead logging (a setting kept in the file): a commit
    costs one sync instead of several, and the MLflow UI or a report can read while a sweep
    writes. Commits stay durable (synchronous=FULL, SQLite's default).
    """
    from mlflow.tracking import MlflowClient

    folder = _sqlite_dir(uri)
    if folder is None:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
        return client
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".vgtrack-store.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # creates and migrates the tables, under the lock
        import sqlite3

        with closing(sqlite3.connect(_sqlite_file(uri))) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    return client


def check_server(uri: str, origin: str = "--tracking-uri") -> None:
    """For an http(s) URI, that an MLflow server answers its ``/health``; other URIs pass.

    Raises:
        UsageError: nobody answers, or not OK.
    """
    from vgtrack.errors import UsageError

    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        answer = requests.get(uri.rstrip("/") + "/health", timeout=10)
    except requests.RequestException as exc:
        raise UsageError(f"{origin} {uri}: no MLflow server answers ({type(exc).__name__})") from None
    if answer.status_code != 200:
        raise UsageError(f"{origin} {uri}: not an MLflow server (GET /health answered {answer.status_code})")


def open_tracker(uri: str, experiment: str, origin: str = "--tracking-uri") -> SweepTracker:
    """A :class:`SweepTracker` on ``uri``, failing fast and in one line where MLflow's client would
    retry for minutes or raise a traceback. ``origin`` is where the URI came from (:func:`uri_origin`);
    the error starts with it.

    Raises:
        UsageError: an http(s) URI whose ``/health`` does not answer OK, or a store that cannot be opened.
    """
    from vgtrack.errors import UsageError

    check_server(uri, origin)
    try:
        return SweepTracker(uri, experiment)
    except Exception as exc:
        text = " ".join(str(exc).split())[:200]
        raise UsageError(f"{origin} {uri}: cannot open the tracking store: {type(exc).__name__}: {text}") from None


def search_all(client, experiment_id: str, filter_string: str, order_by: list[str] | None = None) -> list:
    """Every run of the experiment that ``filter_string`` matches, page after page (a call returns at most 5,000)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=5000, order_by=order_by, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _now_ms() -> int:
    return int(time.time() * 1000)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SweepTracker:
    """The MLflow side of one sweep invocation.

    Example:
        >>> tracker = SweepTracker("sqlite:///mlruns/mlflow.db", "depth")  # doctest: +SKIP
        >>> done = tracker.finished_keys()
        >>> tracker.open("depth", n_runs=60, spec_path="sweeps/depth.yaml")
        >>> run_tracker = tracker.start_run(run, "depth", params)
    """

    def __init__(self, uri: str, experiment: str) -> None:
        from mlflow.exceptions import MlflowException

        self.uri = uri
        folder = _sqlite_dir(uri)
        self.client = open_client(uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = (folder.resolve() / "artifacts" / experiment).as_uri() if folder is not None else None
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except MlflowException as exc:  # another process created it first
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            self.experiment_id = found.experiment_id
        self.parent_id: str | None = None

    def _search(self, filter_string: str) -> list:
        return search_all(self.client, self.experiment_id, filter_string)

    def finished_keys(self) -> set[str]:
        """Run keys that already have a FINISHED run in the experiment."""
        runs = self._search("attributes.status = 'FINISHED' and tags.role = 'run'")
        return {r.data.tags["run_key"] for r in runs if "run_key" in r.data.tags}

    def reap_orphans(self) -> int:
        """Mark KILLED the RUNNING runs of this host whose process is gone (a SIGKILL or a power cut)."""
        host, reaped = socket.gethostname(), 0
        for run in self._search(f"attributes.status = 'RUNNING' and tags.host = '{host}'"):
            pid = run.data.tags.get("pid", "")
            if pid.isdigit() and not _pid_alive(int(pid)):
                self.end_run(run.info.run_id, "KILLED", f"process {pid} died without ending the run")
                reaped += 1
        return reaped

    def attach(self, parent_id: str | None) -> None:
        """Make new runs children of an existing parent run (a queue worker joins its coordinator's sweep)."""
        self.parent_id = parent_id

    def queue_runs(self, study: str, status: str = "RUNNING") -> list:
        """Runs of queue ``study`` in ``status``, with their tags (trial_id, run_key)."""
        return self._search(f"attributes.status = '{status}' and tags.role = 'run' and tags.study = '{study}'")

    def end_run(self, run_id: str, status: str, reason: str) -> None:
        """End someone else's run (its worker died): FINISHED, KILLED or FAILED, with why.

        Several workers may reap the same run at once: MLflow's ``set_tag`` reads, then inserts, and
        all but the first insert fail on the tag's key. A reaper whose tag is then found written
        by another goes on to end the run as it would have (the same queue state, the same end).
        """
        key = "failure_reason" if status == "FAILED" else "end_reason"
        try:
            self.client.set_tag(run_id, key, reason[:REASON_CHARS])
        except Exception:
            if key not in self.client.get_run(run_id).data.tags:
                raise
        self.client.set_terminated(run_id, status)

    def _owner_tags(self) -> dict[str, str]:
        return {"host": socket.gethostname(), "pid": str(os.getpid())}

    def open(self, sweep: str, n_runs: int, spec_path: str, spec_text: str) -> str:
        """Start the parent run of this invocation; returns its run id."""
        tags = {"sweep": sweep, "role": "sweep", **self._owner_tags()}
        run = self.client.create_run(self.experiment_id, run_name=f"{sweep}-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags)
        self.parent_id = run.info.run_id
        from mlflow.entities import Param

        self.client.log_batch(self.parent_id, params=[Param("spec", spec_path), Param("n_runs", str(n_runs))])
        self.client.log_text(self.parent_id, spec_text, "spec.yaml")
        return self.parent_id

    def close(self, status: str, summary: dict[str, str] | None = None) -> None:
        """End the parent run: FINISHED, KILLED (interrupted) or FAILED (crashed), its ``summary``
        tags written in one call (one ``set_tag`` per tag made ending a sweep take 16 ms instead of 12)."""
        if self.parent_id is None:
            return
        if summary:
            from mlflow.entities import RunTag

            self.client.log_batch(self.parent_id, tags=[RunTag(k, v) for k, v in summary.items()])
        self.client.set_terminated(self.parent_id, status)
        self.parent_id = None

    def start_run(self, run: Run, sweep: str, params: dict, extra_tags: dict[str, str] | None = None) -> RunTracker:
        """Create the child run of ``run`` (RUNNING) with its tags; its params go with its first metrics."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        tags = {
            "sweep": sweep, "role": "run", "run_key": run.key, "cell_id": run.cell_id,
            "seed": str(run.seed), "config": run.cell.config, **self._owner_tags(), **(extra_tags or {}),
        }
        if self.parent_id is not None:
            tags[MLFLOW_PARENT_RUN_ID] = self.parent_id
        created = self.client.create_run(self.experiment_id, run_name=run.name, tags=tags)
        return RunTracker(self.client, created.info, params)


def log_sampled(trackers: list, batch: dict[int, list[EpochRecord]], write: bool = True) -> None:
    """Hand a :class:`~vgtrack.records.RecordSampler` batch (``{run index: records}``) to the runs'
    trackers; ``write=False`` keeps them for the run's end (see :meth:`RunTracker.log_records`)."""
    for i, records in batch.items():
        trackers[i].log_records(records, write)


class RunTracker:
    """One child run: receives its sampled epoch records, then ends FINISHED, FAILED or KILLED.

    Each write is one ``log_batch`` call where MLflow's limits allow (1000 values, 100 params,
    100 tags): a call costs about as much as 60 metric points, so the params ride with the first
    metrics and the verdict tags with the last. Which epochs are logged is the sender's choice
    (records.metric_plan); the full history arrives as the ``history.parquet`` artifact.
    """

    def __init__(self, client, info, params: dict | None = None) -> None:
        from mlflow.entities import Param

        self.client, self.run_id, self._artifact_uri = client, info.run_id, info.artifact_uri
        self._params = [Param(k, str(v)) for k, v in (params or {}).items()]
        self._pending: list = []
        self.ended = False  # once FINISHED, FAILED or KILLED, later fail/kill calls leave the run as it is

    def log_records(self, records: list[EpochRecord], write: bool = True) -> None:
        """Log ``records`` now (they arrive already batched, every few seconds), or, ``write=False``,
        with the run's end (finish, fail or kill), in the same calls."""
        from mlflow.entities import Metric

        ts = _now_ms()
        for record in records:
            self._pending += [Metric(k, v, ts, record.epoch) for k, v in metric_values(record).items()]
        if write:
            self._write()

    def _write(self, tags: dict[str, str] | None = None) -> None:
        """Everything not yet written (the params, once; the metrics) and ``tags``, in as few calls as MLflow allows."""
        from mlflow.entities import RunTag

        params, self._params = self._params, []
        metrics, self._pending = self._pending, []
        tag_items = [RunTag(k, v) for k, v in (tags or {}).items()]
        while params or metrics or tag_items:
            some_params, params = params[:100], params[100:]
            some_tags, tag_items = tag_items[:100], tag_items[100:]
            room = MAX_BATCH - len(some_params) - len(some_tags)
            some_metrics, metrics = metrics[:room], metrics[room:]
            self.client.log_batch(self.run_id, metrics=some_metrics, params=some_params, tags=some_tags)

    def _upload(self, folder: str | Path | None) -> None:
        """The files of ``folder`` into the run's artifacts, through the repository its artifact URI names
        (what ``MlflowClient.log_artifacts`` does after fetching the whole run again to learn that URI)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        if folder is not None and any(Path(folder).iterdir()):
            get_artifact_repository(self._artifact_uri, tracking_uri=self.client.tracking_uri).log_artifacts(str(folder))

    def conclude(self, seconds: float, tags: dict[str, str] | None = None, failure: str | None = None) -> None:
        """Write what is left of the run's records, its ``train_seconds`` and its end tags (the
        verdict; ``failure_reason`` if it failed), in as few calls as MLflow allows. The run stays
        RUNNING until :meth:`end`: its artifacts are still being written."""
        from mlflow.entities import Metric

        self._pending.append(Metric("train_seconds", seconds, _now_ms(), 0))
        self._write({**(tags or {}), **({"failure_reason": failure[:REASON_CHARS]} if failure else {})})

    def end(self, artifacts: str | Path | None, failed: bool = False, commit=None) -> bool:
        """Upload the artifacts, then mark the run FINISHED (FAILED if ``failed``): a FINISHED run is complete.

        ``commit()``, if given, is asked between the two (the queue's "this result counts"); when
        it answers False the run ends KILLED instead, as superseded. Returns whether it FINISHED.
        """
        self._upload(artifacts)
        if failed:
            self.client.set_terminated(self.run_id, "FAILED")
            self.ended = True
            return False
        if commit is not None and not commit():
            self.kill("superseded: the run was declared stale and retried elsewhere")
            return False
        self.client.set_terminated(self.run_id, "FINISHED")
        self.ended = True
        return True

    def finish(
        self, seconds: float, artifacts: str | Path | None, tags: dict[str, str] | None = None, commit=None
    ) -> bool:
        """:meth:`conclude` and :meth:`end` in one: what is left, the verdict tags, the artifacts, then FINISHED."""
        self.conclude(seconds, tags)
        return self.end(artifacts, commit=commit)

    def fail(self, reason: str, artifacts: str | Path | None = None, tags: dict[str, str] | None = None) -> None:
        """Keep what was logged, record why, and mark the run FAILED."""
        if self.ended:
            return
        self._write({"failure_reason": reason[:REASON_CHARS], **(tags or {})})
        self.end(artifacts, failed=True)

    def kill(self, reason: str) -> None:
        """Interrupted: keep the metrics already received and mark the run KILLED, quickly."""
        if self.ended:
            return
        self._write({"end_reason": reason})
        self.client.set_terminated(self.run_id, "KILLED")
        self.ended = True


class NullTracker:
    """A sweep's tracker that keeps nothing: :class:`SweepTracker`'s methods, doing nothing.

    ``run_sweep(..., tracking=False)`` uses it, so that the benchmark can time the sweep path
    without tracking, side by side with it.
    """

    def reap_orphans(self) -> int:
        return 0

    def finished_keys(self) -> set[str]:
        return set()

    def open(self, sweep: str, n_runs: int, spec_path: str, spec_text: str) -> None:
        return None

    def close(self, status: str, summary: dict[str, str] | None = None) -> None:
        return None

    def start_run(self, run: Run, sweep: str, params: dict, extra_tags: dict[str, str] | None = None) -> NullRunTracker:
        return NullRunTracker()


class NullRunTracker:
    """:class:`RunTracker`'s methods, keeping nothing but whether the run has ended."""

    def __init__(self) -> None:
        self.ended = False

    def log_records(self, records: list[EpochRecord], write: bool = True) -> None:
        return None

    def conclude(self, seconds: float, tags=None, failure=None) -> None:
        return None

    def end(self, artifacts, failed: bool = False, commit=None) -> bool:
        self.ended = True
        return not failed

    def finish(self, seconds: float, artifacts, tags=None, commit=None) -> bool:
        return self.end(artifacts)

    def fail(self, reason: str, artifacts=None, tags=None) -> None:
        self.ended = True

    def kill(self, reason: str) -> None:
        self.ended = True

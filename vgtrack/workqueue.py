"""The shared queue of runs for many machines: Optuna's RDB storage (PostgreSQL) holds one trial per (cell, seed).

Optuna is used as a queue, not as a sampler: the coordinator enqueues every run as a WAITING
trial whose fixed params are the run's parameters and whose ``run_key`` user attribute names
it; a worker claims a WAITING trial by switching it to RUNNING, which Optuna does under a row
lock (``SELECT ... FOR UPDATE``), so one worker at a time holds a run. Nobody calls
``study.ask()``: it would create a trial with no parameters when the queue is empty.

A worker holding trials records heartbeats; :meth:`RunQueue.reap` fails trials whose
heartbeat is older than the grace period (``optuna.storages.fail_stale_trials``) and Optuna's
``RetryHeartbeatStaleTrialCallback`` enqueues a copy, up to ``retries`` times. A result
counts only if :meth:`RunQueue.complete` succeeds: a trial already failed as stale (its worker
was paused, say) cannot complete, so a run is COMPLETE at most once.

Every storage call is retried while the database is unreachable (a PostgreSQL restart), up to
``patience`` seconds. This module never imports mlflow.
"""

from __future__ import annotations

import time
import warnings
import zlib
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from vgtrack.errors import UsageError

T = TypeVar("T")
# Study user attributes: the sweep file, where it came from, the coordinator's MLflow parent run and tracking URI.
SPEC_ATTR, PATH_ATTR, PARENT_ATTR, TRACKING_ATTR = "spec", "spec_path", "mlflow_parent_run_id", "tracking_uri"


def _display(url: str) -> str:
    """The URL as users typed it, password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _reason(exc: BaseException) -> str:
    """The first line of what the database driver said."""
    cause = getattr(exc, "orig", None) or exc.__cause__ or exc
    text = " ".join(str(cause).split()) or type(cause).__name__
    return text[:300]


@dataclass(frozen=True)
class Claim:
    """A WAITING trial: which run it is and how many attempts came before it."""

    trial_id: int
    number: int
    run_key: str
    attempt: int


def _transient_errors() -> tuple[type[BaseException], ...]:
    import optuna
    import sqlalchemy.exc

    return (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, optuna.exceptions.StorageInternalError)


class RunQueue:
    """One sweep's runs as trials of the Optuna study ``name`` in ``storage``.

    Example:
        >>> queue = RunQueue.open("postgresql://root@127.0.0.1/vgtrack", "depth")  # doctest: +SKIP
        >>> queue.enqueue(spec_text, "sweeps/depth.yaml", [(run.key, run_params(spec, run)) for run in grid])
        60
        >>> claim = queue.waiting()[0]; queue.claim(claim.trial_id)
        True
    """

    def __init__(self, storage, study, url: str, patience: float) -> None:
        self.storage, self.study, self.url, self.patience = storage, study, url, patience
        self.name = study.study_name

    # -- opening ---------------------------------------------------------------------------

    @staticmethod
    def _storage(url: str, heartbeat: int | None, grace: int | None, retries: int | None):
        import optuna
        from sqlalchemy.engine import make_url

        try:
            parsed = make_url(url)
        except Exception:
            raise UsageError(f"--storage {url}: not a database URL (expected e.g. postgresql://USER@HOST/DB)") from None
        connect_args = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # fail_stale_trials
        callback = None if retries is None else optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True, "connect_args": connect_args},
                heartbeat_interval=heartbeat,
                grace_period=grace,
                heartbeat_stale_trial_callback=callback,
            )
        except Exception as exc:  # unreachable host, unknown database, missing driver
            raise UsageError(f"--storage {_display(url)}: cannot open the database: {_reason(exc)}") from None

    @classmethod
    def check(cls, url: str) -> None:
        """That ``url`` opens as a queue's storage, without creating a study: the coordinator asks
        before it makes anything else (the tracking store, say).

        Raises:
            UsageError: as :meth:`create`.
        """
        cls._storage(url, None, None, None).engine.dispose()

    @classmethod
    def create(cls, url: str, name: str, heartbeat: int, grace: int, retries: int, patience: float = 120.0) -> RunQueue:
        """The coordinator's side: create the study (or join it) with these fault settings.

        Raises:
            UsageError: the storage cannot be opened (one line naming it).
        """
        import optuna

        storage = cls._storage(url, heartbeat, grace, retries)
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
        for key, value in {"heartbeat": heartbeat, "grace": grace, "retries": retries}.items():
            study.set_user_attr(key, value)
        return cls(storage, study, url, patience)

    @classmethod
    def open(cls, url: str, name: str, patience: float = 120.0) -> RunQueue:
        """A worker's side: join an existing study, with the fault settings its coordinator stored.

        Raises:
            UsageError: the storage cannot be opened, or it holds no such study.
        """
        import optuna

        probe = cls._storage(url, None, None, None)
        try:
            attrs = optuna.load_study(study_name=name, storage=probe).user_attrs
        except KeyError:
            names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(probe)) or "none"
            raise UsageError(f"--study {name}: no such sweep in {_display(url)} (studies: {names})") from None
        if SPEC_ATTR not in attrs:
            raise UsageError(f"--study {name}: not a vgtrack sweep (no spec stored) in {_display(url)}")
        storage = cls._storage(url, attrs["heartbeat"], attrs["grace"], attrs["retries"])
        return cls(storage, optuna.load_study(study_name=name, storage=storage), url, patience)

    # -- retries ---------------------------------------------------------------------------

    def _retry(self, call: Callable[[], T]) -> T:
        """``call()``, again and again while the database is unreachable, for up to ``patience`` seconds."""
        deadline, pause = time.monotonic() + self.patience, 0.5
        while True:
            try:
                return call()
            except _transient_errors():
                if time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    # -- the sweep's description -------------------------------------------------------------

    @property
    def attrs(self) -> dict:
        return self._retry(lambda: self.storage.get_study_user_attrs(self.study._study_id))

    def set_attr(self, key: str, value) -> None:
        self._retry(lambda: self.study.set_user_attr(key, value))

    @contextmanager
    def exclusive(self):
        """Hold a PostgreSQL advisory lock for this study: two coordinators never enqueue at once."""
        engine = self.storage.engine
        if engine.dialect.name != "postgresql":
            yield
            return
        import sqlalchemy

        key = zlib.crc32(f"vgtrack:{self.name}".encode())
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})

    # -- trials ----------------------------------------------------------------------------

    def trials(self, states: Iterable | None = None) -> list:
        states = tuple(states) if states is not None else None
        return self._retry(lambda: self.study.get_trials(deepcopy=False, states=states))

    def live_keys(self) -> set[str]:
        """Run keys that are waiting, running or complete: nothing to enqueue for them."""
        from optuna.trial import TrialState

        live = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
        return {t.user_attrs["run_key"] for t in self.trials(live) if "run_key" in t.user_attrs}

    def enqueue(self, spec_text: str, spec_path: str, runs: list[tuple[str, dict]], skip: set[str] = frozenset()) -> int:
        """Store the sweep file and enqueue every run without a live trial (nor a key in ``skip``).

        Idempotent: running it again enqueues nothing for runs already waiting, running or done.
        Returns how many runs were enqueued now.
        """
        with self.exclusive():
            self.set_attr(SPEC_ATTR, spec_text)
            self.set_attr(PATH_ATTR, spec_path)
            live = self.live_keys() | set(skip)
            todo = [(key, params) for key, params in runs if key not in live]
            for key, params in todo:
                self._retry(lambda p=params, k=key: self.study.enqueue_trial(p, user_attrs={"run_key": k}))
            return len(todo)

    def waiting(self) -> list[Claim]:
        """WAITING trials that carry a run (never a trial without enqueued parameters), oldest first."""
        from optuna.trial import TrialState

        found = []
        for t in self.trials((TrialState.WAITING,)):
            if "run_key" in t.user_attrs and t.system_attrs.get("fixed_params"):
                found.append(Claim(t._trial_id, t.number, t.user_attrs["run_key"], 1 + len(t.system_attrs.get("retry_history", []))))
        return sorted(found, key=lambda c: c.number)

    def claim(self, trial_id: int) -> bool:
        """Take a WAITING trial (atomic, under Optuna's row lock); False if another worker took it first."""
        import optuna

        # The heartbeat first: a trial handed back earlier keeps its old heartbeat row, and a
        # reaper must not see the new RUNNING state next to it and call the trial stale.
        self.heartbeat(trial_id)
        try:
            return self._retry(lambda: self.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.RUNNING))
        except optuna.exceptions.UpdateFinishedTrialError:
            return False

    def heartbeat(self, trial_id: int) -> None:
        self._retry(lambda: self.storage.record_heartbeat(trial_id))

    def set_trial_attr(self, trial_id: int, key: str, value) -> None:
        self._retry(lambda: self.storage.set_trial_user_attr(trial_id, key, value))

    def complete(self, trial_id: int, value: float) -> bool:
        """Record the run's result: the commit point. False if the trial was failed as stale meanwhile."""
        import optuna

        try:
            return self._retry(lambda: self.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE, [value]))
        except optuna.exceptions.UpdateFinishedTrialError:
            return False

    def fail(self, trial_id: int) -> None:
        """The run failed in training (NaN loss): FAIL, not retried."""
        self._end(trial_id, "FAIL")

    def release(self, trial_id: int) -> None:
        """Hand the trial back (the worker was asked to stop): WAITING again, for the next worker."""
        self._end(trial_id, "WAITING")

    def _end(self, trial_id: int, state: str) -> None:
        import optuna

        try:
            self._retry(lambda: self.storage.set_trial_state_values(trial_id, optuna.trial.TrialState[state]))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # already failed as stale by a reaper: nothing left to hand back

    def reap(self) -> None:
        """Fail the RUNNING trials whose worker stopped sending heartbeats; Optuna enqueues their retries."""
        import optuna

        self._retry(lambda: optuna.storages.fail_stale_trials(self.study))

    def trial(self, trial_id: int):
        return self._retry(lambda: self.storage.get_trial(trial_id))

    def counts(self) -> dict[str, int]:
        """Per run key, the best state its trials reached: complete, running, waiting or failed."""
        from optuna.trial import TrialState

        rank = {TrialState.COMPLETE: 4, TrialState.RUNNING: 3, TrialState.WAITING: 2, TrialState.FAIL: 1}
        best: dict[str, TrialState] = {}
        for t in self.trials():
            key = t.user_attrs.get("run_key")
            if key is not None and rank.get(t.state, 0) > rank.get(best.get(key), 0):
                best[key] = t.state
        out = {"complete": 0, "running": 0, "waiting": 0, "failed": 0}
        names = {TrialState.COMPLETE: "complete", TrialState.RUNNING: "running", TrialState.WAITING: "waiting", TrialState.FAIL: "failed"}
        for state in best.values():
            out[names[state]] += 1
        return out

"""Local worker processes: what the sweep sees when they cannot start."""

from __future__ import annotations

import time

import pytest

from vgtrack.pool import WorkerPool
from vgtrack.spec import parse_spec

from conftest import tiny_spec


def test_workers_that_cannot_start_are_reported_not_waited_for(tmp_path, monkeypatch):
    def refuse(self):  # what an exhausted process table or a broken fork server does
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(WorkerPool, "_start", refuse)
    pool = WorkerPool(2, parse_spec(tiny_spec()), tmp_path)
    deadline = time.monotonic() + 10
    with pytest.raises(RuntimeError, match=r"worker processes could not start: OSError\('Resource temporarily unavailable'\)"):
        while time.monotonic() < deadline:
            pool.lost_groups()
            time.sleep(0.05)
    pool.terminate()

"""Local worker processes: what the sweep sees when they cannot start."""

from __future__ import annotations

import subprocess
import sys
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


def test_the_fork_server_freezes_what_it_preloads():
    """Workers fork from a server that has imported vgtrack.preload: its objects (TensorFlow's,
    hundreds of thousands) are frozen, so a worker's full collections leave them out."""
    code = "import gc, vgtrack.preload; print(gc.get_freeze_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 100_000

"""The MLflow sink on its own: opening a new sqlite store from several processes at once."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

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

"""``python -m vgtrack.bench`` end to end, on the smallest slice: it runs and prints its whole table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

ROWS = (
    "baseline: model.fit, s/run", "ratio baseline/vgtrack", "vgtrack CPU time: training", "vgtrack CPU time: statistics",
    "vgtrack CPU time: tracking", "tracking's share of the wall time", "peak RSS per worker", "projected sweeps/full.yaml",
)


@pytest.mark.slow
def test_the_benchmark_prints_its_table():
    command = [
        sys.executable, "-m", "vgtrack.bench", "--depths", "1,2", "--widths", "3", "--configs", "tanh-uniform",
        "--seeds", "1", "--epochs", "3", "--workers", "2", "--repeats", "1",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warm-up pass (not counted)" in done.stderr
    table = dict(
        (cell.strip() for cell in line.strip("|").split("|", 1)) for line in done.stdout.splitlines() if line.startswith("|")
    )
    assert table["runs"] == "2 x 3 epochs"
    assert set(ROWS) <= set(table)
    assert float(table["baseline: model.fit, s/run"]) > 0 and table["ratio baseline/vgtrack"].endswith("x")
    assert "mean of 1" in table["vgtrack (2 workers), s/run"]

"""``python -m vgtrack.bench``: its flags checked before anything runs, and end to end, on the smallest slice, its whole table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

ROWS = (
    "baseline: model.fit, s/run", "ratio baseline/vgtrack", "vgtrack CPU time: training", "vgtrack CPU time: statistics",
    "vgtrack CPU time: tracking", "tracking's CPU at start-up", "tracking's share of the wall time", "peak RSS per worker", "projected sweeps/full.yaml",
)


@pytest.mark.parametrize(("flags", "error"), [
    (["--depths", "1,x"], "--depths: expected comma-separated integers such as 1,5,10, got '1,x'"),
    (["--widths", "0"], "--widths: expected integers >= 1, got 0"),
    (["--configs", "tanh"], "--configs: expected activation-initializer pairs such as tanh-uniform,relu-he, got 'tanh'"),
    (["--configs", "tanh-uniform,relu-bogus"], "--configs: expected one of uniform, normal, xavier, xavier_normal, he, he_normal, got 'bogus'"),
    (["--configs", "bogus-he"], "--configs: expected Keras activation names such as tanh, relu, sigmoid, got 'bogus'"),
    (["--seeds", "0"], "--seeds: expected an integer >= 1, got 0"),
    (["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    (["--workers", "0"], "--workers: expected an integer >= 1, got 0"),
    (["--repeats", "0"], "--repeats: expected an integer >= 1, got 0"),
    (["--baseline-runs", "0"], "--baseline-runs: expected an integer >= 1, got 0"),
    (["--metric-points", "5"], "--metric-points: expected a value >= 10, got 5"),
])
def test_a_bad_flag_is_one_line_naming_it_and_nothing_runs(flags, error, capsys):
    from vgtrack.bench import main

    assert main(flags) == 2
    err = capsys.readouterr().err
    assert err == error + "\n"


@pytest.mark.slow
def test_the_benchmark_prints_its_table():
    command = [
        sys.executable, "-m", "vgtrack.bench", "--depths", "1,2", "--widths", "3", "--configs", "tanh-uniform",
        "--seeds", "1", "--epochs", "3", "--workers", "2", "--repeats", "1", "--metric-points", "20",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warm-up pass (not counted)" in done.stderr
    assert "3 epochs, 20 metric points a run" in done.stderr
    table = dict(
        (cell.strip() for cell in line.strip("|").split("|", 1)) for line in done.stdout.splitlines() if line.startswith("|")
    )
    assert table["runs"] == "2 x 3 epochs"
    assert set(ROWS) <= set(table)
    assert float(table["baseline: model.fit, s/run"]) > 0 and table["ratio baseline/vgtrack"].endswith("x")
    assert float(table["tracking's CPU at start-up"].split(" s:")[0]) > 0  # MLflow was imported and a store made
    assert "median of 1" in table["vgtrack (2 workers), s/run"]

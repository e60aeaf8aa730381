"""Reports from a real small sweep in a temp store; the HTML in headless Chromium; the MLflow UI over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import closing
from html.parser import HTMLParser

import pandas as pd
import pytest

from vgtrack.report import main, summary_frame
from vgtrack.sweep import main as sweep_main

from conftest import MLFLOW_SERVER_ENV, ROOT, tiny_spec

SPEC = tiny_spec(
    name="rep", grid={"depth": [1, 2, 3], "width": [3, 4], "activation": "tanh", "initializer": "uniform"},
    include=[{"activation": "relu", "initializer": "he"}], seeds=2, train={"epochs": 6, "batch_size": 32},
)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A real sweep of 24 runs in a fresh store, and its report."""
    folder = tmp_path_factory.mktemp("report")
    spec = folder / "rep.yaml"
    import yaml

    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    store = f"sqlite:///{folder}/mlruns/mlflow.db"
    assert sweep_main([str(spec), "--tracking-uri", store, "--no-progress"]) == 0
    out = folder / "out"
    assert main([str(spec), "--tracking-uri", store, "--out", str(out)]) == 0
    return spec, store, out


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources, self.tables, self.external = [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs.get("src", ""))
        if tag == "table":
            self.tables += 1
        for key in ("href", "src"):
            if attrs.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[key])


def test_report_files_and_embedded_figures(swept):
    _, _, out = swept
    pngs = sorted(out.glob("*.png"))
    stems = {p.stem.split("_")[0] for p in pngs}
    assert stems == {"01", "02", "03", "04", "05", "06", "07", "08"}  # every figure, the heatmap too (width varies)
    parser = _Images()
    parser.feed((out / "report.html").read_text())
    assert len(parser.sources) == len(pngs)
    assert all(src.startswith("data:image/png;base64,") for src in parser.sources)
    assert parser.tables == 3 and parser.external == []  # self-contained: nothing to fetch
    markdown = (out / "report.md").read_text()
    assert "## Depth of failure" in markdown and all(f"({p.name})" in markdown for p in pngs)


def test_runs_and_summary_csv(swept):
    _, _, out = swept
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 24
    for column in ("run_id", "run", "config", "depth", "width", "activation", "initializer", "optimizer", "seed",
                   "test_accuracy", "train_accuracy", "verdict", "learned"):
        assert column in runs
    assert set(runs["verdict"]) <= {"vanishing", "exploding", "dead", "healthy"}
    assert set(runs["learned"]) <= {"yes", "no"}
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["config", "width", "depth", "n", "mean", "std", "ci95_low", "ci95_high"]
    assert len(summary) == 2 * 2 * 3 and set(summary["n"]) == {2}
    first = summary.iloc[0]
    part = runs[(runs["config"] == first["config"]) & (runs["width"] == first["width"]) & (runs["depth"] == first["depth"])]
    assert first["mean"] == pytest.approx(part["test_accuracy"].mean())


def test_confidence_interval_by_hand():
    runs = pd.DataFrame({"config": ["a"] * 3, "width": [5] * 3, "depth": [2] * 3, "test_accuracy": [0.5, 0.6, 0.7]})
    row = summary_frame(runs).iloc[0]
    # mean 0.6, std 0.1, t(0.975, 2) = 4.302653: half width 4.302653 * 0.1 / sqrt(3) = 0.248414
    assert (row["mean"], row["std"], row["n"]) == (pytest.approx(0.6), pytest.approx(0.1), 3)
    assert row["ci95_low"] == pytest.approx(0.351586, abs=1e-6)
    assert row["ci95_high"] == pytest.approx(0.848414, abs=1e-6)


def test_unknown_and_partial_sweeps(swept, tmp_path, capsys):
    spec, store, _ = swept
    assert main(["no-such-sweep", "--tracking-uri", store, "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"no-such-sweep: no such sweep (experiment) in {store}\n"
    # the same sweep with one more seed: 12 runs are missing, the report says so and covers the rest
    import yaml

    bigger = tmp_path / "rep.yaml"
    bigger.write_text(yaml.safe_dump({**SPEC, "seeds": 3}, sort_keys=False))
    assert main([str(bigger), "--tracking-uri", store, "--out", str(tmp_path / "partial")]) == 0
    assert capsys.readouterr().err.endswith("report.html; 12 of 36 runs not finished: 12 not run yet\n")
    assert "24 finished runs. 12 of 36 runs not finished: 12 not run yet (reported on what has finished)." in (
        tmp_path / "partial" / "report.md"
    ).read_text()
    assert "Failed runs" not in (tmp_path / "partial" / "report.md").read_text()


def test_failed_runs_are_told_apart_from_runs_not_run_yet(swept, tmp_path, capsys):
    """A run that FAILED is listed with its reason; one that failed and then FINISHED is not missing."""
    import sqlite3

    import yaml

    from vgtrack.grid import expand
    from vgtrack.spec import load_spec
    from vgtrack.tracking import SweepTracker

    spec, store, out = swept
    copy = tmp_path / "mlflow.db"  # the module's store stays as the other tests expect it
    with closing(sqlite3.connect(store[len("sqlite:///"):])) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    uri = f"sqlite:///{copy}"
    bigger = tmp_path / "rep.yaml"
    bigger.write_text(yaml.safe_dump({**SPEC, "seeds": 3}, sort_keys=False))
    finished = set(pd.read_csv(out / "runs.csv")["run_key"])
    runs = list(expand(load_spec(bigger)))
    never_finished = next(run for run in runs if run.key not in finished)
    finished_later = next(run for run in runs if run.key in finished)
    tracker = SweepTracker(uri, "rep")
    tracker.start_run(never_finished, "rep", {}).fail("train loss became nan at epoch 3")
    tracker.start_run(finished_later, "rep", {}).fail("train loss became inf at epoch 1")

    assert main([str(bigger), "--tracking-uri", uri, "--out", str(tmp_path / "failed")]) == 0
    assert capsys.readouterr().err.endswith("report.html; 12 of 36 runs not finished: 1 failed, 11 not run yet\n")
    report = (tmp_path / "failed" / "report.md").read_text()
    assert "12 of 36 runs not finished: 1 failed, 11 not run yet" in report
    failed_table = report.split("## Failed runs", 1)[1].split("##", 1)[0]
    assert never_finished.name in failed_table and "train loss became nan at epoch 3" in failed_table
    assert finished_later.name not in failed_table and "inf" not in failed_table
    assert "Failed runs" in (tmp_path / "failed" / "report.html").read_text()


def test_a_tracking_server_nobody_answers_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["rep", "--tracking-uri", "http://127.0.0.1:1", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == "--tracking-uri http://127.0.0.1:1: no MLflow server answers (ConnectionError)\n"
    spec = tmp_path / "rep.yaml"
    spec.write_text(f"name: rep\ntracking: {{uri: 'http://127.0.0.1:1'}}\n" + "grid: {depth: 1, width: 3, activation: tanh, initializer: he}\n")
    assert main([str(spec), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"{spec}: tracking.uri http://127.0.0.1:1: no MLflow server answers (ConnectionError)\n"
    assert not (tmp_path / "x").exists()


def test_a_depth_the_sweep_lacks_or_an_out_folder_that_cannot_be_made_is_one_line(swept, tmp_path, capsys):
    spec, store, _ = swept
    assert main([str(spec), "--tracking-uri", store, "--depth", "7", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == "--depth: expected a depth the sweep's finished runs have (1, 2, 3), got 7\n"
    assert not (tmp_path / "x").exists()
    (tmp_path / "file").write_text("")
    assert main([str(spec), "--tracking-uri", store, "--out", str(tmp_path / "file" / "x")]) == 2
    assert capsys.readouterr().err == f"--out {tmp_path / 'file' / 'x'}: cannot create the folder: Not a directory\n"


def test_report_is_logged_on_the_parent_run(swept):
    from mlflow.tracking import MlflowClient

    _, store, _ = swept
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("rep")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.role = 'sweep'")
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/runs.csv", "report/summary.csv"} <= names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_ui_serves_the_runs_and_the_readme_filters(swept):
    _, store, _ = swept
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **MLFLOW_SERVER_ENV},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow ui did not start"
            time.sleep(0.5)
        query = urllib.parse.urlencode({"experiment_name": "rep"})
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}") as response:
            experiment_id = json.load(response)["experiment"]["experiment_id"]

        def search(filter_string: str) -> list:
            body = json.dumps({"experiment_ids": [experiment_id], "filter": filter_string, "max_results": 1000}).encode()
            request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request) as response:
                return json.load(response).get("runs", [])

        assert len(search("tags.role = 'run'")) == 24
        # the filter strings the README gives for the UI's search box
        readme = (ROOT / "README.md").read_text()
        filters = [line.split("`")[1] for line in readme.splitlines() if line.startswith("- UI filter: `")]
        assert len(filters) >= 3
        runs = pd.read_csv(swept[2] / "runs.csv")
        for filter_string in filters:
            found = search(filter_string)
            assert all(run["info"]["status"] in {"FINISHED", "FAILED", "KILLED", "RUNNING"} for run in found)
        assert len(search("tags.learned = 'no'")) == int((runs["learned"] == "no").sum())
        assert len(search("tags.verdict = 'healthy'")) == int((runs["verdict"] == "healthy").sum())
        with urllib.request.urlopen(f"{base}/") as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_report_renders_in_headless_chromium(swept, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("chromium is not installed here (apt-get install chromium)")
    _, _, out = swept
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000", f"--screenshot={shot}",
         (out / "report.html").as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1200
    assert pixels[..., :3].std() > 0.05  # not a blank page: text, tables and figures
    assert (pixels[..., :3] < 0.5).mean() > 0.01  # some dark ink

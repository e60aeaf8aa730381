"""``python -m vgtrack.report SWEEP``: at what depth does each configuration stop learning, and why.

Reads a sweep's runs back from MLflow (``search_runs`` and each run's ``history.parquet``),
computes tidy tables first (:func:`runs_frame`, :func:`summary_frame`, :func:`failure_depths`),
then draws figures from them (figures in :mod:`vgtrack.report_figures`) and writes
``report.html`` (self-contained), ``report.md``, ``runs.csv``, ``summary.csv`` and every
figure as PNG into ``--out``; the same files go to the sweep's latest parent run in MLflow.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vgtrack.verdict import LEARN_MARGIN, RULE

PARAMS = ("depth", "width", "activation", "initializer", "optimizer", "learning_rate", "momentum", "seed", "epochs")
INT_PARAMS = ("depth", "width", "seed", "epochs")
METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


class ReportError(Exception):
    """The sweep cannot be reported (unknown, empty, unreachable store): one line for the user."""


@dataclass(frozen=True)
class SweepRuns:
    experiment: str
    runs: object  # DataFrame: one row per FINISHED run
    expected: int | None  # runs the sweep file asks for, when known
    parent_run_id: str | None
    failed: object  # DataFrame: one row per run that FAILED and has not FINISHED since (failed_frame)

    def unfinished(self) -> str:
        """What is missing from the report, in words: "" when nothing is, else e.g.
        "12 of 36 runs not finished: 1 failed, 11 not run yet"."""
        failed = len(self.failed)
        if self.expected is None or self.expected <= len(self.runs):
            return f"{_count(failed, 'run')} failed" if failed else ""
        missing = self.expected - len(self.runs)
        failed = min(failed, missing)
        parts = ([f"{failed} failed"] if failed else []) + ([f"{missing - failed} not run yet"] if missing > failed else [])
        return f"{missing} of {_count(self.expected, 'run')} not finished: {', '.join(parts)}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def runs_frame(client, experiment_id: str):
    """One row per FINISHED run: run id and name, params, final metrics, verdict tags."""
    import pandas as pd

    from vgtrack.tracking import search_all

    rows = []
    for run in search_all(client, experiment_id, "tags.role = 'run' and attributes.status = 'FINISHED'"):
        row = {"run_id": run.info.run_id, "run": run.info.run_name, "config": run.data.tags.get("config", "")}
        row |= {p: run.data.params.get(p) for p in PARAMS}
        row |= {m: run.data.metrics.get(m, np.nan) for m in METRICS}
        row |= {
            "verdict": run.data.tags.get("verdict", ""),
            "learned": run.data.tags.get("learned", ""),
            "gradient_ratio": float(run.data.tags.get("gradient_ratio", "nan")),
            "dead_share": float(run.data.tags.get("dead_share", "nan")),
            "chance": float(run.data.tags.get("chance", "nan")),
            "run_key": run.data.tags.get("run_key", ""),
        }
        rows.append(row)
    columns = ["run_id", "run", "config", *PARAMS, *METRICS, "verdict", "learned", "gradient_ratio", "dead_share", "chance", "run_key"]
    frame = pd.DataFrame(rows, columns=columns)
    for p in INT_PARAMS:
        frame[p] = pd.to_numeric(frame[p], errors="coerce").astype("Int64")
    for p in ("learning_rate", "momentum"):
        frame[p] = pd.to_numeric(frame[p], errors="coerce")
    return frame.sort_values(["config", "width", "depth", "seed"]).reset_index(drop=True)


def failed_frame(client, experiment_id: str, finished_keys: set[str]):
    """One row per run key whose runs FAILED and none FINISHED (a run that failed, then finished on
    a later sweep, is not missing): its latest failed run's name, config and ``failure_reason``."""
    import pandas as pd

    from vgtrack.tracking import search_all

    rows, seen = [], set(finished_keys)
    filter_string = "tags.role = 'run' and attributes.status = 'FAILED'"
    for run in search_all(client, experiment_id, filter_string, order_by=["attributes.start_time DESC"]):
        key = run.data.tags.get("run_key", run.info.run_id)
        if key not in seen:
            seen.add(key)
            rows.append({"run": run.info.run_name, "config": run.data.tags.get("config", ""), "failure_reason": run.data.tags.get("failure_reason", "")})
    return pd.DataFrame(rows, columns=["run", "config", "failure_reason"]).sort_values("run").reset_index(drop=True)


def summary_frame(runs):
    """One row per configuration x width x depth: mean, std and 95% confidence interval of final test accuracy, n.

    The interval is the t-interval of the seed mean: mean +/- t(0.975, n-1) * std / sqrt(n); with one
    seed it is undefined (NaN).
    """
    from scipy import stats

    grouped = runs.groupby(["config", "width", "depth"], sort=True)["test_accuracy"]
    summary = grouped.agg(mean="mean", std="std", n="count").reset_index()
    half = [
        stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n) if n > 1 else np.nan for sd, n in zip(summary["std"], summary["n"])
    ]
    summary["ci95_low"] = summary["mean"] - half
    summary["ci95_high"] = summary["mean"] + half
    return summary[["config", "width", "depth", "n", "mean", "std", "ci95_low", "ci95_high"]]


def failure_depths(summary, chance: float):
    """Per configuration and width: the smallest depth whose seed-mean test accuracy is at chance
    (below chance + LEARN_MARGIN), or NaN when every depth learned."""
    import pandas as pd

    rows = []
    for (config, width), part in summary.groupby(["config", "width"], sort=True):
        failing = part[part["mean"] < chance + LEARN_MARGIN]
        rows.append({
            "config": config, "width": width,
            "depth_of_failure": failing["depth"].min() if len(failing) else pd.NA,
            "depths_tried": f"{part['depth'].min()}-{part['depth'].max()}",
        })
    return pd.DataFrame(rows)


def load_sweep(target: str, uri: str | None) -> tuple[object, SweepRuns]:
    """``target`` is a sweep file (its experiment) or an experiment name."""
    from vgtrack.errors import UsageError
    from vgtrack.tracking import check_server, open_client, resolve_uri, uri_origin

    expected, name, spec_uri = None, target, None
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        from vgtrack.grid import expand
        from vgtrack.spec import load_spec

        spec = load_spec(target)
        name, expected, spec_uri = spec.experiment_name, len(expand(spec)), spec.tracking.uri
    origin = uri_origin(uri, spec_uri, target)
    uri = resolve_uri(uri, spec_uri)
    try:
        check_server(uri, origin)  # MLflow's client would retry for minutes
    except UsageError as exc:
        raise ReportError(str(exc)) from None
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise ReportError(f"{name}: no MLflow store at {uri}")
    try:
        client = open_client(uri)
        experiment = client.get_experiment_by_name(name)
    except Exception as exc:  # unreachable server, bad URI
        raise ReportError(f"{uri}: cannot read the tracking store: {type(exc).__name__}") from None
    if experiment is None:
        raise ReportError(f"{name}: no such sweep (experiment) in {uri}")
    runs = runs_frame(client, experiment.experiment_id)
    if runs.empty:
        raise ReportError(f"{name}: no finished runs in {uri} yet")
    parents = client.search_runs([experiment.experiment_id], "tags.role = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1)
    parent = parents[0] if parents else None
    if expected is None and parent is not None and "n_runs" in parent.data.params:
        expected = int(parent.data.params["n_runs"])
    failed = failed_frame(client, experiment.experiment_id, set(runs["run_key"]))
    return client, SweepRuns(name, runs, expected, parent.info.run_id if parent else None, failed)


def load_histories(client, run_ids) -> dict:
    """run id -> full-resolution history DataFrame (the run's history.parquet)."""
    import pandas as pd

    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for run_id in run_ids:
            path = client.download_artifacts(run_id, "history.parquet", folder)
            out[run_id] = pd.read_parquet(path)
    return out


def pick_depth(runs, requested: int | None) -> int:
    """The depth the gradient profile shows: the one asked for, else the deepest every configuration has.

    Raises:
        ReportError: no finished run has the requested depth.
    """
    if requested is not None:
        depths = sorted(int(d) for d in runs["depth"].dropna().unique())
        if requested not in depths:
            raise ReportError(f"--depth: expected a depth the sweep's finished runs have ({', '.join(map(str, depths))}), got {requested}")
        return requested
    common = set.intersection(*(set(part["depth"].dropna()) for _, part in runs.groupby("config")))
    return int(max(common)) if common else int(runs["depth"].max())


def selected_runs(runs, depth: int):
    """One run per configuration at ``depth`` (its lowest seed, widest width): the runs the per-run figures show."""
    at = runs[runs["depth"] == depth].sort_values(["config", "width", "seed"], ascending=[True, False, True])
    return at.groupby("config", sort=True).head(1)


def _embed(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _markdown(frame) -> str:
    return frame.to_markdown(index=False, floatfmt=".3f")


def write_report(client, sweep: SweepRuns, out: Path, depth: int | None = None, data_spec=None) -> list[Path]:
    """Compute the tables, draw the figures, write every file into ``out``; returns the files."""
    from vgtrack import report_figures as draw
    from vgtrack.data import load_dataset
    from vgtrack.spec import DataSpec

    runs = sweep.runs
    depth = pick_depth(runs, depth)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"--out {out}: cannot create the folder: {exc.strerror}") from None
    chance = float(runs["chance"].dropna().iloc[0]) if runs["chance"].notna().any() else 0.5
    summary = summary_frame(runs)
    failures = failure_depths(summary, chance)
    chosen = selected_runs(runs, depth)
    histories = load_histories(client, chosen["run_id"])
    data = load_dataset(data_spec or DataSpec())

    figures: list[tuple[str, str]] = []  # (file stem, caption)

    def save(stem: str, figure, caption: str) -> None:
        figure.savefig(out / f"{stem}.png", dpi=90)
        figures.append((stem, caption))

    save("01_dataset", draw.dataset_figure(data), "The two-circles data as the tutorials plot it.")
    save("02_accuracy_vs_depth", draw.accuracy_vs_depth_figure(summary, chance),
         "Final test accuracy against depth: seed mean with its 95% confidence band; dashed: chance.")
    if summary["width"].nunique() > 1:
        save("03_depth_width_heatmap", draw.depth_width_figure(summary), "Mean test accuracy by depth and width, per configuration.")
    profiles = {row.config: histories[row.run_id] for row in chosen.itertuples()}
    save("04_gradient_profile", draw.gradient_profile_figure(profiles, depth),
         f"Mean |gradient| per layer (log scale) at the first, middle and last epoch, depth {depth}: the vanishing gradient.")
    for row in chosen.itertuples():
        history = histories[row.run_id]
        save(f"05_gradient_heatmap_{row.run}", draw.gradient_heatmap_figure(history, row.run), f"log10 mean |gradient|, layer x epoch: {row.run}.")
        save(f"06_accuracy_{row.run}", draw.accuracy_figure(history, row.run), f"Train and test accuracy over epochs: {row.run}.")
        save(f"07_kernel_l1_{row.run}", draw.kernel_l1_figure(history, row.run), f"Kernel L1 norm per layer over epochs: {row.run}.")
        save(f"08_gradient_distribution_{row.run}", draw.gradient_distribution_figure(history, row.run),
             f"Gradient distribution per layer over epochs (percentile bands 0-7-16-31-50-69-84-93-100): {row.run}.")

    runs.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    verdicts = runs.groupby(["config", "verdict", "learned"]).size().reset_index(name="runs")
    unfinished = sweep.unfinished()
    missing = f"{unfinished} (reported on what has finished). " if unfinished else ""
    title = f"vgtrack report: {sweep.experiment}"
    intro = f"{_count(len(runs), 'finished run')}. {missing}Chance accuracy: {chance:.3f}."
    tables = [
        ("Depth of failure", "Per configuration: the smallest depth whose seed-mean test accuracy is below chance + 0.1.", failures),
        ("Verdicts", f"Rule: {RULE}", verdicts),
        ("Accuracy by configuration and depth", "Final test accuracy over seeds.", summary),
    ]
    if len(sweep.failed):
        tables.append(("Failed runs", "Runs that ended FAILED and have not finished since, with why (MLflow tag failure_reason).", sweep.failed))
    (out / "report.md").write_text(
        f"# {title}\n\n{intro}\n\n"
        + "".join(f"## {name}\n\n{note}\n\n{_markdown(table)}\n\n" for name, note, table in tables)
        + "## Figures\n\n" + "".join(f"![{caption}]({stem}.png)\n\n" for stem, caption in figures),
        encoding="utf-8",
    )
    style = ("body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;font-size:13px;margin-bottom:1em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "figure{display:inline-block;margin:0.5em;vertical-align:top}img{max-width:100%;width:520px}figcaption{font-size:12px;max-width:520px}")
    body = "".join(
        f"<h2>{html.escape(name)}</h2><p>{html.escape(note)}</p>{table.to_html(index=False, na_rep='', float_format=lambda v: f'{v:.3f}')}"
        for name, note, table in tables
    )
    body += "<h2>Figures</h2>" + "".join(_embed(out / f"{stem}.png", caption) for stem, caption in figures)
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>{body}</body></html>",
        encoding="utf-8",
    )
    return [out / "report.html", out / "report.md", out / "runs.csv", out / "summary.csv"] + [out / f"{stem}.png" for stem, _ in figures]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one download bar per run is noise
    parser = argparse.ArgumentParser(prog="python -m vgtrack.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a sweep file (sweeps/depth.yaml) or a sweep (experiment) name")
    parser.add_argument("--out", default=None, help="output folder (default: reports/<sweep>)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default as for vgtrack.sweep)")
    parser.add_argument("--depth", type=int, default=None, help="depth of the gradient profile (default: the deepest all configurations have)")
    args = parser.parse_args(argv)
    try:
        data_spec = None
        if args.sweep.endswith((".yaml", ".yml")):
            from vgtrack.errors import SpecError
            from vgtrack.spec import load_spec

            try:
                data_spec = load_spec(args.sweep).data
            except SpecError as exc:
                raise ReportError(str(exc)) from None
        client, sweep = load_sweep(args.sweep, args.tracking_uri)
        out = Path(args.out or Path("reports") / sweep.experiment)
        files = write_report(client, sweep, out, args.depth, data_spec)
    except ReportError as exc:
        print(exc, file=sys.stderr)
        return 2
    if sweep.parent_run_id is not None:
        for path in files:
            client.log_artifact(sweep.parent_run_id, str(path), "report")
    unfinished = sweep.unfinished()
    print(f"{sweep.experiment}: report of {_count(len(sweep.runs), 'run')} in {out}/report.html" + (f"; {unfinished}" if unfinished else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

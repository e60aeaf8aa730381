"""A run's artifact files, written to a folder for the tracking sink to upload.

Written where the history is (in the worker that trained the run), so the process that
talks to MLflow only copies files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from vgtrack.grid import Cell, Run
from vgtrack.records import RunResult, history_columns

HISTORY = "history.parquet"
MODEL = "model.keras"
_figures = None  # one RunFigures per process: it keeps its figures from run to run


def write_history(columns: dict, path: str | Path) -> None:
    """``history.parquet``: one row per epoch, read back with ``pandas.read_parquet``.

    Written by pyarrow from the columns (pandas' ``to_parquet`` costs several times more on 300
    columns); no dictionary encoding or column statistics, which buy nothing for floats read whole.
    Built in memory and written to the file at once: written straight to it, pyarrow makes a few
    small writes per column, a quarter of the time on 300 columns.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink, use_dictionary=False, write_statistics=False)
    Path(path).write_bytes(sink.getvalue())


def write_run_artifacts(folder: str | Path, cell: Cell, result: RunResult, save_model: bool = False) -> Path:
    """history.parquet (every statistic, every epoch) and, for a run that finished, accuracy.png,
    gradients.png and optionally model.keras (an ordinary Keras model: keras.saving.load_model)."""
    global _figures
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not result.history:
        return folder
    columns = history_columns(result.history)
    write_history(columns, folder / HISTORY)
    if result.failure is None:
        if _figures is None:
            from vgtrack.figures import RunFigures

            _figures = RunFigures()
        _figures.write(columns, folder)
        if save_model:
            from vgtrack.model import keras_model

            keras_model(cell, result.weights).save(folder / MODEL)
    return folder


@dataclass(frozen=True)
class RunOutcome:
    """What the tracking sink needs to end a trained run: its files, final numbers and verdict."""

    failure: str | None
    seconds: float
    artifacts: str | None  # the folder of its artifact files; None when none were written (yet)
    final: dict
    tags: dict  # the verdict (verdict.diagnose) as MLflow tags


def run_summary(result: RunResult, chance: float) -> RunOutcome:
    """The run summed up for tracking, before its files are written (``artifacts`` is None)."""
    from vgtrack.verdict import verdict_tags

    final = result.final if result.history else {}
    return RunOutcome(result.failure, result.seconds, None, final, verdict_tags(result, chance))


def run_outcome(folder: str | Path | None, run: Run, result: RunResult, chance: float, save_model: bool = False) -> RunOutcome:
    """Write ``result``'s artifact files into ``folder`` (none if it is None) and sum the run up for tracking."""
    target = None if folder is None else str(write_run_artifacts(folder, run.cell, result, save_model=save_model))
    return replace(run_summary(result, chance), artifacts=target)

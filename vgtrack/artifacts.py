"""A run's artifact files, written to a folder for the tracking sink to upload.

Written where the history is (in the worker that trained the run), so the process that
talks to MLflow only copies files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vgtrack.figures import PNG, accuracy_figure, gradient_figure
from vgtrack.grid import Cell, Run
from vgtrack.records import RunResult, history_frame

HISTORY = "history.parquet"
MODEL = "model.keras"


def write_run_artifacts(folder: str | Path, cell: Cell, result: RunResult, save_model: bool = False) -> Path:
    """history.parquet (every statistic, every epoch) and, for a run that finished, accuracy.png,
    gradients.png and optionally model.keras (an ordinary Keras model: keras.saving.load_model)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not result.history:
        return folder
    frame = history_frame(result.history)
    frame.to_parquet(folder / HISTORY, index=False)
    if result.failure is None:
        accuracy_figure(frame).savefig(folder / "accuracy.png", **PNG)
        gradient_figure(frame).savefig(folder / "gradients.png", **PNG)
        if save_model:
            from vgtrack.model import keras_model

            keras_model(cell, result.weights).save(folder / MODEL)
    return folder


@dataclass(frozen=True)
class RunOutcome:
    """What the tracking sink needs to end a trained run: its files, final numbers and verdict."""

    failure: str | None
    seconds: float
    artifacts: str
    final: dict
    tags: dict  # the verdict (verdict.diagnose) as MLflow tags


def run_outcome(folder: str | Path, run: Run, result: RunResult, chance: float, save_model: bool = False) -> RunOutcome:
    """Write ``result``'s artifact files into ``folder`` and sum the run up for tracking."""
    from vgtrack.verdict import verdict_tags

    target = write_run_artifacts(folder, run.cell, result, save_model=save_model)
    final = result.final if result.history else {}
    return RunOutcome(result.failure, result.seconds, str(target), final, verdict_tags(result, chance))

"""Shared fixtures: real MLflow sqlite stores in temp dirs, small specs written to files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "sweeps"
# How the README and docker-compose.yml run an MLflow server (and how tests run `mlflow server` and
# `mlflow ui`): without MLflow's job runners, a dozen Huey consumer processes for GenAI jobs vgtrack
# never submits, which took a core's share in CI.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@pytest.fixture
def store(tmp_path) -> str:
    """A fresh MLflow sqlite store (tracking URI) in a temp dir."""
    return f"sqlite:///{tmp_path}/mlruns/mlflow.db"


@pytest.fixture
def write_spec(tmp_path):
    """Write a sweep mapping (or raw text) to a YAML file and return its path."""

    def write(content, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


def tiny_spec(**overrides) -> dict:
    """A sweep that trains in about a second per run."""
    spec = {
        "name": "tiny",
        "data": {"n_samples": 120, "n_train": 80},
        "grid": {"depth": [1, 2], "width": 3, "activation": ["tanh", "relu"], "initializer": "xavier"},
        "seeds": 1,
        "train": {"epochs": 4, "batch_size": 32},
        "tracking": {"metric_points": 50},
    }
    spec.update(overrides)
    return spec


def run_module(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` from the repository root and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=full_env, capture_output=True, text=True, **kwargs)

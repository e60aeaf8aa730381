"""docker-compose.yml describes the deployment that tests/test_queue.py runs natively: check that it
parses, has the services the README names, and that every command is a valid vgtrack or mlflow command line.
(No Docker engine runs on the development or CI machines.)"""

from __future__ import annotations

import re

import click
import pytest
import yaml

from vgtrack.spec import load_spec

from conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def _interpolate(value):
    """Compose's ``${VAR:-default}`` with the defaults, as `docker compose config` would with no environment."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return _interpolate(yaml.safe_load(COMPOSE.read_text()))


def test_services_volumes_and_healthchecks(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "mlflow", "enqueue", "worker"}
    assert services["postgres"]["healthcheck"]["test"] and "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    init = services["postgres"]["volumes"][1].split(":")[0]
    assert (ROOT / init).is_file() and "CREATE DATABASE mlflow" in (ROOT / init).read_text()
    assert services["mlflow"]["healthcheck"]["test"]
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["enqueue"]["condition"] == "service_completed_successfully"
    assert services["enqueue"]["restart"] == "no"
    # the worker scales: no fixed container name or host port
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    assert (ROOT / "Dockerfile").is_file() and services["mlflow"]["build"] == "."
    assert set(compose["volumes"]) == {"pgdata", "mlartifacts"}


def test_every_command_is_a_valid_command_line(compose):
    from mlflow.cli import cli as mlflow_cli

    from vgtrack.sweep import build_parser as sweep_parser
    from vgtrack.worker import build_parser as worker_parser

    services = compose["services"]
    db = services["postgres"]["environment"]
    queue_url = f"postgresql://{db['POSTGRES_USER']}:{db['POSTGRES_PASSWORD']}@postgres:5432/{db['POSTGRES_DB']}"

    mlflow_cmd = services["mlflow"]["command"]
    assert mlflow_cmd[:2] == ["mlflow", "server"]
    context = mlflow_cli.commands["server"].make_context("server", list(mlflow_cmd[2:]))  # raises on a bad option
    assert context.params["serve_artifacts"] is True
    assert context.params["backend_store_uri"].startswith("postgresql://") and context.params["port"] == 5000

    enqueue = services["enqueue"]["command"]
    assert enqueue[:3] == ["python", "-m", "vgtrack.sweep"]
    args = sweep_parser().parse_args(enqueue[3:])
    assert args.enqueue_only and args.storage == queue_url and args.tracking_uri == "http://mlflow:5000"
    spec = load_spec(ROOT / args.spec)  # the default sweep file exists and is valid

    worker = services["worker"]["command"]
    assert worker[:3] == ["python", "-m", "vgtrack.worker"]
    args = worker_parser().parse_args(worker[3:])
    assert args.storage == queue_url and args.tracking_uri == "http://mlflow:5000"
    assert args.study == spec.name  # the default study is the default sweep's name


def test_a_bad_mlflow_option_would_be_caught():
    from mlflow.cli import cli as mlflow_cli

    with pytest.raises(click.UsageError):
        mlflow_cli.commands["server"].make_context("server", ["--serve-artefacts"])

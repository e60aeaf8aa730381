"""vgtrack: sweeps over depth, width, activation, initializer and optimizer that record how
gradients flow through deep MLPs on the two-circles problem, logged to MLflow.

Importing vgtrack does not import TensorFlow or MLflow; the modules that need them import
them when they are first used.
"""

import os

# TensorFlow's C++ start-up chatter (oneDNN, CPU features) says nothing a vgtrack user can act on.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vgtrack.errors import RunFailed, SpecError  # noqa: E402
from vgtrack.grid import Cell, Grid, Run, expand  # noqa: E402
from vgtrack.spec import SweepSpec, load_spec  # noqa: E402

__all__ = ["Cell", "Grid", "Run", "RunFailed", "SpecError", "SweepSpec", "expand", "load_spec"]
__version__ = "0.1.0"

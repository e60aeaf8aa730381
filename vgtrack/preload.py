"""What every local worker process imports, loaded once by the fork server of :mod:`vgtrack.pool`.

Importing TensorFlow and Keras takes seconds of CPU. Workers forked from a server that has
already imported them start at once, and a sweep on N workers pays for the import once instead
of N times, on cores that are otherwise busy opening the MLflow store.

Only imports: no TensorFlow operation runs here, so the fork server starts none of TensorFlow's
runtime threads and forking it is safe; each worker configures and starts its own runtime
(:func:`vgtrack.train.warm_up`).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402,F401
import matplotlib.backends.backend_agg  # noqa: E402,F401  (a run's figures)
import matplotlib.figure  # noqa: E402,F401
import PIL.PngImagePlugin  # noqa: E402,F401
import pyarrow.parquet  # noqa: E402,F401  (a run's history.parquet)
import sklearn.datasets  # noqa: E402,F401  (make_circles)
import sklearn.preprocessing  # noqa: E402,F401
import tensorflow  # noqa: E402,F401

import gc  # noqa: E402

# All of the above lives as long as the workers do. Frozen (CPython's permanent generation) before
# the workers fork, it is left out of their full collections, which then scan what a worker made
# itself instead of TensorFlow's ~430,000 objects: 0.17 s each, and a group's artifact files set
# one off in the next group's training.
gc.freeze()

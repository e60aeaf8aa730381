"""What every local worker process imports, loaded once by the fork server of :mod:`vgtrack.pool`.

Importing TensorFlow and Keras takes seconds of CPU. Workers forked from a server that has
already imported them start at once, and a sweep on N workers pays for the import once instead
of N times, on cores that are otherwise busy opening the MLflow store.

Only imports: no TensorFlow operation runs here, so the fork server starts none of TensorFlow's
runtime threads and forking it is safe; each worker configures and starts its own runtime
(:func:`vgtrack.train.warm_up`).
"""

import os

from vgtrack.heap import long_lived

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Frozen before the workers fork: their full collections leave all of this out (see vgtrack.heap).
with long_lived():
    import keras  # noqa: F401
    import matplotlib.backends.backend_agg  # noqa: F401  (a run's figures)
    import matplotlib.figure  # noqa: F401
    import PIL.PngImagePlugin  # noqa: F401
    import pyarrow.parquet  # noqa: F401  (a run's history.parquet)
    import sklearn.datasets  # noqa: F401  (make_circles)
    import sklearn.preprocessing  # noqa: F401
    import tensorflow  # noqa: F401

"""The garbage collector and what lives as long as the process: imported modules, an opened store.

Importing TensorFlow or MLflow creates hundreds of thousands of objects and next to no garbage,
yet the collector, counting allocations, runs full collections over them all along the way (a
fifth of TensorFlow's import time). Once imported, they would still be scanned by every later
full collection: 0.17 s each in a worker, set off by as little as a group's artifact files.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def long_lived() -> Iterator[None]:
    """Build what the block builds with the collector off, then freeze everything alive into
    CPython's permanent generation, which collections leave out (:func:`gc.freeze`).

    Example:
        >>> with long_lived():
        ...     import tensorflow  # doctest: +SKIP
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()

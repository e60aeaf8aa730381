"""The sweep process's start-up work, at the lowest CPU priority, so that it takes what the fork server leaves.

While the fork server imports TensorFlow (about 2 s, at times on more than one core), the sweep
process opens its MLflow store and creates the first runs. At equal priority the two slowed each
other: the workers came up about 0.1 s later than with no MLflow at all. Run at niceness 19, the
store takes no longer to open (the sweep process waits for the workers anyway), and the import
runs as if it were alone.

Only the thread doing that work is lowered (Linux gives each thread its own niceness); the sweep
process's main thread keeps its priority, and an unprivileged process could not raise it back.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
LOWEST = 19  # niceness of the thread: the scheduler runs it when nothing else wants the core


def _lower_this_thread() -> None:
    if sys.platform.startswith("linux"):  # elsewhere setpriority would lower the whole process
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST)


def at_lowest_priority(function: Callable[..., T], *args) -> T:
    """``function(*args)`` run in a thread of the lowest CPU priority and waited for: its result, or its exception.

    Example:
        >>> tracker = at_lowest_priority(SweepTracker, uri, "depth")  # doctest: +SKIP
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vgtrack-low-priority", initializer=_lower_this_thread) as executor:
        return executor.submit(function, *args).result()

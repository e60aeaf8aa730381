"""vgtrack.priority: start-up work in a thread of the lowest priority, the caller's thread left as it was."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from vgtrack.priority import LOWEST, at_lowest_priority


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_the_work_runs_at_the_lowest_priority_and_the_caller_keeps_its_own():
    before = _niceness()
    assert at_lowest_priority(_niceness) == LOWEST
    assert _niceness() == before


def test_the_result_and_the_exception_reach_the_caller():
    assert at_lowest_priority(sorted, [3, 1, 2]) == [1, 2, 3]
    with pytest.raises(ZeroDivisionError):
        at_lowest_priority(lambda: 1 / 0)

"""Ctrl-C and SIGTERM: ask the loop that is running to stop, and let it end its runs as KILLED."""

from __future__ import annotations

import signal
import sys


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived; raised by the loop that checks the flag, within a fraction of a second."""


class StopFlag:
    """The first Ctrl-C/SIGTERM asks the parent's loop to stop (it ends the runs in progress as
    KILLED); a second Ctrl-C raises KeyboardInterrupt wherever the parent is."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: stopping; runs in progress end as KILLED", file=sys.stderr)

    def __enter__(self) -> StopFlag:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

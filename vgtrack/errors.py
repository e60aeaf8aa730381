"""The kinds of failure vgtrack knows.

A :class:`SpecError` is fatal: the sweep file is wrong, nothing is trained and the
command exits with status 2. A :class:`UsageError` is as fatal: a command-line value
(``--storage``, ``--tracking-uri``, ``--study``) is wrong or unreachable. A :class:`RunFailed` belongs to one (cell, seed): the
run is recorded as FAILED with its reason and the sweep goes on.
"""

from __future__ import annotations


class SpecError(Exception):
    """An invalid sweep file, reported as one line: ``file: dotted.key: rule, got value``.

    Example:
        >>> str(SpecError("sweeps/x.yaml", "grid.depth", "expected integers >= 1, got 0"))
        'sweeps/x.yaml: grid.depth: expected integers >= 1, got 0'
    """

    def __init__(self, path: str, key: str, message: str) -> None:
        self.path, self.key, self.message = str(path), key, message
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + message)


class RunFailed(Exception):
    """One run could not finish (for example its loss became NaN); the sweep goes on."""


class UsageError(Exception):
    """A wrong or unreachable command-line value, one line naming it; the command exits with status 2.

    Example:
        >>> str(UsageError("--storage postgresql://root@db/x: cannot open the database: timeout"))
        '--storage postgresql://root@db/x: cannot open the database: timeout'
    """

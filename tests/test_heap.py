"""vgtrack.heap: the collector off while long-lived objects are built, then those objects frozen."""

from __future__ import annotations

import gc

from vgtrack.heap import long_lived


def test_long_lived_builds_with_the_collector_off_then_freezes_what_is_alive():
    assert gc.isenabled()
    try:
        with long_lived():
            assert not gc.isenabled()
            kept = [[i] for i in range(1000)]
        assert gc.isenabled() and gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()


def test_long_lived_leaves_a_disabled_collector_disabled():
    gc.disable()
    try:
        with long_lived():
            pass
        assert not gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()

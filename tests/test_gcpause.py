"""The cycle collector pauses while a batch loads and catches up after it."""

import gc
import weakref

from ingestd.support import gcpause


class Node:
    pass


def test_a_batch_runs_without_the_collector_and_its_cycles_are_freed_after():
    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
        node = Node()
        node.self = node  # a cycle: reference counting alone never frees it
        alive = weakref.ref(node)
        del node
        assert alive() is not None
    assert gc.isenabled()
    assert alive() is None


def test_a_collector_turned_off_by_someone_else_stays_off():
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()

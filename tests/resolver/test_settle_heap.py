"""The serving process settles its heap once started (resolver.server.settle_heap): the start-up's
garbage collected, then everything left frozen out of the collector's generations."""

from __future__ import annotations

import gc
import weakref

from resolver.server import settle_heap


class _Node:
    me: _Node


def test_start_up_garbage_is_collected_before_the_rest_is_frozen() -> None:
    garbage = _Node()
    garbage.me = garbage  # a cycle: only the collector frees it
    gone = weakref.ref(garbage)
    kept = _Node()
    kept.me = kept
    del garbage
    try:
        settle_heap()
        assert gone() is None
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # a full collection no longer walks it
    finally:
        gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())

"""Short full collections for long-running processes: freeze the heap that lives for good.

CPython's cyclic garbage collector now and then walks every tracked object (a generation-2
collection). The API holds ~100,000 objects from its imports and set-up, a worker child ~380,000
once TensorFlow and a model are loaded, and each full pass stopped the process for 40-50 ms in
the API (about once a second at 64 digits clients) and 100-180 ms in a worker child, answering
nothing meanwhile: the p99 of a busy API carried those stalls. `gc.freeze()` moves everything
alive into a permanent generation that collections skip, so a full pass walks only what was
made since (12,500 objects and ~5 ms in the API; docs/architecture.md has the figures).

Frozen objects are never collected as cycles. Long-lived state that is dropped later (a worker's
retired model version) must be thawed first: `heap_thaw()`, drop it, then `heap_freeze()`.
"""

import gc


def heap_freeze() -> None:
    """Collect, then freeze what is alive now: later full collections skip it."""
    gc.collect()
    gc.freeze()


def heap_thaw() -> None:
    """Give the frozen objects back to the collector (before dropping long-lived state)."""
    gc.unfreeze()

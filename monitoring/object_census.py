"""Live Python objects per type, for finding what a leak is made of (``GET /debug/objects``).

A full collection runs first, so only reachable objects are counted; that pass pauses the
server (tens of milliseconds on a busy heap), which is why the endpoint is off unless
``http.object_census`` is true. Objects frozen at start-up (``gc.freeze``) and objects the
collector does not track (strings, numbers) are not counted.

``GET /debug/cycles`` (``http.cycle_census``) reports what the collector found in reference
cycles since it was last asked: the server then keeps such objects until asked, so a finished
call that was freed by a collector pass instead of by reference counting shows there.
"""

from __future__ import annotations

import gc
import sys
from collections import Counter
from typing import Any


def object_census() -> dict[str, Any]:
    """``{"unreachable_collected": N, "allocated_blocks": B, "objects": {"module.Type": count}}``.

    ``unreachable_collected`` is what the collection found in reference cycles;
    ``allocated_blocks`` counts every small allocation, strings and numbers included.
    """
    collected = gc.collect()
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return {"unreachable_collected": collected, "allocated_blocks": sys.getallocatedblocks(),
            "objects": dict(counts.most_common())}


def keep_cycles() -> None:
    """From now on, every collector pass keeps what it finds in reference cycles
    (``gc.DEBUG_SAVEALL``) instead of freeing it, until :func:`cycle_census` reports it."""
    gc.set_debug(gc.DEBUG_SAVEALL)


def cycle_census() -> dict[str, Any]:
    """What collector passes found in reference cycles since the last census, per type.

    ``{"objects_in_cycles": N, "objects": {"module.Type": count}}``; then those objects
    are freed. Only meaningful after :func:`keep_cycles`, otherwise passes already freed them.
    """
    gc.collect()
    found = list(gc.garbage)
    gc.garbage.clear()
    counts = Counter(f"{type(obj).__module__}.{type(obj).__qualname__}" for obj in found)
    total = len(found)
    del found
    # Free them: a pass without DEBUG_SAVEALL, then keep saving as before.
    saving = gc.get_debug()
    gc.set_debug(saving & ~gc.DEBUG_SAVEALL)
    gc.collect()
    gc.set_debug(saving)
    return {"objects_in_cycles": total, "objects": dict(counts.most_common())}

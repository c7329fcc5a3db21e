"""Live Python objects per type, for finding what a leak is made of (``GET /debug/objects``).

A full collection runs first, so only reachable objects are counted; that pass pauses the
server (tens of milliseconds on a busy heap), which is why the endpoint is off unless
``http.object_census`` is true. Objects frozen at start-up (``gc.freeze``) and objects the
collector does not track (strings, numbers) are not counted.
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

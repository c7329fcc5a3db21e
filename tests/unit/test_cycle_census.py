"""The cycle census reports what collector passes found in reference cycles, then frees it."""

from __future__ import annotations

import gc

from monitoring.object_census import cycle_census, keep_cycles


class Knot:
    """Two of these pointing at each other are freed only by a collector pass."""

    def __init__(self) -> None:
        self.other: Knot | None = None


def _tie() -> None:
    first, second = Knot(), Knot()
    first.other, second.other = second, first


def test_cycles_are_kept_and_reported_by_type_then_freed() -> None:
    saved = gc.get_debug()
    try:
        keep_cycles()
        cycle_census()  # start clean
        _tie()
        gc.collect()  # an ordinary pass finds the knot and keeps it
        assert sum(isinstance(obj, Knot) for obj in gc.garbage) == 2
        census = cycle_census()
        assert census["objects"][f"{__name__}.Knot"] == 2
        assert census["objects_in_cycles"] >= 2
        assert not any(isinstance(obj, Knot) for obj in gc.garbage), "reported but kept"
        assert f"{__name__}.Knot" not in cycle_census()["objects"]
    finally:
        gc.set_debug(saved)
        gc.garbage.clear()


def test_objects_freed_by_reference_counting_are_not_reported() -> None:
    saved = gc.get_debug()
    try:
        keep_cycles()
        cycle_census()
        loose = Knot()
        loose.other = Knot()
        del loose
        assert f"{__name__}.Knot" not in cycle_census()["objects"]
    finally:
        gc.set_debug(saved)
        gc.garbage.clear()

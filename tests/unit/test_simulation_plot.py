"""The report's plot: what a planner reads off it (the clock and its time zones, the
events, the scales and the targets) is where the report says."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ElementTree

import pytest

from pbx.configuration.server import load_config
from pbx.configuration.simulation_scenario import SHIPPED_SCENARIOS, load_scenario
from simulation import Simulation, build_report, render_svg
from simulation.plot import nice_step

SVG = "{http://www.w3.org/2000/svg}"


# One worker runs this module under xdist: the simulated Monday is computed once.
pytestmark = pytest.mark.xdist_group("monday_report")


@pytest.fixture(scope="module")
def monday_report():
    scenario = load_scenario(SHIPPED_SCENARIOS / "monday.yaml", load_config(None))
    return build_report(Simulation(scenario, 1).run())


def texts(svg: str) -> dict[str, list[tuple[float, float]]]:
    """Each text of the plot with where it is drawn."""
    found: dict[str, list[tuple[float, float]]] = {}
    for element in ElementTree.fromstring(svg).iter(f"{SVG}text"):
        found.setdefault(element.text or "", []).append((float(element.get("x", 0)),
                                                         float(element.get("y", 0))))
    return found


def test_the_time_axis_is_the_reports_clock_with_every_sites_local_time(monday_report):
    """Monday is on the Madrid clock (UTC+1 in December); Bogotá (UTC-5) is six hours
    behind, and its row shows its own time under the same moment."""
    drawn = texts(render_svg(monday_report))
    assert "Europe/Madrid (UTC+01:00)" in drawn and "bogota (UTC-05:00)" in drawn
    madrid_row = drawn["07:00"][0][1]
    hours = {f"{h:02d}:00" for h in range(7, 23)}
    assert all(any(y == madrid_row for _, y in drawn[hour]) for hour in hours)
    (ten,) = [x for x, y in drawn["10:00"] if y == madrid_row]
    assert [x for x, y in drawn["04:00"] if y > madrid_row] == [ten]
    assert any("Europe/Madrid clock (UTC+01:00)" in text for text in drawn)


def test_the_events_are_shaded_over_their_span_and_named(monday_report):
    svg = render_svg(monday_report)
    drawn = texts(svg)
    madrid_row = drawn["07:00"][0][1]
    position = {text: x for text, places in drawn.items() for x, y in places if y == madrid_row}
    root = ElementTree.fromstring(svg)
    shaded = {(round(float(r.get("x"))), round(float(r.get("x")) + float(r.get("width"))))
              for r in root.iter(f"{SVG}rect") if r.get("fill-opacity")
              and float(r.get("height")) > 100}
    quarter = (position["11:00"] - position["10:00"]) / 4
    assert shaded == {(round(position["10:00"]), round(position["10:00"] + 2 * quarter)),
                      (round(position["15:00"]), round(position["15:00"] + 3 * quarter))}
    assert "madrid down" in drawn and "bogota: 3 away (drill)" in drawn


def test_the_waiting_scale_is_round_and_holds_the_busiest_interval(monday_report):
    most = max(row["waiting_average"] for queue in monday_report["queues"].values()
               for row in queue["intervals"])
    drawn = texts(render_svg(monday_report))
    (title_y,) = [y for _, y in drawn["Callers waiting in line (average over the interval)"]]
    labels = sorted(float(text) for text, places in drawn.items()
                    if text.replace(".", "").isdigit() and any(y > title_y for x, y in places if x < 64))
    step = labels[1] - labels[0]
    assert labels[0] == 0 and labels[-1] >= most > labels[-1] - step
    assert all(b - a == pytest.approx(step) for a, b in zip(labels, labels[1:], strict=False))
    assert [nice_step(v) for v in (0, 3.2, 10.3, 37)] == [0.2, 1, 2, 10]


def test_a_lone_interval_is_a_dot_and_different_targets_are_drawn_per_queue(monday_report):
    report = copy.deepcopy(monday_report)
    support = report["queues"]["support"]
    support["service_level_target"]["percent"] = 90
    for number, row in enumerate(support["intervals"]):
        row["service_level"] = 0.5 if number == 20 else None
    root = ElementTree.fromstring(render_svg(report))
    support_colour = "#d62728"
    dots = [c for c in root.iter(f"{SVG}circle") if c.get("fill") == support_colour]
    assert len(dots) == 1
    dashed = {line.get("stroke") for line in root.iter(f"{SVG}line") if line.get("stroke-dasharray")
              and float(line.get("x2")) - float(line.get("x1")) > 100}
    assert support_colour in dashed and len(dashed) == 3
    assert "target 90% in 20 s" in texts(render_svg(report))

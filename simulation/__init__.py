"""A day of the contact center in seconds, played against the real router.

``scenario`` (what callers and agents do), ``engine`` (the discrete-event loop in
virtual time), ``report`` (figures per queue and interval, table), ``plot`` (the SVG), ``erlang``
(Erlang C and A, what the simulation is checked against) and ``staffing`` (fewest
agents per interval for a service-level target).

The simulator drives ``Router`` from outside, through its public API, like the
server does; it also uses the callback request steps (``callbacks``). Nothing in
the router imports it.
"""

from simulation.engine import Simulation, SimulationResult
from simulation.plot import render_svg
from simulation.report import build_report, render_table
from simulation.scenario import (
    AgentsAway,
    Break,
    CallbackOffer,
    Distribution,
    QueueLoad,
    Scenario,
    SiteOutage,
    StaffGroup,
)

__all__ = [
    "AgentsAway",
    "Break",
    "CallbackOffer",
    "Distribution",
    "QueueLoad",
    "Scenario",
    "Simulation",
    "SimulationResult",
    "SiteOutage",
    "StaffGroup",
    "build_report",
    "render_svg",
    "render_table",
]

"""The report's plot, an SVG a planner reads without the table: service level and callers
waiting per queue across the day, each queue's target, the scenario's events shaded, and
the time axis on the report's clock with its UTC offset and every other site's local time.

Each point is a 15-minute interval of arrival, drawn at its middle; an interval without
callers has no point (the line breaks), and a point alone between two such gaps is a dot.
"""

from __future__ import annotations

import html
import math
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from simulation.scenario import INTERVAL_SECONDS

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
_EVENT_FILL = {"site_down": "#f4b183", "away": "#c5d5ea"}

WIDTH, LEFT, RIGHT = 1000, 64, 210
PANEL, GAP, TOP = 220, 64, 74


def _seconds(clock: str) -> float:
    hours, minutes = clock.split(":")
    return 3600.0 * int(hours) + 60.0 * int(minutes)


def utc_offset(moment: datetime) -> str:
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def nice_step(largest: float, ticks: int = 6) -> float:
    """A round step (1, 2 or 5 times a power of ten) that covers ``largest`` in ``ticks`` steps."""
    raw = max(largest, 1.0) / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _text(x: float, y: float, content: str, **attributes: Any) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attributes.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{html.escape(content)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, **attributes: Any) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attributes.items())
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}"{extra}/>'


def render_svg(report: dict[str, Any]) -> str:
    queues: dict[str, Any] = report["queues"]
    rows = next(iter(queues.values()))["intervals"] if queues else []
    count = max(1, len(rows))
    first = _seconds(rows[0]["start"]) if rows else 0.0
    plot_width = WIDTH - LEFT - RIGHT
    zone = report["timezone"]
    midnight = datetime.combine(date.fromisoformat(report["day"]), time(0), tzinfo=ZoneInfo(zone))
    other_zones: dict[str, list[str]] = {}
    for site, site_zone in sorted(report.get("site_timezones", {}).items()):
        if site_zone != zone:
            other_zones.setdefault(site_zone, []).append(site)
    axis_rows = 1 + len(other_zones)
    panel_tops = (TOP, TOP + PANEL + GAP)
    axis_y = panel_tops[1] + PANEL
    height = axis_y + 24 + 16 * axis_rows + 30

    def x_of(seconds: float) -> float:
        """Position of a moment (seconds on the report's clock)."""
        return LEFT + plot_width * (seconds - first) / (count * INTERVAL_SECONDS)

    def wall(seconds: float, in_zone: str) -> datetime:
        return datetime.fromtimestamp(midnight.timestamp() + seconds, ZoneInfo(in_zone))

    start_moment = wall(first, zone)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           _text(LEFT, 22, f"{report['scenario']}: {report['day']}, seed {report['seed']}",
                 font_size=15, font_weight="bold"),
           _text(LEFT, 40, f"Per {INTERVAL_SECONDS // 60}-minute interval of arrival, on the "
                 f"{zone} clock ({utc_offset(start_moment)}). No point: no callers in that "
                 "interval.", fill="#444")]

    # Events, shaded across both panels, named at the top.
    for event in report.get("events", []):
        x1, x2 = x_of(_seconds(event["from"])), x_of(_seconds(event["to"]))
        x1, x2 = max(x1, LEFT), min(x2, LEFT + plot_width)
        if x2 <= x1:
            continue
        fill = _EVENT_FILL.get(event["kind"], "#dddddd")
        for top in panel_tops:
            out.append(f'<rect x="{x1:.1f}" y="{top}" width="{x2 - x1:.1f}" height="{PANEL}" '
                       f'fill="{fill}" fill-opacity="0.45"/>')
        label = (f"{event['site']} down" if event["kind"] == "site_down"
                 else f"{event['site']}: {event['count']} away ({event['reason']})")
        # Under the upper panel, where no line runs; kept inside the plot's width.
        if x1 + 5.5 * len(label) > LEFT + plot_width:
            out.append(_text(x2, TOP + PANEL + 14, label, font_size=10, fill="#333", text_anchor="end"))
        else:
            out.append(_text(x1, TOP + PANEL + 14, label, font_size=10, fill="#333"))

    # Hour lines in both panels; labels under the lower one, a row per time zone.
    hours = max(1, round(count * INTERVAL_SECONDS / 3600))
    label_every = 1 if plot_width / hours >= 44 else 2 if plot_width / hours >= 22 else 3
    tick = math.ceil(first / 3600) * 3600.0
    end = first + count * INTERVAL_SECONDS
    while tick <= end + 1e-6:
        x = x_of(tick)
        for top in panel_tops:
            out.append(_line(x, top, x, top + PANEL, "#e4e4e4"))
        out.append(_line(x, axis_y, x, axis_y + 5, "#666"))
        if round(tick / 3600) % label_every == 0:
            out.append(_text(x, axis_y + 18, wall(tick, zone).strftime("%H:%M"), text_anchor="middle"))
            for row, other in enumerate(other_zones, start=1):
                out.append(_text(x, axis_y + 18 + 16 * row, wall(tick, other).strftime("%H:%M"),
                                 text_anchor="middle", fill="#777", font_size=11))
        tick += 3600.0
    caption_x = LEFT + plot_width + 12
    zone_x = caption_x + 16  # clear of the last hour's label
    out.append(_text(zone_x, axis_y + 18, f"{zone} ({utc_offset(start_moment)})", font_size=11))
    for row, (other, sites) in enumerate(other_zones.items(), start=1):
        out.append(_text(zone_x, axis_y + 18 + 16 * row,
                         f"{', '.join(sites)} ({utc_offset(wall(first, other))})",
                         fill="#777", font_size=11))
    out.append(_text(LEFT + plot_width / 2, axis_y + 24 + 16 * axis_rows + 10,
                     f"time of day (local time of {zone}; grey rows: other sites' local time)",
                     text_anchor="middle", fill="#444"))

    most_waiting = max((row["waiting_average"] for q in queues.values() for row in q["intervals"]),
                       default=0.0)
    waiting_step = nice_step(most_waiting)
    waiting_top = waiting_step * max(1, math.ceil(max(most_waiting, 1.0) / waiting_step - 1e-9))
    panels = (
        ("Service level: share of the interval's callers answered within the queue's target",
         lambda row: row["service_level"], 1.0, 0.2, lambda v: f"{100 * v:.0f}%"),
        ("Callers waiting in line (average over the interval)",
         lambda row: row["waiting_average"], waiting_top, waiting_step, lambda v: f"{v:g}"),
    )
    targets = {(q["service_level_target"]["percent"], q["service_level_target"]["seconds"])
               for q in queues.values()}
    for (title, value_of, scale, step, tick_label), top in zip(panels, panel_tops, strict=True):
        out.append(_text(LEFT, top - 8, title, font_weight="bold"))
        value = 0.0
        while value <= scale + 1e-9:
            y = top + PANEL - PANEL * value / scale
            if 0 < value < scale:
                out.append(_line(LEFT, y, LEFT + plot_width, y, "#e4e4e4"))
            out.append(_text(LEFT - 6, y + 4, tick_label(value), text_anchor="end"))
            value += step
        out.append(f'<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{PANEL}" fill="none" '
                   f'stroke="#888"/>')
        if scale == 1.0:  # the service-level panel: targets
            for index, queue in enumerate(queues.values()):
                goal = queue["service_level_target"]["percent"] / 100
                colour = "#555" if len(targets) == 1 else COLOURS[index % len(COLOURS)]
                y = top + PANEL - PANEL * goal
                out.append(_line(LEFT, y, LEFT + plot_width, y, colour, stroke_dasharray="6 4",
                                 stroke_width="1.2"))
                if len(targets) == 1:
                    break
        for index, queue in enumerate(queues.values()):
            colour = COLOURS[index % len(COLOURS)]
            segments: list[list[tuple[float, float]]] = [[]]
            for number, row in enumerate(queue["intervals"]):
                found = value_of(row)
                if found is None:
                    segments.append([])
                    continue
                y = top + PANEL - PANEL * min(found, scale) / scale
                segments[-1].append((x_of(first + (number + 0.5) * INTERVAL_SECONDS), y))
            for points in segments:
                if len(points) == 1:
                    out.append(f'<circle cx="{points[0][0]:.1f}" cy="{points[0][1]:.1f}" r="2.5" '
                               f'fill="{colour}"/>')
                elif points:
                    out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" '
                               f'points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in points)}"/>')

    # Legend: queues with their targets, then what the dashes and shades mean.
    y = TOP + 8
    for index, (name, queue) in enumerate(queues.items()):
        target = queue["service_level_target"]
        out.append(_line(caption_x, y, caption_x + 22, y, COLOURS[index % len(COLOURS)],
                         stroke_width="2.5"))
        out.append(_text(caption_x + 28, y + 4, name))
        out.append(_text(caption_x + 28, y + 18, f"target {target['percent']:g}% in "
                         f"{target['seconds']:g} s", fill="#666", font_size=11))
        y += 36
    dash = "#555" if len(targets) == 1 else "#999"
    out.append(_line(caption_x, y, caption_x + 22, y, dash, stroke_dasharray="6 4", stroke_width="1.2"))
    out.append(_text(caption_x + 28, y + 4, "target" if len(targets) == 1 else "targets (queue colour)",
                     fill="#444", font_size=11))
    y += 20
    for kind, meaning in (("site_down", "site down"), ("away", "agents away")):
        if any(event["kind"] == kind for event in report.get("events", [])):
            out.append(f'<rect x="{caption_x}" y="{y - 7}" width="22" height="12" '
                       f'fill="{_EVENT_FILL[kind]}" fill-opacity="0.45"/>')
            out.append(_text(caption_x + 28, y + 4, meaning, fill="#444", font_size=11))
            y += 20
    out.append("</svg>")
    return "\n".join(out) + "\n"

"""The scenario file of `pbx simulate`: read, validated against the server configuration,
and turned into a ``simulation.Scenario``.

Every problem is reported as ``FILE:LINE: key: reason``, all of them in one go, like
the server's configuration. See the README's "Simulator" section for the format and
``pbx/scenarios/monday.yaml`` for an example.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callbacks import CallbackPolicy, InvalidPolicy
from pbx.config import ServerConfig
from router import AgentProfile, RouterError
from settings.located_yaml import ConfigError, LocatedDocument, in_file_order, load_yaml_file
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

_TOP_KEYS = {"scenario", "day", "timezone", "from", "to", "warm_up_minutes", "agent_answer_seconds",
             "router_tick_seconds", "queues", "staff", "events"}
_QUEUE_KEYS = {"opens", "calls", "handle", "wrap_up", "patience", "self_service", "ivr_seconds",
               "callback"}
_CALLBACK_KEYS = {"offer_over_seconds", "uptake", "answer_share", "ring_seconds", "max_attempts",
                  "retry_minutes"}
_STAFF_KEYS = {"name", "like", "site", "skills", "languages", "count", "shift", "breaks"}
_BREAK_KEYS = {"at", "minutes", "reason"}
_EVENT_KEYS = {"site_down", "away", "count", "from", "to", "reason"}
_TIME = re.compile(r"^(\d{1,2}):([0-5]\d)$")
_DAY = 86400.0
SHIPPED_SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def scenario_path(reference: str) -> Path:
    """A file path, or the name of a shipped scenario (``monday``)."""
    path = Path(reference)
    shipped = SHIPPED_SCENARIOS / f"{reference}.yaml"
    if not path.exists() and "/" not in reference and shipped.exists():
        return shipped
    return path


class _ScenarioProblems:
    """Typed reads of the scenario document that collect every problem with its line
    instead of stopping at the first. (The scenario's rules are mostly between values and
    the server configuration, the sites, queues and agents it names, so they are checked
    here by hand rather than by field models.)"""

    def __init__(self, document: LocatedDocument) -> None:
        self.document = document
        self.problems: list[str] = []

    def fail(self, path: str, reason: str) -> None:
        self.problems.append(self.document.problem(path.lstrip("."), reason))

    def mapping(self, value: Any, path: str, allowed: set[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, "must be a mapping")
            return {}
        for key in value:
            if allowed is not None and key not in allowed:
                self.fail(f"{path}.{key}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return value

    def text(self, data: dict[str, Any], key: str, path: str, default: str | None = None,
             *, required: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(f"{path}.{key}", "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.fail(f"{path}.{key}", "must be a string")
            return default
        return str(value)

    def number(self, data: dict[str, Any], key: str, path: str, default: float, *,
               minimum: float, maximum: float, integer: bool = False) -> Any:
        value = data.get(key, default)
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            self.fail(f"{path}.{key}", f"must be {'an integer' if integer else 'a number'}")
            return default
        if not minimum <= value <= maximum:
            self.fail(f"{path}.{key}", f"must be between {minimum} and {maximum}, not {value}")
            return default
        return value


def load_scenario(path: Path, config: ServerConfig) -> Scenario:
    """Read ``path``; raises ``ConfigError`` listing every problem."""
    document = load_yaml_file(path)
    reader = _ScenarioProblems(document)
    scenario = _ScenarioReader(reader, config).read(document.data)
    if reader.problems or scenario is None:
        raise ConfigError(in_file_order(reader.problems))
    return scenario


class _ScenarioReader:
    def __init__(self, reader: _ScenarioProblems, config: ServerConfig) -> None:
        self.reader = reader
        self.config = config
        center = config.contact_center
        self.sites = {site.name: site.timezone for site in center.sites}
        self.agents = {record.extension: record.profile for record in center.agents}
        self.queues = {queue.name: queue for queue in center.queues}

    def fail(self, path: str, reason: str) -> None:
        self.reader.fail(path, reason)

    def read(self, raw: Any) -> Scenario | None:
        reader = self.reader
        data = reader.mapping(raw, "", _TOP_KEYS)
        name = reader.text(data, "scenario", "", "scenario") or "scenario"
        day = data.get("day")
        if not isinstance(day, date):
            self.fail("day", "is required: the date simulated, like 2026-12-07")
            day = date(2026, 1, 5)
        default_zone = next(iter(self.sites.values()), "UTC")
        timezone = reader.text(data, "timezone", "", default_zone) or default_zone
        self._zone(timezone, "timezone")
        start = self.time(data, "from", "", 0.0)
        end = self.time(data, "to", "", _DAY)
        if end <= start:
            self.fail("to", "must be after 'from'")
        warm_up = 60.0 * reader.number(data, "warm_up_minutes", "", 0, minimum=0, maximum=24 * 60)
        answer = self.distribution(data.get("agent_answer_seconds", 0), "agent_answer_seconds")
        tick = reader.number(data, "router_tick_seconds", "", 0.25, minimum=0.01, maximum=60)
        loads = self.loads(data.get("queues"))
        staff = self.staff(data.get("staff"))
        outages, away = self.events(data.get("events"))
        if self.reader.problems:
            return None
        return Scenario(
            name=name, day=day, timezone=timezone, queues=tuple(self.queues.values()),
            site_timezones=dict(self.sites), loads=tuple(loads), staff=tuple(staff),
            outages=tuple(outages), away=tuple(away), agent_answer=answer, start=start, end=end,
            router_tick_seconds=tick, warm_up=warm_up)

    # -- values
    def _zone(self, name: str, path: str) -> None:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.fail(path, f"unknown time zone {name!r} (an IANA name like Europe/Madrid)")

    def time(self, data: dict[str, Any], key: str, path: str, default: float) -> float:
        value = data.get(key)
        where = f"{path}.{key}" if path else key
        if value is None:
            return default
        found = _TIME.match(value) if isinstance(value, str) else None
        if found is None or int(found.group(1)) > 48:
            self.fail(where, 'must be a time "HH:MM" in quotes (up to "48:00" for the next day)')
            return default
        return 3600.0 * int(found.group(1)) + 60.0 * int(found.group(2))

    def distribution(self, raw: Any, path: str) -> Distribution:
        """A number (constant seconds) or {exponential: MEAN} / {constant: S} /
        {lognormal: MEAN, cv: CV} / {uniform: [LOW, HIGH]}."""
        constant = Distribution("constant", 0.0)
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            if raw < 0:
                self.fail(path, "must be >= 0 seconds")
                return constant
            return Distribution("constant", float(raw))
        if not isinstance(raw, dict):
            self.fail(path, "must be seconds or a distribution like {exponential: 180}")
            return constant
        kinds = [k for k in raw if k in ("constant", "exponential", "lognormal", "uniform")]
        extra = [k for k in raw if k not in kinds and k != "cv"]
        if len(kinds) != 1 or extra:
            self.fail(path, "must be one of {constant: S}, {exponential: MEAN}, "
                            "{lognormal: MEAN, cv: CV}, {uniform: [LOW, HIGH]}")
            return constant
        kind = kinds[0]
        value = raw[kind]
        try:
            if kind == "uniform":
                if not (isinstance(value, list) and len(value) == 2
                        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
                    raise ValueError("uniform needs [LOW, HIGH] in seconds")
                return Distribution("uniform", low=float(value[0]), high=float(value[1]))
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{kind} needs a number of seconds")
            cv = raw.get("cv", 0.0 if kind != "lognormal" else None)
            if kind == "lognormal" and (isinstance(cv, bool) or not isinstance(cv, int | float)):
                raise ValueError("lognormal needs cv (standard deviation / mean), e.g. 0.6")
            if kind != "lognormal" and "cv" in raw:
                raise ValueError(f"cv only applies to lognormal, not {kind}")
            if kind in ("exponential", "lognormal") and value <= 0:
                raise ValueError(f"{kind} needs a mean > 0")
            return Distribution(kind, float(value), float(cv or 0.0))
        except ValueError as exc:
            self.fail(path, str(exc))
            return constant

    def share(self, data: dict[str, Any], key: str, path: str, default: float) -> float:
        return float(self.reader.number(data, key, path, default, minimum=0, maximum=1))

    # -- sections
    def loads(self, raw: Any) -> list[QueueLoad]:
        section = self.reader.mapping(raw, "queues")
        if not section:
            self.fail("queues", "is required: the callers of at least one queue")
        loads = []
        for name, body in section.items():
            path = f"queues.{name}"
            if name not in self.queues:
                known = ", ".join(sorted(self.queues)) or "none"
                self.fail(path, f"unknown queue {name!r} (the configuration has: {known})")
                continue
            data = self.reader.mapping(body, path, _QUEUE_KEYS)
            calls = data.get("calls")
            if not (isinstance(calls, list) and calls and all(
                    isinstance(c, int | float) and not isinstance(c, bool) and c >= 0 for c in calls)):
                self.fail(f"{path}.calls", "must be a list of expected calls per 15 minutes (numbers >= 0)")
                calls = [0]
            handle = Distribution("constant", 0.0)
            if "handle" not in data:
                self.fail(f"{path}.handle", "is required: talk time, like {lognormal: 240, cv: 0.6}")
            else:
                problems = len(self.reader.problems)
                handle = self.distribution(data["handle"], f"{path}.handle")
                if len(self.reader.problems) == problems and handle.average <= 0:
                    self.fail(f"{path}.handle", "must average more than 0 seconds")
            patience = None
            if data.get("patience") is not None:
                patience = self.distribution(data["patience"], f"{path}.patience")
            loads.append(QueueLoad(
                queue=name,
                calls=tuple(float(c) for c in calls),
                handle=handle,
                opens=self.time(data, "opens", path, 0.0),
                wrap_up=self.distribution(data.get("wrap_up", 0), f"{path}.wrap_up"),
                patience=patience,
                self_service=self.share(data, "self_service", path, 0.0),
                ivr_seconds=float(self.reader.number(data, "ivr_seconds", path, 0, minimum=0,
                                                     maximum=3600)),
                callback=self.callback(data.get("callback"), f"{path}.callback"),
            ))
        return loads

    def callback(self, raw: Any, path: str) -> CallbackOffer | None:
        if raw is None:
            return None
        reader = self.reader
        data = reader.mapping(raw, path, _CALLBACK_KEYS)
        if "offer_over_seconds" not in data or "uptake" not in data:
            self.fail(path, "needs offer_over_seconds and uptake")
        try:
            policy = CallbackPolicy(
                max_attempts=reader.number(data, "max_attempts", path, 3, minimum=1, maximum=20,
                                           integer=True),
                retry_delay=timedelta(minutes=reader.number(data, "retry_minutes", path, 2,
                                                            minimum=0.1, maximum=24 * 60)))
        except InvalidPolicy as exc:
            self.fail(path, str(exc))
            policy = CallbackPolicy()
        return CallbackOffer(
            offer_over_seconds=float(reader.number(data, "offer_over_seconds", path, 0,
                                                   minimum=0, maximum=86400)),
            uptake=self.share(data, "uptake", path, 0.0),
            answer_share=self.share(data, "answer_share", path, 0.9),
            ring=self.distribution(data.get("ring_seconds", 8), f"{path}.ring_seconds"),
            policy=policy)

    def staff(self, raw: Any) -> list[StaffGroup]:
        if not isinstance(raw, list) or not raw:
            self.fail("staff", "is required: a list of agent groups with their shifts")
            return []
        groups = []
        names: set[str] = set()
        for i, body in enumerate(raw):
            path = f"staff[{i}]"
            data = self.reader.mapping(body, path, _STAFF_KEYS)
            if not data:
                continue
            name = self.reader.text(data, "name", path, required=True) or f"group{i + 1}"
            if name in names:
                self.fail(f"{path}.name", f"group {name!r} is defined twice")
            names.add(name)
            profile = self.profile(data, path, name)
            count = self.reader.number(data, "count", path, 1, minimum=0, maximum=100_000, integer=True)
            shift = data.get("shift")
            start, end = 0.0, _DAY
            if not (isinstance(shift, list) and len(shift) == 2):
                self.fail(f"{path}.shift", 'must be ["HH:MM", "HH:MM"] in the site\'s local time')
            else:
                start = self.time({"start": shift[0]}, "start", f"{path}.shift", 0.0)
                end = self.time({"end": shift[1]}, "end", f"{path}.shift", _DAY)
                if end <= start:
                    self.fail(f"{path}.shift", "must end after it starts (\"26:00\" is 02:00 the next day)")
            breaks = []
            raw_breaks = data.get("breaks") or []
            if not isinstance(raw_breaks, list):
                self.fail(f"{path}.breaks", "must be a list of {at, minutes}")
                raw_breaks = []
            for j, item in enumerate(raw_breaks):
                bpath = f"{path}.breaks[{j}]"
                bdata = self.reader.mapping(item, bpath, _BREAK_KEYS)
                if "at" not in bdata:
                    self.fail(bpath, "needs at")
                at = self.time(bdata, "at", bpath, start)
                minutes = self.reader.number(bdata, "minutes", bpath, 15, minimum=1, maximum=600)
                reason = self.reader.text(bdata, "reason", bpath, "break") or "break"
                if not start <= at < end:
                    self.fail(f"{bpath}.at", "must be within the shift")
                breaks.append(Break(at, 60.0 * minutes, reason))
            if profile is not None:
                groups.append(StaffGroup(name, profile, count, start, end, tuple(breaks)))
        return groups

    def profile(self, data: dict[str, Any], path: str, name: str) -> AgentProfile | None:
        like = self.reader.text(data, "like", path)
        base: AgentProfile | None = None
        if like is not None:
            base = self.agents.get(like)
            if base is None:
                self.fail(f"{path}.like", f"unknown agent {like!r} (the configuration has: "
                                          f"{', '.join(sorted(self.agents)) or 'none'})")
                return None
        site = self.reader.text(data, "site", path, base.site if base else None)
        if site is None:
            self.fail(path, "needs a site (or like: an agent of the configuration to copy)")
            return None
        if site not in self.sites:
            self.fail(f"{path}.site", f"unknown site {site!r} (the configuration has: "
                                      f"{', '.join(sorted(self.sites)) or 'none'})")
            return None
        skills = data.get("skills", dict(base.skills) if base else {})
        languages = data.get("languages", sorted(base.languages) if base else [])
        if not isinstance(skills, dict):
            self.fail(f"{path}.skills", "must map skill names to proficiency 1-10")
            return None
        if not isinstance(languages, list):
            self.fail(f"{path}.languages", "must be a list of language codes")
            return None
        try:
            return AgentProfile(name, name, site, skills, frozenset(str(x) for x in languages))
        except RouterError as exc:
            self.fail(f"{path}.skills", str(exc))
            return None

    def events(self, raw: Any) -> tuple[list[SiteOutage], list[AgentsAway]]:
        outages: list[SiteOutage] = []
        away: list[AgentsAway] = []
        if raw is None:
            return outages, away
        if not isinstance(raw, list):
            self.fail("events", "must be a list")
            return outages, away
        for i, body in enumerate(raw):
            path = f"events[{i}]"
            data = self.reader.mapping(body, path, _EVENT_KEYS)
            kinds = [k for k in ("site_down", "away") if k in data]
            if len(kinds) != 1:
                self.fail(path, "must be one of {site_down: SITE, from, to} or "
                                "{away: SITE, count, from, to, reason}")
                continue
            site = str(data[kinds[0]])
            if site not in self.sites:
                self.fail(f"{path}.{kinds[0]}", f"unknown site {site!r}")
                continue
            start = self.time(data, "from", path, 0.0)
            end = self.time(data, "to", path, 0.0)
            if "from" not in data or "to" not in data or end <= start:
                self.fail(path, "needs from and to, to after from")
                continue
            if kinds[0] == "site_down":
                outages.append(SiteOutage(site, start, end))
            else:
                count = self.reader.number(data, "count", path, 1, minimum=1, maximum=100_000,
                                           integer=True)
                reason = self.reader.text(data, "reason", path, "drill") or "drill"
                away.append(AgentsAway(site, count, start, end, reason))
        return outages, away

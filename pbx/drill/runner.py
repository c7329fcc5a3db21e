"""``pbx drill``: switch a site's work to another site on purpose, and report how it went.

The command talks only to the sites' HTTP APIs (``--api SITE=URL``, the API token). The
drained site answers SIP OPTIONS and new INVITEs 503: the front door's dispatcher, which
probes every site with OPTIONS, takes it out of the rotation within a probe interval, and
a call that still reaches it fails over to the next site. Nothing has to be told to the
front door (no control socket to secure, and it works the same with several front doors).

Steps: drain ``--from`` (new calls refused; its calls in progress carry on; its waiting
callers are offered to the other sites' agents), move its agents to ``--to`` (each as soon
as it is not on a call: ``--from`` releases it, ``--to`` claims it), wait until it carries
no call and tries no callback (``--wait``), hand its pending callbacks over and wait until
the other sites have adopted them, then report. ``--back`` ends every drain and brings
each site's agents home.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# A call ending so is lost to its caller; any other way is the caller's or the agent's doing.
LOST_DISPOSITIONS = frozenset({"failed", "dropped", "interrupted"})
POLL_SECONDS = 0.5
# Records are listed by start time: a call still going at the drill's start began at most
# this long before it.
CALLS_LAST_AT_MOST = timedelta(hours=6)
PAGE = 1000


class DrillError(Exception):
    """The drill cannot start or go on (the message says why and what to do)."""


@dataclass
class SiteApi:
    site: str
    url: str  # http://host:port (the API is under /api/v1)
    token: str | None
    timeout: float = 10.0

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url.rstrip('/')}/api/v1{path}", data=data,
                                         method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:
                detail = json.loads(detail)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            if error.code == 401:
                raise DrillError(f"site {self.site} ({self.url}) refused the API token: give the "
                                 "right one with --token or PBX_API_TOKEN") from None
            raise DrillError(f"site {self.site} ({self.url}): {method} {path}: {error.code} "
                             f"{detail}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DrillError(f"cannot reach site {self.site}'s server at {self.url}: {reason}") from None
        return json.loads(text) if text else None


@dataclass
class DrillReport:
    from_site: str
    to_site: str
    dry_run: bool = False
    started: float = 0.0
    drained_at: float | None = None
    calls_finished_at: float | None = None
    callbacks_moved_at: float | None = None
    ended: float | None = None
    calls_in_progress_at_start: int = 0
    calls_answered: int = 0
    calls_answered_by_site: dict[str, int] = field(default_factory=dict)
    answered_calls: list[dict[str, Any]] = field(default_factory=list)  # call_id, site, answered
    calls_lost: int = 0
    lost_calls: list[dict[str, Any]] = field(default_factory=list)
    callers_moved: int = 0
    callbacks_pending: int = 0
    callbacks_adopted: int = 0
    agents_moved: int = 0
    moved_agents: list[dict[str, Any]] = field(default_factory=list)  # agent, at (ISO)
    moved_callers: list[dict[str, Any]] = field(default_factory=list)  # call_id, site, agent, at
    agents_at_drained_site: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)

    agents_moved_at: float | None = None

    @property
    def rto_seconds(self) -> float | None:
        switched = self.callbacks_moved_at or self.calls_finished_at
        return None if switched is None else round(switched - self.started, 3)

    def to_dict(self) -> dict[str, Any]:
        def iso(moment: float | None) -> str | None:
            return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()
        return {
            "from": self.from_site, "to": self.to_site, "dry_run": self.dry_run,
            "rto_seconds": self.rto_seconds,
            "calls_in_progress_at_start": self.calls_in_progress_at_start,
            "calls_answered": self.calls_answered,
            "calls_answered_by_site": self.calls_answered_by_site,
            "answered_calls": self.answered_calls,
            "calls_lost": self.calls_lost, "lost_calls": self.lost_calls,
            "callers_moved": self.callers_moved, "moved_callers": self.moved_callers,
            "callbacks_pending": self.callbacks_pending,
            "callbacks_adopted": self.callbacks_adopted,
            "agents_moved": self.agents_moved, "moved_agents": self.moved_agents,
            "agents_at_drained_site": self.agents_at_drained_site,
            "timestamps": {"started": iso(self.started), "drained": iso(self.drained_at),
                           "agents_moved": iso(self.agents_moved_at),
                           "calls_finished": iso(self.calls_finished_at),
                           "callbacks_moved": iso(self.callbacks_moved_at),
                           "ended": iso(self.ended)},
            "plan": self.plan,
        }

    def summary(self) -> str:
        if self.dry_run:
            return "\n".join([f"Dry run: drill from {self.from_site} to {self.to_site} "
                              "(nothing changed)", *(f"  would {step}" for step in self.plan)])
        by_site = ", ".join(f"{site} {count}" for site, count in
                            sorted(self.calls_answered_by_site.items())) or "none"
        return "\n".join([
            f"Drill from {self.from_site} to {self.to_site}: "
            + ("0 calls lost" if self.calls_lost == 0 else f"{self.calls_lost} CALL(S) LOST"),
            f"  time to switch (RTO): {self.rto_seconds} s",
            f"  calls in progress at {self.from_site} when it was drained: "
            f"{self.calls_in_progress_at_start} (all let finish)",
            f"  calls answered during the drill: {self.calls_answered} ({by_site})",
            f"  calls lost: {self.calls_lost}",
            f"  callers moved: {self.callers_moved}",
            f"  callbacks adopted by the other sites: {self.callbacks_adopted} of "
            f"{self.callbacks_pending}",
            f"  agents moved to {self.to_site}: {self.agents_moved} of "
            f"{len(self.agents_at_drained_site)}"
            + "".join(f"\n    {moved['agent']} at {moved['at']}" for moved in self.moved_agents),
            f"  started {self.to_dict()['timestamps']['started']}, "
            f"ended {self.to_dict()['timestamps']['ended']}",
        ])


class Drill:
    def __init__(self, apis: Mapping[str, SiteApi], *, wait_seconds: float = 300.0,
                 say: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.apis = dict(apis)
        self.wait_seconds = wait_seconds
        self.say = say
        self.clock = clock
        self.sleep = sleep

    # -- checks --------------------------------------------------------------------------

    def _api(self, site: str) -> SiteApi:
        api = self.apis.get(site)
        if api is None:
            known = ", ".join(sorted(self.apis)) or "none"
            raise DrillError(f"unknown site {site!r}: no --api {site}=URL given (sites given: {known})")
        return api

    def _check_sites(self, *sites: str) -> None:
        apis = [self._api(site) for site in sites]  # every address given, before asking any
        for api in apis:
            names = {record["name"] for record in api.request("GET", "/sites")}
            for name in sites:
                if name not in names:
                    raise DrillError(f"unknown site {name!r}: the contact center's sites are "
                                     f"{', '.join(sorted(names))}")

    def _drain_state(self, site: str) -> dict[str, Any]:
        state: dict[str, Any] = self._api(site).request("GET", f"/sites/{site}/drain")
        return state

    def _all(self, site: str, path: str, **query: object) -> list[dict[str, Any]]:
        """Every item of a paged list of ``site``'s API."""
        items: list[dict[str, Any]] = []
        while True:
            text = urllib.parse.urlencode({**query, "limit": PAGE, "offset": len(items)})
            page = self._api(site).request("GET", f"{path}?{text}")
            items += page
            if len(page) < PAGE:
                return items

    def _pending_callbacks(self, site: str) -> list[str]:
        return [request["id"] for request in self._all(site, "/callbacks", state="pending")
                if request["site"] == site]

    def _owners(self, site: str, ids: set[str]) -> dict[str, str]:
        return {request["id"]: request["site"] for request in self._all(site, "/callbacks")
                if request["id"] in ids}

    def _agents_of(self, site: str) -> list[str]:
        return sorted(agent["extension"] for agent in self._api(site).request("GET", "/agents")
                      if agent.get("site") == site)

    # -- the drill -----------------------------------------------------------------------

    def run(self, from_site: str, to_site: str, *, dry_run: bool = False) -> DrillReport:
        if from_site == to_site:
            raise DrillError(f"--from and --to are both {from_site}: drill to another site")
        self._check_sites(from_site, to_site)
        source, target = self._drain_state(from_site), self._drain_state(to_site)
        for state in (source, target):
            if state["draining"]:
                raise DrillError(
                    f"a drill is already running: site {state['site']} is drained since "
                    f"{_iso(state['since'])} by {state['by']} (end it with pbx drill --back)")
        report = DrillReport(from_site, to_site, dry_run=dry_run, started=self.clock())
        pending = self._pending_callbacks(from_site)
        report.callbacks_pending = len(pending)
        report.calls_in_progress_at_start = source["calls_in_progress"]
        report.agents_at_drained_site = self._agents_of(from_site)
        report.plan = [
            f"drain {from_site}: answer OPTIONS and new INVITEs 503, so the front door sends "
            f"new calls to {to_site}",
            f"offer the callers waiting at {from_site} to the other sites' agents, at their "
            "place in line",
            f"move {from_site}'s agent(s) {', '.join(report.agents_at_drained_site) or '(none)'} "
            f"to {to_site} (each once it is not on a call)",
            f"let {from_site}'s {source['calls_in_progress']} call(s) in progress and "
            f"{source['callback_tries']} callback tr(ies) finish (up to {self.wait_seconds:g} s)",
            f"hand {from_site}'s {len(pending)} pending callback request(s) over "
            f"for {to_site} to adopt",
            f"report; pbx drill --back lets {from_site} take calls again and brings its "
            "agents home",
        ]
        if dry_run:
            report.ended = self.clock()
            return report

        self.say(f"draining {from_site}: new calls go to {to_site}")
        self._api(from_site).request("PUT", f"/sites/{from_site}/drain",
                                     {"draining": True, "by": f"drill to {to_site}"})
        report.drained_at = self.clock()
        self.say(f"waiting for {from_site}'s calls in progress to finish "
                 f"(up to {self.wait_seconds:g} s)")
        on_a_call: list[str] = []

        def read() -> dict[str, Any]:
            nonlocal on_a_call
            on_a_call = self._move_agents(report)
            return self._drain_state(from_site)

        state = self._wait(read, lambda s: s["calls_in_progress"] == 0
                           and s["callback_tries"] == 0 and not on_a_call)
        if state["calls_in_progress"] or state["callback_tries"] or on_a_call:
            raise DrillError(f"{from_site} still carries {state['calls_in_progress']} call(s) and "
                             f"{state['callback_tries']} callback tr(ies) after "
                             f"{self.wait_seconds:g} s (agent(s) on a call: "
                             f"{', '.join(on_a_call) or 'none'}): it stays drained, nothing was "
                             "cut off; wait longer (--wait) or end the drill with pbx drill --back")
        report.calls_finished_at = self.clock()
        report.moved_callers = state.get("callers_moved") or []
        report.callers_moved = len(report.moved_callers)
        self._api(from_site).request("POST", f"/sites/{from_site}/drain/callbacks")
        if pending:
            ids = set(pending)
            owners = self._wait(lambda: self._owners(to_site, ids),
                                lambda found: all(site != from_site for site in found.values()))
            report.callbacks_adopted = sum(1 for site in owners.values() if site != from_site)
        report.callbacks_moved_at = self.clock()
        report.ended = self.clock()
        self._count_calls(report)
        return report

    def _move_agents(self, report: DrillReport) -> list[str]:
        """The drained site releases its agents not on a call, the target claims them;
        the agents still on a call (to move at a later round)."""
        source, target = report.from_site, report.to_site
        released = self._api(source).request("POST", f"/sites/{source}/drain/agents",
                                              {"to": target})
        moved = {item["agent"] for item in report.moved_agents}
        ready = [agent for agent in released["released"] if agent not in moved]
        if ready:
            claimed = self._api(target).request("POST", f"/sites/{target}/agents/claim",
                                                {"agents": ready, "from": source})
            at = datetime.fromtimestamp(claimed["at"], UTC).isoformat()
            for agent in ready:
                report.moved_agents.append({"agent": agent, "at": at})
                self.say(f"agent {agent} moved to {target}")
            report.agents_moved = len(report.moved_agents)
        if not released["on_a_call"] and report.agents_moved_at is None:
            report.agents_moved_at = self.clock()
        on_a_call: list[str] = released["on_a_call"]
        return on_a_call

    def _wait(self, read: Callable[[], Any], done: Callable[[Any], bool]) -> Any:
        deadline = self.clock() + self.wait_seconds
        value = read()
        while not done(value) and self.clock() < deadline:
            self.sleep(POLL_SECONDS)
            value = read()
        return value

    def _count_calls(self, report: DrillReport) -> None:
        """The calls that went on during the drill, from the call records of both sites
        (calls that started before it and were still going count too)."""
        assert report.ended is not None
        started = datetime.fromtimestamp(report.started, UTC)
        since = (started - CALLS_LAST_AT_MOST).isoformat()
        records: dict[str, dict[str, Any]] = {}
        # Calls still going first, then the records: a call that ended in between has one.
        for site in (report.from_site, report.to_site):
            for live in self._api(site).request("GET", "/calls/live"):
                records[live["call_id"]] = {**live, "site": site, "ended": None,
                                            "disposition": "in_progress"}
        for site in (report.from_site, report.to_site):
            records.update({record["call_id"]: record
                            for record in self._all(site, "/calls", since=since)})
        during = [record for record in records.values()
                  if _during(record, report.started, report.ended)]
        # Answered while the drill ran: what the callers heard of it.
        answered = sorted((record for record in during if record.get("answered")
                           and report.started <= _moment(record["answered"]) <= report.ended),
                          key=lambda record: record["answered"])
        report.answered_calls = [{"call_id": r["call_id"], "site": r.get("site"),
                                  "answered": r["answered"]} for r in answered]
        report.calls_answered = len(answered)
        by_site: dict[str, int] = {}
        for record in answered:
            site = record.get("site") or "?"
            by_site[site] = by_site.get(site, 0) + 1
        report.calls_answered_by_site = by_site
        lost = [record for record in during if record["disposition"] in LOST_DISPOSITIONS]
        report.calls_lost = len(lost)
        report.lost_calls = [{key: record.get(key) for key in
                              ("call_id", "caller", "site", "disposition", "started")}
                             for record in lost]

    def back(self) -> list[str]:
        """End every drain (the sites given) and bring every site's agents home; the sites
        that take calls again."""
        restored = []
        for site in sorted(self.apis):
            state = self._drain_state(site)
            if state["draining"]:
                self._api(site).request("PUT", f"/sites/{site}/drain",
                                        {"draining": False, "by": "drill back"})
                restored.append(site)
        for site in sorted(self.apis):
            home = self._api(site).request("POST", f"/sites/{site}/agents/home")
            for agent in home["claimed"]:
                self.say(f"agent {agent} is served by {site} again")
        return restored


def _moment(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _during(record: Mapping[str, Any], started: float, ended: float) -> bool:
    """Whether the call went on at some time between ``started`` and ``ended``."""
    began = _moment(record["started"])
    finished = record.get("ended")
    if record["disposition"] == "in_progress":
        return began <= ended
    end = _moment(finished) if finished else began
    return began <= ended and end >= started


def _iso(moment: float | None) -> str:
    return "?" if moment is None else datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def parse_api(texts: list[str], token: str | None, timeout: float = 10.0) -> dict[str, SiteApi]:
    apis: dict[str, SiteApi] = {}
    for text in texts:
        site, sep, url = text.partition("=")
        parsed = urllib.parse.urlparse(url)
        if not sep or not site or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise DrillError(f"--api {text!r}: expected SITE=http://HOST:PORT")
        apis[site] = SiteApi(site, url, token, timeout)
    return apis

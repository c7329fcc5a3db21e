"""Callers through the front door, and what their calls say about a site's death.

SIPp runs ``scenarios/front_door_caller.xml``, which logs (``-trace_logs``) when each
INVITE left, when its 200 came and from which site (the SIP port in the 200's Contact),
and how its BYE ended. :func:`failover_summary` turns those lines and the moment a site
was killed into the figures the failover test asserts and bench/bench_failover.py reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peers import sipp

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CALLER = SCENARIOS / "front_door_caller.xml"
GREETING = "101"  # the demo's extension that answers at once and plays a greeting
# A call answered in more than this waited for the front door to give up on a silent
# site (answers through a live site take milliseconds on loopback).
DELAYED_SETUP_S = 0.5


@dataclass
class CallTrace:
    """One caller's call as its SIPp logged it."""

    number: int
    call_id: str
    invited_at: float
    answered_at: float | None = None
    site_port: int | None = None
    bye_status: int | None = None

    @property
    def setup_seconds(self) -> float | None:
        return None if self.answered_at is None else self.answered_at - self.invited_at


def read_call_traces(log_path: Path) -> list[CallTrace]:
    """Lines are `EVENT NUMBER CALL-ID DATE TIME EPOCH [extra...]` (SIPp's [timestamp])."""
    calls: dict[int, CallTrace] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[0] not in ("invite", "answered", "bye"):
            continue
        number, call_id, epoch = int(fields[1]), fields[2], float(fields[5])
        if fields[0] == "invite":
            calls[number] = CallTrace(number, call_id, epoch)
        elif fields[0] == "answered" and number in calls:
            calls[number].answered_at = epoch
            calls[number].site_port = int(fields[6])
        elif fields[0] == "bye" and number in calls:
            calls[number].bye_status = int(fields[6])
    return [calls[n] for n in sorted(calls)]


def start_callers(front_door_address: str, workdir: Path, *, calls: int, rate: float,
                  talk_ms: int) -> tuple[sipp.SippProcess, Path]:
    """SIPp calling the greeting through the front door; its process and its log file."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "calls.log"
    process = sipp.start(front_door_address, workdir=workdir, scenario=CALLER, service=GREETING,
                         calls=calls, rate=rate, duration_ms=talk_ms,
                         global_timeout_s=calls / rate + 30,
                         extra=["-trace_logs", "-log_file", str(log_path)])
    return process, log_path


@dataclass
class FailoverSummary:
    placed_after: int          # calls whose INVITE left after the kill
    failed_after: int          # ... and were never answered (must be 0)
    answered_by_dead_after: int  # ... yet answered by the dead site (must be 0)
    failed_over: int           # ... answered late: their first try hit the silent site
    first_failover_answer_s: float | None  # kill -> first of those answered by a survivor
    recovered_s: float         # kill -> last of those answered: later calls never wait
    lost_held: int             # calls the dead site had answered and still held

    @staticmethod
    def of(traces: list[CallTrace], killed_at: float, dead_port: int) -> FailoverSummary:
        after = [t for t in traces if t.invited_at > killed_at]
        before = [t for t in traces if t.invited_at <= killed_at]
        delayed = [t for t in after
                   if t.answered_at is not None and t.setup_seconds > DELAYED_SETUP_S]
        answers = sorted(t.answered_at - killed_at for t in delayed)
        return FailoverSummary(
            placed_after=len(after),
            failed_after=sum(1 for t in after if t.answered_at is None),
            answered_by_dead_after=sum(1 for t in after if t.site_port == dead_port),
            failed_over=len(delayed),
            first_failover_answer_s=answers[0] if answers else None,
            recovered_s=answers[-1] if answers else 0.0,
            lost_held=sum(1 for t in before
                          if t.site_port == dead_port and t.bye_status != 200))

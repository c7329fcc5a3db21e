"""The call-detail record (CDR) of a finished call, from what its events said."""

from __future__ import annotations

from events import callbacks as callback_events
from ivr.call_log import IvrCallLog
from pbx.records.call_state import CallInProgress
from pbx.records.dispositions import callback_disposition, disposition_of
from pbx.records.times import rounded, utc
from pbx.store import CallRecord


def call_record_of(call: CallInProgress, site: str | None, ivr_calls: IvrCallLog | None) -> CallRecord:
    disposition = disposition_of(call)
    # For a call that went to a queue "answered" means an agent answered, not the IVR.
    if call.queue is not None or call.requested_queue is not None:
        answered = call.agent_answered
        talk = call.talk_seconds
    else:
        answered = call.line_answered
        talk = call.line_duration if call.kind == "bridge" and answered is not None else None
    nodes = tuple(call.ivr_nodes)
    caller = call.caller
    if ivr_calls is not None and call.call_id in ivr_calls and (not nodes or not caller):
        ivr = ivr_calls.record(call.call_id)
        nodes = nodes or tuple(ivr.nodes)
        caller = caller or ivr.caller
    started = call.started if call.started is not None else call.first_seen
    return CallRecord(
        call_id=call.call_id,
        caller=caller,
        callee=call.callee,
        started=utc(started),
        answered=None if answered is None else utc(answered),
        ended=None if call.ended is None else utc(call.ended),
        queue=call.queue or call.requested_queue,
        agent=call.agent,
        disposition=disposition.value,
        ivr_path=nodes,
        wait_seconds=rounded(call.wait_seconds),
        talk_seconds=rounded(talk),
        site=site,
        origin_call_id=call.origin_call_id,
        callback_request_id=call.callback_request_id,
    )


def callback_call_record(event: callback_events.CallbackTryEnded, started: float,
                         site: str | None) -> CallRecord:
    """The record of a callback try's call to the customer, which ended with the try."""
    return CallRecord(
        call_id=event.call_id or "",
        caller="",  # the trunk's caller ID, not the customer
        callee=event.number,
        started=utc(started),
        answered=utc(event.at) if event.answered else None,
        ended=utc(event.at),
        queue=event.queue,
        disposition=callback_disposition(event.outcome).value,
        site=site,
        origin_call_id=event.origin_call_id,
        callback_request_id=event.request_id,
    )

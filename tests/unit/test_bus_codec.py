"""The bus's topics and JSON payloads (schema 1): round trips and every way to be wrong."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.bus import codec
from pbx.bus.codec import (
    AgentPresence,
    AgentState,
    BadMessage,
    CallerContext,
    Forced,
    Heartbeat,
    ReservationCancel,
    ReservationOutcome,
    ReservationRequest,
    ReservationResponse,
    SiteOverride,
    SiteState,
    SiteStatus,
)
from pbx.bus.topics import ParsedTopic, TopicKind, Topics

REQUEST = ReservationRequest(
    reservation_id="5f0c7e0e-1b9e-4d4e-9d1e-2f0b8f5d7a10", from_site="madrid", to_site="bogota",
    call_id="a84b4c76e66710@pc33", queue="billing", timeout=1.5,
    caller=CallerContext(ivr_path=("language", "menu", "billing"), language="es", priority=7,
                         enqueued_at=1_790_000_000.5),
    agent=None, skills=("billing", "es"))

ROUND_TRIPS = [
    (AgentState("bogota", "2001", AgentPresence.WRAP_UP, 1_790_000_000.0),
     codec.encode_agent_state, codec.decode_agent_state),
    (SiteStatus("bogota", SiteState.OFFLINE, 1_790_000_000.0, 1.0, "connection lost"),
     codec.encode_site_status, codec.decode_site_status),
    (Heartbeat("bogota", 42, 1_790_000_000.0, 1.0), codec.encode_heartbeat, codec.decode_heartbeat),
    (SiteOverride("bogota", Forced.DOWN, "madrid:ops", 1_790_000_000.0),
     codec.encode_override, codec.decode_override),
    (REQUEST, codec.encode_request, codec.decode_request),
    (ReservationResponse(REQUEST.reservation_id, "bogota", "madrid", ReservationOutcome.RESERVED,
                         "2001"), codec.encode_response, codec.decode_response),
    (ReservationResponse(REQUEST.reservation_id, "bogota", "madrid", ReservationOutcome.REFUSED,
                         None, "no agent available"), codec.encode_response, codec.decode_response),
    (ReservationCancel(REQUEST.reservation_id, "madrid", "bogota", "timed out"),
     codec.encode_cancel, codec.decode_cancel),
]


@pytest.mark.parametrize(("message", "encode", "decode"), ROUND_TRIPS,
                         ids=[type(m[0]).__name__ for m in ROUND_TRIPS])
def test_every_message_survives_a_round_trip(message, encode, decode):
    payload = encode(message)
    assert json.loads(payload)["schema"] == 1
    assert decode(payload) == message


def test_the_request_payload_is_the_documented_one():
    assert json.loads(codec.encode_request(REQUEST)) == {
        "schema": 1, "reservation_id": REQUEST.reservation_id, "from_site": "madrid",
        "to_site": "bogota", "call_id": "a84b4c76e66710@pc33", "queue": "billing",
        "timeout": 1.5, "agent": None, "skills": ["billing", "es"],
        "caller": {"ivr_path": ["language", "menu", "billing"], "language": "es",
                   "priority": 7, "enqueued_at": 1_790_000_000.5},
    }


def test_extra_fields_from_a_newer_sender_are_ignored():
    body = json.loads(codec.encode_agent_state(ROUND_TRIPS[0][0]))
    body["skills_hint"] = ["billing"]
    assert codec.decode_agent_state(json.dumps(body).encode()) == ROUND_TRIPS[0][0]


def test_outcomes_decided_by_the_asker_are_never_sent():
    with pytest.raises(ValueError):
        codec.encode_response(ReservationResponse("r", "bogota", "madrid",
                                                  ReservationOutcome.TIMEOUT))


def agent(**changes: object) -> bytes:
    body: dict[str, object] = {"schema": 1, "site": "bogota", "agent": "2001",
                               "presence": "available", "since": 1.0}
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (agent(schema=2), "unknown schema version 2"),
    (agent(schema=...), "unknown schema version None"),
    (agent(schema="1"), "unknown schema version '1'"),
    (agent(schema=True), "unknown schema version True"),
    (agent(site=...), "missing field site"),
    (agent(site=""), "field site is empty"),
    (agent(agent=2001), "field agent has the wrong type"),
    (agent(presence="sleeping"), "field presence has an unknown value 'sleeping'"),
    (agent(since="yesterday"), "field since has the wrong type"),
    (agent(since=True), "field since has the wrong type"),
])
def test_a_bad_agent_state_says_why(payload, reason):
    with pytest.raises(BadMessage, match=reason.replace("(", r"\(")):
        codec.decode_agent_state(payload)


def request(**changes: object) -> bytes:
    body = json.loads(codec.encode_request(REQUEST))
    for key, value in changes.items():
        if key.startswith("caller_"):
            body["caller"][key.removeprefix("caller_")] = value
        else:
            body[key] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize(("payload", "reason"), [
    (request(timeout=0), "timeout must be positive"),
    (request(skills="billing"), "field skills has the wrong type"),
    (request(skills=["billing", 3]), "skills must be a list of strings"),
    (request(caller_priority="high"), "field caller.priority has the wrong type"),
    (request(caller_priority=1.5), "field caller.priority has the wrong type"),
    (request(caller_ivr_path=[1]), "caller.ivr_path must be a list of strings"),
    (request(caller="vip"), "field caller has the wrong type"),
    (request(reservation_id=None), "missing field reservation_id|wrong type"),
])
def test_a_bad_request_says_why(payload, reason):
    with pytest.raises(BadMessage, match=reason):
        codec.decode_request(payload)


def test_a_reserved_response_must_name_the_agent():
    payload = json.dumps({"schema": 1, "reservation_id": "r", "from_site": "bogota",
                          "to_site": "madrid", "outcome": "reserved", "agent": None}).encode()
    with pytest.raises(BadMessage, match="names no agent"):
        codec.decode_response(payload)


def test_a_response_cannot_claim_a_timeout():
    payload = json.dumps({"schema": 1, "reservation_id": "r", "from_site": "bogota",
                          "to_site": "madrid", "outcome": "timeout"}).encode()
    with pytest.raises(BadMessage, match="not sent on the bus"):
        codec.decode_response(payload)


@given(st.binary(max_size=200))
def test_no_bytes_break_a_decoder_other_than_as_a_bad_message(payload):
    for decode in (codec.decode_agent_state, codec.decode_site_status, codec.decode_heartbeat,
                   codec.decode_override, codec.decode_request, codec.decode_response,
                   codec.decode_cancel):
        try:
            decode(payload)
        except BadMessage:
            pass


def test_topics_are_built_and_read_back():
    topics = Topics("acme")
    assert topics.agent("bogota", "2001") == "acme/v1/sites/bogota/agents/2001"
    assert topics.site("madrid", TopicKind.RESERVATION_REQUEST) == \
        "acme/v1/sites/madrid/reservations/request"
    for kind in TopicKind:
        if kind not in (TopicKind.AGENT, TopicKind.AGENT_OWNER):
            assert topics.parse(topics.site("madrid", kind)) == ParsedTopic(kind, "madrid")
    assert topics.parse("acme/v1/sites/bogota/agents/2001") == \
        ParsedTopic(TopicKind.AGENT, "bogota", "2001")
    assert topics.agent_owner("bogota", "2001") == "acme/v1/sites/bogota/agents/2001/owner"
    assert topics.parse("acme/v1/sites/bogota/agents/2001/owner") == \
        ParsedTopic(TopicKind.AGENT_OWNER, "bogota", "2001")


@pytest.mark.parametrize("topic", [
    "other/v1/sites/bogota/status", "acme/v2/sites/bogota/status", "acme/v1/sites/bogota",
    "acme/v1/sites/bogota/agents", "acme/v1/sites/bogota/agents/2001/extra",
    "acme/v1/sites/bogota/reservations/other", "acme/v1/sites//status",
])
def test_foreign_topics_are_not_read(topic):
    assert Topics("acme").parse(topic) is None


@pytest.mark.parametrize("name", ["", "a/b", "+", "bo#gota"])
def test_names_that_cannot_be_a_topic_level_are_refused(name):
    with pytest.raises(ValueError):
        Topics("acme").agent("bogota", name)
    with pytest.raises(ValueError):
        Topics("acme").site(name, TopicKind.STATUS)


def test_a_site_subscribes_to_everyone_s_state_and_only_its_own_inbox():
    assert Topics("acme").subscriptions("madrid") == [
        "acme/v1/sites/+/status", "acme/v1/sites/+/heartbeat", "acme/v1/sites/+/override",
        "acme/v1/sites/+/drain", "acme/v1/sites/+/agents/+", "acme/v1/sites/+/agents/+/owner",
        "acme/v1/sites/madrid/reservations/+"]


def test_a_site_status_may_say_where_the_site_takes_its_sister_sites_calls() -> None:
    status = codec.SiteStatus("bogota", codec.SiteState.ONLINE, 1.0, 1.0, "", "10.0.2.15:5060")
    assert codec.decode_site_status(codec.encode_site_status(status)) == status
    without = codec.SiteStatus("bogota", codec.SiteState.ONLINE, 1.0, 1.0)
    assert "sip_address" not in json.loads(codec.encode_site_status(without))
    assert codec.decode_site_status(codec.encode_site_status(without)).sip_address is None
    with pytest.raises(codec.BadMessage):
        codec.decode_site_status(json.dumps(
            {"schema": 1, "site": "bogota", "state": "online", "at": 1.0,
             "heartbeat_interval": 1.0, "sip_address": 5060}).encode())

"""Callers behind a configured front door (sip.front_doors): how they are told apart.

Every caller behind the Kamailio front door reaches the server from the front door's
address, so that address proves nothing about who calls: the per-source cap counts the
address the front door received the call from (the Via below its own), and only for
requests that really come from a configured front door.
"""

from pathlib import Path

import pytest

from pbx.calls.manager import counted_host
from pbx.configuration.server import ConfigError, build_config
from pbx.sip.message import parse_message
from settings.located_yaml import load_yaml

FRONT_DOOR = ("192.0.2.10", 5060)


def sip_settings(front_doors: str):
    text = f"sip:\n  front_doors: {front_doors}\n"
    return build_config(load_yaml(text, "centralita.yaml"), var_dir=Path("var"), base_dir=None).sip


def invite(*vias: str):
    head = "".join(f"Via: {via}\r\n" for via in vias)
    data = ("INVITE sip:101@198.51.100.1 SIP/2.0\r\n" + head +
            "From: <sip:1001@example.com>;tag=a\r\nTo: <sip:101@example.com>\r\n"
            "Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n")
    return parse_message(data.encode())


DOOR_VIA = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKdoor"


def test_front_doors_are_ip_or_ip_and_port_and_anything_else_is_refused():
    sip = sip_settings('["192.0.2.10:5060", "2001:db8::1", "[2001:db8::2]:5070"]')
    assert sip.front_doors == (("192.0.2.10", 5060), ("2001:db8::1", None), ("2001:db8::2", 5070))
    assert sip.is_front_door(("192.0.2.10", 5060))
    assert not sip.is_front_door(("192.0.2.10", 5061))  # a phone on the proxy's host
    assert sip.is_front_door(("2001:db8::1", 40000))
    assert not sip.is_front_door(("192.0.2.11", 5060))
    assert not sip_settings("[]").is_front_door(FRONT_DOOR)
    with pytest.raises(ConfigError) as caught:
        sip_settings('["proxy.example.com:5060", 5060]')
    assert caught.value.problems == [
        "centralita.yaml:2: sip.front_doors[0]: 'proxy.example.com' is not an IP address",
        "centralita.yaml:2: sip.front_doors[1]: must be a string IP or IP:PORT",
    ]


def test_behind_a_front_door_a_call_counts_against_the_address_the_door_received_it_from():
    sip = sip_settings('["192.0.2.10:5060"]')
    # The front door wrote received= because the caller's sent-by was not its address.
    natted = invite(DOOR_VIA, "SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bKa;received=203.0.113.5;rport=4000")
    assert counted_host(natted, FRONT_DOOR, sip) == "203.0.113.5"
    # No received=: the sent-by is where the packet came from.
    direct = invite(DOOR_VIA, "SIP/2.0/UDP 203.0.113.6:5062;branch=z9hG4bKb")
    assert counted_host(direct, FRONT_DOOR, sip) == "203.0.113.6"
    # Only the Via just below the door's counts: deeper ones are the caller's own claims.
    chained = invite(DOOR_VIA, "SIP/2.0/UDP 203.0.113.7;branch=z9hG4bKc",
                     "SIP/2.0/UDP 198.51.100.99;branch=z9hG4bKd")
    assert counted_host(chained, FRONT_DOOR, sip) == "203.0.113.7"


def test_without_a_usable_via_the_callers_behind_a_front_door_share_its_count():
    sip = sip_settings('["192.0.2.10:5060"]')
    assert counted_host(invite(DOOR_VIA), FRONT_DOOR, sip) == "192.0.2.10"
    named = invite(DOOR_VIA, "SIP/2.0/UDP phone.example.com;branch=z9hG4bKe")
    assert counted_host(named, FRONT_DOOR, sip) == "192.0.2.10"


def test_a_via_is_never_believed_from_a_source_that_is_not_a_front_door():
    sip = sip_settings('["192.0.2.10:5060"]')
    forged = invite("SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bKf",
                    "SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKg;received=198.51.100.1")
    assert counted_host(forged, ("203.0.113.9", 5060), sip) == "203.0.113.9"
    assert counted_host(forged, ("192.0.2.10", 5099), sip) == "192.0.2.10"

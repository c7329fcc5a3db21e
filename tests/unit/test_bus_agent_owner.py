"""Agents move with the calls: a site claims another site's agent on the bus (versioned,
retained), every site applies the highest claim, and the home site takes it back only by
claiming it again. On the embedded broker, which keeps MQTT's retained semantics."""

from __future__ import annotations

import pytest
from test_bus_in_process import AGENTS, BEAT, SITES, Recorder, eventually, sites

from events.drills import AgentOwnerChanged
from pbx.bus import AgentPresence, InProcessBroker, InProcessSiteBus, RemoteAgentChanged, Topics
from pbx.bus.codec import BadMessage, decode_owner_claim


async def test_a_claim_moves_an_agent_everywhere_and_the_home_site_takes_it_back():
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota", "lima") as buses:
        (madrid, madrid_events), (bogota, bogota_events), (lima, lima_events) = buses
        madrid.publish_agent("1001", AgentPresence.AVAILABLE, since=1.0)
        await eventually(lambda: "1001" in lima.remote_agents, "lima sees 1001 at madrid")

        claim = bogota.claim_agent("1001", "its phone registered at bogota")
        assert (claim.site, claim.version) == ("bogota", 1)
        await eventually(lambda: all(bus.owner_of("1001") == "bogota"
                                     for bus in (madrid, bogota, lima)), "bogota owns 1001")
        # Madrid's word on 1001 is gone everywhere; bogota publishes it now, and may.
        assert "1001" not in lima.remote_agents
        assert [e.presence for e in lima_events.of(RemoteAgentChanged) if e.agent == "1001"][-1] is None
        bogota.publish_agent("1001", AgentPresence.AVAILABLE, since=2.0)
        await eventually(lambda: "1001" in lima.remote_agents
                         and lima.remote_agents["1001"].site == "bogota", "lima sees 1001 at bogota")
        assert "1001" in madrid.remote_agents
        with pytest.raises(ValueError, match="belongs to site 'bogota'"):
            madrid.publish_agent("1001", AgentPresence.AVAILABLE)
        for events in (madrid_events, bogota_events, lima_events):
            [moved] = events.of(AgentOwnerChanged)
            assert (moved.agent, moved.site, moved.previous, moved.version) == (
                "1001", "bogota", "madrid", 1)

        # Home again: madrid claims above bogota's version.
        assert madrid.claim_agent("1001", "its phone registered at madrid").version == 2
        await eventually(lambda: all(bus.owner_of("1001") == "madrid"
                                     for bus in (madrid, bogota, lima)), "madrid owns 1001 again")
        assert [e.site for e in lima_events.of(AgentOwnerChanged)] == ["bogota", "madrid"]


async def test_a_site_starting_later_reads_the_retained_claims():
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota") as [(_, _), (bogota, _)]:
        bogota.claim_agent("1001", "its phone registered at bogota")
        recorder = Recorder()
        lima = InProcessSiteBus(broker, "lima", SITES, AGENTS, topics=Topics("test"), emit=recorder,
                                heartbeat_interval=BEAT, reconnect_delays=(0.01, 0.05))
        await lima.start()
        try:
            await eventually(lambda: lima.owner_of("1001") == "bogota", "lima reads the claim")
            # The next claim is above every claim known, its own retained one included.
            assert lima.claim_agent("1001", "its phone registered at lima").version == 2
        finally:
            await lima.close()


async def test_claims_that_name_another_site_or_no_agent_are_refused():
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota") as [(madrid, _), (bogota, _)]:
        topics = Topics("test")
        broker_publish = bogota._send  # the wire, as a misbehaving site would use it
        broker_publish(topics.agent_owner("bogota", "1001"),
                       b'{"schema":1,"site":"lima","agent":"1001","version":5,"by":"x","at":1}', True)
        broker_publish(topics.agent_owner("bogota", "9999"),
                       b'{"schema":1,"site":"bogota","agent":"9999","version":5,"by":"x","at":1}', True)
        await eventually(lambda: madrid.ignored.counts["refused message"] >= 2, "both refused")
        assert madrid.owner_of("1001") == "madrid"
        with pytest.raises(ValueError, match="unknown agent"):
            madrid.claim_agent("9999", "no such agent")
    with pytest.raises(BadMessage, match="not positive"):
        decode_owner_claim(b'{"schema":1,"site":"bogota","agent":"1001","version":0,"by":"x","at":1}')

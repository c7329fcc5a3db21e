"""What a drill keeps on the bus, on the embedded broker (MQTT's retained semantics): a
site's drain (retained: the other sites know it, and a restarted drained site finds it),
the owner claims read before a starting site serves calls, and a phone that registered at
home before those claims were read (a take-back the claims read later must not undo)."""

from __future__ import annotations

from test_bus_in_process import AGENTS, BEAT, SITES, Recorder, eventually, sites

from events.drills import AgentOwnerChanged, DrainAnnounced
from pbx.bus import InProcessBroker, InProcessSiteBus, RemoteAgentChanged, Topics
from pbx.bus.codec import SiteDrainState


def _site(broker: InProcessBroker, name: str) -> tuple[InProcessSiteBus, Recorder]:
    recorder = Recorder()
    return InProcessSiteBus(broker, name, SITES, AGENTS, topics=Topics("test"), emit=recorder,
                            heartbeat_interval=BEAT, reconnect_delays=(0.01, 0.05)), recorder


async def test_a_drain_reaches_the_other_sites_and_outlives_a_restart_of_the_drained_site():
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota") as [(madrid, _), (bogota, bogota_events)]:
        drain = SiteDrainState("madrid", 1000.0, "drill to bogota")
        madrid.publish_drain(drain)
        assert madrid.drain_of("madrid") == drain
        await eventually(lambda: bogota.drain_of("madrid") == drain, "bogota knows")
        [heard] = bogota_events.of(DrainAnnounced)
        assert (heard.site, heard.draining, heard.since, heard.by) == (
            "madrid", True, 1000.0, "drill to bogota")
        madrid.crash()

        restarted, events = _site(broker, "madrid")
        await restarted.start()
        try:
            assert await restarted.wait_synced(2)
            # Its own drain, read before it serves anything.
            [own] = events.of(DrainAnnounced)
            assert (own.site, own.draining, own.since) == ("madrid", True, 1000.0)
            restarted.publish_drain(None)  # the drill's end
            await eventually(lambda: bogota.drain_of("madrid") is None, "bogota hears the end")
            assert [e.draining for e in bogota_events.of(DrainAnnounced)] == [True, False]
        finally:
            await restarted.close()

        again, events = _site(broker, "madrid")
        await again.start()
        try:
            assert await again.wait_synced(2)
            assert events.of(DrainAnnounced) == [] and again.drain_of("madrid") is None
        finally:
            await again.close()


async def test_a_starting_site_has_read_the_claims_when_it_is_synced():
    broker = InProcessBroker()
    async with sites(broker, "bogota") as [(bogota, _)]:
        bogota.claim_agent("1001", "drill from madrid")
        madrid, _ = _site(broker, "madrid")
        assert not madrid.synced
        await madrid.start()
        try:
            assert await madrid.wait_synced(2)
            # No waiting for it: madrid routes to 1001 only once synced, and then knows.
            assert madrid.owner_of("1001") == "bogota"
        finally:
            await madrid.close()


async def test_a_phone_registered_at_home_before_the_claims_were_read_keeps_its_agent_home():
    broker = InProcessBroker()
    async with sites(broker, "bogota", "lima") as [(bogota, _), (lima, lima_events)]:
        bogota.claim_agent("1001", "its phone registered at bogota")
        await eventually(lambda: lima.owner_of("1001") == "bogota", "lima reads the claim")
        madrid, events = _site(broker, "madrid")
        # The phone registers at madrid as madrid starts, before the bus is read.
        assert madrid.phone_registered("1001", "its phone registered at madrid") is None
        await madrid.start()
        try:
            assert await madrid.wait_synced(2)
            await eventually(lambda: all(bus.owner_of("1001") == "madrid"
                                         for bus in (madrid, bogota, lima)), "home again")
            # Madrid never handed the agent over: it claimed above bogota's claim.
            assert events.of(AgentOwnerChanged) == []
            assert [(e.site, e.version) for e in lima_events.of(AgentOwnerChanged)] == [
                ("bogota", 1), ("madrid", 2)]
        finally:
            await madrid.close()


async def test_once_synced_a_phone_registering_at_home_claims_its_agent_back_at_once():
    broker = InProcessBroker()
    async with sites(broker, "madrid", "bogota") as [(madrid, _), (bogota, _)]:
        bogota.claim_agent("1001", "drill from madrid")
        await eventually(lambda: madrid.owner_of("1001") == "bogota", "madrid reads the claim")
        claim = madrid.phone_registered("1001", "its phone registered at madrid")
        assert claim is not None and claim.version == 2
        await eventually(lambda: bogota.owner_of("1001") == "madrid", "bogota hears it")
        # Its own agent, registering at home: nothing to claim.
        assert madrid.phone_registered("1001", "again") is None


async def test_a_starting_site_keeps_the_state_a_claimant_published_before_its_claim_is_read():
    broker = InProcessBroker()
    async with sites(broker, "bogota") as [(bogota, _)]:
        # What a broker hands a starting site in topic order: agents/1001, then its owner.
        bogota._send(Topics("test").agent("bogota", "1001"),
                     b'{"schema":1,"site":"bogota","agent":"1001","presence":"available",'
                     b'"since":5.0}', True)
        bogota.claim_agent("1001", "drill from madrid")
        lima, events = _site(broker, "lima")
        await lima.start()
        try:
            assert await lima.wait_synced(2)
            assert lima.owner_of("1001") == "bogota"
            state = lima.remote_agents["1001"]
            assert (state.site, state.presence.value, state.since) == ("bogota", "available", 5.0)
            assert [(e.site, e.presence) for e in events.of(RemoteAgentChanged)
                    if e.agent == "1001"][-1] == ("bogota", state.presence)
        finally:
            await lima.close()

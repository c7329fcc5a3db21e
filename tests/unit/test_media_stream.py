"""RtpSession (the embedded media engine's leg) over real loopback UDP: playback, DTMF both
ways, latching, relay through the engine's bridge, ports."""

from __future__ import annotations

import asyncio
import socket
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from pbx.media.engine import EmbeddedMediaEngine
from pbx.media.g711 import PCMA, PCMU, alaw_to_ulaw, linear_to_ulaw, ulaw_to_alaw
from pbx.media.inband_dtmf import InbandDtmfDetector, dtmf_tone
from pbx.media.playback import IdleAudio
from pbx.media.ports import MediaPortsExhausted, PortAllocator
from pbx.media.prompt import Prompt, PromptLibrary
from pbx.media.rtp import RtpPacket, build_rtp, parse_rtp
from pbx.media.stream import RtpSession
from pbx.media.telephone_event import TelephoneEventReceiver, dtmf_event_packets
from peers.procs import free_port_pair

HOST = "127.0.0.1"

pytestmark = pytest.mark.timeout(60)


def fresh_ports(size: int = 20) -> PortAllocator:
    # A range free now, picked at random: not one a test beside this one (xdist) also picks,
    # nor one whose ports are still closing from the last test.
    base = free_port_pair(HOST, count=size)
    return PortAllocator(HOST, base, base + size - 1)


class Peer(asyncio.DatagramProtocol):
    """A phone's RTP socket: records what arrives and can send."""

    def __init__(self) -> None:
        self.received: list[tuple[float, RtpPacket]] = []
        self.arrived = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None
        self.sequence = 1000
        self.timestamp = 50_000
        self.ssrc = 0x1234_5678

    @classmethod
    async def open(cls) -> Peer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(cls, local_addr=(HOST, 0))
        return peer

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((asyncio.get_running_loop().time(), parse_rtp(data)))
        self.arrived.set()

    def send(
        self, to: RtpSession, payload: bytes, payload_type: int = 0, *, timestamp: int | None = None
    ) -> None:
        assert self.transport is not None
        ts = self.timestamp if timestamp is None else timestamp
        self.transport.sendto(
            build_rtp(payload_type, self.sequence, ts, self.ssrc, payload), to.local_address
        )
        self.sequence += 1
        if timestamp is None:
            self.timestamp += len(payload)

    async def wait_for(self, packets: int, timeout: float = 5.0) -> list[RtpPacket]:
        async with asyncio.timeout(timeout):
            while len(self.received) < packets:
                self.arrived.clear()
                await self.arrived.wait()
        return [p for _, p in self.received]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    opened: list[Peer] = []
    yield opened
    for peer in opened:
        peer.close()


async def new_peer(peers: list[Peer]) -> Peer:
    peer = await Peer.open()
    peers.append(peer)
    return peer


async def pump(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


def prompt_of(frames: int, value: int = 0) -> Prompt:
    """A prompt whose frames are distinguishable: a ramp of sample values."""
    samples = array("h", ((value + n * 37) % 20000 - 10000 for n in range(frames * 160)))
    return Prompt.from_linear(Path(f"ramp{value}.wav"), samples.tobytes())


def assert_frames_follow_the_clock(packets: list[RtpPacket]) -> None:
    """Timestamps 160 samples (a frame) apart, the first packet marked. A loaded machine may
    stall the media clock: the stream then moves its timestamp on by the pause and marks a
    new talkspurt (``advance_for_gap``), which is right too."""
    steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF
             for a, b in zip(packets, packets[1:], strict=False)]
    assert all(step % 160 == 0 and step >= 160 for step in steps), steps
    assert [p.marker for p in packets] == [True] + [step > 160 for step in steps]


async def test_multi_second_prompt_arrives_in_order_and_paced(peers: list[Peer]) -> None:
    peer = await new_peer(peers)
    prompt = PromptLibrary().get("en/faq_order_status")  # about 9 s
    session = await RtpSession.open(fresh_ports(), remote=peer.address, codec="PCMU")
    done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    session.play(prompt, on_done=done.set_result)
    assert await asyncio.wait_for(done, 30) is True
    packets = await peer.wait_for(prompt.frame_count)
    await pump(0.1)
    assert len(peer.received) == prompt.frame_count  # nothing after the end
    assert [p.payload for p in packets] == list(prompt.frames(PCMU))
    assert {p.payload_type for p in packets} == {0}
    assert {p.ssrc for p in packets} == {session.ssrc}
    assert all(
        (b.sequence - a.sequence) & 0xFFFF == 1 for a, b in zip(packets, packets[1:], strict=False)
    )
    assert_frames_follow_the_clock(packets)
    # Pacing: arrival time tracks the RTP clock over the whole prompt (no drift, no
    # bursts): a correctness bound, generous enough for a loaded machine.
    first_arrival, first = peer.received[0]
    drift = [
        (arrival - first_arrival) - ((packet.timestamp - first.timestamp) & 0xFFFFFFFF) / 8000
        for arrival, packet in peer.received
    ]
    assert max(abs(d) for d in drift) < 0.2
    assert session.packets_sent == prompt.frame_count
    session.close()


async def test_pcma_sequence_of_prompts_and_replacing_playback(peers: list[Peer]) -> None:
    peer = await new_peer(peers)
    first, second = prompt_of(3, 1), prompt_of(2, 2)
    session = await RtpSession.open(fresh_ports(), remote=peer.address, codec=PCMA, payload_type=8)
    results: list[bool] = []
    session.play([first, second], on_done=results.append)
    packets = await peer.wait_for(5)
    await pump()
    assert [p.payload for p in packets] == list(first.frames(PCMA) + second.frames(PCMA))
    assert {p.payload_type for p in packets} == {8}
    assert [p.marker for p in packets] == [True, False, False, False, False]
    assert results == [True]

    long = prompt_of(500, 3)
    session.play(long, on_done=results.append)
    await peer.wait_for(8)
    session.play(first, on_done=results.append)  # replaces: the long one reports False
    assert results == [True, False]
    await pump(0.15)
    session.stop_playback()
    assert results == [True, False, True]
    session.close()


async def test_stop_playback_and_close(peers: list[Peer]) -> None:
    peer = await new_peer(peers)
    ports = fresh_ports()
    session = await RtpSession.open(ports, remote=peer.address)
    results: list[bool] = []
    session.play(prompt_of(500), on_done=results.append)
    await peer.wait_for(3)
    session.stop_playback()
    assert results == [False] and not session.playing
    sent = len(peer.received)
    await pump(0.1)
    assert len(peer.received) <= sent + 1  # at most a packet already in flight
    session.play(prompt_of(500), on_done=results.append)
    session.close()
    session.close()
    assert results == [False, False] and session.closed
    await pump()
    assert ports.in_use == 0 and ports.sessions_open == 0
    # A prompt started after the peer hung up ends at once as stopped, without an error.
    session.play(prompt_of(1), on_done=results.append)
    assert results == [False, False, False] and not session.playing


async def test_a_remote_that_is_not_an_ip_literal_gives_back_socket_and_port() -> None:
    ports = fresh_ports()
    with pytest.raises(ValueError, match="IP literal"):
        await RtpSession.open(ports, remote=("localhost", 4000))
    assert ports.sessions_open == 0
    await pump()
    assert ports.in_use == 0


async def test_talkspurts_after_silence_have_marker_and_timestamp_jump(peers: list[Peer]) -> None:
    peer = await new_peer(peers)
    session = await RtpSession.open(fresh_ports(), remote=peer.address)
    done = asyncio.Event()
    session.play(prompt_of(2), on_done=lambda _: done.set())
    await done.wait()
    await pump(0.2)  # silence: nothing is sent
    done.clear()
    session.play(prompt_of(2), on_done=lambda _: done.set())
    await done.wait()
    packets = await peer.wait_for(4)
    assert [p.marker for p in packets] == [True, False, True, False]
    assert [
        (b.sequence - a.sequence) & 0xFFFF for a, b in zip(packets, packets[1:], strict=False)
    ] == [1, 1, 1]
    # The RTP clock ran on through the silence (about 200 ms = 1600 samples or more).
    assert (packets[2].timestamp - packets[1].timestamp) & 0xFFFFFFFF >= 1600
    session.close()


async def test_send_rfc4733_dtmf_interleaved_with_a_prompt(peers: list[Peer]) -> None:
    peer = await new_peer(peers)
    session = await RtpSession.open(
        fresh_ports(), remote=peer.address, telephone_event_payload_type=101
    )
    prompt = prompt_of(6)
    done = asyncio.Event()
    session.play(prompt, on_done=lambda _: done.set())
    await peer.wait_for(2)
    session.send_dtmf("4#", duration_ms=60)
    await done.wait()
    packets = await peer.wait_for(prompt.frame_count + 2 * len(dtmf_event_packets("4", 60)))
    audio = [p for p in packets if p.payload_type == 0]
    events = [p for p in packets if p.payload_type == 101]
    assert [p.payload for p in audio] == list(prompt.frames(PCMU))  # paused, not skipped
    assert len(events) == 2 * len(dtmf_event_packets("4", 60))
    receiver = TelephoneEventReceiver()
    digits = [receiver.feed(p.timestamp, p.payload) for p in events]
    assert [d for d in digits if d] == ["4", "#"]
    by_event: dict[int, list[RtpPacket]] = {}
    for p in events:
        by_event.setdefault(p.timestamp, []).append(p)
    assert len(by_event) == 2
    for group in by_event.values():
        assert [p.marker for p in group] == [True] + [False] * (len(group) - 1)
    assert all(
        (b.sequence - a.sequence) & 0xFFFF == 1 for a, b in zip(packets, packets[1:], strict=False)
    )
    session.close()


async def test_send_inband_dtmf_without_telephone_event(peers: list[Peer]) -> None:
    peer = await new_peer(peers)
    session = await RtpSession.open(fresh_ports(), remote=peer.address)
    session.send_dtmf("95")
    frames = 2 * 8  # 100 ms tone + 60 ms gap, per digit
    packets = await peer.wait_for(frames)
    detector = InbandDtmfDetector()
    digits = [d for p in packets for d in detector.feed(PCMU.decode_samples(p.payload))]
    assert digits == ["9", "5"]
    assert {p.payload_type for p in packets} == {0}
    with pytest.raises(ValueError):
        session.send_dtmf("X")
    session.close()


async def test_receives_rfc4733_dtmf_once_each(peers: list[Peer]) -> None:
    peer = await new_peer(peers)
    digits: list[str] = []
    session = await RtpSession.open(
        fresh_ports(), remote=peer.address, telephone_event_payload_type=96, on_dtmf=digits.append
    )
    peer.send(session, PCMU.silence_frame())
    for index, digit in enumerate("12"):
        for payload in dtmf_event_packets(digit, 80):
            peer.send(session, payload, 96, timestamp=1000 + 5000 * index)
    # A third event whose end packets are all lost: reported after the timeout.
    for payload in dtmf_event_packets("3", 80)[:-3]:
        peer.send(session, payload, 96, timestamp=20000)
    await pump(0.1)
    assert digits[:2] == ["1", "2"]
    await pump(0.4)
    assert digits == ["1", "2", "3"]  # "3" only through the timeout: its ends never came
    assert session.last_received_at is not None
    session.close()


async def test_receives_inband_dtmf_when_no_telephone_event(peers: list[Peer]) -> None:
    peer = await new_peer(peers)
    digits: list[str] = []
    session = await RtpSession.open(fresh_ports(), remote=peer.address, on_dtmf=digits.append)
    audio = linear_to_ulaw(dtmf_tone("7", 100) + bytes(1600) + dtmf_tone("0", 100) + bytes(1600))
    for start in range(0, len(audio), 160):
        peer.send(session, audio[start : start + 160])
    await pump(0.1)
    assert digits == ["7", "0"]
    session.close()


async def test_on_audio_gets_decoded_frames(peers: list[Peer]) -> None:
    peer = await new_peer(peers)
    frames: list[bytes] = []
    session = await RtpSession.open(
        fresh_ports(), remote=peer.address, codec="PCMA", on_audio=frames.append
    )
    payload = ulaw_to_alaw(bytes(range(160)))
    peer.send(session, payload, 8)
    peer.send(session, payload, 0)  # not the negotiated payload type: ignored
    await pump()
    assert frames == [PCMA.decode(payload)]
    session.close()


async def test_symmetric_rtp_latches_on_the_real_source(peers: list[Peer]) -> None:
    signalled, behind_nat, intruder = (
        await new_peer(peers),
        await new_peer(peers),
        await new_peer(peers),
    )
    frames: list[bytes] = []
    session = await RtpSession.open(fresh_ports(), remote=signalled.address, on_audio=frames.append)
    behind_nat.send(session, PCMU.silence_frame())  # first packet: on probation
    await pump()
    assert frames == [] and session.remote == signalled.address
    behind_nat.send(session, PCMU.silence_frame())  # next in sequence: latched
    await pump()
    assert len(frames) == 1 and session.remote == behind_nat.address
    intruder.send(session, PCMU.silence_frame())
    intruder.send(session, PCMU.silence_frame())
    await pump()
    assert len(frames) == 1 and session.remote == behind_nat.address
    assert session.packets_rejected == 3
    session.play(prompt_of(2))
    await behind_nat.wait_for(2)
    assert signalled.received == [] and intruder.received == []
    # A stream from the signalled address takes the latch back (a stale stream latched first).
    signalled.send(session, PCMU.silence_frame())
    await pump()
    assert len(frames) == 2 and session.remote == signalled.address
    session.play(prompt_of(2))
    await signalled.wait_for(2)
    # A re-INVITE restarts latching; the signalled address is taken at its first packet.
    session.configure(signalled.address)
    signalled.send(session, PCMU.silence_frame())
    await pump()
    assert len(frames) == 3 and session.remote == signalled.address
    session.close()


async def test_bridged_legs_relay_both_ways_with_transcoding(peers: list[Peer]) -> None:
    caller, agent = await new_peer(peers), await new_peer(peers)
    ports = fresh_ports()
    caller_leg = await RtpSession.open(
        ports, remote=caller.address, codec="PCMU", telephone_event_payload_type=101
    )
    agent_leg = await RtpSession.open(
        ports, remote=agent.address, codec="PCMA", telephone_event_payload_type=96
    )
    EmbeddedMediaEngine(ports).bridge(caller_leg, agent_leg)

    caller_audio = [
        linear_to_ulaw(array("h", range(n, n + 160)).tobytes()) for n in range(0, 8000, 1000)
    ]
    for frame in caller_audio:
        caller.send(caller_leg, frame)
    to_agent = await agent.wait_for(len(caller_audio))
    assert [p.payload for p in to_agent] == [ulaw_to_alaw(f) for f in caller_audio]
    assert {p.payload_type for p in to_agent} == {8}
    assert {p.ssrc for p in to_agent} == {agent_leg.ssrc}
    assert [p.marker for p in to_agent] == [True] + [False] * (len(to_agent) - 1)
    assert all(
        (b.sequence - a.sequence) & 0xFFFF == 1
        for a, b in zip(to_agent, to_agent[1:], strict=False)
    )
    assert all(
        (b.timestamp - a.timestamp) == 160 for a, b in zip(to_agent, to_agent[1:], strict=False)
    )

    agent_audio = [bytes([0x2A + n]) * 160 for n in range(5)]
    for frame in agent_audio:
        agent.send(agent_leg, frame, 8)
    to_caller = await caller.wait_for(len(agent_audio))
    assert [p.payload for p in to_caller] == [alaw_to_ulaw(f) for f in agent_audio]
    assert {p.payload_type for p in to_caller} == {0}
    assert {p.ssrc for p in to_caller} == {caller_leg.ssrc}

    # Telephone-events cross with the payload type of the other side.
    for payload in dtmf_event_packets("5", 40):
        caller.send(caller_leg, payload, 101, timestamp=caller.timestamp)
    packets = await agent.wait_for(len(caller_audio) + 4)
    assert [p.payload_type for p in packets[len(caller_audio) :]] == [96] * 4

    # A prompt played to the agent pauses the relay; the stream stays continuous.
    announcement = prompt_of(3)
    done = asyncio.Event()
    agent_leg.play(announcement, on_done=lambda _: done.set())
    caller.send(caller_leg, caller_audio[0])  # dropped while the announcement plays
    await done.wait()
    caller.send(caller_leg, caller_audio[1])
    packets = await agent.wait_for(len(caller_audio) + 4 + 3 + 1)
    tail = packets[-4:]
    assert [p.payload for p in tail] == list(announcement.frames(PCMA)) + [
        ulaw_to_alaw(caller_audio[1])
    ]
    assert all(
        (b.sequence - a.sequence) & 0xFFFF == 1 for a, b in zip(packets, packets[1:], strict=False)
    )
    caller_leg.close()
    agent_leg.close()


async def test_same_codec_relay_copies_payload_and_rewrites_header(peers: list[Peer]) -> None:
    a_phone, b_phone = await new_peer(peers), await new_peer(peers)
    ports = fresh_ports()
    a_leg = await RtpSession.open(ports, remote=a_phone.address)
    b_leg = await RtpSession.open(ports, remote=b_phone.address)
    engine = EmbeddedMediaEngine(ports)
    engine.bridge(a_leg, b_leg)
    frames = [bytes([n]) * 160 for n in range(1, 6)]
    for frame in frames:
        a_phone.send(a_leg, frame)
    received = await b_phone.wait_for(len(frames))
    assert [p.payload for p in received] == frames
    assert {p.ssrc for p in received} == {b_leg.ssrc} != {a_phone.ssrc}
    with pytest.raises(ValueError):
        engine.bridge(a_leg, a_leg)
    engine.unbridge(a_leg)
    a_phone.send(a_leg, frames[0])
    await pump()
    assert len(b_phone.received) == len(frames)
    a_leg.close()
    b_leg.close()


async def test_idle_silence_is_sent_when_asked(peers: list[Peer]) -> None:
    peer = await new_peer(peers)
    session = await RtpSession.open(
        fresh_ports(), remote=peer.address, idle_audio=IdleAudio.SILENCE
    )
    packets = await peer.wait_for(6)
    assert {p.payload for p in packets} == {PCMU.silence_frame()}
    # One packet every tick: consecutive sequence numbers, timestamps a frame apart.
    assert all(
        (b.sequence - a.sequence) & 0xFFFF == 1 for a, b in zip(packets, packets[1:], strict=False)
    )
    assert_frames_follow_the_clock(packets)
    # A prompt interrupts the idle audio, which resumes after it.
    announcement = prompt_of(2, 5)
    done = asyncio.Event()
    session.play(announcement, on_done=lambda _: done.set())
    await done.wait()
    payloads = [p.payload for p in await peer.wait_for(len(peer.received) + 1)]
    start = payloads.index(announcement.frames(PCMU)[0])
    payloads = [p.payload for p in await peer.wait_for(start + 3)]
    assert payloads[start : start + 3] == [*announcement.frames(PCMU), PCMU.silence_frame()]
    session.close()
    quiet = await new_peer(peers)
    noise = await RtpSession.open(
        fresh_ports(), remote=quiet.address, idle_audio=IdleAudio.COMFORT_NOISE
    )
    packets = await quiet.wait_for(3)
    assert all(len(p.payload) == 160 and p.payload != PCMU.silence_frame() for p in packets)
    noise.close()


async def test_port_allocator_rotates_even_ports_and_skips_busy_ones() -> None:
    allocator = PortAllocator(HOST, 30001, 30008)
    assert [allocator.reserve() for _ in range(4)] == [30002, 30004, 30006, 30008]
    with pytest.raises(MediaPortsExhausted):
        allocator.reserve()
    allocator.release(30004)
    assert allocator.reserve() == 30004
    with pytest.raises(ValueError):
        PortAllocator(HOST, 30001, 30001)

    ports = fresh_ports(6)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind((HOST, ports.first))
    try:
        session = await RtpSession.open(ports)
        assert session.local_port == ports.first + 2
        assert session.local_port % 2 == 0
        session.close()
    finally:
        squatter.close()


async def test_port_range_exhausted() -> None:
    ports = fresh_ports(4)  # two even ports
    sessions = [await RtpSession.open(ports), await RtpSession.open(ports)]
    with pytest.raises(MediaPortsExhausted):
        await RtpSession.open(ports)
    for session in sessions:
        session.close()


async def test_configure_rejects_hostnames() -> None:
    session = await RtpSession.open(fresh_ports())
    with pytest.raises(ValueError, match="IP literal"):
        session.configure(("phone.example.com", 4000))
    with pytest.raises(ValueError, match="G729"):
        session.configure((HOST, 4000), codec="G729")
    session.close()


@pytest.mark.parametrize(
    "scenario",
    [
        test_pcma_sequence_of_prompts_and_replacing_playback,
        test_send_rfc4733_dtmf_interleaved_with_a_prompt,
        test_receives_rfc4733_dtmf_once_each,
        test_symmetric_rtp_latches_on_the_real_source,
        test_bridged_legs_relay_both_ways_with_transcoding,
    ],
    ids=lambda f: f.__name__.removeprefix("test_"),
)
def test_under_uvloop(scenario: Callable[[list[Peer]], Awaitable[None]]) -> None:
    """Production runs on uvloop (millisecond timers, its own transports): same results."""

    async def run() -> None:
        opened: list[Peer] = []
        try:
            await scenario(opened)
        finally:
            for peer in opened:
                peer.close()

    uvloop.run(run())


async def test_embedded_engine_opens_counts_and_bridges_only_its_own_legs() -> None:
    ports = fresh_ports()
    engine = EmbeddedMediaEngine(ports)
    assert engine.resources() == {"rtp_sessions": 0, "rtp_ports_in_use": 0}
    a_leg = await engine.open_leg(remote=(HOST, 9), codec="PCMA")
    b_leg = await engine.open_leg()
    assert engine.resources() == {"rtp_sessions": 2, "rtp_ports_in_use": 2}
    assert a_leg.codec is PCMA and b_leg.remote is None

    class ForeignLeg:
        """A leg of some other engine."""

    with pytest.raises(TypeError, match="embedded media engine"):
        engine.bridge(a_leg, ForeignLeg())  # type: ignore[arg-type]
    assert a_leg.relay is None, "a refused bridge leaves the legs as they were"
    engine.bridge(a_leg, b_leg)
    assert a_leg.relay is not None and a_leg.relay.target is b_leg
    assert b_leg.relay is not None and b_leg.relay.target is a_leg
    engine.unbridge(a_leg)
    assert a_leg.relay is None and b_leg.relay is not None
    a_leg.close()
    b_leg.close()
    await pump()
    assert engine.resources() == {"rtp_sessions": 0, "rtp_ports_in_use": 0}

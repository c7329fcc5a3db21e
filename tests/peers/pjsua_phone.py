"""PJSIP (``pjsua2-python``, 2.15) as an agent phone in a subprocess.

pjsua2 allows one Endpoint per process, so each phone is a child process
(``python -m peers.pjsua_phone --server ...``) printing one JSON object per line on stdout:
``registered`` / ``register_failed``, ``incoming`` (with the INVITE's X-Centralita-* headers),
``answered``, ``media`` (the call's audio is active), ``hung_up``, ``ended`` and
``recorded`` (the WAV of everything the phone received, complete once the call ended).

The phone registers with digest, auto-answers with 200, plays a sine tone into the call
(``--tone`` Hz, pjmedia's tone generator) and records the decoded received audio to
``<workdir>/received-N.wav`` (8 kHz mono 16-bit). Null sound device, and
``sndAutoCloseTime = -1`` (else media stops after about a second, see TEST-PEERS.md).

An unofficial wheel of a GPLv2 library: tests only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .child_phone import ChildPhone
from .procs import LOOPBACK, free_port, free_port_pair

# ---------------------------------------------------------------------------------------------
# Parent side


class PjsuaPhone(ChildPhone):
    kind = "pjsua"
    module = "pjsua2"

    def __init__(self, workdir: Path, server: tuple[str, int], user: str, password: str, *,
                 tone: float = 1500.0, hangup_after: float | None = None,
                 python: str | None = None, transport: str = "udp",
                 ca_file: Path | None = None, codecs: tuple[str, ...] = ("PCMU", "PCMA")) -> None:
        """`codecs`: the G.711 laws the phone accepts (a PCMA-only phone: ``("PCMA",)``)."""
        super().__init__(workdir, user, python)
        self.sip_port = free_port(udp=True, tcp=transport != "udp")
        rtp_port = free_port_pair()
        arguments = ["peers.pjsua_phone", "--server", server[0],
                     "--port", str(server[1]), "--user", user, "--password", password,
                     "--sip-port", str(self.sip_port), "--rtp-port", str(rtp_port),
                     "--tone", str(tone), "--workdir", str(self.workdir),
                     "--codecs", ",".join(codecs)]
        if hangup_after is not None:
            arguments += ["--hangup-after", str(hangup_after)]
        if transport == "tls":
            # SIP over TLS to the server; ca_file is the server's certificate (or its CA).
            arguments += ["--tls"] + (["--ca-file", str(ca_file)] if ca_file else [])
        self._spawn(arguments)


# ---------------------------------------------------------------------------------------------
# Child side (runs pjsua2)


def _child(argv: list[str]) -> int:  # noqa: C901 (one phone, kept in one place)
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--sip-port", type=int, required=True)
    parser.add_argument("--rtp-port", type=int, required=True)
    parser.add_argument("--tone", type=float, default=1500.0)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--hangup-after", type=float, default=None)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--ca-file", default="")
    parser.add_argument("--codecs", default="PCMU,PCMA")
    args = parser.parse_args(argv)

    import pjsua2 as pj

    def emit(**fields: object) -> None:
        print(json.dumps(fields), flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    endpoint = pj.Endpoint()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.uaConfig.userAgent = "centralita-test-pjsua"
    config.medConfig.sndAutoCloseTime = -1
    config.medConfig.clockRate = 8000
    config.medConfig.sndClockRate = 8000
    config.medConfig.channelCount = 1
    config.medConfig.noVad = True
    config.logConfig.level = 4
    config.logConfig.consoleLevel = 4
    endpoint.libCreate()
    endpoint.libInit(config)
    transport = pj.TransportConfig()
    transport.port = args.sip_port
    transport.boundAddress = LOOPBACK
    transport.publicAddress = LOOPBACK
    if args.tls:
        transport.tlsConfig.CaListFile = args.ca_file
        transport.tlsConfig.verifyServer = bool(args.ca_file)
        endpoint.transportCreate(pj.PJSIP_TRANSPORT_TLS, transport)
    else:
        endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    endpoint.libStart()
    endpoint.audDevManager().setNullDev()
    for codec in endpoint.codecEnum2():
        accepted = tuple(f"{name}/" for name in args.codecs.split(","))
        priority = 255 if codec.codecId.startswith(accepted) else 0
        endpoint.codecSetPriority(codec.codecId, priority)

    state: dict[str, object] = {"call": None, "answered_at": None, "media": [], "count": 0}

    class Call(pj.Call):
        def onCallState(self, prm) -> None:  # noqa: N802 (pjsua2 names)
            info = self.getInfo()
            if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
                state["answered_at"] = time.monotonic()
                emit(event="answered", call_id=info.callIdString)
            elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                emit(event="ended", call_id=info.callIdString, status=info.lastStatusCode,
                     reason=info.lastReason)
                state["ended"] = True

        def onCallMediaState(self, prm) -> None:  # noqa: N802
            info = self.getInfo()
            for index, media in enumerate(info.media):
                if media.type != pj.PJMEDIA_TYPE_AUDIO or \
                        media.status != pj.PJSUA_CALL_MEDIA_ACTIVE or state["media"]:
                    continue
                audio = self.getAudioMedia(index)
                tone = pj.ToneGenerator()
                tone.createToneGenerator(8000, 1)
                description = pj.ToneDesc()
                description.freq1 = int(args.tone)
                description.freq2 = int(args.tone)
                description.on_msec = 30000  # a C short
                description.off_msec = 0
                description.volume = 0
                tones = pj.ToneDescVector()
                tones.append(description)
                tone.play(tones, True)
                tone.startTransmit(audio)
                state["count"] = int(state["count"]) + 1  # type: ignore[arg-type]
                path = Path(args.workdir) / f"received-{state['count']}.wav"
                recorder = pj.AudioMediaRecorder()
                recorder.createRecorder(str(path))
                audio.startTransmit(recorder)
                state["media"] = [tone, recorder, audio]
                state["recording"] = str(path)
                emit(event="media", recording=str(path))

    class Agent(pj.Account):
        def onRegState(self, prm) -> None:  # noqa: N802
            info = self.getInfo()
            if info.regIsActive and prm.code == 200:
                emit(event="registered")
            elif prm.code >= 300:
                emit(event="register_failed", code=prm.code, reason=prm.reason)

        def onIncomingCall(self, prm) -> None:  # noqa: N802
            call = Call(self, prm.callId)
            message = prm.rdata.wholeMsg
            headers = {line.split(":", 1)[0]: line.split(":", 1)[1].strip()
                       for line in message.splitlines()
                       if line.lower().startswith("x-centralita-") and ":" in line}
            emit(event="incoming", call_id=call.getInfo().callIdString, headers=headers)
            state["call"] = call
            state["ended"] = False
            answer = pj.CallOpParam()
            answer.statusCode = 200
            call.answer(answer)

    account_config = pj.AccountConfig()
    server = f"{args.server}:{args.port}"
    account_config.idUri = f"sip:{args.user}@{server}"
    account_config.regConfig.registrarUri = f"sip:{server}" + (";transport=tls" if args.tls else "")
    account_config.regConfig.timeoutSec = 600
    account_config.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", "*", args.user, 0, args.password))
    account_config.natConfig.contactRewriteUse = 0
    account_config.natConfig.viaRewriteUse = 0
    account_config.natConfig.sdpNatRewriteUse = 0
    account_config.mediaConfig.transportConfig.port = args.rtp_port
    account_config.mediaConfig.transportConfig.portRange = 0
    account_config.mediaConfig.transportConfig.boundAddress = LOOPBACK
    account = Agent()
    account.create(account_config)

    def finish_call() -> None:
        media = state["media"]
        if media:
            tone, recorder, audio = media  # type: ignore[misc]
            try:
                audio.stopTransmit(recorder)
            except Exception:
                pass
        state["media"] = []  # drops the recorder: pjmedia finalises the WAV header
        if state.get("recording"):
            emit(event="recorded", path=state["recording"])
            state["recording"] = None
        state["call"] = None

    while not stop.is_set():
        endpoint.libHandleEvents(20)
        call = state["call"]
        if call is not None and state.get("ended"):
            finish_call()
        elif call is not None and args.hangup_after is not None and state["answered_at"] and \
                time.monotonic() - float(state["answered_at"]) > args.hangup_after:  # type: ignore[arg-type]
            state["answered_at"] = None
            emit(event="hung_up")
            call.hangup(pj.CallOpParam())  # type: ignore[attr-defined]
    if state["call"] is not None:
        finish_call()
    del account
    try:
        endpoint.libDestroy()
    except Exception:
        pass
    os._exit(0)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))

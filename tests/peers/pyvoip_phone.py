"""pyVoIP (1.6.8) as a phone in a subprocess: registers, auto-answers, reports what it got.

pyVoIP is threaded and keeps global state, so each phone is its own process. The child
(``python pyvoip_phone.py --server ...``) prints one JSON object per line on stdout:
``registered``, ``register_failed``, ``incoming``, ``answered``, ``audio`` (running counts of
RTP packets and non-silent bytes received), ``ended``, ``error``. Known pyVoIP quirks the
server must live with: its ACK after a 200 carries a wrong To tag, it never retransmits,
it only answers MD5 digest challenges, it sends no 487 on CANCEL.
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
from .procs import LOOPBACK, free_port

# ---------------------------------------------------------------------------------------------
# Parent side


class PyVoipPhone(ChildPhone):
    kind = "pyVoIP"
    module = "pyVoIP"

    def __init__(self, workdir: Path, server: tuple[str, int], user: str, password: str, *,
                 hangup_after: float | None = None, python: str | None = None) -> None:
        super().__init__(workdir, user, python)
        self.sip_port = free_port(udp=True, tcp=False)
        rtp_low = free_port(udp=True, tcp=False, avoid={self.sip_port})
        arguments = ["peers.pyvoip_phone", "--server", server[0],
                     "--port", str(server[1]), "--user", user, "--password", password,
                     "--sip-port", str(self.sip_port), "--rtp-low", str(rtp_low),
                     "--rtp-high", str(rtp_low + 20)]
        if hangup_after is not None:
            arguments += ["--hangup-after", str(hangup_after)]
        self._spawn(arguments)


# ---------------------------------------------------------------------------------------------
# Child side (runs pyVoIP)


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--sip-port", type=int, required=True)
    parser.add_argument("--rtp-low", type=int, required=True)
    parser.add_argument("--rtp-high", type=int, required=True)
    parser.add_argument("--hangup-after", type=float, default=None)
    args = parser.parse_args(argv)

    lock = threading.Lock()

    def emit(**fields: object) -> None:
        with lock:
            print(json.dumps(fields), flush=True)

    import pyVoIP  # noqa: F401  (import the package first: pyVoIP.SIP alone fails)
    from pyVoIP import RTP
    from pyVoIP.VoIP import CallState, PhoneStatus, VoIPPhone

    packets = {"count": 0}
    original_parse = RTP.RTPClient.parse_packet

    def counting_parse(self, packet: bytes) -> None:  # count every RTP packet received
        packets["count"] += 1
        return original_parse(self, packet)

    RTP.RTPClient.parse_packet = counting_parse  # type: ignore[method-assign]

    def on_call(call) -> None:  # pyVoIP runs this in its own thread per call
        try:
            emit(event="incoming", call_id=call.call_id,
                 from_=call.request.headers.get("From", {}).get("raw", ""))
            call.answer()
            emit(event="answered", call_id=call.call_id)
            started = time.monotonic()
            nonsilent = 0
            received = 0
            last_report = 0.0
            while call.state == CallState.ANSWERED:
                data = call.read_audio(160, blocking=False)
                received += len(data)
                nonsilent += sum(1 for b in data if abs(b - 0x80) > 2)
                now = time.monotonic()
                if now - last_report > 0.5:
                    emit(event="audio", packets=packets["count"], nonsilent_bytes=nonsilent)
                    last_report = now
                if args.hangup_after is not None and now - started > args.hangup_after:
                    call.hangup()
                    emit(event="hung_up", call_id=call.call_id)
                    break
                time.sleep(0.02)
            emit(event="audio", packets=packets["count"], nonsilent_bytes=nonsilent)
            emit(event="ended", call_id=call.call_id, state=str(call.state))
        except Exception as error:  # report, never die silently
            emit(event="error", error=repr(error))

    phone = VoIPPhone(args.server, args.port, args.user, args.password, myIP=LOOPBACK,
                      callCallback=on_call, sipPort=args.sip_port, rtpPortLow=args.rtp_low,
                      rtpPortHigh=args.rtp_high)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        phone.start()
    except Exception as error:
        emit(event="register_failed", error=repr(error))
        return 1
    deadline = time.monotonic() + 10
    while phone.get_status() != PhoneStatus.REGISTERED and time.monotonic() < deadline:
        time.sleep(0.05)
    if phone.get_status() == PhoneStatus.REGISTERED:
        emit(event="registered")
    else:
        emit(event="register_failed", status=str(phone.get_status()))
    while not stop.is_set():
        stop.wait(0.2)
    try:
        phone.stop()
    except Exception:
        pass
    os._exit(0)  # pyVoIP leaves non-daemon timers behind


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))

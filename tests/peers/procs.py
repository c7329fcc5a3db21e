"""Process and port helpers shared by the peer drivers and the server fixture."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterable

import pytest

LOOPBACK = "127.0.0.1"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def peer_unavailable(reason: str) -> None:
    """A peer cannot run here: fail loudly in CI, skip with the reason elsewhere."""
    if in_ci():
        pytest.fail(f"CI=true and a required test peer is unavailable: {reason}", pytrace=False)
    pytest.skip(f"test peer unavailable: {reason} (run scripts/install-test-deps)")


def require_binary(name: str, package: str) -> str:
    """Path of executable ``name``; fails (CI) or skips the test when it is missing."""
    path = shutil.which(name)
    if path is None:
        peer_unavailable(f"`{name}` not on PATH (Debian package {package})")
    assert path is not None
    return path


def free_port(*, udp: bool = True, tcp: bool = True, host: str = LOOPBACK,
              avoid: Iterable[int] = ()) -> int:
    """A port that is free for every protocol asked for, right now, on ``host``."""
    avoid = set(avoid)
    for _ in range(200):
        first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        try:
            first.bind((host, 0))
            port = first.getsockname()[1]
            if port in avoid:
                continue
            if udp and tcp:
                second = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    second.bind((host, port))
                except OSError:
                    continue
                finally:
                    second.close()
            return port
        finally:
            first.close()
    raise RuntimeError("no free port found")


def free_port_pair(host: str = LOOPBACK, *, count: int = 2) -> int:
    """An even UDP port whose successors are free too: ``count`` ports in all (RTP + RTCP;
    SIPp's -mp takes four, audio and video)."""
    for _ in range(200):
        port = free_port(udp=True, tcp=False, host=host)
        if port % 2:
            port -= 1
        sockets = []
        try:
            for candidate in range(port, port + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((host, candidate))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free RTP port pair found")


_SILENT_BLOCK = 64
_silent_sockets: list[socket.socket] = []


def silent_rtp_port(offset: int = 0) -> int:
    """Port ``offset`` (even, below 64) of a block this process keeps bound and never reads.

    An SDP for a phone that takes no part in the media (raw SIP tests) names it, so the RTP
    the server sends there cannot reach a phone or rtpengine of a test running beside this
    one, as a fixed port number could."""
    if offset % 2 or not 0 <= offset < _SILENT_BLOCK:
        raise ValueError(f"offset must be even and below {_SILENT_BLOCK}, not {offset}")
    while not _silent_sockets:
        first = free_port_pair(count=_SILENT_BLOCK)
        try:
            for port in range(first, first + _SILENT_BLOCK):
                _silent_sockets.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                _silent_sockets[-1].bind((LOOPBACK, port))
        except OSError:  # taken since free_port_pair looked: another block
            for sock in _silent_sockets:
                sock.close()
            _silent_sockets.clear()
    return _silent_sockets[0].getsockname()[1] + offset


def stop_process_group(process: subprocess.Popen, grace: float = 5.0) -> int | None:
    """SIGTERM the process group led by ``process``, then SIGKILL what is left."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while children in its group live on: kill the group anyway.
    _signal_group(process, signal.SIGKILL)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    return process.returncode


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: str | os.PathLike, lines: int = 60, max_chars: int = 6000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64_000))
            text = handle.read().decode("utf-8", "replace")
    except OSError as error:
        return f"<cannot read {path}: {error}>"
    text = "\n".join(text.splitlines()[-lines:])
    return text if len(text) <= max_chars else "..." + text[-max_chars:]

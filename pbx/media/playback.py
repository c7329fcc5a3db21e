"""What one leg plays: prompts back to back (looped for music on hold), one 20 ms frame
per media clock tick, and what it sends when it has nothing to play.

No socket and no clock here: the leg's RTP session asks for the next frame on each tick
and sends it.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable
from functools import cache

from pbx.media.g711 import G711Codec
from pbx.media.prompt import FRAME_BYTES, Prompt

__all__ = ["IdleAudio", "Playback", "idle_frames"]

PlaybackDone = Callable[[bool], None]


class IdleAudio(enum.Enum):
    """What a session sends when it has nothing to play."""

    NONE = "none"
    SILENCE = "silence"
    COMFORT_NOISE = "comfort-noise"
    """Very low-level noise (about -70 dBm0): some peers take digital silence for a dead line."""


@cache
def idle_frames(idle: IdleAudio, codec: G711Codec) -> tuple[bytes, ...]:
    if idle is IdleAudio.SILENCE:
        return (codec.silence_frame(),)
    noise = random.Random(0x5EED)
    pcm = b"".join(
        round(noise.gauss(0.0, 8.0)).to_bytes(2, "little", signed=True) for _ in range(50 * 160)
    )
    encoded = codec.encode(pcm)
    return tuple(encoded[i : i + FRAME_BYTES] for i in range(0, len(encoded), FRAME_BYTES))


class Playback:
    """A playlist of prompts, encoded for the leg's codec, played one frame at a time.

    ``on_done`` is handed back by :meth:`take` rather than called here, so the session
    calls it last: it may start another playback. ``frames`` and ``frame_index`` are
    plain attributes the session's clock tick reads directly (it runs 50 times a second
    per playing leg).
    """

    __slots__ = ("codec", "frames", "frame_index", "_playlist", "_prompt", "_repeat", "_on_done")

    def __init__(self, codec: G711Codec) -> None:
        self.codec = codec
        self._playlist: deque[Prompt] = deque()
        self._prompt: Prompt | None = None
        self.frames: tuple[bytes, ...] | None = None
        """The current prompt's frames in the leg's codec; None when not playing."""
        self.frame_index = 0
        """The frame to send next."""
        self._repeat: tuple[Prompt, ...] = ()
        self._on_done: PlaybackDone | None = None

    @property
    def playing(self) -> bool:
        return self.frames is not None

    def recode(self, codec: G711Codec) -> None:
        """The leg's codec changed (a re-INVITE): the current prompt goes on in the new one."""
        self.codec = codec
        if self._prompt is not None:
            self.frames = self._prompt.frames(codec)

    def start(self, playlist: tuple[Prompt, ...], on_done: PlaybackDone | None,
              repeat: bool) -> None:
        """Begin `playlist` (call :meth:`take` first: one playback at a time)."""
        self._playlist.extend(playlist)
        self._repeat = playlist if repeat else ()
        self._on_done = on_done
        self.next_prompt()

    def take(self) -> PlaybackDone | None:
        """End the playback; returns its ``on_done`` for the caller to call."""
        on_done = self._on_done
        self._on_done = None
        self._playlist.clear()
        self._repeat = ()
        self._prompt = None
        self.frames = None
        return on_done

    def next_prompt(self) -> bool:
        """Move on to the next prompt of the playlist (looping when repeating); False when
        the playlist is over (then :meth:`take` ends the playback)."""
        if not self._playlist and self._repeat:
            self._playlist.extend(self._repeat)
        if not self._playlist:
            return False
        prompt = self._playlist.popleft()
        self._prompt = prompt
        self.frames = prompt.frames(self.codec)
        self.frame_index = 0
        return True

"""Applications that answer extensions served by the server itself."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pbx.calls import AnsweredCall, CallApplication
from pbx.config import Extension
from pbx.media.prompt import PromptLibrary

log = logging.getLogger("pbx.applications")


class Greeting:
    """Plays a greeting prompt, then keeps the line open until the caller hangs up.

    The call stays up after the prompt so that a caller who is slow to hang up
    is not cut off; a caller who goes silent for good is reaped by the media
    timeout.
    """

    def __init__(self, prompts: PromptLibrary, extension: Extension) -> None:
        self.prompt = prompts.get(_prompt_path(extension))

    async def run(self, call: AnsweredCall) -> None:
        finished = asyncio.get_running_loop().create_future()

        def done(played_to_end: bool) -> None:
            if not finished.done():
                finished.set_result(played_to_end)

        call.media.play(self.prompt, on_done=done)
        await finished
        await call.hung_up.wait()


def _prompt_path(extension: Extension) -> str | Path:
    prompt = extension.prompt or "welcome"
    if "/" in prompt or prompt.endswith(".wav"):
        return Path(prompt)
    return f"{extension.language}/{prompt}"


class ApplicationDirectory:
    """Builds the application for an extension from its configuration."""

    def __init__(self, prompts: PromptLibrary) -> None:
        self.prompts = prompts

    def validate(self, extension: Extension) -> None:
        """Load what the application needs now, so a missing prompt stops start-up, not a call."""
        self(extension)

    def __call__(self, extension: Extension) -> CallApplication:
        if extension.application == "greeting":
            return Greeting(self.prompts, extension)
        raise ValueError(f"unknown application {extension.application!r}")

"""Applications that answer extensions served by the server itself."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from events import EventBus
from ivr.call_log import IvrCallLog
from ivr.engine import (
    CallbackGateway,
    CustomerLookup,
    EnqueueGateway,
    HoldMusicGateway,
    TransferGateway,
)
from ivr.flow import Flow, load_flows
from pbx.calls.ivr_application import IvrApplication
from pbx.calls.manager import FEATURE_APPLICATION, ApplicationCall, CallApplication
from pbx.configuration.server import Extension, ServerConfig
from pbx.media.prompt import PromptLibrary

# (agent, feature code) -> None when applied, else the reason it was not.
FeatureAction = Callable[[str, str], str | None]


class Greeting:
    """Plays a greeting prompt, then keeps the line open until the caller hangs up.

    The call stays up after the prompt so that a caller who is slow to hang up
    is not cut off; a caller who goes silent for good is reaped by the media
    timeout.
    """

    def __init__(self, prompts: PromptLibrary, extension: Extension) -> None:
        self.prompt = prompts.get(_prompt_path(extension))

    async def run(self, call: ApplicationCall) -> None:
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


class FeatureCode:
    """An agent dialled a feature code: apply it, say whether it worked, hang up."""

    def __init__(self, prompts: PromptLibrary, apply: FeatureAction) -> None:
        self.done = prompts.get("en/thank_you")
        self.refused = prompts.get("en/invalid_option")
        self.apply = apply

    async def run(self, call: ApplicationCall) -> None:
        problem = self.apply(call.caller, call.extension.number)
        finished = asyncio.Event()
        call.media.play(self.done if problem is None else self.refused,
                        on_done=lambda _: finished.set())
        await finished.wait()


def load_extension_flows(extensions: list[Extension], prompts: PromptLibrary) -> dict[str, Flow]:
    """Every flow the ivr extensions name, validated (raises ConfigError listing all problems)."""
    return load_flows([e.flow for e in extensions if e.application == "ivr" and e.flow], prompts)


def unknown_flow_references(flows: dict[str, Flow], config: ServerConfig) -> list[str]:
    """Flow nodes that enqueue to a queue, or transfer to an account, the configuration
    file does not define (queues may also be created through the API, so the server only
    warns; `pbx check-config` reports them as errors)."""
    queues = {queue.name for queue in config.contact_center.queues}
    problems: list[str] = []
    for flow in flows.values():
        problems.extend(flow.unknown_references(queues, config.accounts))
    return problems


class ApplicationDirectory:
    """Builds, once per extension, the application that answers it."""

    def __init__(self, prompts: PromptLibrary, events: EventBus, ivr_calls: IvrCallLog,
                 lookup_customer: CustomerLookup | None = None,
                 enqueue: EnqueueGateway | None = None,
                 transfer: TransferGateway | None = None) -> None:
        self.prompts = prompts
        self.events = events
        self.ivr_calls = ivr_calls
        self.lookup_customer = lookup_customer
        hold = HoldMusicGateway(prompts)
        self.enqueue = enqueue or hold
        self.transfer = transfer or hold
        self.features: FeatureAction | None = None
        self.callbacks: CallbackGateway | None = None  # books offer_callback nodes' requests
        self._flows: dict[str, Flow] = {}
        self._built: dict[str, CallApplication] = {}

    def prepare(self, extensions: list[Extension]) -> dict[str, Flow]:
        """Load every prompt and flow now, so a missing file stops start-up rather than a call."""
        self._flows = load_extension_flows(extensions, self.prompts)
        for extension in extensions:
            self(extension)
        return self._flows

    def __call__(self, extension: Extension) -> CallApplication:
        built = self._built.get(extension.number)
        if built is not None:
            return built
        application: CallApplication
        if extension.application == "greeting":
            application = Greeting(self.prompts, extension)
        elif extension.application == FEATURE_APPLICATION and self.features is not None:
            application = FeatureCode(self.prompts, self.features)
        elif extension.application == "ivr":
            assert extension.flow is not None
            application = IvrApplication(self._flows[extension.flow], self.prompts, self.events,
                                         self.lookup_customer, self.enqueue, transfer=self.transfer,
                                         call_log=self.ivr_calls, callbacks=self.callbacks)
        else:
            raise ValueError(f"unknown application {extension.application!r}")
        self._built[extension.number] = application
        return application

"""The bus's topic layout (version 1): building topics and reading them back.

Every topic starts with a prefix (``centralita`` by default; tests use a unique one
so that they can share a broker) and the layout version, so that a later layout can
run beside this one on the same broker::

    {prefix}/v1/sites/{site}/status                     retained, site liveness
    {prefix}/v1/sites/{site}/heartbeat                  periodic, not retained
    {prefix}/v1/sites/{site}/override                   retained, operator's force up/down
    {prefix}/v1/sites/{site}/drain                      retained, {site} drained for a drill
    {prefix}/v1/sites/{site}/agents/{agent}             retained, one agent's live state
    {prefix}/v1/sites/{site}/agents/{agent}/owner       retained, {site}'s claim to own {agent}
    {prefix}/v1/sites/{site}/reservations/request       requests addressed to {site}
    {prefix}/v1/sites/{site}/reservations/response      responses addressed to {site}
    {prefix}/v1/sites/{site}/reservations/cancel        cancellations addressed to {site}
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

LAYOUT_VERSION = "v1"
DEFAULT_PREFIX = "centralita"

# Site names and agent ids become topic levels: no MQTT wildcards or separators.
_FORBIDDEN_IN_LEVEL = frozenset("/+#\0")


class TopicKind(Enum):
    STATUS = "status"
    HEARTBEAT = "heartbeat"
    OVERRIDE = "override"
    DRAIN = "drain"
    AGENT = "agents"
    AGENT_OWNER = "agents/owner"
    RESERVATION_REQUEST = "reservations/request"
    RESERVATION_RESPONSE = "reservations/response"
    RESERVATION_CANCEL = "reservations/cancel"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    kind: TopicKind
    site: str
    agent: str | None = None


def valid_level(name: str) -> bool:
    """Whether ``name`` can be one topic level (a site name or an agent id)."""
    return bool(name) and not (_FORBIDDEN_IN_LEVEL & set(name))


def _level(name: str, what: str) -> str:
    if not valid_level(name):
        raise ValueError(f"{what} {name!r} cannot be an MQTT topic level")
    return name


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or "+" in self.prefix or "#" in self.prefix:
            raise ValueError(f"bus topic prefix {self.prefix!r} is empty or has a wildcard")

    @property
    def root(self) -> str:
        return f"{self.prefix}/{LAYOUT_VERSION}/sites"

    def site(self, site: str, kind: TopicKind) -> str:
        return f"{self.root}/{_level(site, 'site')}/{kind.value}"

    def agent(self, site: str, agent: str) -> str:
        return f"{self.root}/{_level(site, 'site')}/agents/{_level(agent, 'agent')}"

    def agent_owner(self, site: str, agent: str) -> str:
        return f"{self.agent(site, agent)}/owner"

    def subscriptions(self, own_site: str) -> list[str]:
        """What a site listens to: everyone's liveness and agents, its own inbox."""
        inbox = f"{self.root}/{_level(own_site, 'site')}/reservations/+"
        return [
            f"{self.root}/+/status",
            f"{self.root}/+/heartbeat",
            f"{self.root}/+/override",
            f"{self.root}/+/drain",
            f"{self.root}/+/agents/+",
            f"{self.root}/+/agents/+/owner",
            inbox,
        ]

    def parse(self, topic: str) -> ParsedTopic | None:
        """The kind and names in ``topic``; None when it is not a v1 topic of this prefix."""
        head = self.root + "/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head):].split("/")
        if not levels or not valid_level(levels[0]):
            return None
        site, rest = levels[0], levels[1:]
        if len(rest) == 2 and rest[0] == "agents" and valid_level(rest[1]):
            return ParsedTopic(TopicKind.AGENT, site, rest[1])
        if len(rest) == 3 and rest[0] == "agents" and valid_level(rest[1]) and rest[2] == "owner":
            return ParsedTopic(TopicKind.AGENT_OWNER, site, rest[1])
        tail = "/".join(rest)
        for kind in TopicKind:
            if kind not in (TopicKind.AGENT, TopicKind.AGENT_OWNER) and kind.value == tail:
                return ParsedTopic(kind, site)
        return None

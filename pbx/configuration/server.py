"""The server's configuration: one YAML file, validated with located errors.

`load_config(path)` returns a `ServerConfig` or raises `ConfigError` listing
every problem as ``FILE:LINE: key: reason``. With no path the embedded demo
contact center (`default_config.yaml`) is used.

Each section is a pydantic model (``settings.validation.Section``); the models are
the settings the server reads, so a key exists exactly when a model field does.
What spans sections (an extension that is also an account, an agent without an
account) is checked in ``build_config``. The file stays whole (~500 lines) because
its models side by side are the reference of every key the server reads.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator

from ivr.flow import SHIPPED_FLOWS
from pbx.configuration.callbacks import (
    DEFAULT_SITE,
    CallbackConfig,
    CallbackSettings,
    parse_callback_config,
    parse_site,
)
from pbx.configuration.contact_center import ContactCenterConfig, declared, parse_contact_center
from pbx.configuration.protection import ProtectionSettings
from settings.located_yaml import (
    ConfigError,
    LocatedDocument,
    in_file_order,
    load_yaml,
    load_yaml_file,
)
from settings.validation import (
    ListOf,
    NonEmpty,
    Section,
    Text,
    relative_to_file,
    validate_items,
    validate_value,
)

DEFAULT_CONFIG_NAME = "default_config.yaml"
TRANSPORTS = ("udp", "tcp")  # what a plain HOST:PORT listens on
EXPLICIT_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


@dataclass(frozen=True)
class ListenAddress:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


def parse_host_port(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT`; raises ValueError with a readable reason."""
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{port_text!r} is not a port number")
    return host, int(port_text)


def parse_listen_address(text: str) -> tuple[ListenAddress, ...]:
    """`HOST:PORT` (UDP and TCP) or `udp:`, `tcp:`, `tls:HOST:PORT`; raises ValueError."""
    transport, sep, rest = text.partition(":")
    transports: tuple[str, ...]
    if sep and transport.lower() in EXPLICIT_TRANSPORTS:
        transports, address = (transport.lower(),), rest
    else:
        transports, address = TRANSPORTS, text
    host, port = parse_host_port(address)
    return tuple(ListenAddress(t, host, port) for t in transports)


def _listen_item(value: Any) -> tuple[ListenAddress, ...]:
    if not isinstance(value, str):
        raise ValueError("must be a string like 'udp:127.0.0.1:5060', 'tls:127.0.0.1:5061'"
                         " or '127.0.0.1:5060'")
    return parse_listen_address(value)


def _one_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _flattened(groups: list[tuple[ListenAddress, ...]]) -> tuple[ListenAddress, ...]:
    addresses = tuple(address for group in groups for address in group)
    if not addresses:
        raise ValueError("needs at least one address")
    return addresses


def _host_port(value: Any) -> tuple[str, int]:
    if not isinstance(value, str):
        raise ValueError("must be a string HOST:PORT")
    return parse_host_port(value)


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    return value


# Each listen entry is located on its own (sip.listen[1]); a plain HOST:PORT entry
# stands for two addresses, so the entries are flattened after validation.
if TYPE_CHECKING:
    ListenAddresses = tuple[ListenAddress, ...]
else:
    ListenAddresses = Annotated[
        list[Annotated[tuple[ListenAddress, ...], BeforeValidator(_listen_item)]],
        BeforeValidator(_one_or_list), AfterValidator(_flattened)]
HostPort = Annotated[tuple[str, int], BeforeValidator(_host_port)]


def _front_door(value: Any) -> tuple[str, int | None]:
    """`IP` (any port of that address) or `HOST:PORT`."""
    if not isinstance(value, str):
        raise ValueError("must be a string IP or IP:PORT")
    try:
        return str(ipaddress.ip_address(value.strip("[]"))), None
    except ValueError:
        host, port = parse_host_port(value)
        return str(ipaddress.ip_address(host)), port


FrontDoorAddress = Annotated[tuple[str, int | None], BeforeValidator(_front_door)]
IpAddress = Annotated[Text, AfterValidator(_ip_address)]


def _existing_file(value: str | None, info: ValidationInfo, what: str = "") -> str | None:
    if value is None:
        return None
    path = relative_to_file(value, info.context)
    if not path.is_file():
        raise ValueError(f"{what}{path} does not exist")
    return str(path)


class Account(Section):
    user: Text
    password: Text
    name: Text | None = None

    @field_validator("user")
    @classmethod
    def _sip_user(cls, user: str) -> str:
        if not user or any(c in user for c in " @:;<>\""):
            raise ValueError(f"{user!r} is not a valid SIP user name")
        return user


APPLICATIONS = ("greeting", "ivr")


class ExtensionSettings(Section):
    """An entry of ``extensions``: a number answered by the server itself."""

    application: Literal["greeting", "ivr"]
    prompt: Text | None = None
    language: Text = "en"
    flow: Text | None = Field(None, validate_default=True)

    @field_validator("application", mode="before")
    @classmethod
    def _known_application(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in APPLICATIONS:
            raise ValueError(f"unknown application {value!r} (expected one of: {', '.join(APPLICATIONS)})")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_file(cls, prompt: str | None, info: ValidationInfo) -> str | None:
        # A bare name ("welcome") is a prompt of the library; a path must exist.
        if prompt is not None and ("/" in prompt or prompt.endswith(".wav")):
            return _existing_file(prompt, info, "prompt file ")
        return prompt

    @field_validator("flow")
    @classmethod
    def _flow_reference(cls, flow: str | None, info: ValidationInfo) -> str | None:
        application = info.data.get("application")
        if application is None:
            return flow  # the application has an error of its own
        if application != "ivr":
            if flow is not None:
                raise ValueError("only an ivr application runs a flow")
            return None
        flow = flow or "demo"
        if "/" in flow or flow.endswith((".yaml", ".yml")):
            return _existing_file(flow, info, "flow file ")
        if not (SHIPPED_FLOWS / f"{flow}.yaml").is_file():
            shipped = ", ".join(sorted(p.stem for p in SHIPPED_FLOWS.glob("*.yaml")))
            raise ValueError(f"unknown flow {flow!r} (shipped flows: {shipped};"
                             " or give a path to a .yaml file)")
        return flow


# Not the model of the entry: the number is the entry's key, and the server also answers
# numbers of its own (feature codes) that are not configuration.
@dataclass(frozen=True)
class Extension:
    """A number answered by the server itself rather than by a registered phone."""

    number: str
    application: str
    prompt: str | None = None
    language: str = "en"
    flow: str | None = None


class StreamSettings(Section):
    """Limits of TCP and TLS connections (``sip.tcp``)."""

    message_timeout: float = Field(30.0, ge=1, le=3600)  # a message not complete this long after its first byte closes the connection
    idle_timeout: float = Field(600.0, ge=1, le=86400)  # a connection silent this long is closed
    max_connections: int = Field(4096, ge=1, le=1_000_000)
    max_connections_per_source: int = Field(64, ge=1, le=1_000_000)  # trusted sources are exempt


class TlsSettings(Section):
    certificate: Text | None = None  # None: a self-signed pair generated under the var dir
    key: Text | None = Field(None, validate_default=True)

    @field_validator("certificate")
    @classmethod
    def _certificate_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _existing_file(value, info)

    @field_validator("key")
    @classmethod
    def _key_file_with_certificate(cls, value: str | None, info: ValidationInfo) -> str | None:
        value = _existing_file(value, info)
        if "certificate" in info.data and (info.data["certificate"] is None) != (value is None):
            raise ValueError("give both certificate and key, or neither (a self-signed pair is generated)")
        return value


class TimerSettings(Section):
    """RFC 3261 timer bases, in seconds."""

    t1: float = Field(0.5, ge=0.05, le=10)
    t2: float = Field(4.0, ge=0.1, le=60)
    t4: float = Field(5.0, ge=0.1, le=60)


class SipSettings(Section):
    listen: ListenAddresses = (ListenAddress("udp", "127.0.0.1", 5060),
                               ListenAddress("tcp", "127.0.0.1", 5060))
    realm: Text = "centralita"
    trace: bool = False
    min_expires: int = Field(60, ge=1, le=86400)
    max_expires: int = Field(3600, ge=1, le=604800, validate_default=True)
    default_expires: int = Field(600, ge=1, le=604800)
    nonce_lifetime: float = Field(300.0, ge=5, le=86400)
    # MD5 alone by default: every common phone answers it, and some (baresip 1.0.0) give up
    # on a 401 that also carries a SHA-256 challenge. SHA-256 is opt-in.
    digest_algorithms: Annotated[ListOf[Literal["SHA-256", "MD5"]], NonEmpty] = ("MD5",)
    qualify_interval: float = Field(0.0, ge=0, le=3600)  # seconds between OPTIONS pings to registered phones; 0 = off
    timers: TimerSettings = TimerSettings()
    user_agent: Text = "Centralita"
    protection: ProtectionSettings = ProtectionSettings()
    tcp: StreamSettings = StreamSettings()
    tls: TlsSettings = TlsSettings()
    # SIP proxies every caller reaches us through (the Kamailio front door): requests
    # from them are not told apart by source address, see is_front_door.
    front_doors: ListOf[FrontDoorAddress] = ()

    @field_validator("max_expires")
    @classmethod
    def _not_below_min_expires(cls, value: int, info: ValidationInfo) -> int:
        if "min_expires" in info.data and value < info.data["min_expires"]:
            raise ValueError(f"must not be below min_expires ({info.data['min_expires']})")
        return value

    @field_validator("digest_algorithms")
    @classmethod
    def _each_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("must list SHA-256 and/or MD5, each once, preferred first")
        return value

    @property
    def t1(self) -> float:
        return self.timers.t1

    @property
    def t2(self) -> float:
        return self.timers.t2

    @property
    def t4(self) -> float:
        return self.timers.t4

    @property
    def streams(self) -> StreamSettings:
        return self.tcp

    def is_front_door(self, address: tuple[str, int]) -> bool:
        """Whether a request from `address` came through a configured front door: its
        source then stands for every caller behind that proxy, not for one of them."""
        if not self.front_doors:
            return False
        try:
            host = str(ipaddress.ip_address(address[0]))
        except ValueError:
            return False
        return any(host == door_host and door_port in (None, address[1])
                   for door_host, door_port in self.front_doors)


RTP_TIMEOUT_SCOPES = ("bridged", "all")


class MediaSettings(Section):
    host: IpAddress = "127.0.0.1"
    port_min: int = Field(20000, ge=1024, le=65534)
    port_max: int = Field(29999, ge=1025, le=65535, validate_default=True)
    codecs: Annotated[ListOf[Literal["PCMU", "PCMA"]], NonEmpty] = ("PCMU", "PCMA")
    rtp_timeout: float = Field(60.0, ge=1, le=3600)
    # Where silence ends a call: 'bridged' (a leg talking to another party that has sent
    # RTP before) or 'all'. Elsewhere (a caller on hold in a queue, muted) silence
    # proves nothing: the dialog is probed with an in-dialog OPTIONS instead.
    rtp_timeout_applies_to: Literal["bridged", "all"] = "bridged"
    # Concurrent calls one source address may hold without authenticating (calls to
    # application extensions); None = half the RTP port range, so that no single peer can
    # take every port.
    unauthenticated_calls_per_source: int | None = Field(None, ge=1, le=65535)
    # Who carries RTP: 'embedded' (this process) or 'rtpengine' (bridged calls through the
    # rtpengine whose ng control port is `rtpengine`; prompts and DTMF stay embedded).
    engine: Literal["embedded", "rtpengine"] = "embedded"
    rtpengine: HostPort | None = Field(None, validate_default=True)

    @field_validator("rtpengine")
    @classmethod
    def _rtpengine_named(cls, value: tuple[str, int] | None, info: ValidationInfo) -> tuple[str, int] | None:
        if value is None and info.data.get("engine") == "rtpengine":
            raise ValueError("engine is rtpengine: give its ng control address, HOST:PORT")
        return value

    @field_validator("port_max")
    @classmethod
    def _above_port_min(cls, value: int, info: ValidationInfo) -> int:
        if "port_min" in info.data and value <= info.data["port_min"]:
            raise ValueError(f"must be above port_min ({info.data['port_min']})")
        return value

    @property
    def port_capacity(self) -> int:
        """How many RTP sessions the port range holds (even ports only)."""
        return len(range(self.port_min + (self.port_min & 1), self.port_max + 1, 2))

    @property
    def calls_per_source_limit(self) -> int:
        if self.unauthenticated_calls_per_source is not None:
            return self.unauthenticated_calls_per_source
        return max(1, self.port_capacity // 2)


class HttpSettings(Section):
    listen: HostPort = ("127.0.0.1", 8080)
    api_token: Text | None = None
    object_census: bool = False  # GET /debug/objects: live objects per type (runs the collector)
    cycle_census: bool = False  # GET /debug/cycles: what collector passes found in reference cycles

    @field_validator("api_token")
    @classmethod
    def _usable_token(cls, token: str | None) -> str | None:
        # An empty token would lock every client out while looking like "no token".
        if token is not None and (not token or any(c.isspace() for c in token)):
            raise ValueError("must be a non-empty string without spaces, or null")
        return token

    @property
    def host(self) -> str:
        return self.listen[0]

    @property
    def port(self) -> int:
        return self.listen[1]


class StoreSettings(Section):
    url: Text | None = None  # None: SQLite under the var dir

    @field_validator("url")
    @classmethod
    def _supported_driver(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return url


def _mqtt_url(url: str | None) -> str | None:
    """``mqtt://HOST:PORT`` (port 1883 when omitted); raises ValueError saying what is wrong."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} is not mqtt://HOST:PORT (bad port)") from None
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"{url!r} is not mqtt://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.username or parts.password:
        raise ValueError(f"{url!r}: only mqtt://HOST:PORT is supported (no path, query or credentials)")
    if port == 0:
        raise ValueError(f"{url!r}: port must be 1-65535")
    return url


def _topic_prefix(prefix: str) -> str:
    levels = prefix.split("/")
    if not prefix or any(not level or set(level) & set("+#\0") for level in levels):
        raise ValueError(f"{prefix!r} is not a topic prefix (non-empty levels, no + or #)")
    return prefix


class BusSettings(Section):
    """The site bus: how the sites of one contact center share agent state and liveness."""

    # mqtt://HOST:PORT of the broker (Mosquitto) every site connects to; None: no broker,
    # this server is the whole contact center (one site, every agent local).
    url: Text | None = None
    topic_prefix: Text = "centralita"  # first topic level(s): several contact centers can share a broker
    heartbeat_interval: float = Field(1.0, ge=0.1, le=60)  # a site missing 3 beats is down

    @field_validator("url")
    @classmethod
    def _broker_url(cls, url: str | None) -> str | None:
        return _mqtt_url(url)

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, prefix: str) -> str:
        return _topic_prefix(prefix)


class HistoryLimits(Section):
    """What stays in memory about live and recently finished calls (the store keeps the rest).

    Each holder keeps at most its count; a finished call's entry goes ``max_age_seconds``
    after the call ended. Calls still in progress never age out.
    """

    # At least the few seconds the recorder may wait before copying a call's details
    # into the store.
    max_age_seconds: float = Field(300.0, ge=10, le=86400)
    routing_calls: int = Field(2000, ge=1, le=1_000_000)  # calls whose routing decisions are kept
    routing_decisions_per_call: int = Field(10, ge=1, le=100)  # the last N decisions of each
    ivr_calls: int = Field(2000, ge=1, le=1_000_000)  # IVR paths (nodes, digits, outcome)
    screen_pops: int = Field(2000, ge=1, le=1_000_000)  # caller contexts offered to agents
    finished_call_ids: int = Field(10_000, ge=1, le=1_000_000)  # written CDRs whose late events are ignored


class RoutingSettings(Section):
    auto_login: bool = False  # an agent whose phone registers is logged in (available) at once
    screen_pop_url: Text | None = None  # POSTed the caller's context when an agent's phone rings
    rona_return_seconds: float | None = Field(None, ge=1, le=86400)  # a ring-no-answer break ends by itself after this
    # A caller waiting in a queue when their site died, who calls again within this many
    # seconds, goes back in line with their priority and original enqueue time (0: never).
    interrupted_caller_keeps_place_seconds: float = Field(600, ge=0, le=86400)

    @field_validator("screen_pop_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url


@dataclass(frozen=True)
class ServerConfig:
    source: str
    sip: SipSettings
    media: MediaSettings
    http: HttpSettings
    store_url: str
    accounts: dict[str, Account] = field(default_factory=dict)
    extensions: dict[str, Extension] = field(default_factory=dict)
    contact_center: ContactCenterConfig = field(default_factory=ContactCenterConfig)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    history: HistoryLimits = field(default_factory=HistoryLimits)
    raw: dict[str, Any] = field(default_factory=dict)
    site: str = DEFAULT_SITE  # this server's site: the owner of the callback requests it takes
    callbacks: CallbackConfig = field(default_factory=CallbackConfig)
    bus: BusSettings = field(default_factory=BusSettings)

    @property
    def multi_site(self) -> bool:
        """Whether this server is one site of several: it has a site of its own and the
        contact center has agents of another site (they are served by their own site)."""
        return is_multi_site(self.site, self.contact_center)

    @property
    def agent_sites(self) -> dict[str, str]:
        """Every agent's owning site (agent id -> site)."""
        return {agent.profile.extension: agent.profile.site for agent in self.contact_center.agents}

    def is_local_agent(self, extension: str) -> bool:
        """Whether this server owns (registers and routes) the agent: every agent on a
        single server, only its own site's agents when it is one of several sites."""
        owner = self.agent_sites.get(extension)
        return not self.multi_site or owner is None or owner == self.site


def is_multi_site(site: str, contact_center: ContactCenterConfig) -> bool:
    return site != DEFAULT_SITE and any(agent.profile.site != site for agent in contact_center.agents)


# The sections that are one mapping each; the contact center's (sites, agents, queues,
# customers) are lists validated in pbx.configuration.contact_center, the trunks in pbx.configuration.callbacks.
SECTIONS: dict[str, type[Section]] = {
    "sip": SipSettings,
    "media": MediaSettings,
    "http": HttpSettings,
    "store": StoreSettings,
    "routing": RoutingSettings,
    "history": HistoryLimits,
    "callbacks": CallbackSettings,
    "bus": BusSettings,
}
LIST_SECTIONS = ("accounts", "sites", "agents", "queues", "customers", "trunks")
SCALAR_KEYS = ("site",)  # this server's site name
TOP_LEVEL_KEYS = (*SECTIONS, *LIST_SECTIONS, "extensions", *SCALAR_KEYS)


def _section(document: LocatedDocument, problems: list[str], name: str, data: dict[str, Any],
             context: dict[str, Any]) -> Any | None:
    """The section validated; None when it has problems (added to ``problems``)."""
    value = data.get(name)
    return validate_value(document, problems, name, SECTIONS[name], {} if value is None else value,
                          context=context)


def _accounts(document: LocatedDocument, problems: list[str], data: Any) -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    for i, account in validate_items(document, problems, "accounts", Account, data):
        if account.user in accounts:
            problems.append(document.problem(f"accounts[{i}].user",
                                             f"account {account.user} is defined twice"))
            continue
        accounts[account.user] = account
    return accounts


def _extensions(document: LocatedDocument, problems: list[str], data: Any,
                accounts: dict[str, Account], context: dict[str, Any]) -> dict[str, Extension]:
    extensions: dict[str, Extension] = {}
    if data is None:
        return extensions
    if not isinstance(data, dict):
        problems.append(document.problem("extensions", "must be a mapping of number -> {application: ...}"))
        return extensions
    for number, item in data.items():
        path = f"extensions.{number}"
        entry = validate_value(document, problems, path, ExtensionSettings,
                               {} if item is None else item, context=context)
        if entry is None:
            continue
        if str(number) in accounts:
            problems.append(document.problem(path, f"extension {number} is also an account"))
            continue
        extensions[str(number)] = Extension(str(number), entry.application, entry.prompt,
                                            entry.language, entry.flow)
    return extensions


def _multi_site_problems(document: LocatedDocument, site: str, site_given_as: str,
                         contact_center: ContactCenterConfig, bus: BusSettings,
                         store: StoreSettings) -> list[str]:
    """A site of several needs the servers the sites share: a broker for live state and
    PostgreSQL for durable data (a SQLite file is one machine's, an in-process bus one
    process's)."""
    if not is_multi_site(site, contact_center):
        return []
    problems = []
    sites = sorted({record.name for record in contact_center.sites})
    if site not in sites:
        problems.append(document.problem(site_given_as, f"{site!r} is not one of the sites "
                                         f"({', '.join(sites)}); the agents belong to several sites"))
    others = sorted({agent.profile.site for agent in contact_center.agents} - {site})
    why = (f"site {site} is one of several (agents of {', '.join(others)} too), so the sites "
           "must share")
    if bus.url is None:
        problems.append(document.problem("bus.url", f"{why} a broker: set bus.url to mqtt://HOST:PORT"))
    if store.url is None or not store.url.startswith("postgresql+asyncpg://"):
        problems.append(document.problem(
            "store.url", f"{why} one database: set store.url to postgresql+asyncpg://USER@HOST/DB"))
    return problems


def build_config(document: LocatedDocument, *, var_dir: Path, base_dir: Path | None,
                 site: str | None = None) -> ServerConfig:
    problems: list[str] = []
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError([document.problem("", "must be a mapping of sections (sip, media, ...)")])
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problems.append(document.problem(
                str(key), f"unknown key (expected one of: {', '.join(sorted(TOP_LEVEL_KEYS))})"))
    context = {"base_dir": base_dir}
    validated = {name: _section(document, problems, name, data, context) for name in SECTIONS}
    sections: dict[str, Any] = {name: SECTIONS[name]() if found is None else found
                                for name, found in validated.items()}
    accounts = _accounts(document, problems, data.get("accounts"))
    extensions = _extensions(document, problems, data.get("extensions"), accounts, context)
    contact_center = parse_contact_center(document, problems)
    site_in_file = parse_site(document, problems)
    site_given_as = "site" if site is None else f"site (--site {site})"
    site = site_in_file if site is None else site
    callbacks = parse_callback_config(document, problems, validated["callbacks"],
                                      queue_names=declared(document, "queues", "name"))
    raw_agents = data.get("agents")
    for i, item in enumerate(raw_agents if isinstance(raw_agents, list) else []):
        extension = str(item.get("extension")) if isinstance(item, dict) else None
        if extension is not None and extension not in accounts:
            problems.append(document.problem(
                f"agents[{i}].extension",
                f"agent {extension} has no SIP account to register with (add it under accounts)"))
    if validated["bus"] is not None and validated["store"] is not None:
        problems += _multi_site_problems(document, site, site_given_as, contact_center,
                                         sections["bus"], sections["store"])
    if problems:
        raise ConfigError(in_file_order(problems))
    store_url = sections["store"].url or f"sqlite+aiosqlite:///{var_dir / 'centralita.db'}"
    return ServerConfig(document.source, sections["sip"], sections["media"], sections["http"],
                        store_url, accounts, extensions, contact_center, sections["routing"],
                        sections["history"], data, site, callbacks, sections["bus"])


def load_config(path: Path | None, *, var_dir: Path = Path("var"), site: str | None = None) -> ServerConfig:
    """``site`` (``--site``) overrides the file's ``site`` key."""
    if path is None:
        text = resources.files("pbx").joinpath(DEFAULT_CONFIG_NAME).read_text(encoding="utf-8")
        return build_config(load_yaml(text, f"<embedded {DEFAULT_CONFIG_NAME}>"),
                            var_dir=var_dir, base_dir=None, site=site)
    return build_config(load_yaml_file(path), var_dir=var_dir, base_dir=path.parent, site=site)

"""The server's configuration: one YAML file, validated with located errors.

`load_config(path)` returns a `ServerConfig` or raises `ConfigError` listing
every problem as ``FILE:LINE: key: reason``. With no path the embedded demo
contact center (`default_config.yaml`) is used.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ivr.flow import SHIPPED_FLOWS
from pbx.contact_center import ContactCenterConfig, parse_contact_center
from pbx.protection import ProtectionSettings
from settings.located_yaml import (
    ConfigError,
    DocumentReader,
    LocatedDocument,
    in_file_order,
    load_yaml,
    load_yaml_file,
)

DEFAULT_CONFIG_NAME = "default_config.yaml"
TRANSPORTS = ("udp", "tcp")  # what a plain HOST:PORT listens on
EXPLICIT_TRANSPORTS = ("udp", "tcp", "tls")


@dataclass(frozen=True)
class ListenAddress:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


@dataclass(frozen=True)
class Account:
    user: str
    password: str
    display_name: str | None = None


@dataclass(frozen=True)
class Extension:
    """A number answered by the server itself rather than by a registered phone."""

    number: str
    application: str
    prompt: str | None = None
    language: str = "en"
    flow: str | None = None


@dataclass(frozen=True)
class StreamSettings:
    """Limits of TCP and TLS connections."""

    message_timeout: float = 30.0  # a message not complete this long after its first byte closes the connection
    idle_timeout: float = 600.0  # a connection silent this long is closed
    max_connections: int = 4096
    max_connections_per_source: int = 64  # trusted sources are exempt


@dataclass(frozen=True)
class TlsSettings:
    certificate: str | None = None  # None: a self-signed pair generated under the var dir
    key: str | None = None


@dataclass(frozen=True)
class SipSettings:
    listen: tuple[ListenAddress, ...]
    realm: str = "centralita"
    domain: str | None = None
    trace: bool = False
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 600
    nonce_lifetime: float = 300.0
    # MD5 alone by default: every common phone answers it, and some (baresip 1.0.0) give up
    # on a 401 that also carries a SHA-256 challenge. SHA-256 is opt-in.
    digest_algorithms: tuple[str, ...] = ("MD5",)
    qualify_interval: float = 0.0  # seconds between OPTIONS pings to registered phones; 0 = off
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    user_agent: str = "Centralita"
    protection: ProtectionSettings = field(default_factory=ProtectionSettings)
    streams: StreamSettings = field(default_factory=StreamSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)


@dataclass(frozen=True)
class MediaSettings:
    host: str = "127.0.0.1"
    port_min: int = 20000
    port_max: int = 29999
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    rtp_timeout: float = 60.0
    # Where silence ends a call: 'bridged' (a leg talking to another party that has sent
    # RTP before) or 'all'. Elsewhere (a caller on hold in a queue, muted) silence
    # proves nothing: the dialog is probed with an in-dialog OPTIONS instead.
    rtp_timeout_applies_to: str = "bridged"
    # Concurrent calls one source address may hold without authenticating (calls to
    # application extensions); None = half the RTP port range, so that no single peer can
    # take every port.
    unauthenticated_calls_per_source: int | None = None

    @property
    def port_capacity(self) -> int:
        """How many RTP sessions the port range holds (even ports only)."""
        return len(range(self.port_min + (self.port_min & 1), self.port_max + 1, 2))

    @property
    def calls_per_source_limit(self) -> int:
        if self.unauthenticated_calls_per_source is not None:
            return self.unauthenticated_calls_per_source
        return max(1, self.port_capacity // 2)


RTP_TIMEOUT_SCOPES = ("bridged", "all")


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    api_token: str | None = None
    object_census: bool = False  # GET /debug/objects: live objects per type (runs the collector)


@dataclass(frozen=True)
class HistoryLimits:
    """What stays in memory about live and recently finished calls (the store keeps the rest).

    Each holder keeps at most its count; a finished call's entry goes ``max_age_seconds``
    after the call ended. Calls still in progress never age out.
    """

    max_age_seconds: float = 300.0
    routing_calls: int = 2000  # calls whose routing decisions are kept
    routing_decisions_per_call: int = 10  # the last N decisions of each
    ivr_calls: int = 2000  # IVR paths (nodes, digits, outcome)
    screen_pops: int = 2000  # caller contexts offered to agents
    finished_call_ids: int = 10_000  # written CDRs whose late events are ignored


@dataclass(frozen=True)
class RoutingSettings:
    auto_login: bool = False  # an agent whose phone registers is logged in (available) at once
    screen_pop_url: str | None = None  # POSTed the caller's context when an agent's phone rings
    rona_return_seconds: float | None = None  # a ring-no-answer break ends by itself after this


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


APPLICATIONS = ("greeting", "ivr")
_TOP_LEVEL_KEYS = {"sip", "media", "http", "store", "accounts", "extensions", "routing",
                   "history", "agents", "queues", "sites", "customers", "ivr"}


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


def _listen_addresses(reader: DocumentReader, value: Any, path: str) -> tuple[ListenAddress, ...]:
    items = value if isinstance(value, list) else [value]
    found: list[ListenAddress] = []
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]" if isinstance(value, list) else path
        if not isinstance(item, str):
            reader.fail(item_path, "must be a string like 'udp:127.0.0.1:5060', 'tls:127.0.0.1:5061'"
                                   " or '127.0.0.1:5060'")
            continue
        try:
            found.extend(parse_listen_address(item))
        except ValueError as exc:
            reader.fail(item_path, str(exc))
            continue
    if not found and not reader.problems:
        reader.fail(path, "needs at least one address")
    return tuple(found)


def _sip(reader: DocumentReader, data: Any, base_dir: Path | None) -> SipSettings:
    path = "sip"
    section = reader.mapping(data, path, {
        "listen", "realm", "domain", "trace", "min_expires", "max_expires", "default_expires",
        "nonce_lifetime", "digest_algorithms", "timers", "user_agent", "qualify_interval",
        "protection", "tcp", "tls"},
        missing_ok=True)
    listen = _listen_addresses(reader, section.get("listen", "127.0.0.1:5060"), f"{path}.listen")
    timers = reader.mapping(section.get("timers"), f"{path}.timers", {"t1", "t2", "t4"}, missing_ok=True)
    min_expires = reader.number(section, "min_expires", path, 60, minimum=1, maximum=86400, integer=True)
    max_expires = reader.number(section, "max_expires", path, 3600, minimum=1, maximum=604800, integer=True)
    if max_expires < min_expires:
        reader.fail(f"{path}.max_expires", "must not be below min_expires")
    algorithms = section.get("digest_algorithms", ["MD5"])
    if (not isinstance(algorithms, list) or not algorithms
            or any(a not in ("SHA-256", "MD5") for a in algorithms) or len(set(algorithms)) != len(algorithms)):
        reader.fail(f"{path}.digest_algorithms", "must list SHA-256 and/or MD5, each once, preferred first")
        algorithms = ["MD5"]
    return SipSettings(
        listen=listen,
        digest_algorithms=tuple(algorithms),
        qualify_interval=reader.number(section, "qualify_interval", path, 0, minimum=0, maximum=3600),
        realm=reader.text(section, "realm", path, "centralita") or "centralita",
        domain=reader.text(section, "domain", path),
        trace=reader.boolean(section, "trace", path, False),
        min_expires=min_expires,
        max_expires=max_expires,
        default_expires=reader.number(section, "default_expires", path, 600, minimum=1,
                                      maximum=604800, integer=True),
        nonce_lifetime=reader.number(section, "nonce_lifetime", path, 300, minimum=5, maximum=86400),
        t1=reader.number(timers, "t1", f"{path}.timers", 0.5, minimum=0.05, maximum=10),
        t2=reader.number(timers, "t2", f"{path}.timers", 4.0, minimum=0.1, maximum=60),
        t4=reader.number(timers, "t4", f"{path}.timers", 5.0, minimum=0.1, maximum=60),
        user_agent=reader.text(section, "user_agent", path, "Centralita") or "Centralita",
        protection=_protection(reader, section.get("protection"), f"{path}.protection"),
        streams=_streams(reader, section.get("tcp"), f"{path}.tcp"),
        tls=_tls(reader, section.get("tls"), f"{path}.tls", base_dir),
    )


def _protection(reader: DocumentReader, data: Any, path: str) -> ProtectionSettings:
    section = reader.mapping(data, path, {
        "enabled", "trusted", "requests_per_second", "request_burst", "invites_per_second",
        "invite_burst", "flood_block_after", "auth_failures", "auth_window", "block_seconds",
        "max_sources"}, missing_ok=True)
    defaults = ProtectionSettings()
    trusted = section.get("trusted", list(defaults.trusted))
    networks: list[str] = []
    if not isinstance(trusted, list):
        reader.fail(f"{path}.trusted", "must be a list of networks like 10.0.0.0/8 or 192.0.2.7")
        trusted = []
    for i, item in enumerate(trusted):
        try:
            networks.append(str(ipaddress.ip_network(str(item), strict=False)))
        except ValueError:
            reader.fail(f"{path}.trusted[{i}]", f"{item!r} is not an IP network like 10.0.0.0/8")
    return ProtectionSettings(
        enabled=reader.boolean(section, "enabled", path, defaults.enabled),
        trusted=tuple(networks),
        requests_per_second=reader.number(section, "requests_per_second", path,
                                          defaults.requests_per_second, minimum=1, maximum=1_000_000),
        request_burst=reader.number(section, "request_burst", path, defaults.request_burst,
                                    minimum=1, maximum=1_000_000, integer=True),
        invites_per_second=reader.number(section, "invites_per_second", path,
                                         defaults.invites_per_second, minimum=0.1, maximum=1_000_000),
        invite_burst=reader.number(section, "invite_burst", path, defaults.invite_burst,
                                   minimum=1, maximum=1_000_000, integer=True),
        flood_block_after=reader.number(section, "flood_block_after", path, defaults.flood_block_after,
                                        minimum=1, maximum=10_000_000, integer=True),
        auth_failures=reader.number(section, "auth_failures", path, defaults.auth_failures,
                                    minimum=1, maximum=100_000, integer=True),
        auth_window=reader.number(section, "auth_window", path, defaults.auth_window,
                                  minimum=1, maximum=86400),
        block_seconds=reader.number(section, "block_seconds", path, defaults.block_seconds,
                                    minimum=1, maximum=7 * 86400),
        max_sources=reader.number(section, "max_sources", path, defaults.max_sources,
                                  minimum=100, maximum=10_000_000, integer=True),
    )


def _streams(reader: DocumentReader, data: Any, path: str) -> StreamSettings:
    section = reader.mapping(data, path, {"message_timeout", "idle_timeout", "max_connections",
                                          "max_connections_per_source"}, missing_ok=True)
    defaults = StreamSettings()
    return StreamSettings(
        message_timeout=reader.number(section, "message_timeout", path, defaults.message_timeout,
                                      minimum=1, maximum=3600),
        idle_timeout=reader.number(section, "idle_timeout", path, defaults.idle_timeout,
                                   minimum=1, maximum=86400),
        max_connections=reader.number(section, "max_connections", path, defaults.max_connections,
                                      minimum=1, maximum=1_000_000, integer=True),
        max_connections_per_source=reader.number(section, "max_connections_per_source", path,
                                                 defaults.max_connections_per_source,
                                                 minimum=1, maximum=1_000_000, integer=True),
    )


def _tls(reader: DocumentReader, data: Any, path: str, base_dir: Path | None) -> TlsSettings:
    section = reader.mapping(data, path, {"certificate", "key"}, missing_ok=True)
    files: dict[str, str | None] = {}
    for name in ("certificate", "key"):
        value = reader.text(section, name, path)
        if value is not None:
            file = Path(value)
            if base_dir is not None and not file.is_absolute():
                file = base_dir / file
            if not file.is_file():
                reader.fail(f"{path}.{name}", f"{file} does not exist")
            value = str(file)
        files[name] = value
    if (files["certificate"] is None) != (files["key"] is None):
        reader.fail(path, "give both certificate and key, or neither (a self-signed pair is generated)")
    return TlsSettings(files["certificate"], files["key"])


def _media(reader: DocumentReader, data: Any) -> MediaSettings:
    path = "media"
    section = reader.mapping(data, path, {"host", "port_min", "port_max", "codecs", "rtp_timeout",
                                          "rtp_timeout_applies_to", "unauthenticated_calls_per_source"},
                             missing_ok=True)
    host = reader.text(section, "host", path, "127.0.0.1") or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        reader.fail(f"{path}.host", f"{host!r} is not an IP address")
    port_min = reader.number(section, "port_min", path, 20000, minimum=1024, maximum=65534, integer=True)
    port_max = reader.number(section, "port_max", path, 29999, minimum=1025, maximum=65535, integer=True)
    if port_max <= port_min:
        reader.fail(f"{path}.port_max", "must be above port_min")
    codecs = section.get("codecs", ["PCMU", "PCMA"])
    if not isinstance(codecs, list) or not codecs or any(c not in ("PCMU", "PCMA") for c in codecs):
        reader.fail(f"{path}.codecs", "must be a non-empty list of PCMU and/or PCMA")
        codecs = ["PCMU", "PCMA"]
    scope = reader.text(section, "rtp_timeout_applies_to", path, "bridged") or "bridged"
    if scope not in RTP_TIMEOUT_SCOPES:
        reader.fail(f"{path}.rtp_timeout_applies_to", f"must be one of {', '.join(RTP_TIMEOUT_SCOPES)}")
    per_source = section.get("unauthenticated_calls_per_source")
    if per_source is not None:
        per_source = reader.number(section, "unauthenticated_calls_per_source", path, 1,
                                   minimum=1, maximum=65535, integer=True)
    return MediaSettings(host, port_min, port_max, tuple(codecs),
                         reader.number(section, "rtp_timeout", path, 60, minimum=1, maximum=3600),
                         scope, unauthenticated_calls_per_source=per_source)


def _http(reader: DocumentReader, data: Any) -> HttpSettings:
    path = "http"
    section = reader.mapping(data, path, {"listen", "api_token", "object_census"}, missing_ok=True)
    host, port = "127.0.0.1", 8080
    listen = section.get("listen", "127.0.0.1:8080")
    if isinstance(listen, str):
        try:
            host, port = parse_host_port(listen)
        except ValueError as exc:
            reader.fail(f"{path}.listen", str(exc))
    else:
        reader.fail(f"{path}.listen", "must be a string HOST:PORT")
    token = reader.text(section, "api_token", path)
    if token is not None and (not token or any(c.isspace() for c in token)):
        # An empty token would lock every client out while looking like "no token".
        reader.fail(f"{path}.api_token", "must be a non-empty string without spaces, or null")
        token = None
    return HttpSettings(host, port, token, reader.boolean(section, "object_census", path, False))


def _history(reader: DocumentReader, data: Any) -> HistoryLimits:
    path = "history"
    defaults = HistoryLimits()
    section = reader.mapping(data, path, {
        "max_age_seconds", "routing_calls", "routing_decisions_per_call", "ivr_calls",
        "screen_pops", "finished_call_ids"}, missing_ok=True)

    def count(key: str, maximum: int = 1_000_000) -> int:
        value: int = reader.number(section, key, path, getattr(defaults, key), minimum=1,
                                   maximum=maximum, integer=True)
        return value

    return HistoryLimits(
        # At least the few seconds the recorder may wait before copying a call's details
        # into the store.
        max_age_seconds=reader.number(section, "max_age_seconds", path, defaults.max_age_seconds,
                                      minimum=10, maximum=86400),
        routing_calls=count("routing_calls"),
        routing_decisions_per_call=count("routing_decisions_per_call", 100),
        ivr_calls=count("ivr_calls"),
        screen_pops=count("screen_pops"),
        finished_call_ids=count("finished_call_ids"),
    )


def _accounts(reader: DocumentReader, data: Any) -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    if data is None:
        return accounts
    if not isinstance(data, list):
        reader.fail("accounts", "must be a list of {user, password}")
        return accounts
    for i, item in enumerate(data):
        path = f"accounts[{i}]"
        entry = reader.mapping(item, path, {"user", "password", "name"}, missing_ok=True)
        user = reader.text(entry, "user", path, required=True)
        password = reader.text(entry, "password", path, required=True)
        if user is None or password is None:
            continue
        if not user or any(c in user for c in " @:;<>\"") :
            reader.fail(f"{path}.user", f"{user!r} is not a valid SIP user name")
            continue
        if user in accounts:
            reader.fail(f"{path}.user", f"account {user} is defined twice")
            continue
        accounts[user] = Account(user, password, reader.text(entry, "name", path))
    return accounts


def _extensions(reader: DocumentReader, data: Any, accounts: dict[str, Account],
                base_dir: Path | None) -> dict[str, Extension]:
    extensions: dict[str, Extension] = {}
    if data is None:
        return extensions
    if not isinstance(data, dict):
        reader.fail("extensions", "must be a mapping of number -> {application: ...}")
        return extensions
    for number, item in data.items():
        path = f"extensions.{number}"
        entry = reader.mapping(item, path, {"application", "prompt", "language", "flow"}, missing_ok=True)
        application = reader.text(entry, "application", path, required=True)
        if application is None:
            continue
        if application not in APPLICATIONS:
            reader.fail(f"{path}.application",
                        f"unknown application {application!r} (expected one of: {', '.join(APPLICATIONS)})")
            continue
        if number in accounts:
            reader.fail(path, f"extension {number} is also an account")
            continue
        prompt = reader.text(entry, "prompt", path)
        if prompt is not None and ("/" in prompt or prompt.endswith(".wav")):
            prompt_path = Path(prompt)
            if base_dir is not None and not prompt_path.is_absolute():
                prompt_path = base_dir / prompt_path
            if not prompt_path.is_file():
                reader.fail(f"{path}.prompt", f"prompt file {prompt_path} does not exist")
            prompt = str(prompt_path)
        flow = reader.text(entry, "flow", path)
        if application == "ivr":
            flow = flow or "demo"
            if "/" in flow or flow.endswith((".yaml", ".yml")):
                flow_path = Path(flow)
                if base_dir is not None and not flow_path.is_absolute():
                    flow_path = base_dir / flow_path
                flow = str(flow_path)
                if not flow_path.is_file():
                    reader.fail(f"{path}.flow", f"flow file {flow_path} does not exist")
            elif not (SHIPPED_FLOWS / f"{flow}.yaml").is_file():
                shipped = ", ".join(sorted(p.stem for p in SHIPPED_FLOWS.glob("*.yaml")))
                reader.fail(f"{path}.flow", f"unknown flow {flow!r} (shipped flows: {shipped};"
                            " or give a path to a .yaml file)")
        elif flow is not None:
            reader.fail(f"{path}.flow", "only an ivr application runs a flow")
        extensions[str(number)] = Extension(str(number), application, prompt,
                                            reader.text(entry, "language", path, "en") or "en", flow)
    return extensions


def _store_url(reader: DocumentReader, data: Any, var_dir: Path) -> str:
    section = reader.mapping(data, "store", {"url"}, missing_ok=True)
    url = reader.text(section, "url", "store")
    if url is None:
        return f"sqlite+aiosqlite:///{var_dir / 'centralita.db'}"
    if not (url.startswith("sqlite+aiosqlite://") or url.startswith("postgresql+asyncpg://")):
        reader.fail("store.url", "must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    return url


def build_config(document: LocatedDocument, *, var_dir: Path, base_dir: Path | None) -> ServerConfig:
    reader = DocumentReader(document)
    data = reader.mapping(document.data, "", _TOP_LEVEL_KEYS, missing_ok=True)
    sip = _sip(reader, data.get("sip"), base_dir)
    media = _media(reader, data.get("media"))
    http = _http(reader, data.get("http"))
    store_url = _store_url(reader, data.get("store"), var_dir)
    accounts = _accounts(reader, data.get("accounts"))
    extensions = _extensions(reader, data.get("extensions"), accounts, base_dir)
    routing_section = reader.mapping(data.get("routing"), "routing",
                                     {"auto_login", "screen_pop_url", "rona_return_seconds"}, missing_ok=True)
    screen_pop_url = reader.text(routing_section, "screen_pop_url", "routing")
    if screen_pop_url is not None and not screen_pop_url.startswith(("http://", "https://")):
        reader.fail("routing.screen_pop_url", "must be an http:// or https:// URL")
    rona_return: float | None = None
    if routing_section.get("rona_return_seconds") is not None:
        rona_return = reader.number(routing_section, "rona_return_seconds", "routing", 0,
                                    minimum=1, maximum=86400)
    routing = RoutingSettings(reader.boolean(routing_section, "auto_login", "routing", False),
                              screen_pop_url, rona_return)
    history = _history(reader, data.get("history"))
    contact_center = parse_contact_center(document, reader.problems)
    raw_agents = data.get("agents")
    for i, item in enumerate(raw_agents if isinstance(raw_agents, list) else []):
        extension = str(item.get("extension")) if isinstance(item, dict) else None
        if extension is not None and extension not in accounts:
            reader.fail(f"agents[{i}].extension",
                        f"agent {extension} has no SIP account to register with (add it under accounts)")
    if reader.problems:
        raise ConfigError(in_file_order(reader.problems))
    return ServerConfig(document.source, sip, media, http, store_url, accounts, extensions,
                        contact_center, routing, history, data)


def load_config(path: Path | None, *, var_dir: Path = Path("var")) -> ServerConfig:
    if path is None:
        text = resources.files("pbx").joinpath(DEFAULT_CONFIG_NAME).read_text(encoding="utf-8")
        return build_config(load_yaml(text, f"<embedded {DEFAULT_CONFIG_NAME}>"),
                            var_dir=var_dir, base_dir=None)
    return build_config(load_yaml_file(path), var_dir=var_dir, base_dir=path.parent)

"""Write a runnable front-door folder: the shipped kamailio.cfg plus what differs per deployment.

    python3 deploy/kamailio/front_door_config.py --out DIR --listen 127.0.0.1:5060 \\
        --site madrid=127.0.0.1:5070 --site bogota=127.0.0.1:5071 \\
        --home 1001=madrid --home 1002=bogota

then ``cd DIR && kamailio -DD -E -f kamailio.cfg``. Prints that command and the
``sip.front_doors`` line to put in every site's configuration. Writes:

* ``kamailio.cfg``: a copy of the shipped configuration (never edited per deployment);
* ``front-door.local.cfg``: the listen address and timers as Kamailio defines;
* ``dispatcher.list``: set 1 holds every site (new calls); set 2, 3... one per site in
  the order given, that site first and the others as backups (agents' REGISTERs);
* ``front-door.homes.cfg``: each agent's home site, as the set number of that site.

Standard library only, so it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIPPED_CONFIG = HERE / "kamailio.cfg"
ALL_SITES_SET = 1
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_USER = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class Site:
    name: str
    host: str
    port: int

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"


def parse_address(text: str, what: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what}: expected HOST:PORT, got {text!r}")
    if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
        raise ValueError(f"{what}: bad host {host!r}")
    return host, int(port)


def parse_site(text: str) -> Site:
    name, separator, address = text.partition("=")
    if not separator or not _NAME.match(name):
        raise ValueError(f"--site: expected NAME=HOST:PORT, got {text!r}")
    host, port = parse_address(address, f"--site {name}")
    return Site(name, host, port)


def home_set(sites: list[Site], name: str) -> int:
    for index, site in enumerate(sites):
        if site.name == name:
            return ALL_SITES_SET + 1 + index
    raise ValueError(f"--home: no site named {name!r} (sites: {', '.join(s.name for s in sites)})")


def dispatcher_list(sites: list[Site]) -> str:
    lines = ["# setid destination flags priority attributes (written by front_door_config.py)",
             f"# set {ALL_SITES_SET}: every site, for new calls"]
    lines += [f"{ALL_SITES_SET} {site.uri} 0 0 duid={site.name}" for site in sites]
    for index, home in enumerate(sites):
        number = ALL_SITES_SET + 1 + index
        lines.append(f"# set {number}: {home.name}'s agents; the other sites back it up")
        # Algorithm 8 tries the highest priority first.
        for site in sites:
            priority = 100 if site == home else 10
            lines.append(f"{number} {site.uri} 0 {priority} duid={site.name}")
    return "\n".join(lines) + "\n"


def local_defines(listen: tuple[str, int], folder: Path, probe_interval: int,
                  answer_timeout_ms: int, log_level: int, children: int) -> str:
    host, port = listen
    return "\n".join([
        "# Written by front_door_config.py: what differs per deployment.",
        f"#!define FRONT_LISTEN udp:{host}:{port}",
        f'#!define DISPATCHER_LIST "{folder / "dispatcher.list"}"',
        f"#!define PROBE_INTERVAL {probe_interval}",
        f"#!define SITE_ANSWER_TIMEOUT_MS {answer_timeout_ms}",
        f"#!define LOG_LEVEL {log_level}",
        f"#!define CHILDREN {children}",
    ]) + "\n"


def homes_config(sites: list[Site], homes: dict[str, str]) -> str:
    lines = ["# Written by front_door_config.py: each agent's home site (its dispatcher set)."]
    if not homes:
        return "\n".join([*lines, "# (none: every REGISTER goes to any site)"]) + "\n"
    lines.append("event_route[htable:mod-init] {")
    for user, site in sorted(homes.items()):
        lines.append(f'\t$sht(home=>{user}) = {home_set(sites, site)};  # {site}')
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_folder(folder: Path, *, listen: tuple[str, int], sites: list[Site],
                 homes: dict[str, str], probe_interval: int = 1, answer_timeout_ms: int = 1000,
                 log_level: int = 1, children: int = 4) -> Path:
    """Write the four files into ``folder``; returns the path of its kamailio.cfg."""
    if not sites:
        raise ValueError("at least one --site is needed")
    names = [site.name for site in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"site names repeat: {names}")
    for user in homes:
        if not _USER.match(user):
            raise ValueError(f"--home: bad user {user!r}")
    if probe_interval < 1:
        raise ValueError("--probe-interval: at least 1 second (Kamailio's resolution)")
    if answer_timeout_ms < 100:
        raise ValueError("--answer-timeout-ms: at least 100")
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "kamailio.cfg"
    shutil.copyfile(SHIPPED_CONFIG, config)
    (folder / "front-door.local.cfg").write_text(
        local_defines(listen, folder, probe_interval, answer_timeout_ms, log_level, children))
    (folder / "dispatcher.list").write_text(dispatcher_list(sites))
    (folder / "front-door.homes.cfg").write_text(homes_config(sites, homes))
    return config


def site_config_lines(listen: tuple[str, int]) -> list[str]:
    """What every site's configuration needs to know the front door: its ``sip.front_doors``
    entry (the address it sends from) and the same host in ``sip.protection.trusted``."""
    host, port = listen
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return [f"  front_doors: [\"HOST:{port}\"]   # HOST: the IP address of {host} (an IP, not a name)"]
    if address.is_unspecified:
        return [f"  front_doors: [\"HOST:{port}\"]   # HOST: the IP address the front door sends "
                f"from ({host} listens on every address)"]
    entry = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    lines = [f"  front_doors: [\"{entry}\"]"]
    if not address.is_loopback:  # loopback is trusted by default
        # With loopback, trusted by default; add any network the site trusted already.
        lines.append(f"  protection: {{trusted: [\"127.0.0.0/8\", \"::1/128\", \"{address}\"]}}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write")
    parser.add_argument("--listen", required=True, help="HOST:PORT the front door listens on (UDP)")
    parser.add_argument("--site", action="append", default=[], metavar="NAME=HOST:PORT",
                        help="a site's SIP address (repeat; the order is the backup order)")
    parser.add_argument("--home", action="append", default=[], metavar="USER=SITE",
                        help="an agent's home site (repeat)")
    parser.add_argument("--probe-interval", type=int, default=1, help="seconds between OPTIONS")
    parser.add_argument("--answer-timeout-ms", type=int, default=1000,
                        help="a site silent this long (no 100 Trying) is failed over")
    parser.add_argument("--log-level", type=int, default=1, help="Kamailio debug= level")
    parser.add_argument("--children", type=int, default=4, help="Kamailio UDP workers")
    args = parser.parse_args(argv)
    try:
        sites = [parse_site(text) for text in args.site]
        homes: dict[str, str] = {}
        for text in args.home:
            user, separator, site = text.partition("=")
            if not separator:
                raise ValueError(f"--home: expected USER=SITE, got {text!r}")
            homes[user] = site
        listen = parse_address(args.listen, "--listen")
        config = write_folder(args.out, listen=listen,
                              sites=sites, homes=homes, probe_interval=args.probe_interval,
                              answer_timeout_ms=args.answer_timeout_ms,
                              log_level=args.log_level, children=args.children)
    except ValueError as error:
        print(f"front-door-config: {error}", file=sys.stderr)
        return 2
    print(f"cd {config.parent} && kamailio -DD -E -f kamailio.cfg")
    print("# in every site's configuration, under sip: (requests from the front door carry its")
    print("# callers' addresses in Via; see README \"Security at the SIP edge\")")
    print("sip:")
    for line in site_config_lines(listen):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

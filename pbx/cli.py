"""The `pbx` command: `pbx serve` runs the server, `pbx check-config FILE` validates a
configuration, `pbx simulate` plays a scenario day against the router in virtual time,
`pbx drill` switches a site's calls to another site on purpose and reports."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path

from pbx.configuration.callbacks import check_name
from pbx.configuration.server import (
    ConfigError,
    ServerConfig,
    load_config,
    parse_host_port,
    parse_listen_address,
)
from settings.located_yaml import in_file_order
from simulation.staffing import StaffingTarget


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _apply_overrides(config: ServerConfig, args: argparse.Namespace) -> ServerConfig:
    sip = config.sip
    if args.sip_listen:
        listen = tuple(address for text in args.sip_listen for address in parse_listen_address(text))
        sip = sip.model_copy(update={"listen": listen})
    if args.sip_trace:
        sip = sip.model_copy(update={"trace": True})
    http = config.http
    if args.http_listen:
        http = http.model_copy(update={"listen": parse_host_port(args.http_listen)})
    return dataclasses.replace(config, sip=sip, http=http)


def _site_argument(site: str | None) -> str | None:
    if site is None:
        return None
    try:
        return check_name(site)
    except ValueError as error:
        raise ValueError(f"--site: {error}") from None


def _serve(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level, args.log_format)
    var_dir = Path(args.var_dir)
    try:
        config = _apply_overrides(load_config(Path(args.config) if args.config else None, var_dir=var_dir,
                                              site=_site_argument(args.site)), args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from pbx.server import Server, UnsafeHttpListen

    async def run() -> int:
        server = Server(config, var_dir=var_dir)
        try:
            await server.start()
        except UnsafeHttpListen as exc:
            logging.getLogger("pbx").error("refusing to start: %s", exc)
            await server.stop()
            return 2
        except OSError as exc:
            logging.getLogger("pbx").error("cannot start: %s", exc)
            await server.stop()
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stop_on(sig: signal.Signals) -> None:
            logging.getLogger("pbx").info("%s received: shutting down", sig.name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_on, sig)
        await stop.wait()
        await server.stop()
        return 0

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but keep serving without it
        return asyncio.run(run())
    return uvloop.run(run())


def _check_config(args: argparse.Namespace) -> int:
    from pbx.calls.applications import load_extension_flows, unknown_flow_references
    from pbx.media.prompt import PromptLibrary

    try:
        config = load_config(Path(args.file), site=_site_argument(args.site))
        flows = load_extension_flows(list(config.extensions.values()), PromptLibrary())
        problems = unknown_flow_references(flows, config)
        if problems:
            raise ConfigError(in_file_order(problems))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{args.file}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    listen = ", ".join(str(a) for a in config.sip.listen)
    print(f"{args.file}: OK (SIP {listen}; HTTP {config.http.host}:{config.http.port}; "
          f"{len(config.accounts)} accounts; {len(config.extensions)} extensions; "
          + (f"site {config.site} of {len({a.profile.site for a in config.contact_center.agents})}, "
             f"bus {config.bus.url})" if config.multi_site else "one site)"))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from pbx.configuration.simulation_scenario import load_scenario, scenario_path
    from simulation import Simulation, build_report, render_svg, render_table
    from simulation.staffing import render_staffing, staff_queue

    source = args.config or "<embedded demo configuration>"
    try:
        config = load_config(Path(args.config) if args.config else None)
        source = args.scenario
        scenario = load_scenario(scenario_path(args.scenario), config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    result = Simulation(scenario, args.seed).run()
    report = build_report(result)
    print(render_table(report), end="")
    if args.staffing is not None:
        target = args.staffing
        plan = {load.queue: staff_queue(scenario, load, target, seed=args.seed)
                for load in scenario.loads}
        report["staffing"] = {
            "target": {"service_level": target.service_level, "seconds": target.seconds},
            "queues": {queue: [row.to_dict() for row in rows] for queue, rows in plan.items()}}
        print()
        print(render_staffing(plan, target), end="")
    if args.report:
        path = Path(args.report)
        try:
            path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
            plot = path.with_suffix(".svg")
            plot.write_text(render_svg(report), encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write the report: {exc}", file=sys.stderr)
            return 1
        print(f"\nreport: {path}; plot: {plot}")
    return 0


def _staffing_target(text: str) -> StaffingTarget:
    percent, _, seconds = text.partition("/")
    try:
        target = StaffingTarget(float(percent) / 100, float(seconds))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PERCENT/SECONDS like 80/20, got {text!r}") from None
    if not (0 < target.service_level <= 1 and target.seconds > 0):
        raise argparse.ArgumentTypeError(f"expected PERCENT (1-100)/SECONDS (> 0), got {text!r}")
    return target


def _drill(args: argparse.Namespace) -> int:
    from pbx.drill.runner import Drill, DrillError, parse_api

    try:
        if args.back == (args.from_site is not None):
            raise DrillError("give either --from SITE --to SITE, or --back")
        if args.from_site is not None and args.to_site is None:
            raise DrillError("--from needs --to: the site that takes the calls")
        apis = parse_api(args.api or [], args.token or os.environ.get("PBX_API_TOKEN"),
                         args.timeout)
        if not apis:
            raise DrillError("give each site's API address: --api madrid=http://HOST:PORT "
                             "--api bogota=http://HOST:PORT")
        drill = Drill(apis, wait_seconds=args.wait, say=lambda text: print(text, file=sys.stderr))
        if args.back:
            restored = drill.back()
            print("no site was drained: nothing to restore" if not restored else
                  f"{', '.join(restored)} take(s) new calls again")
            return 0
        report = drill.run(args.from_site, args.to_site, dry_run=args.dry_run)
    except DrillError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    if args.report:
        try:
            Path(args.report).write_text(json.dumps(report.to_dict(), indent=1) + "\n",
                                         encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write the report: {exc}", file=sys.stderr)
            return 1
        print(f"report: {args.report}")
    return 0 if report.calls_lost == 0 else 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pbx", description="Centralita contact-center telephony server")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", metavar="FILE", help="YAML configuration (default: the embedded demo)")
    serve.add_argument("--sip-listen", metavar="[udp:|tcp:|tls:]HOST:PORT", action="append",
                       help="SIP address (a plain HOST:PORT is UDP and TCP); repeat for several;"
                            " replaces the config's sip.listen")
    serve.add_argument("--http-listen", metavar="HOST:PORT", help="HTTP address (overrides the config)")
    serve.add_argument("--site", metavar="NAME",
                       help="this server's site (overrides the config's site; default: local)")
    serve.add_argument("--var-dir", default="var", metavar="DIR", help="state directory (default: ./var)")
    serve.add_argument("--sip-trace", action="store_true", help="log every SIP message in and out")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", default="text", choices=["text", "json"])
    serve.set_defaults(func=_serve)

    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--site", metavar="NAME",
                       help="check the file as this site would read it (as pbx serve --site)")
    check.set_defaults(func=_check_config)

    simulate = commands.add_parser(
        "simulate", help="play a day of callers and agents against the real router, in virtual time")
    simulate.add_argument("--config", metavar="FILE",
                          help="YAML configuration: queues, agents, sites (default: the embedded demo)")
    simulate.add_argument("--scenario", metavar="FILE", required=True,
                          help="scenario YAML, or the name of a shipped one: monday (pbx/scenarios/)")
    simulate.add_argument("--report", metavar="FILE",
                          help="write the report as JSON here, and its plot beside it (.svg)")
    simulate.add_argument("--seed", type=int, default=1, help="random seed (default 1): same seed, same day")
    simulate.add_argument("--staffing", metavar="PERCENT/SECONDS", nargs="?", const="80/20",
                          type=_staffing_target,
                          help="also find the fewest agents per interval meeting this target "
                               "(default 80/20), beside Erlang C's answer")
    simulate.set_defaults(func=_simulate)

    drill = commands.add_parser(
        "drill", help="a planned DR drill: drain a site, its calls and callbacks go to another")
    drill.add_argument("--from", dest="from_site", metavar="SITE", help="the site to drain")
    drill.add_argument("--to", dest="to_site", metavar="SITE", help="the site that takes over")
    drill.add_argument("--back", action="store_true",
                       help="end the drill: every drained site takes new calls again")
    drill.add_argument("--api", action="append", metavar="SITE=URL",
                       help="a site's HTTP address, e.g. madrid=http://10.0.0.1:8080; repeat "
                            "for each site")
    drill.add_argument("--token", help="the API token (default: $PBX_API_TOKEN)")
    drill.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    drill.add_argument("--report", metavar="FILE", help="also write the report as JSON here")
    drill.add_argument("--wait", type=float, default=300.0, metavar="SECONDS",
                       help="longest wait for the drained site's calls in progress to end, and "
                            "for its callbacks to be adopted (default 300)")
    drill.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="HTTP timeout per request (default 10)")
    drill.set_defaults(func=_drill)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

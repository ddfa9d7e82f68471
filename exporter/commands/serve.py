"""``damon-exporter [flags]``: run the Prometheus exporter until SIGTERM/SIGINT.

Flags follow node_exporter's spelling. Startup problems (bad config, bad web config,
address in use) are one clear line on stderr and a non-zero exit: 2 for bad input, 1 for a
runtime failure such as a taken port. After startup nothing is fatal: the exporter keeps
serving its last good state and reports problems in logs and ``damon_sampler_errors_total``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING

from .. import __version__

if TYPE_CHECKING:
    import ssl

    from ..config import Config

#: The 9100-9999 exporter range of Prometheus' default port allocations has been fully
#: allocated since 2023, so we take a port past it (see the README for the reasoning).
DEFAULT_PORT = 10170
DEFAULT_LISTEN = f":{DEFAULT_PORT}"

log = logging.getLogger("exporter.serve")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every bad input
        sys.stderr.write(f"damon-exporter: error: {message}\n")
        sys.exit(2)


#: seconds the sampler gets to stop and close its engine after SIGTERM
SHUTDOWN_TIMEOUT = 20.0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="damon-exporter",
        description="Prometheus exporter of memory access patterns (DAMON region sampling from user space).",
    )
    p.add_argument("--config", metavar="FILE", help="config file (required; see 'damon-exporter check-config')")
    p.add_argument("--web.listen-address", dest="listen", default=DEFAULT_LISTEN, metavar="[HOST]:PORT", help=f"address to serve on (default {DEFAULT_LISTEN})")
    p.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics", metavar="PATH", help="path of the metrics (default /metrics)")
    p.add_argument("--web.config.file", dest="web_config", metavar="FILE", help="exporter-toolkit web config: TLS and basic auth")
    p.add_argument("--config.auto-reload-interval", dest="reload_interval", default="5s", metavar="DURATION", help="how often to check the config file for changes; 0 disables (default 5s; SIGHUP always reloads)")
    p.add_argument("--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"])
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"damon-exporter {__version__}")
        return 0
    from ..service.logsetup import setup_logging

    setup_logging(args.log_level, args.log_format)
    if not args.config:
        sys.stderr.write("damon-exporter: error: --config FILE is required (there are no default targets to monitor)\n")
        return 2
    if not args.telemetry_path.startswith("/") or args.telemetry_path in ("/", "/-/healthy", "/-/ready"):
        sys.stderr.write(f"damon-exporter: error: --web.telemetry-path {args.telemetry_path!r} must start with '/' and not be '/', '/-/healthy' or '/-/ready'\n")
        return 2

    from ..config import ConfigError, load_config
    from ..core.durations import DurationError, parse_duration
    from ..web.config import WebConfigError, load_web_config, make_ssl_context
    from ..web.server import ListenAddressError, parse_listen_address

    try:
        reload_interval = parse_duration(args.reload_interval) if args.reload_interval not in ("0", "0s") else 0.0
    except DurationError as e:
        sys.stderr.write(f"damon-exporter: error: --config.auto-reload-interval: {e}\n")
        return 2
    try:
        address = parse_listen_address(args.listen)
    except ListenAddressError as e:
        sys.stderr.write(f"damon-exporter: error: {e}\n")
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as e:
        for line in e.lines:
            sys.stderr.write(line + "\n")
        return 2
    ssl_context = None
    users: dict[str, bytes] = {}
    if args.web_config:
        try:
            web = load_web_config(args.web_config)
            ssl_context = make_ssl_context(web.tls) if web.tls else None
        except WebConfigError as e:
            for line in e.lines:
                sys.stderr.write(line + "\n")
            return 2
        users = web.users
    return run(config, args, address, ssl_context, users, reload_interval)


def run(
    config: "Config",
    args: argparse.Namespace,
    address: tuple[str, int],
    ssl_context: "ssl.SSLContext | None",
    users: dict[str, bytes],
    reload_interval: float,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (0 on a clean stop)."""
    import time

    from ..config import ConfigError, load_config
    from ..metrics.collector import CachedExposition
    from ..service.reload import ConfigReloader
    from ..service.sampler import Sampler
    from ..service.state import ServiceState, StateBox
    from ..web.auth import BasicAuth
    from ..web.server import WebApp, start_server

    stop = threading.Event()
    box = StateBox(
        ServiceState(
            version=__version__,
            backend="none",  # until the sampler has opened one
            sample_interval=config.monitoring.sample_interval,
            aggregation_interval=config.monitoring.aggregation_interval,
            cpu_budget=config.cpu_budget,
            reload_successful=True,
            reload_success_timestamp=time.time(),
        )
    )
    app = WebApp(box, CachedExposition(box), args.telemetry_path, BasicAuth(users))
    try:
        server, http_thread = start_server(address, app, ssl_context)
    except OSError as e:
        log.error("cannot listen", extra={"kv": {"address": args.listen, "err": e.strerror or str(e)}})
        return 1
    sampler = Sampler(config, box, stop)
    reloader = ConfigReloader(args.config, box, sampler.apply_config, load_config, ConfigError, stop, reload_interval)

    def on_stop(signum: int, _frame: object) -> None:
        log.info("stopping", extra={"kv": {"signal": signal.Signals(signum).name}})
        stop.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, lambda *_: reloader.request())
    sampler.start()
    reloader.start()
    host, port = server.server_address[:2]
    log.info(
        "listening",
        extra={"kv": {"address": f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}", "tls": ssl_context is not None, "basic_auth": bool(users), "version": __version__}},
    )
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    # long enough for an engine to finish its step and close: damon_sysfs waits in the kernel
    # for the end of an aggregation, then gives its kdamond back (turned off, nr_kdamonds 0)
    sampler.join(timeout=SHUTDOWN_TIMEOUT)
    reloader.request()  # wake it so it sees the stop event
    log.info("stopped")
    return 0

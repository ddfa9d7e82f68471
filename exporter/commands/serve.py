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
from typing import TYPE_CHECKING, Any, Callable

from exporter import __version__

if TYPE_CHECKING:
    from exporter.config import Config
    from exporter.web.config import WebConfig

#: The 9100-9999 exporter range of Prometheus' default port allocations has been fully
#: allocated since 2023, so we take a port past it (docs/operations.md gives the reasoning).
DEFAULT_PORT = 10170
DEFAULT_LISTEN = f":{DEFAULT_PORT}"

log = logging.getLogger("exporter.serve")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every bad input
        sys.stderr.write(f"damon-exporter: error: {message}\n")
        sys.exit(2)


#: seconds the sampler gets to stop and close its engine after SIGTERM
SHUTDOWN_TIMEOUT = 20.0


#: the other commands of ``damon-exporter`` (exporter.cli dispatches them), one line each
#: in ``--help``
COMMANDS: tuple[tuple[str, str], ...] = (
    ("snapshot", "watch processes for a while and print working set, cold memory, heatmap"),
    ("check-config", "validate a config file: exit 0, or 2 and a FILE:LINE: line per problem"),
)

USAGE = """damon-exporter [flags]
       damon-exporter snapshot (--pid PID ... | --comm NAME) [flags]
       damon-exporter check-config FILE"""


def _epilog(top: int) -> str:
    width = max(len(name) for name, _ in COMMANDS)
    lines = ["commands:"] + [f"  {name:<{width}}  {what}" for name, what in COMMANDS]
    lines += [
        "'damon-exporter COMMAND --help' shows a command's own flags.",
        "",
        f"Without --config.file the exporter runs its embedded default config: the {top} programs",
        "with the most resident memory, one target each. To choose what to watch, write a config:",
        "config.example.yaml documents every key, the README's Configuration section explains them.",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from exporter.config.default import DEFAULT_TOP_PROGRAMS as top

    p = _Parser(
        prog="damon-exporter",
        usage=USAGE,
        description="Prometheus exporter of memory access patterns (DAMON's region sampling, in user space or through the kernel's own DAMON).",
        epilog=_epilog(top),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # node_exporter-style name; --config (the original spelling) stays as an alias
    p.add_argument("--config.file", "--config", dest="config", metavar="FILE", help=f"config file (check one with 'damon-exporter check-config FILE'); without it, the embedded default config: the {top} programs with the most resident memory; --config is an alias")
    p.add_argument("--web.listen-address", dest="listen", default=DEFAULT_LISTEN, metavar="[HOST]:PORT", help=f"address to serve on (default {DEFAULT_LISTEN})")
    p.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics", metavar="PATH", help="path of the metrics (default /metrics)")
    p.add_argument("--web.config.file", dest="web_config", metavar="FILE", help="exporter-toolkit web config: TLS and basic auth")
    p.add_argument("--web.disable-exporter-metrics", dest="disable_exporter_metrics", action="store_true", help="leave out the exporter's own process_* metrics (CPU, memory, file descriptors of this process); damon_* self-metrics stay")
    p.add_argument("--web.max-requests", dest="max_requests", type=int, default=40, metavar="N", help="requests served at once; past it the answer is 503 (default 40; 0 = no limit but --web.max-connections)")
    p.add_argument("--web.max-connections", dest="max_connections", type=int, default=8192, metavar="N", help="open connections; past it the longest-waiting idle or incomplete one is closed (default 8192, lowered to fit the open-file limit)")
    p.add_argument("--config.auto-reload-interval", dest="reload_interval", default="5s", metavar="DURATION", help="how often to check the config file for changes; 0 disables (default 5s; SIGHUP always reloads)")
    p.add_argument("--path.procfs", dest="procfs", default="/proc", metavar="PATH", help="procfs mountpoint (default /proc; a container sees the host's processes through a host /proc mounted elsewhere)")
    p.add_argument("--path.sysfs", dest="sysfs", default="/sys", metavar="PATH", help="sysfs mountpoint: page_idle, kernel DAMON and cgroups are read below it (default /sys)")
    p.add_argument("--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"])
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    p.add_argument("--version", action="store_true", help="print the version and build facts and exit")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        from exporter.build import version_text

        sys.stdout.write(version_text("damon-exporter"))
        return 0
    from exporter.service.logsetup import setup_logging

    setup_logging(args.log_level, args.log_format)
    if args.config is not None and not args.config:
        # an empty value is a deployment mistake (an unset variable), not a wish for the default
        sys.stderr.write("damon-exporter: error: --config.file is empty (leave the flag out to run the embedded default config)\n")
        return 2
    if not args.telemetry_path.startswith("/") or args.telemetry_path in ("/", "/-/healthy", "/-/ready"):
        sys.stderr.write(f"damon-exporter: error: --web.telemetry-path {args.telemetry_path!r} must start with '/' and not be '/', '/-/healthy' or '/-/ready'\n")
        return 2

    from exporter.config import ConfigError, load_config
    from exporter.config.parser import parse_bounded_duration
    from exporter.model.durations import DurationError
    from exporter.web.config import WebConfig, WebConfigError, load_web_config
    from exporter.web.server import ListenAddressError, parse_listen_address

    try:
        reload_interval = parse_bounded_duration(args.reload_interval, "1h") if args.reload_interval not in ("0", "0s") else 0.0
    except DurationError as e:
        sys.stderr.write(f"damon-exporter: error: --config.auto-reload-interval: {e}\n")
        return 2
    try:
        address = parse_listen_address(args.listen)
    except ListenAddressError as e:
        sys.stderr.write(f"damon-exporter: error: {e}\n")
        return 2
    if args.config is None:
        from exporter.config.default import default_config

        config = default_config()
    else:
        try:
            config = load_config(args.config)
        except ConfigError as e:
            for line in e.lines:
                sys.stderr.write(line + "\n")
            return 2
    if args.max_requests < 0 or args.max_connections < 1 or args.max_requests > args.max_connections:
        sys.stderr.write(f"damon-exporter: error: want 0 <= --web.max-requests ({args.max_requests}) <= --web.max-connections ({args.max_connections}), and --web.max-connections >= 1\n")
        return 2
    web = WebConfig()
    if args.web_config:
        try:
            web = load_web_config(args.web_config)
        except WebConfigError as e:
            for line in e.lines:
                sys.stderr.write(line + "\n")
            return 2
    return run(config, args, address, web, reload_interval)


#: seconds the HTTP server gets to close its connections after SIGTERM (ExporterHTTPServer.shutdown)
SERVER_SHUTDOWN_TIMEOUT = 5.0


class Signals:
    """SIGTERM, SIGINT and SIGHUP, received on the main thread without doing anything there.

    A Python signal handler runs on the main thread between two bytecodes, possibly in the
    middle of whatever that thread was doing, lock acquisitions included: a handler that
    called ``Event.set()`` (which takes a non-reentrant lock) deadlocked the main thread
    when a second signal arrived inside the first one's ``set()`` (1,000 SIGHUPs in 2 ms,
    2 runs of 4). Here the handler only records the signal in a dict (one store, no lock),
    and ``signal.set_wakeup_fd`` has the C-level handler write a byte to a socket, which
    :meth:`wait` waits on; every action happens after the handler has returned.
    """

    NAMES = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        import socket

        self._seen: dict[int, bool] = {}
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        for signum in self.NAMES:
            signal.signal(signum, self._record)
        # a full socket drops the byte, harmlessly: the dict has the signal already
        signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)

    def _record(self, signum: int, _frame: object) -> None:
        self._seen[signum] = True

    def wait(self, timeout: float) -> set[int]:
        """The signals received since the last call, waiting up to ``timeout`` for one."""
        import select

        if not self._seen:
            select.select([self._r], [], [], timeout)
        try:
            while self._r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        return {signum for signum in self.NAMES if self._seen.pop(signum, False)}


def _exit_at_the_latest(seconds: float) -> None:
    """Past ``seconds`` from now the process ends, whatever is still running (a worker
    blocked in a write, an engine stuck in the kernel): SIGTERM is a promise to stop."""
    import os
    import time

    def guard() -> None:
        time.sleep(seconds)
        log.error("shutdown did not finish in time; exiting now", extra={"kv": {"after_seconds": seconds}})
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=guard, name="damon-exit-guard", daemon=True).start()


def engine_factory(procfs: str, sysfs: str) -> Callable[[str, Any], Any]:
    """How the sampler opens a backend, reading below ``--path.procfs`` and ``--path.sysfs``."""
    from exporter.engines.registry import create_engine

    return lambda name, skip: create_engine(name, proc_root=procfs, sys_root=sysfs, skip=skip)


def discoverer_factory(procfs: str, sysfs: str) -> Callable[[Any], Any]:
    """How the sampler finds targets: processes below ``--path.procfs``, cgroups below
    ``--path.sysfs``/fs/cgroup; never the exporter itself."""
    import os

    from exporter.discovery import Discoverer

    return lambda config: Discoverer(config, self_pid=os.getpid(), proc_root=procfs,
                                     cgroup_root=f"{sysfs.rstrip('/')}/fs/cgroup")


def run(
    config: "Config",
    args: argparse.Namespace,
    address: tuple[str, int],
    web: "WebConfig",
    reload_interval: float,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (0 on a clean stop)."""
    import time

    from exporter.config import ConfigError, load_config
    from exporter.metrics.collector import Exposition
    from exporter.service.reload import ConfigReloader
    from exporter.service.sampler import Sampler
    from exporter.service.state import ServiceState, StateBox
    from exporter.web.app import WebApp
    from exporter.web.server import Limits, start_server
    from exporter.web.source import WebConfigSource
    from exporter.web.status import WebStatus

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
            default_config=args.config is None,
        )
    )
    # the web config is re-checked per connection and request (as exporter-toolkit does)
    status = WebStatus()  # the web layer's own figures, published beside the sampler's
    source = WebConfigSource(args.web_config, web, status)
    exposition = Exposition(box, exporter_metrics=not args.disable_exporter_metrics, others=[status])
    app = WebApp(box, exposition, args.telemetry_path, source.auth)
    limits = Limits(max_requests=args.max_requests, max_connections=args.max_connections)
    try:
        server, http_thread = start_server(address, app, source.ssl_context if web.tls else None, limits, status)
    except OSError as e:
        log.error("cannot listen", extra={"kv": {"address": args.listen, "err": e.strerror or str(e)}})
        return 1
    sampler = Sampler(config, box, stop, engine_factory=engine_factory(args.procfs, args.sysfs),
                      discoverer_factory=discoverer_factory(args.procfs, args.sysfs))
    # without a file (the embedded default) SIGHUP still re-checks the web config
    reloader = ConfigReloader(args.config, box, sampler.apply_config, load_config, ConfigError, stop,
                              reload_interval if args.config is not None else 0.0)
    reloader.on_signal.append(lambda: source.check("signal"))

    signals = Signals()
    if args.config is None:
        from exporter.config.default import DEFAULT_TOP_PROGRAMS

        log.info(
            f"no --config.file given: running the embedded default config, the {DEFAULT_TOP_PROGRAMS} programs "
            "with the most resident memory, one target per program name, chosen again at every discovery; "
            "to choose what to watch, write a config (config.example.yaml documents every key, the landing "
            "page shows the default as a file) and pass --config.file FILE",
            extra={"kv": {"config": "embedded default"}},
        )
    sampler.start()
    reloader.start()
    host, port = server.server_address[:2]
    log.info(
        "listening",
        extra={"kv": {"address": f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}", "tls": web.tls is not None, "basic_auth": bool(web.users), "version": __version__}},
    )
    while True:
        got = signals.wait(1.0)
        if got & {signal.SIGTERM, signal.SIGINT}:
            log.info("stopping", extra={"kv": {"signal": "SIGTERM" if signal.SIGTERM in got else "SIGINT"}})
            break
        if signal.SIGHUP in got:
            reloader.request()
        if not http_thread.is_alive():  # a port that accepts and never answers is worse than none
            log.error("the HTTP server thread died; exiting so that the supervisor restarts the exporter")
            stop.set()
            sampler.join(timeout=SHUTDOWN_TIMEOUT)
            return 1
    stop.set()
    _exit_at_the_latest(SHUTDOWN_TIMEOUT + SERVER_SHUTDOWN_TIMEOUT + 1.0)
    server.shutdown()
    server.server_close()
    # long enough for an engine to finish its step and close: damon_sysfs waits in the kernel
    # for the end of an aggregation, then gives its kdamond back (turned off, nr_kdamonds 0)
    sampler.join(timeout=SHUTDOWN_TIMEOUT)
    reloader.request()  # wake it so it sees the stop event
    log.info("stopped")
    return 0

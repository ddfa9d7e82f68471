"""The HTTP(S) server: a ThreadingHTTPServer whose handlers only read published state.

TLS handshakes happen in the per-connection thread (never in the accept loop), so a slow
or hostile client cannot stall other scrapes. Request errors are logged at debug level as
one line, never as a traceback on stderr.
"""

from __future__ import annotations

import gzip
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder

from ..service.state import StateBox
from .auth import BasicAuth
from .landing import landing_page

log = logging.getLogger("exporter.web")

HANDSHAKE_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0


class ListenAddressError(ValueError):
    pass


def parse_listen_address(addr: str) -> tuple[str, int]:
    """``:9100``, ``0.0.0.0:9100``, ``[::1]:9100``, ``localhost:9100`` -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ListenAddressError(f"invalid --web.listen-address {addr!r}: want [HOST]:PORT, e.g. :10170 or 127.0.0.1:10170")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, ssl_context: ssl.SSLContext | None, app: "WebApp") -> None:
        host, port = address
        if not host:
            self.address_family = socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET
            host = "::" if self.address_family == socket.AF_INET6 else "0.0.0.0"
        elif ":" in host:
            self.address_family = socket.AF_INET6
        self.ssl_context = ssl_context
        self.app = app
        super().__init__((host, port), handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            try:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except OSError:
                pass
        super().server_bind()

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(REQUEST_TIMEOUT)
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(HANDSHAKE_TIMEOUT)
            request.do_handshake()
            request.settimeout(REQUEST_TIMEOUT)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        e = sys.exc_info()[1]
        log.debug("request failed", extra={"kv": {"client": client_address[0] if client_address else "", "err": f"{type(e).__name__}: {e}"}})


class WebApp:
    """What the handler needs: the state, the registry, paths and auth."""

    def __init__(self, box: StateBox, exposition: Any, telemetry_path: str, auth: BasicAuth) -> None:
        self.box = box
        self.exposition = exposition  # has render(encoder, content_type) -> bytes
        self.telemetry_path = telemetry_path
        self.auth = auth


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "damon-exporter"
    server: ExporterHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug(format % args)

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        app = self.server.app
        if app.auth.enabled and not app.auth.check_header(self.headers.get("Authorization")):
            self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8", {"WWW-Authenticate": 'Basic realm="damon-exporter"'})
            return
        path = self.path.split("?", 1)[0]
        state = app.box.get()
        if path == app.telemetry_path:
            encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
            body = app.exposition.render(encoder, ctype)
            extra = {}
            if "gzip" in self.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body, compresslevel=1)
                extra["Content-Encoding"] = "gzip"
            self._send(200, body, ctype, extra)
        elif path == "/":
            self._send(200, landing_page(state, app.telemetry_path), "text/html; charset=utf-8")
        elif path == "/-/healthy":
            self._send(200, b"Healthy.\n", "text/plain; charset=utf-8")
        elif path == "/-/ready":
            if state.ready:
                self._send(200, b"Ready.\n", "text/plain; charset=utf-8")
            else:
                self._send(503, b"Not ready: waiting for the first aggregation.\n", "text/plain; charset=utf-8")
        else:
            self._send(404, b"Not found.\n", "text/plain; charset=utf-8")


def start_server(address: tuple[str, int], app: WebApp, ssl_context: ssl.SSLContext | None) -> tuple[ExporterHTTPServer, threading.Thread]:
    """Bind and serve in a background thread; raises OSError when the address is taken."""
    server = ExporterHTTPServer(address, Handler, ssl_context, app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="damon-http", daemon=True)
    thread.start()
    return server, thread

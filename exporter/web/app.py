"""What a request gets: the routes, authentication, the exposition and its encoding.

The transport (:mod:`exporter.web.server`) turns bytes into a :class:`~exporter.web.protocol.Request`
and hands it here on a worker thread; nothing here knows sockets, TLS or deadlines.
"""

from __future__ import annotations

import gzip
from typing import Any, Callable

from prometheus_client.exposition import choose_encoder

from exporter.service.state import StateBox
from exporter.web.auth import BasicAuth
from exporter.web.landing import landing_page
from exporter.web.protocol import Request, accepts_gzip


class WebApp:
    """What a request needs: the state, the registry, the telemetry path and the users.

    ``auth`` is a callable returning the :class:`BasicAuth` in force, asked per request
    (a plain BasicAuth is accepted too, for a fixed set of users)."""

    def __init__(self, box: StateBox, exposition: Any, telemetry_path: str, auth: BasicAuth | Callable[[], BasicAuth]) -> None:
        self.box = box
        self.exposition = exposition  # has render(encoder, content_type) -> bytes
        self.telemetry_path = telemetry_path
        self.auth: Callable[[], BasicAuth] = (lambda a=auth: a) if isinstance(auth, BasicAuth) else auth

    def handle(self, req: Request, auth: BasicAuth) -> tuple[int, list[tuple[str, str]], bytes]:
        text = "text/plain; charset=utf-8"
        if req.method not in ("GET", "HEAD"):
            return 405, [("Content-Type", text), ("Allow", "GET, HEAD")], b"Method not allowed.\n"
        if auth.enabled and not auth.check_header(req.headers.get("authorization")):
            return 401, [("Content-Type", text), ("WWW-Authenticate", 'Basic realm="damon-exporter"')], b"Unauthorized\n"
        path = req.path
        state = self.box.get()
        if path == self.telemetry_path:
            encoder, ctype = choose_encoder(req.header("accept"))
            body = self.exposition.render(encoder, ctype)
            headers = [("Content-Type", ctype), ("Vary", "Accept-Encoding")]
            if accepts_gzip(req.header("accept-encoding")):
                body = gzip.compress(body, compresslevel=1)
                headers.append(("Content-Encoding", "gzip"))
            return 200, headers, body
        if path == "/":
            return 200, [("Content-Type", "text/html; charset=utf-8")], landing_page(state, self.telemetry_path)
        if path == "/-/healthy":
            return 200, [("Content-Type", text)], b"Healthy.\n"
        if path == "/-/ready":
            if state.ready:
                return 200, [("Content-Type", text)], b"Ready.\n"
            return 503, [("Content-Type", text)], b"Not ready: waiting for the first aggregation.\n"
        return 404, [("Content-Type", text)], b"Not found.\n"

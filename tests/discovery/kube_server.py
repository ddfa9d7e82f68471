"""A stand-in kubelet / API server: HTTPS with the test CA, bearer-token auth, recorded bodies.

``mode`` chooses how it answers the next requests: ``ok`` (the recorded PodList), ``forbidden``
(403, as without the RBAC), ``garbage`` (200 and not JSON), ``huge`` (200 and an endless
stream, no Content-Length), ``announced`` (a Content-Length of 1 GiB), ``slow`` (headers, then
one byte now and then, forever). A closed port is the "down" case.
"""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from pathlib import Path

DATA = Path(__file__).parent / "data"
TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.test-token"


class KubeServer:
    def __init__(self, certs, body: bytes, *, path: str = "/pods", token: str = TOKEN) -> None:
        self.body = body
        self.path = path
        self.token = token
        self.mode = "ok"
        self.requests: list[tuple[str, str]] = []  # (path, Authorization header)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Authorization", "")))
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    return self._plain(401, b'{"kind":"Status","code":401,"reason":"Unauthorized"}')
                if self.path != server.path:
                    return self._plain(404, b"404 page not found\n")
                mode = server.mode
                if mode == "forbidden":
                    return self._plain(403, b'{"kind":"Status","apiVersion":"v1","status":"Failure","message":"nodes \\"node-a\\" is forbidden: User \\"system:serviceaccount:monitoring:damon-exporter\\" cannot get resource \\"nodes/proxy\\"","reason":"Forbidden","code":403}')
                if mode == "garbage":
                    return self._plain(200, b"<html><body>502 Bad Gateway</body></html>" + bytes(range(256)))
                if mode == "announced":
                    self.send_response(200)
                    self.send_header("Content-Length", str(1 << 30))
                    self.end_headers()
                    return
                if mode in ("huge", "slow"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    chunk = b'{"kind":"PodList","items":[' + b" " * 65536 if mode == "huge" else b" "
                    try:
                        while True:  # until the client hangs up
                            self.wfile.write(chunk)
                            self.wfile.flush()
                            if mode == "slow":
                                time.sleep(0.05)
                    except OSError:
                        return
                return self._plain(200, server.body, "application/json")

            def _plain(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs.server_crt, certs.server_key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

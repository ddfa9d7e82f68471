"""One bounded, authenticated HTTPS GET: how pod metadata is fetched.

The official ``kubernetes`` client is not used: its wheel alone is 7.5 MB and it pulls in
requests, urllib3, google-auth, requests-oauthlib, websocket-client and more; it reads a
whole response into memory with no size limit; and the kubelet's ``/pods`` is not an API
resource it models. One GET with a bearer token needs none of that, but it must be bounded,
since the exporter shares a 128 MiB container with its samples: the body is read in chunks
up to ``max_bytes`` and the whole request (connect, TLS, headers, body) up to one deadline,
so a server that drips one byte a second cannot hold the refresher either.

Every failure is a :class:`FetchError` whose ``reason`` is one of :data:`FETCH_ERRORS`
(``damon_kube_metadata_errors_total{reason}``).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

#: why a fetch failed, for the errors counter's ``reason`` label and the log
FETCH_ERRORS: dict[str, str] = {
    "credentials": "the ServiceAccount token or CA file could not be read, or the node's name/IP is unknown",
    "unreachable": "the connection was refused or failed",
    "tls": "the TLS handshake failed (e.g. the serving certificate is not signed by the CA)",
    "timeout": "no complete answer within the timeout",
    "unauthorized": "HTTP 401: the token was refused",
    "forbidden": "HTTP 403: the ServiceAccount lacks the RBAC permission",
    "http": "another HTTP status than 200",
    "too_large": "the answer exceeded max_response_size",
    "invalid": "the answer was not a PodList",
}

#: the longest token file read (bound ServiceAccount tokens are about 1 KiB)
MAX_TOKEN_BYTES = 64 << 10
_CHUNK = 64 << 10


class FetchError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        assert reason in FETCH_ERRORS, reason
        self.reason = reason
        super().__init__(detail)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to GET: ``url``, the CA to check the server with (None with
    ``insecure``: no verification at all, for kubelets with self-signed serving certs)."""

    url: str
    token_file: str
    ca_file: str | None
    insecure: bool = False


def read_token(path: str) -> str:
    """The ServiceAccount token, read at every fetch: the kubelet rotates it (hourly)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as e:
        raise FetchError("credentials", f"cannot read token {path}: {e.strerror or e}") from None
    token = data.decode("ascii", "replace").strip()
    if len(data) > MAX_TOKEN_BYTES or not token or any(c in token for c in "\r\n"):
        raise FetchError("credentials", f"token file {path} does not hold one token")
    return token


def _context(ep: Endpoint) -> ssl.SSLContext:
    if ep.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        return ssl.create_default_context(cafile=ep.ca_file)
    except (OSError, ssl.SSLError) as e:
        raise FetchError("credentials", f"cannot load CA file {ep.ca_file}: {e}") from None


def fetch(ep: Endpoint, *, timeout: float, max_bytes: int) -> bytes:
    """The body of a 200 answer to ``GET ep.url``; FetchError otherwise."""
    token = read_token(ep.token_file)
    ctx = _context(ep)
    parts = urlsplit(ep.url)
    if parts.scheme != "https" or not parts.hostname:
        raise FetchError("credentials", f"not an https URL: {ep.url[:200]!r}")
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout, context=ctx)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", target or "/", headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        _rearm(conn, deadline)
        resp = conn.getresponse()
        if resp.status != 200:
            reason = {401: "unauthorized", 403: "forbidden"}.get(resp.status, "http")
            raise FetchError(reason, f"HTTP {resp.status} {resp.reason[:80]}")
        length = resp.getheader("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise FetchError("too_large", f"{length} bytes announced, more than {max_bytes}")
        body = bytearray()
        while True:
            _rearm(conn, deadline)
            chunk = resp.read1(min(_CHUNK, max_bytes + 1 - len(body)))  # one recv: the deadline holds
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > max_bytes:
                raise FetchError("too_large", f"more than {max_bytes} bytes")
    except FetchError:
        raise
    except ssl.SSLError as e:
        raise FetchError("tls", f"{type(e).__name__}: {e}"[:300]) from None
    except (socket.timeout, TimeoutError):
        raise FetchError("timeout", f"no complete answer within {timeout:g}s") from None
    except (OSError, http.client.HTTPException) as e:
        raise FetchError("unreachable", f"{type(e).__name__}: {e}"[:300]) from None
    finally:
        conn.close()


def _rearm(conn: http.client.HTTPSConnection, deadline: float) -> None:
    """Give the next socket operation only the time left until ``deadline``."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    if conn.sock is not None:
        conn.sock.settimeout(left)

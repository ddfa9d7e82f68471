"""The slice of HTTP/1.1 the exporter speaks: parse one request head, negotiate gzip,
format one response. Pure functions over bytes, so the server's event loop stays small.

Only GET and HEAD are served. A request body is read and thrown away (up to
``max_body``) so that it can never be parsed as the next request on a keep-alive
connection; chunked request bodies are refused with 501 and the connection closed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import formatdate

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class ProtocolError(Exception):
    """A request we answer with ``status`` and then close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names; repeats joined by ", "

    @property
    def path(self) -> str:
        """The path, also of an absolute-form target (``http://host:port/metrics``), which
        RFC 9112 says a server must accept."""
        target = self.target
        if target[:7].lower() == "http://" or target[:8].lower() == "https://":
            rest = target.split("://", 1)[1]
            target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        return target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.1":
            return "close" not in tokens
        return "keep-alive" in tokens

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


_LENGTH = re.compile(r"[0-9]{1,18}")


def parse_head(buf: bytes | bytearray, max_head: int, max_body: int) -> tuple[Request, int] | None:
    """The request at the start of ``buf`` and how many bytes it spans, body included;
    None when more bytes are needed; ProtocolError for what we refuse."""
    # the head ends at an empty line; RFC 9112 lets a server take a bare LF for CRLF, and a
    # client that sends them must get an answer, not the 10 s read deadline
    crlf = buf.find(b"\r\n\r\n", 0, max_head + 4)
    lf = buf.find(b"\n\n", 0, max_head + 2)
    if crlf < 0 and lf < 0:
        if len(buf) > max_head:
            raise ProtocolError(431, f"request head larger than {max_head} bytes")
        return None
    if lf >= 0 and (crlf < 0 or lf < crlf):
        end, sep_len = lf, 2
    else:
        end, sep_len = crlf, 4
    lines = [line[:-1] if line.endswith(b"\r") else line for line in bytes(buf[:end]).split(b"\n")]
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1] or not _VERSION.fullmatch(parts[2]):
        raise ProtocolError(400, "malformed request line")
    values_of: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):  # also refuses obsolete line folding
            raise ProtocolError(400, "malformed header line")
        key = name.decode("ascii").lower()
        values_of.setdefault(key, []).append(value.strip(b" \t").decode("latin-1"))
    # repeats joined once (joining as they come was quadratic in their number)
    headers = {k: ", ".join(v) for k, v in values_of.items()}
    if parts[2] == b"HTTP/1.1" and "host" not in headers:
        raise ProtocolError(400, "HTTP/1.1 request without Host")
    if "transfer-encoding" in headers:
        raise ProtocolError(501, "request bodies with Transfer-Encoding are not supported")
    length = 0
    if "content-length" in headers:
        values = {v.strip() for v in headers["content-length"].split(",")}
        # ASCII digits only, and few of them: str.isdigit() accepts '²', which int()
        # refuses, and a 5,000-digit number is no length either
        if len(values) != 1 or not _LENGTH.fullmatch(next(iter(values))):
            raise ProtocolError(400, "bad Content-Length")
        length = int(next(iter(values)))
        if length > max_body:
            raise ProtocolError(413, f"request body larger than {max_body} bytes")
    total = end + sep_len + length
    if len(buf) < total:
        return None
    req = Request(parts[0].decode("ascii"), parts[1].decode("latin-1"), parts[2].decode("ascii"), headers)
    return req, total


_EXPECT_CONTINUE = re.compile(rb"^expect:[ \t]*100-continue[ \t]*\r?$", re.I | re.M)


def wants_continue(buf: bytes | bytearray) -> bool:
    """Whether ``buf`` holds a complete head that asks for ``100 Continue`` (its body not
    all here yet): a client that sends ``Expect: 100-continue`` waits for it before the body."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        end = buf.find(b"\n\n")
    return end >= 0 and _EXPECT_CONTINUE.search(bytes(buf[:end])) is not None


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value lets us send gzip (RFC 9110 12.5.3): gzip (or
    its alias x-gzip) with q > 0, or ``*`` with q > 0 when gzip is not named at all.
    ``gzip;q=0`` means "not gzip"; a malformed q-value counts as 0."""
    named: float | None = None
    star: float | None = None
    for item in accept_encoding.split(","):
        coding, *params = (p.strip() for p in item.split(";"))
        coding = coding.lower()
        q = 1.0
        for p in params:
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        if coding in ("gzip", "x-gzip"):
            named = q if named is None else max(named, q)
        elif coding == "*":
            star = q
    if named is not None:
        return named > 0
    return star is not None and star > 0


def response_bytes(status: int, headers: list[tuple[str, str]], body: bytes, *, head_only: bool = False, close: bool = False) -> bytes:
    """A complete HTTP/1.1 response."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", "Server: damon-exporter", f"Date: {formatdate(usegmt=True)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def error_response(status: int, message: str) -> bytes:
    """A small plain-text response that closes the connection (sent by the event loop)."""
    return response_bytes(status, [("Content-Type", "text/plain; charset=utf-8")], f"{message}\n".encode(), close=True)

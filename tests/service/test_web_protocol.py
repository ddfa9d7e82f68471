"""Accept-Encoding negotiation and request parsing (exporter.web.protocol)."""

from __future__ import annotations

import pytest

from exporter.web.protocol import ProtocolError, accepts_gzip, parse_head


@pytest.mark.parametrize(
    "header, gzip",
    [
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, gzip;q=1.0, *;q=0.5", True),
        ("gzip;q=0.001", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("gzip;q=0, *", False),  # named beats the wildcard
        ("*", True),
        ("*;q=0", False),
        ("identity", False),
        ("", False),
        ("deflate", False),
        ("gzip;q=bogus", False),
        ("gzip;q=2", False),
        ("br;q=1, gzip;q=0", False),
    ],
)
def test_accepts_gzip(header, gzip):
    assert accepts_gzip(header) is gzip


def test_parse_head_with_body_and_pipelining():
    buf = b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    req, n = parse_head(buf, 16384, 65536)
    assert (req.method, req.path, req.keep_alive, n) == ("GET", "/a", True, len(buf) - len(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"))
    req, _ = parse_head(buf[n:], 16384, 65536)
    assert req.path == "/b"
    assert parse_head(b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel", 16384, 65536) is None  # body not all here yet


@pytest.mark.parametrize(
    "buf, status",
    [
        (b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n", 400),
        (b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /a HTTP/2.0\r\n\r\n", 400),
        (b"GET /a HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (b"GET /a HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000, 431),
    ],
)
def test_parse_head_refusals(buf, status):
    with pytest.raises(ProtocolError) as e:
        parse_head(buf, 16384, 65536)
    assert e.value.status == status


def test_http10_keep_alive_only_when_asked():
    req, _ = parse_head(b"GET / HTTP/1.0\r\n\r\n", 16384, 65536)
    assert not req.keep_alive
    req, _ = parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 16384, 65536)
    assert not req.keep_alive


@pytest.mark.parametrize("value", [b"\xb2", "\u0662".encode("latin-1", "replace"), b"9" * 5000, b"+5", b" 5 5", b"0x10"])
def test_content_length_must_be_a_few_ascii_digits(value):
    """'\\xb2' decodes (latin-1) to '²', which str.isdigit() accepts and int() refuses: it
    used to raise ValueError out of parse_head and kill the server's event loop."""
    with pytest.raises(ProtocolError) as e:
        parse_head(b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\n", 16384, 65536)
    assert e.value.status == 400


def test_http11_without_host_is_400_and_http10_needs_none():
    with pytest.raises(ProtocolError) as e:
        parse_head(b"GET /a HTTP/1.1\r\n\r\n", 16384, 65536)
    assert (e.value.status, str(e.value)) == (400, "HTTP/1.1 request without Host")
    assert parse_head(b"GET /a HTTP/1.0\r\n\r\n", 16384, 65536) is not None


def test_repeated_headers_are_joined_in_linear_time():
    head = b"GET /a HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 3000 + b"\r\n"
    req, _ = parse_head(head, 1 << 20, 65536)
    assert req.header("x") == ", ".join(["y"] * 3000)


def test_absolute_form_targets_are_served_as_their_path():
    req, _ = parse_head(b"GET http://node:10170/metrics?x=1 HTTP/1.1\r\nHost: node\r\n\r\n", 16384, 65536)
    assert req.path == "/metrics"
    req, _ = parse_head(b"GET HTTPS://node:10170 HTTP/1.1\r\nHost: node\r\n\r\n", 16384, 65536)
    assert req.path == "/"


def test_bare_lf_heads_are_parsed():
    req, n = parse_head(b"GET /metrics HTTP/1.1\nHost: x\nAccept: text/plain\n\nGET /b", 16384, 65536)
    assert (req.path, req.header("host"), req.header("accept"), n) == ("/metrics", "x", "text/plain", 50)
    req, _ = parse_head(b"GET /a HTTP/1.1\r\nHost: x\n\n", 16384, 65536)
    assert req.header("host") == "x"

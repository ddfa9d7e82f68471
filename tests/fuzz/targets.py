"""One fuzz target per parser that reads what someone else wrote: the HTTP head and the
Authorization header (any client), the config and the web config (an operator, or whoever
can write the file), and the /proc files (the kernel, with names any local user chooses).

A target takes bytes and returns normally for every input: it may refuse the input only
the way the parser documents (ProtocolError, ConfigError, ValueError for a malformed stat
line...); any other exception is a finding. Each target also checks what must hold of an
accepted input, so that a parser returning nonsense is a finding too.
"""

from __future__ import annotations

import base64
from typing import Callable

import bcrypt

from exporter.config import ConfigError, parse_config
from exporter.discovery.cgroups import parse_proc_cgroup
from exporter.procfs.parsers import image_of, iter_smaps, parse_file_maps, parse_maps, parse_stat
from exporter.web.auth import BasicAuth
from exporter.web.protocol import ProtocolError, parse_head

MAX_HEAD, MAX_BODY = 16 << 10, 64 << 10
#: one configured user (cost 4: a wrong guess costs ~1 ms, so a run checks many inputs)
_AUTH = BasicAuth({"alice": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))})


def http_head(data: bytes) -> None:
    try:
        parsed = parse_head(bytearray(data), MAX_HEAD, MAX_BODY)
    except ProtocolError as e:
        assert 400 <= e.status < 600, e.status
        return
    if parsed is not None:
        req, size = parsed
        assert 0 < size <= len(data)
        assert isinstance(req.path, str) and req.method and req.version.startswith("HTTP/")
        assert all(k == k.lower() for k in req.headers)


def auth_header(data: bytes) -> None:
    # a header value arrives as Latin-1 text: every byte is one character
    for header in (data.decode("latin-1"), "Basic " + data.decode("latin-1"),
                   "Basic " + base64.b64encode(data).decode()):
        cred = BasicAuth.credentials(header)
        assert cred is None or (isinstance(cred[0], str) and isinstance(cred[1], str))
        _AUTH.needs_check(header)
        if cred is not None and cred[0] != "alice":
            continue  # an unknown user costs a bcrypt check: the parsing is what is fuzzed
        assert _AUTH.check_header(header) in (True, False)


def config(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # the file reader refuses it before the parser (tested with the reader)
    try:
        cfg = parse_config(text, "fuzz.yaml")
    except ConfigError as e:
        assert e.lines and all(line.startswith("fuzz.yaml:") for line in e.lines), e.lines
        return
    assert cfg.targets


def proc_stat(data: bytes) -> None:
    try:
        st = parse_stat(data)
    except ValueError:
        return
    assert isinstance(st.start_time, int) and st.rss_pages >= 0
    assert isinstance(image_of(st), int)


def proc_smaps(data: bytes) -> None:
    cut = len(data) // 2  # the same text in two reads must parse as in one
    whole = iter_smaps([data])
    assert iter_smaps([data[:cut], data[cut:]]) == whole


def proc_maps(data: bytes) -> None:
    # the kernel writes the numbers (only names are anyone's): parsed, never validated
    assert all(isinstance(a, int) and isinstance(b, int) for a, b in parse_maps(data))
    assert all(inode > 0 and all(isinstance(x, int) for x in (a, b, dev, off))
               for a, b, dev, inode, off in parse_file_maps(data))


def proc_cgroup(data: bytes) -> None:
    parse_proc_cgroup(data.decode("utf-8", "backslashreplace"))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "http_head": http_head,
    "auth_header": auth_header,
    "config": config,
    "proc_stat": proc_stat,
    "proc_smaps": proc_smaps,
    "proc_maps": proc_maps,
    "proc_cgroup": proc_cgroup,
}

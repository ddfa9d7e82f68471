"""Issue 30: the third round of attacks on a running exporter, as a hostile client, local
user and operator would make them. Each test runs the real exporter as a subprocess and
talks to it over real sockets (the exec race, finding 1, is in test_exec_race.py).
"""

from __future__ import annotations


import bcrypt

from tests.support.exporter import comm_target, fast_config

from .test_hardening import raw_exchange

CONFIG = fast_config(comm_target("a", "no-such-comm"))

#: Authorization values that are not credentials: each must be a 401, never a dropped
#: connection, and must give back the request's place (the first one held it for good)
MALFORMED_AUTH = [
    b"Basic \xe9",  # a non-ASCII byte: b64decode raised a plain ValueError
    b"Basic YWxp\xff2U6eA==",
    b"Basic !!!!",  # not base64
    b"Basic YWxpY2U=",  # "alice": no colon
    b"Basic " + b"/w==",  # one byte 0xff: not UTF-8
    b"Basic",
    b"Basic " + b"A" * 10000,
    b"Bearer abc",
]


def test_malformed_basic_credentials_are_401_and_never_lock_the_endpoints(exporter, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  alice: '{bcrypt.hashpw(b's3cret', bcrypt.gensalt(rounds=4)).decode()}'\n")
    e = exporter(CONFIG, extra=["--web.config.file", str(web), "--web.max-requests", "40"], auth=("alice", "s3cret"))
    e.wait_ready()
    statuses = []
    for i in range(40):  # as many as --web.max-requests: each used to keep its place for good
        value = MALFORMED_AUTH[i % len(MALFORMED_AUTH)]
        answer = raw_exchange(e.port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\nConnection: close\r\n\r\n")
        statuses.append(answer.split(b"\r\n", 1)[0])
    assert statuses == [b"HTTP/1.1 401 Unauthorized"] * 40
    assert e.request("/metrics").status == 200
    assert e.request("/-/healthy").status == 200
    assert "Traceback" not in e.logs()


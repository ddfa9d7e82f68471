"""--web.config.file parsing, TLS contexts and basic auth, without a server."""

from __future__ import annotations

import base64
import ssl

import bcrypt
import pytest

from exporter.web.auth import BasicAuth
from exporter.web.config import WebConfigError, load_web_config, make_ssl_context

from .certs import make_certs
from tests.support.exporter import run_exporter


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def errors_of(path) -> list[str]:
    with pytest.raises(WebConfigError) as e:
        load_web_config(str(path))
    return e.value.lines


def test_unknown_keys_name_file_line_and_key(tmp_path, certs):
    p = tmp_path / "web.yml"
    p.write_text(f"tls_server_config:\n  cert_file: {certs.server_crt}\n  key_file: {certs.server_key}\n  cipher_suites: [x]\nhttp_server_config: {{}}\n")
    assert errors_of(p) == [
        f"{p}:4: tls_server_config.cipher_suites: unknown key (supported: cert_file, key_file, client_ca_file, client_auth_type, min_version, max_version)",
        f"{p}:5: http_server_config: unknown key (supported: tls_server_config, basic_auth_users)",
    ]


def test_bad_values(tmp_path, certs):
    p = tmp_path / "web.yml"
    p.write_text(
        "tls_server_config:\n"
        f"  cert_file: {certs.server_crt}\n"
        "  key_file: missing.key\n"
        "  client_auth_type: Sometimes\n"
        "  min_version: TLS99\n"
        "basic_auth_users:\n"
        "  alice: hunter2\n"
    )
    assert errors_of(p) == [
        f"{p}:3: tls_server_config.key_file: cannot read {tmp_path}/missing.key",
        f"{p}:4: tls_server_config.client_auth_type: unknown value 'Sometimes' (want one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)",
        f"{p}:5: tls_server_config.min_version: unknown TLS version 'TLS99' (want one of TLS10, TLS11, TLS12, TLS13)",
        f"{p}:7: basic_auth_users.alice: must be a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters), not a plain password",
    ]


def test_verify_needs_a_ca_and_require_any_is_refused(tmp_path, certs):
    p = tmp_path / "web.yml"
    p.write_text(f"tls_server_config:\n  cert_file: {certs.server_crt}\n  key_file: {certs.server_key}\n  client_auth_type: RequireAndVerifyClientCert\n")
    assert errors_of(p) == [f"{p}:2: tls_server_config.client_ca_file: required with client_auth_type RequireAndVerifyClientCert"]
    p.write_text(f"tls_server_config:\n  cert_file: {certs.server_crt}\n  key_file: {certs.server_key}\n  client_auth_type: RequireAnyClientCert\n")
    assert errors_of(p)[0].startswith(f"{p}:4: tls_server_config.client_auth_type: RequireAnyClientCert is not supported")


def test_yaml_syntax_error_and_missing_file(tmp_path):
    p = tmp_path / "web.yml"
    p.write_text("basic_auth_users:\n  a: [\n")
    assert errors_of(p) == [f"{p}:3: YAML syntax error: expected the node content, but found '<stream end>' (while parsing a flow node)"]
    assert errors_of(tmp_path / "nope.yml") == [f"{tmp_path}/nope.yml: cannot read: No such file or directory"]


def test_good_config_relative_paths_and_context(tmp_path, certs):
    p = certs.dir / "web.yml"
    p.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n  min_version: TLS13\n")
    cfg = load_web_config(str(p))
    assert cfg.tls is not None
    assert cfg.tls.cert_file == str(certs.server_crt)
    assert cfg.tls.client_auth_type == "RequireAndVerifyClientCert"  # default once a CA is given
    ctx = make_ssl_context(cfg.tls)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    assert load_web_config(str(empty)).tls is None and load_web_config(str(empty)).users == {}


def test_basic_auth_checks_and_caches_only_successes():
    h = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
    auth = BasicAuth({"alice": h})
    hdr = lambda u, p: "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()  # noqa: E731
    assert auth.check_header(hdr("alice", "s3cret"))
    assert len(auth._ok) == 1
    assert auth.check_header(hdr("alice", "s3cret"))  # served from the cache
    assert not auth.check_header(hdr("alice", "wrong"))
    assert not auth.check_header(hdr("bob", "s3cret"))
    assert len(auth._ok) == 1
    assert not auth.check_header(None)
    assert not auth.check_header("Bearer xyz")
    assert not auth.check_header("Basic !!!notbase64")
    assert not auth.check_header("Basic " + base64.b64encode(b"no-colon").decode())
    assert not BasicAuth({}).enabled


def _hdr(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_passwords_over_72_bytes_are_refused_alike_for_known_and_unknown_users():
    h = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
    auth = BasicAuth({"alice": h})
    long_pw = "x" * 100
    assert auth.check_header(_hdr("alice", long_pw)) is False
    assert auth.check_header(_hdr("nobody", long_pw)) is False  # raised ValueError before
    # bcrypt's input is 72 bytes: a longer password is compared on its first 72, as Go does
    pw72 = "p" * 72
    auth = BasicAuth({"bob": bcrypt.hashpw(pw72.encode(), bcrypt.gensalt(rounds=4))})
    assert auth.check_header(_hdr("bob", pw72))
    assert auth.check_header(_hdr("bob", pw72 + "tail"))
    assert not auth.check_header(_hdr("bob", pw72[:71]))


def test_unknown_users_pay_the_cost_of_a_configured_user(monkeypatch):
    """Which bcrypt cost each check runs, recorded around the real bcrypt.checkpw."""
    users = {
        "fast": bcrypt.hashpw(b"a", bcrypt.gensalt(rounds=4)),
        "slow": bcrypt.hashpw(b"b", bcrypt.gensalt(rounds=6)),
    }
    auth = BasicAuth(users)
    costs: list[int] = []
    real = bcrypt.checkpw

    def recording(pw: bytes, hashed: bytes) -> bool:
        costs.append(int(hashed[4:6]))
        return real(pw, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording)
    names = [f"user{i}" for i in range(64)]
    for name in names:
        assert not auth.check(name, "guess")
    assert set(costs) == {4, 6}  # never the old fixed cost 10
    assert 16 <= costs.count(4) <= 48  # unknown names split like the configured users (1:1)
    # the same name always costs the same, and a fresh BasicAuth with the same users agrees
    again = BasicAuth(users)
    assert [int(auth.dummy_for(n)[4:6]) for n in names] == costs
    assert [int(again.dummy_for(n)[4:6]) for n in names] == costs
    # a known user's wrong password runs that user's cost
    costs.clear()
    assert not auth.check("slow", "wrong") and not auth.check("fast", "wrong")
    assert costs == [6, 4]


def test_bcrypt_hash_validation_and_duplicate_blocks(tmp_path):
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    p = tmp_path / "web.yml"
    p.write_text(
        "basic_auth_users:\n"
        f"  ok: '{good}'\n"
        f"  bad_salt: '{good[:7]}!{good[8:]}'\n"
        f"  cost99: '{good[:4]}99{good[6:]}'\n"
        f"  short: '{good[:-1]}'\n"
        f"  salt: '{good[:28]}z{good[29:]}'\n"
        f"  'a:b': '{good}'\n"
        "basic_auth_users:\n"
        f"  mallory: '{good}'\n"
    )
    assert errors_of(p) == [
        f"{p}:3: basic_auth_users.bad_salt: malformed bcrypt hash: want $2a$, $2b$ or $2y$, a two-digit cost, '$' and 53 characters of [./A-Za-z0-9]",
        f"{p}:4: basic_auth_users.cost99: malformed bcrypt hash: cost 99 is outside bcrypt's 4..31",
        f"{p}:5: basic_auth_users.short: malformed bcrypt hash: want $2a$, $2b$ or $2y$, a two-digit cost, '$' and 53 characters of [./A-Za-z0-9]",
        f"{p}:6: basic_auth_users.salt: malformed bcrypt hash: Invalid salt",
        f"{p}:7: basic_auth_users.a:b: a user name cannot contain ':' (basic auth splits user and password at the first one)",
        f"{p}:8: basic_auth_users: duplicate key (first at line 1)",
    ]


def test_tls_version_range_non_utf8_and_deep_nesting(tmp_path, certs):
    p = tmp_path / "web.yml"
    p.write_text(f"tls_server_config:\n  cert_file: {certs.server_crt}\n  key_file: {certs.server_key}\n  min_version: TLS13\n  max_version: TLS12\n")
    assert errors_of(p) == [f"{p}:5: tls_server_config.max_version: TLS12 is below min_version TLS13: no TLS version would be left to negotiate"]
    p.write_text(f"tls_server_config:\n  cert_file: {certs.server_crt}\n  key_file: {certs.server_key}\n  max_version: TLS11\n")
    assert errors_of(p) == [f"{p}:4: tls_server_config.max_version: TLS11 is below min_version TLS12 (the default): no TLS version would be left to negotiate"]
    p.write_bytes(b"basic_auth_users:\n  caf\xe9: x\n")
    assert errors_of(p) == [f"{p}:2: not UTF-8 text (byte 23)"]
    p.write_text("".join(" " * i + "a:\n" for i in range(500)))
    assert errors_of(p) == [f"{p}:64: YAML syntax error: nested deeper than 64 levels"]


def test_web_config_source_reloads_on_change_keeps_last_good_and_refuses_a_tls_switch(tmp_path, certs):
    from exporter.web.source import WebConfigSource
    from exporter.web.status import WebStatus

    status = WebStatus()
    p = tmp_path / "web.yml"
    h1 = bcrypt.hashpw(b"one", bcrypt.gensalt(rounds=4)).decode()
    p.write_text(f"basic_auth_users:\n  alice: '{h1}'\n")
    src = WebConfigSource(str(p), load_web_config(str(p)), status)
    first = src.auth()
    assert src.auth() is first  # unchanged files: nothing reloaded
    p.write_text(f"basic_auth_users:\n  alice: '{h1}'\n  bob: '{h1}'\n")
    assert set(src.auth().users) == {"alice", "bob"} and status.reload_successful
    p.write_text(f"tls_server_config:\n  cert_file: {certs.server_crt}\n  key_file: {certs.server_key}\n")
    assert set(src.auth().users) == {"alice", "bob"}  # the last good one
    assert not status.reload_successful
    assert src.current().ssl_context is None
    assert not src.check("signal")


def test_max_requests_and_connections_flags_are_checked(tmp_path):


    cfg = tmp_path / "c.yaml"
    cfg.write_text("targets:\n  - name: a\n    match: {comm: [x]}\n")
    r = run_exporter("--config", str(cfg), "--web.max-requests", "100", "--web.max-connections", "10")
    assert (r.returncode, r.stderr) == (2, "damon-exporter: error: want 0 <= --web.max-requests (100) <= --web.max-connections (10), and --web.max-connections >= 1\n")


def test_bcrypt_costs_in_other_digits_and_above_the_cap_are_refused(tmp_path):
    """'\u0661\u0662' are digits to Python's \\d and to int(), not to bcrypt: such a hash used
    to raise UnicodeEncodeError out of the loader (a traceback at start, a dead event loop
    while running). A cost above 14 makes every wrong password cost the server seconds."""
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    p = tmp_path / "web.yml"
    p.write_text("basic_auth_users:\n"
                 f"  arabic: '{good[:4]}\u0661\u0662{good[6:]}'\n"
                 f"  dear: '{good[:4]}15{good[6:]}'\n")
    assert errors_of(p) == [
        f"{p}:2: basic_auth_users.arabic: malformed bcrypt hash: want $2a$, $2b$ or $2y$, a two-digit cost, '$' and 53 characters of [./A-Za-z0-9]",
        f"{p}:3: basic_auth_users.dear: bcrypt cost 15 is above the maximum of 14: every wrong password would cost the server 2^15 rounds (use htpasswd -B -C 14 or lower)",
    ]


def test_a_fifo_in_place_of_a_config_is_refused_not_waited_on(tmp_path):
    import os

    from exporter.config.yamlfile import YAMLFileError, read_text

    fifo = tmp_path / "web.yml"
    os.mkfifo(fifo)
    with pytest.raises(YAMLFileError) as e:
        read_text(str(fifo))  # would block forever on open() or read()
    assert e.value.lines == [f"{fifo}: not a regular file; refusing to read it"]
    with pytest.raises(WebConfigError) as w:
        load_web_config(str(fifo))
    assert w.value.lines == [f"{fifo}: not a regular file; refusing to read it"]


def test_a_running_exporter_survives_fifos_in_place_of_both_configs(exporter, tmp_path):
    """The web config replaced by a FIFO used to freeze the event loop on the next
    connection; the main config replaced by one, the reload thread forever."""
    import os
    import signal

    from tests.support.exporter import fast_config

    h = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  alice: '{h}'\n")
    e = exporter(fast_config("  - name: a\n    match: {comm: [no-such-comm]}\n"), extra=["--web.config.file", str(web)])
    e.auth = ("alice", "pw")
    e.wait_ready()
    web.unlink()
    os.mkfifo(web)
    assert e.request("/-/healthy").status == 200  # a new connection re-checks the web config
    e.wait_for(lambda s: s.get("damon_web_config_last_reload_successful") == 0, what="the web config reload refused")
    assert e.request("/metrics").status == 200  # the last good users still in force
    cfg = e.config_path
    text = cfg.read_text()
    cfg.unlink()
    os.mkfifo(cfg)
    e.proc.send_signal(signal.SIGHUP)
    e.wait_for(lambda s: s.get("damon_config_last_reload_successful") == 0, what="the config reload refused")
    cfg.unlink()
    cfg.write_text(text)
    e.proc.send_signal(signal.SIGHUP)
    e.wait_for(lambda s: s.get("damon_config_last_reload_successful") == 1, what="the restored config reloaded")
    assert "not a regular file; refusing to read it" in e.logs()


def test_the_web_layer_publishes_its_own_figures_beside_the_samplers():
    """Data flows one way: the HTTP server's refusals and its config's reload status are its
    own collector in the registry, never written into the sampler's state."""
    from dataclasses import fields

    from prometheus_client.exposition import choose_encoder

    from exporter.metrics.collector import Exposition
    from exporter.service.state import ServiceState, StateBox
    from exporter.web.status import WebStatus

    assert not [f.name for f in fields(ServiceState) if f.name.startswith("web")]
    box = StateBox(ServiceState(version="t", backend="none"))
    status = WebStatus()
    exp = Exposition(box, exporter_metrics=False, others=[status])
    status.reject("timeout")
    status.reject("timeout")
    status.reloaded(False)
    text = exp.render(*choose_encoder("")).decode()
    assert 'damon_web_rejected_total{reason="timeout"} 2.0' in text
    assert 'damon_web_rejected_total{reason="auth_busy"} 0.0' in text
    assert "damon_web_config_last_reload_successful 0.0" in text
    assert exp.state._cache[0] is box.get()  # the sampler's families were not rebuilt for it

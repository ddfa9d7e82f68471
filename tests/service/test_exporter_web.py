"""Startup errors, TLS (with client certificates) and basic auth, end to end."""

from __future__ import annotations

import http.client
import socket
import ssl

import bcrypt
import pytest

from .certs import make_certs
from tests.support.exporter import comm_target, fast_config
from tests.support.exporter import run_exporter

CONFIG = fast_config(comm_target("a", "no-such-comm"))


run_cli = run_exporter


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_bad_config_prints_every_error_line_and_exits_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("cpu_budget: lots\ntargets: []\nfoo: 1\n")
    r = run_cli("--config", str(cfg))
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines and all(line.startswith(f"{cfg}:") for line in lines), r.stderr
    assert any(":3: foo: " in line for line in lines)
    assert "Traceback" not in r.stderr


def test_empty_config_flag_and_bad_flags_exit_2(tmp_path):
    # no flag at all runs the embedded default config (tests/service/test_first_run.py);
    # an empty one is a mistake
    r = run_cli("--config.file", "")
    assert r.returncode == 2
    assert r.stderr == "damon-exporter: error: --config.file is empty (leave the flag out to run the embedded default config)\n"
    r = run_cli("--log.level", "loud")  # without a config file, bad flags still stop it
    assert r.returncode == 2 and r.stderr.startswith("damon-exporter: error: argument --log.level: invalid choice: 'loud'")
    r = run_cli("--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and r.stderr == f"{tmp_path}/nope.yaml: cannot read: No such file or directory\n"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    r = run_cli("--config", str(cfg), "--web.listen-address", "localhost")
    assert r.returncode == 2
    assert r.stderr == "damon-exporter: error: invalid --web.listen-address 'localhost': want [HOST]:PORT, e.g. :10170 or 127.0.0.1:10170\n"
    r = run_cli("--config", str(cfg), "--log.level", "loud")
    assert r.returncode == 2 and r.stderr.startswith("damon-exporter: error: argument --log.level: invalid choice: 'loud'")
    assert run_cli("--version").stdout.startswith("damon-exporter, version 0.1.0 (branch: ")  # the rest: test_flags_build_info


def test_web_config_unknown_key_exits_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {}\ntls_config: {}\n")
    r = run_cli("--config", str(cfg), "--web.config.file", str(web))
    assert r.returncode == 2
    assert r.stderr == f"{web}:2: tls_config: unknown key (supported: tls_server_config, basic_auth_users)\n"


def test_port_in_use_is_one_log_line_and_exit_1(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli("--config", str(cfg), "--web.listen-address", f"127.0.0.1:{port}")
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1
    assert "level=error" in r.stderr and 'msg="cannot listen"' in r.stderr and f"address=127.0.0.1:{port}" in r.stderr


def client_ctx(certs, cert=None, key=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def test_tls_with_required_client_certificates(exporter, certs, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {certs.server_crt}\n  key_file: {certs.server_key}\n"
        f"  client_ca_file: {certs.ca}\n  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS12\n"
    )
    good = client_ctx(certs, certs.client_crt, certs.client_key)
    e = exporter(CONFIG, extra=["--web.config.file", str(web)], tls=good)
    e.wait_ready()
    assert e.scrape().get("damon_target_up", target="a") == 0
    for bad in (client_ctx(certs), client_ctx(certs, certs.other_crt, certs.other_key)):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            e.request("/metrics", tls=bad)
    # plain HTTP on the TLS port gets nothing useful
    plain = http.client.HTTPConnection("127.0.0.1", e.port, timeout=5)
    with pytest.raises((ConnectionError, OSError, http.client.HTTPException)):
        plain.request("GET", "/metrics")
        plain.getresponse()
    plain.close()
    # and the server still serves good clients afterwards
    assert e.request("/-/healthy").status == 200
    assert "Traceback" not in e.logs()


def test_tls_without_client_auth_and_tls13_minimum(exporter, certs, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {certs.server_crt}\n  key_file: {certs.server_key}\n  min_version: TLS13\n")
    e = exporter(CONFIG, extra=["--web.config.file", str(web)], tls=client_ctx(certs))
    e.wait_ready()
    assert e.request("/metrics").status == 200
    old = client_ctx(certs)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):
        e.request("/metrics", tls=old)


def test_basic_auth_good_bad_missing(exporter, tmp_path):
    web = tmp_path / "web.yml"
    h = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=6)).decode()
    web.write_text(f"basic_auth_users:\n  alice: '{h}'\n")
    e = exporter(CONFIG, extra=["--web.config.file", str(web)], auth=("alice", "s3cret"))
    e.wait_ready()
    assert e.request("/metrics").status == 200
    for auth in (("alice", "wrong"), ("bob", "s3cret")):
        r = e.request("/metrics", auth=auth)
        assert r.status == 401 and r.headers["www-authenticate"] == 'Basic realm="damon-exporter"'
    e.auth = None
    r = e.request("/metrics")
    assert r.status == 401 and r.headers["www-authenticate"] == 'Basic realm="damon-exporter"'
    assert e.request("/-/healthy").status == 401

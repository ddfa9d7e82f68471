"""--web.config.file parsing, TLS contexts and basic auth, without a server."""

from __future__ import annotations

import base64
import ssl

import bcrypt
import pytest

from exporter.web.auth import BasicAuth
from exporter.web.config import WebConfigError, load_web_config, make_ssl_context

from .certs import make_certs


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
    assert errors_of(p)[0].startswith(f"{p}:3: invalid YAML")
    assert errors_of(tmp_path / "nope.yml") == [f"{tmp_path}/nope.yml:1: cannot read: No such file or directory"]


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

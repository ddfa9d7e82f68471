"""``--web.config.file``: the exporter-toolkit web configuration, the subset we implement.

::

    tls_server_config:
      cert_file: server.crt          # relative paths are relative to this file
      key_file: server.key
      client_ca_file: ca.crt         # optional
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12             # TLS10..TLS13
      max_version: TLS13
    basic_auth_users:
      alice: $2b$12$...              # bcrypt hash

Every problem is reported as ``FILE:LINE: key.path: message``; unknown keys are errors (a
typo in a security setting must not silently leave the endpoint open).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field

import yaml

CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version")
TOP_KEYS = ("tls_server_config", "basic_auth_users")


class WebConfigError(Exception):
    """Bad web config; ``lines`` are ``FILE:LINE: key.path: message``."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class TLSConfig:
    cert_file: str
    key_file: str
    client_ca_file: str = ""
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str = ""


@dataclass(frozen=True)
class WebConfig:
    tls: TLSConfig | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    path: str = ""


class _Errors:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, node: yaml.Node | None, key: str, msg: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.lines.append(f"{self.path}:{line}: {key}: {msg}" if key else f"{self.path}:{line}: {msg}")


def _mapping(node: yaml.Node, key: str, errs: _Errors) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return []
    if not isinstance(node, yaml.MappingNode):
        errs.add(node, key, "must be a mapping")
        return []
    return node.value


def _scalar(node: yaml.Node, key: str, errs: _Errors) -> str | None:
    if not isinstance(node, yaml.ScalarNode) or node.tag.endswith(":null"):
        errs.add(node, key, "must be a string")
        return None
    return str(node.value)


def load_web_config(path: str) -> WebConfig:
    """Parse and check ``path``; raise :class:`WebConfigError` listing every problem."""
    errs = _Errors(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise WebConfigError([f"{path}:1: cannot read: {e.strerror or e}"]) from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise WebConfigError([f"{path}:{line}: invalid YAML: {getattr(e, 'problem', None) or e}"]) from None
    if root is None:
        return WebConfig(path=path)
    base = os.path.dirname(os.path.abspath(path))
    tls: TLSConfig | None = None
    users: dict[str, bytes] = {}
    for knode, vnode in _mapping(root, "", errs):
        key = str(knode.value)
        if key == "tls_server_config":
            tls = _tls(vnode, base, errs)
        elif key == "basic_auth_users":
            users = _users(vnode, errs)
        else:
            errs.add(knode, key, f"unknown key (supported: {', '.join(TOP_KEYS)})")
    if errs.lines:
        raise WebConfigError(errs.lines)
    return WebConfig(tls=tls, users=users, path=path)


def _tls(node: yaml.Node, base: str, errs: _Errors) -> TLSConfig | None:
    values: dict[str, str] = {}
    nodes: dict[str, yaml.Node] = {}
    for knode, vnode in _mapping(node, "tls_server_config", errs):
        key = f"tls_server_config.{knode.value}"
        if knode.value not in TLS_KEYS:
            errs.add(knode, key, f"unknown key (supported: {', '.join(TLS_KEYS)})")
            continue
        v = _scalar(vnode, key, errs)
        if v is not None:
            values[str(knode.value)] = v
            nodes[str(knode.value)] = vnode
    n_before = len(errs.lines)
    for req in ("cert_file", "key_file"):
        if not values.get(req):
            errs.add(node, f"tls_server_config.{req}", "required when tls_server_config is set")
    for k in ("cert_file", "key_file", "client_ca_file"):
        if values.get(k):
            values[k] = os.path.join(base, values[k])
            if not os.access(values[k], os.R_OK):
                errs.add(nodes[k], f"tls_server_config.{k}", f"cannot read {values[k]}")
    auth = values.get("client_auth_type", "")
    if auth and auth not in CLIENT_AUTH_TYPES:
        errs.add(nodes["client_auth_type"], "tls_server_config.client_auth_type", f"unknown value {auth!r} (want one of {', '.join(CLIENT_AUTH_TYPES)})")
    elif auth == "RequireAnyClientCert":
        errs.add(nodes["client_auth_type"], "tls_server_config.client_auth_type",
                 "RequireAnyClientCert is not supported (Python's ssl cannot demand a certificate without verifying it); use RequireAndVerifyClientCert with client_ca_file")
    if not auth:
        auth = "RequireAndVerifyClientCert" if values.get("client_ca_file") else "NoClientCert"
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and not values.get("client_ca_file"):
        errs.add(node, "tls_server_config.client_ca_file", f"required with client_auth_type {auth}")
    if values.get("client_ca_file") and auth in ("NoClientCert", "RequestClientCert"):
        errs.add(nodes["client_ca_file"], "tls_server_config.client_ca_file", f"client CAs given but client_auth_type {auth} never verifies a client certificate")
    for k in ("min_version", "max_version"):
        v = values.get(k)
        if v and v not in TLS_VERSIONS:
            errs.add(nodes[k], f"tls_server_config.{k}", f"unknown TLS version {v!r} (want one of {', '.join(TLS_VERSIONS)})")
    if len(errs.lines) > n_before:
        return None
    cfg = TLSConfig(
        cert_file=values["cert_file"],
        key_file=values["key_file"],
        client_ca_file=values.get("client_ca_file", ""),
        client_auth_type=auth,
        min_version=values.get("min_version", "TLS12"),
        max_version=values.get("max_version", ""),
    )
    try:
        make_ssl_context(cfg)
    except WebConfigError as e:
        errs.add(node, "tls_server_config", str(e))
        return None
    return cfg


def _users(node: yaml.Node, errs: _Errors) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for knode, vnode in _mapping(node, "basic_auth_users", errs):
        key = f"basic_auth_users.{knode.value}"
        v = _scalar(vnode, key, errs)
        if v is None:
            continue
        if not (v.startswith(("$2a$", "$2b$", "$2y$")) and len(v) == 60):
            errs.add(vnode, key, "must be a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters), not a plain password")
            continue
        users[str(knode.value)] = v.encode("ascii", "replace")
    return users


def make_ssl_context(cfg: TLSConfig) -> ssl.SSLContext:
    """The server context for ``cfg``. ``RequestClientCert`` is served as
    ``NoClientCert``: a certificate that is requested but never verified authorises
    nothing, so the two are equivalent for access control."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.minimum_version = TLS_VERSIONS[cfg.min_version]
        if cfg.max_version:
            ctx.maximum_version = TLS_VERSIONS[cfg.max_version]
    except (ValueError, ssl.SSLError) as e:
        raise WebConfigError([f"TLS version range not supported by this OpenSSL: {e}"]) from None
    try:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (ssl.SSLError, OSError) as e:
        raise WebConfigError([f"cannot load certificate {cfg.cert_file} / key {cfg.key_file}: {getattr(e, 'reason', None) or e}"]) from None
    if cfg.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        try:
            ctx.load_verify_locations(cafile=cfg.client_ca_file)
        except (ssl.SSLError, OSError) as e:
            raise WebConfigError([f"cannot load client CA {cfg.client_ca_file}: {getattr(e, 'reason', None) or e}"]) from None
        ctx.verify_mode = ssl.CERT_OPTIONAL if cfg.client_auth_type == "VerifyClientCertIfGiven" else ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx

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
import re
import ssl
import stat
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import bcrypt
import yaml
from yaml.nodes import MappingNode

from exporter.config.nodes import Reader
from exporter.config.yamlfile import YAMLFileError, compose, read_text

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


#: a bcrypt hash as htpasswd, Python's bcrypt and Go's x/crypto write it: $2a$, $2b$ or $2y$,
#: a two-digit cost, 22 characters of salt and 31 of hash in bcrypt's base64 alphabet
_BCRYPT = re.compile(r"\$2[aby]\$([0-9][0-9])\$[./A-Za-z0-9]{53}", re.ASCII)
#: the highest bcrypt cost accepted: every check of a wrong password costs the server this
#: much (cost 14 is about a second of CPU here; 31 would be a day)
MAX_BCRYPT_COST = 14


def _mapping(r: Reader, node: yaml.Node, key: str) -> MappingNode | None:
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return None
    if not isinstance(node, MappingNode):
        r.error(node, key, "must be a mapping")
        return None
    return node


def _scalar(r: Reader, node: yaml.Node, key: str) -> str | None:
    if not isinstance(node, yaml.ScalarNode) or node.tag.endswith(":null"):
        r.error(node, key, "must be a string")
        return None
    return str(node.value)


def load_web_config(path: str) -> WebConfig:
    """Parse and check ``path``; raise :class:`WebConfigError` listing every problem.

    The file goes through the main config's reader: the same size limit, nesting limit,
    UTF-8 check and duplicate-key check (a repeated ``basic_auth_users:`` must not
    silently replace the first block)."""
    try:
        root = compose(read_text(path), path)
    except YAMLFileError as e:
        raise WebConfigError(e.lines) from None
    try:
        return _web_config(Reader(path), root, path)
    except RecursionError:  # a recursive alias: never a traceback
        raise WebConfigError([f"{path}:1: YAML nested too deeply (or a recursive alias)"]) from None


def _web_config(r: Reader, root: yaml.Node | None, path: str) -> WebConfig:
    if root is None:
        return WebConfig(path=path)
    base = os.path.dirname(os.path.abspath(path))
    tls: TLSConfig | None = None
    users: dict[str, bytes] = {}
    mapping = _mapping(r, root, "")
    for key, knode, vnode, _sub in r.items(mapping, "", None) if mapping is not None else ():
        if key == "tls_server_config":
            tls = _tls(r, vnode, base)
        elif key == "basic_auth_users":
            users = _users(r, vnode)
        else:
            r.error(knode, key, f"unknown key (supported: {', '.join(TOP_KEYS)})")
    if r.errors:
        raise WebConfigError(r.error_lines())
    return WebConfig(tls=tls, users=users, path=path)


def _tls(r: Reader, node: yaml.Node, base: str) -> TLSConfig | None:
    values: dict[str, str] = {}
    nodes: dict[str, yaml.Node] = {}
    mapping = _mapping(r, node, "tls_server_config")
    for name, knode, vnode, key in r.items(mapping, "tls_server_config", None) if mapping is not None else ():
        if name not in TLS_KEYS:
            r.error(knode, key, f"unknown key (supported: {', '.join(TLS_KEYS)})")
            continue
        v = _scalar(r, vnode, key)
        if v is not None:
            values[name] = v
            nodes[name] = vnode
    n_before = len(r.errors)
    for req in ("cert_file", "key_file"):
        if not values.get(req):
            r.error(node, f"tls_server_config.{req}", "required when tls_server_config is set")
    for k in ("cert_file", "key_file", "client_ca_file"):
        if values.get(k):
            values[k] = os.path.join(base, values[k])
            if not os.access(values[k], os.R_OK):
                r.error(nodes[k], f"tls_server_config.{k}", f"cannot read {values[k]}")
    auth = values.get("client_auth_type", "")
    if auth and auth not in CLIENT_AUTH_TYPES:
        r.error(nodes["client_auth_type"], "tls_server_config.client_auth_type", f"unknown value {auth!r} (want one of {', '.join(CLIENT_AUTH_TYPES)})")
    elif auth == "RequireAnyClientCert":
        r.error(nodes["client_auth_type"], "tls_server_config.client_auth_type",
                "RequireAnyClientCert is not supported (Python's ssl cannot demand a certificate without verifying it); use RequireAndVerifyClientCert with client_ca_file")
    if not auth:
        auth = "RequireAndVerifyClientCert" if values.get("client_ca_file") else "NoClientCert"
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and not values.get("client_ca_file"):
        r.error(node, "tls_server_config.client_ca_file", f"required with client_auth_type {auth}")
    if values.get("client_ca_file") and auth in ("NoClientCert", "RequestClientCert"):
        r.error(nodes["client_ca_file"], "tls_server_config.client_ca_file", f"client CAs given but client_auth_type {auth} never verifies a client certificate")
    for k in ("min_version", "max_version"):
        v = values.get(k)
        if v and v not in TLS_VERSIONS:
            r.error(nodes[k], f"tls_server_config.{k}", f"unknown TLS version {v!r} (want one of {', '.join(TLS_VERSIONS)})")
    lo, hi = values.get("min_version", "TLS12"), values.get("max_version", "")
    if lo in TLS_VERSIONS and hi in TLS_VERSIONS and TLS_VERSIONS[hi] < TLS_VERSIONS[lo]:
        shown = lo if "min_version" in values else f"{lo} (the default)"
        r.error(nodes["max_version"], "tls_server_config.max_version", f"{hi} is below min_version {shown}: no TLS version would be left to negotiate")
    if len(r.errors) > n_before:
        return None
    cfg = TLSConfig(
        cert_file=values["cert_file"],
        key_file=values["key_file"],
        client_ca_file=values.get("client_ca_file", ""),
        client_auth_type=auth,
        min_version=lo,
        max_version=hi,
    )
    try:
        make_ssl_context(cfg)
    except WebConfigError as e:
        r.error(node, "tls_server_config", str(e))
        return None
    return cfg


def _users(r: Reader, node: yaml.Node) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    mapping = _mapping(r, node, "basic_auth_users")
    for name, knode, vnode, key in r.items(mapping, "basic_auth_users", None) if mapping is not None else ():
        v = _scalar(r, vnode, key)
        if v is None:
            continue
        if ":" in name:
            r.error(knode, key, "a user name cannot contain ':' (basic auth splits user and password at the first one)")
            continue
        problem = bcrypt_hash_problem(v)
        if problem:
            r.error(vnode, key, problem)
            continue
        users[name] = v.encode("ascii")
    return users


def bcrypt_hash_problem(text: str) -> str:
    """Why ``text`` is not a usable bcrypt hash, or "" when it is. Checked without paying
    the hash's cost: the same salt and hash at cost 4 must be accepted by bcrypt."""
    m = _BCRYPT.fullmatch(text)
    if m is None:
        if text.startswith(("$2a$", "$2b$", "$2y$")):
            return "malformed bcrypt hash: want $2a$, $2b$ or $2y$, a two-digit cost, '$' and 53 characters of [./A-Za-z0-9]"
        return "must be a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters), not a plain password"
    cost = int(m.group(1))
    if not 4 <= cost <= 31:
        return f"malformed bcrypt hash: cost {cost} is outside bcrypt's 4..31"
    if cost > MAX_BCRYPT_COST:
        return (f"bcrypt cost {cost} is above the maximum of {MAX_BCRYPT_COST}: every wrong password would "
                f"cost the server 2^{cost} rounds (use htpasswd -B -C {MAX_BCRYPT_COST} or lower)")
    try:
        bcrypt.checkpw(b"", (text[:4] + "04" + text[6:]).encode("ascii"))
    except ValueError as e:
        return f"malformed bcrypt hash: {e}"
    return ""


@contextmanager
def _regular(path: str) -> Iterator[str]:
    """A path OpenSSL can open that is sure to be ``path``'s regular file, as it is now.

    OpenSSL opens by name, blocking: a FIFO swapped in for a key froze whoever loaded it
    (the web server's event loop) for good. The file is opened here without blocking and
    checked to be regular, and OpenSSL is given ``/proc/self/fd/N``, which opens that very
    file again, so no swap between the check and the load can slip another file in."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


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
        with _regular(cfg.cert_file) as cert, _regular(cfg.key_file) as key:
            ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        raise WebConfigError([f"cannot load certificate {cfg.cert_file} / key {cfg.key_file}: {getattr(e, 'reason', None) or e}"]) from None
    if cfg.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        try:
            with _regular(cfg.client_ca_file) as ca:
                ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as e:
            raise WebConfigError([f"cannot load client CA {cfg.client_ca_file}: {getattr(e, 'reason', None) or e}"]) from None
        ctx.verify_mode = ssl.CERT_OPTIONAL if cfg.client_auth_type == "VerifyClientCertIfGiven" else ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx

"""The web config in force, re-checked for every connection and request.

exporter-toolkit reads its web config file again for each TLS handshake and each request,
so a changed password, a revoked user or a rotated certificate (a Kubernetes Secret update)
takes effect without a restart. We do the same, but cheaply: each check stats the web
config file and the certificate, key and CA files it names, and only when one of them
changed (the config file's content hash; the others' inode, size, mtime or ctime: a Secret
update swaps a symlink) is the config loaded again. A new config that fails to load is logged once, counted in
``damon_web_config_last_reload_successful`` = 0, and the last good one stays in force.

Switching TLS on or off cannot happen on a running listener; such a change is refused
like any other bad config and needs a restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from exporter.config.yamlfile import MAX_CONFIG_BYTES, read_regular
from exporter.web.auth import BasicAuth
from exporter.web.config import (
    WebConfig,
    WebConfigError,
    load_web_config,
    make_ssl_context,
)
from exporter.web.status import WebStatus

log = logging.getLogger("exporter.web")

#: seconds a connection or request waits for a changed web config to load before it is
#: served with the running one (loading takes milliseconds; files are never FIFOs, see
#: exporter.web.config._regular, but a filesystem may stall)
CHECK_WAIT = 1.0


@dataclass(frozen=True)
class ActiveWebConfig:
    config: WebConfig
    ssl_context: ssl.SSLContext | None
    auth: BasicAuth


def _stat_key(path: str) -> tuple[int, int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _content_key(path: str) -> bytes | None:
    """SHA-256 of the (small) web config file itself: an edit that keeps size and mtime
    (two writes within one clock tick) must not go unseen."""
    try:
        return hashlib.sha256(read_regular(path, MAX_CONFIG_BYTES + 1)).digest()
    except OSError:  # gone, unreadable, or not a regular file (a FIFO would block the loop)
        return None


def activate(cfg: WebConfig, previous: ActiveWebConfig | None = None) -> ActiveWebConfig:
    """SSL context and authenticator for ``cfg``; keeps the previous BasicAuth (and its
    cache of good credentials) when the users did not change."""
    ctx = make_ssl_context(cfg.tls) if cfg.tls else None
    auth = previous.auth if previous is not None and previous.config.users == cfg.users else BasicAuth(cfg.users)
    return ActiveWebConfig(cfg, ctx, auth)


class WebConfigSource:
    """``current()`` is the active config, reloaded first when its files changed."""

    def __init__(self, path: str | None, initial: WebConfig, status: WebStatus | None = None) -> None:
        self.path = path
        self.status = status or WebStatus()
        self._active = activate(initial)
        self._lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: Future | None = None
        self._checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="damon-web-config")
        self._seen = self._signature(initial)
        self.status.reloaded(True)

    def _signature(self, cfg: WebConfig) -> tuple:
        if not self.path:
            return ()
        files = [self.path]
        if cfg.tls is not None:
            files += [cfg.tls.cert_file, cfg.tls.key_file]
            if cfg.tls.client_ca_file:
                files.append(cfg.tls.client_ca_file)
        return (_content_key(self.path), *((f, _stat_key(f)) for f in files))

    def current(self) -> ActiveWebConfig:
        """The active config; when a watched file changed, it is loaded again on the
        ``damon-web-config`` thread first, waited for at most CHECK_WAIT seconds (a file
        on a stalled filesystem must not stop the event loop that asks)."""
        if self.path and self._signature(self._active.config) != self._seen:
            with self._pending_lock:
                pending = self._pending
                if pending is None or pending.done():
                    pending = self._pending = self._checker.submit(self.check, "files changed")
            try:
                pending.result(timeout=CHECK_WAIT)
            except FutureTimeout:
                log.warning("web config reload is taking long; serving with the running web config meanwhile",
                            extra={"kv": {"file": self.path, "waited_seconds": CHECK_WAIT}})
        return self._active

    def ssl_context(self) -> ssl.SSLContext | None:
        return self.current().ssl_context

    def auth(self) -> BasicAuth:
        return self.current().auth

    def check(self, reason: str) -> bool:
        """Load the file now if it changed since the last look (``reason == "signal"``
        always loads). True when the active config is the file's current content."""
        if not self.path:
            return True
        with self._lock:
            old = self._active
            sig = self._signature(old.config)
            if sig == self._seen and reason != "signal":
                return True
            self._seen = sig
            try:
                cfg = load_web_config(self.path)
                if (cfg.tls is None) != (old.config.tls is None):
                    now = "on" if cfg.tls else "off"
                    raise WebConfigError([f"{self.path}:1: tls_server_config: switching TLS {now} needs a restart"])
                new = activate(cfg, old)
            except WebConfigError as e:
                for line in e.lines:
                    log.error("web config reload failed, keeping the running web config: %s", line)
                self.status.reloaded(False)
                return False
            # keep the signature taken *before* reading when the same files are watched, so
            # a change made while we read is seen next time (at worst one extra reload)
            new_sig = self._signature(cfg)
            self._seen = sig if [f for f, _ in new_sig[1:]] == [f for f, _ in sig[1:]] else new_sig
            self._active = new
            self.status.reloaded(True)
            if reason == "signal" and new.config == old.config:
                return True
            log.info("web configuration reloaded", extra={"kv": {"file": self.path, "reason": reason, "tls": cfg.tls is not None, "users": len(cfg.users)}})
            return True

"""Config reloads: on SIGHUP, and when the file's content changes.

The file is polled (mtime, size, then a SHA-256 of the content, so a ``touch`` or an
editor's rewrite of identical bytes does not reload). Without a file (the embedded default
config) there is nothing to reload: SIGHUP only runs the ``on_signal`` hooks. A good config is handed to the
sampler; a bad one is logged line by line and the running config stays, with
``damon_config_last_reload_successful`` set to 0 until a good one loads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from typing import Any, Callable

from exporter.config.yamlfile import MAX_CONFIG_BYTES, NotRegularFile, read_regular
from exporter.service.state import StateBox

log = logging.getLogger("exporter.reload")


def fingerprint(path: str) -> tuple[float, int, str] | None:
    """(mtime, size, sha256) of ``path``, or None when it cannot be read. Only the first
    MAX_CONFIG_BYTES + 1 bytes are hashed: a larger file is refused by the loader anyway,
    and polling must not read gigabytes every few seconds."""
    return _look(path)[0]


def _look(path: str) -> tuple[tuple[float, int, str] | None, str]:
    """The fingerprint of ``path``, or None and why it cannot be read."""
    try:
        st = os.stat(path)
        digest = hashlib.sha256(read_regular(path, MAX_CONFIG_BYTES + 1)).hexdigest()
    except NotRegularFile:  # a directory, or a FIFO (which would block the poll)
        return None, "not a regular file"
    except OSError as e:  # gone, unreadable
        return None, e.strerror or str(e)
    return (st.st_mtime, st.st_size, digest), ""


class ConfigReloader:
    """A thread that reloads ``path`` when asked (:meth:`request`, e.g. from SIGHUP) or when
    its content changes (polled every ``interval`` seconds; 0 disables polling)."""

    def __init__(
        self,
        path: str | None,
        box: StateBox,
        apply: Callable[[Any], None],
        load: Callable[[str], Any],
        error_type: type[Exception],
        stop: threading.Event,
        interval: float = 5.0,
    ) -> None:
        self.path = path
        self.box = box
        self.apply = apply
        self.load = load
        self.error_type = error_type
        self.stop = stop
        self.interval = interval
        self._wake = threading.Event()
        #: called on every SIGHUP before the config reload (e.g. the web config's check)
        self.on_signal: list[Callable[[], None]] = []
        self._fp = fingerprint(path) if path is not None else None
        self.thread = threading.Thread(target=self._main, name="damon-reload", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def request(self) -> None:
        """Ask for a reload now. Not for a signal handler: ``Event.set`` takes a lock, so the
        handler only records the signal and the main thread calls this."""
        self._wake.set()

    def _main(self) -> None:
        while not self.stop.is_set():
            try:
                self._once()
            except Exception as e:  # the reload thread must outlive any bug: later SIGHUPs count
                log.error("config reload failed, keeping the running config: %s: internal error: %s: %s", self.path, type(e).__name__, e)
                self.box.update(reload_successful=False)

    def _once(self) -> None:
        """Wait for a signal or the poll interval, then reload if asked or changed."""
        asked = self._wake.wait(self.interval if self.interval > 0 else None)
        if self.stop.is_set():
            return
        self._wake.clear()
        for hook in self.on_signal if asked else ():
            hook()
        if self.path is None:  # the embedded default config: no file to reload
            return
        fp, why = _look(self.path)
        if fp is None and self._fp is not None and not asked:
            # the file the running config came from is no longer a readable file (deleted,
            # replaced by a directory): said once, until it is readable again
            log.error("config reload failed, keeping the running config: %s: %s", self.path, why)
            self.box.update(reload_successful=False)
        if asked:
            self.reload("signal")
        elif fp is not None and self._fp is not None and fp[2] != self._fp[2]:
            self.reload("file changed")
        elif fp is not None and self._fp is None:
            self.reload("file reappeared")
        self._fp = fp

    def reload(self, reason: str) -> bool:
        """Load and apply the file now. True when the new config is in use."""
        if self.path is None:
            return False
        try:
            cfg = self.load(self.path)
        except self.error_type as e:
            for line in getattr(e, "lines", None) or [str(e)]:
                log.error("config reload failed, keeping the running config: %s", line)
            self.box.update(reload_successful=False)
            return False
        except OSError as e:
            log.error("config reload failed, keeping the running config: %s: %s", self.path, e.strerror or e)
            self.box.update(reload_successful=False)
            return False
        self.apply(cfg)
        self.box.update(reload_successful=True, reload_success_timestamp=time.time())
        log.info("configuration reloaded", extra={"kv": {"file": self.path, "reason": reason}})
        return True

"""HTTP basic auth against bcrypt hashes, with a cache that keeps scrapes cheap.

bcrypt is slow on purpose (tens to hundreds of milliseconds per check); Prometheus sends
the same credentials every scrape. We remember *successful* checks keyed by a SHA-256 of
(hash, password), never the password itself, so a repeat scrape costs one hash. Failures
are never cached: each wrong guess pays full bcrypt price, and an unknown user is checked
against a dummy hash so that user names cannot be probed by timing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

import bcrypt

CACHE_LIMIT = 1024


class BasicAuth:
    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users
        self._ok: set[bytes] = set()
        self._dummy = bcrypt.hashpw(b"damon-exporter-dummy", bcrypt.gensalt(rounds=10)) if users else b""

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def check_header(self, header: str | None) -> bool:
        """True when ``Authorization: Basic ...`` names a known user and the right password."""
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        return self.check(user, password)

    def check(self, user: str, password: str) -> bool:
        hashed = self.users.get(user)
        pw = password.encode("utf-8")
        if hashed is None:
            bcrypt.checkpw(pw, self._dummy)  # same cost as a real user: no timing oracle
            return False
        key = hashlib.sha256(hashed + b"\0" + pw).digest()
        if key in self._ok:
            return True
        try:
            ok = bcrypt.checkpw(pw, hashed)
        except ValueError:  # malformed hash slipped through: refuse, never crash
            return False
        if ok:
            if len(self._ok) >= CACHE_LIMIT:
                self._ok.clear()
            self._ok.add(key)
        return ok


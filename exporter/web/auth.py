"""HTTP basic auth against bcrypt hashes, with a cache that keeps scrapes cheap.

bcrypt is slow on purpose (tens to hundreds of milliseconds per check); Prometheus sends
the same credentials every scrape. We remember *successful* checks keyed by a SHA-256 of
(hash, password), never the password itself, so a repeat scrape costs one hash. Failures
are never cached: each wrong guess pays full bcrypt price.

User names must not be probeable, neither by behaviour nor by timing:

* bcrypt's input is 72 bytes. Go's ``CompareHashAndPassword`` (exporter-toolkit) and
  OpenBSD compare only those; Python's bcrypt 5 raises on longer input instead. Every
  password is cut to its first 72 bytes before any check, for known and unknown users alike.
* A wrong password costs what the user's hash costs (2^cost rounds). An unknown user is
  checked against a dummy hash whose cost is that of one configured user, chosen by a
  keyed hash of the name: each name always gets the same cost, and unknown names get
  costs in the same proportions as the configured users. With users at costs 4 and 12
  alike, no answer time says whether a name exists. The key is derived from the
  configured hashes (secret salts), so the mapping is stable across restarts and changes
  only when the users do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading

import bcrypt

CACHE_LIMIT = 1024
#: bcrypt checks run at once; the rest of the admitted ones wait their turn
MAX_CHECKS = 2
#: requests admitted that need a bcrypt check (running or waiting): past this, a request
#: whose credentials are not already known good is refused at once (503) and never takes a
#: worker, so a flood of wrong passwords cannot crowd out scrapers whose password is cached
MAX_PENDING_CHECKS = 8
#: bcrypt's input length; longer passwords are compared on these bytes only
MAX_PASSWORD_BYTES = 72


def hash_cost(hashed: bytes) -> int:
    """The cost field of a ``$2b$NN$...`` hash."""
    return int(hashed[4:6])


def _dummy_hash(cost: int) -> bytes:
    """A well-formed hash of cost ``cost`` that matches no password we will ever see,
    made for the price of a cost-4 hash: a random password's hash with its cost field
    rewritten (checking against it runs the full ``cost`` rounds, then mismatches)."""
    seed = bcrypt.hashpw(base64.b64encode(os.urandom(24)), bcrypt.gensalt(rounds=4))
    return seed[:4] + b"%02d" % cost + seed[6:]


class BasicAuth:
    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users
        self._ok: set[bytes] = set()
        self._names = sorted(users)
        self._dummies = {cost: _dummy_hash(cost) for cost in {hash_cost(h) for h in users.values()}}
        self._key = hashlib.sha256(b"\0".join(users[n] for n in self._names)).digest()
        self._slots = threading.Semaphore(MAX_CHECKS)
        self._pending = 0
        self._pending_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def dummy_for(self, user: str) -> bytes:
        """The dummy hash an unknown ``user`` is checked against (same name, same cost)."""
        mac = hmac.new(self._key, user.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        twin = self._names[int.from_bytes(mac[:8], "big") % len(self._names)]
        return self._dummies[hash_cost(self.users[twin])]

    @staticmethod
    def credentials(header: str | None) -> tuple[str, str] | None:
        """(user, password) of ``Authorization: Basic ...``, None when there are none."""
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            # a str holding a non-ASCII character (a raw byte of the head, decoded as
            # Latin-1) makes b64decode raise a plain ValueError, as bad base64 and bad
            # UTF-8 do through its subclasses binascii.Error and UnicodeDecodeError
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except ValueError:
            return None
        return (user, password) if sep else None

    def _key_of(self, hashed: bytes, pw: bytes) -> bytes:
        return hashlib.sha256(hashed + b"\0" + pw).digest()

    def needs_check(self, header: str | None) -> bool:
        """Whether answering this request costs a bcrypt check (cheap: no bcrypt here)."""
        cred = self.credentials(header) if self.users else None
        if cred is None:
            return False  # no credentials: 401 at once
        hashed = self.users.get(cred[0])
        return hashed is None or self._key_of(hashed, cred[1].encode("utf-8")[:MAX_PASSWORD_BYTES]) not in self._ok

    def admit(self) -> bool:
        """Reserve a place for one bcrypt check; False when MAX_PENDING_CHECKS are taken.
        Every True must be followed by :meth:`done`."""
        with self._pending_lock:
            if self._pending >= MAX_PENDING_CHECKS:
                return False
            self._pending += 1
            return True

    def done(self) -> None:
        with self._pending_lock:
            self._pending -= 1

    def check_header(self, header: str | None) -> bool:
        """True when ``Authorization: Basic ...`` names a known user and the right password."""
        cred = self.credentials(header)
        return cred is not None and self.check(*cred)

    def check(self, user: str, password: str) -> bool:
        pw = password.encode("utf-8")[:MAX_PASSWORD_BYTES]
        hashed = self.users.get(user)
        if hashed is None:
            if self.users:
                with self._slots:
                    bcrypt.checkpw(pw, self.dummy_for(user))  # a configured user's cost: no timing oracle
            return False
        key = self._key_of(hashed, pw)
        if key in self._ok:
            return True
        try:
            with self._slots:  # at most MAX_CHECKS hashes at once, whatever the workers
                ok = bcrypt.checkpw(pw, hashed)
        except ValueError:  # malformed hash slipped through: refuse, never crash
            return False
        if ok:
            if len(self._ok) >= CACHE_LIMIT:
                self._ok.clear()
            self._ok.add(key)
        return ok

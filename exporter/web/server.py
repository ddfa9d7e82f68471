"""The HTTP(S) transport: one event-loop thread for connections, a bounded pool for requests
(what a request gets is :mod:`exporter.web.app`).

Why not one thread per connection (``ThreadingHTTPServer``)? A client that sends a header
line every few seconds holds its thread forever, since socket timeouts apply per read:
4,000 such clients cost 3,777 threads and 206 MB, more than the DaemonSet's memory limit.
Here a connection costs a socket and a small buffer until its request is complete:

* one thread (``damon-http``) accepts, runs TLS handshakes non-blocking, reads request
  heads and bodies, and enforces every deadline;
* a complete request goes to a worker thread, which checks basic auth (bcrypt releases
  the GIL), renders and writes the response; at most ``max_requests`` requests are being
  handled at once (writing a finished response, bounded by ``write_timeout``, does not
  count), and past that the loop answers 503 itself;
* past ``max_connections`` open connections the longest-waiting connection that has no
  request in flight is closed to make room, so slow clients cannot lock scrapers out;
* deadlines are totals, not per read: ``read_timeout`` from accept (TLS handshake
  included) or from a request's first byte to its last; ``idle_timeout`` for a
  keep-alive connection between requests; ``write_timeout`` for writing a response.

Handlers only read published state. The web config (TLS and users) is asked for per
connection and per request, so a rotated certificate or a revoked user takes effect
without a restart. Request errors are logged at debug level as one line.
"""

from __future__ import annotations

import logging
import queue
import resource
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable


from exporter.web.app import WebApp
from exporter.web.auth import BasicAuth
from exporter.web.protocol import (
    ProtocolError,
    Request,
    error_response,
    parse_head,
    response_bytes,
    wants_continue,
)
from exporter.web.status import WebStatus

log = logging.getLogger("exporter.web")


#: closed connections after which the freed heap is handed back (see Server._give_back_memory)
TRIM_AFTER_CLOSED = 256


def _libc_malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl)."""
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc_malloc_trim()


@dataclass(frozen=True)
class Limits:
    """Every bound the server enforces; docs/security.md lists them."""

    max_requests: int = 40  # node_exporter's --web.max-requests default
    #: above Prometheus' 512: a held connection costs about 1 KB here (no thread), while
    #: a cap below the number of slow clients turns into accept/evict churn that costs CPU
    #: (bench/slow_clients.py: 4,000 slow clients, p99 195 ms at 512, 29 ms at 8192)
    max_connections: int = 8192
    read_timeout: float = 10.0
    idle_timeout: float = 60.0
    write_timeout: float = 30.0
    max_head_bytes: int = 16 << 10
    max_body_bytes: int = 64 << 10


class ListenAddressError(ValueError):
    pass


def parse_listen_address(addr: str) -> tuple[str, int]:
    """``:9100``, ``0.0.0.0:9100``, ``[::1]:9100``, ``localhost:9100`` -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ListenAddressError(f"invalid --web.listen-address {addr!r}: want [HOST]:PORT, e.g. :10170 or 127.0.0.1:10170")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


HANDSHAKE, READING, IDLE, BUSY = "handshake", "reading", "idle", "busy"


class _Conn:
    __slots__ = ("sock", "peer", "state", "buf", "deadline", "want_write", "continued")

    def __init__(self, sock: socket.socket, peer: str, state: str, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.state = state
        self.buf = bytearray()
        self.deadline = deadline
        self.want_write = False
        self.continued = False  # "100 Continue" sent for the request being read


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (as Go programs do at start) and return
    the soft limit now in force; ``wanted`` only decides whether that is worth a warning."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and (hard == resource.RLIM_INFINITY or soft < wanted):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class _Slot:
    """What one request holds while it is handled: a place under --web.max-requests and,
    when its password is not known good, a place among the pending bcrypt checks.
    :meth:`release` gives both back, once, however often it is called; every path a
    request takes (answered, refused, failed with any exception) ends in it, so nothing
    a request took can leak (40 requests that raised used to hold all 40 places for good)."""

    __slots__ = ("server", "checking", "_held")

    def __init__(self, server: "ExporterHTTPServer") -> None:
        self.server = server
        self.checking: BasicAuth | None = None
        self._held = True

    def release(self) -> None:
        with self.server._inflight_lock:
            if not self._held:
                return
            self._held = False
            self.server._inflight -= 1
        if self.checking is not None:
            self.checking.done()


class ExporterHTTPServer:
    """Bind at construction (OSError when the address is taken); ``serve_forever`` in a
    thread; ``shutdown`` from another; then ``server_close``."""

    def __init__(
        self,
        address: tuple[str, int],
        app: WebApp,
        tls: Callable[[], ssl.SSLContext | None] | ssl.SSLContext | None,
        limits: Limits = Limits(),
        status: WebStatus | None = None,
    ) -> None:
        self.app = app
        self.tls: Callable[[], ssl.SSLContext | None] = tls if callable(tls) else (lambda c=tls: c)
        self.tls_enabled = self.tls() is not None
        fd_limit = raise_fd_limit(limits.max_connections + 64)
        if limits.max_connections > fd_limit - 64:
            log.info("max connections lowered to fit the open-file limit", extra={"kv": {"wanted": limits.max_connections, "nofile": fd_limit, "max_connections": max(1, fd_limit - 64)}})
            limits = Limits(**{**limits.__dict__, "max_connections": max(1, fd_limit - 64)})
        self.limits = limits
        self.status = status or WebStatus()
        host, port = address
        family = socket.AF_INET
        if not host:
            family = socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET
            host = "::" if family == socket.AF_INET6 else "0.0.0.0"
        elif ":" in host:
            family = socket.AF_INET6
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                try:
                    self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                except OSError:
                    pass
            self.socket.bind((host, port))
            self.socket.listen(1024)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self._sel = selectors.DefaultSelector()
        self._conns: dict[int, _Conn] = {}
        #: connections closed since the heap was last trimmed (see _give_back_memory)
        self._closed_since_trim = 0
        #: connections without a request in flight, oldest first (eviction order)
        self._waiting: dict[int, _Conn] = {}
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._returned: queue.SimpleQueue[tuple[_Conn, bool]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # writers of finished responses no longer count as in flight (each is bounded by
        # write_timeout), so the pool has room for them beside max_requests handlers
        workers = 2 * limits.max_requests + 4 if limits.max_requests > 0 else limits.max_connections
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="damon-http-worker")
        self._stop = threading.Event()
        self._stopped = threading.Event()

    # -- loop ---------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._sel.register(self.socket, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        next_sweep = time.monotonic()
        try:
            while not self._stop.is_set():
                for key, _mask in self._sel.select(timeout=poll_interval):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._take_returned()
                    else:
                        self._serve_one(key.data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + 0.25
        finally:
            for c in list(self._conns.values()):
                if c.state == BUSY:  # wake a worker blocked writing to a slow reader
                    try:
                        c.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                self._close(c)
            self._stopped.set()

    def _serve_one(self, conn: _Conn) -> None:
        """Whatever one connection does, and whatever fails while serving it, ends with that
        connection at worst: a request that raises where nobody expected it is closed,
        counted as bad_request and logged at debug, and the loop goes on for everyone else."""
        try:
            self._on_ready(conn)
        except Exception as e:  # noqa: BLE001 - one client must never stop the loop
            self.status.reject("bad_request")
            log.debug("connection failed", extra={"kv": {"err": f"{type(e).__name__}: {e}"}})
            try:
                self._close(conn)
            except Exception:  # noqa: BLE001
                pass

    def shutdown(self) -> None:
        self._stop.set()
        self._wake()
        self._stopped.wait(5.0)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def server_close(self) -> None:
        for s in (self.socket, self._wake_r, self._wake_w):
            s.close()
        self._sel.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # the pipe is full: the loop is awake anyway
            pass

    def _accept(self) -> None:
        for _ in range(64):  # a burst, then let other sockets have their turn
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. EMFILE: leave it in the backlog for now
                log.debug("accept failed", extra={"kv": {"err": f"{type(e).__name__}: {e}"}})
                return
            if len(self._conns) >= self.limits.max_connections and not self._evict_one():
                self.status.reject("max_connections")
                sock.close()
                continue
            sock.setblocking(False)
            now = time.monotonic()
            peer = str(addr[0]) if isinstance(addr, tuple) else ""
            ctx = self.tls() if self.tls_enabled else None
            if self.tls_enabled and ctx is None:  # cannot happen: the source refuses to drop TLS
                sock.close()
                continue
            if ctx is not None:
                try:
                    sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (ssl.SSLError, OSError):
                    sock.close()
                    continue
                conn = _Conn(sock, peer, HANDSHAKE, now + self.limits.read_timeout)
            else:
                conn = _Conn(sock, peer, READING, now + self.limits.read_timeout)
            self._conns[sock.fileno()] = conn
            self._waiting[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)
            if ctx is not None:
                self._handshake(conn)

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest without a request in flight."""
        for conn in self._waiting.values():
            self.status.reject("max_connections")
            log.debug("connection closed to make room", extra={"kv": {"client": conn.peer, "state": conn.state}})
            self._close(conn)
            return True
        return False

    def _give_back_memory(self) -> None:
        """After a burst of connections has closed, hand the heap they freed back to the
        system. Each TLS connection holds tens of KB of OpenSSL buffers; glibc keeps freed
        heap for reuse, so without this a burst of 3,000 handshakes left the process 45 MB
        larger for good. Cheap (one walk of the heap), and only after at least
        TRIM_AFTER_CLOSED closes with few connections left open."""
        if self._closed_since_trim < TRIM_AFTER_CLOSED or len(self._conns) > self._closed_since_trim // 8:
            return
        self._closed_since_trim = 0
        if _malloc_trim is not None:
            _malloc_trim(0)

    def _sweep(self, now: float) -> None:
        """Close what passed its deadline; give back the memory of closed connections."""
        self._give_back_memory()
        for conn in [c for c in self._waiting.values() if c.deadline <= now]:
            if conn.state != IDLE:
                self.status.reject("timeout")
                log.debug("request deadline passed", extra={"kv": {"client": conn.peer, "state": conn.state}})
                if conn.state == READING and conn.buf:
                    self._send_and_close(conn, 408, "Request not complete in time.")
                    continue
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self._closed_since_trim += 1
        fd = conn.sock.fileno()
        if fd >= 0:
            self._conns.pop(fd, None)
            self._waiting.pop(fd, None)
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        try:
            conn.sock.close()
        except OSError:
            pass

    def _send_and_close(self, conn: _Conn, status: int, message: str) -> None:
        """One small response written without blocking (whatever fits), then close."""
        try:
            conn.sock.send(error_response(status, message))
        except (OSError, ssl.SSLError):
            pass
        self._close(conn)

    def _on_ready(self, conn: _Conn) -> None:
        if conn.state == HANDSHAKE:
            self._handshake(conn)
        elif conn.state in (READING, IDLE):
            self._read(conn)

    def _handshake(self, conn: _Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(conn, write=False)
            return
        except ssl.SSLWantWriteError:
            self._want(conn, write=True)
            return
        except (ssl.SSLError, OSError) as e:
            log.debug("TLS handshake failed", extra={"kv": {"client": conn.peer, "err": f"{type(e).__name__}: {e}"}})
            self._close(conn)
            return
        self._want(conn, write=False)
        conn.state = READING
        self._read(conn)

    def _want(self, conn: _Conn, *, write: bool) -> None:
        if conn.want_write != write:
            conn.want_write = write
            self._sel.modify(conn.sock, selectors.EVENT_WRITE if write else selectors.EVENT_READ, conn)

    def _read(self, conn: _Conn) -> None:
        sock = conn.sock
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self._want(conn, write=False)
                break
            except ssl.SSLWantWriteError:
                self._want(conn, write=True)
                return
            except (ssl.SSLError, OSError) as e:
                log.debug("read failed", extra={"kv": {"client": conn.peer, "err": f"{type(e).__name__}: {e}"}})
                self._close(conn)
                return
            if not data:
                self._close(conn)
                return
            if conn.state == IDLE:  # a new request starts: its read deadline runs from now
                conn.state = READING
                conn.deadline = time.monotonic() + self.limits.read_timeout
            conn.buf += data
            if len(conn.buf) > self.limits.max_head_bytes + self.limits.max_body_bytes + 65536:
                break  # enough to decide; parse_head refuses what is too large
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                break
        self._try_request(conn)

    def _try_request(self, conn: _Conn) -> None:
        if not conn.buf:
            return
        if conn.state == IDLE:
            conn.state = READING
            conn.deadline = time.monotonic() + self.limits.read_timeout
        try:
            parsed = parse_head(conn.buf, self.limits.max_head_bytes, self.limits.max_body_bytes)
        except ProtocolError as e:
            self.status.reject("bad_request")
            self._send_and_close(conn, e.status, str(e))
            return
        if parsed is None:
            if not conn.continued and wants_continue(conn.buf):
                conn.continued = True
                try:
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                except (OSError, ssl.SSLError):
                    pass
            return
        conn.continued = False
        req, size = parsed
        del conn.buf[:size]  # the body, if any, is dropped here: never read as a request
        slot = self._take_slot()
        if slot is None:
            self.status.reject("max_requests")
            self._send_and_close(conn, 503, f"Too many requests in flight (--web.max-requests={self.limits.max_requests}); try again.")
            return
        try:
            auth = self.app.auth()
            if auth.enabled and auth.needs_check(req.headers.get("authorization")):
                if not auth.admit():
                    # a password not known good while MAX_PENDING_CHECKS wait for bcrypt: refused
                    # here, without a worker, so scrapers whose password is cached keep theirs
                    slot.release()
                    self.status.reject("auth_busy")
                    self._send_and_close(conn, 503, "Too many password checks in flight; try again.")
                    return
                slot.checking = auth
            fd = conn.sock.fileno()
            self._waiting.pop(fd, None)
            self._sel.unregister(conn.sock)
            conn.state = BUSY
            conn.want_write = False
            self._pool.submit(self._serve, conn, req, auth, slot)
        except RuntimeError:  # the pool is shut down: we are stopping
            slot.release()
            self._close(conn)
        except BaseException:
            slot.release()  # whatever failed, the request gives back what it took
            raise

    def _take_slot(self) -> "_Slot | None":
        """One of --web.max-requests for a request, or None when all are taken (0: no cap)."""
        with self._inflight_lock:
            if 0 < self.limits.max_requests <= self._inflight:
                return None
            self._inflight += 1
        return _Slot(self)

    def _take_returned(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        now = time.monotonic()
        while True:
            try:
                conn, keep = self._returned.get_nowait()
            except queue.Empty:
                return
            if not keep or self._stop.is_set():
                self._close(conn)
                continue
            try:
                conn.sock.setblocking(False)
                self._sel.register(conn.sock, selectors.EVENT_READ, conn)
            except (OSError, ValueError):
                self._close(conn)
                continue
            conn.state = IDLE
            conn.deadline = now + self.limits.idle_timeout
            self._waiting[conn.sock.fileno()] = conn
            self._try_request(conn)  # a pipelined request may be waiting in the buffer

    # -- workers ------------------------------------------------------------------------

    def _serve(self, conn: _Conn, req: Request, auth: BasicAuth, slot: "_Slot") -> None:
        keep = False
        try:
            try:
                status, headers, body = self.app.handle(req, auth)
            except Exception as e:  # a bug answers 500 and is logged; the server goes on
                log.error("request failed", extra={"kv": {"path": req.path, "err": f"{type(e).__name__}: {e}"}})
                status, headers, body = 500, [("Content-Type", "text/plain; charset=utf-8")], b"Internal error.\n"
            keep = req.keep_alive and status != 500
            data = response_bytes(status, headers, body, head_only=req.method == "HEAD", close=not keep)
            # the work is done: the slot is free *before* the client can see the answer, so
            # a client that asks again at once is never told 503 by its own previous request
            slot.release()
            self._write(conn.sock, data)
        except (OSError, ssl.SSLError, TimeoutError) as e:
            keep = False
            log.debug("response not delivered", extra={"kv": {"client": conn.peer, "err": f"{type(e).__name__}: {e}"}})
        finally:
            slot.release()
            self._returned.put((conn, keep))
            self._wake()

    def _write(self, sock: socket.socket, data: bytes) -> None:
        """Write all of ``data`` within write_timeout in total, however slowly the client reads."""
        deadline = time.monotonic() + self.limits.write_timeout
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"response not written within {self.limits.write_timeout:g}s")
            sock.settimeout(left)
            n = sock.send(view[: 256 << 10])
            view = view[n:]


def start_server(
    address: tuple[str, int],
    app: WebApp,
    tls: Callable[[], ssl.SSLContext | None] | ssl.SSLContext | None,
    limits: Limits = Limits(),
    status: WebStatus | None = None,
) -> tuple[ExporterHTTPServer, threading.Thread]:
    """Bind and serve in a background thread; raises OSError when the address is taken."""
    server = ExporterHTTPServer(address, app, tls, limits, status)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="damon-http", daemon=True)
    thread.start()
    return server, thread

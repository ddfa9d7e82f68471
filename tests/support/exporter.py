"""Run the real exporter: as a server (a subprocess to scrape over HTTP) or as a command
(``check-config``, ``snapshot``, ``--help``: run to its end, output captured); real
workloads as children.

The server binds port 0 and the runner reads the port it got from its ``listening`` log
line: a port picked free by the test and handed over could be taken by anyone in between."""

from __future__ import annotations

import base64
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.wait import wait_for

CHILD = str(Path(__file__).resolve().parents[1] / "service" / "child.py")
REPO = str(Path(__file__).resolve().parents[2])
MiB = 1 << 20


def free_port() -> int:
    """A port free now, for the few servers that cannot report the port they bound
    (Prometheus' web UI in the e2e test, the old server in bench/); the exporter binds 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_exporter(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """``python -m exporter ARGS`` from the repository, to its end, output captured as text."""
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kw)


def run_snapshot(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m exporter snapshot ARGS``."""
    return run_exporter("snapshot", *args, timeout=timeout)


def unique_comm(tag: str) -> str:
    """A process name no other test (or other run) uses; at most 15 bytes."""
    return f"dx{os.getpid() % 100000}{tag}"[:15]


@dataclass
class Child:
    proc: subprocess.Popen
    name: str
    hot: int
    cold: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def start_child(name: str, hot_mib: int = 16, cold_mib: int = 48, chunks: int = 2, period: float = 0.05, reserve_mib: int = 0) -> Child:
    p = subprocess.Popen(
        [sys.executable, CHILD, "--name", name, "--hot-mib", str(hot_mib), "--cold-mib", str(cold_mib),
         "--chunks", str(chunks), "--period", str(period), "--reserve-mib", str(reserve_mib)],
        stdout=subprocess.PIPE, text=True,
    )
    line = p.stdout.readline().split()
    assert line and line[0] == "ready", f"child {name} failed to start"
    return Child(p, name, int(line[1]), int(line[2]))


def fast_config(targets_yaml: str, *, cold_age: str = "2s", window: str = "1s", cpu_budget: float = 0.5,
                sample: str = "100ms", aggregation: str = "500ms", update: str = "1s") -> str:
    return (
        f"monitoring:\n  sample_interval: {sample}\n  aggregation_interval: {aggregation}\n  update_interval: {update}\n"
        f"cold_age: {cold_age}\nworking_set_window: {window}\ncpu_budget: {cpu_budget}\ntargets:\n{targets_yaml}"
    )


def comm_target(name: str, comm: str, labels: dict[str, str] | None = None) -> str:
    out = f"  - name: {name}\n    match:\n      comm: [{comm}]\n"
    if labels:
        out += "    labels:\n" + "".join(f"      {k}: {v}\n" for k, v in labels.items())
    return out


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


_LISTENING = re.compile(r"msg=listening address=\S*:(\d+) ")


@dataclass
class Exporter:
    """One exporter subprocess on 127.0.0.1, on the port it bound (0 asks for any); without
    a config path it runs the embedded default config (no --config flag at all)."""

    config_path: Path | None
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    tls: ssl.SSLContext | None = None
    auth: tuple[str, str] | None = None
    extra: list[str] = field(default_factory=list)
    #: capabilities taken away from the root exporter (setpriv drops them from the
    #: bounding set), e.g. ["sys_ptrace", "dac_override"]: root without the privileges
    #: another user's processes need
    drop_caps: list[str] = field(default_factory=list)

    def start(self) -> "Exporter":
        self.log = open(self.log_path, "wb")
        prefix = ["setpriv", "--bounding-set=" + ",".join(f"-{c}" for c in self.drop_caps), "--inh-caps=-all"] if self.drop_caps else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "exporter", *(["--config", str(self.config_path)] if self.config_path else []),
             "--web.listen-address", f"127.0.0.1:{self.port}", "--log.level", "debug", "--log.format", "logfmt",
             *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        if self.port == 0:
            self.port = int(wait_for(lambda: self._bound_port(), timeout=30, what="the exporter's listening line",
                                     describe=self.logs))
        return self

    def _bound_port(self) -> str | None:
        assert self.proc is not None
        m = _LISTENING.search(self.logs())
        if m is None and self.proc.poll() is not None:
            raise AssertionError(f"exporter exited before listening:\n{self.logs()}")
        return m.group(1) if m else None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, path: str, headers: dict[str, str] | None = None, *, tls: ssl.SSLContext | None = None,
                auth: tuple[str, str] | None = None, timeout: float = 10.0) -> Response:
        tls = tls or self.tls
        auth = auth or self.auth
        conn: http.client.HTTPConnection
        if tls is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=tls, timeout=timeout)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if auth:
            h["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        try:
            conn.request("GET", path, headers=h)
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"exporter exited:\n{self.logs()}"
            try:
                return self.request("/-/ready", timeout=2).status == 200
            except OSError:
                return False

        wait_for(ready, timeout, "the exporter ready", interval=0.1, describe=self.logs)

    def scrape(self) -> "Scrape":
        r = self.request("/metrics")
        assert r.status == 200, r
        return Scrape(r.text)

    def wait_for(self, pred, timeout: float = 60.0, what: str = "condition") -> "Scrape":
        """The first scrape for which ``pred`` holds."""
        last: list[Scrape] = []

        def scraped() -> Scrape | None:
            s = self.scrape()
            last[:] = [s]
            return s if pred(s) else None

        return wait_for(scraped, timeout, what, interval=0.2,
                        describe=lambda: f"last scrape:\n{last[0].text if last else ''}\nlogs:\n{self.logs()}")

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


class Scrape:
    """A parsed scrape: families by name and a flat sample lookup."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def get(self, name: str, **labels: str) -> float | None:
        for s in self.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        return None

    def all(self, name: str) -> list:
        return [s for s in self.samples if s.name == name]


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")

"""Run the real exporter as a subprocess, real workloads as children, scrape over HTTP."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

CHILD = str(Path(__file__).with_name("child.py"))
REPO = str(Path(__file__).resolve().parents[2])
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@dataclass
class Exporter:
    """One exporter subprocess on 127.0.0.1:port; without a config path it runs the embedded
    default config (no --config flag at all)."""

    config_path: Path | None
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    tls: ssl.SSLContext | None = None
    auth: tuple[str, str] | None = None
    extra: list[str] = field(default_factory=list)

    def start(self) -> "Exporter":
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", *(["--config", str(self.config_path)] if self.config_path else []),
             "--web.listen-address", f"127.0.0.1:{self.port}", "--log.level", "debug", *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        return self

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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"exporter exited:\n{self.logs()}"
            try:
                if self.request("/-/ready", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"exporter not ready after {timeout}s:\n{self.logs()}")

    def scrape(self) -> "Scrape":
        r = self.request("/metrics")
        assert r.status == 200, r
        return Scrape(r.text)

    def wait_for(self, pred, timeout: float = 60.0, what: str = "condition") -> "Scrape":
        deadline = time.monotonic() + timeout
        s = None
        while time.monotonic() < deadline:
            s = self.scrape()
            if pred(s):
                return s
            time.sleep(0.2)
        raise AssertionError(f"{what} not reached in {timeout}s; last scrape:\n{s.text if s else ''}\nlogs:\n{self.logs()}")

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

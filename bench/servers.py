"""Throwaway servers for the benchmark: a redis-server and daphne instances, all on loopback."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
# The client message limits the project's daphne runs with (Makefile DAPHNE_ARGS).
DAPHNE_LIMITS = ["--websocket-max-message-size", "5120", "--websocket-max-frame-size", "5120"]


def free_port() -> int:
    """Return a TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, process: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Wait until something accepts connections on the port; fail if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            detail = log.read_text()[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"process {process.args[:3]} exited with {process.returncode}\n{detail}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout} s")


@dataclass
class Service:
    """One process of ours, with its log file."""

    name: str
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class Stack:
    """Redis and the daphne instances of one system under test."""

    workdir: Path
    redis: Service | None = None
    servers: list[Service] = field(default_factory=list)

    def start_redis(self) -> Service:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        log = self.workdir / "redis.log"
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--maxclients", "10000", "--protected-mode", "yes"],
            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=self.workdir,
        )
        self.redis = Service("redis", process, port, log)
        wait_for_port(port, process=process, timeout=20, log=log)
        return self.redis

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return f"redis://{HOST}:{self.redis.port}/0"

    def start_daphnes(self, *, count: int, application: str, env: dict[str, str], name: str,
                      extra_args: list[str], backlog: int | None) -> list[Service]:
        started = []
        for index in range(count):
            port = free_port()
            log = self.workdir / f"{name}-{index}.log"
            # Twisted listens with a backlog of 50 unless the endpoint says otherwise.
            listen = ["-e", f"tcp:port={port}:interface={HOST}:backlog={backlog}"] if backlog else ["-b", HOST, "-p", str(port)]
            process = subprocess.Popen(
                [PYTHON, "-m", "daphne", *listen, *DAPHNE_LIMITS, *extra_args, application],
                stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **env},
            )
            started.append(Service(f"{name}-{index}", process, port, log))
        self.servers.extend(started)
        for service in started:
            wait_for_port(service.port, process=service.process, timeout=90, log=service.log)
        return started

    def stop_servers(self) -> None:
        for service in self.servers:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in self.servers:
            service.stop()
        self.servers = []

    def stop(self) -> None:
        self.stop_servers()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None


def production_env(workdir: Path) -> dict[str, str]:
    """The settings a production instance runs with: DEBUG off (what users run; with it on,
    Django also records and formats every SQL statement, which costs the project's numbered,
    logged posts more than a plain insert).

    SECURE_SSL_REDIRECT off: the bench speaks plain HTTP to daphne on loopback, as nginx does
    behind TLS. With DEBUG off the project refuses to start without collected static files, so
    they are collected once into the workdir.
    """
    static_root = workdir / "static"
    env = {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50), "SECURE_SSL_REDIRECT": "0",
           "STATIC_ROOT": str(static_root)}
    if not (static_root / "staticfiles.json").exists():
        _manage("collectstatic", env=env, workdir=workdir)
    return env


def migrate(*, env: dict[str, str], workdir: Path) -> None:
    """Create the project's tables (and the demo feed) in the benchmark's database."""
    _manage("migrate", env=env, workdir=workdir)


def _manage(command: str, *, env: dict[str, str], workdir: Path) -> None:
    """Run `manage.py <command> --noinput` with this environment; its output goes to <workdir>/<command>.log."""
    log = workdir / f"{command}.log"
    with log.open("w") as out:
        result = subprocess.run(
            [PYTHON, "manage.py", command, "--noinput"], cwd=ROOT, env={**os.environ, **env},
            stdout=out, stderr=subprocess.STDOUT, timeout=300,
        )
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{log.read_text()[-3000:]}")


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    """Return user+system CPU seconds of each process."""
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
        except psutil.Error:
            seconds[process.pid] = 0.0
    return seconds


def rss_bytes(processes: list[psutil.Process]) -> int:
    """Return the summed resident memory of the processes."""
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


NODE_PEER = ROOT / "bench" / "peers" / "node"


def ensure_node_peer() -> None:
    """Install the Node peer's pinned packages (`npm ci`, from package-lock.json) when missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("the Node peer needs node and npm (node 20)")
    if (NODE_PEER / "node_modules" / "ws" / "package.json").exists():
        return
    result = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=NODE_PEER,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"npm ci failed in {NODE_PEER}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def start_node_peer(stack: Stack, *, name: str = "node") -> Service:
    """Start the Node peer (one process) on a free port; it joins the stack's servers."""
    ensure_node_peer()
    port = free_port()
    log = stack.workdir / f"{name}-0.log"
    process = subprocess.Popen(
        ["node", str(NODE_PEER / "server.js")], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=NODE_PEER,
        env={**os.environ, "HOST": HOST, "PORT": str(port)},
    )
    service = Service(f"{name}-0", process, port, log)
    stack.servers.append(service)
    wait_for_port(port, process=process, timeout=30, log=log)
    return service

"""Real processes for tests that need more than one server: Redis, daphne instances, readers.

Stable API (used by ``tests.test_multi_instance`` and the browser tests):

``free_port() -> int``
    A free TCP port on 127.0.0.1.

``RedisServer()``
    A throwaway ``redis-server`` on a free loopback port, no persistence.
    ``start()``, ``stop()`` (SIGTERM, waits), ``restart()`` (stop, then start again on the
    same port, empty), ``running``, ``port``, ``url`` (``redis://127.0.0.1:<port>/0``),
    ``command(*args) -> bytes`` (first reply line, e.g. ``b":2"``), ``log() -> str``.
    Never touches the shared server at 6379.

``RedisServer`` and ``DaphneInstance`` also have ``paused()``, a context manager that
    freezes the process (SIGSTOP) for the block.

``DaphneInstance(name, *, redis_url, database_url, env=None, endpoint=None)``
    A real ``daphne livefeed.asgi:application`` process on a free loopback port, with
    ``REDIS_URL``, ``DATABASE_URL``, ``DEBUG=1``, ``SECRET_KEY``, ``FEED_POST_RATE=off`` and
    ``ALLOWED_HOSTS`` set (``env`` adds or overrides variables; fault tests pass
    ``FEED_POST_RATE=30/m``, the default outside tests), and the client message limits
    of the Makefile (``DAPHNE_ARGS``). ``endpoint``: a Twisted endpoint string with ``{port}``
    in place of the TCP one (e.g. ``ssl:port={port}:interface=127.0.0.1:privateKey=...``). ``start()`` (keeps its port
    across restarts), ``wait_ready(timeout)``, ``kill()`` (SIGKILL, waits), ``terminate()``
    (SIGTERM, returns at once), ``wait_exit(timeout) -> returncode``, ``stop()`` (whatever it
    takes), ``running``, ``pid``, ``port``, ``origin``, ``http_url(path)``,
    ``ws_url(slug, json=False)``, ``rss() -> bytes``, ``log(tail) -> str``, and
    ``log_offset()`` / ``log_since(offset)`` for what it wrote in between.

``SilentServer()``
    A loopback TCP server that accepts every connection and never answers (nor closes):
    a Redis that hangs. ``start()``, ``stop()``, ``port``, ``url``
    (``redis://127.0.0.1:<port>/0``), ``connections`` (how many it accepted). For a Redis
    that hangs after having answered, freeze a ``RedisServer`` with ``paused()`` (SIGSTOP):
    the kernel still accepts its connections and nothing answers them.
``NginxServer(upstreams, *, conf=NGINX_CONF, worker_processes=None)``
    A real ``nginx`` (Debian's package, installed by ``scripts/ensure-test-services``) running
    the repository's own ``deploy/nginx.conf`` in front of ``upstreams`` (``DaphneInstance``
    objects or ports; one or two). The file is rendered into a throwaway prefix directory with
    the upstream servers ``web1:8000`` / ``web2:8000``, ``listen 80``, the pid, access log and
    temp paths (and ``worker_processes`` when given) substituted (each must be found exactly once, so a changed file fails loudly, not
    silently) and started as ``nginx -c <file> -p <prefix> -g "daemon off;"``: a child in the
    foreground, never the system service. ``log()`` shows its error log and the end of its
    access log (``access_log()``, where ``upstream=`` names the instances tried). ``start()``,
    ``wait_ready(timeout)``, ``stop()``, ``port``, ``origin``, ``http_url(path)``,
    ``ws_url(slug, json=False)``, ``config`` (the rendered text), ``access_offset()`` and
    ``answered_by(instance, since)`` (whether a request logged after that offset was answered
    by that instance with a status below 500). It also
    quacks like an instance for ``post_comment`` and ``FeedReader``.
    ``nginx_binary()`` returns its path or None.

``RedisServer(port=None, args=())`` takes extra ``redis-server`` arguments (a replica's
    ``--replicaof``) and has ``info(section) -> bytes`` (the whole ``INFO`` reply).

``SentinelCluster(name="livefeed")``
    A master, a replica (``--replicaof``) and one Sentinel (quorum 1, down after 1 s,
    failover timeout 3 s) on free loopback ports: ``start()``, ``env`` (``REDIS_SENTINELS``,
    ``REDIS_SENTINEL_MASTER``, ``REDIS_URL`` empty), ``kill_master()``, ``wait_promoted(timeout)``,
    ``master_port()``, ``processes``, ``stop()``. See the class.

``metric_value(instance, name, **labels) -> float``
    One sample of an instance's ``/metrics`` (0 when absent).

``subprocess_database_url() -> str``
    The ``DATABASE_URL`` of the database this (test) process uses: the test runner's SQLite
    file or PostgreSQL database once it has been set up.

``post_comment(instance, slug, *, author, body, headers=None, timeout=30) -> (status, json)``
    ``POST /api/feeds/<slug>/comments/`` on one instance.

``delete_comment(instance, slug, comment_id, *, token=None) -> (status, body)``
    ``DELETE /api/feeds/<slug>/comments/<id>/`` through an instance, as a token's owner.

``post_form(instance, slug, *, author, body, timeout=30) -> (status, location)``
    The page's form post without JavaScript: reads the page for its CSRF token, then
    ``POST /feeds/<slug>/comments/`` (redirects are not followed; 303 on success).

``sign_in(instance, username, password) -> str``
    Signs in through ``/accounts/login/`` (CSRF token from the page, like a browser) and
    returns the ``sessionid`` cookie's value (sessions are signed with the instances' own
    ``SECRET_KEY``, so make them through an instance).

``FeedReader(instance, slug, *, json=True)``
    A real WebSocket client (``websockets``, sync API) of ``/ws/feeds/<slug>/``; a background
    thread collects every frame. ``connect(resume_after=None)`` (sends
    ``{"type": "resume", "after": n}`` when given), ``seqs`` (event seqs in arrival order,
    created and deleted alike: JSON envelopes, or HTML ``data-seq`` / ``data-deleted-seq``), ``frames``, ``last_seq``, ``close_code``,
    ``closed`` (an Event), ``wait_for_seq(seq, timeout)``, ``wait_closed(timeout)``,
    ``wait_until(predicate, timeout, what)``, ``close()``; ``headers`` (a dict) adds handshake
    headers, ``seqs_of`` (a class attribute) is how a frame's seqs are found.

``NotificationReader(instance, *, json=True, token=None, session=None)``
    A ``FeedReader`` of one person's ``/ws/notifications/`` (``instance.ws_notifications_url(json)``),
    authenticated by an API token (``Authorization: Bearer``) or a session (the ``sessionid``
    cookie's value). ``seqs`` are notification seqs (``notification.created`` envelopes or HTML
    ``<li data-seq>``); ``unread`` lists the badge count of every frame that carries one;
    ``read_frames`` are the ``notifications.read`` frames. ``notification_seqs(frame)`` parses one.

``StalledReader(instance, slug)``
    A raw-socket WebSocket client with a tiny receive buffer that sends ``resume`` and then
    reads nothing until ``drain()``, which reads what is left and returns
    ``(seqs, close_code)``.

``MultiInstanceTestCase(TransactionTestCase)``
    Starts ``cls.redis`` (a ``RedisServer``) and ``cls.instances`` (``instance_count``
    ``DaphneInstance`` objects, env from ``instance_env``) once per class, on the test database;
    ``setUp`` restarts whatever a previous test stopped. Helpers: ``make_feed(slug)``,
    ``reader(instance, slug, json=True, resume_after=0)`` (closed at test end),
    ``notification_reader(instance, json=True, token=None, session=None, resume_after=0)`` (likewise),
    ``stalled_reader(instance, slug)``, ``post(instance, slug, body, author=...)`` (asserts
    201), ``post_many([(instance, count), ...], slug, body=None)`` (one thread per pair),
    ``assertExactlyOnceInOrder(reader_or_seqs, expected)``, ``diagnostics()`` (logs of every
    process, for failure messages). Override the classmethod ``start_redis()`` for several
    shards or Sentinel: it starts them, lists extra processes in ``cls.extra_processes`` and
    returns the instances' Redis variables (e.g. ``SentinelCluster.env``).

Child processes die with the test process (PR_SET_PDEATHSIG); start them from the main thread.
"""
from __future__ import annotations

import base64
import ctypes
import json as jsonlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings
from django.db import connection
from django.test import TransactionTestCase
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

BASE_DIR = Path(settings.BASE_DIR)
SEQ_IN_HTML = re.compile(r'<article\b[^>]*\bdata-(?:deleted-)?seq="(\d+)"')
FEED_EVENT_TYPES = frozenset({"comment.created", "comment.deleted"})
SEQ_IN_NOTIFICATION_HTML = re.compile(r'<li\b[^>]*\bdata-seq="(\d+)"')
UNREAD_IN_HTML = re.compile(r'id="notification-badge"[^>]*\bdata-unread="(\d+)"')
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# The client message limits every daphne of the project runs with (Makefile DAPHNE_ARGS).
DAPHNE_LIMITS = ["--websocket-max-message-size", "5120", "--websocket-max-frame-size", "5120"]


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect (e.g. SECURE_SSL_REDIRECT) is an answer: do not follow it


NO_PROXY_NO_REDIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}), _KeepRedirects())


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc Linux: children are still stopped by tearDownClass
    _LIBC = None


def _die_with_parent() -> None:
    # Linux: the child gets SIGKILL when the thread that started it exits, so a crashed
    # or interrupted test run leaves no daphne or redis-server behind. libc is loaded
    # before the fork: the child runs no loader code that another thread might have locked.
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Return predicate()'s first truthy value, polling until `timeout` s; else AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


class _Process:
    """A child process whose output goes to a log file that outlives restarts."""

    name = "process"

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"livefeed-{self.name}-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._log.write(f"\n--- start {' '.join(argv)}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            argv, cwd=BASE_DIR, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the process and wait for it to be gone."""
        if self.running:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def terminate(self) -> None:
        """Send SIGTERM and return at once (see wait_exit)."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the process (SIGSTOP) for the block: it reads nothing, as if it had stalled."""
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def wait_exit(self, timeout: float) -> int:
        """Return the exit status once the process has exited; raise TimeoutExpired after `timeout`."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, grace: float = 10) -> None:
        """Stop the process: SIGTERM, then SIGKILL after `grace` s."""
        if not self.running:
            return
        self.terminate()
        try:
            self.wait_exit(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def rss(self) -> int:
        """Return the resident set size of the process, in bytes."""
        return psutil.Process(self.pid).memory_info().rss

    def log(self, tail: int = 6000) -> str:
        """Return the end of the process's output (all of its runs)."""
        text = self.log_path.read_text(errors="replace")
        return text[-tail:]

    def log_offset(self) -> int:
        """Return the log's current length, to read only what comes after with log_since()."""
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        """Return the output written after log_offset() returned `offset`."""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def close_log(self) -> None:
        self._log.close()
        self.log_path.unlink(missing_ok=True)


class RedisServer(_Process):
    """A throwaway redis-server on a free loopback port, without persistence."""

    name = "redis"

    def __init__(self, port: int | None = None, args: Iterable[str] = ()) -> None:
        super().__init__()
        self.port = port or free_port()
        self.args = list(args)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        """Start the server (empty) and wait until it answers PING."""
        self._spawn([
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes", *self.args,
        ])
        wait_until(self.ping, timeout, f"redis-server on port {self.port}\n{self.log()}", interval=0.05)

    def ping(self) -> bool:
        """Return whether the server answers PING."""
        if not self.running:
            raise AssertionError(f"redis-server exited:\n{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """Send one command and return the raw first line of the reply (e.g. b":2" for an integer)."""
        request = f"*{len(args)}\r\n" + "".join(f"${len(arg.encode())}\r\n{arg}\r\n" for arg in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(request.encode())
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.split(b"\r\n", 1)[0]

    def info(self, section: str) -> bytes:
        """Return the whole INFO reply of one section (e.g. ``replication``)."""
        request = f"*2\r\n$4\r\nINFO\r\n${len(section)}\r\n{section}\r\n".encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(request)
            reply = b""
            while True:
                chunk = sock.recv(65536)
                reply += chunk
                header, _, rest = reply.partition(b"\r\n")
                if not chunk or (header.startswith(b"$") and len(rest) >= int(header[1:]) + 2):
                    return rest

    def restart(self) -> None:
        """Stop the server and start an empty one on the same port."""
        self.stop()
        self.start()


class SentinelCluster:
    """A master redis-server, one replica of it and one Sentinel watching them, in a temp dir.

    All on free loopback ports. The sentinel monitors the master as ``name`` with a quorum of
    one, ``down-after-milliseconds`` 1000 and ``failover-timeout`` 3000, so a killed master is
    replaced by the replica within a few seconds. ``start(timeout)`` returns once the replica
    is in sync and the sentinel knows it; ``sentinels`` (``"127.0.0.1:<port>"``, the value of
    ``REDIS_SENTINELS``), ``env`` (the instances' Redis variables: ``REDIS_URL`` empty,
    ``REDIS_SENTINELS``, ``REDIS_SENTINEL_MASTER``), ``master`` and ``replica`` (``RedisServer``
    objects; after a failover ``replica`` is the master), ``sentinel`` (the process),
    ``master_port()`` (what the sentinel names now), ``kill_master()`` (SIGKILL),
    ``wait_promoted(timeout)`` (until the sentinel names the replica), ``processes``, ``stop()``.
    """

    def __init__(self, name: str = "livefeed") -> None:
        self.name = name
        # One temp dir (removed with the sentinel's log): a master syncing its replica writes RDB
        # files even without --save, and they must not land in the project directory.
        directory = Path(tempfile.mkdtemp(prefix="livefeed-sentinel-"))
        for part in ("master", "replica"):
            (directory / part).mkdir()
        self.master = RedisServer(args=["--dir", str(directory / "master")])
        self.replica = RedisServer(args=["--dir", str(directory / "replica"), "--replicaof", "127.0.0.1", str(self.master.port)])
        self.sentinel = _SentinelProcess(name, self.master.port, directory)

    @property
    def processes(self) -> list[_Process]:
        return [self.master, self.replica, self.sentinel]

    @property
    def sentinels(self) -> str:
        return f"127.0.0.1:{self.sentinel.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"REDIS_URL": "", "REDIS_SENTINELS": self.sentinels, "REDIS_SENTINEL_MASTER": self.name}

    def _sentinel_client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.sentinel.port, socket_timeout=2, decode_responses=True)

    def master_port(self) -> int | None:
        """Return the port of the master the sentinel names now (None if it does not answer)."""
        try:
            with self._sentinel_client() as client:
                address = client.sentinel_get_master_addr_by_name(self.name)
        except OSError:
            return None
        except Exception:  # redis.exceptions.ConnectionError is no OSError
            return None
        return int(address[1]) if address else None

    def _replica_in_sync(self) -> bool:
        return b"master_link_status:up" in self.replica.info("replication")

    def _sentinel_knows_replica(self) -> bool:
        try:
            with self._sentinel_client() as client:
                return int(client.sentinel_master(self.name).get("num-slaves", 0)) >= 1
        except Exception:
            return False

    def start(self, timeout: float = 20) -> None:
        self.master.start()
        self.replica.start()
        wait_until(self._replica_in_sync, timeout, f"the replica to sync\n{self.replica.log()}", interval=0.05)
        self.sentinel.start()
        wait_until(self._sentinel_knows_replica, timeout, f"the sentinel to find the replica\n{self.sentinel.log()}", interval=0.05)

    def kill_master(self) -> None:
        """SIGKILL the master: the sentinel notices after about a second and promotes the replica."""
        self.master.kill()

    def wait_promoted(self, timeout: float = 15) -> None:
        wait_until(lambda: self.master_port() == self.replica.port, timeout, f"the failover\n{self.sentinel.log()}", interval=0.05)

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.close_log()


class _SentinelProcess(RedisServer):
    """``redis-server <conf> --sentinel`` monitoring one master (its config file in a temp dir)."""

    name = "sentinel"

    def __init__(self, master_name: str, master_port: int, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.conf = self.directory / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.directory}\n"
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {master_name} 1000\n"
            f"sentinel failover-timeout {master_name} 3000\n"
            f"sentinel parallel-syncs {master_name} 1\n"
        )

    def start(self, timeout: float = 10) -> None:
        # The sentinel rewrites its file (what it learns); the file stays in the temp dir.
        self._spawn(["redis-server", str(self.conf), "--sentinel"])
        wait_until(self.ping, timeout, f"sentinel on port {self.port}\n{self.log()}", interval=0.05)

    def close_log(self) -> None:
        super().close_log()
        shutil.rmtree(self.directory, ignore_errors=True)


class SilentServer:
    """A loopback TCP server that accepts connections and never answers: a hung Redis."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self._listener: socket.socket | None = None
        self._accepted: list[socket.socket] = []
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Listen on a free loopback port and hold every connection open, unanswered."""
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(512)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed by stop()
                return
            self._accepted.append(conn)
            self.connections += 1

    def stop(self) -> None:
        """Close the listener and every connection it accepted."""
        if self._listener is not None:
            # shutdown() wakes the accept() of the thread, close() alone does not on Linux.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        if self._thread is not None:
            self._thread.join(5)
        for conn in self._accepted:
            conn.close()
        self._accepted.clear()


def subprocess_database_url() -> str:
    """Return a DATABASE_URL for the database this process uses now (the test database in tests)."""
    db = connection.settings_dict
    engine = db["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        name = str(db["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise RuntimeError("other processes cannot open an in-memory SQLite test database")
        return f"sqlite:///{Path(name).resolve()}"
    if engine in {"django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"}:
        user = urllib.parse.quote(db.get("USER") or "", safe="")
        password = urllib.parse.quote(db.get("PASSWORD") or "", safe="")
        credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = db.get("HOST") or "127.0.0.1"
        port = f":{db['PORT']}" if db.get("PORT") else ""
        return f"postgres://{credentials}{host}{port}/{urllib.parse.quote(str(db['NAME']), safe='')}"
    raise RuntimeError(f"no DATABASE_URL for engine {engine}")


class DaphneInstance(_Process):
    """A real daphne process serving livefeed.asgi:application on a free loopback port."""

    def __init__(
        self, name: str, *, redis_url: str, database_url: str, env: dict[str, str] | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.name = name
        super().__init__()
        self.port = free_port()
        self.endpoint = endpoint or "tcp:port={port}:interface=127.0.0.1:backlog=4096"
        self.env = {
            **{key: value for key, value in os.environ.items() if "PROXY" not in key.upper()},
            "DJANGO_SETTINGS_MODULE": "livefeed.settings",
            "PYTHONUNBUFFERED": "1",
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "DEBUG": "1",
            "SECRET_KEY": "multi-instance-test-secret-key-not-for-production",
            # Off by default because every test client posts from 127.0.0.1, so the per-client
            # limit (30/m) would refuse the delivery tests' hundreds of posts for the clock's sake,
            # not the code's. The Redis-fault, shutdown and notification tests and the limit's own
            # tests pass FEED_POST_RATE=30/m, the default users get, through `env`; tests that post
            # faster from one client on purpose (the nginx rolling restart) set and explain their own.
            "FEED_POST_RATE": "off",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http_url(self, path: str) -> str:
        return f"{self.origin}{path}"

    def ws_url(self, slug: str, json: bool = False) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/feeds/{slug}/" + ("?format=json" if json else "")

    def ws_notifications_url(self, json: bool = False) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/notifications/" + ("?format=json" if json else "")

    def start(self) -> None:
        """Start daphne on this instance's port (the same one across restarts); see wait_ready."""
        self._spawn(
            [
                sys.executable, "-m", "daphne", "-e", self.endpoint.format(port=self.port), *DAPHNE_LIMITS,
                "livefeed.asgi:application",
            ],
            env=self.env,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the instance answers HTTP; raise with its log if it exits or never answers."""

        def answers() -> bool:
            if not self.running:
                raise AssertionError(f"daphne {self.name} exited with {self.process.returncode}:\n{self.log()}")
            try:
                with NO_PROXY_NO_REDIRECT.open(self.http_url("/api/feeds/"), timeout=2) as response:
                    return response.status < 500
            except urllib.error.HTTPError as error:
                return error.code < 500
            except OSError:
                return False

        wait_until(answers, timeout, f"daphne {self.name} on port {self.port} to answer", interval=0.1)


NGINX_CONF = BASE_DIR / "deploy" / "nginx.conf"


def nginx_binary() -> str | None:
    """Return the nginx executable's path (Debian puts it in /usr/sbin), or None."""
    import shutil

    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/local/nginx/sbin")


class NginxServer(_Process):
    """The repository's deploy/nginx.conf, run by a real nginx in front of test instances."""

    name = "nginx"

    def __init__(self, upstreams: list[DaphneInstance | int], *, conf: Path = NGINX_CONF, worker_processes: int | None = None) -> None:
        super().__init__()
        self.worker_processes = worker_processes
        ports = [item if isinstance(item, int) else item.port for item in upstreams]
        if not 1 <= len(ports) <= 2:
            raise ValueError("nginx.conf has two upstream servers: give one or two upstreams")
        self.upstream_ports = ports if len(ports) == 2 else ports * 2
        self.port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="livefeed-nginx-"))
        # As root, nginx's workers run as an unprivileged user: they must reach the prefix.
        self.prefix.chmod(0o755)
        self.conf_path = self.prefix / "nginx.conf"
        self.access_log_path = self.prefix / "access.log"
        self.config = self.render(conf.read_text())
        self.conf_path.write_text(self.config)

    def render(self, text: str) -> str:
        """Return the configuration with this test's addresses and paths in place of the compose ones."""
        replacements = [
            (r"server web1:8000\b", f"server 127.0.0.1:{self.upstream_ports[0]}"),
            (r"server web2:8000\b", f"server 127.0.0.1:{self.upstream_ports[1]}"),
            (r"listen 80;", f"listen 127.0.0.1:{self.port};"),
            (r"^pid \S+;", f"pid {self.prefix}/nginx.pid;"),
            (r"\baccess_log \S+ upstream;", f"access_log {self.access_log_path} upstream;"),
        ]
        for directive in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            replacements.append((rf"\b{directive}_temp_path \S+;", f"{directive}_temp_path {self.prefix}/{directive}_temp;"))
        if self.worker_processes is not None:
            replacements.append((r"^worker_processes \S+;", f"worker_processes {self.worker_processes};"))
        for pattern, replacement in replacements:
            text, count = re.subn(pattern, lambda _match, value=replacement: value, text, flags=re.MULTILINE)
            if count != 1:
                raise AssertionError(f"deploy/nginx.conf: expected `{pattern}` exactly once, found it {count} times")
        return text

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http_url(self, path: str) -> str:
        return f"{self.origin}{path}"

    def ws_url(self, slug: str, json: bool = False) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/feeds/{slug}/" + ("?format=json" if json else "")

    def start(self, timeout: float = 10) -> None:
        """Start nginx in the foreground (a child process) and wait until it accepts connections."""
        binary = nginx_binary()
        if binary is None:
            raise AssertionError("nginx is not installed (scripts/ensure-test-services installs it)")
        self._spawn([binary, "-e", "stderr", "-p", f"{self.prefix}/", "-c", str(self.conf_path), "-g", "daemon off;"])
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 10) -> None:
        def accepts() -> bool:
            if not self.running:
                raise AssertionError(f"nginx exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(accepts, timeout, f"nginx on port {self.port}\n{self.log()}", interval=0.05)

    def access_log(self) -> str:
        """Return the access log: one line per request, `upstream=` naming the instances tried."""
        try:
            return self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_offset(self) -> int:
        """Return the access log's length now, for answered_by(instance, since=...)."""
        return len(self.access_log())

    def answered_by(self, instance: DaphneInstance, since: int) -> bool:
        """Return whether a request logged after access_offset() `since` got an answer below 500 from `instance`."""
        pattern = re.compile(rf'" (\d{{3}}) \d+ upstream=(?:\S+, )*127\.0\.0\.1:{instance.port} ')
        return any(int(match.group(1)) < 500 for match in pattern.finditer(self.access_log()[since:]))

    def log(self, tail: int = 6000) -> str:
        """Return the end of the error log (stderr) and of the access log."""
        return f"{super().log(tail)}\n--- access log:\n{self.access_log()[-tail:]}"

    def close_log(self) -> None:
        super().close_log()
        import shutil

        shutil.rmtree(self.prefix, ignore_errors=True)


def metric_value(instance: DaphneInstance, name: str, **labels: str) -> float:
    """Return one sample of an instance's ``/metrics`` (0 when absent), e.g. ``livefeed_db_fills_total``."""
    with NO_PROXY.open(instance.http_url("/metrics"), timeout=10) as response:
        text = response.read().decode()
    label_text = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(label_text) + r"\}" if labels else "") + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def post_comment(
    instance: DaphneInstance, slug: str, *, author: str, body: str,
    headers: dict[str, str] | None = None, timeout: float = 30,
) -> tuple[int, Any]:
    """POST a comment through an instance's JSON API; return (status, decoded JSON body or text)."""
    request = urllib.request.Request(
        instance.http_url(f"/api/feeds/{slug}/comments/"),
        data=jsonlib.dumps({"author": author, "body": body}).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json", **(headers or {})},
        method="POST",
    )
    return _send_json_request(request, timeout)


def _send_json_request(request: urllib.request.Request, timeout: float) -> tuple[int, Any]:
    """Send a request; return (status, decoded JSON body, its text if not JSON, or None if empty)."""
    try:
        with NO_PROXY.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    if not raw:
        return status, None
    try:
        return status, jsonlib.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def delete_comment(
    instance: DaphneInstance, slug: str, comment_id: int, *, token: str | None = None, timeout: float = 30
) -> tuple[int, Any]:
    """DELETE a comment through an instance's JSON API (as the token's owner, if given); return (status, body)."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        instance.http_url(f"/api/feeds/{slug}/comments/{comment_id}/"), headers=headers, method="DELETE"
    )
    return _send_json_request(request, timeout)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post_form(instance: DaphneInstance, slug: str, *, author: str, body: str, timeout: float = 30) -> tuple[int, str]:
    """Post the feed page's form like a browser without JavaScript; return (status, Location)."""
    import http.cookiejar

    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect
    )
    with opener.open(instance.http_url(f"/feeds/{slug}/"), timeout=timeout) as response:
        page = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None, "no CSRF token on the page"
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token.group(1), "author": author, "body": body}).encode()
    request = urllib.request.Request(instance.http_url(f"/feeds/{slug}/comments/"), data=data, method="POST")
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.headers.get("Location", "")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location", "")


def sign_in(instance: DaphneInstance, username: str, password: str, timeout: float = 30) -> str:
    """Sign in through an instance's /accounts/login/ form like a browser; return the sessionid cookie's value."""
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
    with opener.open(instance.http_url("/accounts/login/"), timeout=timeout) as response:
        page = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None, "no CSRF token on the sign-in page"
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token.group(1), "username": username, "password": password}).encode()
    request = urllib.request.Request(instance.http_url("/accounts/login/"), data=data, method="POST")
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    session = next((cookie.value for cookie in jar if cookie.name == "sessionid"), None)
    assert status in (302, 303) and session, f"sign-in of {username} via {instance.name} answered {status}"
    return session


def _frame_seqs(frame: str | bytes, event_types: frozenset[str], in_html: re.Pattern[str]) -> list[int]:
    if isinstance(frame, bytes):
        frame = frame.decode(errors="replace")
    text = frame.lstrip()
    if text.startswith("{"):
        try:
            event = jsonlib.loads(text)
        except ValueError:
            return []
        return [int(event["seq"])] if event.get("type") in event_types else []
    return [int(seq) for seq in in_html.findall(text)]


def comment_seqs(frame: str | bytes) -> list[int]:
    """Return the event seqs a frame carries, created or deleted: a JSON envelope's seq, or HTML
    articles' data-seq (a comment) and data-deleted-seq (a removal)."""
    return _frame_seqs(frame, FEED_EVENT_TYPES, SEQ_IN_HTML)


WATCHING_IN_HTML = re.compile(r'<span id="feed-watching"[^>]*\bdata-watching="(\d+)"')


def presence_watching(frame: str | bytes) -> int | None:
    """Return the watching count of a presence frame (JSON feed.presence or the HTML swap), else None."""
    if isinstance(frame, bytes):
        frame = frame.decode(errors="replace")
    text = frame.lstrip()
    if text.startswith("{"):
        try:
            event = jsonlib.loads(text)
        except ValueError:
            return None
        return int(event["watching"]) if event.get("type") == "feed.presence" else None
    match = WATCHING_IN_HTML.match(text)
    return int(match.group(1)) if match else None


async def receive_skipping_presence(communicator: Any, timeout: float = 10) -> dict[str, Any]:
    """Return a WebsocketCommunicator's next output that is not a presence frame (those carry no seq)."""
    deadline = time.monotonic() + timeout
    while True:
        output = await communicator.receive_output(timeout=max(0.01, deadline - time.monotonic()))
        if output.get("type") != "websocket.send" or presence_watching(output.get("text") or "") is None:
            return output


async def nothing_but_presence(communicator: Any, within: float) -> bool:
    """Return whether a WebsocketCommunicator gets nothing but presence frames for `within` seconds."""
    deadline = time.monotonic() + within
    while (remaining := deadline - time.monotonic()) > 0:
        if await communicator.receive_nothing(timeout=remaining):
            return True
        output = await communicator.receive_output(timeout=1)
        if output.get("type") != "websocket.send" or presence_watching(output.get("text") or "") is None:
            return False
    return True


class FeedReader:
    """A WebSocket reader of one feed on one instance; a background thread collects frames.

    Presence frames (no seq, outside the seq guarantee) are kept apart: ``frames`` holds the
    stream's other frames, ``watching`` the counts of the presence frames in arrival order.
    """

    # How a frame's seqs are found; NotificationReader reads notification seqs instead.
    seqs_of: Callable[[str | bytes], list[int]] = staticmethod(comment_seqs)  # type: ignore[assignment]

    def __init__(self, instance: DaphneInstance, slug: str, *, json: bool = True) -> None:
        self.instance = instance
        self.slug = slug
        self.json = json
        self.url = instance.ws_url(slug, json=json)
        self.headers: dict[str, str] = {}
        self.frames: list[str] = []
        self.seqs: list[int] = []
        self.arrivals: list[float] = []  # time.monotonic() of each seq's arrival
        self.watching: list[int] = []  # presence frames' counts
        self.presence_frames: list[str] = []  # the presence frames themselves
        self.closed = threading.Event()
        self.close_code: int | None = None
        self._connection: ClientConnection | None = None
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<FeedReader {self.instance.name} {'json' if self.json else 'html'} {self.slug} last={self.last_seq}>"

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def connect(self, resume_after: int | None = None, timeout: float = 20) -> FeedReader:
        """Open the socket and start collecting; send resume first when `resume_after` is given."""
        self._connection = connect(
            self.url, origin=self.instance.origin, open_timeout=timeout, proxy=None,
            compression=None, max_size=None, ping_interval=None, close_timeout=5,
            additional_headers=self.headers or None,
        )
        if resume_after is not None:
            self.send({"type": "resume", "after": resume_after})
        self._thread = threading.Thread(target=self._collect, name=f"reader-{self.instance.name}", daemon=True)
        self._thread.start()
        return self

    def send(self, message: dict[str, Any]) -> None:
        assert self._connection is not None
        self._connection.send(jsonlib.dumps(message))

    def _collect(self) -> None:
        connection_ = self._connection
        try:
            for frame in connection_:
                watching = presence_watching(frame)
                if watching is not None:
                    with self._changed:
                        self.watching.append(watching)
                        self.presence_frames.append(frame if isinstance(frame, str) else frame.decode(errors="replace"))
                        self._changed.notify_all()
                    continue
                seqs = self.seqs_of(frame)
                now = time.monotonic()
                with self._changed:
                    self.frames.append(frame if isinstance(frame, str) else frame.decode(errors="replace"))
                    self.seqs.extend(seqs)
                    self.arrivals.extend(now for _ in seqs)
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                self.close_code = connection_.close_code if connection_.close_code is not None else 1006
                self.closed.set()
                self._changed.notify_all()

    def wait_until(self, predicate: Callable[[FeedReader], bool], timeout: float, what: str) -> None:
        """Wait until predicate(self) holds; AssertionError naming `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self!r}: timed out after {timeout:.1f}s waiting for {what}; "
                        f"got {len(self.seqs)} seqs: {_summarise(self.seqs)}; close code {self.close_code}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def wait_for_seq(self, seq: int, timeout: float = 20) -> None:
        """Wait until a comment with seq >= `seq` has arrived."""
        self.wait_until(lambda reader: reader.last_seq >= seq, timeout, f"seq {seq}")

    def wait_watching(self, count: int, timeout: float = 20) -> None:
        """Wait until the latest presence frame says `count` watching."""
        self.wait_until(
            lambda reader: reader.watching[-1:] == [count], timeout, f"{count} watching (have {self.watching[-5:]})"
        )

    def wait_closed(self, timeout: float = 20) -> int:
        """Wait until the server closed the connection; return the close code (1006: no close frame)."""
        self.wait_until(lambda reader: reader.closed.is_set(), timeout, "the connection to close")
        return self.close_code  # type: ignore[return-value]

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def notification_seqs(frame: str | bytes) -> list[int]:
    """Return the notification seqs a frame carries: a notification.created envelope's seq, or HTML items' data-seq."""
    return _frame_seqs(frame, frozenset({"notification.created"}), SEQ_IN_NOTIFICATION_HTML)


class NotificationReader(FeedReader):
    """A WebSocket reader of one person's ``/ws/notifications/`` on one instance.

    Authenticated by ``token`` (``Authorization: Bearer``) or ``session`` (the ``sessionid``
    cookie's value); ``seqs`` are notification seqs, ``unread`` the count of each frame that
    carries one (JSON: ``notifications.read``; HTML: every frame, in its badge).
    """

    seqs_of = staticmethod(notification_seqs)

    def __init__(
        self, instance: DaphneInstance, *, json: bool = True, token: str | None = None, session: str | None = None
    ) -> None:
        super().__init__(instance, "notifications", json=json)
        self.url = instance.ws_notifications_url(json=json)
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        if session is not None:
            self.headers["Cookie"] = f"sessionid={session}"

    def __repr__(self) -> str:
        return f"<NotificationReader {self.instance.name} {'json' if self.json else 'html'} last={self.last_seq}>"

    @property
    def unread(self) -> list[int]:
        """The unread count of every frame that carries one, in arrival order."""
        counts = []
        for frame in self.frames:
            if frame.lstrip().startswith("{"):
                event = jsonlib.loads(frame)
                if "unread" in event:
                    counts.append(int(event["unread"]))
            else:
                counts.extend(int(count) for count in UNREAD_IN_HTML.findall(frame))
        return counts

    @property
    def read_frames(self) -> list[str]:
        """The frames of notifications.read events (JSON type, or HTML with a badge and no item)."""
        return [
            frame for frame in self.frames
            if ('"notifications.read"' in frame if frame.lstrip().startswith("{")
                else UNREAD_IN_HTML.search(frame) and not SEQ_IN_NOTIFICATION_HTML.search(frame))
        ]


def _summarise(seqs: list[int]) -> str:
    if len(seqs) <= 40:
        return str(seqs)
    return f"{seqs[:20]} ... {seqs[-20:]}"


class StalledReader:
    """A raw WebSocket client with a tiny receive buffer that stops reading after `resume`.

    The server sees it as a reader whose socket never drains. ``drain()`` then reads everything
    that is left, up to the close frame or EOF, and returns (seqs, close_code or None).
    """

    def __init__(self, instance: DaphneInstance, slug: str, *, json: bool = False, rcvbuf: int = 4096) -> None:
        self.instance = instance
        self.path = f"/ws/feeds/{slug}/" + ("?format=json" if json else "")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._buffer = b""

    def connect(self, resume_after: int = 0, timeout: float = 20) -> StalledReader:
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", self.instance.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.instance.port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {self.instance.origin}\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"handshake refused: {self._buffer!r}")
            self._buffer += chunk
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise AssertionError(f"handshake refused: {head!r}")
        payload = jsonlib.dumps({"type": "resume", "after": resume_after}).encode()
        mask = os.urandom(4)
        header = bytes([0x81, 0x80 | len(payload)]) if len(payload) < 126 else bytes([0x81, 0xFE]) + struct.pack("!H", len(payload))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        return self

    def drain(self, timeout: float = 30) -> tuple[list[int], int | None]:
        """Read up to the close frame or EOF; return the comment seqs and the close code."""
        self.sock.settimeout(timeout)
        data = self._buffer
        seqs: list[int] = []
        message = b""
        while True:
            frame = _parse_frame(data)
            if frame is None:
                try:
                    chunk = self.sock.recv(1 << 16)
                except (ConnectionResetError, TimeoutError, socket.timeout):
                    chunk = b""
                if not chunk:
                    return seqs, None
                data += chunk
                continue
            opcode, fin, payload, data = frame
            if opcode == 0x8:
                return seqs, struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if opcode in (0x1, 0x2, 0x0):
                message += payload
                if fin:
                    seqs.extend(comment_seqs(message))
                    message = b""

    def close(self) -> None:
        self.sock.close()


def _parse_frame(data: bytes) -> tuple[int, bool, bytes, bytes] | None:
    """Parse one unmasked server frame: (opcode, fin, payload, rest), or None if incomplete."""
    if len(data) < 2:
        return None
    fin, opcode, length, offset = bool(data[0] & 0x80), data[0] & 0x0F, data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None
        length, offset = struct.unpack("!H", data[2:4])[0], 4
    elif length == 127:
        if len(data) < 10:
            return None
        length, offset = struct.unpack("!Q", data[2:10])[0], 10
    if len(data) < offset + length:
        return None
    return opcode, fin, data[offset:offset + length], data[offset + length:]


class MultiInstanceTestCase(TransactionTestCase):
    """Real daphne instances on one throwaway Redis and the test database, shared by a class."""

    instance_count = 2
    instance_env: dict[str, str] = {}
    redis: RedisServer
    instances: list[DaphneInstance]
    extra_processes: list[_Process]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.redis = RedisServer()
        cls.instances = []
        cls.extra_processes = []
        try:
            redis_env = cls.start_redis()
            database_url = subprocess_database_url()
            for index in range(cls.instance_count):
                cls.instances.append(
                    DaphneInstance(
                        chr(ord("A") + index), redis_url=cls.redis.url, database_url=database_url,
                        env={**redis_env, **cls.instance_env},
                    )
                )
            for instance in cls.instances:
                instance.start()
            for instance in cls.instances:
                instance.wait_ready()
        except BaseException:
            cls._stop_processes()
            super().tearDownClass()
            raise

    @classmethod
    def start_redis(cls) -> dict[str, str]:
        """Start the class's Redis; return Redis variables for the instances (over REDIS_URL=cls.redis.url).

        Override for several shards or Sentinel: start them, list the processes besides
        ``cls.redis`` in ``cls.extra_processes`` (stopped with the instances, in ``diagnostics()``).
        """
        cls.redis.start()
        return {}

    @classmethod
    def tearDownClass(cls) -> None:
        # Before the runner drops the test database: PostgreSQL refuses while they are connected.
        cls._stop_processes()
        super().tearDownClass()

    @classmethod
    def _stop_processes(cls) -> None:
        for process in [*getattr(cls, "instances", []), getattr(cls, "redis", None), *getattr(cls, "extra_processes", [])]:
            if process is not None:
                process.kill()
                process.close_log()

    def setUp(self) -> None:
        super().setUp()
        self._readers: list[FeedReader | StalledReader] = []  # NotificationReader is a FeedReader
        self.addCleanup(self._close_readers)
        if not self.redis.running:
            self.redis.start()
        stopped = [instance for instance in self.instances if not instance.running]
        for instance in stopped:
            instance.start()
        for instance in stopped:
            instance.wait_ready()

    def _close_readers(self) -> None:
        for reader in self._readers:
            reader.close()

    def make_feed(self, slug: str, title: str = "Multi-instance test feed") -> Any:
        """Create a feed that takes anonymous posts (TransactionTestCase flushes the demo feed)."""
        from feed.models import Feed

        return Feed.objects.create(slug=slug, title=title, allow_anonymous=True)

    def reader(self, instance: DaphneInstance, slug: str, *, json: bool = True, resume_after: int | None = 0) -> FeedReader:
        """Return a connected FeedReader that sent resume (after 0 by default); closed at test end."""
        reader = FeedReader(instance, slug, json=json)
        self._readers.append(reader)
        return reader.connect(resume_after=resume_after)

    def notification_reader(
        self, instance: DaphneInstance, *, json: bool = True, token: str | None = None, session: str | None = None,
        resume_after: int | None = 0,
    ) -> NotificationReader:
        """Return a connected NotificationReader (token or session) that sent resume; closed at test end."""
        reader = NotificationReader(instance, json=json, token=token, session=session)
        self._readers.append(reader)
        return reader.connect(resume_after=resume_after)

    def stalled_reader(self, instance: DaphneInstance, slug: str, *, json: bool = False) -> StalledReader:
        reader = StalledReader(instance, slug, json=json)
        self._readers.append(reader)
        return reader.connect()

    def post(self, instance: DaphneInstance, slug: str, body: str, author: str = "tester") -> dict[str, Any]:
        """Post through an instance's API; assert 201 and return the comment."""
        status, data = post_comment(instance, slug, author=author, body=body)
        self.assertEqual(status, 201, f"POST via {instance.name} answered {status}: {data}\n{self.diagnostics()}")
        return data

    def post_many(self, targets: Iterable[tuple[DaphneInstance, int]], slug: str, body: Callable[[str, int], str] | None = None) -> list[dict[str, Any]]:
        """Post concurrently: one poster thread per (instance, count); return every created comment."""
        created: list[dict[str, Any]] = []
        failures: list[str] = []
        lock = threading.Lock()

        def poster(number: int, instance: DaphneInstance, count: int) -> None:
            for index in range(count):
                text = body(f"p{number}", index) if body else f"poster {number} comment {index}"
                try:
                    status, data = post_comment(instance, slug, author=f"poster{number}", body=text)
                except OSError as error:
                    status, data = 0, repr(error)
                with lock:
                    if status == 201:
                        created.append(data)
                    else:
                        failures.append(f"poster {number} via {instance.name}: {status} {data}")

        threads = [threading.Thread(target=poster, args=(number, instance, count)) for number, (instance, count) in enumerate(targets)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(failures, [], self.diagnostics())
        return created

    def assertExactlyOnceInOrder(self, reader: FeedReader | list[int], expected: list[int], msg: str = "") -> None:
        """Assert the seqs received are exactly `expected`: each once, in order, nothing else."""
        seqs = reader.seqs if isinstance(reader, FeedReader) else reader
        if seqs == expected:
            return
        duplicates = sorted({seq for seq in seqs if seqs.count(seq) > 1})
        missing = sorted(set(expected) - set(seqs))
        out_of_order = [b for a, b in zip(seqs, seqs[1:]) if b <= a]
        self.fail(
            f"{msg} {reader!r}: expected seqs {_summarise(expected)}, got {len(seqs)}: {_summarise(seqs)}; "
            f"missing {_summarise(missing)}; duplicated {duplicates[:40]}; out of order at {out_of_order[:40]}"
        )

    def diagnostics(self) -> str:
        """Return the end of every process's log, for failure messages."""
        processes = [*self.instances, self.redis, *self.extra_processes]
        parts = [f"--- {process.name} (port {getattr(process, 'port', '-')}) log:\n{process.log(3000)}" for process in processes]
        return "\n".join(parts)

"""The load generator: WebSocket readers in worker processes, and an HTTP poster.

Readers are a small hand-written WebSocket client on asyncio.Protocol (uvloop when it is
installed): the handshake, unmasked server frames, pings answered, close. A general client
library costs several times more CPU per frame, and on a 2-core machine the generator shares
the cores with the servers it measures, so every microsecond per delivery counts.
Each delivery is recorded as (seq, receive time) per connection; time.monotonic() is the
system-wide CLOCK_MONOTONIC, comparable between the generator's processes.

Seqs never repeat within a run: the project numbers comments in its database, and for the
peer (which numbers nothing) one SeqCounter per system numbers every post of every phase. A
frame whose seq is at or below the phase's floor (the highest seq of the earlier phases)
belongs to an earlier phase: it is not counted as one of the phase's deliveries.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import time
from array import array
from datetime import datetime
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

try:
    import uvloop
except ImportError:  # optional: plain asyncio works, with more generator CPU
    uvloop = None

SEQ_RE = re.compile(rb'"seq":\s*(\d+)')
HANDSHAKE_LIMIT = 16 * 1024


def new_event_loop() -> asyncio.AbstractEventLoop:
    """Return a uvloop loop when available, the standard one otherwise."""
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """Return one client frame (clients must mask, RFC 6455 5.3)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + body


class Reader(asyncio.Protocol):
    """One WebSocket reader. Records (seq, receive time) of every comment frame."""

    # Frames of seqs above the floor are the current phase's (`fresh`); one floor per worker
    # process, set by the orchestrator at the start of each phase.
    floor = 0

    def __init__(
        self, *, host: str, port: int, path: str, hello: bytes | None, token: str | None = None, label: int = 0
    ) -> None:
        origin = f"http://{host}:{port}"
        # With a token, a person's notification socket: Bearer on the handshake, and every
        # notification frame recorded with the seq of the comment that caused it.
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n{auth}\r\n"
        ).encode()
        self.hello = hello
        self.notifications = token is not None
        self.label = label
        self.comment_seqs = array("q")
        self.created = array("d")  # the notification's created_at, seconds since the epoch
        self.host, self.port, self.path = host, port, path
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.handshaking = True
        self.buffer = bytearray()
        self.fragments = bytearray()
        self.seqs = array("q")
        self.times = array("d")
        self.fresh = 0
        self.other_frames = 0
        self.presence_frames = 0  # feed.presence frames (no seq), counted in the storm scenario
        self.close_code: int | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost during handshake: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buffer = self.buffer
        buffer += data
        if self.handshaking:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > HANDSHAKE_LIMIT:
                    self.abort(ConnectionError("oversized handshake response"))
                return
            status_line = bytes(buffer[: buffer.find(b"\r\n")])
            if b" 101 " not in status_line + b" ":
                self.abort(ConnectionError(status_line.decode("latin-1")))
                return
            del buffer[: end + 4]
            self.handshaking = False
            if self.hello is not None:
                self.transport.write(masked_frame(0x1, self.hello))
            self.opened.set_result(None)
        self._frames(now)

    def _frames(self, now: float) -> None:
        buffer = self.buffer
        pos = 0
        size = len(buffer)
        while size - pos >= 2:
            b0 = buffer[pos]
            b1 = buffer[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                head = 10
            if b1 & 0x80:
                self.abort(ConnectionError("masked frame from the server"))
                return
            if size - pos < head + length:
                break
            payload = buffer[pos + head : pos + head + length]
            pos += head + length
            opcode = b0 & 0x0F
            if opcode in (0x0, 0x1, 0x2):
                if not b0 & 0x80:
                    self.fragments += payload
                    continue
                if self.fragments:
                    payload = self.fragments + payload
                    self.fragments = bytearray()
                self._message(payload, now)
            elif opcode == 0x9:
                self.transport.write(masked_frame(0xA, bytes(payload)))
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self.closing:
                    self.transport.write(masked_frame(0x8, bytes(payload[:2])))
                self.transport.close()
                pos = size
                break
        del buffer[:pos]

    def _message(self, payload: bytearray, now: float) -> None:
        if self.notifications:
            self._notification(payload, now)
            return
        # The envelope's own "seq" comes before the comment's (contract key order); checked
        # against the parsed envelope for the first frame of every connection.
        match = SEQ_RE.search(payload)
        if match is None:
            self.other_frames += 1
            if b'"feed.presence"' in payload:
                self.presence_frames += 1
            return
        seq = int(match.group(1))
        if not self.seqs:
            envelope = json.loads(payload)
            if envelope.get("type") != "comment.created" or envelope.get("seq") != seq:
                self.other_frames += 1
                return
        self.seqs.append(seq)
        self.times.append(now)
        if seq > Reader.floor:
            self.fresh += 1

    def _notification(self, payload: bytearray, now: float) -> None:
        # A few frames per second per socket: parsing each one whole costs little.
        envelope = json.loads(payload)
        if envelope.get("type") != "notification.created":
            self.other_frames += 1
            return
        self.seqs.append(int(envelope["seq"]))
        self.times.append(now)
        self.comment_seqs.append(int(envelope["data"]["comment"]["seq"]))
        self.created.append(datetime.fromisoformat(envelope["data"]["created_at"].replace("Z", "+00:00")).timestamp())
        self.fresh += 1  # per-person seqs: every notification frame is the current phase's

    def abort(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def close(self, *, abrupt: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if abrupt:
            self.transport.abort()
            return
        self.closing = True
        self.transport.write(masked_frame(0x8, (1000).to_bytes(2, "big")))

    def take(self) -> tuple[bytes, ...]:
        """Return and forget the deliveries recorded so far: (seqs, times), and for a
        notification socket also (comment seqs, label, created_at times)."""
        seqs, times = self.seqs.tobytes(), self.times.tobytes()
        self.seqs = array("q")
        self.times = array("d")
        self.fresh = 0
        if not self.notifications:
            return seqs, times
        comment_seqs, created = self.comment_seqs.tobytes(), self.created.tobytes()
        self.comment_seqs = array("q")
        self.created = array("d")
        return seqs, times, comment_seqs, self.label, created


@dataclass
class ReaderPool:
    """The readers of one worker process."""

    readers: list[Reader] = field(default_factory=list)

    async def connect(
        self, *, urls: list[str], hello: bytes | None, concurrency: int, timeout: float,
        tokens: list[tuple[int, str]] | None = None,
    ) -> dict[str, Any]:
        """Open a reader per URL; with `tokens` ((label, token) per URL), notification sockets."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(max(1, concurrency))
        failures: dict[str, int] = {}
        started = time.monotonic()

        async def one(url: str, label: int, token: str | None) -> None:
            parts = urlsplit(url)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            async with gate:
                try:
                    reader = Reader(host=parts.hostname, port=parts.port, path=path, hello=hello, token=token,
                                    label=label)
                    await asyncio.wait_for(
                        self._open(loop, reader, parts.hostname, parts.port), timeout=timeout
                    )
                except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                    key = type(exc).__name__ + (f": {exc}" if str(exc) else "")
                    failures[key[:120]] = failures.get(key[:120], 0) + 1
                    return
                self.readers.append(reader)

        pairs = tokens if tokens is not None else [(0, None)] * len(urls)
        await asyncio.gather(*(one(url, label, token) for url, (label, token) in zip(urls, pairs)))
        return {
            "connected": len(urls) - sum(failures.values()),
            "failed": sum(failures.values()),
            "failures": failures,
            "seconds": time.monotonic() - started,
        }

    @staticmethod
    async def _open(loop: asyncio.AbstractEventLoop, reader: Reader, host: str, port: int) -> None:
        await loop.create_connection(lambda: reader, host, port)
        await reader.opened

    def received(self) -> dict[str, int]:
        """Return the frames recorded since the last take: all of them, and those above the floor."""
        return {"frames": sum(len(reader.seqs) for reader in self.readers),
                "fresh": sum(reader.fresh for reader in self.readers),
                "presence": sum(reader.presence_frames for reader in self.readers)}

    def take(self, floor: int | None = None) -> dict[str, Any]:
        """Return and forget every connection's frames; with a floor, later frames at or below it
        (an earlier phase's) are no longer counted as fresh."""
        if floor is not None:
            Reader.floor = floor
        return {
            "connections": [reader.take() for reader in self.readers],
            "paths": [reader.path for reader in self.readers],
            "dropped": sum(1 for reader in self.readers if reader.transport is None or reader.transport.is_closing()),
            "close_codes": [reader.close_code for reader in self.readers if reader.close_code is not None],
        }

    async def reconnect(self, *, fraction: float, resume: bool, timeout: float) -> dict[str, Any]:
        """Close a random `fraction` of the readers cleanly and open each again (the soak).

        The new connection goes on recording into the old one's deliveries, so a reader is
        checked as one reader over the whole run; with `resume` it asks for what it missed
        (`resume` after the highest seq it had), as the page does.
        """
        if not self.readers:
            return {"reconnected": 0, "failed": 0}
        loop = asyncio.get_running_loop()
        chosen = random.sample(range(len(self.readers)), max(1, round(len(self.readers) * fraction)))
        failed = 0

        async def one(index: int) -> None:
            nonlocal failed
            old = self.readers[index]
            old.close(abrupt=False)
            await asyncio.wait([old.closed], timeout=10)
            if old.transport is not None and not old.transport.is_closing():
                old.transport.abort()
            after = max(old.seqs) if old.seqs else Reader.floor
            hello = json.dumps({"type": "resume", "after": after}).encode() if resume else None
            new = Reader(host=old.host, port=old.port, path=old.path, hello=hello)
            new.seqs, new.times, new.fresh = old.seqs, old.times, old.fresh
            try:
                await asyncio.wait_for(self._open(loop, new, old.host, old.port), timeout=timeout)
            except (OSError, ConnectionError, asyncio.TimeoutError):
                failed += 1
                return
            self.readers[index] = new

        await asyncio.gather(*(one(index) for index in chosen))
        return {"reconnected": len(chosen) - failed, "failed": failed}

    async def close(self, *, abrupt: bool, timeout: float) -> dict[str, Any]:
        readers, self.readers = self.readers, []
        for reader in readers:
            reader.close(abrupt=abrupt)
        pending = [reader.closed for reader in readers if not reader.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for reader in readers:
            if reader.transport is not None and not reader.transport.is_closing():
                reader.transport.abort()
        return {"closed": len(readers)}


def worker_main(conn: Any) -> None:
    """Serve commands from the orchestrator over a multiprocessing pipe until "exit"."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(_serve(conn))
    loop.close()


async def _serve(conn: Any) -> None:
    pool = ReaderPool()
    loop = asyncio.get_running_loop()
    while True:
        command, args = await loop.run_in_executor(None, conn.recv)
        if command == "exit":
            await pool.close(abrupt=True, timeout=1)
            conn.send(None)
            return
        if command == "connect":
            result: Any = await pool.connect(**args)
        elif command == "received":
            result = pool.received()
        elif command == "take":
            result = pool.take(args)
        elif command == "close":
            result = await pool.close(**args)
        elif command == "reconnect":
            result = await pool.reconnect(**args)
        else:
            result = {"error": f"unknown command {command}"}
        conn.send(result)


class SeqCounter:
    """The seqs of a system that numbers nothing itself: one counter per system for the whole
    run, so that no two phases post the same seq and a late frame is never taken for a new one."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last += 1
        return self.last


class Poster:
    """Post comments over a few keep-alive HTTP/1.1 connections; record send times by seq."""

    def __init__(
        self, *, bases: list[tuple[str, int]], path: str, connections: int, numbering: SeqCounter | None,
        body: Callable[[int], str] | None = None,
    ) -> None:
        self.bases = bases
        # The body of post number `index` (default: a plain comment); `posted[seq]` is that index.
        self.body = body or (lambda index: f"load test comment {index}")
        self.posted: dict[int, int] = {}
        self.path = path
        self.connections = connections
        # The peer has no database: the run's counter numbers its comments (None: the server does).
        self.numbering = numbering
        self.sent: dict[int, float] = {}
        self.errors: dict[str, int] = {}
        self.response_times: list[float] = []
        self._idle: asyncio.Queue[tuple[int, asyncio.StreamReader | None, asyncio.StreamWriter | None]] | None = None

    async def _pool(self) -> asyncio.Queue:
        if self._idle is None:
            self._idle = asyncio.Queue()
            for index in range(self.connections):
                self._idle.put_nowait((index % len(self.bases), None, None))
        return self._idle

    async def post_one(self, index: int, deadline: float) -> None:
        pool = await self._pool()
        base, reader, writer = await pool.get()
        if time.monotonic() > deadline:
            pool.put_nowait((base, reader, writer))
            return
        host, port = self.bases[base]
        path = self.path_for(index)
        payload: dict[str, Any] = {"author": "bench", "body": self.body(index)}
        if self.numbering is not None:
            payload["seq"] = self.numbering.next()
        body = json.dumps(payload).encode()
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        try:
            if writer is None or writer.is_closing():
                reader, writer = await asyncio.open_connection(host, port)
            sent_at = time.monotonic()
            writer.write(request)
            status, headers, response = await asyncio.wait_for(_read_response(reader), timeout=60)
            if status != 201:
                key = f"HTTP {status}: {response[:80]!r}"
                self.errors[key] = self.errors.get(key, 0) + 1
            else:
                seq = json.loads(response)["seq"]
                self.record(seq, sent_at, path)
                self.posted[seq] = index
                self.response_times.append(time.monotonic() - sent_at)
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
            key = type(exc).__name__
            self.errors[key] = self.errors.get(key, 0) + 1
            if writer is not None:
                writer.close()
            reader = writer = None
        finally:
            pool.put_nowait((base, reader, writer))

    def path_for(self, index: int) -> str:
        """Return where post number `index` goes (one feed here; see bench.scenarios.FeedsPoster)."""
        return self.path

    def record(self, seq: int, sent_at: float, path: str) -> None:
        self.sent[seq] = sent_at

    async def run(self, *, count: int, rate: float | None, max_seconds: float) -> dict[str, Any]:
        """Post `count` comments at `rate` per second (None: as fast as the server answers).

        No new post starts after `max_seconds`: a server that cannot keep up gets fewer posts.
        """
        started = time.monotonic()
        deadline = started + max_seconds
        if rate:
            tasks = []
            for index in range(count):
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.monotonic() > deadline:
                    break
                tasks.append(asyncio.ensure_future(self.post_one(index, deadline)))
            await asyncio.gather(*tasks)
        else:
            # Closed loop: one post in flight per connection, as fast as the servers answer.
            indexes = iter(range(count))

            async def lane() -> None:
                for index in indexes:
                    if time.monotonic() > deadline:
                        return
                    await self.post_one(index, deadline)

            await asyncio.gather(*(lane() for _ in range(self.connections)))
        return {
            "requested": count, "posted": len(self.sent), "errors": dict(self.errors),
            "response_ms": response_percentiles(self.response_times),
            "seconds": round(time.monotonic() - started, 3),
        }

    async def close(self) -> None:
        if self._idle is None:
            return
        while not self._idle.empty():
            _, _, writer = self._idle.get_nowait()
            if writer is not None:
                writer.close()


def response_percentiles(times: list[float]) -> dict[str, float | None]:
    ordered = sorted(times)

    def at(fraction: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 1) if ordered else None

    return {"p50": at(0.5), "p99": at(0.99), "max": at(1.0)}


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.read()
        headers["connection"] = "close"
    return status, headers, body

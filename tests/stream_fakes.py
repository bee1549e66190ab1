"""Small fakes for testing the delivery machinery without a server, a layer or a database."""
import asyncio
import time
from collections import defaultdict

from notifications.connection import StreamEvent
from notifications.streams import StreamKey, StreamKind


def event(seq, *, from_db=False, stream="s"):
    return StreamEvent(seq=seq, html=f"<p>{stream}{seq}</p>", json=f'{{"seq":{seq}}}', from_db=from_db)


def seqs(events):
    return [e.seq for e in events]


async def wait_until(predicate, timeout=5.0, what="condition"):
    """Let the loop run until the predicate holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


class WriteFailed(OSError):
    pass


class FakeConnection:
    """A reader as the hub sees it (notifications.connection.Connection's interface), recording seqs.

    ``fail``: every write raises, like a socket whose transport broke under us.
    """

    def __init__(self, stream, *, fail=False):
        self.stream = stream
        self.json_mode = False
        self.protocol = None
        self.sent_seq = 0
        self.closed = False
        self.catch_up = None
        self.backed_up_since = None
        self.fail = fail
        self.stalled = False
        self.seqs = []
        self.signals = []
        self.writes = 0  # socket writes
        self.close_codes = []
        self._on_close = None

    def on_close(self, callback):
        self._on_close = callback

    def write(self, event):
        if self.fail:
            raise WriteFailed("transport broke")
        if self.closed or event.seq <= self.sent_seq:
            return
        self.seqs.append(event.seq)
        self.sent_seq = event.seq
        self.writes += 1

    def write_unsequenced(self, frame):
        if self.fail:
            raise WriteFailed("transport broke")
        if not self.closed:
            self.signals.append(frame.json)

    def write_batch(self, batch):
        if self.fail:
            raise WriteFailed("transport broke")
        lacking = [e.seq for e in batch.events if e.seq > self.sent_seq]
        if self.closed or not lacking:
            return
        self.seqs.extend(lacking)
        self.sent_seq = lacking[-1]
        self.writes += 1

    async def drained(self):
        await asyncio.sleep(0)
        return not self.closed

    def is_stalled(self, now):
        return self.stalled and not self.closed

    def close(self, code, *, grace=None):
        if self.closed:
            return
        self.closed = True
        self.close_codes.append(code)
        self.release()

    def release(self):
        if self.catch_up is not None and self.catch_up is not asyncio.current_task():
            self.catch_up.cancel()
        self.catch_up = None
        callback, self._on_close = self._on_close, None
        if callback is not None:
            callback(self)


class FakeLayer:
    """An in-memory channel layer with one channel; ``fail`` makes every call raise."""

    def __init__(self):
        self.groups = defaultdict(set)
        self.queue = asyncio.Queue()
        self.fail = False
        self.adds = []
        self.discards = []

    def _check(self):
        if self.fail:
            raise ConnectionError("layer away")

    async def new_channel(self):
        self._check()
        return "hub!1"

    async def group_add(self, group, channel):
        self._check()
        self.adds.append(group)
        self.groups[group].add(channel)

    async def group_discard(self, group, channel):
        self._check()
        self.discards.append(group)
        self.groups[group].discard(channel)

    async def group_send(self, group, message):
        if self.groups[group]:
            self.queue.put_nowait(message)

    async def receive(self, channel):
        self._check()
        message = await self.queue.get()
        self._check()
        return message


class ThingKind(StreamKind):
    """A second kind of stream for the tests: group ``thing.<id>``, ``thing.created`` events."""

    name = "thing"
    metric_label = "thing"
    event_types = frozenset({"thing.created"})
    signal_types = frozenset({"thing.touched"})
    id_field = "thing_id"

    def group(self, stream_id):
        return f"thing.{stream_id}"

    def load_after(self, stream_id, after, limit):
        raise AssertionError("the tests read through FakeStore")

    def last_seqs(self, stream_ids):
        raise AssertionError("the tests read through FakeStore")


def thing_message(thing_id, seq):
    e = event(seq, stream=f"t{thing_id}-")
    return {"type": "thing.created", "thing_id": thing_id, "seq": seq, "html": e.html, "json": e.json}


class FakeStore:
    """The database: committed seqs per stream; records every read."""

    def __init__(self):
        self.committed = defaultdict(list)
        self.loads = []
        self.fail = False
        self.gate = None  # an asyncio.Event that reads wait for, when set

    def commit(self, key, *seqs_):
        self.committed[key].extend(seqs_)

    async def load_after(self, key: StreamKey, after, limit):
        self.loads.append((key, after, limit))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("database away")
        return [event(seq, from_db=True) for seq in sorted(self.committed[key]) if seq > after][:limit]

    async def last_seqs(self, keys):
        if self.fail:
            raise RuntimeError("database away")
        return {key: max(self.committed[key], default=0) for key in keys}

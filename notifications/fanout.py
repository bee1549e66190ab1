"""Writing events to readers, where one reader can never hurt the others.

``fan_out`` is the one place live and filled events are written to a stream's live readers
(one render per event, one socket write per reader per batch, no task per reader);
``send_replay`` is the one place a replay is written to one reader. Each write is guarded: a
reader whose write raises is closed with 1013 and detached, and the loop carries on with the
next reader, so nobody else misses the events. The closed client reconnects and resumes
from the last seq it has, so it misses nothing either.

``close_stalled`` closes readers that stopped reading (the slow-reader policy's timeout).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from notifications import live_metrics
from notifications.connection import EventBatch
from notifications.frames import CLOSE_TRY_AGAIN_LATER

if TYPE_CHECKING:
    from notifications.connection import Connection, StreamEvent

logger = logging.getLogger(__name__)


def fan_out(readers: set[Connection], events: list[StreamEvent]) -> None:
    """Write consecutive events to every reader in ``readers``: one socket write per reader.

    A reader whose write raises is closed with 1013 and removed from ``readers``.
    """
    if len(events) == 1:
        event = events[0]
        for conn in tuple(readers):
            try:
                conn.write(event)
            except Exception:
                drop_failed_reader(conn, readers)
    else:
        batch = EventBatch(events)
        for conn in tuple(readers):
            try:
                conn.write_batch(batch)
            except Exception:
                drop_failed_reader(conn, readers)


def fan_out_signal(readers: set[Connection], frame: StreamEvent) -> None:
    """Write an unsequenced frame (e.g. notifications.read) to every reader, guarded like fan_out."""
    for conn in tuple(readers):
        try:
            conn.write_unsequenced(frame)
        except Exception:
            drop_failed_reader(conn, readers)


def send_replay(conn: Connection, events: list[StreamEvent]) -> bool:
    """Write replayed events to one reader in one socket write; return False if it failed (closed)."""
    try:
        conn.write_batch(EventBatch(events))
    except Exception:
        drop_failed_reader(conn)
        return False
    return not conn.closed


def drop_failed_reader(conn: Connection, readers: set[Connection] | None = None) -> None:
    """Close a reader whose write raised with 1013 (it reconnects and resumes), and detach it.

    Must be called from an ``except`` block (the failure is logged with its traceback).
    """
    logger.warning("Writing to a reader of %s failed; closing it with 1013 so it resumes", conn.stream, exc_info=True)
    if readers is not None:
        readers.discard(conn)
    try:
        conn.close(CLOSE_TRY_AGAIN_LATER)
    except Exception:
        logger.debug("Closing the failed reader of %s failed too", conn.stream, exc_info=True)
    conn.closed = True
    try:
        conn.release()
    except Exception:
        logger.debug("Detaching the failed reader of %s failed", conn.stream, exc_info=True)


def close_stalled(readers: Iterable[Connection], now: float) -> None:
    """Close with 1013 every reader that has been backed up longer than the slow-reader timeout."""
    for conn in readers:
        try:
            if conn.is_stalled(now):
                logger.info("Closing a reader of %s that stopped reading", conn.stream)
                conn.close(CLOSE_TRY_AGAIN_LATER)
                live_metrics.slow_reader_closed()
        except Exception:
            drop_failed_reader(conn)

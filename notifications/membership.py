"""The process's one channel on the channel layer, and the stream groups it is in.

A hub joins the group of each stream with a local reader (``join``), leaves it when the last
one goes (``leave``), and re-adds every membership after a failure and every
``membership_refresh`` seconds (``rejoin``): a Redis restarted empty has forgotten them, and
the layer expires memberships nobody refreshes. ``messages`` yields what arrives on the
channel, riding out failed reads. Every layer call is bounded by ``layer_timeout``. Without
a layer (``layer`` is None) every call does nothing.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from notifications.conf import LiveSettings

logger = logging.getLogger(__name__)


class Membership:
    """The channel and group memberships of one hub. ``ok`` is False while the layer fails."""

    def __init__(self, layer: Any, conf: LiveSettings) -> None:
        self.layer = layer
        self.conf = conf
        self.channel_name: str | None = None
        self.ok = True
        self.need_rejoin = False
        self.last_rejoin = 0.0
        self._lock = asyncio.Lock()

    async def join(self, group: str, *, wanted: Callable[[], bool]) -> None:
        """Add the channel to a group, if ``wanted()`` still holds once it is our turn."""
        if self.layer is None:
            return
        async with self._lock:
            if not wanted():
                return
            try:
                channel = await self._channel()
                await asyncio.wait_for(self.layer.group_add(group, channel), self.conf.layer_timeout)
            except Exception:
                self._failed(f"joining {group}")

    async def leave(self, group: str, *, unwanted: Callable[[], bool]) -> None:
        """Remove the channel from a group, unless a reader came back meanwhile (``unwanted()`` is False)."""
        if self.layer is None or self.channel_name is None:
            return
        async with self._lock:
            if not unwanted():
                return
            try:
                await asyncio.wait_for(self.layer.group_discard(group, self.channel_name), self.conf.layer_timeout)
            except Exception:
                logger.debug("Could not leave %s; the membership expires", group, exc_info=True)

    def rejoin_due(self, now: float) -> bool:
        """Return whether the memberships should be re-added now (after a failure, or to refresh them)."""
        return self.layer is not None and (
            self.need_rejoin or now - self.last_rejoin > self.conf.membership_refresh
        )

    async def rejoin(self, groups: Callable[[], Iterable[str]]) -> None:
        """Re-add the channel to every group ``groups()`` names."""
        if self.layer is None:
            return
        async with self._lock:
            self.need_rejoin = False
            self.last_rejoin = time.monotonic()
            try:
                channel = await self._channel()
                for group in list(groups()):
                    await asyncio.wait_for(self.layer.group_add(group, channel), self.conf.layer_timeout)
            except Exception:
                self._failed("re-joining the stream groups")
                return
        if not self.ok:
            self.ok = True
            logger.info("Channel layer is back; stream groups re-joined")

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Yield the messages that arrive on the channel, forever; failed reads are retried."""
        failures = 0
        while True:
            try:
                channel = await self._channel()
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                # One failed read (a dropped connection the pool replaces) is retried at once;
                # only repeated failures count as an outage.
                if failures > 1:
                    self._failed("receiving")
                    await asyncio.sleep(min(0.1 * 2 ** (failures - 2), 1.0))
                else:
                    logger.debug("Channel layer receive failed once; retrying", exc_info=True)
                    self.need_rejoin = True
                continue
            failures = 0
            yield message

    async def _channel(self) -> str:
        if self.channel_name is None:
            self.channel_name = await self.layer.new_channel()
        return self.channel_name

    def _failed(self, doing: str) -> None:
        self.need_rejoin = True
        if self.ok:
            self.ok = False
            logger.warning(
                "Channel layer failed while %s; live events come from the database until it is back",
                doing,
                exc_info=True,
            )

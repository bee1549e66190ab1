"""Background loops end when cancelled, also when a call inside them swallowed the cancellation.

On Python 3.11 ``asyncio.wait_for`` returns its inner call's result when that call completes
at the moment the task is cancelled (the membership's group_add with the in-process layer
does, at once), and the CancelledError is lost. A periodic loop would then go on forever,
and closing the event loop (daphne's shutdown, the end of an async test) would wait for it
forever: seen as a test run hanging in asyncio's _cancel_all_tasks. Each loop checks
``Task.cancelling()`` after its calls (notifications.cancellation).
"""
import asyncio

from django.test import SimpleTestCase, override_settings

from notifications.conf import live_settings
from notifications.hub import StreamHub
from notifications.session_watch import CredentialWatch

STOP_WITHIN = 3.0


class CancelledLoopsEndTests(SimpleTestCase):
    def swallowing_call(self, started: asyncio.Event, result=None):
        async def call(*args, **kwargs):
            started.set()
            try:
                await asyncio.sleep(0.3)
            except asyncio.CancelledError:
                pass  # as asyncio.wait_for does on 3.11 when its inner call completes meanwhile
            return result

        return call

    async def assert_ends_when_cancelled_during_a_call(self, task, started: asyncio.Event):
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=STOP_WITHIN)
        self.assertEqual(done, {task}, "the cancelled loop kept running")

    @override_settings(LIVE_UPDATES={"check_interval": 0.01})
    async def test_the_hubs_periodic_check_ends_when_cancelled_during_it(self):
        started = asyncio.Event()
        hub = StreamHub(live_settings())
        hub.check = self.swallowing_call(started)  # type: ignore[method-assign]
        await self.assert_ends_when_cancelled_during_a_call(asyncio.ensure_future(hub._check_loop()), started)

    @override_settings(WS_SESSION_CHECK_INTERVAL=0.01)
    async def test_a_credential_watch_ends_when_cancelled_during_its_check(self):
        started = asyncio.Event()
        watch = CredentialWatch(still_valid=self.swallowing_call(started, result=True), on_ended=lambda: None)
        await self.assert_ends_when_cancelled_during_a_call(watch.task, started)

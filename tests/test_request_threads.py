"""Requests run on reused threads (livefeed/request_threads.py): no thread started per request,
a request's database connection is kept for the next one on that thread, and a request crosses
between the event loop and its thread a few times, not once or twice per middleware hook."""
from __future__ import annotations

import asyncio
import json
import threading

from unittest import mock

from asgiref.sync import SyncToAsync
from asgiref.testing import ApplicationCommunicator
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.test import SimpleTestCase, TransactionTestCase, override_settings
from django.urls import path

from feed.models import Feed

from livefeed.request_threads import ReusedThreadASGIHandler

release = threading.Event()


def where(request: HttpRequest) -> JsonResponse:
    """Say which thread ran the view and which database connection it used."""
    connection.ensure_connection()
    if request.GET.get("wait"):
        release.wait(10)
    return JsonResponse({"thread": threading.get_ident(), "connection": id(connection.connection)})


urlpatterns = [path("where/", where)]


def scope(query: str = "", *, method: str = "GET", path: str = "/where/", headers: tuple = ()) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }


async def request(handler: ReusedThreadASGIHandler, scope: dict, body: bytes = b"") -> tuple[int, bytes]:
    app = ApplicationCommunicator(handler, scope)
    await app.send_input({"type": "http.request", "body": body})
    start = await app.receive_output(10)
    chunks = []
    while True:
        message = await app.receive_output(10)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    await app.wait(10)
    return start["status"], b"".join(chunks)


async def get(handler: ReusedThreadASGIHandler, query: str = "") -> dict:
    status, body = await request(handler, scope(query))
    assert status == 200, (status, body[:300])
    return json.loads(body)


@override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["127.0.0.1"])
class ReusedRequestThreadTests(SimpleTestCase):
    databases = {"default"}

    def sequential_answers(self) -> list[dict]:
        async def returned(handler: ReusedThreadASGIHandler) -> None:
            """Wait until the last request's thread is back in the pool (its marker has run)."""
            for _ in range(500):
                if handler._idle:
                    return
                await asyncio.sleep(0.01)
            self.fail("the request's thread never went back to the pool")

        async def scenario() -> list[dict]:
            handler = ReusedThreadASGIHandler()
            answers = []
            for _ in range(3):
                answers.append(await get(handler))
                await returned(handler)
            return answers

        return asyncio.run(scenario())

    def test_one_request_after_another_runs_on_the_same_thread(self):
        answers = self.sequential_answers()
        self.assertEqual(len({answer["thread"] for answer in answers}), 1, answers)

    def test_one_request_after_another_keeps_its_database_connection(self):
        if connection.settings_dict.get("OPTIONS", {}).get("pool"):
            self.skipTest("with PostgreSQL's pool each request borrows a pooled connection instead")
        answers = self.sequential_answers()
        self.assertEqual(len({answer["connection"] for answer in answers}), 1, answers)

    def test_requests_in_flight_at_once_get_threads_of_their_own(self):
        async def scenario() -> list[dict]:
            handler = ReusedThreadASGIHandler()
            release.clear()
            waiting = asyncio.ensure_future(get(handler, "wait=1"))
            await asyncio.sleep(0.2)  # the first view is now blocked in its thread
            other = await get(handler)
            release.set()
            return [await waiting, other]

        first, other = asyncio.run(scenario())
        self.assertNotEqual(first["thread"], other["thread"])


# Into the thread for request_started's receivers, for the whole chain and the view, and for
# request_finished's: Django's own handler takes 5 with a sync chain, about 15 with its default.
MAX_HOPS_PER_REQUEST = 3


class ThreadHopTests(TransactionTestCase):
    async def hops_of(self, scope: dict, body: bytes = b"", *, expected: int = 200) -> int:
        calls = 0
        original = SyncToAsync.__call__

        async def counting(self, *args, **kwargs):
            nonlocal calls
            calls += 1
            return await original(self, *args, **kwargs)

        handler = ReusedThreadASGIHandler()
        with mock.patch.object(SyncToAsync, "__call__", counting):
            status, content = await request(handler, scope, body)
        self.assertEqual(status, expected, content[:300])
        return calls

    async def test_a_page_crosses_into_its_thread_a_few_times_not_once_per_middleware_hook(self):
        await Feed.objects.acreate(slug="hops", title="Hops", allow_anonymous=True)
        self.assertLessEqual(await self.hops_of(scope(path="/feeds/hops/")), MAX_HOPS_PER_REQUEST)

    async def test_an_api_post_crosses_into_its_thread_a_few_times(self):
        await Feed.objects.acreate(slug="hops", title="Hops", allow_anonymous=True)
        post = scope(method="POST", path="/api/feeds/hops/comments/", headers=((b"content-type", b"application/json"),))
        body = json.dumps({"author": "guest", "body": "hello"}).encode()
        self.assertLessEqual(await self.hops_of(post, body, expected=201), MAX_HOPS_PER_REQUEST)

"""Requests run on reused threads (livefeed/request_threads.py): no thread started per request,
and a request's database connection is kept for the next one on that thread."""
from __future__ import annotations

import asyncio
import json
import threading

from asgiref.testing import ApplicationCommunicator
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.test import SimpleTestCase, override_settings
from django.urls import path

from livefeed.request_threads import ReusedThreadASGIHandler

release = threading.Event()


def where(request: HttpRequest) -> JsonResponse:
    """Say which thread ran the view and which database connection it used."""
    connection.ensure_connection()
    if request.GET.get("wait"):
        release.wait(10)
    return JsonResponse({"thread": threading.get_ident(), "connection": id(connection.connection)})


urlpatterns = [path("where/", where)]


def scope(query: str = "") -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/where/", "raw_path": b"/where/", "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }


async def get(handler: ReusedThreadASGIHandler, query: str = "") -> dict:
    app = ApplicationCommunicator(handler, scope(query))
    await app.send_input({"type": "http.request", "body": b""})
    start = await app.receive_output(10)
    assert start["status"] == 200, start
    body = await app.receive_output(10)
    await app.wait(10)
    return json.loads(body["body"])


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

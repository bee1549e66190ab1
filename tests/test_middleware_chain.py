"""Under ASGI the middleware chain runs in the request's thread: a few thread hops per request, not
two per middleware hook (livefeed/sync_chain.py)."""
from __future__ import annotations

import json
from unittest import mock

from asgiref.sync import SyncToAsync
from django.test import AsyncClient, TestCase

from feed.models import Feed

# Django's ASGI handler: into the chain, request_started/finished receivers, the view.
MAX_HOPS_PER_REQUEST = 6


class MiddlewareChainTests(TestCase):
    async def hops_of(self, request) -> int:
        calls = 0
        original = SyncToAsync.__call__

        async def counting(self, *args, **kwargs):
            nonlocal calls
            calls += 1
            return await original(self, *args, **kwargs)

        with mock.patch.object(SyncToAsync, "__call__", counting):
            response = await request()
        self.assertLess(response.status_code, 500)
        return calls

    async def test_a_page_crosses_into_the_request_thread_a_few_times_not_once_per_middleware_hook(self):
        hops = await self.hops_of(lambda: AsyncClient().get("/"))
        self.assertLessEqual(hops, MAX_HOPS_PER_REQUEST)

    async def test_an_api_post_crosses_into_the_request_thread_a_few_times(self):
        await Feed.objects.acreate(slug="chain", title="Chain", allow_anonymous=True)
        body = json.dumps({"author": "guest", "body": "hello"})
        hops = await self.hops_of(
            lambda: AsyncClient().post("/api/feeds/chain/comments/", body, content_type="application/json")
        )
        self.assertLessEqual(hops, MAX_HOPS_PER_REQUEST)

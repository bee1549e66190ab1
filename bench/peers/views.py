"""The peer's posting endpoint: the benchmark numbers each post (the peer has no database)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from channels.layers import get_channel_layer
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
async def comment_post(request: HttpRequest, slug: str) -> JsonResponse:
    """Publish the posted comment to the feed's group; answer 201 with its seq."""
    if request.method != "POST":
        return JsonResponse({"error": "method_not_allowed"}, status=405)
    try:
        payload = json.loads(request.body)
        seq = int(payload["seq"])
        author, body = str(payload["author"]), str(payload["body"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "invalid"}, status=400)
    created_at = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    await get_channel_layer().group_send(
        f"feed_{slug}",
        {"type": "comment.created", "seq": seq, "author": author, "body": body, "created_at": created_at},
    )
    return JsonResponse({"seq": seq, "feed": slug, "author": author, "body": body}, status=201)


async def feeds(request: HttpRequest) -> JsonResponse:
    """Answer like the project's feed list, so the benchmark can ask either for last_seq."""
    return JsonResponse([{"slug": "demo", "title": "Demo", "last_seq": 0}], safe=False)

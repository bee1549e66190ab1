"""The write-path peer: a plain Django view that inserts the same Comment row as the project's
API, without numbering (the benchmark sends the seq), idempotency, rate limits or publishing."""
from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from feed.models import Comment, Feed


@csrf_exempt
def comment_insert(request: HttpRequest, slug: str) -> JsonResponse:
    """Insert the posted comment; answer 201 with its seq."""
    if request.method != "POST":
        return JsonResponse({"error": "method_not_allowed"}, status=405)
    try:
        payload = json.loads(request.body)
        seq, author, body = int(payload["seq"]), str(payload["author"]), str(payload["body"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "invalid"}, status=400)
    feed = Feed.objects.get(slug=slug)
    comment = Comment.objects.create(feed=feed, seq=seq, author=author, body=body)
    return JsonResponse({"id": comment.pk, "seq": comment.seq, "feed": slug, "author": author, "body": body,
                         "created_at": comment.created_at.isoformat()}, status=201)

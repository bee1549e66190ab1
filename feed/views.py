"""Pages and the comment form. One view serves the full page and, for htmx, the form fragment."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_POST, require_safe
from django_htmx.middleware import HtmxDetails

from feed.forms import CommentForm
from feed.idempotency import IdempotencyKeyInvalid, IdempotencyKeyReused
from feed.models import Comment, Feed
from feed.moderation import RemovalNotAllowed, comment_remove, feed_is_moderated_by
from feed.ratelimit import RateLimited, client_identity
from feed.selectors import comment_get, comment_in_feed, comments_latest, feed_get, feed_get_readable, feeds_readable
from feed.services import (
    PostingNotAllowed,
    comment_submit,
    feed_check_can_post,
)


class HtmxHttpRequest(HttpRequest):
    """A request through django-htmx's middleware (for type checking: it has ``htmx``)."""

    htmx: HtmxDetails


@require_safe
def feed_index(request: HttpRequest) -> HttpResponse:
    return render(request, "feed/index.html", {"feeds": feeds_readable(user=request.user)})


@require_safe
def feed_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    try:
        feed = feed_get_readable(slug=slug, user=request.user)
    except Http404:
        if request.user.is_authenticated:
            raise
        # Unknown and members-only feeds answer a signed-out reader alike (sign in, then come
        # back here), so the answer tells nothing about which slugs exist.
        return redirect_to_login(request.get_full_path())
    replying_to = comment_in_feed(feed=feed, comment_id=_positive_int(request.GET.get("reply_to")))
    form = _blank_form(request, replying_to=replying_to)
    if request.htmx and "reply_to" in request.GET and not request.htmx.history_restore_request:
        # The reply (or cancel) action: just the form, set to answer that comment (or nothing).
        return render(request, "feed/_form.html", _form_context(request, feed, form))
    return _render_page(request, feed=feed, form=form, before=_positive_int(request.GET.get("before")))


@require_POST
def comment_post(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """Post a comment. htmx gets the form fragment back; the comment itself arrives live.

    A feed the poster may not read is a 404 (ReadingNotAllowed), as for an unknown slug.
    """
    feed = feed_get_readable(slug=slug, user=request.user)
    form = CommentForm(request.POST, signed_in_as=_signed_in_as(request))
    form.is_valid()
    form.replying_to = comment_in_feed(feed=feed, comment_id=form.reply_to_id())
    retry_after = None
    try:
        result = comment_submit(
            feed=feed,
            author=form.cleaned_data.get("author", ""),
            body=form.cleaned_data.get("body", ""),
            user=request.user,
            client=client_identity(request),
            reply_to=form.reply_to_id(),
            # The page's script sends a header per composed comment; without JavaScript the
            # form's hidden field (a key per render) makes a resubmitted form safe too.
            idempotency_key=request.headers.get("Idempotency-Key") or request.POST.get("idempotency_key") or None,
        )
    except ValidationError as exc:
        form.add_error(None, exc)
        status = 422
    except (IdempotencyKeyInvalid, IdempotencyKeyReused) as exc:
        form.add_error(None, str(exc))
        status = 400 if isinstance(exc, IdempotencyKeyInvalid) else 422
    except PostingNotAllowed as exc:
        form.add_error(None, str(exc))
        status = exc.status
    except RateLimited as exc:
        form.add_error(None, str(exc))
        status, retry_after = 429, exc.retry_after
    else:
        if request.htmx:
            fresh = _blank_form(request, author=form.cleaned_data.get("author", ""))
            return render(request, "feed/_form.html", _form_context(request, feed, fresh))
        return HttpResponseRedirect(f"{feed.get_absolute_url()}#comment-{result.body['id']}", status=303)
    if request.htmx:
        response = render(request, "feed/_form.html", _form_context(request, feed, form), status=status)
    else:
        response = _render_page(request, feed=feed, form=form, before=None, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


@require_POST
def comment_remove_post(request: HtmxHttpRequest, slug: str, comment_id: int) -> HttpResponse:
    """Remove a comment (the page's "remove" action, CSRF-protected).

    htmx gets an empty 200 (its `hx-swap="delete"` drops the article at once; every other
    page drops it through the live channel); a plain form post is redirected back to the
    feed. 404 as for reading the feed; 403 (401 signed out) for others who may read it.
    """
    comment = comment_get(feed=feed_get(slug=slug), comment_id=comment_id)
    try:
        comment_remove(comment=comment, by=request.user)
    except RemovalNotAllowed as exc:
        return HttpResponse(str(exc), status=exc.status, content_type="text/plain; charset=utf-8")
    if request.htmx:
        return HttpResponse("")
    return HttpResponseRedirect(comment.feed.get_absolute_url(), status=303)


def _render_page(
    request: HttpRequest, *, feed: Feed, form: CommentForm, before: int | None, status: int = 200
) -> HttpResponse:
    page_size = settings.FEED_PAGE_SIZE
    comments = comments_latest(feed=feed, limit=page_size, before_seq=before)
    oldest = comments[0].seq if comments else None
    newest = comments[-1].seq if comments else None
    has_older = oldest is not None and bool(comments_latest(feed=feed, limit=1, before_seq=oldest))
    # An archive page (?before=N) is a fixed slice: no live updates and no form on it.
    newer_before = newest + page_size + 1 if before is not None and newest is not None else None
    if newer_before is not None and newer_before > feed.last_seq:
        newer_before = None
    context: dict[str, Any] = {
        **_form_context(request, feed, form),
        "comments": comments,
        "live": before is None,
        "older_before": oldest if has_older else None,
        "newer_before": newer_before,
        # Who may remove what: shown on the page's comments, and read by feed.js for live ones.
        "on_page": True,
        "moderating": feed_is_moderated_by(feed=feed, user=request.user),
        "viewer_id": request.user.pk if request.user.is_authenticated else None,
    }
    return render(request, "feed/page.html", context, status=status)


def _form_context(request: HttpRequest, feed: Feed, form: CommentForm) -> dict[str, Any]:
    try:
        feed_check_can_post(feed=feed, user=request.user)
    except PostingNotAllowed as exc:
        return {"feed": feed, "form": form, "can_post": False, "cannot_post_reason": str(exc)}
    return {"feed": feed, "form": form, "can_post": True, "cannot_post_reason": ""}


def _blank_form(request: HttpRequest, *, author: str = "", replying_to: Comment | None = None) -> CommentForm:
    # The name is kept after a post so that people need not retype it; the body is cleared.
    return CommentForm(
        initial={"author": author, "reply_to": replying_to.pk if replying_to else None},
        signed_in_as=_signed_in_as(request),
        replying_to=replying_to,
    )


def _signed_in_as(request: HttpRequest) -> str:
    return request.user.get_username() if request.user.is_authenticated else ""


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if number > 0 else None

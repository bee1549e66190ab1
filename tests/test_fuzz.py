"""Property-based tests: arbitrary text through comment_create, and the API fuzzed from its OpenAPI description."""
import logging
import re
from html.parser import HTMLParser

import schemathesis
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import TestCase, override_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase as HypothesisTestCase
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from feed.models import AUTHOR_MAX_LENGTH, BODY_MAX_LENGTH, Comment, Feed
from feed.rendering import comment_as_dict, render_comment
from feed.services import comment_create
from feed.text import clean_body, clean_name

# Characters that must never be stored: C0/C1 controls but tab and newline, lone surrogates,
# bidi embeddings/overrides/isolates.
FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")

NASTY = [
    "\x00", "\r", "\n", "\r\n", "\t", "\x1b[31m", "\x7f", "\x85", "\u202e", "\u2066", "\ufeff", "\u200b",
    "\ud800", "\udfff", "e\u0301", "\u0301", " ", "\u00a0", "\u2028",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "</p>", "</article>", "&amp;", "&lt;",
    '"', "'", "`", "{{ x }}", "{% x %}", "<!--", "]]>", "\\", "😀", "👩\u200d👩\u200d👧",
]

any_text = st.lists(
    st.one_of(st.characters(codec=None, exclude_categories=[]), st.sampled_from(NASTY)), max_size=40
).map("".join)
long_text = st.builds(lambda unit, n: unit * n, st.sampled_from(["a", "<b>", "\x00", "é", "😀", " \n"]), st.integers(1, 2600))
body_text = st.one_of(any_text, long_text, st.lists(any_text, max_size=8).map("\n".join))


class ArticleParser(HTMLParser):
    """Collect the tag structure of a rendered comment and the text of its author and body."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags = []
        self.current = None
        self.text = {"comment-author": "", "comment-body": ""}

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        classes = dict(attrs).get("class", "")
        if classes in self.text:
            self.current = classes
        elif tag == "br" and self.current == "comment-body":
            self.text["comment-body"] += "\n"

    def handle_endtag(self, tag):
        if tag in {"span", "p"}:
            self.current = None

    def handle_data(self, data):
        if self.current:
            self.text[self.current] += data


def expected_error(author, body):
    """Return which field comment_validate should refuse, or None if the input is acceptable."""
    cleaned_author, cleaned_body = clean_name(author), clean_body(body)
    errors = set()
    if not cleaned_author or len(cleaned_author) > AUTHOR_MAX_LENGTH:
        errors.add("author")
    if not cleaned_body or len(cleaned_body) > BODY_MAX_LENGTH:
        errors.add("body")
    return errors


class CommentTextPropertyTests(HypothesisTestCase):
    """Whatever text arrives, what is stored is the cleaned text, and what is shown is exactly that, escaped."""

    @property
    def feed(self):
        return Feed.objects.get_or_create(slug="fuzz", defaults={"title": "Fuzz", "allow_anonymous": True})[0]

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(author=any_text, body=body_text)
    def test_stored_and_shown_text_is_the_accepted_text(self, author, body):
        """Stored = cleaned input, free of control characters; the HTML shows it verbatim and adds no markup."""
        refused = expected_error(author, body)
        feed = self.feed
        try:
            with self.captureOnCommitCallbacks(execute=False):
                comment = comment_create(feed=feed, author=author, body=body)
        except ValidationError as exc:
            self.assertEqual(set(exc.message_dict), refused)
            return
        self.assertEqual(refused, set())
        stored = Comment.objects.get(pk=comment.pk)
        self.assertEqual(stored.body, clean_body(body))
        self.assertEqual(stored.author, clean_name(author))
        self.assertIsNone(FORBIDDEN.search(stored.body + stored.author))
        self.assertNotIn("\r", stored.body)
        self.assertNotIn("\n", stored.author)

        parser = ArticleParser()
        parser.feed(render_comment(stored))
        parser.close()
        self.assertEqual(parser.text["comment-author"], stored.author)
        self.assertEqual(parser.text["comment-body"], stored.body)
        self.assertEqual(
            [tag for tag in parser.tags if tag != "br"], ["article", "header", "span", "time", "span", "p"]
        )
        self.assertEqual(comment_as_dict(stored)["body"], stored.body)

    @settings(max_examples=300, deadline=None)
    @given(text=body_text)
    @example(text="e\x00\u0301")  # a control character between a letter and its accent
    def test_cleaning_is_stable(self, text):
        """Cleaning cleaned text changes nothing: what was accepted is already in its final form."""
        self.assertEqual(clean_body(clean_body(text)), clean_body(text))
        self.assertEqual(clean_name(clean_name(text)), clean_name(text))


FUZZ_EXAMPLES = 40  # per operation and generation mode: bounded, ~10 s for the whole API


@override_settings(FEED_POST_RATE="30/m")  # the production default: later posts exercise the 429
class ApiFuzzTests(TestCase):
    """schemathesis, driven by the served /api/openapi.json, against the real Django application."""

    def setUp(self):
        cache.clear()

    @classmethod
    def setUpTestData(cls):
        Feed.objects.get_or_create(slug="demo", defaults={"title": "Demo", "allow_anonymous": True})
        Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        comment_create(feed=Feed.objects.get(slug="demo"), author="ann", body="<b>first</b>")

    def test_every_operation_answers_as_described_and_never_with_a_server_error(self):
        """Valid and invalid requests to every operation: no 5xx; status, content type, headers and body as documented."""
        # As Django's test client does: the handler must not close the test's connection.
        for signal in (request_started, request_finished):
            signal.disconnect(close_old_connections)
            self.addCleanup(signal.connect, close_old_connections)
        schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())
        operations = [result.ok() for result in schema.get_all_operations()]
        self.assertEqual(
            {operation.label for operation in operations},
            {"GET /api/feeds/", "GET /api/feeds/{slug}/comments/", "POST /api/feeds/{slug}/comments/"},
        )
        checks = [
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
        ]
        # Real slugs half of the time, so requests get past the 404 into the interesting code.
        slugs = st.one_of(st.sampled_from(["demo", "club"]), st.none())
        request_log = logging.getLogger("django.request")  # a 4xx per example is expected; keep 5xx visible
        self.addCleanup(request_log.setLevel, request_log.level)
        request_log.setLevel(logging.ERROR)
        for operation in operations:
            has_inputs = bool(list(operation.iter_parameters())) or bool(operation.body)
            # An operation without inputs has no invalid variant to send.
            modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_inputs else (GenerationMode.POSITIVE,)
            for mode in modes:
                with self.subTest(operation=operation.label, mode=mode.value):

                    @settings(
                        max_examples=FUZZ_EXAMPLES,
                        deadline=None,
                        database=None,
                        suppress_health_check=list(HealthCheck),
                    )
                    @given(case=operation.as_strategy(generation_mode=mode), slug=slugs)
                    def run(case, slug):
                        if slug is not None and "slug" in (case.path_parameters or {}):
                            case.path_parameters["slug"] = slug
                        response = case.call()
                        case.validate_response(response, checks=checks)

                    run()

"""Property-based tests: arbitrary text through comment_create, and the API fuzzed from its OpenAPI description."""
import logging
import re
import unicodedata
from html.parser import HTMLParser

import schemathesis
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import SimpleTestCase, TestCase, override_settings
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

from feed.auth import api_token_issue
from feed.models import AUTHOR_MAX_LENGTH, BODY_MAX_LENGTH, Comment, Feed
from feed.rendering import comment_as_dict, render_comment
from feed.services import comment_create
from feed.text import clean_body, clean_name

# Characters that must never be stored: C0/C1 controls but tab and newline, lone surrogates,
# bidi marks, embeddings, overrides and isolates, zero-width spaces and other invisible format characters.
FORBIDDEN = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069"
    r"\u00ad\u061c\u180e\u200b\u200e\u200f\u2060-\u2064\u206a-\u206f\ufeff\ufff9-\ufffb\U000e0001]"
)
JOINERS = "\u200c\u200d"
EMOJI_TAG_SEQUENCE = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")
VARIATION_SELECTOR = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
# Arabic number signs and the like: format characters that draw a sign.
SHOWN_FORMAT = "\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd"
SCOTLAND = "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"

NASTY = [
    "\x00", "\r", "\n", "\r\n", "\t", "\x1b[31m", "\x7f", "\x85", "\u202e", "\u2066", "\ufeff", "\u200b",
    "\ud800", "\udfff", "e\u0301", "\u0301", " ", "\u00a0", "\u2028",
    "\u200e", "\u200f", "\u061c", "\u2060", "\u2061", "\u2064", "\u180e", "\u00ad", "\U000e0001", "\U000e0067",
    "\u200c", "\u200d", "\ufe0f", "\u3164", "\u2800", "\u0600", "👩\u200d💻", "❤\ufe0f\u200d🔥", "👍🏽", SCOTLAND,
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


def assert_no_invisible_leftovers(test, text):
    """Only joining format characters remain: no stray Cf, joiners between two characters, selectors after one."""
    test.assertIsNone(FORBIDDEN.search(text))
    without_flags = EMOJI_TAG_SEQUENCE.sub("🏴", text)
    for index, char in enumerate(without_flags):
        if unicodedata.category(char) == "Cf":
            test.assertIn(char, JOINERS + SHOWN_FORMAT, f"{char!r} in {text!r}")
        if char in JOINERS:
            before, after = without_flags[index - 1 : index] if index else "", without_flags[index + 1 : index + 2]
            test.assertTrue(before.strip() and after.strip() and after not in JOINERS, f"loose joiner in {text!r}")
        if VARIATION_SELECTOR.match(char):
            test.assertTrue(index and without_flags[index - 1].strip(), f"loose variation selector in {text!r}")


def shows_something(text):
    """Whether the text has a character that is not space, control, format or a bare nonspacing mark."""
    return any(
        char in SHOWN_FORMAT
        or (unicodedata.category(char) not in {"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Mn", "Me"} and char not in "\u115f\u1160\u3164\uffa0\u2800")
        for char in text
    )


class CommentTextPropertyTests(HypothesisTestCase):
    """Whatever text arrives, what is stored is the cleaned text, and what is shown is exactly that, escaped."""

    @property
    def feed(self):
        return Feed.objects.get_or_create(slug="fuzz", defaults={"title": "Fuzz", "allow_anonymous": True})[0]

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(author=any_text, body=body_text)
    @example(author="\u200b\u200b", body="\u200b")  # invisible only: both blank
    @example(author="\u200eAnn\u200f\ufeff", body="\u2060\u2064\u180e hi \u061c\u00ad")
    @example(author="👩\u200d💻", body="❤\ufe0f\u200d🔥 " + SCOTLAND)
    @example(author="\u3164", body="\u2800\ufe0f\u200d\n\u0301")
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
        assert_no_invisible_leftovers(self, stored.body)
        assert_no_invisible_leftovers(self, stored.author)
        self.assertTrue(shows_something(stored.author) and shows_something(stored.body))
        self.assertNotIn("\r", stored.body)
        self.assertNotIn("\n", stored.author)

        parser = ArticleParser()
        parser.feed(render_comment(stored))
        parser.close()
        self.assertEqual(parser.text["comment-author"], stored.author)
        self.assertEqual(parser.text["comment-body"], stored.body)
        # Author, guest marker, time, seq; the body; the actions: reply and remove (their labels
        # name the author; remove is hidden where the viewer may not use it).
        self.assertEqual(
            [tag for tag in parser.tags if tag != "br"],
            ["article", "header", "span", "span", "time", "span", "p", "div", "a", "span", "form", "button", "span"],
        )
        self.assertEqual(comment_as_dict(stored)["body"], stored.body)

    @settings(max_examples=300, deadline=None)
    @given(text=body_text)
    @example(text="e\x00\u0301")  # a control character between a letter and its accent
    @example(text=" \ufe0f\u200da")  # a selector that goes makes the joiner after it loose
    @example(text="e\u200d\u200d\u0301")  # two joiners go, bringing a letter and its accent together
    def test_cleaning_is_stable(self, text):
        """Cleaning cleaned text changes nothing: what was accepted is already in its final form."""
        self.assertEqual(clean_body(clean_body(text)), clean_body(text))
        self.assertEqual(clean_name(clean_name(text)), clean_name(text))


class InvisibleTextTests(SimpleTestCase):
    """Format characters go, except where they join characters; text that shows nothing is blank."""

    def test_invisible_format_characters_are_removed(self):
        """Bidi marks, zero-width spaces, BOM, word joiner, invisible operators, soft hyphen: removed from names and bodies."""
        for char in ["\u200b", "\u200e", "\u200f", "\u061c", "\ufeff", "\u2060", "\u2061", "\u2062", "\u2063",
                     "\u2064", "\u180e", "\u00ad", "\u206a", "\ufff9", "\U000e0001", "\U000e0041", "\u202e", "\u2066"]:
            with self.subTest(char=f"U+{ord(char):04X}"):
                self.assertEqual(clean_name(f"A{char}nn"), "Ann")
                self.assertEqual(clean_body(f"h{char}i"), "hi")

    def test_text_with_nothing_visible_cleans_to_blank(self):
        """Names and bodies of only invisible characters become "", like an empty field."""
        for text in ["\u200b\u200b", "\u200b", "\u200e\u200f", "\ufeff \u2060", "\u200d", "\ufe0f", "\u3164",
                     "\u2800", "\u0301", " \u200c\n\u180e "]:
            with self.subTest(text=text):
                self.assertEqual(clean_name(text), "")
                self.assertEqual(clean_body(text), "")

    def test_emoji_sequences_and_joined_scripts_are_kept_intact(self):
        """ZWJ emoji, variation selectors, skin tones, keycaps, subdivision flags and Persian ZWNJ stay as typed."""
        for text in ["👩\u200d💻", "👩\u200d👩\u200d👧", "❤\ufe0f\u200d🔥", "❤\ufe0f", "👍🏽", "1\ufe0f\u20e3", SCOTLAND,
                     "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\u0915\u094d\u200d\u0937"]:
            with self.subTest(text=text):
                self.assertEqual(clean_name(text), text)
                self.assertEqual(clean_body(f"hi {text}!"), f"hi {text}!")

    def test_joiners_and_selectors_that_join_nothing_are_removed(self):
        """A joiner at an end or next to a space, a selector after a space, and tags outside a flag go."""
        self.assertEqual(clean_name("\u200dAnn\u200c"), "Ann")
        self.assertEqual(clean_body("a \u200d b \ufe0fc"), "a  b c")
        self.assertEqual(clean_body("x\U000e0067\U000e0062\U000e007f"), "x")


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
            {
                "GET /api/feeds/", "GET /api/feeds/{slug}/", "GET /api/feeds/{slug}/comments/",
                "POST /api/feeds/{slug}/comments/", "DELETE /api/feeds/{slug}/comments/{comment_id}/",
                "GET /api/feeds/{slug}/events/",
                "GET /api/notifications/", "GET /api/notifications/summary/", "POST /api/notifications/read/",
            },
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
            has_inputs = any(p.location != "path" for p in operation.iter_parameters()) or bool(operation.body)
            # An operation without inputs, or with only a path's slug (any string is one), has no invalid variant to send.
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


POSITIVE_EXAMPLES = 20  # per operation; generating bodies for the long `pattern` takes about 1 s each


# The positive check asks "does the server take every request the schema allows?", so nothing
# but the request's own content may decide the answer: the rate limit is off (a 429 after 30
# posts would answer for the clock, not the request; the test above keeps it on), and the
# caller is a signed-in member with a token (the schema cannot say that `author` is required
# only without credentials, which its description states instead).
@override_settings(FEED_POST_RATE="off")
class ApiAcceptsWhatTheSchemaAllowsTests(TestCase):
    """schemathesis positive data: every request valid by /api/openapi.json is accepted (2xx)."""

    @classmethod
    def setUpTestData(cls):
        demo = Feed.objects.get_or_create(slug="demo", defaults={"title": "Demo", "allow_anonymous": True})[0]
        club = Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        member = get_user_model().objects.create_user("member")
        club.members.add(member)
        _, cls.token = api_token_issue(user=member)
        comment_create(feed=demo, author="ann", body="first")
        # Ids the schema cannot know: a comment of each feed to answer (reply_to), and one of the
        # member's own to remove (a DELETE's comment_id; removing it again is 204 too).
        cls.reply_target = {feed.slug: comment_create(feed=feed, author="ann", body="answer me", user=member if feed is club else None).pk for feed in (demo, club)}
        cls.removable = {feed.slug: comment_create(feed=feed, author="member", body="mine", user=member).pk for feed in (demo, club)}

    def test_every_request_the_schema_allows_is_accepted(self):
        """Generated valid requests to every operation answer 2xx; the only other answer allowed is the
        documented 422 of an Idempotency-Key reused with another body (keys repeat across examples)."""
        for signal in (request_started, request_finished):
            signal.disconnect(close_old_connections)
            self.addCleanup(signal.connect, close_old_connections)
        schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())
        request_log = logging.getLogger("django.request")
        self.addCleanup(request_log.setLevel, request_log.level)
        request_log.setLevel(logging.ERROR)
        headers = {"Authorization": f"Bearer {self.token}"}
        for operation in (result.ok() for result in schema.get_all_operations()):
            with self.subTest(operation=operation.label):

                @settings(max_examples=POSITIVE_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE), slug=st.sampled_from(["demo", "club"]))
                def run(case, slug):
                    if "slug" in (case.path_parameters or {}):
                        case.path_parameters["slug"] = slug  # real feeds: a made-up slug is rightly a 404
                    if "comment_id" in (case.path_parameters or {}):
                        case.path_parameters["comment_id"] = self.removable[slug]  # a made-up id is rightly a 404
                    if isinstance(case.body, dict) and case.body.get("reply_to") is not None:
                        case.body["reply_to"] = self.reply_target[slug]  # an id of another feed is rightly a 400
                    response = case.call(headers=headers)
                    try:
                        answer = response.json()
                    except ValueError:
                        answer = response.text
                    reused_key = (
                        response.status_code == 422
                        and isinstance(answer, dict)
                        and answer.get("error") == "idempotency_key_reused"
                    )
                    self.assertTrue(
                        200 <= response.status_code < 300 or reused_key,
                        f"{case.method} {case.formatted_path} {case.body!r} {case.query!r} {case.headers!r}"
                        f" -> {response.status_code} {answer!r}",
                    )

                run()

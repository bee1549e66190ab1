"""Combining marks: a letter keeps at most four, so no column of accents draws over other comments."""
import unicodedata

from django.test import SimpleTestCase, TestCase

from feed.models import Comment, Feed
from feed.text import MAX_MARKS_PER_CHARACTER, clean_body, clean_name
from tests.browser import Browser, require_browser
from tests.harness import MultiInstanceTestCase

ZALGO = "a" + "\u0301" * 2000  # one letter, 2,000 acute accents
# Real writing that stacks marks, as people type it.
SCRIPTS = {
    "vietnamese (composed)": "Tiếng Việt có dấu: người, những, được, Nguyễn",
    "vietnamese (decomposed)": unicodedata.normalize("NFD", "Tiếng Việt có dấu: người, những, được, Nguyễn"),
    # Genesis 1:1 with points and cantillation; שָּׁ֣ carries four marks (qamats, dagesh, shin dot, munah).
    "hebrew": "בְּרֵאשִׁ֖ית בָּרָ֣א אֱלֹהִ֑ים אֵ֥ת הַשָּׁמַ֖יִם וְאֵ֥ת הָאָֽרֶץ׃ שָּׁ֣",
    "devanagari": "क्षत्रियों ने संस्कृत में हिन्दी पढ़ाँ",
    "tibetan": "བསྒྲུབས་ ཧཱུྃ་ སྐྱོབས་",
    "thai": "น้ำใจ ภาษาไทย กี่",
    "emoji": "#️⃣ 👩‍💻 ❤️‍🔥 👍🏽",
}


def longest_mark_run(text):
    longest = run = 0
    for char in text:
        if unicodedata.category(char) in ("Mn", "Me"):
            run += 1
            longest = max(longest, run)
        elif char not in "\u200c\u200d":
            run = 0
    return longest


class CombiningMarkLimitTests(SimpleTestCase):
    def test_a_letter_with_two_thousand_accents_keeps_four(self):
        """The attack string cleans to the letter with its first accents, in bodies and names alike."""
        for clean in (clean_body, clean_name):
            with self.subTest(clean=clean.__name__):
                cleaned = clean(ZALGO)
                self.assertEqual(cleaned, unicodedata.normalize("NFC", "a" + "\u0301" * (MAX_MARKS_PER_CHARACTER + 1)))
                self.assertEqual(longest_mark_run(cleaned), MAX_MARKS_PER_CHARACTER)

    def test_every_letter_of_a_long_zalgo_text_is_limited(self):
        """Marks are limited per character, not per text: each letter keeps its own four."""
        text = "".join(letter + "\u0300\u0301\u0302\u0303\u0304\u0305\u0306" for letter in "hello world")
        cleaned = clean_body(text)
        self.assertEqual(longest_mark_run(cleaned), MAX_MARKS_PER_CHARACTER)
        base_letters = unicodedata.normalize("NFD", cleaned)
        self.assertEqual("".join(c for c in base_letters if unicodedata.category(c) == "Ll" or c == " "), "hello world")

    def test_joiners_between_marks_do_not_restart_the_count(self):
        """Marks after a zero-width joiner stack on the same letter, so they count with it."""
        cleaned = clean_body("x" + ("\u0301\u0302\u200d" * 50) + "y")
        self.assertLessEqual(sum(unicodedata.category(c) == "Mn" for c in cleaned), MAX_MARKS_PER_CHARACTER)
        self.assertTrue(cleaned.startswith("x") and cleaned.endswith("y"))

    def test_real_scripts_are_kept_as_written(self):
        """Vietnamese, pointed Hebrew, Devanagari, Tibetan, Thai and emoji sequences lose nothing (beyond NFC)."""
        for name, text in SCRIPTS.items():
            with self.subTest(script=name):
                self.assertEqual(clean_body(text), unicodedata.normalize("NFC", text))
                self.assertEqual(clean_name(text), unicodedata.normalize("NFC", text))

    def test_cleaning_never_makes_a_text_longer(self):
        """NFC would turn U+0958 into two characters; it is kept as sent, so the sent length bounds the stored one."""
        for text in ("\u0958" * 80, "\u2adc x", "\ufb2c" * 10, "e\u0301\u0958"):
            with self.subTest(text=text):
                self.assertLessEqual(len(clean_body(text)), len(text))
                self.assertLessEqual(len(clean_name(text)), len(text))
                self.assertEqual(clean_body(clean_body(text)), clean_body(text))


class CombiningMarksThroughThePathsTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.feed = Feed.objects.create(slug="open", title="Open", allow_anonymous=True)

    def test_the_api_and_the_form_store_the_limited_text(self):
        """Posted through the API and the form, the attack string is stored with four marks, and accepted."""
        api = self.client.post(
            "/api/feeds/open/comments/", {"author": ZALGO[:60], "body": ZALGO[:1999]}, content_type="application/json"
        )
        self.assertEqual(api.status_code, 201, api.content)
        form = self.client.post("/feeds/open/comments/", {"author": "ann", "body": ZALGO})
        self.assertEqual(form.status_code, 303)
        for comment in Comment.objects.all():
            self.assertLessEqual(longest_mark_run(comment.body), MAX_MARKS_PER_CHARACTER)
            self.assertLessEqual(longest_mark_run(comment.author), MAX_MARKS_PER_CHARACTER)
        self.assertEqual(api.json()["body"], clean_body(ZALGO))

    def test_hebrew_with_cantillation_is_stored_as_written(self):
        """A member of a real script loses no mark on the way in."""
        response = self.client.post(
            "/api/feeds/open/comments/", {"author": "שָּׁ֣", "body": SCRIPTS["hebrew"]}, content_type="application/json"
        )
        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual(response.json()["body"], unicodedata.normalize("NFC", SCRIPTS["hebrew"]))


class CombiningMarksInTheBrowserTests(MultiInstanceTestCase):
    """In Chromium, a comment posted with 2,000 accents shows four, and draws nothing outside its box."""

    instance_count = 1

    @classmethod
    def setUpClass(cls):
        require_browser()
        super().setUpClass()
        try:
            cls.browser = Browser()
        except BaseException:
            cls._stop_processes()
            raise
        cls.addClassCleanup(cls.browser.quit)

    def test_a_zalgo_comment_is_shown_with_at_most_four_marks_and_clipped_to_its_box(self):
        """The page shows the cleaned text, and each comment clips what it draws (overflow hidden)."""
        self.make_feed("marks")
        instance = self.instances[0]
        self.post(instance, "marks", ZALGO[:1999], author="Z" + "\u0336" * 50)
        self.post(instance, "marks", "the next comment")
        driver = self.browser.driver
        driver.get(instance.http_url("/feeds/marks/"))
        shown = self.browser.wait_for(lambda: self.browser.comments(), message="the comments to show")
        self.assertEqual(len(shown), 2)
        self.assertLessEqual(longest_mark_run(shown[0]["body"]), MAX_MARKS_PER_CHARACTER)
        self.assertLessEqual(longest_mark_run(shown[0]["author"]), MAX_MARKS_PER_CHARACTER)
        overflow = self.browser.js(
            "return [...document.querySelectorAll('#comments .comment')].map(a => getComputedStyle(a).overflow)"
        )
        self.assertEqual(overflow, ["hidden", "hidden"])

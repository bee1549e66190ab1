"""Take the README's picture, docs/screenshots/live-feed.png: `make screenshot`.

Start the app (one daphne, in-process channel layer) on a throwaway SQLite database, post a
few comments through the JSON API and one through the page's form, then photograph the live
page with Debian's headless Chromium (tests/browser.py). Comment times are pinned and the
caret hidden, so the file changes only when the page does. Nothing else is written.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = BASE_DIR / "docs" / "screenshots" / "live-feed.png"
SLUG = "launch-day"
CONVERSATION = [
    ("Ada", "Is anyone else watching the launch stream?"),
    ("Grace", "Yes! Counting down now."),
    ("Linus", "Posting from another server instance: this arrives live, no reload."),
    ("Ada", "Liftoff! <3"),
]
FORM_POST = ("Margaret", "And this one went through the form on the page.")
FIRST_COMMENT_AT = datetime(2025, 11, 23, 19, 27, tzinfo=timezone.utc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"where to write the PNG (default {DEFAULT_OUTPUT.relative_to(BASE_DIR)})")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="livefeed-screenshot-"))
    database_url = f"sqlite:///{workdir / 'screenshot.sqlite3'}"
    os.environ.update({"DJANGO_SETTINGS_MODULE": "livefeed.settings", "DEBUG": "1", "DATABASE_URL": database_url})
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    from django.core.management import call_command

    from feed.models import Comment, Feed
    from tests.browser import Browser, require_browser
    from tests.harness import DaphneInstance, post_comment

    require_browser()
    call_command("migrate", verbosity=0, interactive=False)
    Feed.objects.create(slug=SLUG, title="Launch day", allow_anonymous=True)

    server = DaphneInstance("screenshot", redis_url="", database_url=database_url)
    browser = None
    try:
        server.start()
        server.wait_ready()
        for author, body in CONVERSATION:
            status, data = post_comment(server, SLUG, author=author, body=body)
            if status != 201:
                raise SystemExit(f"posting {body!r} answered {status}: {data}")
        browser = Browser()
        feed_url = server.http_url(f"/feeds/{SLUG}/")
        _open_live(browser, feed_url)
        author, body = FORM_POST
        browser.js(
            "document.querySelector('#comment-form [name=author]').value = arguments[0];"
            "document.querySelector('#comment-form [name=body]').value = arguments[1];"
            "document.querySelector('#comment-form').requestSubmit();",
            author, body,
        )
        expected = len(CONVERSATION) + 1
        browser.wait_for(lambda: len(browser.seqs()) == expected, message=f"{expected} comments on the page")
        for comment in Comment.objects.filter(feed__slug=SLUG):
            Comment.objects.filter(pk=comment.pk).update(created_at=FIRST_COMMENT_AT + timedelta(minutes=comment.seq - 1))
        _open_live(browser, feed_url)
        browser.js("document.activeElement && document.activeElement.blur()")
        browser.screenshot(args.output)
    finally:
        if browser is not None:
            browser.quit()
        server.stop()
        server.close_log()
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()
    print(f"wrote {args.output}")
    return 0


def _open_live(browser, url: str) -> None:
    browser.driver.get(url)
    browser.wait_for(
        lambda: browser.js("var s = document.getElementById('connection-state'); return s && s.dataset.state") == "live",
        message="the page to show it is live",
    )


if __name__ == "__main__":
    sys.exit(main())

"""/metrics: who may read it, and the live path's counts from a real daphne process."""
import re

from django.test import SimpleTestCase, override_settings

from tests.harness import MultiInstanceTestCase, wait_until
from tests.test_health import get


def metric(text, name, **labels):
    """Return a sample's value from the Prometheus text format, or None when absent."""
    label_text = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(label_text) + r"\}" if labels else "") + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else None


class MetricsAccessTests(SimpleTestCase):
    """Served to loopback and METRICS_ALLOWED_CIDRS by REMOTE_ADDR; 403 for anyone else."""

    def test_loopback_clients_get_the_text_format(self):
        for address in ("127.0.0.1", "::1"):
            response = self.client.get("/metrics", REMOTE_ADDR=address)
            self.assertEqual(response.status_code, 200, address)
            self.assertTrue(response["Content-Type"].startswith("text/plain; version=0.0.4"))
            text = response.content.decode()
            for name in (
                "livefeed_ws_connections",
                "livefeed_ws_connections_total",
                "livefeed_ws_closed_total",
                "livefeed_comments_created_total",
                "livefeed_events_published_total",
                "livefeed_publish_failures_total",
                "livefeed_frames_sent_total",
                "livefeed_db_fills_total",
                "livefeed_replays_total",
                "livefeed_delivery_seconds",
            ):
                self.assertIn(f"# TYPE {name}", text)

    def test_other_clients_are_refused_even_with_a_forged_forwarded_for(self):
        response = self.client.get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="127.0.0.1")
        self.assertEqual(response.status_code, 403)
        self.assertNotIn(b"livefeed_", response.content)

    @override_settings(METRICS_ALLOWED_CIDRS=["10.0.0.0/8", "2001:db8::/32"])
    def test_allowed_networks_are_served(self):
        self.assertEqual(self.client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code, 200)
        self.assertEqual(self.client.get("/metrics", REMOTE_ADDR="2001:db8::5").status_code, 200)
        self.assertEqual(self.client.get("/metrics", REMOTE_ADDR="11.1.2.3").status_code, 403)

    @override_settings(DEBUG=False, SECURE_SSL_REDIRECT=True, ALLOWED_HOSTS=["feed.example.com"])
    def test_scrapes_by_address_over_plain_http_are_served(self):
        self.assertEqual(self.client.get("/metrics", HTTP_HOST="10.0.0.5:8000", REMOTE_ADDR="127.0.0.1").status_code, 200)


class LiveMetricsTests(MultiInstanceTestCase):
    """Two real daphne processes: each counts its own sockets, frames, replays and delivery times."""

    def scrape(self, instance):
        status, body, _ = get(instance.http_url("/metrics"))
        self.assertEqual(status, 200)
        return body.decode()

    def test_connections_frames_delivery_and_closes_are_counted_where_they_happen(self):
        a, b = self.instances
        self.make_feed("metrics")
        before_a, before_b = self.scrape(a), self.scrape(b)
        frames_before = metric(before_a, "livefeed_frames_sent_total", stream="feed") or 0
        delivered_before = metric(before_a, "livefeed_delivery_seconds_count") or 0
        replays_before = metric(before_a, "livefeed_replays_total", stream="feed") or 0
        closed_before = metric(before_a, "livefeed_ws_closed_total", code="1000") or 0
        opened_before = metric(before_a, "livefeed_ws_connections_total", stream="feed") or 0

        readers = [self.reader(a, "metrics"), self.reader(a, "metrics"), self.reader(b, "metrics")]
        wait_until(lambda: metric(self.scrape(a), "livefeed_ws_connections", stream="feed") == 2, 10, "2 connections on A")
        self.assertEqual(metric(self.scrape(b), "livefeed_ws_connections", stream="feed"), 1)

        self.post(b, "metrics", "one")
        self.post(b, "metrics", "two")
        for reader in readers:
            reader.wait_for_seq(2)
        after = self.scrape(a)
        # Two comments to two readers on A: four frames, counted once per fan-out.
        self.assertEqual(metric(after, "livefeed_frames_sent_total", stream="feed") - frames_before, 4)
        # Each live event's commit-to-write time is observed once per process, not per reader.
        self.assertEqual(metric(after, "livefeed_delivery_seconds_count") - delivered_before, 2)
        self.assertGreater(metric(after, "livefeed_delivery_seconds_sum"), 0)
        self.assertEqual(metric(after, "livefeed_replays_total", stream="feed") - replays_before, 2)
        self.assertEqual(metric(after, "livefeed_ws_connections_total", stream="feed") - opened_before, 2)

        readers[0].close()
        wait_until(lambda: metric(self.scrape(a), "livefeed_ws_connections", stream="feed") == 1, 10, "1 connection on A")
        self.assertEqual(metric(self.scrape(a), "livefeed_ws_closed_total", code="1000") - closed_before, 1)

    def test_events_filled_from_the_database_are_counted(self):
        a, _ = self.instances
        self.make_feed("fills")
        reader = self.reader(a, "fills")
        before = metric(self.scrape(a), "livefeed_db_fills_total", stream="feed") or 0
        # Saved without publishing (the channel layer never hears of them): the hub's check finds
        # them in the database and fills them.
        from feed.models import Comment, Event, Feed

        feed = Feed.objects.get(slug="fills")
        for seq in (1, 2, 3):
            comment = Comment.objects.create(feed=feed, seq=seq, author="quiet", body=f"unpublished {seq}")
            Event.objects.create(feed=feed, seq=seq, kind=Event.Kind.COMMENT_CREATED, comment=comment)
        Feed.objects.filter(pk=feed.pk).update(last_seq=3)
        reader.wait_for_seq(3, timeout=20)
        self.assertEqual(metric(self.scrape(a), "livefeed_db_fills_total", stream="feed") - before, 3)


class SlowReaderMetricsTests(MultiInstanceTestCase):
    """A reader that stops reading is closed with 1013, and the close is counted."""

    instance_count = 1
    # 1 s instead of 10 s backed up: the close comes after fewer posts (the byte limit still applies).
    instance_env = {"WS_SLOW_READER_TIMEOUT": "1"}

    def test_a_slow_reader_close_is_counted(self):
        (a,) = self.instances
        self.make_feed("slow")
        stalled = self.stalled_reader(a, "slow")
        before = metric(get(a.http_url("/metrics"))[1].decode(), "livefeed_slow_reader_closes_total") or 0
        body = lambda poster, index: f"{poster}-{index} " + "&" * 1980  # noqa: E731  (~10 KB HTML frames)

        def closes():
            return metric(get(a.http_url("/metrics"))[1].decode(), "livefeed_slow_reader_closes_total") - before

        posted = 0
        while closes() < 1 and posted < 1200:
            self.post_many([(a, 20)], "slow", body=body)
            posted += 20
        self.assertEqual(closes(), 1, f"after {posted} posts\n{self.diagnostics()}")
        seqs, code = stalled.drain(timeout=20)
        self.assertEqual(code, 1013)


class CloseCodeLabelTests(SimpleTestCase):
    def test_unknown_close_codes_share_one_series(self):
        """A client choosing close codes cannot create a series per code."""
        from livefeed.metrics import WS_CLOSED_TOTAL
        from notifications import live_metrics

        class Consumer:
            pass

        before = WS_CLOSED_TOTAL.labels("other")._value.get()
        for code in (3000, 4999, 4123):
            consumer = Consumer()
            live_metrics.ws_opened(consumer, "feed")
            live_metrics.ws_closed(consumer, code)
            live_metrics.ws_closed(consumer, code)  # counted once
        self.assertEqual(WS_CLOSED_TOTAL.labels("other")._value.get() - before, 3)
        self.assertNotIn('code="4123"', generate_latest_text())


def generate_latest_text():
    from prometheus_client import generate_latest

    return generate_latest().decode()

"""The load benchmark (bench/run.py) still runs end to end, with tiny numbers."""
import json
import shutil
import subprocess
import unittest
import sys
import tempfile
from pathlib import Path

from django.test import SimpleTestCase

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 240  # the run itself takes about 20 s; generous for a loaded 2-core machine


class BenchSmokeTests(SimpleTestCase):
    def test_quick_run_checks_every_frame_and_writes_json_and_chart(self):
        """A tiny run of every scenario on the project and the peer delivers every comment to
        every reader, leaves no group member behind and writes the JSON, table and chart; on the
        project, 10 signed-in users' notification sockets get every notification of 5 comments
        mentioning 4 of them each, once and in order, as the database has them."""
        with tempfile.TemporaryDirectory() as out:
            completed = subprocess.run(
                [sys.executable, "bench/run.py", "--quick", "--readers", "6", "--storm-readers", "12",
                 "--systems", "project,peer", "--scenarios", "memory,keep_up,full_speed,storm,notifications",
                 "--keep-up-seconds", "1", "--full-speed-posts", "5", "--workers", "1", "--out", out,
                 "--notif-users", "10", "--notif-rate", "5", "--notif-seconds", "1", "--notif-mentions", "4",
                 "--max-seconds", str(RUN_TIMEOUT - 30)],
                cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
            )
            self.assertEqual(completed.returncode, 0, completed.stdout[-3000:] + completed.stderr[-3000:])
            result = json.loads((Path(out) / "latest.json").read_text())
            self.assertGreater((Path(out) / "latest.png").stat().st_size, 10_000)
            self.assertIn("| full speed: deliveries/s |", (Path(out) / "latest.md").read_text())
            self.assertIn("| notifications: lost / duplicated / out of order | 0 / 0 / 0 | – |",
                          (Path(out) / "latest.md").read_text())

        self.assertEqual(set(result["systems"]), {"project", "peer"})
        for name, system in result["systems"].items():
            phases = system["phases"]
            self.assertEqual(phases["memory"]["connect"]["connected"], 6, name)
            for phase in ("keep_up", "full_speed"):
                self.assertGreater(phases[phase]["expected"], 0, (name, phase))
                self.assertEqual(phases[phase]["received"], phases[phase]["expected"], (name, phase))
                self.assertEqual(phases[phase]["lost"], 0, (name, phase))
                self.assertIsNotNone(phases[phase]["latency_ms"]["p99"], (name, phase))
            self.assertEqual(phases["storm"]["connect"]["failed"], 0, name)
            self.assertEqual(phases["storm"]["members_left"], 0, name)
            self.assertEqual(phases["storm"]["after"]["received"], phases["storm"]["after"]["expected"], name)
            self.assertEqual(len(system["servers_alive_at_end"]), 2, name)
        project = result["systems"]["project"]["phases"]
        for phase in ("keep_up", "full_speed"):
            self.assertEqual(project[phase]["duplicated"], 0, phase)
            self.assertEqual(project[phase]["out_of_order"], 0, phase)

        notified = project["notifications"]
        self.assertNotIn("notifications", result["systems"]["peer"]["phases"])  # the peer has no people
        self.assertEqual(notified["connect"]["connected"], 10)
        self.assertEqual(notified["posts"]["posted"], 5)
        self.assertEqual(notified["expected"], 5 * 4)  # notifications in the database
        self.assertEqual(notified["expected_by_generator"], 5 * 4)
        self.assertEqual(notified["received"], notified["expected"])
        self.assertEqual((notified["lost"], notified["duplicated"], notified["out_of_order"]), (0, 0, 0))
        self.assertEqual(notified["sockets_matching_database"], 10)  # each socket: the user's last seq and count
        self.assertTrue(notified["database_gap_free"])
        self.assertIsNotNone(notified["latency_ms"]["p99"])
        self.assertIsNotNone(notified["latency_from_created_ms"]["p99"])

    @unittest.skipIf(shutil.which("node") is None or shutil.which("npm") is None, "the Node peer needs node and npm")
    def test_node_peer_and_many_feeds_deliver_every_frame_and_report_ratios(self):
        """The Node peer (installed by the bench with npm ci) and the project both deliver every
        comment at the 'big' keep-up and over many feeds; the report has the project/Node ratios."""
        with tempfile.TemporaryDirectory() as out:
            completed = subprocess.run(
                [sys.executable, "bench/run.py", "--quick", "--systems", "project,node",
                 "--scenarios", "memory,keep_up,full_speed,keep_up_big,many_feeds", "--readers", "6",
                 "--big-readers", "10", "--feeds", "4", "--feeds-seconds", "0.5", "--keep-up-seconds", "1",
                 "--full-speed-posts", "5", "--workers", "1", "--out", out, "--max-seconds", str(RUN_TIMEOUT - 30)],
                cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
            )
            self.assertEqual(completed.returncode, 0, completed.stdout[-3000:] + completed.stderr[-3000:])
            result = json.loads((Path(out) / "latest.json").read_text())
            self.assertIn("| server CPU per delivered frame, 5,000 readers", (Path(out) / "latest.md").read_text())
            self.assertGreater((Path(out) / "comparison.png").stat().st_size, 10_000)
        for name in ("project", "node"):
            phases = result["systems"][name]["phases"]
            for phase in ("keep_up", "full_speed", "keep_up_big", "many_feeds"):
                self.assertGreater(phases[phase]["expected"], 0, (name, phase))
                self.assertEqual(phases[phase]["received"], phases[phase]["expected"], (name, phase))
                self.assertEqual(phases[phase]["lost"], 0, (name, phase))
                # psutil counts CPU in clock ticks: a tiny phase may show 0 µs, but never nothing.
                self.assertGreaterEqual(phases[phase]["cpu_us_per_frame"]["servers"], 0, (name, phase))
            self.assertEqual(phases["many_feeds"]["connections"], 12, name)
        comparison = result["node_comparison"]
        for key in ("cpu_per_frame_1k", "cpu_per_frame_5k", "p99_5k", "full_speed", "memory"):
            self.assertIsNotNone(comparison[key]["ratio"], key)

    def test_soak_reconnects_readers_with_resume_and_loses_nothing(self):
        """A short soak: readers that reconnect mid-run resume and miss no comment; RSS is sampled."""
        with tempfile.TemporaryDirectory() as out:
            completed = subprocess.run(
                [sys.executable, "bench/run.py", "--soak", "--soak-minutes", "0.25", "--soak-interval", "4",
                 "--soak-warm-minutes", "0", "--soak-readers", "20", "--soak-reconnect", "0.25", "--workers", "1",
                 "--out", out],
                cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
            )
            self.assertEqual(completed.returncode, 0, completed.stdout[-3000:] + completed.stderr[-3000:])
            result = json.loads((Path(out) / "soak.json").read_text())
        self.assertGreater(sum(r["reconnected"] for r in result["reconnects"]), 0)
        self.assertGreater(result["delivery"]["expected"], 0)
        self.assertEqual(result["delivery"]["received"], result["delivery"]["expected"])
        self.assertEqual(result["delivery"]["lost"], 0)
        self.assertGreaterEqual(len(result["rss_samples"]), 3)

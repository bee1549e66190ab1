"""The load benchmark (bench/run.py) still runs end to end, with tiny numbers."""
import json
import subprocess
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

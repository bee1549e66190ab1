"""Not collected by the suite (the name does not start with test): run by tests.test_logging.RunnerOutputTests."""
import logging
import unittest


class NoisyAndSkippedTests(unittest.TestCase):
    def test_skipped(self):
        self.skipTest("no frobnicator on this machine")

    def test_logs_a_warning_and_a_traceback(self):
        try:
            raise RuntimeError("expected failure injected by the fixture")
        except RuntimeError:
            logging.getLogger("tests.fixture").exception("Injected fault")

"""Keep health checks and metric scrapes out of daphne's access log.

A balancer probing ``/readyz`` every few seconds per instance would otherwise be most of
the log. daphne writes its access log (``--access-log``) through
``daphne.access.AccessLogGenerator``, and ``manage.py runserver`` through the
``django.channels.server`` logger (``livefeed.logging.ProbeAccessFilter`` in LOGGING).
"""
from __future__ import annotations

import logging
import sys
from typing import Any

from django.conf import settings

from livefeed.logging import PROBE_PATHS

_WRAPPED = "_livefeed_quiet_probes"
access_logger = logging.getLogger("daphne.access")


def quiet_probes_in_access_log() -> None:
    """Make daphne's access log skip the probe paths, and go through logging with LOG_FORMAT=json.

    Idempotent; does nothing unless daphne's CLI is loaded.
    """
    access = sys.modules.get("daphne.access")
    if access is None:
        return
    generator = access.AccessLogGenerator
    if getattr(generator.__call__, _WRAPPED, False):
        return
    original = generator.__call__

    def __call__(self: Any, protocol: str, action: str, details: dict[str, Any]) -> None:
        if protocol == "http" and details.get("path") in PROBE_PATHS:
            return
        original(self, protocol, action, details)

    setattr(__call__, _WRAPPED, True)
    generator.__call__ = __call__
    if settings.LOG_FORMAT == "json":
        # One JSON object per line on every stream: access lines become log records.
        def write_entry(
            self: Any, host: str, date: Any, request: str, status: Any = None, length: Any = None, **_: Any
        ) -> None:
            access_logger.info('%s "%s" %s %s', host, request, status or "-", length or "-")

        generator.write_entry = write_entry

"""Settings of the tutorial peer: just enough Django for one consumer and one view.

The peer is what the Channels tutorial builds, pointed at the same Redis, so the
benchmark can compare the project with it side by side. No database, no sessions.
"""
from __future__ import annotations

import os

DEBUG = False
SECRET_KEY = "bench-peer-not-secret"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.peers.urls"
DATABASES: dict = {}
USE_TZ = True

# The tutorial's layer configuration: the core Redis layer with its defaults, except the
# capacity. At the default of 100 a group_send to 500 sockets of one process drops 400
# messages silently (capacity is counted per process); a peer that loses most messages
# would make its deliveries/s meaningless, so it gets room enough for the benchmark.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ["REDIS_URL"]],
            "capacity": int(os.environ.get("PEER_CAPACITY", "100000")),
        },
    }
}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

"""Settings of the write-path peer: the project's own settings, with one plain view as the URLconf.

Same middleware, same database, same Comment table: the only difference from the project's
POST /api/feeds/<slug>/comments/ is what the view does (bench/peers/write_views.py).
"""
from livefeed.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.peers.write_urls"

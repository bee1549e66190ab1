"""ASGI application of the write-path peer (`bench.peers.write_asgi:application`): HTTP only.

The project's own HTTP handler (reused request threads, livefeed/request_threads.py), so that
the only difference from the project is what the view does.
"""
import os

from livefeed.request_threads import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.write_settings")
application = get_asgi_application()

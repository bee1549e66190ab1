"""ASGI application of the write-path peer (`bench.peers.write_asgi:application`): HTTP only."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.write_settings")
application = get_asgi_application()

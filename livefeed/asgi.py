"""ASGI entry point: Django for HTTP, the feed consumer for WebSockets."""
import os
import sys

from django.core.exceptions import ImproperlyConfigured

from livefeed.request_threads import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livefeed.settings")
try:
    django_asgi_app = get_asgi_application()
    from livefeed.checks import require_valid_settings
    from notifications.startup import require_collected_static_files

    require_valid_settings()  # a setting that would switch off a guarantee stops the server here
    require_collected_static_files()
except ImproperlyConfigured as exc:
    # One line for the operator (a missing SECRET_KEY, a bad setting, collectstatic not run), not a traceback.
    sys.exit(f"Configuration error: {exc}")

from channels.auth import AuthMiddlewareStack  # noqa: E402
from django.urls import re_path  # noqa: E402

from livefeed.access_log import quiet_probes_in_access_log  # noqa: E402
from livefeed.limits import RequestBodyLimitMiddleware  # noqa: E402
from livefeed.ws_limits import refuse_unrouted  # noqa: E402
from livefeed.ws_stack import ProtocolRouter, WebSocketStack  # noqa: E402
from notifications.routing import websocket_urlpatterns  # noqa: E402
from notifications.server_adapter.daphne import install as install_server_adapter  # noqa: E402
from notifications.startup import announce_configuration, check_server_adapter, tune_garbage_collector  # noqa: E402
from ops.heartbeat import start_heartbeat  # noqa: E402

announce_configuration()  # database, channel layer, Redis hosts, limits
check_server_adapter()  # the private names the adapter needs exist; loud when one is missing
install_server_adapter()  # frames straight to the socket, slow readers, SIGTERM drain, request limits
quiet_probes_in_access_log()
start_heartbeat()  # this process's entry on /ops/
tune_garbage_collector()  # no full collections while streaming: they stall every socket of the process

# Each app below is an ASGI 3 callable, but the type hints of Django (ASGIHandler), asgiref
# (whose ASGIApplication includes ASGI 2 classes), types-channels (URLRouter wants its own
# URLPattern subclass) and django-stubs (re_path() takes views) do not fit one another.
application = ProtocolRouter(
    {
        "http": RequestBodyLimitMiddleware(django_asgi_app),  # type: ignore[arg-type]
        # The Origin check, the per-client limit, then Channels' AuthMiddlewareStack and URL
        # routing, which hand over to the consumer so an idle socket keeps none of their frames.
        "websocket": WebSocketStack(
            [*websocket_urlpatterns, re_path(r"", refuse_unrouted)],  # type: ignore[arg-type]
            layers=AuthMiddlewareStack,
        ),
    }
)

"""ASGI entry point: Django for HTTP, the feed consumer for WebSockets."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livefeed.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from livefeed.checks import require_valid_settings  # noqa: E402
from livefeed.limits import RequestBodyLimitMiddleware  # noqa: E402
from livefeed.ws_limits import WebSocketsPerClientLimit, refuse_unrouted  # noqa: E402
from livefeed.ws_origin import OriginValidator  # noqa: E402
from notifications.routing import websocket_urlpatterns  # noqa: E402
from notifications.server_adapter.daphne import install as install_server_adapter  # noqa: E402
from notifications.startup import announce_channel_layer, check_server_adapter, require_collected_static_files  # noqa: E402

require_valid_settings()  # a setting that would switch off a guarantee stops the server here
require_collected_static_files()
announce_channel_layer()
check_server_adapter()  # the private names the adapter needs exist; loud when one is missing
install_server_adapter()  # frames straight to the socket, slow readers, SIGTERM drain, request limits

# Each app below is an ASGI 3 callable, but the type hints of Django (ASGIHandler), asgiref
# (whose ASGIApplication includes ASGI 2 classes), types-channels (URLRouter wants its own
# URLPattern subclass) and django-stubs (re_path() takes views) do not fit one another.
application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimitMiddleware(django_asgi_app),  # type: ignore[arg-type]
        "websocket": OriginValidator(
            WebSocketsPerClientLimit(
                AuthMiddlewareStack(URLRouter([*websocket_urlpatterns, re_path(r"", refuse_unrouted)]))  # type: ignore[arg-type, list-item]
            )
        ),
    }
)

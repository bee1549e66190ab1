"""ASGI entry point: Django for HTTP, the feed consumer for WebSockets."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livefeed.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from livefeed.checks import require_valid_settings  # noqa: E402
from livefeed.limits import RequestBodyLimitMiddleware, install_daphne_body_limit  # noqa: E402
from notifications.daphne_hooks import install as install_daphne_hooks  # noqa: E402
from notifications.routing import websocket_urlpatterns  # noqa: E402
from notifications.startup import announce_channel_layer, require_collected_static_files  # noqa: E402

require_valid_settings()  # a setting that would switch off a guarantee stops the server here
require_collected_static_files()
announce_channel_layer()
install_daphne_hooks()  # frames straight to the socket, slow-reader and SIGTERM closes
install_daphne_body_limit()

application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimitMiddleware(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

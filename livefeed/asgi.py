"""ASGI entry point: Django for HTTP, the feed consumer for WebSockets."""
import os
import sys

from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livefeed.settings")
try:
    django_asgi_app = get_asgi_application()
    from notifications.startup import announce_configuration, require_collected_static_files

    require_collected_static_files()
except ImproperlyConfigured as exc:
    # One line for the operator (a missing SECRET_KEY, collectstatic not run), not a traceback.
    sys.exit(f"Configuration error: {exc}")

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from livefeed.access_log import quiet_probes_in_access_log  # noqa: E402
from livefeed.limits import RequestBodyLimitMiddleware, install_daphne_body_limit  # noqa: E402
from notifications.daphne_hooks import install as install_daphne_hooks  # noqa: E402
from notifications.routing import websocket_urlpatterns  # noqa: E402
from ops.heartbeat import start_heartbeat  # noqa: E402

announce_configuration()
install_daphne_hooks()  # frames straight to the socket, slow-reader and SIGTERM closes
install_daphne_body_limit()
quiet_probes_in_access_log()
start_heartbeat()  # this process's entry on /ops/

application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimitMiddleware(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

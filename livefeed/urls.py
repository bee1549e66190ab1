from django.contrib import admin
from django.urls import include, path

# /healthz, /readyz and /metrics are answered by livefeed.health.ProbeMiddleware, before the
# HTTPS redirect and the host check.
urlpatterns = [
    path("admin/", admin.site.urls),
    path("ops/", include("ops.urls")),
    path("accounts/", include("accounts.urls")),
    path("notifications/", include("notifications.urls")),
    path("", include("feed.urls")),
]

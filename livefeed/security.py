"""Response headers that Django's SecurityMiddleware does not set: Content-Security-Policy."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin


def content_security_policy(request: HttpRequest) -> str:
    """Return the policy for this response: settings.CONTENT_SECURITY_POLICY plus this host's ws(s)."""
    directives = {name: list(sources) for name, sources in settings.CONTENT_SECURITY_POLICY.items()}
    try:
        host = request.get_host()
    except DisallowedHost:
        host = ""
    if host and "connect-src" in directives:
        # CSP 3 lets 'self' cover ws:/wss: of the same host; older browsers need them named.
        directives["connect-src"] += [f"ws://{host}", f"wss://{host}"]
    return "; ".join(" ".join([name, *sources]) for name, sources in directives.items())


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Add a Content-Security-Policy header to every response that has none yet."""

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = content_security_policy(request)
        return response

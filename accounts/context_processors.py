"""What every page's header needs: whether sign-up is open."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def accounts(request: HttpRequest) -> dict[str, Any]:
    return {"signup_open": settings.SIGNUP_OPEN}

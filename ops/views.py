"""The live operations page for staff: /ops/ (the page) and its htmx-polled fragment."""
from __future__ import annotations

import math

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from feed.views import HtmxHttpRequest
from ops.selectors import ops_summary


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "no live deliveries"
    if math.isinf(seconds):
        return "over 10 s"
    return f"≤ {seconds * 1000:,.0f} ms" if seconds < 1 else f"≤ {seconds:g} s"


@require_GET
@never_cache
@staff_member_required
def ops_page(request: HtmxHttpRequest) -> HttpResponse:
    """Render the operations page, or only its live part for htmx's polling."""
    summary = ops_summary()
    context = {
        "summary": summary,
        "delivery_p99": _duration(summary.delivery_p99),
    }
    template = "ops/_live.html" if request.htmx else "ops/page.html"
    return render(request, template, context)

"""The keys & usage page: requests, tokens and errors per API key over a window."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from dashboard.access import staff_page
from dashboard.analytics import WINDOWS, usage_report, window_for


@staff_page
def usage(request: HttpRequest) -> HttpResponse:
    window = window_for(request.GET.get("window"))
    report = usage_report(window, now=timezone.now())
    return render(
        request,
        "dashboard/usage.html",
        {
            "report": report,
            "windows": WINDOWS.values(),
            "charts": {
                "xs": report.xs,
                "requests": report.requests,
                "tokens": report.tokens,
                "errors": report.errors,
            },
        },
    )

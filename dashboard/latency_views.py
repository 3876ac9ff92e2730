"""The latency page: distributions and percentiles over a window, per model and node."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from dashboard.access import staff_page
from dashboard.analytics import WINDOWS, latency_report, series, window_for


@staff_page
def latency(request: HttpRequest) -> HttpResponse:
    window = window_for(request.GET.get("window"))
    report = latency_report(
        window,
        now=timezone.now(),
        model=request.GET.get("model", "").strip(),
        node=request.GET.get("node", "").strip(),
    )
    return render(
        request,
        "dashboard/latency.html",
        {
            "report": report,
            "windows": WINDOWS.values(),
            "charts": series(report),
            "rps": report.overall.requests / window.span.total_seconds(),
            "breakdowns": [
                ("By model", "Model", report.by_model),
                ("By node", "Node", report.by_node),
            ],
        },
    )

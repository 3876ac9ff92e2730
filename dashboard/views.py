"""The console's pages. Thin views: reads come from dashboard.selectors, writes go through
the control plane's services (the same ones the management API's node actions use)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from dashboard.access import staff_page, user_page
from dashboard.selectors import cluster_overview


@staff_page
def overview(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/index.html", {"overview": cluster_overview()})


def _coming(request: HttpRequest, title: str) -> HttpResponse:
    return render(request, "dashboard/coming_soon.html", {"page_title": title})


@staff_page
def nodes(request: HttpRequest) -> HttpResponse:
    return _coming(request, "Nodes")


@staff_page
def node_detail(request: HttpRequest, name: str) -> HttpResponse:
    return _coming(request, name)


@staff_page
def node_action(request: HttpRequest, name: str, action: str) -> HttpResponse:
    return _coming(request, name)


@staff_page
def readiness(request: HttpRequest) -> HttpResponse:
    return _coming(request, "Readiness")


@staff_page
def readiness_run(request: HttpRequest) -> HttpResponse:
    return _coming(request, "Readiness")


# Stubs the analytics pages replace (dashboard/analytics_views.py or their own modules).
@staff_page
def latency(request: HttpRequest) -> HttpResponse:
    return _coming(request, "Latency")


@staff_page
def usage(request: HttpRequest) -> HttpResponse:
    return _coming(request, "Keys & usage")


@staff_page
def requests(request: HttpRequest) -> HttpResponse:
    return _coming(request, "Request log")


@user_page
def chat(request: HttpRequest) -> HttpResponse:
    return _coming(request, "Chat")

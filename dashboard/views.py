from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from dashboard.selectors import cluster_overview


@staff_member_required
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/index.html", {"overview": cluster_overview()})

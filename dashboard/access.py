"""Who may open which console page: staff for everything but the chat page, which any
logged-in user may use. Anonymous visitors go to the console's login page."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

View = Callable[..., HttpResponse]


def staff_page(view: View) -> View:
    """Staff only. A logged-in user without staff rights gets a 403 page that points at the
    chat page they may use, except on the overview (the login's landing page), which sends
    them straight there."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not request.user.is_staff:
            if request.resolver_match and request.resolver_match.url_name == "overview":
                return redirect("dashboard:chat")
            return render(request, "dashboard/forbidden.html", status=403)
        return view(request, *args, **kwargs)

    return login_required(wrapped)


def user_page(view: View) -> View:
    return login_required(view)

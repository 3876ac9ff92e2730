"""The chat page (/ui): any logged-in user talks to the models they may use, through /v1
with the session's own short-lived key (dashboard.chat_keys)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from dashboard.access import user_page
from dashboard.chat_keys import chat_profiles, models_for, session_key_for


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # user_page: logged in
    return user


@never_cache
@user_page
def chat(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    grant = models_for(request.user, now)
    profiles = chat_profiles(grant)
    config = expires_at = None
    if profiles:
        issued = session_key_for(user=_user(request), session=request.session, grant=grant, now=now)
        expires_at = issued.expires_at
        config = {
            **issued.to_dict(),
            "models": [p.model_id for p in profiles],
            "renew_url": reverse("dashboard:chat_key"),
        }
    return render(
        request,
        "dashboard/chat.html",
        {"profiles": profiles, "config": config, "expires_at": expires_at},
    )


@never_cache
@require_POST
@user_page
def chat_key(request: HttpRequest) -> HttpResponse:
    """A fresh look at the session's key, for a page open longer than the key lives."""
    now = timezone.now()
    grant = models_for(request.user, now)
    if grant.models is not None and not grant.models:
        return JsonResponse({"error": "You may not use any model."}, status=403)
    issued = session_key_for(user=_user(request), session=request.session, grant=grant, now=now)
    return JsonResponse(issued.to_dict())

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import chat_views, latency_views, requestlog_views, usage_views, views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("overview/stats", views.overview_stats, name="overview_stats"),
    path("nodes/", views.nodes, name="nodes"),
    path("nodes/<str:name>/", views.node_detail, name="node"),
    path("nodes/<str:name>/<str:action>", views.node_action, name="node_action"),
    path("readiness/", views.readiness, name="readiness"),
    path("readiness/run", views.readiness_run, name="readiness_run"),
    # The analytics pages (latency, keys & usage, request log, chat).
    path("latency/", latency_views.latency, name="latency"),
    path("usage/", usage_views.usage, name="usage"),
    path("requests/", requestlog_views.requests, name="requests"),
    path("ui", chat_views.chat, name="chat"),
    path("ui/key", chat_views.chat_key, name="chat_key"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="dashboard/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="dashboard:login"), name="logout"),
]

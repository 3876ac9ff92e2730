"""The management API, mounted at /v1/admin/ (the ASGI router leaves that prefix to Django)."""

from __future__ import annotations

from django.urls import path, re_path

from admin_api import views as api
from admin_api.errors import not_found

app_name = "admin_api"

urlpatterns = [
    path("models/load", api.LoadModelView.as_view(), name="models-load"),
    path("tasks/<str:task_id>", api.TaskStatusView.as_view(), name="task-status"),
    # Last: anything else under /v1/admin/ is an OpenAI-shaped 404, not Django's HTML page.
    re_path(r"^(?P<path>.*)$", not_found),
]

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from admin_api.index import ApiIndexView

admin.site.site_header = "Clawdbot administration"
admin.site.site_title = "Clawdbot"
admin.site.index_title = "Nodes, model profiles and API keys"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api", ApiIndexView.as_view()),
    path("api/", include("admin_api.api_urls")),
    path("v1/admin/", include("admin_api.urls")),
    path("", include("dashboard.urls")),
]

from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from dashboard.chat_keys import on_logout

        # A logout revokes the chat page's key for that session (dashboard.chat_keys).
        user_logged_out.connect(on_logout, dispatch_uid="dashboard-chat-key-logout")

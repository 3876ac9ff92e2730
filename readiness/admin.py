from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import URLPattern, path
from django.utils.html import format_html
from django.utils.safestring import SafeString

from readiness.models import ReadinessCheck, ReadinessResult, ReadinessRun

COLOURS = {
    "pass": "#1a7f37",
    "fail": "#cf222e",
    "skip": "#666",
    "passed": "#1a7f37",
    "failed": "#cf222e",
    "running": "#9a6700",
}


def _badge(value: str) -> SafeString:
    return format_html('<strong style="color:{}">{}</strong>', COLOURS.get(value, "#666"), value)


@admin.register(ReadinessCheck)
class ReadinessCheckAdmin(admin.ModelAdmin):
    list_display = ("title", "key", "enabled", "description")
    list_editable = ("enabled",)
    readonly_fields = ("key", "title", "description", "position")
    actions = ["run_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the checks are code; their rows follow it

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Run the whole checklist now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[ReadinessCheck]) -> None:
        _queue(self, request)


class ResultInline(admin.TabularInline):
    model = ReadinessResult
    extra = 0
    can_delete = False
    fields = ("status_badge", "title", "reason", "duration_ms")
    readonly_fields = fields

    @admin.display(description="status")
    def status_badge(self, result: ReadinessResult) -> SafeString:
        return _badge(result.status)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ReadinessRun)
class ReadinessRunAdmin(admin.ModelAdmin):
    list_display = ("started_at", "state_badge", "trigger", "failed_checks", "finished_at")
    list_filter = ("state", "trigger")
    readonly_fields = ("started_at", "finished_at", "state", "trigger", "gateway_url")
    inlines = [ResultInline]
    actions = ["run_now"]
    date_hierarchy = "started_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ReadinessRun]:
        return super().get_queryset(request).prefetch_related("results")

    @admin.display(description="state", ordering="state")
    def state_badge(self, run: ReadinessRun) -> SafeString:
        return _badge(run.state)

    @admin.display(description="failed checks")
    def failed_checks(self, run: ReadinessRun) -> str:
        return ", ".join(r.title for r in run.failures) or "—"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        run_now = self.admin_site.admin_view(self.run_now_view)
        return [path("run-now/", run_now, name="readiness_run_now"), *super().get_urls()]

    def run_now_view(self, request: HttpRequest) -> HttpResponse:
        """The changelist's "Run the checklist now" button (POST, CSRF-checked)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_view_permission(request) or not request.user.is_staff:
            raise PermissionDenied
        _queue(self, request)
        return redirect("admin:readiness_readinessrun_changelist")

    @admin.action(description="Run the whole checklist now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[ReadinessRun]) -> None:
        _queue(self, request)


def _queue(model_admin: admin.ModelAdmin, request: HttpRequest) -> None:  # type: ignore[type-arg]
    # Imported here: the admin is loaded in every process at start-up, the checklist's
    # machinery (HTTP clients, the load generator) only where a run is started.
    from readiness.services import queue_run

    try:
        run = queue_run(f"admin ({request.user})")
    except Exception as exc:
        model_admin.message_user(request, f"The task queue is unreachable: {exc}", messages.ERROR)
        return
    model_admin.message_user(
        request,
        f"Readiness run {run.pk} started; it appears under Readiness runs as it finishes "
        "(the smoke load takes a while).",
        messages.SUCCESS,
    )

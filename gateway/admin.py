from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils.html import format_html

from gateway.models import ApiKey, RequestLog, TierChange
from gateway.services import apikey_assign_secret, apikeys_revoke


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "masked",
        "owner",
        "models",
        "rpm_limit",
        "tpm_limit",
        "is_staff_key",
        "expires_at",
        "status",
        "last_used_at",
    )
    list_filter = ("is_staff_key", ("revoked_at", admin.EmptyFieldListFilter), "allowed_profiles")
    search_fields = ("name", "prefix", "owner__username")
    filter_horizontal = ("allowed_profiles",)
    readonly_fields = ("masked", "status", "revoked_at", "last_used_at", "created_at")
    fields = (
        "name",
        "owner",
        "allowed_profiles",
        "rpm_limit",
        "tpm_limit",
        "is_staff_key",
        "expires_at",
        "masked",
        "status",
        "revoked_at",
        "last_used_at",
        "created_at",
    )
    actions = ["revoke"]
    list_select_related = ("owner",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return super().get_queryset(request).prefetch_related("allowed_profiles")

    @admin.display(description="key")
    def masked(self, key: ApiKey) -> str:
        return key.masked if key.prefix else "(generated when saved)"

    @admin.display(description="models")
    def models(self, key: ApiKey) -> str:
        return ", ".join(p.model_id for p in key.allowed_profiles.all()) or "all"

    @admin.display(description="status")
    def status(self, key: ApiKey) -> str:
        return key.status() if key.prefix else "-"

    def save_model(
        self, request: HttpRequest, obj: ApiKey, form: ModelForm[Any], change: bool
    ) -> None:
        secret = None if change else apikey_assign_secret(obj)
        super().save_model(request, obj, form, change)
        if secret is not None:
            # Shown once: only the hash is stored, so this message is the only copy.
            self.message_user(
                request,
                format_html(
                    "API key created. Copy it now, it will not be shown again: "
                    '<code id="new-api-key">{}</code>',
                    secret,
                ),
                messages.WARNING,
            )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = apikeys_revoke(key_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} key(s) revoked.", messages.SUCCESS)


class StatusClassFilter(admin.SimpleListFilter):
    """Fixed classes of status: listing the distinct statuses would scan the whole table."""

    title = "status"
    parameter_name = "status_class"
    CLASSES = {
        "ok": ("Success (2xx)", 200, 300),
        "client": ("Client errors (4xx, not 429/499)", 400, 500),
        "429": ("Rate limited (429)", 429, 430),
        "499": ("Client left (499)", 499, 500),
        "server": ("Server errors (5xx)", 500, 600),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _, _) in self.CLASSES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        chosen = self.CLASSES.get(self.value() or "")
        if chosen is None:
            return queryset
        _, low, high = chosen
        queryset = queryset.filter(status__gte=low, status__lt=high)
        if self.value() == "client":
            queryset = queryset.exclude(status__in=(429, 499))
        return queryset


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    """Read-only: rows are written in bulk by the Celery flush, never edited by hand."""

    list_display = (
        "created_at",
        "request_id",
        "endpoint",
        "key_prefix",
        "subject",
        "model",
        "node",
        "status",
        "stream",
        "latency_ms",
        "ttft_ms",
        "prompt_tokens",
        "completion_tokens",
        "attempts",
        "error_code",
        "prompt_truncated",
        "degraded",
    )
    # No filter that lists a column's distinct values (nor a date hierarchy): each would scan
    # the whole table, which grows by a row a request, on every page.
    list_filter = (StatusClassFilter, "stream", "prompt_truncated", "degraded")
    search_fields = ("request_id", "key_prefix", "subject", "model", "node", "error_code")
    list_per_page = 100
    # The table grows by a row a request: no COUNT(*) over it for the paginator.
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TierChange)
class TierChangeAdmin(admin.ModelAdmin):
    """Read-only: written by the gateway process that changed the tier."""

    list_display = ("at", "from_tier", "to_tier", "error_rate_percent", "requests", "failures")
    list_filter = ("to_tier",)
    list_per_page = 100

    @admin.display(description="error rate", ordering="error_rate")
    def error_rate_percent(self, change: TierChange) -> str:
        return f"{change.error_rate:.1%}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

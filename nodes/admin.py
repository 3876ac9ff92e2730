from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from nodes.choices import NodeState
from nodes.models import Deployment, ModelProfile, Node
from nodes.probe_runner import probe_and_record
from nodes.services import nodes_set_draining

STATE_COLOURS = {
    NodeState.READY: "#1a7f37",
    NodeState.DEGRADED: "#b35900",
    NodeState.DOWN: "#c62828",
    NodeState.UNKNOWN: "#666",
}


class DeploymentInline(admin.TabularInline):
    model = Deployment
    extra = 0
    fields = (
        "profile",
        "weight_override",
        "loaded",
        "loaded_at",
        "last_load_ms",
        "last_load_error",
    )
    readonly_fields = ("loaded", "loaded_at", "last_load_ms", "last_load_error")
    autocomplete_fields = ("profile",)


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "state_badge",
        "base_url",
        "api_kind",
        "gpu_type",
        "gpu_count",
        "max_concurrent",
        "queue_size",
        "enabled",
        "draining",
        "last_probe_at",
    )
    list_filter = ("state", "api_kind", "gpu_type", "enabled", "draining")
    search_fields = ("name", "base_url")
    readonly_fields = (
        "state",
        "consecutive_failures",
        "consecutive_successes",
        "last_probe_at",
        "last_probe_error",
        "state_changed_at",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "base_url", "api_kind", "enabled", "draining")}),
        ("Hardware", {"fields": ("gpu_type", "gpu_count", "vram_gb_per_gpu")}),
        ("Admission", {"fields": ("max_concurrent", "queue_size")}),
        ("Self-heal and labels", {"fields": ("restart_command", "labels")}),
        (
            "Health",
            {
                "fields": (
                    "state",
                    "consecutive_failures",
                    "consecutive_successes",
                    "last_probe_at",
                    "last_probe_error",
                    "state_changed_at",
                    "created_at",
                    "updated_at",
                )
            },
        ),
    )
    inlines = [DeploymentInline]
    actions = ["drain", "undrain", "probe_now"]

    @admin.display(description="state", ordering="state")
    def state_badge(self, node: Node) -> SafeString:
        colour = STATE_COLOURS.get(NodeState(node.state), "#666")
        return format_html('<strong style="color:{}">{}</strong>', colour, node.state)

    @admin.action(description="Drain: finish current work, take no new requests")
    def drain(self, request: HttpRequest, queryset: QuerySet[Node]) -> None:
        count = nodes_set_draining(
            node_ids=list(queryset.values_list("pk", flat=True)), draining=True
        )
        self.message_user(request, f"{count} node(s) draining.", messages.SUCCESS)

    @admin.action(description="Undrain: accept new requests again")
    def undrain(self, request: HttpRequest, queryset: QuerySet[Node]) -> None:
        count = nodes_set_draining(
            node_ids=list(queryset.values_list("pk", flat=True)), draining=False
        )
        self.message_user(request, f"{count} node(s) accepting requests.", messages.SUCCESS)

    @admin.action(description="Probe now")
    def probe_now(self, request: HttpRequest, queryset: QuerySet[Node]) -> None:
        nodes = list(queryset.prefetch_related("deployments__profile"))
        for outcome, result in probe_and_record(nodes):
            node = outcome.node
            if result.ok:
                self.message_user(
                    request,
                    f"Node {node.name}: probe OK in {result.latency_ms:.0f} ms; "
                    f"state {node.state}.",
                    messages.SUCCESS,
                )
            else:
                self.message_user(
                    request,
                    f"Node {node.name}: probe failed ({result.error}); state {node.state}.",
                    messages.ERROR,
                )


@admin.register(ModelProfile)
class ModelProfileAdmin(admin.ModelAdmin):
    list_display = (
        "model_id",
        "upstream_model",
        "context_window",
        "max_output_tokens",
        "fallback",
        "min_vram_gb",
        "prefetch",
        "keep_alive",
        "enabled",
        "node_count",
    )
    list_filter = ("prefetch", "enabled")
    search_fields = ("model_id", "upstream_model", "display_name")
    autocomplete_fields = ("fallback",)
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("model_id", "upstream_model", "display_name", "enabled")}),
        ("Limits", {"fields": ("context_window", "max_output_tokens")}),
        ("Degradation", {"fields": ("fallback",)}),
        (
            "GPU profile",
            {"fields": ("min_vram_gb", "prefetch", "warmup_prompt", "keep_alive")},
        ),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelProfile]:
        return (
            super().get_queryset(request).select_related("fallback").prefetch_related("deployments")
        )

    @admin.display(description="nodes")
    def node_count(self, profile: ModelProfile) -> int:
        return len(profile.deployments.all())


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ("profile", "node", "weight_override", "loaded", "loaded_at", "last_load_ms")
    list_filter = ("loaded", "node", "profile")
    search_fields = ("node__name", "profile__model_id")
    autocomplete_fields = ("node", "profile")
    readonly_fields = ("loaded", "loaded_at", "last_load_ms", "last_load_error", "created_at")
    list_select_related = ("node", "profile")

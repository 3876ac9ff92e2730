from __future__ import annotations

import threading
import time
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client
from nodes import conversations_learned, tasks
from nodes.choices import NodeState
from nodes.learned_speeds import learned_speeds
from nodes.live import NodeLive, live_view
from nodes.load_jobs import schedule_prefetch_warmup
from nodes.models import Deployment, GpuSample, HealEvent, ModelProfile, Node, ProbeRecord
from nodes.probe_runner import probe_and_record
from nodes.services import nodes_set_draining

# The live view of the nodes on the page being rendered (the ModelAdmin is shared by every
# request; the display methods get no request to hang it on).
_request_live = threading.local()

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


class HealEventInline(admin.TabularInline):
    model = HealEvent
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("started_at", "trigger", "action", "outcome", "detail", "finished_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[HealEvent]:
        return super().get_queryset(request).order_by("-started_at")


class WarmNewDeploymentsMixin:
    """Deployments of a prefetch profile added in the admin are loaded once saved."""

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        formset.save()
        created = [obj.pk for obj in formset.new_objects if isinstance(obj, Deployment)]
        if created:
            schedule_prefetch_warmup(created)


@admin.register(Node)
class NodeAdmin(WarmNewDeploymentsMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "state_badge",
        "weight",
        "gpu_now",
        "base_url",
        "api_kind",
        "server_kind",
        "server_load",
        "gpu_type",
        "gpu_count",
        "max_concurrent",
        "queue_size",
        "enabled",
        "draining",
        "last_probe_at",
    )
    list_filter = ("state", "server_kind", "api_kind", "gpu_type", "enabled", "draining")
    search_fields = ("name", "base_url")
    readonly_fields = (
        "weight",
        "gpu_now",
        "learned_speed",
        "prefix_cache",
        "state",
        "consecutive_failures",
        "consecutive_successes",
        "last_probe_at",
        "last_probe_error",
        "state_changed_at",
        "created_at",
        "updated_at",
        "server_load",
    )
    fieldsets = (
        (
            None,
            {"fields": ("name", "base_url", "server_kind", "api_kind", "enabled", "draining")},
        ),
        (
            "Hardware",
            {
                "fields": (
                    "gpu_type",
                    "gpu_count",
                    "vram_gb_per_gpu",
                    "gpu_now",
                    "weight",
                    "learned_speed",
                    "prefix_cache",
                )
            },
        ),
        ("Admission", {"fields": ("max_concurrent", "queue_size", "server_load")}),
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
    inlines = [DeploymentInline, HealEventInline]
    actions = ["drain", "undrain", "probe_now"]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        # Telemetry for every listed node in one Redis round trip, not one per row.
        _request_live.nodes = live_view(list(Node.objects.values_list("name", flat=True)))
        return super().changelist_view(request, extra_context)

    def change_view(self, request: HttpRequest, object_id: str, *args: Any, **kwargs: Any) -> Any:
        node = Node.objects.filter(pk=object_id).first()
        _request_live.nodes = live_view([node.name] if node else [])
        return super().change_view(request, object_id, *args, **kwargs)

    def _node_live(self, node: Node) -> NodeLive | None:
        nodes: dict[str, NodeLive] = getattr(_request_live, "nodes", {})
        return nodes.get(node.name)

    @admin.display(description="weight")
    def weight(self, node: Node) -> str:
        live = self._node_live(node)
        return f"{live.weight:g}" if live else "-"

    @admin.display(description="learned speed")
    def learned_speed(self, node: Node) -> str:
        """What routing learned from the node's answers (README, "How requests are routed")."""
        speeds = learned_speeds(node.name)
        if not speeds:
            return "nothing yet: learned from the answers it gives"
        return "; ".join(speed.describe() for speed in speeds)

    @admin.display(description="prefix cache")
    def prefix_cache(self, node: Node) -> str:
        """What routing learned of the node's prefix cache from its answers (README,
        "Conversation affinity")."""
        fields = sync_client().hgetall(redis_keys.prefix_cache(node.name))
        cache = conversations_learned.prefix_cache(fields, time.time() * 1000)
        if cache is None:
            return "nothing yet: learned from the conversations it serves"
        return cache.describe()

    @admin.display(description="server load")
    def server_load(self, node: Node) -> str:
        """Requests running and waiting, and KV-cache usage, as the node's server reports them
        on /metrics (vLLM, SGLang, llama.cpp, TGI), scraped every few seconds."""
        live = self._node_live(node)
        return live.server_load if live else "-"

    @admin.display(description="GPUs now")
    def gpu_now(self, node: Node) -> str:
        live = self._node_live(node)
        return live.describe if live else "-"

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
        for outcome, result in probe_and_record(nodes, then=tasks.follow_up):
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


class ProfileDeploymentInline(admin.TabularInline):
    model = Deployment
    extra = 0
    fields = ("node", "weight_override", "loaded", "loaded_at", "last_load_ms", "last_load_error")
    readonly_fields = ("loaded", "loaded_at", "last_load_ms", "last_load_error")
    autocomplete_fields = ("node",)


@admin.register(ModelProfile)
class ModelProfileAdmin(WarmNewDeploymentsMixin, admin.ModelAdmin):
    list_display = (
        "model_id",
        "upstream_model",
        "context_window",
        "max_output_tokens",
        "fallback",
        "degraded_mode",
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
        (
            'Degradation (README, "When things go wrong")',
            {"fields": ("fallback", "degraded_mode", "degraded_answer")},
        ),
        (
            "GPU profile",
            {"fields": ("min_vram_gb", "prefetch", "warmup_prompt", "keep_alive")},
        ),
        ("History", {"fields": ("created_at", "updated_at")}),
    )
    inlines = [ProfileDeploymentInline]

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

    def save_model(self, request: HttpRequest, obj: Deployment, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            schedule_prefetch_warmup([obj.pk])


@admin.register(ProbeRecord)
class ProbeRecordAdmin(admin.ModelAdmin):
    list_display = ("at", "node", "ok", "latency_ms", "state_after", "error")
    list_filter = ("ok", "state_after", "node")
    search_fields = ("node__name", "error")
    list_select_related = ("node",)
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(HealEvent)
class HealEventAdmin(admin.ModelAdmin):
    list_display = ("started_at", "node", "trigger", "action", "outcome", "finished_at")
    list_filter = ("outcome", "node")
    search_fields = ("node__name", "detail")
    list_select_related = ("node",)
    readonly_fields = (
        "node",
        "started_at",
        "finished_at",
        "trigger",
        "action",
        "outcome",
        "detail",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(GpuSample)
class GpuSampleAdmin(admin.ModelAdmin):
    list_display = (
        "at",
        "node",
        "gpu_index",
        "name",
        "utilisation_pct",
        "memory_used_mib",
        "memory_total_mib",
        "temperature_c",
        "power_w",
    )
    list_filter = ("node",)
    list_select_related = ("node",)
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

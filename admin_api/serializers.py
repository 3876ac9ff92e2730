"""What the /api resources look like on the wire, and the checks on what is written.

Each write runs the model's own field validators and `clean()` (the admin's and
`clawdbot config apply`'s rules), so the API accepts exactly what the admin accepts."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from alerts.models import AlertChannel
from gateway.models import ApiKey, RequestLog
from nodes import server_kinds, server_load_store
from nodes.models import Deployment, HealEvent, ModelProfile, Node, ProbeRecord
from readiness.models import ReadinessCheck, ReadinessResult, ReadinessRun


def run_model_clean(model: type[Model], instance: Model | None, attrs: dict[str, Any]) -> None:
    """The model's `clean()` on the instance as it would be saved, its errors as DRF's."""
    candidate = (
        model(**{f.name: getattr(instance, f.name) for f in model._meta.concrete_fields})
        if instance is not None
        else model()
    )
    if instance is not None:
        candidate.pk = instance.pk
    for name, value in attrs.items():
        setattr(candidate, name, value)
    try:
        candidate.clean()
    except DjangoValidationError as exc:
        raise serializers.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        ) from None


class StrictFields:
    """Refuses fields the resource does not have, so a typo (`gpu_typ`) is an error rather
    than a silently ignored value. Read-only fields are accepted and ignored, so what a GET
    returned can be sent back whole."""

    fields: Any

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                writable = ", ".join(n for n, f in self.fields.items() if not f.read_only)
                raise serializers.ValidationError(
                    {name: [f"Unknown field. Writable fields: {writable}."] for name in unknown}
                )
        return super().to_internal_value(data)  # type: ignore[misc]


class NodeSerializer(StrictFields, serializers.ModelSerializer[Node]):
    models = serializers.SerializerMethodField(help_text="Model ids deployed on the node.")

    class Meta:
        model = Node
        fields: tuple[str, ...] = (
            "name",
            "base_url",
            "api_kind",
            "server_kind",
            "gpu_type",
            "gpu_count",
            "vram_gb_per_gpu",
            "max_concurrent",
            "queue_size",
            "enabled",
            "draining",
            "restart_command",
            "labels",
            "state",
            "consecutive_failures",
            "last_probe_at",
            "last_probe_error",
            "state_changed_at",
            "models",
            "created_at",
            "updated_at",
        )
        read_only_fields = (
            "state",
            "consecutive_failures",
            "last_probe_at",
            "last_probe_error",
            "state_changed_at",
            "created_at",
            "updated_at",
        )

        extra_kwargs = {
            "api_kind": {
                "required": False,
                "help_text": "The wire protocol; may be left out when server_kind is given.",
            },
            "server_kind": {
                "help_text": "The inference server: ollama, vllm, sglang, llamacpp, tgi, or "
                "openai (any other OpenAI-compatible server). Left out: the plain server of "
                "api_kind. Decides the health route probed and the load gauges scraped."
            },
        }

    def get_models(self, node: Node) -> list[str]:
        return sorted(d.profile.model_id for d in node.deployments.all())

    def to_representation(self, instance: Node) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        data["server_kind"] = instance.kind  # a node stored without one is its API's plain one
        return data

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        api_kind = attrs.get("api_kind", getattr(self.instance, "api_kind", None))
        server_kind = attrs.get("server_kind", getattr(self.instance, "server_kind", None))
        if "server_kind" in attrs and "api_kind" not in attrs:
            api_kind = None  # a new server kind brings its own API
        try:
            attrs["api_kind"], attrs["server_kind"] = server_kinds.resolve(api_kind, server_kind)
        except ValueError as exc:
            field = "server_kind" if server_kind else "api_kind"
            raise serializers.ValidationError({field: [str(exc)]}) from None
        run_model_clean(Node, self.instance, attrs)
        return attrs


class ServerLoadSerializer(serializers.Serializer[dict[str, Any]]):
    running = serializers.IntegerField(help_text="Requests the server is running.")
    waiting = serializers.IntegerField(help_text="Requests queued in the server.")
    kv = serializers.FloatField(
        allow_null=True, help_text="KV-cache usage, 0 to 1; null when the server does not say."
    )
    at = serializers.IntegerField(help_text="When it was read (unix ms).")
    stale = serializers.BooleanField(help_text="The scrapes since then failed.")


class NodeDetailSerializer(NodeSerializer):
    server_load = serializers.SerializerMethodField(
        help_text="The load the node's server reports on /metrics (vLLM, SGLang, llama.cpp, "
        "TGI), scraped every few seconds; null when not reported lately."
    )

    class Meta(NodeSerializer.Meta):
        fields = (*NodeSerializer.Meta.fields, "server_load")

    @extend_schema_field(ServerLoadSerializer(allow_null=True))
    def get_server_load(self, node: Node) -> dict[str, Any] | None:
        return server_load_store.latest([node.name])[node.name]


class ProfileSerializer(StrictFields, serializers.ModelSerializer[ModelProfile]):
    fallback = serializers.SlugRelatedField(
        slug_field="model_id",
        queryset=ModelProfile.objects.all(),
        allow_null=True,
        required=False,
        help_text="The model id served instead when the cluster degrades.",
    )
    nodes = serializers.SerializerMethodField(help_text="Nodes the profile is deployed on.")

    class Meta:
        model = ModelProfile
        fields = (
            "model_id",
            "upstream_model",
            "display_name",
            "context_window",
            "max_output_tokens",
            "fallback",
            "degraded_mode",
            "degraded_answer",
            "min_vram_gb",
            "prefetch",
            "warmup_prompt",
            "keep_alive",
            "enabled",
            "nodes",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("created_at", "updated_at")

    def get_nodes(self, profile: ModelProfile) -> list[str]:
        return sorted(d.node.name for d in profile.deployments.all())

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        run_model_clean(ModelProfile, self.instance, attrs)
        return attrs


class DeploymentSerializer(StrictFields, serializers.ModelSerializer[Deployment]):
    node = serializers.SlugRelatedField(slug_field="name", queryset=Node.objects.all())
    profile = serializers.SlugRelatedField(
        slug_field="model_id", queryset=ModelProfile.objects.all(), help_text="A model id."
    )

    class Meta:
        model = Deployment
        fields = (
            "id",
            "node",
            "profile",
            "weight_override",
            "loaded",
            "loaded_at",
            "last_load_ms",
            "last_load_error",
            "created_at",
        )
        read_only_fields = (
            "loaded",
            "loaded_at",
            "last_load_ms",
            "last_load_error",
            "created_at",
        )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is not None:
            for field in ("node", "profile"):
                if field in attrs and attrs[field] != getattr(self.instance, field):
                    raise serializers.ValidationError(
                        {field: ["A deployment cannot move; delete it and create another."]}
                    )
        run_model_clean(Deployment, self.instance, attrs)
        return attrs


class KeySerializer(StrictFields, serializers.ModelSerializer[ApiKey]):
    """Key metadata: never the digest, and the secret only in the answer to its creation."""

    models = serializers.SlugRelatedField(
        source="allowed_profiles",
        slug_field="model_id",
        queryset=ModelProfile.objects.all(),
        many=True,
        required=False,
        help_text="Model ids the key may use; empty: every model.",
    )
    owner = serializers.SlugRelatedField(
        slug_field=get_user_model().USERNAME_FIELD,
        queryset=get_user_model().objects.all(),
        allow_null=True,
        required=False,
        help_text="A user name.",
    )
    staff = serializers.BooleanField(
        source="is_staff_key",
        required=False,
        help_text="A staff key may call the management API (/api).",
    )
    status = serializers.SerializerMethodField(help_text="active, revoked or expired.")

    class Meta:
        model = ApiKey
        fields: tuple[str, ...] = (
            "prefix",
            "name",
            "owner",
            "models",
            "rpm_limit",
            "tpm_limit",
            "staff",
            "expires_at",
            "status",
            "revoked_at",
            "last_used_at",
            "created_at",
        )
        read_only_fields = ("prefix", "revoked_at", "last_used_at", "created_at")

    def get_status(self, key: ApiKey) -> str:
        return key.status()

    def validate_name(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("A key needs a name.")
        return value.strip()


class CreatedKeySerializer(KeySerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The whole key, shown this once: only its HMAC is stored."
    )

    class Meta(KeySerializer.Meta):
        fields: tuple[str, ...] = (*KeySerializer.Meta.fields, "secret")


class RequestLogSerializer(serializers.ModelSerializer[RequestLog]):
    class Meta:
        model = RequestLog
        exclude = ("id",)


class ProbeSerializer(serializers.ModelSerializer[ProbeRecord]):
    class Meta:
        model = ProbeRecord
        fields = ("at", "ok", "latency_ms", "error", "state_after")


class HealEventSerializer(serializers.ModelSerializer[HealEvent]):
    class Meta:
        model = HealEvent
        fields = ("started_at", "finished_at", "trigger", "action", "outcome", "detail")


class LoadSerializer(StrictFields, serializers.Serializer[Any]):
    """Body of a hot load: which nodes (none: every enabled node that serves the model or can
    hold it)."""

    nodes = serializers.ListField(
        child=serializers.CharField(), required=False, allow_empty=False, allow_null=True
    )


class TaskSerializer(serializers.Serializer[Any]):
    task_id = serializers.CharField()
    status_url = serializers.CharField()
    model = serializers.CharField()
    nodes = serializers.ListField(child=serializers.CharField())


class AlertChannelSerializer(StrictFields, serializers.ModelSerializer[AlertChannel]):
    """A Slack or WeCom webhook URL is itself the secret that lets one post: `target` is
    written, never read back; `target_hint` says where it points."""

    target_hint = serializers.SerializerMethodField(
        help_text="The target's host (webhooks) or addresses (email)."
    )

    class Meta:
        model = AlertChannel
        fields = (
            "name",
            "kind",
            "target",
            "target_hint",
            "events",
            "min_interval_s",
            "enabled",
            "created_at",
        )
        read_only_fields = ("created_at",)
        extra_kwargs = {"target": {"write_only": True}}

    def get_target_hint(self, channel: AlertChannel) -> str:
        if channel.kind == AlertChannel.Kind.EMAIL:
            return channel.target
        parts = urlsplit(channel.target)
        return f"{parts.scheme}://{parts.hostname}/…" if parts.hostname else ""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        run_model_clean(AlertChannel, self.instance, attrs)
        return attrs


class ReadinessCheckSerializer(StrictFields, serializers.ModelSerializer[ReadinessCheck]):
    class Meta:
        model = ReadinessCheck
        fields = ("key", "title", "description", "enabled")
        read_only_fields = ("key", "title", "description")


class ReadinessResultSerializer(serializers.ModelSerializer[ReadinessResult]):
    class Meta:
        model = ReadinessResult
        fields = ("check_key", "title", "status", "reason", "details", "duration_ms")


class ReadinessRunSerializer(serializers.ModelSerializer[ReadinessRun]):
    results = ReadinessResultSerializer(many=True, read_only=True)

    class Meta:
        model = ReadinessRun
        fields = ("id", "state", "trigger", "started_at", "finished_at", "gateway_url", "results")

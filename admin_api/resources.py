"""The management REST API under /api: nodes, model profiles, deployments, API keys, the
request log, and node actions (drain, probe, warm up, hot load).

Writes go through the models' own validation and the same services the admin and the
`clawdbot` commands use, so a change made here reaches every gateway process the same way
(the routing version in Redis, within about a second)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from admin_api.auth import IsStaff, StaffApiKeyAuthentication
from admin_api.errors import load_task_or_404, openai_exception_handler
from admin_api.pagination import LimitPages, RequestLogPages
from admin_api.requestlog_query import parse_filters
from admin_api.serializers import (
    AlertChannelSerializer,
    CreatedKeySerializer,
    DeploymentSerializer,
    HealEventSerializer,
    KeySerializer,
    LoadSerializer,
    NodeDetailSerializer,
    NodeSerializer,
    ProbeSerializer,
    ProfileSerializer,
    ReadinessCheckSerializer,
    ReadinessRunSerializer,
    RequestLogSerializer,
)
from alerts.events import AlertEvent
from alerts.models import AlertChannel
from alerts.tasks import send_alert
from gateway.errors import GatewayError
from gateway.models import ApiKey, RequestLog
from gateway.services import apikey_create, apikey_revoke
from nodes import tasks as node_tasks
from nodes.load_jobs import schedule_prefetch_warmup, start_load
from nodes.models import Deployment, ModelProfile, Node
from nodes.placement import resolve_load_request
from nodes.probe_runner import probe_and_record
from nodes.services import nodes_set_draining
from readiness.models import ReadinessCheck, ReadinessRun
from readiness.runner import sync_catalog
from readiness.services import queue_run


class AnyJsonParser(JSONParser):
    """Bodies are JSON whatever their Content-Type, as on /v1, so `curl -d '{…}'` (sent as a
    form) works; a body that is not JSON is a 400 that says so."""

    media_type = "*/*"


class Management:
    """Authentication, permission, formats and errors shared by every /api view."""

    authentication_classes = [StaffApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsStaff]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]
    parser_classes = [AnyJsonParser]
    pagination_class = LimitPages

    def get_exception_handler(self) -> Any:
        return openai_exception_handler


class ConfigViewSet(
    Management,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """Create, read, update (PUT or PATCH) and delete; every write is one transaction."""

    def perform_create(self, serializer: Any) -> None:
        with transaction.atomic():
            serializer.save()

    def perform_update(self, serializer: Any) -> None:
        with transaction.atomic():
            serializer.save()


# One object by the route's lookup field, or a 404 naming what was asked for and where the
# list is. Put first in a view's bases, ahead of the DRF mixins. (A comment, not a docstring:
# the OpenAPI schema takes a view's description from the first docstring in its bases.)
class ByLookup(GenericAPIView):  # type: ignore[type-arg]
    noun: str
    listing: str

    def lookup_value(self) -> str:
        return str(self.kwargs[self.lookup_field])

    def get_object(self) -> Any:
        value = self.lookup_value()
        found = self.get_queryset().filter(**{self.lookup_field: value}).first()
        if found is None:
            raise self.missing(value)
        self.check_object_permissions(self.request, found)
        return found

    def missing(self, value: str) -> GatewayError:
        return GatewayError(
            404,
            f"There is no {self.noun} `{value}`; GET {self.listing} lists them.",
            code="not_found",
        )


class NodeViewSet(ByLookup, ConfigViewSet):
    serializer_class = NodeSerializer
    lookup_field = "name"
    noun, listing = "node", "/api/nodes"

    def get_serializer_class(self) -> type[NodeSerializer]:
        # One Redis read per node: a single node has the server's load, the list does not.
        return NodeSerializer if self.action == "list" else NodeDetailSerializer

    def get_queryset(self) -> QuerySet[Node]:
        return Node.objects.prefetch_related("deployments__profile").order_by("name")

    @extend_schema(request=None, responses=NodeSerializer, summary="Drain a node")
    def drain(self, request: Request, name: str) -> Response:
        """Finish current work, take no new requests (gateways see it within a second)."""
        return self._set_draining(True)

    @extend_schema(request=None, responses=NodeSerializer, summary="Undrain a node")
    def undrain(self, request: Request, name: str) -> Response:
        return self._set_draining(False)

    def _set_draining(self, draining: bool) -> Response:
        node = self.get_object()
        with transaction.atomic():
            nodes_set_draining(node_ids=[node.pk], draining=draining)
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        request=None,
        summary="Probe a node now",
        responses=inline_serializer(
            "ProbeResult",
            {
                "node": serializers.CharField(),
                "ok": serializers.BooleanField(),
                "latency_ms": serializers.FloatField(),
                "error": serializers.CharField(),
                "state": serializers.CharField(),
                "previous_state": serializers.CharField(),
            },
        ),
    )
    def probe(self, request: Request, name: str) -> Response:
        """Probe it as beat does (same checks, same state machine), and answer the result."""
        node = self.get_object()
        recorded = probe_and_record([node], then=node_tasks.follow_up)
        if not recorded:  # deleted meanwhile
            raise self.missing(name)
        outcome, result = recorded[0]
        return Response(
            {
                "node": node.name,
                "ok": result.ok,
                "latency_ms": round(result.latency_ms, 1),
                "error": result.error or "",
                "state": outcome.node.state,
                "previous_state": outcome.previous_state,
            }
        )

    @extend_schema(
        request=None,
        summary="Warm up every model deployed on a node",
        responses={202: inline_serializer("Tasks", {"tasks": serializers.ListField()})},
    )
    def warmup(self, request: Request, name: str) -> Response:
        """Load each deployed profile (with its context window and keep-alive) and send its
        warm-up prompt: one load task per profile, followed at GET /api/tasks/{task_id}."""
        node = self.get_object()
        profiles = [d.profile for d in node.deployments.all()]
        if not profiles:
            raise GatewayError(
                409,
                f"Node {node.name} has no deployments to warm up; deploy a model first "
                "(POST /api/deployments).",
                code="nothing_to_warm",
            )
        tasks = []
        for profile in profiles:
            profile, nodes = resolve_load_request(profile.model_id, [node.name])
            tasks.append(_task_answer(start_load(profile=profile, nodes=nodes), profile, nodes))
        return Response({"tasks": tasks}, status=202)

    @extend_schema(request=None, responses=ProbeSerializer(many=True), summary="Probe history")
    def probes(self, request: Request, name: str) -> Response:
        node = self.get_object()
        page = self.paginate_queryset(node.probes.order_by("-at"))  # type: ignore[attr-defined]
        return self.get_paginated_response(ProbeSerializer(page, many=True).data)

    @extend_schema(request=None, responses=HealEventSerializer(many=True), summary="Heal events")
    def heal_events(self, request: Request, name: str) -> Response:
        node = self.get_object()
        page = self.paginate_queryset(
            node.heal_events.order_by("-started_at")  # type: ignore[attr-defined]
        )
        return self.get_paginated_response(HealEventSerializer(page, many=True).data)


class ProfileViewSet(ByLookup, ConfigViewSet):
    serializer_class = ProfileSerializer
    lookup_field = "model_id"
    noun, listing = "model profile", "/api/profiles"

    def get_queryset(self) -> QuerySet[ModelProfile]:
        return (
            ModelProfile.objects.select_related("fallback")
            .prefetch_related("deployments__node")
            .order_by("model_id")
        )

    @extend_schema(
        request=LoadSerializer,
        responses={202: inline_serializer("LoadTask", {"task_id": serializers.CharField()})},
        summary="Hot-load a model on nodes",
    )
    def load(self, request: Request, model_id: str) -> Response:
        """Load the profile on the named nodes (or, without `nodes`, on every enabled node
        that serves it or can hold it) without a restart; follow it at the answer's
        `status_url`."""
        body = LoadSerializer(data=request.data if request.data is not None else {})
        body.is_valid(raise_exception=True)
        profile, nodes = resolve_load_request(model_id, body.validated_data.get("nodes"))
        answer = _task_answer(start_load(profile=profile, nodes=nodes), profile, nodes)
        return Response(answer, status=202, headers={"Location": answer["status_url"]})


def _task_answer(task_id: str, profile: ModelProfile, nodes: list[Node]) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "status_url": reverse("api:task", args=[task_id]),
        "model": profile.model_id,
        "nodes": [node.name for node in nodes],
    }


class DeploymentViewSet(ConfigViewSet):
    serializer_class = DeploymentSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("node", str, description="Only this node's deployments."),
            OpenApiParameter("model", str, description="Only this model id's deployments."),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Deployment]:
        queryset = Deployment.objects.select_related("node", "profile").order_by(
            "node__name", "profile__model_id"
        )
        if self.action == "list":
            params = self.request.query_params
            if params.get("node"):
                queryset = queryset.filter(node__name=params["node"])
            if params.get("model"):
                queryset = queryset.filter(profile__model_id=params["model"])
        return queryset

    def perform_create(self, serializer: Any) -> None:
        with transaction.atomic():
            deployment = serializer.save()
            schedule_prefetch_warmup([deployment.pk])


class KeyViewSet(
    ByLookup,
    Management,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """API keys. Keys are revoked, never deleted: the request log keeps naming them."""

    serializer_class = KeySerializer
    lookup_field = "prefix"
    noun, listing = "API key with prefix", "/api/keys"

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=["active", "revoked", "expired"]),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[ApiKey]:
        queryset = ApiKey.objects.select_related("owner").prefetch_related("allowed_profiles")
        if self.action == "list" and "status" in self.request.query_params:
            now = timezone.now()
            status = self.request.query_params["status"]
            if status == "active":
                queryset = queryset.filter(revoked_at__isnull=True).exclude(expires_at__lte=now)
            elif status == "revoked":
                queryset = queryset.filter(revoked_at__isnull=False)
            elif status == "expired":
                queryset = queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
            else:
                raise GatewayError(
                    400,
                    f"Invalid value for 'status': {status!r}; use active, revoked or expired.",
                    param="status",
                    code="invalid_value",
                )
        return queryset.order_by("name", "prefix")

    def lookup_value(self) -> str:
        return str(self.kwargs["prefix"]).removeprefix("ck-").split("-", 1)[0]  # or a whole key

    @extend_schema(request=KeySerializer, responses={201: CreatedKeySerializer})
    def create(self, request: Request) -> Response:
        """Issue a key. The answer's `secret` is the only copy: only an HMAC is stored."""
        body = KeySerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        data = body.validated_data
        owner = data.get("owner")
        if owner is None and "owner" not in data and request.user.is_authenticated:
            owner = request.user  # a staff session issues keys in its own name
        created = apikey_create(
            name=data["name"],
            owner=owner,
            models=[p.model_id for p in data.get("allowed_profiles", [])],
            rpm_limit=data.get("rpm_limit"),
            tpm_limit=data.get("tpm_limit"),
            expires_at=data.get("expires_at"),
            staff=data.get("is_staff_key", False),
        )
        answer = CreatedKeySerializer(created.key).data
        answer["secret"] = created.secret
        response = Response(answer, status=201)
        response["Cache-Control"] = "no-store"  # the secret must not sit in any cache
        return response

    def perform_update(self, serializer: Any) -> None:
        if serializer.instance.is_revoked:
            raise GatewayError(
                409,
                f"The key {serializer.instance.masked} is revoked and cannot be changed; "
                "issue a new one.",
                code="key_revoked",
            )
        with transaction.atomic():
            serializer.save()

    @extend_schema(request=None, responses=KeySerializer, summary="Revoke a key")
    def revoke(self, request: Request, prefix: str) -> Response:
        """Gateways refuse the key within a second. Revoking a revoked key changes nothing."""
        key = self.get_object()
        apikey_revoke(key=key)
        return Response(self.get_serializer(self.get_object()).data)


class RequestLogViewSet(
    Management,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """The request log, newest first. Filters combine with AND; `status` takes codes and
    classes (`429`, `500,502`, `5xx`); `since`/`until` take ISO 8601 or an age (`15m`)."""

    serializer_class = RequestLogSerializer
    pagination_class = RequestLogPages
    lookup_field = "request_id"

    @extend_schema(
        parameters=[
            OpenApiParameter("request_id", str),
            OpenApiParameter("model", str, description="The model the client asked for."),
            OpenApiParameter("served_model", str, description="The profile that answered."),
            OpenApiParameter("node", str),
            OpenApiParameter("key", str, description="A key prefix (or ck-PREFIX)."),
            OpenApiParameter("endpoint", str, description="e.g. chat.completions"),
            OpenApiParameter("error_code", str),
            OpenApiParameter("status", str, description="429, 500,502 or 5xx"),
            OpenApiParameter("stream", bool),
            OpenApiParameter("truncated", bool, description="The node cut the prompt."),
            OpenApiParameter("since", str, description="ISO 8601 time or an age: 15m, 2h, 7d"),
            OpenApiParameter("until", str, description="ISO 8601 time or an age"),
            OpenApiParameter("min_latency_ms", float),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[RequestLog]:
        queryset = RequestLog.objects.all()
        if self.action == "list":
            queryset = queryset.filter(parse_filters(self.request.query_params, timezone.now()))
        return queryset

    def get_object(self) -> RequestLog:
        request_id = self.kwargs["request_id"]
        row = RequestLog.objects.filter(request_id=request_id).first()
        if row is None:
            raise GatewayError(
                404,
                f"There is no logged request `{request_id}` (requests reach the log within "
                "seconds of their end, and are pruned after the retention period).",
                code="not_found",
            )
        return row


class AlertChannelViewSet(ByLookup, ConfigViewSet):
    """Where alerts go: JSON webhook, Slack, WeCom robot or email."""

    serializer_class = AlertChannelSerializer
    lookup_field = "name"
    noun, listing = "alert channel", "/api/alert-channels"

    def get_queryset(self) -> QuerySet[AlertChannel]:
        return AlertChannel.objects.order_by("name")

    @extend_schema(
        request=None,
        responses={202: inline_serializer("Queued", {"queued": serializers.BooleanField()})},
        summary="Send a test alert",
    )
    def test(self, request: Request, name: str) -> Response:
        """Queue a test alert to this channel only, past its rate limit; the worker sends it
        (and retries it) as it would a real one."""
        channel = self.get_object()
        if not channel.enabled:
            raise GatewayError(
                409, f"The channel {channel.name} is disabled; enable it first.", code="disabled"
            )
        event = AlertEvent(
            kind="test",
            subject="test",
            severity="info",
            title="Test alert from Clawdbot",
            text=f"Sent through the management API to check channel {channel.name}.",
        )
        send_alert.delay(channel.pk, event.to_dict(), 0)  # an unreachable queue is a 503
        return Response({"queued": True}, status=202)


class ReadinessRunViewSet(
    ByLookup,
    Management,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """Readiness checklist runs, newest first, each with its checks' results and reasons."""

    serializer_class = ReadinessRunSerializer
    noun, listing = "readiness run", "/api/readiness/runs"

    def get_queryset(self) -> QuerySet[ReadinessRun]:
        return ReadinessRun.objects.prefetch_related("results").order_by("-started_at")

    @extend_schema(request=None, responses={202: ReadinessRunSerializer}, summary="Run now")
    def create(self, request: Request) -> Response:
        """Start a run on a worker; poll the answer's `url` until `state` is not running."""
        who = request.user.get_username() if request.user.is_authenticated else "staff key"
        run = queue_run(f"api ({who})"[:40])
        url = reverse("api:readiness-run", args=[run.pk])
        return Response(
            {**ReadinessRunSerializer(run).data, "url": url}, status=202, headers={"Location": url}
        )


class ReadinessCheckViewSet(
    ByLookup,
    Management,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """The checks; only `enabled` can change (a disabled check is skipped)."""

    serializer_class = ReadinessCheckSerializer
    lookup_field = "key"
    noun, listing = "readiness check", "/api/readiness/checks"

    def get_queryset(self) -> QuerySet[ReadinessCheck]:
        sync_catalog()
        return ReadinessCheck.objects.order_by("position")


class TaskViewSet(Management, viewsets.ViewSet):
    @extend_schema(
        responses=inline_serializer("LoadStatus", {"state": serializers.CharField()}),
        summary="A load task's progress",
    )
    def retrieve(self, request: Request, task_id: str) -> Response:
        return Response(load_task_or_404(task_id))

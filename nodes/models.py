"""Configuration of the GPU cluster: nodes, the model profiles clients ask for, and which
node serves which profile. Writes go through `nodes.services`; these models only validate."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from nodes import server_kinds
from nodes.choices import ApiKind, GpuType, NodeState, ServerKind
from nodes.keepalive import parse_keep_alive

NODE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,127}$")


def validate_node_name(value: str) -> None:
    # The name becomes a Celery queue (`node.<name>`) and a metrics label.
    if not NODE_NAME_RE.match(value):
        raise ValidationError(
            "Use 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit."
        )


HOST_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")


def validate_base_url(value: str) -> None:
    # Django's URLValidator wants a dotted domain; GPU hosts are often bare names ("gpu1").
    message = "Enter an http:// or https:// URL, e.g. http://gpu1:11434."
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValidationError(message) from None
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in value:
        raise ValidationError(message)
    host = parts.netloc.rsplit("@", 1)[-1]
    host = host.rsplit(":", 1)[0] if port is not None or host.endswith(":") else host
    if not HOST_RE.match(host):
        raise ValidationError(message)
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValidationError("The base URL must not contain a query string or fragment.")


def validate_model_id(value: str) -> None:
    if not MODEL_ID_RE.match(value):
        raise ValidationError(
            "Use up to 128 letters, digits and '_ . : / @ + -', starting with a letter or digit."
        )


def validate_keep_alive(value: str) -> None:
    try:
        parse_keep_alive(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def validate_labels(value: Any) -> None:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float | bool) for k, v in value.items()
    ):
        raise ValidationError('Labels must be a JSON object of simple values, e.g. {"rack": "b2"}.')


class Node(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[validate_node_name])
    base_url = models.CharField(
        "base URL",
        max_length=500,
        validators=[validate_base_url],
        help_text="Root URL of the inference server, e.g. http://gpu1:11434 for Ollama "
        "or http://gpu2:8000 for vLLM (without /v1).",
    )
    api_kind = models.CharField("API", max_length=10, choices=ApiKind.choices)
    server_kind = models.CharField(
        "server",
        max_length=10,
        choices=ServerKind.choices,
        blank=True,
        help_text="What answers at the URL: decides the health route probed, where the context "
        "window is read and which load gauges are scraped. Empty: the plain server of its API.",
    )
    gpu_type = models.CharField("GPU type", max_length=10, choices=GpuType.choices)
    gpu_count = models.PositiveSmallIntegerField(
        "GPUs", default=1, validators=[MinValueValidator(1)]
    )
    vram_gb_per_gpu = models.FloatField(
        "VRAM per GPU (GB)",
        default=0,
        validators=[MinValueValidator(0)],
        help_text="0 = unknown; telemetry fills in the real figure when an agent runs.",
    )
    max_concurrent = models.PositiveIntegerField(
        "max concurrent requests",
        default=4,
        validators=[MinValueValidator(1)],
        help_text="Requests sent to this node at once; keep it at or under OLLAMA_NUM_PARALLEL "
        "(Ollama) or max_num_seqs (vLLM).",
    )
    queue_size = models.PositiveIntegerField(
        default=16, help_text="Requests allowed to wait for a slot before the gateway answers 503."
    )
    enabled = models.BooleanField(default=True)
    draining = models.BooleanField(
        default=False, help_text="A draining node finishes its work but receives no new requests."
    )
    state = models.CharField(max_length=10, choices=NodeState.choices, default=NodeState.UNKNOWN)
    consecutive_failures = models.PositiveIntegerField(default=0)
    consecutive_successes = models.PositiveIntegerField(default=0)
    last_probe_at = models.DateTimeField(null=True, blank=True)
    last_probe_error = models.TextField(blank=True)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    restart_command = models.CharField(
        max_length=500,
        blank=True,
        help_text="Run by the node agent to restart the backend when the node turns DEGRADED, "
        "e.g. 'systemctl restart ollama'. Empty = no self-heal.",
    )
    labels = models.JSONField(default=dict, blank=True, validators=[validate_labels])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.server_kind and self.api_kind:
            try:
                server_kinds.resolve(self.api_kind, self.server_kind)
            except ValueError as exc:
                raise ValidationError({"server_kind": str(exc)}) from None

    @property
    def kind(self) -> str:
        """The server kind, resolved: a node stored without one is the plain server of its API."""
        return server_kinds.kind_of(self.api_kind, self.server_kind)

    @property
    def total_vram_gb(self) -> float:
        return self.vram_gb_per_gpu * self.gpu_count

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base_url": self.base_url,
            "api_kind": self.api_kind,
            "server_kind": self.kind,
            "gpu_type": self.gpu_type,
            "gpu_count": self.gpu_count,
            "vram_gb_per_gpu": self.vram_gb_per_gpu,
            "max_concurrent": self.max_concurrent,
            "queue_size": self.queue_size,
            "enabled": self.enabled,
            "draining": self.draining,
            "state": self.state,
            "restart_command": self.restart_command,
            "labels": self.labels,
        }


class ModelProfile(models.Model):
    class DegradedMode(models.TextChoices):
        STATIC = "static", "static answer"
        UNAVAILABLE = "unavailable", "503 unavailable"

    model_id = models.CharField(
        "model id",
        max_length=128,
        unique=True,
        validators=[validate_model_id],
        help_text="The name clients send as `model`, e.g. qwen3-32b.",
    )
    upstream_model = models.CharField(
        max_length=200, help_text="The model name on the node, e.g. qwen3:32b."
    )
    display_name = models.CharField(max_length=200, blank=True)
    context_window = models.PositiveIntegerField(
        help_text="Tokens of prompt + output; sent to Ollama as options.num_ctx on every request."
    )
    max_output_tokens = models.PositiveIntegerField(
        help_text="Upper bound for max_tokens; larger requests are clamped to it."
    )
    fallback = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="downgrades_from",
        help_text="Profile served instead when the cluster degrades (X-Model-Downgraded).",
    )
    degraded_mode = models.CharField(
        "degraded answer mode",
        max_length=12,
        choices=DegradedMode.choices,
        default=DegradedMode.STATIC,
        help_text="At degradation tier 3, what a request the cluster fails is answered with: "
        "the degraded answer below (or 503 while it is empty), or always 503 with Retry-After.",
    )
    degraded_answer = models.TextField(
        blank=True,
        help_text="At tier 3, the answer (X-Clawdbot-Degraded: static) to a request the cluster "
        "fails; empty = 503 with Retry-After.",
    )
    min_vram_gb = models.FloatField(
        "min VRAM (GB)",
        default=0,
        validators=[MinValueValidator(0)],
        help_text="Never deployed or routed to a node with less GPU memory than this.",
    )
    prefetch = models.BooleanField(
        default=False, help_text="Load on a node when it turns READY or is deployed."
    )
    warmup_prompt = models.TextField(
        blank=True, help_text="Sent once after loading so the first real request is fast."
    )
    keep_alive = models.CharField(
        max_length=20,
        default="5m",
        validators=[validate_keep_alive],
        help_text="Ollama keep_alive: 300, 5m, 1h; -1 keeps the model loaded; 0 unloads.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_id"]

    def __str__(self) -> str:
        return self.model_id

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.context_window is not None and self.context_window <= 0:
            errors["context_window"] = "The context window must be at least 1 token."
        if self.max_output_tokens is not None and self.max_output_tokens <= 0:
            errors["max_output_tokens"] = "Max output tokens must be at least 1."
        elif (
            self.context_window
            and self.max_output_tokens
            and self.max_output_tokens > self.context_window
        ):
            errors["max_output_tokens"] = (
                f"Max output tokens ({self.max_output_tokens}) cannot exceed the context "
                f"window ({self.context_window})."
            )
        loop = self.fallback_loop()
        if loop:
            errors["fallback"] = "This fallback makes a loop: " + " → ".join(loop) + "."
        if errors:
            raise ValidationError(errors)

    def fallback_loop(self) -> list[str]:
        """The chain of model ids that leads back to this profile, or [] when there is none."""
        chain = [self.model_id]
        seen = {self.pk} if self.pk else set()
        current = self.fallback
        while current is not None:
            chain.append(current.model_id)
            if current.pk in seen or current.pk == self.pk:
                return chain
            seen.add(current.pk)
            current = current.fallback
        return []

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "upstream_model": self.upstream_model,
            "display_name": self.display_name,
            "context_window": self.context_window,
            "max_output_tokens": self.max_output_tokens,
            "fallback": self.fallback.model_id if self.fallback else None,
            "degraded_mode": self.degraded_mode,
            "degraded_answer": self.degraded_answer,
            "min_vram_gb": self.min_vram_gb,
            "prefetch": self.prefetch,
            "warmup_prompt": self.warmup_prompt,
            "keep_alive": self.keep_alive,
            "enabled": self.enabled,
        }


class Deployment(models.Model):
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="deployments")
    profile = models.ForeignKey(ModelProfile, on_delete=models.CASCADE, related_name="deployments")
    weight_override = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.01)],
        help_text="Replaces the computed GPU weight for this deployment; empty = computed.",
    )
    loaded = models.BooleanField(default=False)
    loaded_at = models.DateTimeField(null=True, blank=True)
    last_load_ms = models.PositiveIntegerField(null=True, blank=True)
    last_load_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["node__name", "profile__model_id"]
        constraints = [
            models.UniqueConstraint(fields=["node", "profile"], name="one_deployment_per_node")
        ]

    def __str__(self) -> str:
        return f"{self.profile_id and self.profile.model_id} on {self.node_id and self.node.name}"

    def clean(self) -> None:
        if self.node_id and self.profile_id:
            node, profile = self.node, self.profile
            if (
                profile.min_vram_gb
                and node.total_vram_gb
                and node.total_vram_gb < profile.min_vram_gb
            ):
                raise ValidationError(
                    f"{profile.model_id} needs {profile.min_vram_gb:g} GB of GPU memory; "
                    f"{node.name} has {node.total_vram_gb:g} GB "
                    f"({node.gpu_count} × {node.vram_gb_per_gpu:g} GB)."
                )


class ProbeRecord(models.Model):
    """One health probe of a node; a bounded history (pruned by a periodic task)."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="probes")
    at = models.DateTimeField(db_index=True)
    ok = models.BooleanField()
    latency_ms = models.FloatField()
    error = models.CharField(max_length=500, blank=True)
    state_after = models.CharField(max_length=10, choices=NodeState.choices)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["node", "-at"])]

    def __str__(self) -> str:
        return f"{self.node_id} {self.at:%H:%M:%S} {'ok' if self.ok else 'failed'}"


class HealEvent(models.Model):
    """One self-heal attempt (or the reason none was made) and its outcome."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        RECOVERED = "recovered", "Recovered"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="heal_events")
    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    trigger = models.CharField(max_length=200)
    action = models.CharField(max_length=500, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.PENDING)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.node_id} {self.started_at:%Y-%m-%d %H:%M} {self.outcome}"


class GpuSample(models.Model):
    """Downsampled GPU telemetry (one row per GPU per node per minute)."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpu_samples")
    at = models.DateTimeField(db_index=True)
    gpu_index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100, blank=True)
    utilisation_pct = models.FloatField(null=True)
    memory_used_mib = models.FloatField(null=True)
    memory_total_mib = models.FloatField(null=True)
    temperature_c = models.FloatField(null=True)
    power_w = models.FloatField(null=True)

    class Meta:
        ordering = ["-at", "gpu_index"]
        indexes = [models.Index(fields=["node", "-at"])]

    def __str__(self) -> str:
        return f"{self.node_id} GPU{self.gpu_index} {self.at:%H:%M}"

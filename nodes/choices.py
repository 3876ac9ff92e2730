"""Choice classes shared by the node models, the commands and the pure logic."""

from __future__ import annotations

from django.db import models


class ApiKind(models.TextChoices):
    OLLAMA = "ollama", "Ollama (native /api)"
    OPENAI = "openai", "OpenAI-compatible (vLLM, Ollama /v1)"


class GpuType(models.TextChoices):
    A10 = "A10", "NVIDIA A10"
    A100 = "A100", "NVIDIA A100"
    H100 = "H100", "NVIDIA H100"
    H200 = "H200", "NVIDIA H200"
    L40S = "L40S", "NVIDIA L40S"
    RTX4090 = "RTX4090", "NVIDIA RTX 4090"
    OTHER = "other", "Other"


class NodeState(models.TextChoices):
    UNKNOWN = "UNKNOWN", "Unknown"
    READY = "READY", "Ready"
    DEGRADED = "DEGRADED", "Degraded"
    DOWN = "DOWN", "Down"

"""Choice classes shared by the node models, the commands and the pure logic."""

from __future__ import annotations

from django.db import models


class ApiKind(models.TextChoices):
    OLLAMA = "ollama", "Ollama (native /api)"
    OPENAI = "openai", "OpenAI-compatible (vLLM, Ollama /v1)"


class ServerKind(models.TextChoices):
    """The inference server behind a node: what it serves besides its API (health route, where
    it says its context window, load gauges). `ApiKind` is the wire protocol spoken to it."""

    OLLAMA = "ollama", "Ollama"
    VLLM = "vllm", "vLLM"
    SGLANG = "sglang", "SGLang"
    LLAMACPP = "llamacpp", "llama.cpp"
    TGI = "tgi", "Text Generation Inference"
    OPENAI = "openai", "Other OpenAI-compatible server"


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

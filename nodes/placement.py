"""Where a model profile may go: a node's GPU memory against the profile's needs (configured
memory first, else what telemetry measured), and the nodes a load request names or implies.
Reads the database; decides nothing about warming (that is `nodes.model_loads`)."""

from __future__ import annotations

from collections.abc import Iterable

from nodes import telemetry_store
from nodes.choices import ApiKind
from nodes.models import Deployment, ModelProfile, Node


class LoadRequestError(Exception):
    """A load request the control plane refuses: `status` (an HTTP status), `code` and
    `param` say how, for the management API's answer."""

    def __init__(self, status: int, message: str, *, code: str, param: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def vram_shortfall(
    profile: ModelProfile, node: Node, telemetry_gb: float | None = None
) -> str | None:
    """Why `node` cannot hold `profile`, or None when it can (or nobody knows its memory).

    The configured VRAM (per GPU × GPUs) wins; the agent's NVML reading stands in only when
    the node's VRAM was left at 0 ("unknown")."""
    need = profile.min_vram_gb
    if not need:
        return None
    if node.vram_gb_per_gpu > 0:
        have = node.total_vram_gb
        source = f"{node.gpu_count} × {node.vram_gb_per_gpu:g} GB configured"
    elif telemetry_gb is not None:
        have = telemetry_gb
        source = "reported by its GPUs"
    else:
        return None
    if have >= need:
        return None
    return (
        f"{profile.model_id} needs {need:g} GB of GPU memory; "
        f"{node.name} has {have:g} GB ({source})."
    )


def telemetry_memory(nodes: Iterable[Node]) -> dict[str, float | None]:
    """GPU memory from the agents' readings, for the nodes whose VRAM is not configured."""
    unknown = [node.name for node in nodes if node.vram_gb_per_gpu <= 0]
    readings = telemetry_store.latest(unknown)
    return {name: telemetry_store.total_memory_gb(reading) for name, reading in readings.items()}


def resolve_load_request(
    model: str, node_names: list[str] | None
) -> tuple[ModelProfile, list[Node]]:
    """The profile and nodes a load request names, or LoadRequestError saying what is wrong.

    Without `node_names`: every enabled node that already serves the profile or has room
    for it. Named nodes are taken as asked, disabled ones too (an operator may warm a node
    before enabling it), but all of them must exist and have enough GPU memory."""
    profile = ModelProfile.objects.filter(model_id=model).first()
    if profile is None:
        known = ", ".join(ModelProfile.objects.values_list("model_id", flat=True)) or "none yet"
        raise LoadRequestError(
            404,
            f"The model `{model}` does not exist. Known models: {known}.",
            code="model_not_found",
            param="model",
        )
    if not profile.enabled:
        raise LoadRequestError(
            409,
            f"The model `{model}` is disabled; enable its profile before loading it.",
            code="model_disabled",
            param="model",
        )
    if node_names is None:
        return profile, default_nodes(profile)

    wanted = list(dict.fromkeys(node_names))  # de-duplicated, in the order given
    found = {node.name: node for node in Node.objects.filter(name__in=wanted)}
    missing = [name for name in wanted if name not in found]
    if missing:
        known = ", ".join(Node.objects.values_list("name", flat=True)) or "none yet"
        raise LoadRequestError(
            404,
            f"Unknown node{'s' if len(missing) > 1 else ''}: {', '.join(missing)}. "
            f"Known nodes: {known}.",
            code="node_not_found",
            param="nodes",
        )
    nodes = [found[name] for name in wanted]
    serving = set(Deployment.objects.filter(profile=profile).values_list("node_id", flat=True))
    fixed = [n.name for n in nodes if not loads_on_demand(n) and n.pk not in serving]
    if fixed:
        raise LoadRequestError(
            409,
            f"{', '.join(fixed)} {'is an' if len(fixed) == 1 else 'are'} OpenAI-compatible "
            f"server{'' if len(fixed) == 1 else 's'} (vLLM, SGLang, llama.cpp…), which serve only "
            f"the models they were started with, and {profile.model_id} is not deployed there. "
            "Start the server with the model, then `clawdbot onboard` the node again.",
            code="cannot_load_here",
            param="nodes",
        )
    memory = telemetry_memory(nodes)
    problems = [
        problem
        for node in nodes
        if (problem := vram_shortfall(profile, node, memory.get(node.name))) is not None
    ]
    if problems:
        raise LoadRequestError(409, " ".join(problems), code="insufficient_vram", param="nodes")
    return profile, nodes


def loads_on_demand(node: Node) -> bool:
    """Ollama loads any model it has pulled when asked; an OpenAI-compatible server (vLLM,
    SGLang, llama.cpp) serves the models it was started with and nothing else."""
    return node.api_kind == ApiKind.OLLAMA


def default_nodes(profile: ModelProfile) -> list[Node]:
    nodes = list(Node.objects.filter(enabled=True))
    serving = set(
        Deployment.objects.filter(profile=profile, node__enabled=True).values_list(
            "node_id", flat=True
        )
    )
    memory = telemetry_memory(nodes)
    chosen = [
        node
        for node in nodes
        if node.pk in serving
        or (loads_on_demand(node) and vram_shortfall(profile, node, memory.get(node.name)) is None)
    ]
    if not chosen:
        need = f" (it needs {profile.min_vram_gb:g} GB)" if profile.min_vram_gb else ""
        raise LoadRequestError(
            409,
            f"No enabled node serves {profile.model_id} or has the GPU memory for it{need}.",
            code="no_eligible_nodes",
            param="nodes",
        )
    return chosen

"""The console's pages. Thin views: reads come from dashboard.selectors, writes go through
the control plane's services (the same ones the management API's node actions use)."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from kombu.exceptions import OperationalError

from dashboard import selectors
from dashboard.access import staff_page
from dashboard.request_stats import recent_requests
from nodes import tasks as node_tasks
from nodes.choices import NodeState
from nodes.load_jobs import start_load
from nodes.models import Node
from nodes.probe_runner import probe_and_record
from nodes.services import nodes_set_draining
from readiness.services import queue_run


def _live_figures(cards: list[selectors.NodeCard]) -> dict[str, object]:
    return {card.node.name: card.gpus for card in cards}


@staff_page
def overview(request: HttpRequest) -> HttpResponse:
    cluster = selectors.cluster(timezone.now())
    return render(
        request,
        "dashboard/overview.html",
        {
            "cluster": cluster,
            "gpus": _live_figures(cluster.cards),
            "ready": sum(card.node.state == NodeState.READY for card in cluster.cards),
        },
    )


@staff_page
def overview_stats(request: HttpRequest) -> JsonResponse:
    """The overview's request figures, which the page fetches again every 10 s (they come
    from the request log, not from the live feed's events)."""
    stats = recent_requests(timezone.now())
    return JsonResponse(
        {
            "requests": stats.requests,
            "per_second": round(stats.per_second, 2),
            "error_pct": round(stats.error_pct, 1),
            **{name: round(ms) for name, ms in stats.latency_ms.items()},
        }
    )


@staff_page
def nodes(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/nodes.html", {"cards": selectors.node_cards()})


@staff_page
def node_detail(request: HttpRequest, name: str) -> HttpResponse:
    detail = selectors.node_detail(name, timezone.now())
    return render(
        request,
        "dashboard/node.html",
        {
            "detail": detail,
            "card": detail.card,
            "gpus": _live_figures([detail.card]),
            "history": detail.gpu_history,
        },
    )


NODE_ACTIONS = ("drain", "undrain", "probe", "warmup")


@require_POST
@staff_page
def node_action(request: HttpRequest, name: str, action: str) -> HttpResponse:
    """The operator's node actions, through the services the management API's use."""
    if action not in NODE_ACTIONS:
        raise Http404("no such node action")
    node = get_object_or_404(Node.objects.prefetch_related("deployments__profile"), name=name)
    if action in ("drain", "undrain"):
        with transaction.atomic():
            nodes_set_draining(node_ids=[node.pk], draining=action == "drain")
        messages.success(
            request,
            f"{node.name} is draining: it finishes its requests and takes no new ones."
            if action == "drain"
            else f"{node.name} takes requests again.",
        )
    elif action == "probe":
        recorded = probe_and_record([node], then=node_tasks.follow_up)
        if recorded:
            outcome, result = recorded[0]
            text = f"Probe of {node.name}: {'passed' if result.ok else 'failed'} in "
            text += f"{result.latency_ms:.0f} ms; state {outcome.node.state}"
            text += f" ({result.error})" if result.error else ""
            (messages.success if result.ok else messages.error)(request, text)
    else:
        deployments = list(node.deployments.all())
        if not deployments:
            messages.error(request, f"{node.name} has no models deployed to warm up.")
        for deployment in deployments:
            start_load(profile=deployment.profile, nodes=[node])
        if deployments:
            models = ", ".join(d.profile.model_id for d in deployments)
            messages.success(request, f"Warming up {models} on {node.name}.")
    return redirect("dashboard:node", name=node.name)


@staff_page
def readiness(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/readiness.html", {"readiness": selectors.readiness()})


@require_POST
@staff_page
def readiness_run(request: HttpRequest) -> HttpResponse:
    try:
        with transaction.atomic():
            queue_run("console")
    except OperationalError as exc:  # the broker is unreachable: queue_run marked the run failed
        messages.error(request, f"The checklist could not be started: {exc}")
    else:
        messages.success(request, "Readiness checklist started; this page follows it.")
    return redirect("dashboard:readiness")

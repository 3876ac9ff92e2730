from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from nodes.choices import ApiKind, GpuType, ServerKind
from nodes.onboarding import OnboardError, OnboardRequest, onboard


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _label(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"labels look like key=value, got {value!r}")
    return key.strip(), val.strip()


class Command(BaseCommand):
    help = (
        "Register (or update) a GPU node, detect its server kind, check it, discover its models "
        "and their context windows, create profiles and deployments, warm prefetch profiles. "
        "Exits 0 only when the node is READY."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="node name, e.g. gpu1")
        parser.add_argument("--url", required=True, help="e.g. http://gpu1:11434")
        parser.add_argument(
            "--api",
            choices=[c.value for c in ApiKind],
            help="the wire protocol (default: the server kind's)",
        )
        parser.add_argument(
            "--server-kind",
            choices=[c.value for c in ServerKind],
            help="the inference server (default: detected from its answers)",
        )
        parser.add_argument("--gpu-type", required=True, choices=[c.value for c in GpuType])
        parser.add_argument("--gpu-count", type=int)
        parser.add_argument("--vram-gb", type=float, help="GPU memory per GPU, in GB")
        parser.add_argument("--max-concurrent", type=int)
        parser.add_argument("--queue-size", type=int)
        parser.add_argument("--restart-command", help="run by the node agent to self-heal")
        parser.add_argument("--label", type=_label, action="append", default=[], help="key=value")
        parser.add_argument(
            "--models", type=_csv, default=[], help="deploy only these (default: every model)"
        )
        parser.add_argument(
            "--context-window",
            type=int,
            help="context window for new profiles (default: the one the server says, an Ollama "
            "model's capped at 32768); required when the server does not say it",
        )
        parser.add_argument(
            "--prefetch",
            type=_csv,
            default=[],
            help="mark these models (or 'all') to be preloaded and warmed",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        fields: dict[str, Any] = {}
        for option, field in (
            ("gpu_count", "gpu_count"),
            ("vram_gb", "vram_gb_per_gpu"),
            ("max_concurrent", "max_concurrent"),
            ("queue_size", "queue_size"),
            ("restart_command", "restart_command"),
        ):
            if options[option] is not None:
                fields[field] = options[option]
        if options["label"]:
            fields["labels"] = dict(options["label"])
        if options["context_window"] is not None and options["context_window"] <= 0:
            raise CommandError("--context-window must be a positive number of tokens")
        request = OnboardRequest(
            name=options["name"],
            base_url=options["url"],
            api_kind=options["api"],
            server_kind=options["server_kind"],
            gpu_type=options["gpu_type"],
            node_fields=fields,
            only_models=options["models"],
            context_window=options["context_window"],
            prefetch=options["prefetch"],
        )
        try:
            node = onboard(request, progress=lambda line: self.stdout.write(f"  {line}"))
        except OnboardError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"node {node.name} is {node.state}"))

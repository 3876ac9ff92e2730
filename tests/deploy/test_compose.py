"""deploy/docker-compose.yml and deploy/Dockerfile, read as data: Docker is not run here
(no engine), so the file is checked for its services, their commands (each `clawdbot`
subcommand's own parser), the environment variables the code reads, and its mounts."""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.kit import DEPLOY, check_command, environment_variables_read

CLAWDBOT_SERVICES = {"migrate", "gateway-1", "gateway-2", "worker", "beat"}


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_the_whole_stack_is_there() -> None:
    services = compose()["services"]
    assert set(services) == CLAWDBOT_SERVICES | {
        "postgres", "redis", "nginx", "prometheus", "grafana"
    }  # fmt: skip
    assert services["prometheus"]["profiles"] == ["monitoring"]


def test_clawdbot_services_run_real_commands_from_the_kits_image() -> None:
    services = compose()["services"]
    for name in CLAWDBOT_SERVICES:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        check_command(service["command"])
    for name in ("gateway-1", "gateway-2"):
        assert services[name]["command"][-1] == "--production"
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_environment_names_are_variables_the_code_reads() -> None:
    read = environment_variables_read()
    for name in CLAWDBOT_SERVICES:
        environment = compose()["services"][name]["environment"]
        assert set(environment) <= read, sorted(set(environment) - read)
        assert environment["CLAWDBOT_MODE"] == "production"
    example = [
        line.split("=", 1)[0]
        for line in (DEPLOY / "clawdbot.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert set(example) <= read, sorted(set(example) - read)


def test_mounted_files_exist_in_the_kit() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./") and source != "./tls":
                assert (DEPLOY / source).exists(), f"{name}: {source}"


def test_dockerfile_installs_the_package_on_python_311_slim() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "\nFROM python:3.11-slim\n" in dockerfile
    assert "pip install ." in dockerfile
    assert "USER clawdbot" in dockerfile
    assert "cp -r templates" not in dockerfile  # templates are package data of their apps

"""`clawdbot config export` and `apply`: the configuration as a file, round trip, checks
named by path, all or nothing, the same file twice changes nothing, keys issued once."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from configfile import applying
from gateway.models import ApiKey
from gateway.services import apikey_create
from nodes.models import Deployment, ModelProfile, Node

FILE = """
version: 1
profiles:
  - model_id: qwen3-32b
    upstream_model: qwen3:32b
    context_window: 8192
    max_output_tokens: 2048
    fallback: qwen2-7b
  - model_id: qwen2-7b
    upstream_model: qwen2:7b
    context_window: 4096
    max_output_tokens: 1024
nodes:
  - name: gpu1
    base_url: http://127.0.0.1:9
    api_kind: ollama
    gpu_type: A100
    max_concurrent: 8
    deployments: [qwen3-32b, {profile: qwen2-7b, weight_override: 50}]
keys:
  - name: support-bot
    models: [qwen2-7b]
    rpm_limit: 60
"""


def config(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("config", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.django_db
def test_apply_creates_everything_and_issues_keys_once(tmp_path: Path) -> None:
    out, err = config("apply", write(tmp_path, FILE))
    assert "+ profile qwen3-32b" in err and "+ node gpu1" in err and "applied" in err
    name, secret = out.strip().split(": ")
    assert name == "support-bot" and secret.startswith("ck-")
    fallback = ModelProfile.objects.get(model_id="qwen3-32b").fallback
    assert fallback is not None and fallback.model_id == "qwen2-7b"
    node = Node.objects.get(name="gpu1")
    assert (node.max_concurrent, node.queue_size) == (8, 16)  # left out: the default
    assert Deployment.objects.get(node=node, profile__model_id="qwen2-7b").weight_override == 50
    key = ApiKey.objects.get(name="support-bot")
    assert key.rpm_limit == 60 and [p.model_id for p in key.allowed_profiles.all()] == ["qwen2-7b"]
    # The same file again: nothing changes, no second key.
    out, err = config("apply", write(tmp_path, FILE))
    assert out == "" and "no changes" in err
    assert ApiKey.objects.filter(name="support-bot").count() == 1


@pytest.mark.django_db
def test_export_then_apply_is_a_no_op_and_carries_no_secret(
    make_node: Callable[..., Node],
    make_profile: Callable[..., ModelProfile],
    deploy: Callable[..., Deployment],
    tmp_path: Path,
) -> None:
    small = make_profile("small", upstream_model="qwen2:7b")
    big = make_profile("big", fallback=small, prefetch=True, keep_alive="-1")
    node = make_node("gpu1", labels={"rack": "b2"}, restart_command="systemctl restart ollama")
    deploy(node, big)
    created = apikey_create(name="bot", models=["big"], tpm_limit=1000, expires_in_days=30)
    exported, _ = config("export")
    assert created.secret not in exported and created.key.digest not in exported
    document = yaml.safe_load(exported)
    assert document["keys"][0]["prefix"] == f"ck-{created.key.prefix}"
    assert document["nodes"][0]["deployments"] == [{"profile": "big", "weight_override": None}]
    out, err = config("apply", write(tmp_path, exported))
    assert "no changes" in err and out == ""


@pytest.mark.django_db
def test_every_problem_is_named_by_its_path_and_nothing_is_applied(tmp_path: Path) -> None:
    bad = yaml.safe_load(FILE)
    bad["nodes"][0]["gpu_type"] = "A1000"
    bad["nodes"][0]["max_concurrent"] = "eight"
    bad["nodes"][0]["colour"] = "blue"
    bad["nodes"][0]["deployments"].append("nope")
    bad["profiles"][1]["fallback"] = "qwen3-32b"  # a loop
    bad["profiles"][0]["max_output_tokens"] = 9000  # over the window
    bad["keys"][0]["models"] = ["ghost"]
    with pytest.raises(CommandError) as info:
        config("apply", write(tmp_path, yaml.safe_dump(bad)))
    message = str(info.value)
    for expected in (
        "nodes[0].max_concurrent: expected an integer, got a string",
        "nodes[0].colour: unknown field",
        "nodes[0].deployments[2].profile: 'nope' is not a profile here",
        "profiles[1].fallback: makes a loop",
        "keys[0].models[0]: 'ghost' is not a profile here",
    ):
        assert expected in message, message
    assert "nothing applied" in message
    assert not Node.objects.exists() and not ModelProfile.objects.exists()
    # Types fixed, values still wrong: the models' own checks, named by path too.
    bad = yaml.safe_load(FILE)
    bad["nodes"][0]["gpu_type"] = "A1000"
    bad["profiles"][0]["max_output_tokens"] = 9000
    with pytest.raises(CommandError) as info:
        config("apply", write(tmp_path, yaml.safe_dump(bad)))
    assert "nodes[0].gpu_type:" in str(info.value)
    assert "profiles[0].max_output_tokens: Max output tokens (9000)" in str(info.value)
    assert not Node.objects.exists()


@pytest.mark.django_db
def test_dry_run_shows_the_diff_and_applies_nothing(tmp_path: Path) -> None:
    config("apply", write(tmp_path, FILE))
    changed = FILE.replace("max_concurrent: 8", "max_concurrent: 12")
    _, err = config("apply", "--dry-run", write(tmp_path, changed))
    assert "~ node gpu1: max_concurrent 8 → 12" in err and "dry run" in err
    assert Node.objects.get(name="gpu1").max_concurrent == 8


@pytest.mark.django_db
def test_prune_removes_what_the_file_does_not_name(tmp_path: Path) -> None:
    config("apply", write(tmp_path, FILE))
    Node.objects.create(name="old", base_url="http://127.0.0.1:9", api_kind="ollama",
                        gpu_type="A10")  # fmt: skip
    stray = apikey_create(name="stray").key
    _, err = config("apply", write(tmp_path, FILE))
    assert "no changes" in err, "without --prune what the file does not name stays"
    _, err = config("apply", "--prune", write(tmp_path, FILE))
    assert "- node old" in err and f"- key stray (ck-{stray.prefix}): revoked" in err
    assert not Node.objects.filter(name="old").exists()
    stray.refresh_from_db()
    assert stray.revoked_at is not None


@pytest.mark.django_db
def test_a_failure_while_applying_leaves_nothing_half_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, **kwargs: Any) -> list[Any]:
        raise RuntimeError("the database went away mid-apply")

    monkeypatch.setattr(applying, "_key", fail)  # after profiles, nodes and deployments
    with pytest.raises(RuntimeError):
        config("apply", write(tmp_path, FILE))
    assert not ModelProfile.objects.exists() and not Node.objects.exists()


@pytest.mark.django_db
def test_a_file_that_is_not_yaml_says_where(tmp_path: Path) -> None:
    with pytest.raises(CommandError) as info:
        config("apply", write(tmp_path, "version: 1\nnodes: [\n"))
    assert "not valid YAML: line" in str(info.value)


@pytest.mark.django_db
def test_a_revoked_key_stays_revoked_on_every_apply(tmp_path: Path) -> None:
    key = apikey_create(name="bot").key
    document = yaml.safe_load(FILE)
    document["keys"] = [{"name": "bot", "prefix": f"ck-{key.prefix}", "revoked": True}]
    path = write(tmp_path, yaml.safe_dump(document))
    _, err = config("apply", path)
    assert f"- key bot (ck-{key.prefix}): revoked" in err
    _, err = config("apply", path)
    assert "no changes" in err
    document["keys"][0]["revoked"] = False
    with pytest.raises(CommandError, match="cannot be restored"):
        config("apply", write(tmp_path, yaml.safe_dump(document)))


@pytest.mark.django_db
def test_key_names_deployment_memory_and_key_values_are_checked(tmp_path: Path) -> None:
    document = yaml.safe_load(FILE)
    document["keys"].append({"name": "support-bot"})  # a second, prefix-less: issued twice
    document["keys"].append({"name": "x" * 150, "rpm_limit": 99_999_999_999})
    document["profiles"][0]["min_vram_gb"] = 100
    document["nodes"][0]["vram_gb_per_gpu"] = 40
    with pytest.raises(CommandError) as info:
        config("apply", write(tmp_path, yaml.safe_dump(document)))
    message = str(info.value)
    assert "keys[1].name: 'support-bot' is listed twice without a prefix" in message
    assert "keys[2].name:" in message and "keys[2].rpm_limit:" in message
    assert "nodes[0].deployments[0].profile:" in message and "100" in message
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_dates_unquoted_and_changed_show_readably(tmp_path: Path) -> None:
    config("apply", write(tmp_path, FILE + "    expires_at: 2030-01-01\n"))
    key = ApiKey.objects.get(name="support-bot")
    assert key.expires_at is not None
    assert key.expires_at.isoformat() == "2030-01-01T00:00:00+00:00"
    _, err = config("apply", "--dry-run", write(tmp_path, FILE + "    expires_at: 2031-06-01\n"))
    assert "expires_at '2030-01-01T00:00:00+00:00' → '2031-06-01T00:00:00+00:00'" in err


@pytest.mark.django_db
def test_new_deployments_of_prefetch_profiles_are_warmed_after_commit(
    tmp_path: Path, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nodes import load_jobs

    warmed: list[list[int]] = []
    monkeypatch.setattr(
        load_jobs.warm_deployments, "apply_async", lambda args, **_: warmed.append(args[0])
    )
    prefetching = FILE.replace(
        "    max_output_tokens: 1024\n", "    max_output_tokens: 1024\n    prefetch: true\n"
    ).replace("    max_output_tokens: 2048\n", "    max_output_tokens: 2048\n    prefetch: true\n")
    with django_capture_on_commit_callbacks(execute=True):
        config("apply", write(tmp_path, prefetching))
    assert len(warmed) == 1 and len(warmed[0]) == 2  # both new deployments, once


@pytest.mark.django_db
def test_a_config_changed_between_plan_and_apply_applies_nothing(tmp_path: Path) -> None:
    from configfile.applying import ChangedMeanwhile, apply, changes_for
    from configfile.document import check, parse

    desired = check(parse(FILE))
    changes = changes_for(desired, prune=False)
    ModelProfile.objects.create(
        model_id="qwen2-7b", upstream_model="other", context_window=4096, max_output_tokens=10
    )
    with pytest.raises(ChangedMeanwhile):
        apply(changes, desired, prune=False)
    assert not Node.objects.exists()


@pytest.mark.django_db
def test_a_profile_s_degraded_answer_goes_out_and_comes_back(tmp_path: Path) -> None:
    document = yaml.safe_load(FILE)
    document["profiles"][0]["degraded_answer"] = "Busy: please try again in a minute."
    document["profiles"][1]["degraded_mode"] = "unavailable"
    config("apply", write(tmp_path, yaml.safe_dump(document)))
    big, small = (ModelProfile.objects.get(model_id=m) for m in ("qwen3-32b", "qwen2-7b"))
    assert (big.degraded_mode, big.degraded_answer) == (
        "static",
        "Busy: please try again in a minute.",
    )
    assert (small.degraded_mode, small.degraded_answer) == ("unavailable", "")
    exported = {p["model_id"]: p for p in yaml.safe_load(config("export")[0])["profiles"]}
    assert exported["qwen3-32b"]["degraded_answer"] == "Busy: please try again in a minute."
    assert exported["qwen2-7b"]["degraded_mode"] == "unavailable"
    document["profiles"][1]["degraded_mode"] = "sometimes"
    with pytest.raises(CommandError, match=r"profiles\[1\]\.degraded_mode:"):
        config("apply", write(tmp_path, yaml.safe_dump(document)))

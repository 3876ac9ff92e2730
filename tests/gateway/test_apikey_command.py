from __future__ import annotations

from collections.abc import Callable
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from gateway.keys import hash_key
from gateway.models import ApiKey
from nodes.models import ModelProfile

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("apikey", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_prints_the_secret_alone_on_the_last_line(
    make_profile: Callable[..., ModelProfile],
) -> None:
    make_profile("qwen3-32b")
    make_profile("llama3-8b", upstream_model="llama3:8b")
    out, err = run(
        "create", "--name", "bot", "--models", "qwen3-32b,llama3-8b", "--rpm", "60", "--tpm", "1000"
    )
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("ck-") and secret.count("-") >= 2
    key = ApiKey.objects.get()
    assert key.digest == hash_key(secret, settings.SECRET_KEY)
    assert secret.split("-", 2)[1] == key.prefix
    assert (key.rpm_limit, key.tpm_limit) == (60, 1000)
    assert sorted(p.model_id for p in key.allowed_profiles.all()) == ["llama3-8b", "qwen3-32b"]
    assert "shown once" in err


def test_create_with_expiry_sets_a_future_date() -> None:
    run("create", "--name", "temp", "--expires-days", "3")
    key = ApiKey.objects.get()
    assert key.expires_at is not None and key.status() == "active"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "nope"], "Unknown model(s): nope"),
        (["--rpm", "0"], "--rpm must be a positive number"),
        (["--expires-days", "-1"], "--expires-days must be a positive number of days"),
        (["--owner", "ghost"], "no user named 'ghost'"),
    ],
)
def test_create_rejects_bad_input(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run("create", "--name", "x", *args)
    assert not ApiKey.objects.exists()


def test_list_shows_prefixes_never_secrets_and_revoke_removes_from_list() -> None:
    out, _ = run("create", "--name", "listed")
    secret = out.strip().splitlines()[-1]
    prefix = secret.split("-")[1]
    listing, _ = run("list")
    assert f"ck-{prefix}" in listing and "listed" in listing and "active" in listing
    assert secret.split("-", 2)[2] not in listing

    revoked, _ = run("revoke", f"ck-{prefix}")
    assert "revoked" in revoked
    assert "listed" not in run("list")[0]
    assert "revoked" in run("list", "--all")[0]
    assert "already revoked" in run("revoke", secret)[0]


def test_revoke_unknown_prefix_is_an_error() -> None:
    with pytest.raises(CommandError, match="no key with prefix"):
        run("revoke", "ck-zzzzzzzz")

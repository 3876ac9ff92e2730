from __future__ import annotations

import string

import pytest
from django.conf import settings
from django.db import connection

from gateway.keys import digest_matches, display_key, generate_key, hash_key, parse_key
from gateway.models import ApiKey
from gateway.services import apikey_create, apikey_revoke


def test_generated_keys_have_the_documented_shape() -> None:
    prefix, raw = generate_key()
    scheme, key_prefix, secret = raw.split("-", 2)
    assert (scheme, key_prefix) == ("ck", prefix)
    assert len(prefix) == 8 and set(prefix) <= set(string.ascii_lowercase + string.digits)
    assert len(secret) == 40 and secret.isalnum()
    assert generate_key()[1] != raw


def test_parse_key_rejects_what_cannot_be_a_key() -> None:
    assert parse_key("ck-abcd1234-secret") is not None
    for bad in ("", "sk-abcd1234-secret", "ck-short-secret", "ck-abcd1234-", "ck-abcd1234"):
        assert parse_key(bad) is None


def test_hash_is_keyed_and_compared_exactly() -> None:
    _, raw = generate_key()
    digest = hash_key(raw, "pepper-one")
    assert digest != hash_key(raw, "pepper-two")
    assert digest_matches(raw, digest, "pepper-one")
    assert not digest_matches(raw + "x", digest, "pepper-one")
    assert raw not in digest


def test_display_key_never_shows_the_secret() -> None:
    _, raw = generate_key()
    shown = display_key(raw)
    assert raw.split("-", 2)[2] not in shown and shown.startswith("ck-")


@pytest.mark.django_db
def test_no_plaintext_secret_anywhere_in_the_database() -> None:
    created = apikey_create(name="secret-check", rpm_limit=10)
    secret_part = created.secret.split("-", 2)[2]
    row = ApiKey.objects.get(pk=created.key.pk)
    assert row.digest == hash_key(created.secret, settings.SECRET_KEY)
    # Scan every text column of every table: the secret must not be stored anywhere.
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for values in cursor.fetchall():
                for value in values:
                    assert secret_part not in str(value), f"secret found in {table}"


@pytest.mark.django_db
def test_revoke_is_idempotent() -> None:
    key = apikey_create(name="k").key
    assert apikey_revoke(key=key) is True
    assert key.status() == "revoked"
    assert apikey_revoke(key=key) is False

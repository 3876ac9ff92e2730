from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.models import ApiKey
from gateway.services import apikey_create, apikey_revoke


class Command(BaseCommand):
    help = "Create, list and revoke gateway API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="create|list|revoke")
        create = sub.add_parser("create", help="create a key; the secret is the last line")
        create.add_argument("--name", required=True)
        create.add_argument("--models", default="", help="comma-separated model ids (default all)")
        create.add_argument("--rpm", type=int, help="requests per minute")
        create.add_argument("--tpm", type=int, help="tokens per minute")
        create.add_argument("--expires-days", type=int)
        create.add_argument("--owner", help="username of the key's owner")
        create.add_argument("--staff", action="store_true", help="may call /v1/admin endpoints")
        listing = sub.add_parser("list", help="list keys (never their secrets)")
        listing.add_argument("--all", action="store_true", help="include revoked keys")
        revoke = sub.add_parser("revoke", help="revoke a key by prefix or full key")
        revoke.add_argument("key", help="the key's prefix (ck-abcd1234) or the whole key")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['action']}")(options)

    def _create(self, options: dict[str, Any]) -> None:
        for flag in ("rpm", "tpm"):
            if options[flag] is not None and options[flag] <= 0:
                raise CommandError(f"--{flag} must be a positive number")
        owner = None
        if options["owner"]:
            owner = get_user_model().objects.filter(username=options["owner"]).first()
            if owner is None:
                raise CommandError(f"no user named {options['owner']!r}")
        try:
            created = apikey_create(
                name=options["name"],
                owner=owner,
                models=options["models"].split(","),
                rpm_limit=options["rpm"],
                tpm_limit=options["tpm"],
                expires_in_days=options["expires_days"],
                staff=options["staff"],
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        key = created.key
        models = ", ".join(sorted(p.model_id for p in key.allowed_profiles.all())) or "all"
        self.stderr.write(
            f"created key {key.name!r} ({key.masked}); models: {models}; "
            f"rpm: {key.rpm_limit or 'unlimited'}; tpm: {key.tpm_limit or 'unlimited'}; "
            f"expires: {key.expires_at.isoformat() if key.expires_at else 'never'}.\n"
            "The secret is shown once, below; only its hash is stored."
        )
        self.stdout.write(created.secret)

    def _list(self, options: dict[str, Any]) -> None:
        keys = ApiKey.objects.select_related("owner").prefetch_related("allowed_profiles")
        if not options["all"]:
            keys = keys.filter(revoked_at__isnull=True)
        rows = [k.to_dict() for k in keys]
        if not rows:
            self.stdout.write("no keys")
            return
        header = f"{'PREFIX':<14} {'NAME':<24} {'STATUS':<8} {'RPM':>6} {'TPM':>8}  MODELS"
        self.stdout.write(header)
        for row in rows:
            self.stdout.write(
                f"ck-{row['prefix']:<11} {row['name'][:24]:<24} {row['status']:<8} "
                f"{row['rpm_limit'] or '-':>6} {row['tpm_limit'] or '-':>8}  "
                f"{','.join(row['models']) or 'all'}"
            )

    def _revoke(self, options: dict[str, Any]) -> None:
        raw = options["key"].strip()
        prefix = raw.split("-")[1] if raw.startswith("ck-") and raw.count("-") >= 1 else raw
        key = ApiKey.objects.filter(prefix=prefix).first()
        if key is None:
            raise CommandError(f"no key with prefix {prefix!r} (see `clawdbot apikey list`)")
        if apikey_revoke(key=key):
            self.stdout.write(f"revoked {key}")
        else:
            self.stdout.write(f"{key} was already revoked")

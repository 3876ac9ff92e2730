"""How the staff API key appears in the OpenAPI schema (a bearer token), so Swagger UI's
"Authorize" button takes a `ck-…` key."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class StaffApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "admin_api.auth.StaffApiKeyAuthentication"
    name = "staffApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A staff API key: `clawdbot apikey create --name ops --staff`.",
        }


def paths_without_trailing_slash(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """The routes take an optional trailing slash (`/?$`), which the schema generator writes
    as one; the documented form has none, like /v1."""
    result["paths"] = {
        (path.rstrip("/") or "/"): item for path, item in result.get("paths", {}).items()
    }
    return result

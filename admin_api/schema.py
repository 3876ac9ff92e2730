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


# The integer bounds Django derives from the database's column types: PostgreSQL's 32- and
# 16-bit integers, SQLite's 64-bit ones. They say nothing about the API and would make the
# published schema depend on the database it was generated against.
DATABASE_INTEGER_BOUNDS = frozenset(
    {32767, -32768, 2147483647, -2147483648, 9223372036854775807, -9223372036854775808}
)


def without_database_integer_bounds(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    def clean(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "integer":
                removed = False
                for bound in ("maximum", "minimum"):
                    if node.get(bound) in DATABASE_INTEGER_BOUNDS:
                        del node[bound]
                        removed = True
                if removed and node.get("format") == "int64":
                    del node["format"]  # written because of SQLite's 64-bit bound
            for value in node.values():
                clean(value)
        elif isinstance(node, list):
            for value in node:
                clean(value)

    clean(result)
    return result

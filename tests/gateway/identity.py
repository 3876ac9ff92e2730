"""A tiny identity provider for single sign-on tests: RSA signing keys, tokens signed with
them or with a shared secret, and a real HTTP server on 127.0.0.1 serving the key set (JWKS),
which a test can rotate, stop and start again on the same port."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from tests.gateways import free_port

ISSUER = "https://idp.example.com/"
AUDIENCE = "clawdbot"
SECRET = "test-shared-secret-" + "s" * 48  # long enough for HS512 too


class SigningKey:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}


def claims(subject: str = "alice@example.com", **overrides: Any) -> dict[str, Any]:
    """Valid claims for ten minutes; a fresh jti, so each token is new to the gateway."""
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs_token(secret: str = SECRET, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), secret, algorithm="HS256")


def rs_token(key: SigningKey, headers: dict[str, Any] | None = None, **overrides: Any) -> str:
    """Signed by `key`; its header names the key's kid unless `headers` says otherwise."""
    headers = {"kid": key.kid} if headers is None else headers
    return jwt.encode(claims(**overrides), key.private, algorithm="RS256", headers=headers)


def public_pem(key: SigningKey) -> bytes:
    return key.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_hs256(token_claims: dict[str, Any], secret: bytes, **headers: Any) -> str:
    """An HS256 token keyed with any bytes, a public key's PEM included (PyJWT refuses to)."""
    head = _segment(orjson.dumps({"alg": "HS256", "typ": "JWT", **headers}))
    body = _segment(orjson.dumps(token_claims))
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_segment(mac)}"


def unsigned_token(**overrides: Any) -> str:
    """alg "none": valid claims and no signature."""
    head = _segment(orjson.dumps({"alg": "none", "typ": "JWT"}))
    return f"{head}.{_segment(orjson.dumps(claims(**overrides)))}."


class JwksServer:
    """Serves `{"keys": [...]}` of the keys it is given, at /jwks; counts the fetches."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/jwks"
        self.fetches = 0
        self._server: ThreadingHTTPServer | None = None

    def serve(self, *keys: SigningKey) -> None:
        """From now on the set is these keys (the provider rotated)."""
        self.keys = list(keys)

    def start(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                if self.path != "/jwks":
                    self.send_error(404)
                    return
                body = orjson.dumps({"keys": [k.jwk() for k in owner.keys]})
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

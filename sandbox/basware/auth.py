"""`POST /v1/tokens` (OAuth2 client credentials, Basware P2P OpenAPI POST /v1/tokens) and the bearer check.

Facts modelled: HTTP Basic client id/secret; form body `grant_type=client_credentials&scope=...`,
both required (400 `invalid_request`, "grant_type field required"); a missing `authorization`
header or a body that is not a form is FastAPI's 422; wrong credentials 401 `invalid_client`;
the answer is `{access_token, token_type, expires_in, scope}` with `expires_in` in seconds.
Tokens are opaque random strings (the real ones are RS256 JWTs; clients must not look inside).
Scopes: `<api>.read` for GET, `.write` for POST/PATCH, `.delete` for DELETE; a token only carries
what was asked for, and asking for a scope outside the client's grant is refused.
"""
from __future__ import annotations

import base64
import binascii
import secrets
import threading
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import parse_qs

from sandbox import openapi, seed
from sandbox.common import Request, Response

from . import errors as E
from .clock import Clock


def known_scopes() -> set[str]:
    """Every scope Basware's P2P spec names (its oauth2 flow) plus the push-notification ones."""
    flows = openapi.basware_spec("p2p").document["components"]["securitySchemes"]["oauth2authentication"]["flows"]
    return set(flows["clientCredentials"]["scopes"]) | {
        "subscriptions.read", "subscriptions.write", "subscriptions.delete", "tasks.read", "taskStatus.read"}


@dataclass
class Grant:
    client_id: str
    scopes: frozenset[str]
    expires_at: float  # clock seconds


class TokenIssuer:
    def __init__(self, clock: Clock, lifetime: float = 3600) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.clients: dict[str, str] = {seed.BASWARE_CLIENT_ID: seed.BASWARE_CLIENT_SECRET}
        self.client_scopes: dict[str, set[str]] = {}  # client -> allowed scopes; absent = all known
        self.scopes = known_scopes()
        self._grants: dict[str, Grant] = {}
        self._lock = threading.Lock()
        self.issued = 0

    def add_client(self, client_id: str, secret: str, scopes: Iterable[str] | None = None) -> None:
        self.clients[client_id] = secret
        if scopes is not None:
            self.client_scopes[client_id] = set(scopes)

    def check_client(self, client_id: str, secret: str) -> bool:
        expected = self.clients.get(client_id)
        return expected is not None and secrets.compare_digest(expected.encode(), secret.encode())

    def issue(self, client_id: str, scopes: Iterable[str]) -> tuple[str, int]:
        token = secrets.token_urlsafe(32)
        lifetime = int(self.lifetime)
        now = self.clock.time()
        with self._lock:
            self.issued += 1
            # forget long-dead grants so a long bench does not grow the table without bound
            if len(self._grants) > 1000:
                self._grants = {t: g for t, g in self._grants.items() if g.expires_at > now - 3600}
            self._grants[token] = Grant(client_id, frozenset(scopes), now + lifetime)
        return token, lifetime

    def lookup(self, token: str) -> tuple[Grant | None, str]:
        """(grant, "") when valid, else (None, reason)."""
        with self._lock:
            grant = self._grants.get(token)
        if grant is None:
            return None, "The access token is not valid."
        if self.clock.time() >= grant.expires_at:
            return None, "The access token has expired."
        return grant, ""

    def revoke_all(self) -> int:
        with self._lock:
            count = len(self._grants)
            self._grants.clear()
            return count

    @property
    def active(self) -> int:
        now = self.clock.time()
        with self._lock:
            return sum(1 for g in self._grants.values() if g.expires_at > now)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None


def token_endpoint(issuer: TokenIssuer, req: Request) -> Response:
    header = req.headers.get("authorization")
    if not header:
        return E.fastapi_422(["header", "authorization"], "field required")
    content_type = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if req.body and content_type not in ("application/x-www-form-urlencoded", ""):
        return E.fastapi_422(["body"], f"expected application/x-www-form-urlencoded, got {content_type}",
                             "value_error")
    try:
        form = parse_qs(req.body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(req.body))
    except (UnicodeDecodeError, ValueError):
        return E.fastapi_422(["body"], "malformed form body", "value_error")
    creds = basic_credentials(header)
    if creds is None or not issuer.check_client(*creds):
        return E.token_error(401, "invalid_client", headers={"WWW-Authenticate": 'Basic realm="basware"'})
    client_id = creds[0]
    for name in ("grant_type", "scope"):
        if not (form.get(name) or [""])[0].strip():
            return E.token_error(400, "invalid_request", f"{name} field required")
    grant_type = form["grant_type"][0].strip()
    if grant_type != "client_credentials":
        return E.token_error(400, "unsupported_grant_type", f"grant_type '{grant_type}' is not supported; "
                                                             "use client_credentials")
    requested = form["scope"][0].split()
    allowed = issuer.client_scopes.get(client_id, issuer.scopes)
    unknown = [s for s in requested if s not in issuer.scopes]
    refused = [s for s in requested if s in issuer.scopes and s not in allowed]
    if unknown or refused:
        detail = (f"unknown scope(s): {' '.join(unknown)}" if unknown
                  else f"scope(s) not granted to this client: {' '.join(refused)}")
        return E.token_error(400, "invalid_scope", detail)
    token, lifetime = issuer.issue(client_id, requested)
    return Response.json({"access_token": token, "token_type": "Bearer", "expires_in": lifetime,
                          "scope": " ".join(requested)}, headers={"Cache-Control": "no-store"})


def required_scope(method: str, path: str) -> str | None:
    """The scope a P2P/push call needs: `<api>.read|write|delete` (Basware P2P OpenAPI, oauth2 flow scopes)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2 or parts[0] not in ("v1", "v2"):
        return None
    api = parts[1]
    if api == "requestStatus" and parts[-1] == "acknowledge":
        return "requestStatus.write"
    verb = {"GET": "read", "HEAD": "read", "DELETE": "delete"}.get(method.upper(), "write")
    return f"{api}.{verb}"

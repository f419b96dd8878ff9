"""Entra ID client-credentials token endpoint and bearer checks (Microsoft Learn, "OAuth 2.0 client credentials flow").

`POST /{tenant}/oauth2/v2.0/token` with grant_type=client_credentials, client_id, client_secret
(or HTTP Basic) and scope=https://api.businesscentral.dynamics.com/.default. Errors use Entra's
shape: `{"error", "error_description": "AADSTS...: ...", "error_codes", "timestamp", "trace_id",
"correlation_id"}`. The API principal (for throttling) is the client id the token was issued to.
"""
from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from urllib.parse import parse_qs

from sandbox import seed
from sandbox.common import Request, Response

from .store import Clock

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
BC_AUDIENCE = "https://api.businesscentral.dynamics.com"


def _b64(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


class TokenIssuer:
    def __init__(self, clock: Clock, tenant_id: str, lifetime: float = 3599) -> None:
        self.clock = clock
        self.tenant_id = tenant_id
        self.lifetime = lifetime
        self.clients: dict[str, str] = {seed.BC_CLIENT_ID: seed.BC_CLIENT_SECRET}
        self.issued = 0
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (client id, expiry epoch)
        self._lock = threading.Lock()

    def add_client(self, client_id: str, secret: str) -> None:
        self.clients[client_id] = secret

    def revoke_all(self) -> None:
        with self._lock:
            self._tokens.clear()

    def principal(self, token: str) -> str | None:
        """The client id behind a valid, unexpired token."""
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or self.clock.now().timestamp() >= entry[1]:
            return None
        return entry[0]

    # -- the endpoint ---------------------------------------------------------------------------------
    def _error(self, status: int, error: str, code: int, description: str) -> Response:
        now = self.clock.now()
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        return Response.json({
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {corr} "
                                 f"Timestamp: {now.strftime('%Y-%m-%d %H:%M:%SZ')}",
            "error_codes": [code], "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"), "trace_id": trace,
            "correlation_id": corr, "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        }, status)

    def handle(self, req: Request) -> Response:
        tenant = req.params["tenant"]
        if tenant != self.tenant_id:
            return self._error(400, "invalid_tenant", 90002,
                               f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                               "and are signing into the correct cloud.")
        form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        auth = req.headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
                form.setdefault("client_id", cid)
                form.setdefault("client_secret", secret)
            except ValueError:
                pass
        if form.get("grant_type") != "client_credentials":
            return self._error(400, "unsupported_grant_type", 70003,
                               "The app requested an unsupported grant type "
                               f"'{form.get('grant_type', '')}'.")
        client_id = form.get("client_id", "")
        if not client_id:
            return self._error(400, "invalid_request", 900144,
                               "The request body must contain the following parameter: 'client_id'.")
        if client_id not in self.clients:
            return self._error(400, "unauthorized_client", 700016,
                               f"Application with identifier '{client_id}' was not found in the directory "
                               f"'{self.tenant_id}'.")
        if not secrets.compare_digest(form.get("client_secret", ""), self.clients[client_id]):
            return self._error(401, "invalid_client", 7000215,
                               "Invalid client secret provided. Ensure the secret being sent in the request is the "
                               f"client secret value, not the client secret ID, for a secret added to app "
                               f"'{client_id}'.")
        scope = form.get("scope", "")
        if not scope:
            return self._error(400, "invalid_request", 900144,
                               "The request body must contain the following parameter: 'scope'.")
        if scope.strip() != BC_SCOPE:
            if not scope.strip().endswith("/.default"):
                return self._error(400, "invalid_scope", 1002012,
                                   f"The provided value for scope {scope} is not valid. Client credential flows "
                                   "must have a scope value with /.default suffixed to the resource identifier "
                                   "(application ID URI).")
            return self._error(400, "invalid_scope", 500011,
                               f"The resource principal named {scope[:-len('/.default')]} was not found in the "
                               f"tenant named {self.tenant_id}.")
        return Response.json(self.issue(client_id))

    def issue(self, client_id: str) -> dict:
        now = self.clock.now().timestamp()
        lifetime = int(self.lifetime)
        claims = {"aud": BC_AUDIENCE, "iss": f"https://sts.windows.net/{self.tenant_id}/", "iat": int(now),
                  "nbf": int(now), "exp": int(now + lifetime), "appid": client_id, "tid": self.tenant_id,
                  "roles": ["API.ReadWrite.All"], "oid": seed.stable_uuid("bc-app", client_id),
                  "jti": secrets.token_hex(8)}
        token = ".".join([_b64({"typ": "JWT", "alg": "RS256", "kid": "sandbox"}), _b64(claims),
                          base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")])
        with self._lock:
            self._tokens[token] = (client_id, now + self.lifetime)
            self.issued += 1
        return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}

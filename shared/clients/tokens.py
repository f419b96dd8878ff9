"""OAuth2 client-credentials token providers for Basware and Business Central.

Both cache one token and fetch a new one `refresh_margin` seconds before it expires, one refresh at
a time (single flight under a lock), and never one token per call. Neither system issues refresh
tokens (Basware: POST /v1/tokens in its P2P OpenAPI; Entra: Microsoft Learn, "OAuth 2.0 client credentials flow").
"""
from __future__ import annotations

import base64
import threading
import time
from typing import Callable

import httpx

from shared.core.errors import ConfigError, PermanentError
from shared.clients.http import ApiClient, RetryConfig
from shared.core.secrets import Secret

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"


class CachedTokenProvider:
    system = "token"

    def __init__(self, *, refresh_margin: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Secret | None = None
        self._expires_at = 0.0
        self._margin = refresh_margin
        self.fetches = 0

    def token(self) -> str:
        current = self._token
        if current is not None and self._clock() < self._expires_at - self._margin:
            return current.reveal()
        with self._lock:  # single flight: concurrent callers wait for one fetch
            if self._token is None or self._clock() >= self._expires_at - self._margin:
                value, lifetime = self._fetch()
                self.fetches += 1
                self._token = Secret(value)
                # A lifetime shorter than twice the margin (tests, odd tenants) is used for half its life.
                self._margin = min(self.refresh_margin, lifetime / 2)
                self._expires_at = self._clock() + lifetime
            return self._token.reveal()

    def invalidate(self, token: str) -> None:
        """Forget `token` (it was refused); a newer token fetched meanwhile is kept."""
        with self._lock:
            if self._token is not None and self._token.reveal() == token:
                self._token = None
                self._expires_at = 0.0

    def expires_in(self) -> float:
        return max(0.0, self._expires_at - self._clock())

    def _fetch(self) -> tuple[str, float]:
        raise NotImplementedError


class _TokenEndpoint(ApiClient):
    """The token endpoint itself: same retry table, no bearer token."""

    def parse_error(self, response: httpx.Response):
        try:
            body = response.json()
        except ValueError:
            return None, (response.text or response.reason_phrase)[:300], None
        if isinstance(body, dict):
            code = body.get("error")
            desc = body.get("error_description") or body.get("detail") or body.get("message") or ""
            if isinstance(desc, list):
                desc = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in desc)
            return (str(code) if code else None), str(desc)[:300] or str(code), None
        return None, str(body)[:300], None


def _read_token(response: httpx.Response, system: str) -> tuple[str, float]:
    try:
        body = response.json()
        return str(body["access_token"]), float(body.get("expires_in", 3600))
    except (ValueError, KeyError, TypeError):
        raise PermanentError(f"{system} token endpoint answered without an access_token", system=system) from None


class BaswareTokenProvider(CachedTokenProvider):
    """POST {BASWARE_TOKEN_URL}: HTTP Basic client id/secret, form grant_type + scope.

    `expires_in` is in seconds (the spec says minutes, its example and JWT say seconds:
    Basware P2P OpenAPI, POST /v1/tokens), so a token lives about an hour; refresh 5 minutes early.
    """

    system = "basware"

    def __init__(self, token_url: str, client_id: str, client_secret: Secret, scopes: str, *,
                 transport: httpx.BaseTransport | None = None, refresh_margin: float = 300.0,
                 clock: Callable[[], float] = time.time, retry: RetryConfig | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(refresh_margin=refresh_margin, clock=clock)
        self._endpoint = _TokenEndpoint(token_url, transport=transport, retry=retry or RetryConfig(max_attempts=4),
                                        sleep=sleep)
        self._endpoint.system = "basware-token"
        self._url = token_url
        self._client_id = client_id
        self._secret = client_secret
        self._scopes = scopes

    def _fetch(self) -> tuple[str, float]:
        basic = base64.b64encode(f"{self._client_id}:{self._secret.reveal()}".encode()).decode()
        auth_header = f"Basic {basic}"
        try:
            response = self._endpoint.request(
                "POST", self._url, content=str(httpx.QueryParams(
                    {"grant_type": "client_credentials", "scope": self._scopes})).encode(),
                headers={"Authorization": auth_header, "Content-Type": "application/x-www-form-urlencoded"})
        except PermanentError as exc:
            raise ConfigError(f"Basware refused the token request ({exc.code or exc.status}: {exc.message}); "
                              "check BASWARE_CLIENT_ID, BASWARE_CLIENT_SECRET and BASWARE_SCOPES",
                              status=exc.status, code=exc.code, system="basware") from None
        return _read_token(response, "Basware")


class EntraTokenProvider(CachedTokenProvider):
    """Entra ID client credentials for BC: {authority}/{tenant}/oauth2/v2.0/token.

    Entra tokens live 60-90 minutes (Microsoft Learn, "Access tokens in the Microsoft identity platform"); refresh 5 minutes before expiry.
    """

    system = "bc"

    def __init__(self, authority_url: str, tenant_id: str, client_id: str, client_secret: Secret, *,
                 scope: str = BC_SCOPE, transport: httpx.BaseTransport | None = None,
                 refresh_margin: float = 300.0, clock: Callable[[], float] = time.time,
                 retry: RetryConfig | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(refresh_margin=refresh_margin, clock=clock)
        self._url = f"{authority_url.rstrip('/')}/{tenant_id}/oauth2/v2.0/token"
        self._endpoint = _TokenEndpoint(self._url, transport=transport, retry=retry or RetryConfig(max_attempts=4),
                                        sleep=sleep)
        self._endpoint.system = "entra"
        self._client_id = client_id
        self._secret = client_secret
        self._scope = scope

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "client_id": self._client_id,
                "client_secret": self._secret.reveal(), "scope": self._scope}
        try:
            response = self._endpoint.request(
                "POST", self._url, content=str(httpx.QueryParams(form)).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"})
        except PermanentError as exc:
            raise ConfigError(f"Entra ID refused the token request ({exc.code or exc.status}: "
                              f"{exc.message.split(chr(10))[0][:200]}); check BC_TENANT_ID, BC_CLIENT_ID and "
                              "BC_CLIENT_SECRET", status=exc.status, code=exc.code, system="bc") from None
        return _read_token(response, "Entra ID")

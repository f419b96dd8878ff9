"""The shared HTTP base and token providers, over real HTTP against a small local server."""
from __future__ import annotations

import base64
import logging
import threading
import time
from urllib.parse import parse_qs

import pytest

from sandbox.common import Response, SandboxApp, SandboxServer
from shared.clients.bc import BcClient
from shared.core.errors import AuthError, ConfigError, ConflictError, DocumentError, PermanentError, TransientError
from shared.clients.http import POLICY, Action, ApiClient, RetryConfig, classify, resolve
from shared.core.secrets import Secret
from shared.clients.tokens import BaswareTokenProvider, EntraTokenProvider


class FakeApi(SandboxApp):
    """Issues tokens and checks them; everything else comes from the shared sandbox plumbing."""

    name = "fake"

    def __init__(self):
        super().__init__()
        self.issued = []
        self.valid = set()
        self.token_requests = []
        self.inflight = 0
        self.max_inflight = 0
        self._count_lock = threading.Lock()

        @self.route("POST", "/token")
        def token(req):
            self.token_requests.append((req.headers.get("authorization"), parse_qs(req.body.decode())))
            value = f"tok-{len(self.issued) + 1}-abcdefgh"
            self.issued.append(value)
            self.valid.add(value)
            return Response.json({"access_token": value, "expires_in": 3600, "token_type": "Bearer"})

        @self.route("POST", "/{tenant}/oauth2/v2.0/token")
        def entra(req):
            form = parse_qs(req.body.decode())
            self.token_requests.append((None, form))
            if form.get("client_secret") != ["right-secret"]:
                return Response.json({"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"},
                                     401)
            value = f"entra-{len(self.issued) + 1}-abcdefgh"
            self.issued.append(value)
            self.valid.add(value)
            return Response.json({"access_token": value, "expires_in": 4500, "token_type": "Bearer"})

        @self.route("GET", "/data")
        def data(req):
            return Response.json({"ok": True})

        @self.route("GET", "/slow")
        def slow(req):
            with self._count_lock:
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
            time.sleep(0.05)
            with self._count_lock:
                self.inflight -= 1
            return Response.json({"ok": True})

        @self.route("GET", "/redirect")
        def redirect(req):
            return Response(302, b"", {"Location": "/presigned", "X-amz-meta-continuationToken": "abc"})

        @self.route("GET", "/presigned")
        def presigned(req):
            if "authorization" in req.headers:
                return Response.text("Only one auth mechanism allowed", 400)
            return Response.json({"page": 1})

        @self.route("GET", "/v2.0/{tenant}/{environment}/api/v2.0/error")
        def bc_error(req):  # answers with the status and BC error code asked for
            status, code = int(req.query["status"][0]), req.query["code"][0]
            return Response.json({"error": {"code": code, "message": f"{code} happened"}}, status)

        @self.route("GET", "/bad")
        def bad(req):
            return Response.json({"error": {"code": "BadRequest_NotFound", "message": "nope  CorrelationId:  x."}},
                                 400)

    def authenticate(self, req):
        auth = req.headers.get("authorization") or ""
        if auth.startswith("Bearer ") and auth[7:] in self.valid:
            req.principal = "p"
            return None
        return Response.json({"error": "unauthorized"}, 401)

    def is_public(self, req):
        return req.path.endswith("token") or req.path == "/presigned"


@pytest.fixture
def api():
    app = FakeApi()
    server = SandboxServer(app).start()
    yield app, server.base_url
    server.stop()


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def make_client(base, clock=None, sleeps=None, **kw):
    tokens = BaswareTokenProvider(f"{base}/token", "client-id", Secret("client-secret-xyz"), "a.read b.write",
                                  clock=clock or time.time)
    return ApiClient(base, tokens, sleep=(sleeps.append if sleeps is not None else time.sleep),
                     retry=kw.pop("retry", RetryConfig(max_attempts=4, backoff_base=0.01, backoff_max=0.05)), **kw), tokens


@pytest.mark.parametrize("status, code, system, action", [
    (200, None, "bc", Action.OK), (204, None, "bc", Action.OK), (302, None, "basware", Action.OK),
    (401, None, "bc", Action.REFRESH_AUTH), (408, None, "bc", Action.RETRY), (429, None, "bc", Action.RETRY),
    (500, None, "bc", Action.RETRY), (503, "Internal_TenantUnavailable", "bc", Action.RETRY),
    (403, None, "bc", Action.CONFIG), (403, None, "basware", Action.CONFIG),
    (400, "Application_DialogException", "bc", Action.DOCUMENT),
    (409, "Application_FieldValidationException", "bc", Action.DOCUMENT),  # the code decides before the status
    (400, "BadRequest", "bc", Action.DOCUMENT), (400, None, "bc", Action.DOCUMENT), (422, None, "bc", Action.DOCUMENT),
    (400, "BadRequest_InvalidToken", "bc", Action.CONFLICT), (409, "Request_EntityChanged", "bc", Action.CONFLICT),
    (412, None, "bc", Action.CONFLICT),
    (400, "Internal_RecordNotFound", "bc", Action.FAIL), (404, "BadRequest_NotFound", "bc", Action.DOCUMENT),
    (400, None, "basware", Action.FAIL), (404, None, "basware", Action.FAIL), (405, None, "basware", Action.FAIL),
])
def test_retry_table(status, code, system, action):
    assert classify(status, code, system) is action


def test_only_429_and_bcs_503_count_as_refused_before_they_ran():
    assert [(r.first, r.system) for r in POLICY if r.unprocessed] == [(429, None), (503, "bc")]
    assert not resolve(503, None, "basware").unprocessed and not resolve(504, None, "bc").unprocessed


def test_the_error_class_follows_the_table(api):
    app, base = api
    _, tokens = make_client(base)
    client = BcClient(base, "tenant", "production", tokens, sleep=lambda s: None)
    for status, code, expected in [(400, "Application_DialogException", DocumentError),
                                   (409, "Request_EntityChanged", ConflictError),
                                   (403, "Authorization_InsufficientPermissions", ConfigError),
                                   (404, "Internal_CompanyNotFound", PermanentError)]:
        with pytest.raises(expected) as caught:
            client.request("GET", "/error", params={"status": status, "code": code})
        assert (caught.value.status, caught.value.code, caught.value.message) == (status, code, f"{code} happened")
    with pytest.raises(TransientError) as throttled:
        client.request("GET", "/error", params={"status": 429, "code": "TooManyRequests"}, max_attempts=1)
    assert throttled.value.unprocessed
    with pytest.raises(TransientError) as unavailable:
        client.request("GET", "/error", params={"status": 503, "code": "Internal_TenantUnavailable"}, max_attempts=1)
    assert unavailable.value.unprocessed
    with pytest.raises(TransientError) as gateway:
        client.request("GET", "/error", params={"status": 504, "code": "GatewayTimeout"}, max_attempts=1)
    assert not gateway.value.unprocessed  # it may have run


def test_one_backoff_formula_with_the_clients_own_random_source_and_sleep(api):
    app, base = api
    sleeps = []
    client, _ = make_client(base, sleeps=sleeps, rng=lambda: 1.0,
                            retry=RetryConfig(max_attempts=4, backoff_base=0.5, backoff_max=1.5, max_inline_wait=10))
    assert [client.backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, 1.5]
    assert client.backoff(1, retry_after=2) == pytest.approx(2.05)
    assert client.backoff(1, retry_after=11) is None          # too long to hold a worker
    assert client.wait_before_retry(2, TransientError("busy")) and sleeps == [1.0]
    assert not client.wait_before_retry(1, TransientError("busy", retry_after=60)) and sleeps == [1.0]


def test_transient_statuses_are_retried_until_success(api):
    app, base = api
    client, _ = make_client(base)
    app.faults.add("^/data$", count=2, status=503)
    assert client.request("GET", "/data").json() == {"ok": True}
    assert len(app.calls.find(path="^/data$")) == 3
    assert client.counters["retries"] == 2


def test_retry_after_is_honoured(api):
    app, base = api
    sleeps = []
    client, _ = make_client(base, sleeps=sleeps)
    app.faults.add("^/data$", count=1, status=429, retry_after=3)
    client.request("GET", "/data")
    assert sleeps and 3.0 <= sleeps[0] < 3.2
    assert client.counters["throttled"] == 1


def test_a_long_retry_after_is_left_to_the_queue(api):
    app, base = api
    sleeps = []
    client, _ = make_client(base, sleeps=sleeps)
    app.faults.add("^/data$", count=1, status=429, retry_after=600)
    with pytest.raises(TransientError) as err:
        client.request("GET", "/data")
    assert err.value.retry_after == 600 and sleeps == []


def test_backoff_grows_exponentially_with_jitter(api):
    app, base = api
    sleeps = []
    client, _ = make_client(base, sleeps=sleeps, retry=RetryConfig(max_attempts=4, backoff_base=1, backoff_max=100),
                            rng=lambda: 1.0)
    app.faults.add("^/data$", count=3, status=500)
    client.request("GET", "/data")
    assert sleeps == [1.0, 2.0, 4.0]


def test_transient_failure_after_last_attempt(api):
    app, base = api
    client, _ = make_client(base)
    app.faults.add("^/data$", count=10, status=500)
    with pytest.raises(TransientError) as err:
        client.request("GET", "/data")
    assert err.value.status == 500
    assert len(app.calls.find(path="^/data$")) == 4


def test_dropped_connections_and_timeouts_are_transient(api):
    app, base = api
    client, _ = make_client(base, timeout=0.3)
    app.faults.add("^/data$", count=1, kind="drop")
    assert client.request("GET", "/data").status_code == 200
    app.faults.add("^/data$", count=10, kind="timeout", delay=1)
    with pytest.raises(TransientError, match="did not answer"):
        client.request("GET", "/data")


def test_other_4xx_are_permanent_at_once(api):
    app, base = api
    client, _ = make_client(base)
    with pytest.raises(PermanentError) as err:
        client.request("GET", "/bad")
    assert err.value.status == 400
    assert len(app.calls.find(path="^/bad$")) == 1
    assert not isinstance(err.value, TransientError)


def test_401_refreshes_the_token_once_then_gives_up(api):
    app, base = api
    client, tokens = make_client(base)
    client.request("GET", "/data")
    app.valid.clear()  # the token was revoked server-side
    client.request("GET", "/data")
    assert len(app.issued) == 2 and client.counters["token_refreshes"] == 1
    app.faults.add("^/data$", count=5, status=401)
    with pytest.raises(AuthError):
        client.request("GET", "/data")
    assert len(app.issued) == 3  # exactly one more refresh, not a storm


def test_redirect_is_followed_without_the_authorization_header(api):
    app, base = api
    client, _ = make_client(base)
    response = client.request("GET", "/redirect", redirect_without_auth=True)
    assert response.json() == {"page": 1}
    assert response.redirected_from.headers["x-amz-meta-continuationtoken"] == "abc"


def test_a_link_to_another_host_never_gets_the_bearer_token(api):
    app, base = api
    other = FakeApi()
    server = SandboxServer(other).start()  # another host: same fake, another port
    try:
        client, _ = make_client(base)
        with pytest.raises(PermanentError, match="refusing to send credentials"):
            client.request("GET", f"{server.base_url}/data")  # as an @odata.nextLink pointing elsewhere
        assert other.calls.find(path="^/data$") == []
        assert client.request("GET", f"{base}/data").json() == {"ok": True}  # the configured host: fine
    finally:
        server.stop()


def test_concurrency_is_bounded(api):
    app, base = api
    client, _ = make_client(base, max_concurrency=3)
    threads = [threading.Thread(target=client.request, args=("GET", "/slow")) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert app.max_inflight == 3


def test_basware_token_uses_basic_auth_and_form_and_is_cached(api):
    app, base = api
    clock = Clock()
    client, tokens = make_client(base, clock=clock)
    for _ in range(20):
        client.request("GET", "/data")
    assert len(app.token_requests) == 1  # never one token per call
    auth, form = app.token_requests[0]
    assert auth == "Basic " + base64.b64encode(b"client-id:client-secret-xyz").decode()
    assert form == {"grant_type": ["client_credentials"], "scope": ["a.read b.write"]}
    clock.now += 3600 - 301  # still outside the 5-minute margin
    client.request("GET", "/data")
    assert len(app.token_requests) == 1
    clock.now += 2  # inside the margin: refresh before it expires
    client.request("GET", "/data")
    assert len(app.token_requests) == 2


def test_one_refresh_at_a_time_under_concurrency(api):
    app, base = api
    client, tokens = make_client(base)
    barrier = threading.Barrier(16)

    def call():
        barrier.wait()
        client.request("GET", "/data")

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(app.token_requests) == 1


def test_entra_token_for_bc(api):
    app, base = api
    clock = Clock()
    provider = EntraTokenProvider(base, "tenant-1", "bc-client", Secret("right-secret"), clock=clock)
    assert provider.token().startswith("entra-")
    _, form = app.token_requests[-1]
    assert form["scope"] == ["https://api.businesscentral.dynamics.com/.default"]
    assert form["grant_type"] == ["client_credentials"]
    provider.token()
    assert len(app.token_requests) == 1
    clock.now += 4500 - 299
    provider.token()
    assert len(app.token_requests) == 2
    wrong = EntraTokenProvider(base, "tenant-1", "bc-client", Secret("wrong-secret"))
    with pytest.raises(ConfigError, match="check BC_TENANT_ID, BC_CLIENT_ID and BC_CLIENT_SECRET") as err:
        wrong.token()
    assert "wrong-secret" not in str(err.value)


def test_no_secret_or_token_in_log_lines(api, caplog):
    app, base = api
    client, _ = make_client(base)
    with caplog.at_level(logging.DEBUG):
        app.faults.add("^/data$", count=1, status=503)
        client.request("GET", "/data", params={"x": "1"})
        app.valid.clear()
        client.request("GET", "/data")
    assert "event=http.call" in caplog.text
    for value in ["client-secret-xyz", *app.issued, base64.b64encode(b"client-id:client-secret-xyz").decode()]:
        assert value not in caplog.text

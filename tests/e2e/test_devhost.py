"""The local Functions host (`python -m devhost`) serves function apps the way `func start` does.

Fixture apps live in tests/e2e/devhost_apps/. Storage is a real Azurite (the `azurite` fixture).
"""
from __future__ import annotations

import base64
import functools
import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import azure.functions as func
import httpx
import pytest
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devhost import Host, HostError, HostProcess, ncrontab
from devhost.host_config import host_config_from_dict, parse_timespan
from devhost.routes import RouteTable, compile_route
from devhost.settings_file import apply_local_settings

APPS = Path(__file__).parent / "devhost_apps"
KEY = "test-function-key"


# -- helpers -------------------------------------------------------------------------------------
@functools.cache
def fixture_module(name: str):
    """tests/e2e/devhost_apps/<name>/function_app.py, imported once under a unique module name."""
    spec = importlib.util.spec_from_file_location(f"devhost_app_{name}", APPS / name / "function_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fresh_app(*blueprints: func.Blueprint, auth: func.AuthLevel = func.AuthLevel.FUNCTION) -> func.FunctionApp:
    """A new FunctionApp per host: get_functions() may be called only once per app."""
    app = func.FunctionApp(http_auth_level=auth)
    for blueprint in blueprints:
        app.register_functions(blueprint)
    return app


def unique_queue(label: str) -> str:
    return f"dh-{label}-{uuid.uuid4().hex[:10]}"


def wait_for(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def producer(connection_string: str, queue: str, encode: bool = True) -> QueueClient:
    """A non-binding producer, as the app's own code is: base64 unless the host says `none`."""
    return QueueClient.from_connection_string(
        connection_string, queue, message_encode_policy=TextBase64EncodePolicy() if encode else None)


def queue_length(connection_string: str, queue: str) -> int:
    """Visible and invisible messages alike."""
    return QueueClient.from_connection_string(connection_string, queue).get_queue_properties().approximate_message_count


@pytest.fixture
def hosts():
    """Factory for in-process hosts; all are stopped after the test."""
    started: list[Host] = []

    def start(app, **kwargs) -> Host:
        host = Host(app, **kwargs).start()
        started.append(host)
        return host

    yield start
    for host in started:
        host.stop(timeout=10)


@pytest.fixture
def web(hosts):
    """The HTTP fixture app with a function key configured."""
    host = hosts(fresh_app(fixture_module("web").bp), environ={"DEVHOST_FUNCTION_KEY": KEY}, app_dir=APPS / "web",
                 queues=False, timers=False)
    with httpx.Client(base_url=host.base_url, timeout=5) as client:
        yield client


@pytest.fixture
def worker_env(azurite):
    return {"WorkStorage": azurite.connection_string, "WORK_QUEUE": unique_queue("work")}


def start_worker(hosts, env: dict[str, str], **kwargs) -> Host:
    return hosts(fresh_app(fixture_module("worker").queues_bp), environ=env, app_dir=APPS / "worker",
                 timers=False, **kwargs)


# -- (1) HTTP ------------------------------------------------------------------------------------
def test_route_params_query_headers_and_body_reach_the_function_and_its_response_comes_back(web):
    answer = web.post("/api/items/invoice/42?status=failed&page=2", content=b'{"hello": 1}',
                      headers={"X-Test": "abc"})

    assert answer.status_code == 201
    assert answer.headers["X-Echo"] == "yes"
    assert answer.headers["Content-Type"].startswith("application/json")
    seen = answer.json()
    assert seen["method"] == "POST"
    assert seen["route"] == {"kind": "invoice", "id": "42"}
    assert seen["query"] == {"status": "failed", "page": "2"}
    assert seen["body"] == '{"hello": 1}'
    assert seen["x_test"] == "abc"
    assert seen["url"].endswith("/api/items/invoice/42?status=failed&page=2")


def test_optional_route_parameter_may_be_left_out_and_literal_routes_win(web):
    assert web.get("/api/items/vendor").json()["route"] == {"kind": "vendor"}
    assert web.get("/api/items/special/7").text == "special 7"  # not echo with kind=special
    assert web.get("/api/items/special/seven").json()["route"] == {"kind": "special", "id": "seven"}


def test_unknown_route_is_404_and_a_method_the_function_does_not_take_is_405(web):
    assert web.get("/api/nothing/here").status_code == 404
    assert web.get("/items/invoice/42").status_code == 404  # outside the /api prefix
    refused = web.delete("/api/items/invoice/42")
    assert refused.status_code == 405
    assert refused.headers["Allow"] == "GET, POST"


def test_function_level_routes_need_the_key_in_a_header_or_the_code_query(web):
    assert web.get("/api/secret").status_code == 401
    assert web.get("/api/secret", headers={"x-functions-key": "wrong"}).status_code == 401
    assert web.get("/api/secret", headers={"x-functions-key": KEY}).text == "the secret"
    assert web.get("/api/secret", params={"code": KEY}).text == "the secret"
    assert web.get("/api/items/invoice/1").status_code == 200  # anonymous needs none


def test_without_a_configured_key_function_level_routes_are_open_like_func_locally(hosts):
    host = hosts(fresh_app(fixture_module("web").bp), environ={}, app_dir=APPS / "web", queues=False, timers=False)
    assert httpx.get(f"{host.base_url}/api/secret").text == "the secret"


def test_an_unhandled_exception_is_a_generic_500_with_the_traceback_only_in_the_log(web, caplog):
    with caplog.at_level(logging.ERROR, logger="devhost"):
        answer = web.get("/api/boom")
    assert answer.status_code == 500
    assert "hunter2" not in answer.text and "RuntimeError" not in answer.text
    assert any(r.exc_info and "hunter2" in str(r.exc_info[1]) for r in caplog.records)


def test_route_prefix_comes_from_host_json(hosts, tmp_path):
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": ""}}}))
    host = hosts(fresh_app(fixture_module("web").bp), environ={}, app_dir=tmp_path, queues=False, timers=False)
    assert httpx.get(f"{host.base_url}/items/a/b").json()["route"] == {"kind": "a", "id": "b"}
    assert httpx.get(f"{host.base_url}/api/items/a/b").status_code == 404


@pytest.mark.parametrize("path, expected", [
    ("admin/records", ("admin/records", {})),
    ("admin/records/invoice/123", ("admin/records/{kind}/{id}", {"kind": "invoice", "id": "123"})),
    ("ADMIN/Records/invoice/a%20b/replay", ("admin/records/{kind}/{id}/replay", {"kind": "invoice", "id": "a b"})),
    ("files/docs/a/b.txt", ("files/{*path}", {"path": "docs/a/b.txt"})),
    ("orders/17", ("orders/{id:int}", {"id": "17"})),
    ("orders/latest", ("orders/{name}", {"name": "latest"})),
    ("orders", ("orders/{name?}", {})),
    ("nowhere", None),
])
def test_route_templates_match_like_the_functions_host(path, expected):
    templates = ["admin/records", "admin/records/{kind}/{id}", "admin/records/{kind}/{id}/replay", "files/{*path}",
                 "orders/{name}", "orders/{id:int}", "orders/{name?}"]
    matches = RouteTable([compile_route(t, t) for t in templates]).find(path)
    found = (matches[0][0].template, matches[0][1]) if matches else None
    assert found == expected


# -- (2), (4) queues -----------------------------------------------------------------------------
def test_a_base64_message_reaches_the_function_with_its_body_and_metadata_then_is_deleted(hosts, azurite, worker_env):
    start_worker(hosts, worker_env)
    queue = worker_env["WORK_QUEUE"]
    producer(azurite.connection_string, queue).send_message("hello from the queue")

    [message] = wait_for(lambda: fixture_module("worker").seen.get("hello from the queue"), 10)
    assert message.get_body() == b"hello from the queue"
    assert message.dequeue_count == 1
    assert message.id and message.pop_receipt
    assert isinstance(message.insertion_time, datetime) and isinstance(message.expiration_time, datetime)
    wait_for(lambda: queue_length(azurite.connection_string, queue) == 0, 5)


def test_a_failed_message_is_retried_with_a_higher_dequeue_count_and_then_deleted(hosts, azurite, worker_env):
    start_worker(hosts, worker_env)
    body = f"fails-once {uuid.uuid4()}"
    producer(azurite.connection_string, worker_env["WORK_QUEUE"]).send_message(body)

    seen = fixture_module("worker").seen
    wait_for(lambda: len(seen[body]) >= 2, 10)
    assert [m.dequeue_count for m in seen[body]] == [1, 2]
    wait_for(lambda: queue_length(azurite.connection_string, worker_env["WORK_QUEUE"]) == 0, 5)


def test_a_message_whose_handler_always_fails_lands_in_poison_after_max_dequeue_count(hosts, azurite, worker_env):
    start_worker(hosts, worker_env)  # worker host.json: maxDequeueCount 2, visibilityTimeout 00:00:00
    queue, body = worker_env["WORK_QUEUE"], f"always-fails {uuid.uuid4()}"
    producer(azurite.connection_string, queue).send_message(body)
    poison = QueueClient.from_connection_string(azurite.connection_string, f"{queue}-poison")

    [moved] = wait_for(lambda: list(poison.peek_messages(max_messages=5)), 10)
    assert base64.b64decode(moved.content).decode() == body  # same (base64) encoding as the original
    # the host copies to the poison queue first, then deletes the original: never a moment with neither
    wait_for(lambda: queue_length(azurite.connection_string, queue) == 0, 5)
    time.sleep(0.7)  # a third attempt would have come by now
    assert [m.dequeue_count for m in fixture_module("worker").seen[body]] == [1, 2]


def test_a_message_that_is_not_base64_is_never_handed_over_and_ends_in_poison(hosts, azurite, worker_env):
    start_worker(hosts, worker_env)
    queue = worker_env["WORK_QUEUE"]
    producer(azurite.connection_string, queue, encode=False).send_message("plain text!")
    poison = QueueClient.from_connection_string(azurite.connection_string, f"{queue}-poison")

    [moved] = wait_for(lambda: list(poison.peek_messages()), 10)
    assert moved.content == "plain text!"
    assert "plain text!" not in fixture_module("worker").seen


def test_message_encoding_none_hands_over_the_raw_text(hosts, azurite, worker_env):
    config = host_config_from_dict({"extensions": {"queues": {"messageEncoding": "none",
                                                              "maxPollingInterval": "00:00:00.5"}}})
    start_worker(hosts, worker_env, config=config)
    body = f"raw {uuid.uuid4()}"
    producer(azurite.connection_string, worker_env["WORK_QUEUE"], encode=False).send_message(body)
    [message] = wait_for(lambda: fixture_module("worker").seen.get(body), 10)
    assert message.get_body() == body.encode()


def test_a_missing_queue_name_setting_stops_start_up_naming_it(azurite):
    with pytest.raises(HostError, match="WORK_QUEUE"):
        Host(fresh_app(fixture_module("worker").queues_bp), environ={"WorkStorage": azurite.connection_string},
             app_dir=APPS / "worker", timers=False)


def test_a_missing_connection_setting_stops_start_up_naming_it():
    with pytest.raises(HostError, match="WorkStorage"):
        Host(fresh_app(fixture_module("worker").queues_bp), environ={"WORK_QUEUE": "some-queue"},
             app_dir=APPS / "worker", timers=False)


# -- (3) timers ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def timer_run():
    """The timer functions of the worker app, run for 3.6 s."""
    module = fixture_module("worker")
    module.ticks.clear()
    host = Host(fresh_app(module.timers_bp), environ={"TICK_SCHEDULE": "*/1 * * * * *"}, app_dir=APPS / "worker",
                queues=False)
    started = time.monotonic()
    host.start()
    time.sleep(3.6)
    assert host.stop(timeout=5)
    return started, {name: list(calls) for name, calls in module.ticks.items()}, dict(module.overlap)


def test_a_timer_every_second_fires_every_second(timer_run):
    started, ticks, _ = timer_run
    times = [at for at, _ in ticks["tick"]]
    assert 3 <= len(times) <= 4
    assert all(0.8 < later - earlier < 1.2 for earlier, later in zip(times, times[1:]))
    assert all(isinstance(request, func.TimerRequest) and not request.past_due for _, request in ticks["tick"])


def test_run_on_startup_fires_at_once_and_the_function_gets_its_context(timer_run):
    started, ticks, _ = timer_run
    [(at, function_name)] = ticks["startup_tick"]  # its schedule (1 January) never came
    assert at - started < 0.5
    assert function_name == "startup_tick"


def test_a_timer_never_overlaps_its_own_running_invocation(timer_run):
    _, ticks, overlap = timer_run
    assert len(ticks["slow_tick"]) >= 2  # every second, each run taking 1.5 s
    assert overlap["max"] == 1


def test_a_timer_can_be_run_now_through_the_admin_endpoint_with_the_key(hosts):
    module = fixture_module("worker")
    host = hosts(fresh_app(module.timers_bp), environ={"TICK_SCHEDULE": "0 0 0 1 1 *", "DEVHOST_FUNCTION_KEY": KEY},
                 app_dir=APPS / "worker", queues=False)
    before = len(module.ticks["tick"])
    assert httpx.post(f"{host.base_url}/admin/functions/tick", json={"input": ""}).status_code == 401
    answer = httpx.post(f"{host.base_url}/admin/functions/tick", json={"input": ""}, headers={"x-functions-key": KEY})
    assert answer.status_code == 202
    wait_for(lambda: len(module.ticks["tick"]) > before, 5)
    assert httpx.post(f"{host.base_url}/admin/functions/nope", headers={"x-functions-key": KEY}).status_code == 404


def test_a_missing_schedule_setting_stops_start_up_naming_it():
    with pytest.raises(HostError, match="TICK_SCHEDULE"):
        Host(fresh_app(fixture_module("worker").timers_bp), environ={}, app_dir=APPS / "worker", queues=False)


AFTER = datetime(2025, 1, 31, 23, 59, 59, 500000, tzinfo=timezone.utc)  # a Friday


@pytest.mark.parametrize("expression, expected", [
    ("*/1 * * * * *", "2025-02-01T00:00:00"),
    ("*/20 * * * * *", "2025-02-01T00:00:00"),
    ("0 */5 * * * *", "2025-02-01T00:00:00"),
    ("0 30 9 * * 1-5", "2025-02-03T09:30:00"),  # Monday
    ("0 15 3 * * *", "2025-02-01T03:15:00"),
    ("0 0 */12 * * *", "2025-02-01T00:00:00"),
    ("0 30 * * * *", "2025-02-01T00:30:00"),
    ("5/15 * * * * *", "2025-02-01T00:00:05"),
    ("10-20/5 * * * * *", "2025-02-01T00:00:10"),
    ("0 0 12 1,15 * *", "2025-02-01T12:00:00"),
    ("0 0 0 * * SUN", "2025-02-02T00:00:00"),
    ("0 0 0 1 JAN *", "2026-01-01T00:00:00"),
    ("0 0 0 29 2 *", "2028-02-29T00:00:00"),
    ("0 0 0 13 * 5", "2025-06-13T00:00:00"),  # Friday the 13th: day AND day of week, as NCrontab
])
def test_ncrontab_next_occurrence(expression, expected):
    assert ncrontab.parse(expression).next_after(AFTER) == datetime.fromisoformat(expected + "+00:00")


@pytest.mark.parametrize("expression, message", [
    ("0 */5 * * *", "expected 6 fields"),
    ("0 0 * * * * *", "expected 6 fields"),
    ("60 * * * * *", "second field '60': 60 is out of range 0-59"),
    ("0 0 24 * * *", "hour field '24'"),
    ("0 0 0 0 * *", "day field '0'"),
    ("0 0 0 * 13 *", "month field '13'"),
    ("0 0 0 * * 7", "day-of-week field '7'"),
    ("*/0 * * * * *", "step must be at least 1"),
    ("5-1 * * * * *", "runs backwards"),
    ("x * * * * *", "'x' is not a number"),
    ("1,,2 * * * * *", "empty list item"),
    ("0 0 0 30 2 *", "day and month never meet"),
])
def test_ncrontab_rejects_invalid_expressions_with_a_clear_message(expression, message):
    with pytest.raises(ncrontab.CronError, match="invalid NCRONTAB expression") as error:
        ncrontab.parse(expression)
    assert message in str(error.value)


def test_host_json_timespans():
    assert parse_timespan("00:00:30") == 30
    assert parse_timespan("00:00:00.5") == 0.5
    assert parse_timespan("1.02:00:00") == 93600
    with pytest.raises(HostError, match="TimeSpan"):
        parse_timespan("30s")


# -- (5) local.settings.json ---------------------------------------------------------------------
def test_local_settings_values_fill_in_but_the_environment_wins(tmp_path):
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"A": "file", "B": "file"}}))
    environ = {"B": "env"}
    assert apply_local_settings(tmp_path, environ) == ["A"]
    assert environ == {"A": "file", "B": "env"}


def test_the_cli_loads_local_settings_serves_the_app_and_stops_cleanly_on_sigterm(tmp_path):
    app_dir = tmp_path / "web"
    shutil.copytree(APPS / "web", app_dir)
    (app_dir / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        "GREETING": "hello from local.settings.json", "OVERRIDDEN": "from local.settings.json"}}))
    env = {k: v for k, v in os.environ.items() if k not in ("GREETING", "DEVHOST_FUNCTION_KEY")}
    env.update({"OVERRIDDEN": "from the environment", "ONLY_IN_ENV": "env only"})
    proc = HostProcess(app_dir, env, args=["--no-queues", "--no-timers"], log_path=tmp_path / "host.log").start()
    try:
        seen = httpx.get(f"{proc.base_url}/api/settings", timeout=5).json()
        assert seen == {"GREETING": "hello from local.settings.json", "OVERRIDDEN": "from the environment",
                        "ONLY_IN_ENV": "env only"}
        assert f"echo: [GET,POST] {proc.base_url}/api/items/{{kind}}/{{id?}}" in proc.output()
        assert f"secret: [GET] {proc.base_url}/api/secret (auth: function)" in proc.output()
    finally:
        code = proc.stop(timeout=10)
    assert code == 0
    assert "devhost: stopped" in proc.output()


def test_sigterm_lets_a_running_queue_handler_finish_and_exits_0(azurite, worker_env, tmp_path):
    env = {**os.environ, **worker_env, "MARKER_DIR": str(tmp_path)}
    proc = HostProcess(APPS / "worker", env, args=["--no-timers"], log_path=tmp_path / "host.log").start()
    try:
        producer(azurite.connection_string, worker_env["WORK_QUEUE"]).send_message("brief job")
        wait_for(lambda: (tmp_path / "started").exists(), 10)
    finally:
        code = proc.stop(timeout=15)
    assert code == 0
    assert (tmp_path / "finished").exists()
    assert queue_length(azurite.connection_string, worker_env["WORK_QUEUE"]) == 0  # settled: deleted


def test_the_cli_reports_a_bad_setting_and_exits_non_zero(tmp_path, azurite):
    env = {**os.environ, "WorkStorage": azurite.connection_string}  # WORK_QUEUE and TICK_SCHEDULE missing
    proc = HostProcess(APPS / "worker", env, log_path=tmp_path / "host.log")
    with pytest.raises(RuntimeError, match="exited with 2"):
        proc.start(timeout=20)
    assert "app setting 'WORK_QUEUE' (referenced as %WORK_QUEUE%) is not set" in proc.output()


# -- (6) a crash mid-handler ---------------------------------------------------------------------
def test_a_host_killed_mid_handler_leaves_the_message_to_reappear_after_the_inflight_visibility(
        hosts, azurite, worker_env, tmp_path, monkeypatch):
    env = {**os.environ, **worker_env, "DEVHOST_INFLIGHT_VISIBILITY_SECONDS": "2", "MARKER_DIR": str(tmp_path)}
    crashing = HostProcess(APPS / "worker", env, args=["--no-timers"], log_path=tmp_path / "host.log").start()
    try:
        producer(azurite.connection_string, worker_env["WORK_QUEUE"]).send_message("slow job")
        wait_for(lambda: (tmp_path / "attempt-1").exists(), 10)

        # A second host on the same queue: while the first one lives, it renews its 2 s lease.
        monkeypatch.setenv("MARKER_DIR", str(tmp_path))
        start_worker(hosts, {**worker_env, "DEVHOST_INFLIGHT_VISIBILITY_SECONDS": "2"})
        time.sleep(3)
        assert not (tmp_path / "attempt-2").exists()

        crashing.kill()
        killed = time.monotonic()
        wait_for(lambda: (tmp_path / "attempt-2").exists(), 10)
        reappeared_after = time.monotonic() - killed
    finally:
        crashing.kill()
    assert 0.8 <= reappeared_after <= 4.0  # the rest of the lease (1-2 s) plus a poll
    assert (tmp_path / "attempt-2").read_text() == str(os.getpid())  # handled here, the second time
    wait_for(lambda: queue_length(azurite.connection_string, worker_env["WORK_QUEUE"]) == 0, 5)

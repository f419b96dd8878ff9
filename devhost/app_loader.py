"""Find the functions of a FunctionApp through the public azure.functions API, and call them.

`app.get_functions()` is called once: a second call on the same FunctionApp raises (it remembers
function names to reject duplicates).
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import re
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import azure.functions as func

from devhost import ncrontab
from devhost.errors import HostError

log = logging.getLogger("devhost")

_SETTING_REF = re.compile(r"%([^%]+)%")
_QUEUE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
_DEFAULT_CONNECTION = "AzureWebJobsStorage"


@dataclass(frozen=True)
class HttpFunction:
    name: str
    route: str
    methods: frozenset[str] | None  # None: every method
    auth_level: str  # "anonymous", "function" or "admin"
    invoke: "Invoker"


@dataclass(frozen=True)
class QueueFunction:
    name: str
    queue_name: str
    connection: str
    invoke: "Invoker"


@dataclass(frozen=True)
class TimerFunction:
    name: str
    schedule: ncrontab.NCrontab
    run_on_startup: bool
    invoke: "Invoker"


@dataclass
class Discovered:
    http: list[HttpFunction] = field(default_factory=list)
    queues: list[QueueFunction] = field(default_factory=list)
    timers: list[TimerFunction] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why)


def import_app(reference: str, app_dir: str | Path) -> func.FunctionApp:
    """`module:attr` (attr defaults to `app`), imported with the app folder first on sys.path."""
    module_name, _, attr = reference.partition(":")
    folder = str(Path(app_dir).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = importlib.import_module(module_name)
    app = getattr(module, attr or "app", None)
    if app is None or not hasattr(app, "get_functions"):
        raise HostError(f"{reference}: no FunctionApp named {attr or 'app'!r} in module {module_name!r}")
    return app


def resolve_setting_refs(value: str, environ: Mapping[str, str], what: str) -> str:
    """Replace each `%NAME%` with the app setting NAME, like the runtime does for binding values."""
    def lookup(match: re.Match) -> str:
        name = match.group(1)
        if name not in environ:
            raise HostError(f"{what}: app setting {name!r} (referenced as %{name}%) is not set")
        return environ[name]
    return _SETTING_REF.sub(lookup, value)


def discover(app: func.FunctionApp, environ: Mapping[str, str], *, queues: bool = True,
             timers: bool = True, function_directory: str = ".") -> Discovered:
    found = Discovered()
    for function in app.get_functions():
        name = function.get_function_name()
        trigger = function.get_trigger()
        kind = trigger.get_binding_name()
        _check_bindings(function, name)
        invoke = Invoker(function, function_directory)
        if kind == "httpTrigger":
            found.http.append(_http_function(name, trigger, invoke))
        elif kind == "queueTrigger":
            if queues:
                found.queues.append(_queue_function(name, trigger, invoke, environ))
            else:
                found.skipped.append((name, "queueTrigger (queues disabled)"))
        elif kind == "timerTrigger":
            if timers:
                found.timers.append(_timer_function(name, trigger, invoke, environ))
            else:
                found.skipped.append((name, "timerTrigger (timers disabled)"))
        else:
            found.skipped.append((name, f"{kind} (not supported by devhost)"))
    return found


def _http_function(name: str, trigger: Any, invoke: "Invoker") -> HttpFunction:
    methods = frozenset(str(m).upper() for m in trigger.methods) if trigger.methods else None
    level = str(getattr(trigger.auth_level, "value", trigger.auth_level) or "function").lower()
    return HttpFunction(name, str(trigger.route).strip("/"), methods, level, invoke)


def _queue_function(name: str, trigger: Any, invoke: "Invoker", environ: Mapping[str, str]) -> QueueFunction:
    queue = resolve_setting_refs(trigger.queue_name, environ, f"function {name!r} queue_name")
    if not _QUEUE_NAME.match(queue):
        raise HostError(f"function {name!r}: {queue!r} is not a valid queue name "
                        "(3-63 lowercase letters, digits and single hyphens)")
    if len(queue) > 56:
        raise HostError(f"function {name!r}: queue name {queue!r} leaves no room for the '-poison' suffix")
    connection = resolve_setting_refs(trigger.connection or _DEFAULT_CONNECTION, environ,
                                      f"function {name!r} connection")
    return QueueFunction(name, queue, connection, invoke)


def _timer_function(name: str, trigger: Any, invoke: "Invoker", environ: Mapping[str, str]) -> TimerFunction:
    expression = resolve_setting_refs(trigger.schedule, environ, f"function {name!r} schedule")
    try:
        schedule = ncrontab.parse(expression)
    except ncrontab.CronError as exc:
        raise HostError(f"function {name!r}: {exc}") from None
    return TimerFunction(name, schedule, bool(trigger.run_on_startup), invoke)


def _check_bindings(function: func.Function, name: str) -> None:
    """Only the trigger and an HTTP `$return` are wired; anything else would silently do nothing."""
    trigger = function.get_trigger()
    for binding in function.get_bindings():
        if binding is trigger:
            continue
        kind = binding.get_binding_name()
        if kind == "http" and binding.name == "$return":
            continue
        raise HostError(f"function {name!r}: devhost does not support the {kind!r} binding {binding.name!r}; "
                        "use the SDK from the function body instead")


class _Context(func.Context):
    """The invocation context the worker would pass to a `context` parameter."""

    def __init__(self, function_name: str, function_directory: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._local = threading.local()
        self._local.invocation_id = self._invocation_id

    invocation_id = property(lambda self: self._invocation_id)
    function_name = property(lambda self: self._function_name)
    function_directory = property(lambda self: self._function_directory)
    thread_local_storage = property(lambda self: self._local)
    trace_context = property(lambda self: None)
    retry_context = property(lambda self: None)


def _is_context_annotation(annotation: Any) -> bool:
    # a string under `from __future__ import annotations`
    return annotation is func.Context or (isinstance(annotation, str) and annotation.split(".")[-1] == "Context")


class Invoker:
    """Calls the user function with the trigger input under its argument name (and `context` if asked)."""

    def __init__(self, function: func.Function, function_directory: str) -> None:
        self.function_name = function.get_function_name()
        self._user_function: Callable[..., Any] = function.get_user_function()
        self._arg_name = function.get_trigger().name
        self._directory = function_directory
        parameters = inspect.signature(self._user_function).parameters
        if self._arg_name not in parameters:
            raise HostError(f"function {self.function_name!r}: trigger argument {self._arg_name!r} "
                            "is not a parameter of the function")
        self._context_arg = next((p.name for p in parameters.values() if p.name != self._arg_name
                                  and (p.name == "context" or _is_context_annotation(p.annotation))), None)
        self._is_async = inspect.iscoroutinefunction(self._user_function)

    def __call__(self, trigger_input: Any) -> Any:
        kwargs = {self._arg_name: trigger_input}
        if self._context_arg:
            kwargs[self._context_arg] = _Context(self.function_name, self._directory)
        if self._is_async:
            return asyncio.run(self._user_function(**kwargs))
        return self._user_function(**kwargs)

"""One way to register a timer that runs a flow's plain function with the runtime and the time."""
from __future__ import annotations

from typing import Any, Callable

import azure.functions as func

from shared.core.runtime import runtime
from shared.core.settings import timer_schedule
from shared.core.telemetry import run_context
from shared.store.jobs import utcnow
from shared.store.runs import recorded


def register_timer(bp: func.Blueprint, *, name: str, schedule_setting: str,
                   run: Callable[[Any, Any], Any]) -> Any:
    """`run(rt, now)` on the schedule named by `schedule_setting` (its default when unset)."""

    def timer(timer: func.TimerRequest) -> None:
        with run_context(name):
            rt = runtime()
            recorded(rt.storage, name, lambda: run(rt, utcnow()))  # the console shows the last run

    timer.__name__ = name
    return bp.function_name(name)(bp.timer_trigger(arg_name="timer", schedule=timer_schedule(schedule_setting),
                                                   run_on_startup=False, use_monitor=True)(timer))

"""Queue and timer fixture app. Queue names and one schedule come from app settings (%NAME%)."""
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

import azure.functions as func

# What the functions saw, for in-process tests: message body -> messages; timer name -> requests.
seen: dict[str, list[func.QueueMessage]] = defaultdict(list)
ticks: dict[str, list] = defaultdict(list)
overlap = {"running": 0, "max": 0}
_lock = threading.Lock()

def mark(name: str) -> None:
    """Write a marker atomically: the test polls for the file and reads it at once, and a plain
    write_text creates the file empty before it writes the pid."""
    tmp = Path(os.environ["MARKER_DIR"], f".{name}.tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(tmp.with_name(name))


queues_bp = func.Blueprint()
timers_bp = func.Blueprint()


@queues_bp.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="WorkStorage")
def work(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode()
    seen[body].append(msg)
    if body.startswith("always-fails"):
        raise RuntimeError("this handler always fails")
    if body.startswith("fails-once") and msg.dequeue_count < 2:
        raise RuntimeError("first attempt fails")
    if body.startswith("slow"):  # the crash test: the first attempt hangs until the host is killed
        mark(f"attempt-{msg.dequeue_count}")
        if msg.dequeue_count == 1:
            time.sleep(60)
    if body.startswith("brief"):  # the shutdown test: still running when SIGTERM arrives
        mark("started")
        time.sleep(1.5)
        mark("finished")


@timers_bp.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%")
def tick(timer: func.TimerRequest) -> None:
    ticks["tick"].append((time.monotonic(), timer))


@timers_bp.timer_trigger(arg_name="timer", schedule="*/1 * * * * *")
def slow_tick(timer: func.TimerRequest) -> None:
    with _lock:
        overlap["running"] += 1
        overlap["max"] = max(overlap["max"], overlap["running"])
    time.sleep(1.5)
    ticks["slow_tick"].append((time.monotonic(), timer))
    with _lock:
        overlap["running"] -= 1


@timers_bp.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True)
def startup_tick(timer: func.TimerRequest, context: func.Context) -> None:
    ticks["startup_tick"].append((time.monotonic(), context.function_name))


app = func.FunctionApp()
app.register_functions(queues_bp)
app.register_functions(timers_bp)

"""`python -m devhost [--app function_app:app] [--port N] [--no-timers] [--no-queues]`

Run from the app folder (or pass --app-dir), like `func start`: local.settings.json `Values`
become environment variables (the real environment wins), then the app is imported and served.
SIGTERM or Ctrl+C stops polling and timers, lets running invocations finish, and exits 0.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from devhost.errors import HostError
from devhost.host import Host
from devhost.settings_file import apply_local_settings, local_http_port

READY_LINE = "Listening on"  # devhost/process.py waits for this line
SHUTDOWN_SECONDS = 30.0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--app-dir", default=".", help="folder with host.json and local.settings.json")
    parser.add_argument("--port", type=int, default=None,
                        help="HTTP port (default: $PORT, else local.settings.json Host.LocalHttpPort, else 7071)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--no-timers", action="store_true", help="do not run timer triggers")
    parser.add_argument("--no-queues", action="store_true", help="do not poll queue triggers")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every poll at INFO
    app_dir = Path(args.app_dir).resolve()
    try:
        applied = apply_local_settings(app_dir, os.environ)
        port = args.port if args.port is not None else int(os.environ.get("PORT") or local_http_port(app_dir) or 7071)
        host = Host(args.app, environ=os.environ, app_dir=app_dir, port=port, bind=args.bind,
                    queues=not args.no_queues, timers=not args.no_timers)
        host.start()
    except HostError as exc:
        print(f"devhost: {exc}", file=sys.stderr, flush=True)
        return 2

    print(f"devhost: {args.app} from {app_dir} ({len(applied)} values from local.settings.json)")
    print("Functions:")
    for line in host.describe():
        print(f"    {line}")
    print(f"{READY_LINE} {host.base_url} (Ctrl+C to stop)", flush=True)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    print("devhost: stopping (finishing running invocations)", flush=True)
    finished = host.stop(SHUTDOWN_SECONDS)
    print("devhost: stopped" if finished else "devhost: stopped with invocations still running", flush=True)
    if not finished:  # their worker threads would hold the interpreter open; their messages reappear later
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

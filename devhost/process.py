"""`HostProcess`: `python -m devhost` in its own process (for run commands and crash tests).

    proc = HostProcess("tests/devhost_apps/worker", env={...}, args=["--no-timers"]).start()
    proc.base_url  # once it listens
    proc.stop()    # SIGTERM: finish running invocations, exit 0
    proc.kill()    # SIGKILL: a crash
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # so the child finds devhost from any app folder
_READY = re.compile(r"^Listening on (http://\S+)", re.MULTILINE)


class HostProcess:
    def __init__(self, app_dir: str | Path = ".", env: Mapping[str, str] | None = None, *,
                 args: Sequence[str] = (), port: int = 0, log_path: str | Path | None = None,
                 python: str = sys.executable) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.env = dict(os.environ if env is None else env)
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), self.env.get("PYTHONPATH")) if p)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.command = [python, "-m", "devhost", "--app-dir", str(self.app_dir), "--port", str(port), *args]
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="devhost-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.base_url: str | None = None

    def start(self, timeout: float = 30.0) -> "HostProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, cwd=self.app_dir, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _READY.search(self.output())
            if found:
                self.base_url = found.group(1)
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"devhost exited with {self.process.returncode}:\n{self.output()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"devhost did not start within {timeout:.0f}s:\n{self.output()}")

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1]) if self.base_url else 0

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode if self.process else None

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

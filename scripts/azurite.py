"""Start and stop Azurite (the real local Azure Storage emulator) for tests, the run command and benches.

`python -m scripts.azurite` runs it in the foreground on the default ports (10000-10002).
`start_azurite()` starts it on free ports and returns a handle with the connection string;
`handle.stop()` ends it. `in_memory=True` (the benchmarks) runs it with `--inMemoryPersistence`:
on disk Azurite writes queue extents per message and periodically saves its whole table database,
a CPU cost that grows with the data (a 10,000-invoice benchmark spent 86 ms of Azurite CPU per
invoice on disk, 69 ms in memory). The test suite keeps the default: in memory it was no faster
(8 min 48 s against 8 min 43 s on disk, clean clones on this machine).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key: not a secret.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connection_string(blob: int, queue: int, table: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://{host}:{blob}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table}/{ACCOUNT};"
    )


def azurite_binary() -> str:
    local = ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found:
        return found
    raise RuntimeError("Azurite is not installed: run `npm install` in the project folder (see README).")


@dataclass
class AzuriteHandle:
    process: subprocess.Popen
    folder: str
    blob_port: int
    queue_port: int
    table_port: int
    owns_folder: bool = True

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port, self.table_port)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def _wait_for_ports(ports: list[int], process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited early with code {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Azurite did not open ports {pending} within {timeout:.0f}s")
        port = pending[0]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pending.pop(0)
        except OSError:
            time.sleep(0.1)


def start_azurite(
    folder: str | None = None,
    ports: tuple[int, int, int] | None = None,
    timeout: float = 60.0,
    in_memory: bool = False,
) -> AzuriteHandle:
    """Start Azurite on free (or given) ports and wait until it listens (in memory if asked and no `folder`)."""
    owns = folder is None
    in_memory = in_memory and owns
    folder = folder or tempfile.mkdtemp(prefix="azurite-")
    blob, queue, table = ports or (free_port(), free_port(), free_port())
    cmd = [
        azurite_binary(),
        "--silent",
        "--skipApiVersionCheck",
        "--disableProductStyleUrl",
        *(["--inMemoryPersistence"] if in_memory else ["--location", folder]),
        "--blobHost", "127.0.0.1", "--blobPort", str(blob),
        "--queueHost", "127.0.0.1", "--queuePort", str(queue),
        "--tableHost", "127.0.0.1", "--tablePort", str(table),
    ]
    process = subprocess.Popen(
        cmd,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    handle = AzuriteHandle(process, folder, blob, queue, table, owns_folder=owns)
    try:
        _wait_for_ports([blob, queue, table], process, timeout)
    except Exception:
        handle.stop()
        raise
    return handle


def main() -> int:
    folder = str(ROOT / ".azurite")
    os.makedirs(folder, exist_ok=True)
    handle = start_azurite(folder=folder, ports=(10000, 10001, 10002))
    print(f"Azurite running (data in {folder}); blob 10000, queue 10001, table 10002. Ctrl+C stops it.")
    try:
        handle.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Builds the connector's collaborators once per process: the only cached globals.

Triggers call `runtime()`; tests and tools call `build_runtime(settings)` with their own settings
(and, for in-process runs, their own httpx transports).
"""
from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

from shared.core import metrics

from shared.core import telemetry
from shared.core.secrets import Scrubber
from shared.store.audit import AuditLog
from shared.clients.basware import BaswareClient
from shared.clients.budget import LocalGate, SharedGate
from shared.clients.bc import BcClient
from shared.store.jobs import JobStore
from shared.store.syncstate import RequestSlots
from shared.core.settings import Settings, load_settings
from shared.store.storage import Storage
from shared.clients.tokens import BaswareTokenProvider, EntraTokenProvider


@dataclass
class Runtime:
    settings: Settings
    storage: Storage
    jobs: JobStore
    audit: AuditLog
    basware: BaswareClient
    bc: BcClient
    worker_id: str

    def close(self) -> None:
        self.basware.close()
        self.bc.close()


def build_runtime(settings: Settings, *, storage: Storage | None = None, transport: Any = None,
                  bc_max_concurrency: int = 5, **client_kwargs: Any) -> Runtime:
    storage = storage or Storage.from_settings(settings)
    scrub = Scrubber(settings.secret_values())
    telemetry.protect(settings.secret_values())  # no log line may carry them, whoever logs it
    counters = metrics.REGISTRY
    basware_tokens = BaswareTokenProvider(settings.basware_token_url, settings.basware_client_id,
                                          settings.basware_client_secret, settings.basware_scopes,
                                          transport=transport)
    bc_tokens = EntraTokenProvider(settings.bc_authority_url, settings.bc_tenant_id, settings.bc_client_id,
                                   settings.bc_client_secret, transport=transport)
    basware = BaswareClient(settings.basware_api_url, basware_tokens, transport=transport,
                            **{"on_call": counters.call_observer("basware"), **client_kwargs})
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    # BC's per-principal limits hold across instances: shared/clients/budget.py.
    shared = settings.bc_max_concurrent_requests
    gate = (SharedGate(RequestSlots(storage, shared), worker_id, limit=bc_max_concurrency) if shared
            else LocalGate(bc_max_concurrency))
    bc = BcClient(settings.bc_api_url, settings.bc_tenant_id, settings.bc_environment, bc_tokens,
                  transport=transport, gate=gate, **{"on_call": counters.call_observer("bc"), **client_kwargs})
    return Runtime(settings, storage, JobStore(storage, on_state=counters.observe_state),
                   AuditLog(storage, scrub, on_record=counters.observe_audit), basware, bc, worker_id=worker_id)


_runtime: Runtime | None = None
_lock = threading.Lock()


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = build_runtime(load_settings())
    return _runtime

"""Azure Storage: the connector's tables and queues, created on first use.

Locally this is Azurite through a connection string; in Azure it is the app's managed identity
against the account's service URIs (`AzureWebJobsStorage__*`), with shared keys switched off.
Queue messages are base64-encoded JSON, the encoding the Functions queue trigger expects by default.
"""
from __future__ import annotations

import json
import threading
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy
from pydantic import BaseModel

INVOICE_TRANSFERS = "invoice-transfers"
BASWARE_CALLBACKS = "basware-callbacks"
PAYMENT_CHECKS = "payment-checks"
MASTERDATA_IMPORTS = "masterdata-imports"
QUEUES = (INVOICE_TRANSFERS, BASWARE_CALLBACKS, PAYMENT_CHECKS, MASTERDATA_IMPORTS)
POISON_SUFFIX = "-poison"

JOBS = "jobs"
AUDIT = "audit"
SYNCSTATE = "syncstate"
TABLES = (JOBS, AUDIT, SYNCSTATE)


def encode_message(message: BaseModel | dict | str) -> str:
    if isinstance(message, BaseModel):
        return message.model_dump_json()
    if isinstance(message, dict):
        return json.dumps(message, separators=(",", ":"), default=str)
    return message


class Storage:
    """Cached table and queue clients. Thread-safe; one per process (see shared/core/runtime.py)."""

    def __init__(self, connection_string: str | None = None, *, account_name: str | None = None,
                 table_uri: str | None = None, queue_uri: str | None = None, credential: Any = None) -> None:
        if connection_string:
            self._tables = TableServiceClient.from_connection_string(connection_string)
            self._queues = QueueServiceClient.from_connection_string(connection_string)
        else:
            table_uri = table_uri or f"https://{account_name}.table.core.windows.net"
            queue_uri = queue_uri or f"https://{account_name}.queue.core.windows.net"
            self._tables = TableServiceClient(endpoint=table_uri, credential=credential)
            self._queues = QueueServiceClient(account_url=queue_uri, credential=credential)
        self._table_clients: dict[str, TableClient] = {}
        self._queue_clients: dict[str, QueueClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "Storage":
        if settings.storage_connection_string:
            return cls(settings.storage_connection_string)
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        credential = (ManagedIdentityCredential(client_id=settings.storage_client_id)
                      if settings.storage_client_id else DefaultAzureCredential())
        return cls(account_name=settings.storage_account_name, table_uri=settings.storage_table_uri,
                   queue_uri=settings.storage_queue_uri, credential=credential)

    def table(self, name: str) -> TableClient:
        client = self._table_clients.get(name)
        if client is None:
            with self._lock:
                client = self._table_clients.get(name)
                if client is None:
                    client = self._tables.get_table_client(name)
                    try:
                        client.create_table()
                    except ResourceExistsError:
                        pass
                    self._table_clients[name] = client
        return client

    def queue(self, name: str, **request_options: Any) -> QueueClient:
        """`request_options` (e.g. retry_total=0, connection_timeout=2) apply to the one-time create."""
        client = self._queue_clients.get(name)
        if client is None:
            with self._lock:
                client = self._queue_clients.get(name)
                if client is None:
                    # get_queue_client does not inherit the service client's encode policies
                    client = self._queues.get_queue_client(
                        name, message_encode_policy=TextBase64EncodePolicy(),
                        message_decode_policy=TextBase64DecodePolicy())
                    try:
                        client.create_queue(**request_options)
                    except ResourceExistsError:
                        pass
                    self._queue_clients[name] = client
        return client

    def enqueue(self, queue: str, message: BaseModel | dict | str, *, delay_seconds: int | None = None,
                **request_options: Any) -> None:
        """`request_options` are azure-core per-request options, e.g. `retry_total=0,
        connection_timeout=2` where a caller must fail fast instead of retrying (the webhook)."""
        self.queue(queue, **request_options).send_message(encode_message(message), visibility_timeout=delay_seconds,
                                                          **request_options)

    def ping(self) -> None:
        """Raise if storage is unreachable (used by the health check)."""
        next(iter(self.table(JOBS).query_entities("PartitionKey eq 'health'", results_per_page=1)), None)

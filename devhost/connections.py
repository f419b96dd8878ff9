"""Queue storage for a binding's `connection` setting, resolved like the runtime resolves it.

Looked up in order: `<name>` (a connection string), `AzureWebJobs<name>`, then identity-based
`<name>__queueServiceUri` / `<name>__serviceUri` / `<name>__accountName` with DefaultAzureCredential.
`UseDevelopmentStorage=true` means Azurite on its default ports (or `DevelopmentStorageProxyUri`).
"""
from __future__ import annotations

from typing import Mapping

from azure.storage.queue import QueueServiceClient

from devhost.errors import HostError

# Azurite's fixed, publicly documented development account: not a secret.
_DEV_ACCOUNT = "devstoreaccount1"
_DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def development_storage(connection_string: str) -> str:
    """Expand `UseDevelopmentStorage=true[;DevelopmentStorageProxyUri=http://host]` (the SDK does not)."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    proxy = parts.get("DevelopmentStorageProxyUri", "http://127.0.0.1").rstrip("/")
    return (f"DefaultEndpointsProtocol=http;AccountName={_DEV_ACCOUNT};AccountKey={_DEV_KEY};"
            f"QueueEndpoint={proxy}:10001/{_DEV_ACCOUNT};")


def queue_service(connection: str, environ: Mapping[str, str], **client_options) -> QueueServiceClient:
    for name in (connection, f"AzureWebJobs{connection}"):
        value = environ.get(name, "").strip()
        if value:
            if value.lower().replace(" ", "").startswith("usedevelopmentstorage=true"):
                value = development_storage(value)
            try:
                return QueueServiceClient.from_connection_string(value, **client_options)
            except ValueError as exc:
                raise HostError(f"app setting {name!r} is not a valid storage connection string ({exc})") from None
    account_url = (environ.get(f"{connection}__queueServiceUri") or environ.get(f"{connection}__serviceUri"))
    if not account_url and environ.get(f"{connection}__accountName"):
        account_url = f"https://{environ[f'{connection}__accountName']}.queue.core.windows.net"
    if account_url:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        client_id = environ.get(f"{connection}__clientId")
        credential = ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()
        return QueueServiceClient(account_url=account_url, credential=credential, **client_options)
    raise HostError(f"queue connection {connection!r} is not set: expected app setting {connection!r} "
                    f"(a connection string, e.g. UseDevelopmentStorage=true) or {connection}__queueServiceUri")

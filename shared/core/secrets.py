"""Secret values that cannot leak by accident, and where they come from.

A `Secret` prints as `***` in str(), repr(), f-strings, pydantic dumps and tracebacks. Code that
needs the value calls `.reveal()` at the point of use (an HTTP auth header, an HMAC key).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from pydantic_core import core_schema

MASK = "***"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # pickling would write the value somewhere we do not control
        raise TypeError("Secret values cannot be pickled")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        def to_secret(value: Any) -> "Secret":
            if isinstance(value, Secret):
                return value
            if not isinstance(value, str):
                raise ValueError("must be a string")
            return cls(value)

        return core_schema.no_info_plain_validator_function(
            to_secret, serialization=core_schema.plain_serializer_function_ser_schema(lambda v: MASK))


class SecretSource(Protocol):
    def __call__(self, name: str) -> str | None: ...


def key_vault_source(vault_url: str, credential: Any = None, client: Any = None) -> Callable[[str], str | None]:
    """Read secrets by kebab-case name from Key Vault (azure-keyvault-secrets + azure-identity).

    `client` may be any object with `get_secret(name).value` (tests pass their own).
    """
    if client is None:
        from azure.identity import DefaultAzureCredential
        from azure.keyvault.secrets import SecretClient

        client = SecretClient(vault_url=vault_url, credential=credential or DefaultAzureCredential())

    def read(name: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return client.get_secret(name).value
        except ResourceNotFoundError:
            return None

    return read


def kebab(setting_name: str) -> str:
    """BASWARE_CLIENT_SECRET -> basware-client-secret (Key Vault names allow letters, digits, dashes)."""
    return setting_name.lower().replace("_", "-")

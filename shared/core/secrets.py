"""Secret values that cannot leak by accident, and where they come from.

A `Secret` prints as `***` in str(), repr(), f-strings, pydantic dumps and tracebacks. Code that
needs the value calls `.reveal()` at the point of use (an HTTP auth header, an HMAC key).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Protocol

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


# -- masking credentials in free text -------------------------------------------------------------
def credential_patterns(*query_keys: str) -> list[re.Pattern]:
    """Credentials that may show up in free text whatever their value (a header echoed in an error,
    a token response, a SAS or connection string); `query_keys` adds `key=value` names to mask."""
    keys = "|".join(("client_secret", "access_token", "refresh_token", "password", "accountkey", *query_keys))
    return [
        re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
        re.compile(r"(?i)(basic\s+)[A-Za-z0-9+/=]{8,}"),
        re.compile(rf"(?i)((?:{keys})=)[^&;\s\"']+"),
        re.compile(r"(?i)(\"(?:client_secret|access_token|password|webhookAuthenticationToken|clientState)\"\s*:\s*\")"
                   r"[^\"]+"),
    ]


def mask(text: str, secrets: Iterable[str], patterns: Iterable[re.Pattern]) -> str:
    """`text` with each secret value (longest first) and each credential-shaped run masked as ***."""
    if not text:
        return text
    for value in secrets:
        if value in text:
            text = text.replace(value, "***")
    for pattern in patterns:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


class Scrubber:
    """Masks secret values and credential-shaped substrings in free text (audit rows, API answers).
    Wider than the log filter: `sig=` (SAS signatures) and `code=` (function keys in URLs) too."""

    _PATTERNS = credential_patterns("sig", "code")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        return mask(text, self._secrets, self._PATTERNS)

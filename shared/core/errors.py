"""The connector's error taxonomy.

Every failure is either transient (worth retrying: timeouts, 408, 429, 5xx, a 401 that survived one
token refresh) or permanent (the data or the configuration must change first). Flows decide what
to do from the class alone, never from scattered status checks.
"""
from __future__ import annotations


class ConnectorError(Exception):
    """Base class. `message` is safe to show an operator: it never contains secrets."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 correlation_id: str | None = None, retry_after: float | None = None,
                 system: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.correlation_id = correlation_id
        self.retry_after = retry_after
        self.system = system

    def summary(self) -> str:
        parts = [self.system or "", str(self.status or ""), self.code or ""]
        head = " ".join(p for p in parts if p)
        return f"{head}: {self.message}" if head else self.message


class TransientError(ConnectorError):
    """Retry later; the same request may well succeed.

    `unprocessed` says the server refused the request before doing anything with it (a 429: BC's
    rate limiter answers before the request runs), so resending cannot make a duplicate; any other
    transient failure (timeout, 5xx) may hide a request that committed."""

    def __init__(self, message: str, *, unprocessed: bool = False, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.unprocessed = unprocessed


class PermanentError(ConnectorError):
    """Retrying the same request cannot succeed: data or configuration must change."""


class AuthError(TransientError):
    """Credentials were refused even after one token refresh (rotated secret, revoked consent)."""


class ConfigError(PermanentError):
    """The connector is configured in a way the remote system refuses."""


class DocumentError(PermanentError):
    """The remote system refused the record's data (a BC posting or validation error): the person
    who owns the record must change it; the connector tells them and does not retry."""


class TooLargeError(PermanentError):
    """The body is larger than the server accepts (413): the same request can never succeed."""


class ConflictError(PermanentError):
    """The record changed since it was read (a stale ETag): read it again before writing."""


class SettingsError(Exception):
    """A missing or malformed setting; the message names it."""


class JobBusy(TransientError):
    """Another worker holds the job's lease right now."""

"""Exceptions of aura-gateway, grouped by when they happen and what the daemon does.

    GatewayError
    ├── ConfigError            start-up / reload: refuse the file, say file:line key
    ├── JournalError           the journal refused a write: fail closed, do not ack
    ├── BridgeUnavailable      input cannot be opened: retried with backoff, shown in status
    └── CloudError             a request to AURA did not succeed
        ├── CloudRetryable     connection refused, timeout, DNS, 5xx, 429: back off, retry
        │   └── CloudMalformed an answer we cannot read (not JSON, no callout id)
        ├── CloudUnauthorized  401 after a fresh token: credentials fault, retried slowly
        └── CloudRejected      400, 403, 404: no blind retry; the incident fails loudly

httpx exceptions are translated into these in ``gateway.aura.client`` and nowhere else.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error this package raises on purpose."""


class JournalError(GatewayError):
    """The journal could not commit; the press must not be acknowledged."""


class BridgeUnavailable(GatewayError):
    """A serial input could not be opened or was lost."""


class CloudError(GatewayError):
    """A request to AURA did not succeed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CloudRetryable(CloudError):
    """Transient: the same request may succeed later."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        maybe_delivered: bool = True,
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
        # False only when the request certainly never reached AURA (refused connection,
        # no connection in time, 429): then a retry needs no reconciliation first.
        self.maybe_delivered = maybe_delivered


class CloudMalformed(CloudRetryable):
    """AURA (or something in the way) answered in a shape we cannot read."""


class CloudUnauthorized(CloudError):
    """AURA refused the credentials even with a fresh token."""


class CloudRejected(CloudError):
    """AURA answered 4xx: retrying the same request cannot succeed."""

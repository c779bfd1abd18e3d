"""Service-level exceptions that the API maps to 503 + Retry-After."""

from __future__ import annotations


class ServiceUnavailable(Exception):
    """A component is not ready, draining, or a dependency is down."""

    def __init__(self, code: str, detail: str, retry_after_s: int = 5) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.retry_after_s = retry_after_s

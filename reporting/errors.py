"""Exceptions raised by the reporting package.

Hierarchy::

    ReportingError
    ├── LLMError                  the language model could not produce or score text
    │   ├── LLMUnavailable        backend down, circuit open, model file missing (retry later)
    │   ├── LLMTimeout            a request exceeded its deadline
    │   ├── ScoringUnsupported    the backend cannot return prompt log-probabilities
    │   └── GenerationCancelled   the caller cancelled (e.g. its client disconnected)
    └── ModelIntegrityError       a GGUF file's sha256 differs from the expected one

Only the service maps these to HTTP (503 + Retry-After for LLMUnavailable, 504 + Retry-After
for LLMTimeout).
"""

from __future__ import annotations


class ReportingError(Exception):
    """Base class of every error raised by :mod:`reporting`."""


class LLMError(ReportingError):
    """The language model could not produce or score text."""


class LLMUnavailable(LLMError):
    """The backend cannot serve now. ``retry_after`` is a hint in seconds (>= 1)."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = max(1.0, float(retry_after))


class LLMTimeout(LLMError):
    """A request to the backend exceeded its deadline."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = max(1.0, float(retry_after))


class ScoringUnsupported(LLMError):
    """The backend cannot return log-probabilities of a given continuation."""


class GenerationCancelled(LLMError):
    """Generation stopped because the caller set its cancel flag (nobody waits for it)."""


class ModelIntegrityError(ReportingError):
    """A model file does not match its expected sha256."""
